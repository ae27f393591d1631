"""python -m eval.research reference-codec: the G.722 round trip is the codec's (delay, bit-exactness, its noise in 4-8 kHz),
and the comparison scores the same outputs against both references."""

import array
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bwe.baselines import folding, sinc
from bwe.data.audio import load_audio
from bwe.data.degrade import evaluation_degradation
from bwe.metrics import band_level_errors_db, band_levels_db, estimate_delay, lsd_level_shape
from eval.evaluate import score_pair
from eval.research import reference_codec
from signals import speech_like, write_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

G722 = pytest.importorskip("G722")


def _high_band_db(x: np.ndarray) -> float:
    """Energy of 4.5-7.5 kHz in dB (a margin from the band edges, where the QMF banks cross over)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(10 * np.log10(np.sum(np.abs(spectrum[(freqs >= 4500) & (freqs < 7500)]) ** 2) + 1e-12))


def _band_snr_db(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    spectrum, error = np.fft.rfft(x), np.fft.rfft(y - x)
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    band = (freqs >= lo) & (freqs < hi)
    return float(10 * np.log10(np.sum(np.abs(spectrum[band]) ** 2) / np.sum(np.abs(error[band]) ** 2)))


def test_round_trip_is_aligned_same_length_and_leaves_its_input_alone():
    x = speech_like(2.0, 16000, seed=3)
    before = x.copy()
    y = reference_codec.g722_round_trip(x)
    np.testing.assert_array_equal(x, before)
    assert y.shape == x.shape and y.dtype == np.float32
    assert estimate_delay(x, y, 100) == 0  # CODEC_DELAY removed exactly
    # Without the compensation the decode lags by the codec's delay: the constant is measured, not assumed.
    raw = np.frombuffer(G722.G722(16000, 64000, use_numpy=False).decode(G722.G722(16000, 64000).encode(
        array.array("h", np.round(x * 32768).astype(np.int16).tobytes()))), np.int16) / 32768.0
    assert estimate_delay(x, raw, 100) == reference_codec.CODEC_DELAY
    # 0-4 kHz is coded at 48 kbit/s, 4-8 kHz with 2 bits a sample: SNR over 20 dB below, under 10 above.
    assert _band_snr_db(x, y, 100, 3500) > 20.0 > 10.0 > _band_snr_db(x, y, 4500, 7500)


@pytest.mark.parametrize("n", [16001, 16000, 1, 2])
def test_round_trip_keeps_every_length(n):
    """G.722 codes samples in pairs: an odd length must not lose its last sample."""
    x = speech_like(1.1, 16000, seed=8)[:n]
    y = reference_codec.g722_round_trip(x)
    assert y.shape == (n,)
    if n > 1000:
        assert estimate_delay(x, y, 100) == 0


def test_round_trip_fills_an_empty_high_band_with_codec_noise():
    narrow = sinc(evaluation_degradation(speech_like(2.0, 16000, seed=4)))  # nothing above ~4 kHz
    coded = reference_codec.g722_round_trip(narrow)
    assert _high_band_db(coded) > _high_band_db(narrow) + 20.0
    # ... in every 500 Hz band of 4.5-7.5 kHz, not just at the band edge.
    rows = [(f >= lo) & (f < lo + 500) for f in [np.fft.rfftfreq(512, 1 / 16000)] for lo in range(4500, 7500, 500)]
    spectra = [np.fft.rfft(np.lib.stride_tricks.sliding_window_view(s, 512)[::128] * np.hanning(512), axis=1).T
               for s in (narrow, coded)]
    gain = np.median(band_levels_db(spectra[1], rows) - band_levels_db(spectra[0], rows), axis=0)
    assert (gain > 10.0).all(), gain


def test_round_trip_refuses_non_finite_input():
    x = speech_like(0.5, 16000, seed=5)
    x[100] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        reference_codec.g722_round_trip(x)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (an independent G.722 decoder) is not installed")
def test_decoder_matches_ffmpegs_bit_for_bit(tmp_path):
    pcm = np.round(speech_like(1.0, 16000, seed=6) * 32768).astype(np.int16)
    coded = G722.G722(16000, 64000).encode(array.array("h", pcm.tobytes()))
    (tmp_path / "a.g722").write_bytes(coded)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "g722", "-i", str(tmp_path / "a.g722"),
                    "-f", "s16le", "-ar", "16000", str(tmp_path / "a.raw")], check=True)
    ours = np.frombuffer(G722.G722(16000, 64000, use_numpy=False).decode(coded), np.int16)
    np.testing.assert_array_equal(ours, np.fromfile(tmp_path / "a.raw", np.int16))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "eval.research", "reference-codec", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_scores_the_same_outputs_against_both_references(tmp_path):
    for seed in (1, 2):
        (tmp_path / "sub").mkdir(exist_ok=True)
        write_wav(tmp_path / "sub" / f"s{seed}.wav", speech_like(2.0, 16000, seed=seed), 16000)
    result = _run("--data", tmp_path, "--limit", "5", "--json", "--code-outputs")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    systems = report["systems"]
    assert list(systems) == ["sinc", "folding"]
    # Each figure is eval.evaluate's score of the baseline's output against the file or its G.722 round
    # trip, and with --code-outputs of the output's round trip against the file's.
    references = [load_audio(str(tmp_path / "sub" / f"s{seed}.wav"), target_rate=16000)[0] for seed in (1, 2)]
    code = reference_codec.g722_round_trip
    for label, system in (("sinc", sinc), ("folding", folding)):
        outputs = [system(evaluation_degradation(r)) for r in references]
        for name, coded_ref, coded_out in (("given", False, False), ("g722", True, False), ("g722_both", True, True)):
            scored = [(code(r) if coded_ref else r, code(y) if coded_out else y) for r, y in zip(references, outputs)]
            expected = [score_pair(r, y) for r, y in scored]
            row = systems[label][name]
            assert row["files"] == row["pesq_files"] == 2
            for metric in ("lsd", "lsd_lf", "lsd_hf", "pesq_wb"):
                assert row[metric] == pytest.approx(np.mean([e[metric] for e in expected]), rel=1e-6), (label, name)
            biases = [band_level_errors_db(r, y)[1] for r, y in scored]
            assert row["band_bias_db"] == pytest.approx(np.mean(biases), abs=1e-6)
            for part in ("level", "shape"):
                parts = [lsd_level_shape(r, y)[part] for r, y in scored]
                assert row[f"hf_{part}"] == pytest.approx(np.mean(parts), rel=1e-6), (label, name, part)
    # The reference's codec moves folding's LSD-HF although its output is the same.
    assert abs(systems["folding"]["given"]["lsd_hf"] - systems["folding"]["g722"]["lsd_hf"]) > 0.05
    expected_bias = np.mean([band_level_errors_db(r, reference_codec.g722_round_trip(r))[1] for r in references])
    assert report["codec_band_bias_db"] == pytest.approx(expected_bias, abs=1e-6)
    # Coding sinc's output fills its empty band with codec noise: the comparison moves.
    assert systems["sinc"]["g722_both"]["lsd_hf"] < systems["sinc"]["g722"]["lsd_hf"] - 0.5
    table = _run("--data", tmp_path, "--limit", "5")
    assert table.returncode == 0 and "G.722 round trip" in table.stdout and "folding" in table.stdout
    assert "both through G.722" not in table.stdout


def test_cli_scores_real_pairs_after_aligning_them(tmp_path):
    # A pair whose wideband file starts 40 samples (16 kHz) after the narrowband one: the same
    # alignment as eval.evaluate's is undone before scoring, so the figures equal scoring the
    # baseline's output shifted by hand against the reference.
    wide = speech_like(2.0, 16000, seed=4)
    narrow = evaluation_degradation(np.concatenate([np.zeros(40, np.float32), wide]))
    (tmp_path / "nb").mkdir(), (tmp_path / "wb").mkdir()
    write_wav(tmp_path / "nb" / "p.wav", narrow, 8000)
    write_wav(tmp_path / "wb" / "p.wav", wide, 16000)
    result = _run("--pairs", tmp_path / "nb", tmp_path / "wb", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)["systems"]["folding"]["given"]
    reference = load_audio(str(tmp_path / "wb" / "p.wav"), target_rate=16000)[0]
    output = folding(load_audio(str(tmp_path / "nb" / "p.wav"), target_rate=8000)[0])[40:][: len(reference)]
    assert row["files"] == 1
    assert row["lsd_hf"] == pytest.approx(score_pair(reference[: len(output)], output)["lsd_hf"], rel=1e-6)
    assert row["hf_level"] == pytest.approx(lsd_level_shape(reference[: len(output)], output)["level"], rel=1e-6)
    missing = _run("--pairs", tmp_path / "nb", tmp_path / "nope")
    assert missing.returncode == 2 and "not a directory" in missing.stderr and "Traceback" not in missing.stderr


def test_cli_refuses_bad_input(tmp_path):
    missing = _run("--data", tmp_path / "nope")
    assert missing.returncode == 2 and "not a directory" in missing.stderr
    empty = _run("--data", tmp_path)
    assert empty.returncode == 2 and "no audio files" in empty.stderr
    write_wav(tmp_path / "a.wav", speech_like(1.0, 16000, seed=3), 16000)
    bad_limit = _run("--data", tmp_path, "--limit", "0")
    assert bad_limit.returncode == 2 and "--limit" in bad_limit.stderr
    unknown = _run("--data", tmp_path, "--model", "nosuchmodel")
    assert unknown.returncode == 2 and "neither a baseline" in unknown.stderr
    for stream in (missing, empty, bad_limit, unknown):
        assert "Traceback" not in stream.stderr and len(stream.stderr.strip().splitlines()) == 1
