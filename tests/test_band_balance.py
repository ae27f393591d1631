"""python -m eval.research band-balance: the high band's long-term level, the worst gap and the envelope error are what
they claim, on systems whose output is the reference changed in a known way; the CLI runs end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal

from eval.research import band_balance
from signals import speech_like, write_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, "-m", "eval.research", "band-balance"]


def _split(x, hz=4000.0):
    sos = scipy.signal.butter(10, hz, fs=16000, output="sos")
    low = scipy.signal.sosfiltfilt(sos, x)
    return low, x - low


@pytest.fixture(scope="module")
def reference():
    return speech_like(3.0, 16000, seed=21).astype(np.float64)


def _examples(reference, copies=2):
    return [(f"f{i}", reference, reference[::2].astype(np.float32), 0) for i in range(copies)]


def test_a_quieter_band_and_a_notch_are_measured(reference):
    low, high = _split(reference)
    notch = scipy.signal.butter(4, [3300, 3700], "bandstop", fs=16000, output="sos")
    systems = {
        "identical": lambda nb: reference.astype(np.float32),
        "band -10 dB": lambda nb: (low + high * 10 ** (-10 / 20)).astype(np.float32),
        "notched": lambda nb: scipy.signal.sosfiltfilt(notch, reference).astype(np.float32),
    }
    results = band_balance.band_balance(systems, _examples(reference))
    same = results["identical"]
    assert same["files"] == 2 and abs(same["hf_level_db"]) < 1e-6 and abs(same["worst_gap_db"]) < 1e-6
    assert same["envelope_error_db"] == pytest.approx(0.0, abs=1e-4)  # float32 output
    quiet = results["band -10 dB"]
    assert quiet["hf_level_db"] == pytest.approx(-10.0, abs=0.3)
    assert quiet["envelope_bias_db"] == pytest.approx(-10.0, abs=0.5)
    assert quiet["worst_gap_db"] == pytest.approx(-10.0, abs=1.5) and quiet["worst_gap_hz"] > 4000
    hole = results["notched"]
    assert hole["worst_gap_db"] < -15 and 3300 <= hole["worst_gap_hz"] <= 3700
    assert abs(hole["hf_level_db"]) < 0.5


def test_cli_reports_the_baselines_and_writes_json(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for seed in range(2):
        write_wav(data / f"{seed}.wav", speech_like(1.5, 16000, seed=seed), 16000)
    out = tmp_path / "balance.json"
    proc = subprocess.run([*COMMAND, "--data", str(data), "--limit", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "| sinc | 2 |" in proc.stdout and "| folding | 2 |" in proc.stdout
    results = json.loads(out.read_text())
    assert results["sinc"]["hf_level_db"] < -40 < results["folding"]["hf_level_db"]  # sinc has no high band
    proc = subprocess.run([*COMMAND, "--data", str(tmp_path / "missing")], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "band-balance: error:" in proc.stderr
