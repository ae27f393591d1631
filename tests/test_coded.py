"""Real codecs and light noise in training (data.codecs, data.noise_*): examples cut from each file's
codec round trip, aligned with their wideband side; noise at the drawn SNR and tilt; clear refusals."""

import shutil

import numpy as np
import pytest
import scipy.signal
import soundfile
import soxr

from bwe.config import recipe_from_dict
from bwe.data import codecs
from bwe.data.coded import CodedAudio, padded_slice
from bwe.data.degrade import add_background_noise
from bwe.data.pipeline import DataPipelineError, ExampleMaker, LevelledAudio, make_dataset
from signals import speech_like

SEGMENT = 2048
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian: apt-get install ffmpeg)")


def cfg(**values):
    base = {"train_dir": "unused", "segment_samples": SEGMENT, "min_seconds": 0.0}
    return recipe_from_dict({"data": {**base, **values}}).data


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("coded")
    files = []
    for i, seconds in enumerate((1.2, 0.8, 0.1)):  # the last is shorter than a segment
        path = str(root / f"f{i}.wav")
        soundfile.write(path, speech_like(seconds, 16000, seed=20 + i, peak=0.4), 16000, subtype="FLOAT")
        files.append(path)
    return LevelledAudio(files, -26.0)


def test_padded_slice_is_zero_outside():
    x = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(padded_slice(x, -2, 4), [0, 0, 1, 2])
    np.testing.assert_array_equal(padded_slice(x, 3, 4), [4, 5, 0, 0])
    np.testing.assert_array_equal(padded_slice(x, 1, 3), [2, 3, 4])


