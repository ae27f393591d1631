"""bwe.baselines: shape and alignment contract, and what each baseline does to the spectrum."""

import numpy as np
import pytest
import scipy.signal

from bwe.baselines import BASELINES, DEFAULT_OFFSET_DB, folding, sinc
from bwe.data.degrade import evaluation_degradation
from bwe.metrics import estimate_delay, lsd, lsd_all
from signals import speech_like


@pytest.fixture(scope="module")
def pairs():
    """(wideband 16 kHz reference, its evaluation-degraded 8 kHz version) for a few voices."""
    out = []
    for seed in (31, 32, 33):
        x = speech_like(3.0, 16000, seed=seed)
        out.append((x, evaluation_degradation(x)))
    return out


def _high_band_db(y, rate=16000):
    f, p = scipy.signal.welch(y, rate, nperseg=1024)
    return 10 * np.log10(p[f >= 4500].sum() / p[(f >= 300) & (f < 3000)].sum())


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_contract_length_dtype_and_alignment(name, pairs):
    system = BASELINES[name]
    for n in (1, 37, 256, 4000):
        y = system(pairs[0][1][:n])
        assert y.dtype == np.float32 and y.shape == (2 * n,)
    x, nb = pairs[0]
    y = system(nb)
    assert estimate_delay(x, y, max_delay=64) == 0


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_input_is_not_modified_and_bad_input_fails(name, pairs):
    nb = pairs[0][1].copy()
    BASELINES[name](nb)
    np.testing.assert_array_equal(nb, pairs[0][1])
    for bad, match in ((np.zeros(0), "non-empty"), (np.zeros((10, 1)), "1-D"), (np.array([np.nan]), "NaN")):
        with pytest.raises(ValueError, match=match):
            BASELINES[name](bad)


def test_sinc_keeps_low_band_and_adds_nothing_above_4k(pairs):
    x, nb = pairs[0]
    y = sinc(nb)
    assert _high_band_db(y) < -60
    # Up to 3.5 kHz the evaluation channel is flat (0.2 dB), and so is sinc; 3.5-4 kHz is the channel's roll-off.
    assert lsd(x, y, band=(0, 3500)) < 0.05


def test_folding_adds_high_band_and_keeps_low_band(pairs):
    for x, nb in pairs:
        s, y = sinc(nb), folding(nb)
        assert _high_band_db(y) > _high_band_db(s) + 30
        # Below 3 kHz, folding adds (almost) nothing: the sinc output passes through.
        lp = scipy.signal.butter(8, 3000, fs=16000, output="sos")
        low_s, low_y = scipy.signal.sosfiltfilt(lp, s), scipy.signal.sosfiltfilt(lp, y)
        assert np.sqrt(np.mean((low_y - low_s) ** 2)) < 0.02 * np.sqrt(np.mean(low_s**2))
        d_sinc, d_fold = lsd_all(x, s), lsd_all(x, y)
        assert d_fold["lsd_lf"] < d_sinc["lsd_lf"] + 0.1
        assert lsd(x, y, band=(0, 3500)) < 0.05
        assert d_fold["lsd_hf"] < 0.6 * d_sinc["lsd_hf"]
        assert d_fold["lsd"] < d_sinc["lsd"]


def test_folding_high_band_follows_the_narrow_band_level(pairs):
    x, nb = pairs[0]
    loud, quiet = folding(nb), folding(nb * 0.1)
    np.testing.assert_allclose(quiet, loud * 0.1, rtol=1e-3, atol=1e-5)  # the whole chain is 1-homogeneous
    # Silence in, silence out: no noise invented.
    assert np.all(folding(np.zeros(800, np.float32)) == 0)


def test_folding_high_band_tilt_and_offset(pairs):
    _, nb = pairs[0]
    f, p_default = scipy.signal.welch(folding(nb), 16000, nperseg=1024)
    _, p_quieter = scipy.signal.welch(folding(nb, offset_db=16.0), 16000, nperseg=1024)
    band = (f >= 4500) & (f < 7500)
    delta = 10 * np.log10(p_quieter[band].sum() / p_default[band].sum())
    assert delta == pytest.approx(-(16.0 - DEFAULT_OFFSET_DB), abs=0.5)
    _, p_flat = scipy.signal.welch(folding(nb, tilt_db_per_octave=0.0), 16000, nperseg=1024)
    lo, hi = (f >= 4200) & (f < 5000), (f >= 6500) & (f < 7500)
    slope = 10 * np.log10(p_flat[hi].sum() / p_flat[lo].sum()) - 10 * np.log10(
        p_default[hi].sum() / p_default[lo].sum()
    )
    assert slope > 3  # removing the tilt makes the top of the band relatively louder


def test_folding_survives_digital_silence_between_speech():
    # Moving averages over exact zeros after loud frames round to tiny negative numbers; a square
    # root of those once turned whole files into NaN.
    for seed in range(4):
        nb = evaluation_degradation(speech_like(1.0, 16000, seed=seed, peak=0.9))
        gap = np.zeros(3000, np.float32)
        x = np.concatenate([nb, gap, nb * 1e-3, gap])
        with np.errstate(invalid="raise", divide="raise", over="raise"):
            y = folding(x)
        assert np.isfinite(y).all()
        silent = slice(2 * len(nb) + 1000, 2 * (len(nb) + len(gap)) - 1000)
        assert np.max(np.abs(y[silent])) < 1e-6
