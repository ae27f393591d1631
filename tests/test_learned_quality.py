"""python -m eval.research learned-quality: the reference and sinc anchor the share of the gap, a system that
returns the reference is rated as the reference, the comparison with sinc is paired; the CLI runs end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal

from bwe.baselines import sinc
from signals import speech_like, write_wav

pytest.importorskip("speechmos")
pytest.importorskip("onnxruntime")
from eval.research import learned_quality  # noqa: E402  (needs speechmos)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, "-m", "eval.research", "learned-quality"]


def test_the_reference_and_sinc_anchor_the_share_of_the_gap():
    references = [speech_like(2.0, 16000, seed=seed).astype(np.float64) for seed in (3, 21)]
    examples = [(f"f{i}", ref, ref[::2].astype(np.float32), 0) for i, ref in enumerate(references)]
    by_input = {ex[2].tobytes(): ex[1] for ex in examples}
    lowpass = scipy.signal.butter(12, 4000, fs=16000, output="sos")
    systems = {
        "sinc": sinc,
        "returns the reference": lambda nb: by_input[nb.tobytes()].astype(np.float32),
        "reference low-passed": lambda nb: scipy.signal.sosfiltfilt(lowpass, by_input[nb.tobytes()]).astype(np.float32),
    }
    results = learned_quality.learned_quality(systems, examples)
    assert list(results) == ["reference", "sinc", "returns the reference", "reference low-passed"]
    assert results["reference"]["files"] == 2
    assert results["reference"]["share_of_gap"] == 1.0 and results["sinc"]["share_of_gap"] == 0.0
    same = results["returns the reference"]
    assert same["p808"] == pytest.approx(results["reference"]["p808"], abs=1e-4)  # float32 output
    assert same["share_of_gap"] == pytest.approx(1.0, abs=1e-3)
    assert results["reference low-passed"]["share_of_gap"] < 0.6
    assert results["sinc"]["p808_vs_sinc_ci95"] == [0.0, 0.0]  # paired: sinc minus itself, file by file


def test_cli_reports_the_reference_and_the_baselines_and_writes_json(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for seed in range(2):
        write_wav(data / f"{seed}.wav", speech_like(1.5, 16000, seed=seed), 16000)
    out = tmp_path / "quality.json"
    proc = subprocess.run([*COMMAND, "--data", str(data), "--limit", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for label in ("reference", "sinc", "folding"):
        assert f"| {label} | 2 |" in proc.stdout
    results = json.loads(out.read_text())
    assert results["reference"]["share_of_gap"] == 1.0 and results["sinc"]["p808_vs_sinc_ci95"] == [0.0, 0.0]
    proc = subprocess.run([*COMMAND, "--data", str(tmp_path / "missing")], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "learned-quality: error:" in proc.stderr