@needs_ffmpeg
def test_coded_examples_are_each_files_codec_round_trip_aligned_with_its_wideband(audio):
    settings = cfg(codec_probability=1.0, codecs=["g711-alaw", "g726"], gain_db_range=[-3.0, -3.0])
    coded = CodedAudio(audio, settings, seed=5)
    again = CodedAudio(audio, settings, seed=5)
    for c in range(2):
        for f in range(3):
            np.testing.assert_array_equal(coded.coded[c][f][0], again.coded[c][f][0])  # the same every run
            assert coded.coded[c][f][0].shape[0] == (audio.lengths[f] + 1) // 2
    below_3k = scipy.signal.butter(8, 3000, fs=8000, output="sos")
    maker = ExampleMaker(audio, settings, seed=5, training=True, coded=coded)
    for i in range(12):
        nb, wb, ok = maker.example(i)
        assert ok and nb.shape == (SEGMENT // 2,) and wb.shape == (SEGMENT,)
        if np.abs(wb).max() < 1e-3:
            continue
        # The wideband side at the channel's gain of -3 dB, the narrowband side its codec's version:
        # aligned to the sample (one sample off costs more correlation than either codec's noise).
        reference = scipy.signal.sosfiltfilt(below_3k, soxr.resample(wb, 16000, 8000, quality="VHQ"))
        low = scipy.signal.sosfiltfilt(below_3k, nb)
        inner = slice(100, -100)
        corr = {lag: np.corrcoef(np.roll(reference, lag)[inner], low[inner])[0, 1] for lag in (-1, 0, 1)}
        assert corr[0] > 0.95 and corr[0] > max(corr[-1], corr[1]) + 0.02, corr
        assert np.std(low[inner]) / np.std(reference[inner]) == pytest.approx(1.0, abs=0.1)


@needs_ffmpeg
def test_codecs_and_noise_leave_validation_and_recipes_without_them_alone(audio):
    plain = ExampleMaker(audio, cfg(), seed=1, training=True)
    coded = CodedAudio(audio, cfg(codecs=["gsm"]), seed=1)
    zero = ExampleMaker(audio, cfg(codecs=["gsm"]), seed=1, training=True, coded=coded)
    for i in range(6):
        for a, b in zip(plain.example(i), zero.example(i)):
            np.testing.assert_array_equal(a, b)
    evaluation = ExampleMaker(audio, cfg(codec_probability=1.0, noise_probability=1.0), seed=1, training=False,
                              coded=coded)
    reference = ExampleMaker(audio, cfg(), seed=1, training=False)
    for a, b in zip(evaluation.example(0), reference.example(0)):
        np.testing.assert_array_equal(a, b)


def test_noise_is_added_to_the_narrowband_side_only(audio):
    plain = ExampleMaker(audio, cfg(), seed=2, training=True)
    noisy = ExampleMaker(audio, cfg(noise_probability=1.0, noise_snr_db_range=[20.0, 20.0]), seed=2, training=True)
    for i in range(6):
        (nb, wb, _), (nb_noisy, wb_noisy, _) = plain.example(i), noisy.example(i)
        np.testing.assert_array_equal(wb, wb_noisy)
        if np.mean(nb**2) > 0:
            snr = 10 * np.log10(np.mean(nb**2) / np.mean((nb_noisy - nb) ** 2))
            assert snr == pytest.approx(20.0, abs=0.5)


@pytest.mark.parametrize("snr_db, tilt_db", [(15.0, 0.0), (30.0, -6.0), (25.0, -3.0)])
def test_background_noise_has_the_drawn_level_and_tilt(snr_db, tilt_db):
    x = speech_like(4.0, 8000, seed=9, peak=0.3)
    before = x.copy()

    class Fixed:  # the draws pinned: SNR, tilt, then the generator's own Gaussian samples
        def __init__(self):
            self.rng = np.random.default_rng(0)

        def uniform(self, low, high):
            return snr_db if (low, high) == (snr_db, snr_db) else tilt_db

        def standard_normal(self, n):
            return self.rng.standard_normal(n)

    noisy, params = add_background_noise(x, Fixed(), (snr_db, snr_db))
    np.testing.assert_array_equal(x, before)
    assert params == {"snr_db": snr_db, "tilt_db_per_octave": tilt_db}
    noise = noisy.astype(np.float64) - x
    assert 10 * np.log10(np.mean(x**2) / np.mean(noise**2)) == pytest.approx(snr_db, abs=0.05)
    freqs, power = scipy.signal.welch(noise, 8000, nperseg=1024)
    octave = [np.mean(power[(freqs >= f) & (freqs < 1.1 * f)]) for f in (400.0, 800.0, 1600.0, 3200.0)]
    slope = np.polyfit(np.arange(4), 10 * np.log10(octave), 1)[0]
    assert slope == pytest.approx(tilt_db, abs=0.6)


def test_silence_gets_no_noise():
    silent = np.zeros(800, np.float32)
    noisy, _ = add_background_noise(silent, np.random.default_rng(1))
    np.testing.assert_array_equal(noisy, silent)


def test_bad_codec_settings_are_refused_with_the_key():
    with pytest.raises(Exception, match="data.codecs: expected a non-empty list of g711-mulaw.*got \\['amr'\\]"):
        cfg(codecs=["amr"])
    with pytest.raises(Exception, match="data.codecs: expected a non-empty list"):
        cfg(codecs=[], codec_probability=0.5)
    with pytest.raises(Exception, match=r"data.codec_probability: must be in \[0, 1\], got 1.5"):
        cfg(codec_probability=1.5)
    with pytest.raises(Exception, match=r"data.noise_snr_db_range: expected \[low, high\]"):
        cfg(noise_snr_db_range=[30.0, 10.0])


def test_coded_audio_that_would_not_fit_in_memory_is_refused(audio, monkeypatch):
    monkeypatch.setattr("bwe.data.pipeline._memory_budget_bytes", lambda: 1000)
    with pytest.raises(DataPipelineError, match="data.codecs: the coded audio would take .* GB, more than half"):
        make_dataset(audio.files, cfg(codec_probability=0.5), 2, seed=0, audio=audio)


def test_codec_delay_is_measured_on_the_start_of_a_long_signal():
    x = np.random.default_rng(3).standard_normal(codecs.DELAY_WINDOW * 2).astype(np.float32)
    assert codecs.codec_delay(x, np.roll(x, 7)) == 7
