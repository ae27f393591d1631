"""Metric definitions: the single place where LSD, PESQ and alignment are defined.

Everything here is NumPy/SciPy (plus the ``pesq`` package), no TensorFlow, so evaluation runs
wherever inference does.

**LSD** (log-spectral distance) follows AP-BWE's ``cal_metrics.py`` (also AERO, NU-Wave 2), so
numbers compare with published tables computed that way:

* STFT with n_fft 2048, hop 512, periodic Hann window of 2048 samples, frames centred by
  reflect-padding n_fft/2 samples on both sides (torch.stft's ``center=True, pad_mode="reflect"``),
  giving ``1 + n // 512`` frames;
* power ``P = |X|^2``, clamped below at 1e-8, then ``log10`` (no factor 10 or 20);
* per frame ``sqrt(mean over frequency bins of (log10 P_ref - log10 P_est)^2)``;
* the mean over frames is the file's LSD. Corpus figures are the mean over files.

Signals are trimmed to the shorter one's length first; time alignment is the caller's job (see
:func:`align`). ``band=(lo_hz, hi_hz)`` keeps the bins with ``lo_hz <= f < hi_hz``, and includes the
Nyquist bin when ``hi_hz`` reaches Nyquist, so that LSD-LF = band (0, 4000) (bins 0-511 at 16 kHz)
and LSD-HF = band (4000, 8000) (bins 512-1024) split the full band's bins without overlap.

**LSD's two parts** (:func:`lsd_level_shape`, a diagnostic): a frame's difference ``d`` over the
band's bins splits exactly into its mean (the *level* error: how much quieter the estimate is, in
log10 units) and the spread around that mean (the *shape* error: wrong peaks, valleys and tilt),
with ``LSD_frame = sqrt(level^2 + shape^2)``. Two estimates can reach one LSD by opposite routes.

**PESQ**: ITU-T P.862.2 wide-band at 16 kHz through the ``pesq`` package. A pair PESQ cannot
score (no utterance found, too short) gives ``None`` and a warning with the reason, never a number.

**ViSQOL** (a second opinion, not one of the fixed definitions): ViSQOL v3 speech mode at 16 kHz
with its default deep-lattice mapper to MOS-LQO, through ``visqol-python`` (a Python port that
matches Google's C++ ViSQOL on its conformance tests). It compares 21 gammatone bands up to 8 kHz
patch by patch, so it also judges the 4-8 kHz band, by a different perceptual model than PESQ's.
Unscorable pairs (too short or no speech patch found) give ``None`` with a warning, as for PESQ.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import scipy.signal

from bwe.data.audio import as_signal

LSD_N_FFT = 2048
LSD_HOP = 512
LSD_POWER_FLOOR = 1e-8
LF_BAND = (0.0, 4000.0)
HF_BAND = (4000.0, 8000.0)
PESQ_RATE = 16000
VISQOL_RATE = 16000


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 copies trimmed to the shorter length."""
    ref = as_signal(reference, "reference")
    est = as_signal(estimate, "estimate")
    n = min(ref.shape[0], est.shape[0])
    return ref[:n], est[:n]


def log_power_spectrogram(x: np.ndarray) -> np.ndarray:
    """log10 of the clamped STFT power of float [time]: [frames, n_fft // 2 + 1], per the LSD definition."""
    x = np.asarray(x, dtype=np.float64)
    pad = LSD_N_FFT // 2
    if x.shape[0] <= pad:
        raise ValueError(f"signal of {x.shape[0]} samples is too short for LSD: reflect padding needs more than {pad}")
    padded = np.pad(x, pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, LSD_N_FFT)[::LSD_HOP]
    window = scipy.signal.get_window("hann", LSD_N_FFT, fftbins=True)  # periodic
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    return np.log10(np.maximum(power, LSD_POWER_FLOOR))


def _band_bins(sample_rate: int, band: tuple[float, float] | None) -> slice | np.ndarray:
    n_bins = LSD_N_FFT // 2 + 1
    if band is None:
        return slice(None)
    lo, hi = band
    nyquist = sample_rate / 2
    if not 0 <= lo < hi:
        raise ValueError(f"band must satisfy 0 <= lo < hi, got {band}")
    freqs = np.arange(n_bins) * sample_rate / LSD_N_FFT
    keep = (freqs >= lo) & ((freqs < hi) | ((hi >= nyquist) & (freqs == nyquist)))
    if not keep.any():
        raise ValueError(f"band {band} contains no STFT bin at {sample_rate} Hz")
    return keep


def _lsd_from_log_power(log_ref: np.ndarray, log_est: np.ndarray, bins: slice | np.ndarray) -> float:
    diff = log_ref[:, bins] - log_est[:, bins]
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=1))))


def lsd(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int = 16000,
    band: tuple[float, float] | None = None,
) -> float:
    """Log-spectral distance between two float [time] signals (see the module docstring).

    Raises ValueError for non-1-D, empty, non-finite or too short (<= 1024 samples) inputs.
    """
    ref, est = _pair(reference, estimate)
    bins = _band_bins(sample_rate, band)
    return _lsd_from_log_power(log_power_spectrogram(ref), log_power_spectrogram(est), bins)


def lsd_all(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 16000) -> dict[str, float]:
    """``{"lsd", "lsd_lf", "lsd_hf"}``: full band, 0-4 kHz and 4 kHz-Nyquist, from one pair of STFTs."""
    ref, est = _pair(reference, estimate)
    log_ref, log_est = log_power_spectrogram(ref), log_power_spectrogram(est)
    return {
        "lsd": _lsd_from_log_power(log_ref, log_est, _band_bins(sample_rate, None)),
        "lsd_lf": _lsd_from_log_power(log_ref, log_est, _band_bins(sample_rate, LF_BAND)),
        "lsd_hf": _lsd_from_log_power(log_ref, log_est, _band_bins(sample_rate, (HF_BAND[0], sample_rate / 2))),
    }


