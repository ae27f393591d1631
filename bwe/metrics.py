"""Metric definitions: the single place where LSD, PESQ, band levels and alignment are defined.

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

**DNSMOS** (a learned, non-intrusive opinion, not one of the fixed definitions): Microsoft's DNSMOS
at 16 kHz through ``speechmos`` (its published ONNX models, run by ``onnxruntime``): the P.808 MOS
of a network trained on listeners' ratings, which hears the missing 4-8 kHz band, and the P.835
overall MOS of the noise-suppression model. It scores one signal alone, so the reference is scored
too; clips shorter than 9 s are repeated to 9 s, longer ones scored in 9 s windows every second.

**Band-level (envelope) error** (:func:`band_level_errors_db`, a diagnostic): how far an estimate's
4-8 kHz envelope is from the reference's. STFT at 16 kHz with a 512-sample periodic Hann window, hop
128 (``scipy.signal.stft``'s defaults otherwise: zero-padded ends); per frame the energy of each
500 Hz band of 4-8 kHz in dB (the last band keeps the Nyquist bin), estimate minus reference. The
*error* is the median over frames of the RMS over bands, the *bias* the median over frames of the
mean over bands (its sign: the band too loud or too quiet overall); corpus figures are means over files.

**Long-term balance** (:func:`long_term_power`, :func:`spectral_balance`, a diagnostic): Welch
power spectra (512-sample periodic Hann, hop 256, summed over frames and files) of the estimates
and the references, both normalised to their 0.5-3 kHz level. *HF level* is the estimate's
4.5-7 kHz level against the reference's in dB (0: as loud as the real band); the *worst gap* is the
largest deviation, signed, over the 100 Hz bands of 300-7500 Hz, and where it is.
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
DNSMOS_RATE = 16000


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
    except ValueError as e:  # the C code's own arithmetic failing on a finite pair (e.g. a NaN it computes)
        reason = f"PESQ failed: {e}"
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


def import_dnsmos():
    """``speechmos.dnsmos`` (an optional dependency, the "eval" extra), or an ImportError that says how to get it."""
    try:
        from speechmos import dnsmos
    except ImportError as e:
        raise ImportError("DNSMOS needs the speechmos and onnxruntime packages: pip install 'bwe[eval]'") from e
    return dnsmos


def dnsmos(signal: np.ndarray) -> dict[str, float]:
    """DNSMOS of float [time] at 16 kHz: ``{"p808": P.808 MOS, "ovrl": P.835 overall MOS}``.

    Samples beyond full scale are clipped, as writing the signal to a 16-bit file would; ValueError
    for an empty, multi-channel or non-finite signal.
    """
    x = np.clip(as_signal(signal, "signal"), -1.0, 1.0).astype(np.float32)
    scores = import_dnsmos().run(x, DNSMOS_RATE)
    return {"p808": float(scores["p808_mos"]), "ovrl": float(scores["ovrl_mos"])}


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


# --------------------------------------------------------------------------------------------
# Band levels of the high band: the envelope error
# --------------------------------------------------------------------------------------------

BAND_RATE = 16000
BAND_N_FFT = 512
BAND_HOP = 128
BAND_FREQS = np.fft.rfftfreq(BAND_N_FFT, 1.0 / BAND_RATE)
ENVELOPE_BAND_HZ = 500.0
# Added to every band energy before its log: a silent band has a finite level.
BAND_ENERGY_FLOOR = 1e-12


def band_stft(x: np.ndarray) -> np.ndarray:
    """Complex STFT [bins, frames] of float [time] at 16 kHz on which band levels are measured
    (512-sample periodic Hann, hop 128, ``scipy.signal.stft``)."""
    return scipy.signal.stft(x, BAND_RATE, nperseg=BAND_N_FFT, noverlap=BAND_N_FFT - BAND_HOP)[2]


def high_band_rows(band_hz: float = ENVELOPE_BAND_HZ) -> list[np.ndarray]:
    """Masks over :data:`BAND_FREQS` of the ``band_hz`` wide bands tiling 4 kHz-Nyquist (the last one
    keeps the Nyquist bin)."""
    nyquist = BAND_RATE / 2
    return [(BAND_FREQS >= lo) & (BAND_FREQS < lo + band_hz) | ((BAND_FREQS == nyquist) & (lo + band_hz >= nyquist))
            for lo in np.arange(HF_BAND[0], nyquist, band_hz)]


def band_levels_db(spectrum: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
    """[frames, bands]: the energy of each band (a mask of ``rows``) of an STFT ``spectrum`` [bins, frames], in dB."""
    return np.stack([10 * np.log10(np.sum(np.abs(spectrum[r]) ** 2, axis=0) + BAND_ENERGY_FLOOR) for r in rows],
                    axis=1)


def error_and_bias_db(differences: np.ndarray) -> tuple[float, float]:
    """``(error, bias)`` of level differences [frames, bands] in dB: the medians over frames of the RMS
    over bands (the size of the error) and of the mean over bands (its sign: a band too loud or too
    quiet overall)."""
    return (float(np.median(np.sqrt(np.mean(np.square(differences), axis=1)))),
            float(np.median(np.mean(differences, axis=1))))


def band_level_errors_db(reference: np.ndarray, estimate: np.ndarray,
                         band_hz: float = ENVELOPE_BAND_HZ) -> tuple[float, float]:
    """How far ``estimate``'s high-band envelope is from ``reference``'s (both float [time] at 16 kHz),
    per STFT frame and ``band_hz`` band of 4-8 kHz: :func:`error_and_bias_db` of estimate minus
    reference level (see the module docstring). The estimate is trimmed to the reference's length."""
    rows = high_band_rows(band_hz)
    return error_and_bias_db(band_levels_db(band_stft(estimate[: len(reference)]), rows)
                             - band_levels_db(band_stft(reference), rows))


