"""Narrowband simulation: from a 16 kHz wideband clip to the 8 kHz signal a telephone would carry.

Training (:func:`simulate_narrowband`) draws a new channel for every clip so that the model learns
bandwidth extension rather than the inverse of one particular filter:

1. a low-pass at 16 kHz from a random family -- Butterworth, Chebyshev I, elliptic (IIR, random
   order 4-10 / 4-8, pass-band ripple 0.05-0.5 dB, elliptic stop-band 40-80 dB) or a windowed-sinc FIR
   (31-191 taps, Hamming/Hann/Blackman/Kaiser window) -- with a random cutoff in 3.4-4 kHz;
2. soxr (VHQ) resampling to 8 kHz, whose anti-aliasing filter removes whatever the low-pass left
   above 4 kHz;
3. with probability ``highpass_probability`` (0 unless a recipe sets it), the lower edge of a
   telephone channel (G.712 passes 300-3400 Hz): a zero-phase Butterworth high-pass of random
   order 2-6 with a random cutoff in ``highpass_hz_range`` (default 200-400 Hz), so the model also
   sees input whose low band ends early;
4. a random gain (-18 to +6 dB, capped so that nothing clips);
5. with probability 1/2, 8-bit G.711-style companding, mu-law or A-law with equal odds.

The low-pass is applied **zero-phase**: IIR filters forwards and backwards (``sosfiltfilt``, so the
magnitude response is |H|^2 and the design cutoff is where the attenuation reaches 2x the design
value, e.g. -6 dB for Butterworth), the linear-phase FIR centred on each sample. A causal filter would
delay the pass-band by a frequency-dependent group delay (several samples near the cutoff); the
wideband target is not delayed, so the model would be asked to predict the future, and waveform and
feature-matching losses would punish it for a phase error no causal model can fix. Phase
distortion is not what bandwidth extension is about, so the pair stays time-aligned.

The gain is part of the pair: the wideband target must be scaled by ``params["gain"]`` too, or
the model is asked to undo a level change it cannot observe. :func:`make_training_pair` does both.

Evaluation (:func:`evaluation_degradation`) uses one fixed chain, the same for every report:
an 8th-order Chebyshev type I low-pass, 0.1 dB pass-band ripple, 3.8 kHz cutoff, applied
zero-phase, then soxr VHQ to 8 kHz. No gain, no companding. Fixed so that numbers compare across
runs; paired with real 8 kHz recordings so that overfitting to one filter shows.
:func:`telephone_degradation` is the fixed telephone band (300-3400 Hz) for the same purpose.

Shapes: 16 kHz input float [n]; 8 kHz output float32 [ceil(n / 2)] (soxr's length for a 2:1 ratio).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.signal

from bwe.config import INPUT_RATE, OUTPUT_RATE
from bwe.data.audio import as_signal, resample


LOWPASS_FAMILIES = ("butterworth", "chebyshev1", "elliptic", "fir")
FIR_WINDOWS = ("hamming", "hann", "blackman", "kaiser")
COMPANDING = ("none", "mu-law", "a-law")

MU = 255.0  # G.711 mu-law constant
A = 87.6  # G.711 A-law constant

EVAL_FILTER_ORDER = 8
EVAL_RIPPLE_DB = 0.1
EVAL_CUTOFF_HZ = 3800.0
TELEPHONE_BAND_HZ = (300.0, 3400.0)  # G.712's pass band
TELEPHONE_HIGHPASS_ORDER = 4


def _sosfiltfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    # scipy's default edge padding is longer than a very short clip; shrink it rather than fail.
    padlen = min(3 * (2 * len(sos) + 1), x.shape[0] - 1)
    return scipy.signal.sosfiltfilt(sos, x, padlen=padlen)


def _fir_zero_phase(taps: np.ndarray, x: np.ndarray) -> np.ndarray:
    # An odd-length symmetric FIR centred on each output sample has exactly zero phase.
    return scipy.signal.oaconvolve(x, taps, mode="same")


def _draw_lowpass(rng: np.random.Generator, cutoff_range: tuple[float, float]) -> dict[str, Any]:
    family = str(rng.choice(LOWPASS_FAMILIES))
    params: dict[str, Any] = {
        "family": family,
        "cutoff_hz": float(rng.uniform(*cutoff_range)),
        "order": None,
        "ripple_db": None,
        "stopband_db": None,
        "numtaps": None,
        "window": None,
        "kaiser_beta": None,
    }
    if family == "butterworth":
        params["order"] = int(rng.integers(4, 11))
    elif family == "chebyshev1":
        params["order"] = int(rng.integers(4, 11))
        params["ripple_db"] = float(rng.uniform(0.05, 0.5))
    elif family == "elliptic":
        params["order"] = int(rng.integers(4, 9))
        params["ripple_db"] = float(rng.uniform(0.05, 0.5))
        params["stopband_db"] = float(rng.uniform(40.0, 80.0))
    else:
        params["numtaps"] = int(2 * rng.integers(15, 96) + 1)
        params["window"] = str(rng.choice(FIR_WINDOWS))
        if params["window"] == "kaiser":
            params["kaiser_beta"] = float(rng.uniform(5.0, 9.0))
    return params


def apply_lowpass(x16k: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Apply the zero-phase low-pass described by ``params`` (as drawn by :func:`simulate_narrowband`).

    Returns float64 [n] at 16 kHz.
    """
    x = as_signal(x16k, "x16k")
    family, cutoff, fs = params["family"], params["cutoff_hz"], OUTPUT_RATE
    if family == "butterworth":
        sos = scipy.signal.butter(params["order"], cutoff, fs=fs, output="sos")
    elif family == "chebyshev1":
        sos = scipy.signal.cheby1(params["order"], params["ripple_db"], cutoff, fs=fs, output="sos")
    elif family == "elliptic":
        sos = scipy.signal.ellip(
            params["order"], params["ripple_db"], params["stopband_db"], cutoff, fs=fs, output="sos"
        )
    elif family == "fir":
        window = ("kaiser", params["kaiser_beta"]) if params["window"] == "kaiser" else params["window"]
        taps = scipy.signal.firwin(params["numtaps"], cutoff, window=window, fs=fs)
        return _fir_zero_phase(taps, x)
    else:
        raise ValueError(f"unknown low-pass family {family!r}; expected one of {LOWPASS_FAMILIES}")
    return _sosfiltfilt(sos, x)


