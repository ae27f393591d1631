"""Real telephone codecs, run by ffmpeg: an 8 kHz signal encoded and decoded.

Training channels (``data.codecs``) and test pairs (``python -m eval.codec_pairs``) use the same
encoders and decoders:

* ``g711-mulaw`` / ``g711-alaw``: G.711 at 64 kbit/s, the PSTN's companded PCM;
* ``g726``: G.726 ADPCM at 32 kbit/s (DECT, some VoIP);
* ``gsm``: GSM 06.10 full rate at 13 kbit/s (libgsm), the first mobile codec;
* ``g723.1``: G.723.1 at 6.3 kbit/s (MP-MLQ), early VoIP and video telephony;
* ``speex``: Speex narrowband at 8 kbit/s (CELP; libspeex), VoIP;
* ``opus``: Opus at 12 kbit/s in its VoIP mode on 8 kHz input (SILK narrowband; libopus).

The first four are waveform or near-waveform coders with no delay; the last three are vocoders with
a delay of their own, which :func:`aligned_round_trip` measures and removes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.signal

from bwe.config import INPUT_RATE
from bwe.data.audio import load_audio, save_audio


class Codec(NamedTuple):
    encoder: list[str]  # ffmpeg's output options for the encoded stream
    stream_format: str  # the encoded stream's container (ffmpeg -f)
    description: str


CODECS = {
    "g711-mulaw": Codec(["-c:a", "pcm_mulaw"], "wav", "G.711 mu-law, 64 kbit/s"),
    "g711-alaw": Codec(["-c:a", "pcm_alaw"], "wav", "G.711 A-law, 64 kbit/s"),
    "g726": Codec(["-c:a", "g726", "-b:a", "32k"], "wav", "G.726 ADPCM, 32 kbit/s"),
    "gsm": Codec(["-c:a", "libgsm"], "gsm", "GSM 06.10 full rate, 13 kbit/s"),
    "g723.1": Codec(["-c:a", "g723_1", "-b:a", "6.3k"], "wav", "G.723.1, 6.3 kbit/s"),
    "speex": Codec(["-c:a", "libspeex", "-b:a", "8k"], "ogg", "Speex narrowband, 8 kbit/s"),
    "opus": Codec(["-c:a", "libopus", "-b:a", "12k", "-application", "voip"], "ogg", "Opus (SILK NB), 12 kbit/s"),
}
MAX_DELAY = 400  # samples at 8 kHz (50 ms): more than any codec above delays its output
DELAY_WINDOW = 1 << 18  # samples (33 s) the delay is measured on: a long signal's delay is its start's


class CodecError(RuntimeError):
    """ffmpeg is missing or failed; the message says which step and why."""


def _ffmpeg(args: Sequence[str], what: str) -> None:
    try:
        result = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args],
                                capture_output=True, text=True)
    except FileNotFoundError:
        raise CodecError("ffmpeg not found; install it (Debian: apt-get install ffmpeg)") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise CodecError(f"{what}: ffmpeg failed ({last})")


def round_trip(narrowband: np.ndarray, codec: str, work_dir: str) -> np.ndarray:
    """float [n] at 8 kHz -> float32: 16-bit PCM, encoded and decoded by ``codec`` with ffmpeg.

    The decoded signal is the codec's, delay and length included (GSM pads to whole 20 ms frames).
    ``work_dir`` holds the three intermediate files.
    """
    if codec not in CODECS:
        raise CodecError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    encoder, stream_format, _ = CODECS[codec]
    pcm, coded, decoded = (os.path.join(work_dir, name) for name in ("pcm.wav", "coded.bin", "decoded.wav"))
    save_audio(pcm, narrowband, INPUT_RATE, subtype="PCM_16")
    _ffmpeg(["-i", pcm, *encoder, "-f", stream_format, coded], f"{codec} encoder")
    # A raw GSM stream carries no header: its rate and channels are given.
    raw = ["-ar", str(INPUT_RATE), "-ac", "1"] if stream_format == "gsm" else []
    # Opus decodes at 48 kHz whatever it was given; every decode is asked for 8 kHz.
    _ffmpeg(["-f", stream_format, *raw, "-i", coded, "-ar", str(INPUT_RATE), "-c:a", "pcm_s16le", decoded],
            f"{codec} decoder")
    y, rate = load_audio(decoded)
    if rate != INPUT_RATE:
        raise CodecError(f"{codec}: the decoder gave {rate} Hz, expected {INPUT_RATE}")
    return y


def codec_delay(original: np.ndarray, decoded: np.ndarray) -> int:
    """Samples by which ``decoded`` lags ``original`` (within ``MAX_DELAY``): the cross-correlation's peak
    over their first ``DELAY_WINDOW`` samples."""
    n = min(len(original), len(decoded), DELAY_WINDOW)
    correlation = scipy.signal.correlate(decoded[:n], original[:n], mode="full", method="fft")
    lags = np.arange(-(n - 1), n)
    near = np.abs(lags) <= MAX_DELAY
    return int(lags[near][np.argmax(correlation[near])])


def aligned_round_trip(narrowband: np.ndarray, codec: str) -> np.ndarray:
    """:func:`round_trip` with the codec's delay removed: float32 [n], sample for sample with the input."""
    x = np.asarray(narrowband, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="bwe-codec-") as work_dir:
        y = round_trip(x, codec, work_dir)
    delay = codec_delay(x, y)
    y = y[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay, np.float32), y])
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)].astype(np.float32)