def lsd_level_shape(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int = 16000,
    band: tuple[float, float] | None = HF_BAND,
) -> dict[str, float]:
    """``{"level", "shape"}``: LSD's two parts in ``band`` (default 4 kHz-Nyquist), means over frames.

    Per frame, over the band's bins, ``d = log10 P_ref - log10 P_est``: ``level`` is the mean of
    ``d`` (signed: positive when the estimate is quieter than the reference), ``shape`` its
    standard deviation, so that ``sqrt(level^2 + shape^2)`` is that frame's LSD. Raises ValueError
    like :func:`lsd`.
    """
    ref, est = _pair(reference, estimate)
    bins = _band_bins(sample_rate, band)
    diff = log_power_spectrogram(ref)[:, bins] - log_power_spectrogram(est)[:, bins]
    return {"level": float(np.mean(diff.mean(axis=1))), "shape": float(np.mean(diff.std(axis=1)))}


def pesq_wb(reference: np.ndarray, estimate: np.ndarray) -> float | None:
    """Wide-band PESQ (P.862.2) of ``estimate`` against ``reference``, both float [time] at 16 kHz.

    Trims to the shorter length. Returns None, with a warning naming the reason, when PESQ cannot
    score the pair (no utterance detected, too short); raises ValueError for invalid inputs.
    """
    import pesq  # an optional dependency (the "eval" extra), so import it only when needed

    ref, est = _pair(reference, estimate)
    if not ref.any():
        warnings.warn("PESQ cannot score this pair (the reference is all zeros); reported as unscorable", stacklevel=2)
        return None
    try:
        return float(pesq.pesq(PESQ_RATE, ref.astype(np.float32), est.astype(np.float32), "wb"))
    except (pesq.NoUtterancesError, pesq.BufferTooShortError) as e:
        reason = type(e).__name__
    except pesq.PesqError as e:
        reason = f"{type(e).__name__}: {e}"
    warnings.warn(f"PESQ cannot score this pair ({reason}); reported as unscorable", stacklevel=2)
    return None


def import_visqol():
    """The ``visqol`` package (an optional dependency, the "eval" extra), or an ImportError that says how to get it."""
    try:
        import visqol
    except ImportError as e:
        raise ImportError("ViSQOL needs the visqol-python package: pip install 'bwe[eval]'") from e
    return visqol


@functools.lru_cache(maxsize=1)
def _visqol_speech_api():
    api = import_visqol().VisqolApi()
    # The lattice mapper is C++ ViSQOL's default for speech; asking for it explicitly makes a
    # missing runtime an error instead of a silent switch to the older polynomial mapping.
    api.create(mode="speech", use_lattice_model=True)
    return api


def visqol_speech(reference: np.ndarray, estimate: np.ndarray) -> float | None:
    """ViSQOL v3 speech-mode MOS-LQO of ``estimate`` against ``reference``, both float [time] at 16 kHz.

    Trims to the shorter length. Returns None, with a warning, when ViSQOL finds nothing to compare
    (a clip too short for one patch, or no voice activity); raises ValueError for invalid inputs.
    """
    ref, est = _pair(reference, estimate)
    api = _visqol_speech_api()
    if not ref.any():
        warnings.warn("ViSQOL cannot score this pair (the reference is all zeros); reported as unscorable", stacklevel=2)
        return None
    try:
        return float(api.measure_from_arrays(ref, est, sample_rate=VISQOL_RATE).moslqo)
    except IndexError:
        # visqol-python's patch selector indexes an empty patch list when the reference has no
        # voiced patch; that is the "cannot score" case, not a bug in the caller's input.
        warnings.warn("ViSQOL cannot score this pair (no speech patch found: too short or silent); "
                      "reported as unscorable", stacklevel=2)
        return None


def estimate_delay(reference: np.ndarray, estimate: np.ndarray, max_delay: int) -> int:
    """Constant delay of ``estimate`` relative to ``reference``, in samples, within +-``max_delay``.

    Positive means the estimate lags: ``estimate[n] ~ reference[n - d]``. The lag maximising the
    (FFT) cross-correlation; signed, not absolute, so an inverted estimate is not "aligned" by a
    shift. 0 when either signal is all zeros.
    """
    ref = as_signal(reference, "reference")
    est = as_signal(estimate, "estimate")
    if max_delay < 0:
        raise ValueError(f"max_delay must be >= 0, got {max_delay}")
    if not ref.any() or not est.any():
        return 0
    corr = scipy.signal.correlate(est, ref, mode="full", method="fft")
    lags = scipy.signal.correlation_lags(est.shape[0], ref.shape[0], mode="full")
    window = np.abs(lags) <= max_delay
    return int(lags[window][np.argmax(corr[window])])


def align(reference: np.ndarray, estimate: np.ndarray, max_delay: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove the delay found by :func:`estimate_delay` and trim both to equal length.

    Returns float64 ``(reference, estimate)`` views with ``estimate[n] ~ reference[n]``.
    """
    ref = as_signal(reference, "reference")
    est = as_signal(estimate, "estimate")
    d = estimate_delay(ref, est, max_delay)
    if d > 0:
        est = est[d:]
    elif d < 0:
        ref = ref[-d:]
    n = min(ref.shape[0], est.shape[0])
    return ref[:n], est[:n]
