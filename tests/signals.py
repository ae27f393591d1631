"""Deterministic speech-like test signals, so no test needs a corpus.

A source-filter model, crude but with the properties the tests care about: a harmonic voiced part
(glottal pulse train with a jittered, gliding f0 through cascaded formant resonators), unvoiced
fricative-like noise bursts (high-passed noise with most energy above 2.5 kHz), and silences. At
16 kHz the signal has real energy up to 8 kHz, so band-limiting, metrics and bandwidth extension
have something to measure.

All functions take an explicit ``seed`` (or a ``np.random.Generator``) and return float32 arrays
of shape [time] with peak amplitude ``peak`` (0.5 by default, leaving head-room for gain tests).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import scipy.signal
import soundfile

# (low, high) ranges of the first five formant frequencies in Hz, roughly an adult voice's.
_FORMANT_RANGES = ((300.0, 800.0), (900.0, 2300.0), (2300.0, 3200.0), (3300.0, 4200.0), (4500.0, 6000.0))
_FORMANT_BANDWIDTHS = (80.0, 100.0, 150.0, 250.0, 350.0)


def _resonator(freq: float, bandwidth: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-order all-pole resonator (Klatt style) with unit gain at DC."""
    radius = np.exp(-np.pi * bandwidth / rate)
    theta = 2.0 * np.pi * freq / rate
    a = np.array([1.0, -2.0 * radius * np.cos(theta), radius**2])
    return np.array([a.sum()]), a


def _fade(n: int, rate: int, ramp_s: float = 0.01) -> np.ndarray:
    """Raised-cosine on/off envelope so that segments do not click."""
    ramp = min(int(ramp_s * rate), n // 2)
    env = np.ones(n)
    if ramp > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        env[:ramp] = r
        env[n - ramp :] = r[::-1]
    return env


def voiced_segment(n: int, rate: int, rng: np.random.Generator, f0: float | None = None) -> np.ndarray:
    """A vowel-like segment: pulse train (f0 100-220 Hz, 1 % jitter, linear glide) through formants.

    Returns float64 [n], not normalised.
    """
    base = f0 if f0 is not None else rng.uniform(100.0, 220.0)
    glide = np.linspace(1.0, rng.uniform(0.85, 1.15), n)
    jitter = 1.0 + 0.01 * rng.standard_normal(n)
    f0_track = base * glide * jitter
    phase = np.cumsum(f0_track / rate)
    pulses = np.zeros(n)
    pulses[1:][np.diff(np.floor(phase)) > 0] = 1.0
    # Glottal source: two real poles give the -12 dB/octave tilt of the glottal flow; lip radiation
    # (first difference) adds +6 dB/octave back, which leaves speech's familiar -6 dB/octave.
    source = scipy.signal.lfilter([1.0], np.poly([0.95, 0.95]), pulses)
    source = np.diff(source, prepend=0.0)
    aspiration = 0.02 * rng.standard_normal(n)
    y = source + aspiration
    nyquist = rate / 2.0
    for (lo, hi), bw in zip(_FORMANT_RANGES, _FORMANT_BANDWIDTHS):
        freq = rng.uniform(lo, hi)
        if freq >= 0.9 * nyquist:
            continue
        b, a = _resonator(freq, bw, rate)
        # Each resonator has unit DC gain; the sum of a dry path keeps the higher bands from being
        # buried under the cascade's low-pass behaviour, so there is energy up to Nyquist.
        y = 0.8 * scipy.signal.lfilter(b, a, y) + 0.2 * y
    return y * _fade(n, rate)


def unvoiced_burst(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A fricative-like burst: white noise high-passed at 2.5-4 kHz (scaled to the rate).

    Returns float64 [n], not normalised.
    """
    cutoff = rng.uniform(2500.0, 4000.0) * min(1.0, rate / 16000.0)
    sos = scipy.signal.butter(4, cutoff, btype="highpass", fs=rate, output="sos")
    noise = scipy.signal.sosfilt(sos, rng.standard_normal(n))
    return noise * _fade(n, rate, ramp_s=0.005)


def speech_like(seconds: float, rate: int = 16000, seed: int = 0, peak: float = 0.5) -> np.ndarray:
    """Speech-like float32 [n] signal, n = round(seconds * rate), deterministic in ``seed``.

    Alternates voiced segments (120-300 ms), unvoiced bursts (40-120 ms) and pauses (30-120 ms);
    starts with a voiced segment. Voiced segments are 3-4x louder (RMS) than unvoiced ones, as in speech.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    rng = np.random.default_rng(seed)
    n_total = int(round(seconds * rate))
    pieces: list[np.ndarray] = []
    filled = 0
    kind = 0
    while filled < n_total:
        if kind == 0:
            n = int(rng.uniform(0.12, 0.30) * rate)
            seg = voiced_segment(n, rate, rng)
            seg *= 1.0 / (np.sqrt(np.mean(seg**2)) + 1e-12)
        elif kind == 1:
            n = int(rng.uniform(0.04, 0.12) * rate)
            seg = unvoiced_burst(n, rate, rng)
            seg *= 0.3 / (np.sqrt(np.mean(seg**2)) + 1e-12)
        else:
            n = int(rng.uniform(0.03, 0.12) * rate)
            seg = 1e-4 * rng.standard_normal(n)
        pieces.append(seg)
        filled += n
        kind = (kind + 1) % 3
    x = np.concatenate(pieces)[:n_total]
    x *= peak / (np.max(np.abs(x)) + 1e-12)
    return x.astype(np.float32)


def harmonic(seconds: float, rate: int = 16000, f0: float = 200.0, peak: float = 0.5) -> np.ndarray:
    """Sum of all harmonics of ``f0`` below Nyquist with 1/k amplitudes: float32 [n], deterministic."""
    t = np.arange(int(round(seconds * rate))) / rate
    k = np.arange(1, int((rate / 2 - 1) // f0) + 1)
    x = (np.sin(2 * np.pi * f0 * np.outer(t, k)) / k).sum(axis=1)
    x *= peak / np.max(np.abs(x))
    return x.astype(np.float32)


def write_wav(path: str | os.PathLike, x: np.ndarray, rate: int, subtype: str = "PCM_16") -> str:
    """Write ``x`` ([time] or [time, channels]) to ``path`` as WAV; returns the path as str."""
    soundfile.write(os.fspath(path), np.asarray(x), rate, subtype=subtype, format="WAV")
    return os.fspath(path)


def write_real_pairs(folder: str | os.PathLike, lags: list[int]) -> tuple[pathlib.Path, pathlib.Path]:
    """``folder``/nb and ``folder``/wb as real pairs: p{i}.wav at 16 kHz (speech_like) in wb/ and its
    narrowband version through the evaluation channel, lagging it by ``lags[i]`` samples at 16 kHz, in nb/."""
    from bwe.data.degrade import evaluation_degradation

    nb, wb = pathlib.Path(folder) / "nb", pathlib.Path(folder) / "wb"
    nb.mkdir(parents=True)
    wb.mkdir(parents=True)
    for i, lag in enumerate(lags):
        reference = speech_like(2.0, 16000, seed=20 + i)
        delayed = np.concatenate([np.zeros(lag, np.float32), reference])[: len(reference)]
        write_wav(wb / f"p{i}.wav", reference, 16000)
        write_wav(nb / f"p{i}.wav", evaluation_degradation(delayed), 8000)
    return nb, wb
