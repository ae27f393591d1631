"""bwe.data.codecs: every codec's round trip through ffmpeg, its delay found and removed; clear errors."""

import shutil

import numpy as np
import pytest

from bwe.data import codecs
from bwe.data.degrade import evaluation_degradation
from signals import speech_like

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian: apt-get install ffmpeg)")


@pytest.mark.parametrize("delay", [0, 37, -12, codecs.MAX_DELAY])
def test_the_delay_is_the_cross_correlation_peak(delay):
    x = evaluation_degradation(speech_like(1.0, 16000, seed=3))
    shifted = np.roll(x, delay)
    assert codecs.codec_delay(x, shifted) == delay


@needs_ffmpeg
@pytest.mark.parametrize("codec", sorted(codecs.CODECS))
def test_every_codec_round_trips_aligned_with_its_input(codec):
    x = evaluation_degradation(speech_like(1.0, 16000, seed=4))
    before = x.copy()
    y = codecs.aligned_round_trip(x, codec)
    np.testing.assert_array_equal(x, before)
    assert y.shape == x.shape and y.dtype == np.float32
    body = slice(0, len(x) - codecs.MAX_DELAY)  # a delayed codec's last samples are padding
    snr = 10 * np.log10(np.sum(x[body] ** 2) / np.sum((x[body] - y[body]) ** 2))
    # Aligned, waveform coders keep the waveform (G.711 about 37 dB, G.726 at 32 kbit/s about 14 dB);
    # the vocoders only roughly (4-12 dB), and a misalignment of one sample would cost them most of it.
    low = {"g711-mulaw": 30, "g711-alaw": 30, "g726": 10, "gsm": 6, "g723.1": 8, "speex": 2, "opus": 6}[codec]
    assert snr > low, snr


def test_unknown_codec_and_missing_ffmpeg_are_named(tmp_path, monkeypatch):
    x = np.zeros(800, np.float32)
    with pytest.raises(codecs.CodecError, match="unknown codec 'amr'; choose one of g711-mulaw"):
        codecs.round_trip(x, "amr", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(codecs.CodecError, match="ffmpeg not found"):
        codecs.aligned_round_trip(x, "gsm")