# --------------------------------------------------------------------------------------------
# Long-term balance: is the restored band as loud as the real one, and is there a hole?
# --------------------------------------------------------------------------------------------

LONG_TERM_N_FFT = 512
LONG_TERM_FREQS = np.fft.rfftfreq(LONG_TERM_N_FFT, 1.0 / BAND_RATE)
BALANCE_NORMALISE_HZ = (500.0, 3000.0)
BALANCE_HIGH_HZ = (4500.0, 7000.0)
GAP_RANGE_HZ = (300.0, 7500.0)
GAP_BAND_HZ = 100.0


def long_term_power(x: np.ndarray) -> np.ndarray:
    """Welch power spectrum [LONG_TERM_N_FFT // 2 + 1] of float [time] at 16 kHz, summed over frames
    (not averaged), so that files add by their length."""
    _, power = scipy.signal.welch(x, BAND_RATE, window="hann", nperseg=LONG_TERM_N_FFT,
                                  noverlap=LONG_TERM_N_FFT // 2, scaling="spectrum", average="mean")
    frames = max(1, 1 + (len(x) - LONG_TERM_N_FFT) // (LONG_TERM_N_FFT // 2))
    return power * frames


def _long_term_band_power(power: np.ndarray, lo: float, hi: float) -> float:
    return float(power[(LONG_TERM_FREQS >= lo) & (LONG_TERM_FREQS < hi)].sum())


def spectral_balance(estimate_power: np.ndarray, reference_power: np.ndarray) -> dict[str, float]:
    """``{"hf_level_db", "worst_gap_db", "worst_gap_hz"}`` of two :func:`long_term_power` spectra (sums
    over any number of files): the HF level and the worst 100 Hz-band gap (see the module docstring)."""
    def ratio_db(lo, hi):
        return 10 * np.log10(_long_term_band_power(estimate_power, lo, hi)
                             / max(_long_term_band_power(reference_power, lo, hi), 1e-30))

    offset = ratio_db(*BALANCE_NORMALISE_HZ)
    edges = np.arange(GAP_RANGE_HZ[0], GAP_RANGE_HZ[1], GAP_BAND_HZ)
    deviations = np.array([ratio_db(lo, lo + GAP_BAND_HZ) - offset for lo in edges])
    worst = int(np.argmax(np.abs(deviations)))
    return {"hf_level_db": ratio_db(*BALANCE_HIGH_HZ) - offset, "worst_gap_db": float(deviations[worst]),
            "worst_gap_hz": float(edges[worst] + GAP_BAND_HZ / 2)}