def mu_law_compand(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """Encode with the mu-law (mu = 255) to ``bits`` bits and decode again: float32 [n] in [-1, 1].

    The continuous G.711 law F(x) = sign(x) ln(1 + mu|x|) / ln(1 + mu), quantised mid-rise to
    2**bits levels. Inputs outside [-1, 1] are clipped first. The error at amplitude |x| is at most
    half a step times dx/dF = ln(1 + mu)(1 + mu|x|)/mu, about 2 % of |x| for loud samples at 8 bits.
    """
    levels = 2 ** (bits - 1)
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    f = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    q = np.clip(np.floor(f * levels), -levels, levels - 1)
    f_hat = (q + 0.5) / levels
    return (np.sign(f_hat) * np.expm1(np.abs(f_hat) * np.log1p(MU)) / MU).astype(np.float32)


def a_law_compand(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """Encode with the A-law (A = 87.6) to ``bits`` bits and decode again: float32 [n] in [-1, 1].

    F(x) = A|x| / (1 + ln A) below |x| = 1/A (a linear segment), sign(x)(1 + ln(A|x|)) / (1 + ln A)
    above; quantised mid-rise to 2**bits levels. Inputs outside [-1, 1] are clipped first.
    """
    levels = 2 ** (bits - 1)
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    ax = np.abs(x)
    norm = 1.0 + np.log(A)
    f = np.where(ax < 1.0 / A, A * ax / norm, (1.0 + np.log(np.maximum(A * ax, 1.0))) / norm)
    q = np.clip(np.floor(np.sign(x) * f * levels), -levels, levels - 1)
    f_hat = (q + 0.5) / levels
    af = np.abs(f_hat)
    y = np.where(af < 1.0 / norm, af * norm / A, np.exp(af * norm - 1.0) / A)
    return (np.sign(f_hat) * y).astype(np.float32)


def simulate_narrowband(
    x16k: np.ndarray,
    rng: np.random.Generator,
    *,
    cutoff_range: tuple[float, float] = (3400.0, 4000.0),
    gain_db_range: tuple[float, float] = (-18.0, 6.0),
    companding_probability: float = 0.5,
    highpass_probability: float = 0.0,
    highpass_hz_range: tuple[float, float] = (200.0, 400.0),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Random telephone-like channel: 16 kHz float [n] -> 8 kHz float32 [ceil(n / 2)], plus every choice.

    Args:
        x16k: wideband speech at 16 kHz, [time].
        rng: the only source of randomness; the same generator state gives the same output.
        cutoff_range, gain_db_range, companding_probability, highpass_probability, highpass_hz_range:
            the ranges described in the module docstring (the defaults).

    Returns:
        ``(x8k, params)``. ``params`` holds plain Python values (JSON-serialisable): ``family``,
        ``cutoff_hz``, ``order``, ``ripple_db``, ``stopband_db``, ``numtaps``, ``window``,
        ``kaiser_beta`` (None where a family has no such parameter), ``zero_phase`` (always True),
        ``gain_db`` (the applied gain, after the anti-clipping cap), ``gain`` (linear; scale the
        wideband target by it too), ``gain_db_drawn`` and ``companding`` (one of :data:`COMPANDING`).
    """
    x = as_signal(x16k, "x16k")
    params = _draw_lowpass(rng, cutoff_range)
    params["zero_phase"] = True
    # Draw everything up front so the random stream does not depend on the signal.
    gain_db_drawn = float(rng.uniform(*gain_db_range))
    companding = "none"
    if rng.uniform() < companding_probability:
        companding = str(rng.choice(COMPANDING[1:]))
    highpass_hz = highpass_order = None
    if rng.uniform() < highpass_probability:
        highpass_hz, highpass_order = float(rng.uniform(*highpass_hz_range)), int(rng.integers(2, 7))

    band = apply_lowpass(x, params)
    if highpass_hz is not None:
        band = _sosfiltfilt(scipy.signal.butter(highpass_order, highpass_hz, "highpass", fs=OUTPUT_RATE,
                                                output="sos"), band)
    x8k = resample(band.astype(np.float32), OUTPUT_RATE, INPUT_RATE)
    # Cap the gain so that neither the narrowband input nor the equally scaled target clips.
    peak = max(float(np.max(np.abs(x8k))), float(np.max(np.abs(x))), 1e-9)
    gain_db = min(gain_db_drawn, 20.0 * np.log10(0.99 / peak))
    gain = float(10.0 ** (gain_db / 20.0))
    x8k = x8k * np.float32(gain)
    if companding == "mu-law":
        x8k = mu_law_compand(x8k)
    elif companding == "a-law":
        x8k = a_law_compand(x8k)
    params.update(gain_db=float(gain_db), gain=gain, gain_db_drawn=gain_db_drawn, companding=companding,
                  highpass_hz=highpass_hz, highpass_order=highpass_order)
    return x8k.astype(np.float32, copy=False), params


def add_background_noise(x8k: np.ndarray, rng: np.random.Generator,
                         snr_db_range: tuple[float, float] = (15.0, 40.0)) -> tuple[np.ndarray, dict[str, float]]:
    """Light background noise: 8 kHz float [n] -> float32 [n] plus ``{"snr_db", "tilt_db_per_octave"}``.

    Gaussian noise whose power falls by a random 0-6 dB per octave (white to brown-ish; flat below
    100 Hz), scaled to a random signal-to-noise ratio in ``snr_db_range`` against the mean power of
    ``x8k``. A silent ``x8k`` is returned unchanged: it has no level to set the noise by.
    """
    x = as_signal(x8k, "x8k")
    snr_db, tilt = float(rng.uniform(*snr_db_range)), float(rng.uniform(-6.0, 0.0))
    params = {"snr_db": snr_db, "tilt_db_per_octave": tilt}
    white = rng.standard_normal(x.shape[0])
    power = float(np.mean(x**2))
    if power == 0.0:
        return x.astype(np.float32), params
    freqs = np.maximum(np.fft.rfftfreq(x.shape[0], 1.0 / INPUT_RATE), 100.0)
    noise = np.fft.irfft(np.fft.rfft(white) * (freqs / 100.0) ** (tilt / 20.0 / np.log10(2.0)), n=x.shape[0])
    noise *= np.sqrt(power / 10.0 ** (snr_db / 10.0) / max(float(np.mean(noise**2)), 1e-30))
    return np.clip(x + noise, -1.0, 1.0).astype(np.float32), params


def make_training_pair(
    x16k: np.ndarray, rng: np.random.Generator, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`simulate_narrowband` plus the target scaled by the same gain.

    Returns ``(x8k float32 [ceil(n/2)], y16k float32 [n], params)``.
    """
    x8k, params = simulate_narrowband(x16k, rng, **kwargs)
    y16k = (np.asarray(x16k, dtype=np.float64) * params["gain"]).astype(np.float32)
    return x8k, y16k, params


def evaluation_lowpass_sos() -> np.ndarray:
    """The evaluation low-pass (see the module docstring) as second-order sections at 16 kHz."""
    return scipy.signal.cheby1(EVAL_FILTER_ORDER, EVAL_RIPPLE_DB, EVAL_CUTOFF_HZ, fs=OUTPUT_RATE, output="sos")


def evaluation_degradation(x16k: np.ndarray) -> np.ndarray:
    """The fixed evaluation channel: 16 kHz float [n] -> 8 kHz float32 [ceil(n / 2)].

    8th-order Chebyshev I (0.1 dB ripple, 3.8 kHz), zero-phase, then soxr VHQ to 8 kHz.
    Deterministic; no gain, no companding.
    """
    x = as_signal(x16k, "x16k")
    filtered = _sosfiltfilt(evaluation_lowpass_sos(), x).astype(np.float32)
    return resample(filtered, OUTPUT_RATE, INPUT_RATE)


def telephone_degradation(x16k: np.ndarray) -> np.ndarray:
    """The fixed telephone channel (G.712's 300-3400 Hz pass band): 16 kHz float [n] -> 8 kHz float32.

    The evaluation channel's Chebyshev I low-pass moved to 3.4 kHz and a 4th-order Butterworth
    high-pass at 300 Hz, both zero-phase, then soxr VHQ to 8 kHz. Deterministic.
    """
    x = as_signal(x16k, "x16k")
    low, high = TELEPHONE_BAND_HZ
    lowpass = scipy.signal.cheby1(EVAL_FILTER_ORDER, EVAL_RIPPLE_DB, high, fs=OUTPUT_RATE, output="sos")
    highpass = scipy.signal.butter(TELEPHONE_HIGHPASS_ORDER, low, "highpass", fs=OUTPUT_RATE, output="sos")
    filtered = _sosfiltfilt(highpass, _sosfiltfilt(lowpass, x)).astype(np.float32)
    return resample(filtered, OUTPUT_RATE, INPUT_RATE)
