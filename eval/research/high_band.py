"""A signal with its 4-8 kHz band changed: resynthesis from ``bwe.metrics.band_stft``'s frames.

The diagnostics change a system's high band on the same STFT on which ``bwe.metrics`` measures
band levels, so a change of N dB there reads back as N dB in the band-level error.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from bwe.metrics import BAND_FREQS, BAND_HOP, BAND_N_FFT, BAND_RATE, HF_BAND

# The bins of 4 kHz-Nyquist: the band a system adds, and the only one these diagnostics change.
HIGH_BINS = BAND_FREQS >= HF_BAND[0]


def band_istft(spectrum: np.ndarray, n: int) -> np.ndarray:
    """float32 [n]: the signal of an STFT ``spectrum`` [bins, frames] of ``bwe.metrics.band_stft``,
    cut or zero-padded to ``n`` samples."""
    y = scipy.signal.istft(spectrum, BAND_RATE, nperseg=BAND_N_FFT, noverlap=BAND_N_FFT - BAND_HOP)[1][:n]
    return np.pad(y, (0, n - len(y))).astype(np.float32)


def low_band(spectrum: np.ndarray, n: int) -> np.ndarray:
    """float32 [n]: ``spectrum``'s signal without its 4-8 kHz band, to which a changed high band is added."""
    return band_istft(spectrum * ~HIGH_BINS[:, None], n)
