"""python -m eval.research pesq-headroom: the variants are what they claim, and the CLI refuses bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bwe.baselines import folding, sinc
from bwe.data.degrade import evaluation_degradation
from bwe.metrics import band_level_errors_db, band_levels_db, band_stft, dnsmos, high_band_rows, lsd, lsd_all
from eval.evaluate import EvaluationError, shift
from eval.research import pesq_headroom
from eval.research.inputs import real_pair_examples
from eval.research.scoring import dnsmos_p808
from signals import speech_like, write_real_pairs, write_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pair():
    reference = speech_like(2.0, 16000, seed=7)
    narrowband = evaluation_degradation(reference)
    return reference, narrowband, folding(narrowband)[: len(reference)]


def test_variants_change_only_the_high_band_as_named(pair):
    reference, narrowband, output = pair
    v = pesq_headroom.variants(reference, output, [1.0, 0.5, 0.0], 500.0, sinc(narrowband), [0.5])
    assert list(v) == ["sinc baseline", "gain 1", "gain 0.5", "gain 0", "oracle frame level", "oracle band levels 50%",
                       "oracle band levels", "reference high band"]
    # The STFT round trip is transparent: gain 1 is the output itself.
    np.testing.assert_allclose(v["gain 1"], output, atol=1e-4)
    low, high = v["gain 0"], v["gain 1"] - v["gain 0"]
    np.testing.assert_allclose(v["gain 0.5"], low + 0.5 * high, atol=1e-5)
    assert lsd_all(reference, v["reference high band"])["lsd_hf"] < 0.1
    # Matching the reference's energy per frame, then per band and frame, brings the high band closer.
    hf = {k: lsd_all(reference, x)["lsd_hf"] for k, x in v.items()}
    assert hf["oracle band levels"] < hf["oracle frame level"] < hf["gain 1"]
    assert hf["oracle band levels"] < hf["oracle band levels 50%"] < hf["gain 1"]
    # The low band is the system's own in every variant.
    for name in ("gain 0", "oracle band levels 50%", "oracle band levels", "reference high band"):
        assert lsd(output, v[name], band=(0.0, 3500.0)) < 0.05


def test_partial_oracle_halves_the_band_level_error_in_db(pair):
    reference, _, output = pair
    v = pesq_headroom.variants(reference, output, [], 500.0, fractions=[0.5])
    error, bias = band_level_errors_db(reference, output)
    assert error > 3.0  # folding's envelope is far from the reference's: the test is not vacuous
    assert band_level_errors_db(reference, v["oracle band levels 50%"])[0] == pytest.approx(error / 2, rel=0.1)
    assert band_level_errors_db(reference, v["oracle band levels"])[0] < 0.1 * error
    assert band_level_errors_db(reference, reference) == pytest.approx((0.0, 0.0), abs=1e-6)
    # Signed: the reference's own high band at twice the amplitude is +6 dB in every band and frame,
    # at half the amplitude -6 dB; the error (RMS) is 6 dB either way.
    for gain, db in ((2.0, 6.02), (0.5, -6.02)):
        scaled = pesq_headroom.variants(reference, reference, [gain], 500.0)[f"gain {gain:g}"]
        assert band_level_errors_db(reference, scaled) == pytest.approx((abs(db), db), abs=0.1)


def test_gain_per_band_scales_each_band_of_4_to_8_khz_alone(pair):
    reference, _, _ = pair
    rows = high_band_rows(1000.0)
    before = band_levels_db(band_stft(reference), rows)
    v = pesq_headroom.variants(reference, reference, [1.0, (1.0, 1.0, 1.0, 1.0), (2.0, 1.0, 1.0, 0.5), (0.0, 3.0)],
                               500.0)
    assert list(v) == ["gain 1", "gain 1/1/1/1", "gain 2/1/1/0.5", "gain 0/3", "oracle frame level",
                       "oracle band levels", "reference high band"]
    np.testing.assert_allclose(v["gain 1/1/1/1"], v["gain 1"], atol=1e-6)
    # Each 1 kHz band moves by its own gain in dB (medians over frames: the window blurs the bands'
    # edges over a bin or two).
    for name, expected_db in (("gain 2/1/1/0.5", [6.02, 0.0, 0.0, -6.02]), ("gain 0/3", [None, None, 9.54, 9.54])):
        change = np.median(band_levels_db(band_stft(v[name]), rows) - before, axis=0)
        for band, db in enumerate(expected_db):
            if db is None:  # silenced: what is left leaks from the bins around it through the window
                assert change[band] < -15
            else:
                assert change[band] == pytest.approx(db, abs=0.5)
    # The low band is untouched.
    assert lsd(reference, v["gain 0/3"], band=(0.0, 3500.0)) < 0.05


def test_gains_of_reads_levels_and_tilts():
    assert pesq_headroom.gains_of("1, 0.5,1/1/1/3,,") == [1.0, 0.5, (1.0, 1.0, 1.0, 3.0)]
    for bad in ("1,loud", "1/x", "1,-1", "1/-2", "1/nan", "inf"):
        with pytest.raises(EvaluationError, match="--gains"):
            pesq_headroom.gains_of(bad)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "eval.research", "pesq-headroom", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_reports_every_variant_as_json(tmp_path):
    for seed in (1, 2):
        write_wav(tmp_path / f"s{seed}.wav", speech_like(2.0, 16000, seed=seed), 16000)
    result = _run("--model", "folding", "--data", tmp_path, "--gains", "1,0,1/1", "--fractions", "0.5", "--visqol",
                  "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = report["variants"]
    assert set(rows) == {"sinc baseline", "gain 1", "gain 0", "gain 1/1", "oracle frame level",
                         "oracle band levels 50%", "oracle band levels", "reference high band"}
    assert rows["gain 1/1"]["lsd_hf"] == pytest.approx(rows["gain 1"]["lsd_hf"], abs=1e-4)
    assert all(row["files"] == 2 for row in rows.values())
    assert rows["reference high band"]["lsd_hf"] < rows["gain 1"]["lsd_hf"] < rows["gain 0"]["lsd_hf"]
    assert rows["reference high band"]["visqol"] > rows["gain 1"]["visqol"]
    assert report["band_level_error_db"] > 3.0


def test_cli_dnsmos_hears_each_variant_alone(tmp_path):
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    reference = speech_like(2.0, 16000, seed=3)
    write_wav(tmp_path / "s.wav", reference, 16000)
    result = _run("--model", "folding", "--data", tmp_path, "--gains", "1,0", "--fractions", "", "--dnsmos", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["variants"]
    assert all(1.0 <= row["dnsmos_p808"] <= 5.0 and row["dnsmos_p808_unscorable"] == 0 for row in rows.values())
    assert rows["reference high band"]["dnsmos_p808"] > rows["gain 0"]["dnsmos_p808"] + 0.1
    # the scorer ignores the reference: DNSMOS rates each signal alone
    assert dnsmos_p808(reference, reference) == dnsmos_p808(np.zeros_like(reference), reference) == dnsmos(reference)["p808"]


def test_cli_refuses_bad_input(tmp_path):
    bad_gains = _run("--model", "folding", "--data", tmp_path, "--gains", "1,1/loud")
    assert bad_gains.returncode == 2 and "--gains" in bad_gains.stderr
    bad_fraction = _run("--model", "folding", "--data", tmp_path, "--fractions", "0.5,1")
    assert bad_fraction.returncode == 2 and "between 0 and 1" in bad_fraction.stderr
    missing = _run("--model", "folding", "--data", tmp_path / "nope")
    assert missing.returncode == 2 and "not a directory" in missing.stderr
    empty = _run("--model", "folding", "--data", tmp_path)
    assert empty.returncode == 2 and "no audio files" in empty.stderr
    write_wav(tmp_path / "a.wav", speech_like(1.0, 16000, seed=3), 16000)
    unknown = _run("--model", "nosuchmodel", "--data", tmp_path)
    assert unknown.returncode == 2 and "neither a baseline" in unknown.stderr
    for stream in (bad_gains, bad_fraction, missing, empty, unknown):
        assert "Traceback" not in stream.stderr


def test_real_pair_examples_find_each_pairs_lag(tmp_path):
    nb, wb = write_real_pairs(tmp_path, [24, 0])
    examples = list(real_pair_examples(
        [(str(nb / "p0.wav"), str(wb / "p0.wav")), (str(nb / "p1.wav"), str(wb / "p1.wav"))], max_offset=400))
    assert [e[0] for e in examples] == [str(wb / "p0.wav"), str(wb / "p1.wav")]
    assert [e[3] for e in examples] == [24, 0]
    assert examples[0][2].shape == (16000,)  # the narrowband input at 8 kHz


def test_cli_scores_real_pairs_aligned_and_paired_by_name(tmp_path):
    from bwe.data.audio import load_audio

    nb, wb = write_real_pairs(tmp_path, [24, 40])
    write_wav(nb / "alone.wav", speech_like(1.0, 8000, seed=5), 8000)  # no wideband partner: not scored
    result = _run("--model", "folding", "--pairs", nb, wb, "--gains", "1,0", "--fractions", "", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["variants"]
    assert all(row["files"] == 2 for row in rows.values())
    # The sinc row is the aligned input, scored exactly as eval.evaluate scores its sinc baseline (its shift).
    expected = []
    for name, lag in (("p0", 24), ("p1", 40)):
        wide = load_audio(str(wb / f"{name}.wav"), target_rate=16000)[0]
        narrow = load_audio(str(nb / f"{name}.wav"), target_rate=8000)[0]
        expected.append(lsd_all(*shift(wide, sinc(narrow), lag))["lsd_hf"])
    assert rows["sinc baseline"]["lsd_hf"] == pytest.approx(np.mean(expected), rel=1e-6)
    assert rows["reference high band"]["lsd_hf"] < 0.1  # aligned: the reference's own band fits exactly
    assert rows["reference high band"]["lsd_hf"] < rows["gain 1"]["lsd_hf"] < rows["gain 0"]["lsd_hf"]


def test_cli_refuses_bad_pairs(tmp_path):
    nb, wb = write_real_pairs(tmp_path, [0])
    both = _run("--model", "folding", "--data", wb, "--pairs", nb, wb)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    missing = _run("--model", "folding", "--pairs", tmp_path / "nope", wb)
    assert missing.returncode == 2 and "not a directory" in missing.stderr
    (tmp_path / "other").mkdir()
    write_wav(tmp_path / "other" / "q.wav", speech_like(1.0, 16000, seed=4), 16000)
    unmatched = _run("--model", "folding", "--pairs", nb, tmp_path / "other")
    assert unmatched.returncode == 2 and "no file names in common" in unmatched.stderr
    negative = _run("--model", "folding", "--pairs", nb, wb, "--max-offset-ms", "-1")
    assert negative.returncode == 2 and "--max-offset-ms" in negative.stderr
    for stream in (both, missing, unmatched, negative):
        assert "Traceback" not in stream.stderr
