"""python -m eval.research envelope-probe: causal features, exact reshaping, a probe that learns what is predictable, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bwe.baselines import folding, sinc
from bwe.data.audio import load_audio
from bwe.data.degrade import evaluation_degradation
from bwe.metrics import band_level_errors_db, band_stft, lsd
from eval.evaluate import shift
from eval.research import envelope_probe as ep
from eval.research.inputs import simulated_examples
from signals import speech_like, write_real_pairs, write_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RATE = 16000


def modulated_noise(seconds: float, seed: int, independent_high_band: bool) -> np.ndarray:
    """White noise whose level follows a random slow envelope; the 4-8 kHz half follows the same
    envelope (predictable from the low band) or one of its own (not predictable)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)

    def envelope():
        steps = rng.uniform(-30, 0, size=n // 1600 + 2)  # a new level (dB) every 100 ms
        return 10 ** (np.interp(np.arange(n), np.arange(len(steps)) * 1600, steps) / 20)

    spectrum = np.fft.rfft(rng.standard_normal(n))
    high = np.fft.rfftfreq(n, 1 / RATE) >= 4000
    low_part = np.fft.irfft(spectrum * ~high, n)
    high_part = np.fft.irfft(spectrum * high, n)
    low_env = envelope()
    high_env = envelope() if independent_high_band else low_env
    return (0.1 * (low_part * low_env + high_part * high_env)).astype(np.float32)


def test_features_are_causal_and_cover_the_context():
    x = evaluation_degradation(speech_like(1.0, RATE, seed=1))
    changed = x.copy()
    changed[4000:] += 0.1  # 8 kHz sample 4000 = 16 kHz sample 8000
    a, b = ep.features(x, 4), ep.features(changed, 4)
    assert a.shape[1] == 15 * 5
    # Frames whose 512-sample window ends before sample 8000 (centred on 128 k: k <= 59) see no change.
    np.testing.assert_array_equal(a[:60], b[:60])
    assert not np.array_equal(a[64:], b[64:])
    # Column block k holds the levels k frames back.
    np.testing.assert_array_equal(a[10:, 15 * 3: 15 * 4], a[7:-3, :15])
    # A lag moves every column block back by whole frames, the first frame standing in before the start.
    lagged = ep.features(x, 4, lag_frames=2)
    np.testing.assert_array_equal(lagged[2:], a[:-2])
    np.testing.assert_array_equal(lagged[:2], np.repeat(a[:1], 2, axis=0))


def test_reshaping_to_the_reference_levels_fixes_the_envelope_and_keeps_the_low_band():
    reference = speech_like(2.0, RATE, seed=2)
    output = folding(evaluation_degradation(reference))[: len(reference)]
    levels = ep.band_levels_db(band_stft(reference), ep.HIGH_ROWS)
    reshaped = ep.reshape_high_band(output, levels)
    before, after = band_level_errors_db(reference, output)[0], band_level_errors_db(reference, reshaped)[0]
    assert before > 3.0 and after < 0.1 * before
    assert lsd(output, reshaped, band=(0.0, 3500.0)) < 0.05
    half = ep.reshape_high_band(output, levels, gain=0.5)
    assert band_level_errors_db(reference, half) == pytest.approx((6.02, -6.02), abs=0.3)


def test_probe_learns_a_predictable_high_band_and_not_an_unpredictable_one(tmp_path):
    errors = {}
    for independent in (False, True):
        folder = tmp_path / str(independent)
        folder.mkdir()
        files = []
        for seed in range(8):
            path = folder / f"{seed}.wav"
            write_wav(path, modulated_noise(3.0, seed + 10 * independent, independent), RATE)
            files.append(str(path))
        probe = ep.EnvelopeProbe(context_frames=4).fit(files[:6])
        report = ep.probe_report(probe, simulated_examples(files[6:]), system=None)
        errors[independent] = report["probe_envelope_error_db"]
    assert errors[False] < 2.5 < 5.0 < errors[True]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "eval.research", "envelope-probe", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_reports_the_probe_and_the_reshaped_system_as_json(tmp_path):
    for seed in range(4):
        write_wav(tmp_path / f"s{seed}.wav", speech_like(2.0, RATE, seed=20 + seed), RATE)
    result = _run("--train", tmp_path, "--data", tmp_path, "--model", "folding", "--limit", "2", "--gains", "1,0.5",
                  "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files"] == 2 and report["train_frames"] > 0
    assert list(report["system"]) == ["sinc baseline", "system as is", "system, probe envelope x1",
                                      "system, probe envelope x0.5"]
    for row in report["system"].values():
        assert {"pesq_wb", "lsd_hf", "envelope_error_db", "pesq_wb_files"} <= set(row)


def test_cli_tests_the_probe_on_real_pairs_aligned(tmp_path):
    from bwe.metrics import lsd_all

    for seed in range(3):
        write_wav(tmp_path / f"s{seed}.wav", speech_like(2.0, RATE, seed=30 + seed), RATE)
    nb, wb = write_real_pairs(tmp_path / "pairs", [24, 40])
    result = _run("--train", tmp_path, "--pairs", nb, wb, "--model", "folding", "--gains", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files"] == 2 and report["too_short"] == []
    # The sinc row is each input aligned to its reference by its lag, as eval.evaluate scores it.
    expected = []
    for name, lag in (("p0", 24), ("p1", 40)):
        wide = load_audio(str(wb / f"{name}.wav"), target_rate=RATE)[0]
        narrow = load_audio(str(nb / f"{name}.wav"), target_rate=8000)[0]
        expected.append(lsd_all(*shift(wide, sinc(narrow), lag))["lsd_hf"])
    assert report["system"]["sinc baseline"]["lsd_hf"] == pytest.approx(np.mean(expected), rel=1e-6)


def test_example_features_put_the_reference_on_the_inputs_timeline():
    reference = speech_like(2.0, RATE, seed=3)
    narrowband = evaluation_degradation(reference)
    x0, y0 = ep.example_features(reference, narrowband, 0, 2)
    # A reference 256 samples (2 hops) ahead of the input: moved back onto the input's timeline,
    # its frames line up with the unshifted reference's frames.
    ahead = np.concatenate([reference[256:], np.zeros(256, np.float32)])
    x1, y1 = ep.example_features(ahead, narrowband, 256, 2)
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_allclose(y1[4:-4], y0[4:-4], atol=1e-3)


def test_cli_refuses_bad_input(tmp_path):
    missing = _run("--train", tmp_path / "nope", "--data", tmp_path)
    assert missing.returncode == 2 and "--train" in missing.stderr and "not a directory" in missing.stderr
    empty = _run("--train", tmp_path, "--data", tmp_path)
    assert empty.returncode == 2 and "no audio files" in empty.stderr
    bad_gains = _run("--train", tmp_path, "--data", tmp_path, "--gains", "1,x")
    assert bad_gains.returncode == 2 and "--gains" in bad_gains.stderr
    negative_lag = _run("--train", tmp_path, "--data", tmp_path, "--lag-ms", "-8")
    assert negative_lag.returncode == 2 and "--lag-ms" in negative_lag.stderr
    for stream in (missing, empty, bad_gains, negative_lag):
        assert "Traceback" not in stream.stderr
