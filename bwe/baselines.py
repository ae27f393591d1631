"""Non-learned baselines, callable like a model: float32 [n] at 8 kHz -> float32 [2n] at 16 kHz.

* :func:`sinc` -- soxr (VHQ) 2x upsampling: the narrow band, faithfully, and nothing above 4 kHz.
  Any bandwidth extension must beat it on the high band without losing the low band.
* :func:`folding` -- a classical bandwidth extension by spectral translation with envelope shaping,
  the kind of thing phones did before neural networks (cf. Larsen & Aarts, "Audio Bandwidth
  Extension", 2004, ch. 5). In the STFT domain of the sinc-upsampled input (512-sample Hann
  window, hop 128, at 16 kHz):

  1. *Excitation*: the 4-8 kHz band is filled with copies of the ``SOURCE_BAND`` (1.5-3.5 kHz) of the
     same frame, shifted up by 2.5 kHz (-> 4-6 kHz) and 4.5 kHz (-> 6-8 kHz). The shifts are multiples
     of rate / hop = 125 Hz, so the copied harmonics keep a consistent phase from frame to frame.
  2. *Whitening*: the copies are divided by their own envelope (power smoothed over 500 Hz), so the
     formants of the source band are not repeated in the high band.
  3. *Envelope*: the copies get the level of the top of the narrow band (mean power per bin in
     ``REFERENCE_BAND``, 2.5-3.4 kHz, smoothed over ~40 ms), minus ``offset_db`` at 4 kHz and a further
     ``tilt_db_per_octave`` above it -- speech's high band is weaker than its upper narrow band and
     falls with frequency.
  4. The result is added to the sinc-upsampled input, whose low band is thus kept unchanged.

  Everything is zero-phase and the STFT is inverted with the same window, so the output is
  time-aligned with the input, like :func:`sinc`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.ndimage
import scipy.signal

from bwe.config import INPUT_RATE, OUTPUT_RATE
from bwe.data.audio import resample


STFT_SIZE = 512
STFT_HOP = 128
SOURCE_BAND = (1500.0, 3500.0)
HIGH_BAND_START = 4000.0
REFERENCE_BAND = (2500.0, 3400.0)
# Tuned on a quarter of the corpus' validation split (eval degradation): LSD is flat around
# offset 6-9 dB, tilt 6-9 dB/octave (1.253-1.272); 9 dB / 6 dB/oct is within 0.02 of the best LSD
# and costs 0.19 less WB-PESQ than 6 / 6, since an over-loud invented high band is what PESQ punishes.
DEFAULT_OFFSET_DB = 9.0
DEFAULT_TILT_DB_PER_OCTAVE = 6.0
ENVELOPE_SMOOTHING_HZ = 500.0
LEVEL_SMOOTHING_FRAMES = 5

System = Callable[[np.ndarray], np.ndarray]


def _check_narrowband(x8k: np.ndarray) -> np.ndarray:
    x = np.asarray(x8k, dtype=np.float32)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"x8k: expected a non-empty 1-D signal [time] at 8 kHz, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x8k: contains NaN or Inf samples")
    return x


def sinc(x8k: np.ndarray) -> np.ndarray:
    """soxr VHQ upsampling: float32 [n] at 8 kHz -> float32 [2n] at 16 kHz, time-aligned."""
    return resample(_check_narrowband(x8k), INPUT_RATE, OUTPUT_RATE)


def _translated_excitation(spectrum: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """[bins, frames] STFT -> same shape holding shifted copies of SOURCE_BAND in 4-8 kHz, zero elsewhere."""
    bin_hz = freqs[1] - freqs[0]
    width = SOURCE_BAND[1] - SOURCE_BAND[0]
    out = np.zeros_like(spectrum)
    start = HIGH_BAND_START
    while start < freqs[-1]:
        shift = int(round((start - SOURCE_BAND[0]) / bin_hz))
        target = (freqs >= start) & (freqs < start + width)
        idx = np.nonzero(target)[0]
        out[idx] = spectrum[idx - shift]
        start += width
    out[-1] = out[-2]  # the Nyquist bin has no copy partner of its own
    return out


def folding(
    x8k: np.ndarray,
    offset_db: float = DEFAULT_OFFSET_DB,
    tilt_db_per_octave: float = DEFAULT_TILT_DB_PER_OCTAVE,
) -> np.ndarray:
    """Spectral translation with envelope shaping (module docstring): float32 [n] @ 8 kHz -> [2n] @ 16 kHz."""
    base = sinc(x8k)
    n_out = base.shape[0]
    if n_out < STFT_SIZE:
        return base  # too short for one analysis frame; there is no envelope to follow
    freqs, _, spectrum = scipy.signal.stft(
        base, OUTPUT_RATE, window="hann", nperseg=STFT_SIZE, noverlap=STFT_SIZE - STFT_HOP
    )
    bin_hz = freqs[1]
    excitation = _translated_excitation(spectrum, freqs)
    power = np.abs(excitation) ** 2
    envelope = scipy.ndimage.uniform_filter1d(power, size=int(ENVELOPE_SMOOTHING_HZ / bin_hz), axis=0)
    high = freqs >= HIGH_BAND_START
    whitened = np.zeros_like(excitation)
    whitened[high] = excitation[high] / np.sqrt(np.maximum(envelope[high], 0.0) + 1e-20)

    reference = (freqs >= REFERENCE_BAND[0]) & (freqs < REFERENCE_BAND[1])
    level = np.mean(np.abs(spectrum[reference]) ** 2, axis=0)
    # A moving average of non-negative numbers can round to slightly below zero.
    level = np.maximum(scipy.ndimage.uniform_filter1d(level, size=LEVEL_SMOOTHING_FRAMES, mode="nearest"), 0.0)
    octaves = np.log2(np.maximum(freqs, HIGH_BAND_START) / HIGH_BAND_START)
    shape_db = -offset_db - tilt_db_per_octave * octaves
    gain = np.sqrt(level)[None, :] * (10.0 ** (shape_db / 20.0))[:, None]

    _, high_band = scipy.signal.istft(
        whitened * gain, OUTPUT_RATE, window="hann", nperseg=STFT_SIZE, noverlap=STFT_SIZE - STFT_HOP
    )
    return (base + high_band[:n_out].astype(np.float32)).astype(np.float32)


BASELINES: dict[str, System] = {"sinc": sinc, "folding": folding}
