"""bwe.data.degrade: the spectra say what the channel does, not the code."""

import json

import numpy as np
import pytest
import scipy.signal
import soundfile

from bwe.data.audio import resample
from bwe.data.degrade import (
    LOWPASS_FAMILIES,
    a_law_compand,
    apply_lowpass,
    evaluation_degradation,
    make_training_pair,
    mu_law_compand,
    simulate_narrowband,
    telephone_degradation,
)
from signals import speech_like

N_DRAWS = 24


@pytest.fixture(scope="module")
def speech():
    return speech_like(2.0, 16000, seed=11)


def _psd(x, rate):
    return scipy.signal.welch(x, rate, nperseg=1024)


def _band_level_db(f, p, lo, hi):
    return 10 * np.log10(p[(f >= lo) & (f < hi)].sum())


def _check_channel(x16k, x8k, gain=1.0, passband_tolerance_db=1.2):
    """Energy above 4 kHz gone (< -40 dB rel. the 300-3000 Hz band), 300-3000 Hz kept per Welch bin."""
    assert x8k.dtype == np.float32 and x8k.shape == ((x16k.shape[0] + 1) // 2,)
    back = resample(x8k / gain, 8000, 16000)
    f, p_ref = _psd(x16k, 16000)
    _, p_out = _psd(back, 16000)
    passband = (f >= 300) & (f <= 3000)
    assert _band_level_db(f, p_out, 4000, 8001) - _band_level_db(f, p_out, 300, 3001) < -40
    deviation = np.abs(10 * np.log10(p_out[passband] / p_ref[passband]))
    assert deviation.max() < passband_tolerance_db, deviation.max()


def test_evaluation_degradation_spectrum(speech):
    _check_channel(speech, evaluation_degradation(speech), passband_tolerance_db=0.5)


def test_evaluation_degradation_is_deterministic_and_leaves_input(speech):
    before = speech.copy()
    np.testing.assert_array_equal(evaluation_degradation(speech), evaluation_degradation(speech))
    np.testing.assert_array_equal(speech, before)


@pytest.mark.parametrize("tone_hz", [4300.0, 5000.0, 7000.0])
def test_out_of_band_tone_does_not_alias(tone_hz):
    # Above 4 kHz a tone would fold to 8000 - f at 8 kHz; the channel must remove it instead.
    t = np.arange(16000) / 16000
    in_band = 0.3 * np.sin(2 * np.pi * 500 * t)
    x = (in_band + 0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    for y in [evaluation_degradation(x)] + [
        simulate_narrowband(x, np.random.default_rng(s), companding_probability=0)[0] for s in range(8)
    ]:
        f, p = _psd(y, 8000)
        alias = 8000 - tone_hz
        assert 10 * np.log10(p[np.argmin(np.abs(f - alias))] / p[np.argmin(np.abs(f - 500))]) < -60


def test_every_random_channel_removes_high_band_and_keeps_passband(speech):
    for seed in range(N_DRAWS):
        x8k, params = simulate_narrowband(speech, np.random.default_rng(seed), companding_probability=0)
        _check_channel(speech, x8k, gain=params["gain"])


def test_companded_channel_still_keeps_passband_roughly(speech):
    rng = np.random.default_rng(5)
    x8k, params = simulate_narrowband(speech, rng, companding_probability=1.0, gain_db_range=(0.0, 0.0))
    assert params["companding"] in ("mu-law", "a-law")
    _check_channel(speech, x8k, gain=params["gain"], passband_tolerance_db=2.0)


def test_telephone_highpass_removes_the_low_end_and_keeps_the_passband():
    noise = 0.1 * np.random.default_rng(0).standard_normal(32000)  # flat: no leakage from louder bins
    for seed in range(6):
        x8k, params = simulate_narrowband(noise, np.random.default_rng(seed), companding_probability=0,
                                          highpass_probability=1.0, gain_db_range=(0.0, 0.0))
        cutoff = params["highpass_hz"]
        assert 200 <= cutoff <= 400 and 2 <= params["highpass_order"] <= 6
        f, p_ref = _psd(noise, 16000)
        _, p_out = _psd(resample(x8k / params["gain"], 8000, 16000), 16000)
        # Zero-phase: the design's -3 dB becomes -6 dB at the cutoff; an octave below, -12 dB per order.
        low = (f > 0) & (f <= cutoff / 2)
        assert np.all(10 * np.log10(p_out[low] / p_ref[low]) < -10), (seed, cutoff)
        mid = (f >= 2 * cutoff) & (f <= 3000)
        assert np.abs(10 * np.log10(p_out[mid] / p_ref[mid])).max() < 1.5, (seed, cutoff)


def test_telephone_channel_is_the_g712_band():
    noise = 0.1 * np.random.default_rng(1).standard_normal(32000)
    x8k = telephone_degradation(noise)
    assert x8k.dtype == np.float32 and x8k.shape == (16000,)
    np.testing.assert_array_equal(telephone_degradation(noise), x8k)  # fixed
    f, p_ref = _psd(noise, 16000)
    _, p_out = _psd(resample(x8k, 8000, 16000), 16000)
    ratio_db = 10 * np.log10(p_out / p_ref)
    assert np.abs(ratio_db[(f >= 500) & (f <= 3200)]).max() < 1.0
    assert np.all(ratio_db[(f > 0) & (f <= 120)] < -20)  # below 300 Hz: gone
    assert np.all(ratio_db[(f >= 3700) & (f <= 3900)] < -20)  # 3.4-4 kHz: gone, unlike the 3.8 kHz channel


def test_no_highpass_by_default(speech):
    for seed in range(4):
        _, params = simulate_narrowband(speech[:4000], np.random.default_rng(seed))
        assert params["highpass_hz"] is None and params["highpass_order"] is None


def test_random_choices_cover_all_families_and_are_recorded(speech):
    short = speech[:4000]
    seen_families, seen_companding = set(), set()
    for seed in range(60):
        _, params = simulate_narrowband(short, np.random.default_rng(seed))
        seen_families.add(params["family"])
        seen_companding.add(params["companding"])
        assert 3400 <= params["cutoff_hz"] <= 4000
        assert -18 <= params["gain_db"] <= 6 and params["gain_db"] <= params["gain_db_drawn"]
        assert params["zero_phase"] is True
        json.dumps(params)  # plain values, so a data pipeline can log them
        if params["family"] == "fir":
            assert params["numtaps"] % 2 == 1 and params["window"] is not None
        else:
            assert params["order"] is not None and params["numtaps"] is None
    assert seen_families == set(LOWPASS_FAMILIES)
    assert seen_companding == {"none", "mu-law", "a-law"}


def test_seeded_determinism(speech):
    a, pa = simulate_narrowband(speech, np.random.default_rng(123))
    b, pb = simulate_narrowband(speech, np.random.default_rng(123))
    c, pc = simulate_narrowband(speech, np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert pa == pb and pa != pc


def test_params_reproduce_the_lowpass(speech):
    # The recorded params are enough to rebuild the filter: apply_lowpass + resample + gain = output.
    for seed in range(8):
        x8k, params = simulate_narrowband(speech, np.random.default_rng(seed), companding_probability=0)
        again = resample(apply_lowpass(speech, params).astype(np.float32), 16000, 8000) * np.float32(params["gain"])
        np.testing.assert_allclose(x8k, again, atol=1e-6)


def test_zero_phase_keeps_the_pair_aligned(speech):
    # Cross-correlating the 8 kHz output with the 16 kHz input decimated ideally must peak at lag 0.
    ref = resample(speech, 16000, 8000)
    for seed in range(8):
        x8k, _ = simulate_narrowband(speech, np.random.default_rng(seed), companding_probability=0)
        corr = scipy.signal.correlate(x8k, ref, mode="full", method="fft")
        assert int(np.argmax(corr)) - (len(ref) - 1) == 0


def test_gain_is_capped_against_clipping_and_pair_is_scaled():
    loud = speech_like(0.5, 16000, seed=2, peak=0.9)
    for seed in range(10):
        x8k, y16k, params = make_training_pair(loud, np.random.default_rng(seed), gain_db_range=(6.0, 6.0))
        assert np.max(np.abs(x8k)) <= 1.0 and np.max(np.abs(y16k)) <= 0.99 + 1e-6
        assert params["gain_db"] < 6.0  # 0.9 * 2 would clip
        np.testing.assert_allclose(y16k, loud * params["gain"], rtol=1e-6)


def test_short_and_odd_length_clips(speech):
    for n in (1, 2, 7, 31, 101):
        x8k, _ = simulate_narrowband(speech[:n], np.random.default_rng(n))
        assert x8k.shape == ((n + 1) // 2,)
        assert evaluation_degradation(speech[:n]).shape == ((n + 1) // 2,)


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros((10, 2)), np.array([0.0, np.nan])])
def test_bad_input(bad):
    with pytest.raises(ValueError, match="x16k"):
        simulate_narrowband(bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match="x16k"):
        evaluation_degradation(bad)


def test_mu_law_error_bound():
    x = np.linspace(-1, 1, 200001)
    y = mu_law_compand(x).astype(np.float64)
    err = np.abs(y - x)
    # Half a quantisation step of F times the largest dx/dF between x and its code, which (dx/dF
    # grows with |x|) is the one at the larger of |x| and |y|; slack for float32.
    top = np.maximum(np.abs(x), np.abs(y))
    bound = 0.5 / 128 * np.log1p(255) / 255 * (1 + 255 * top) * 1.0001 + 1e-7
    assert np.all(err <= bound)
    assert err.max() > 0.5 * bound.max()  # the bound is tight, not vacuous
    assert len(np.unique(mu_law_compand(x))) == 256


def test_a_law_error_bound():
    x = np.linspace(-1, 1, 200001)
    y = a_law_compand(x).astype(np.float64)
    err = np.abs(y - x)
    norm = 1 + np.log(87.6)
    top = np.maximum(np.abs(x), np.abs(y))
    bound = 0.5 / 128 * np.where(top < 1 / 87.6, norm / 87.6, norm * top) * 1.0001 + 1e-6
    assert np.all(err <= bound)
    assert err.max() > 0.5 * bound.max()
    assert len(np.unique(a_law_compand(x))) == 256


@pytest.mark.parametrize("law, compand", [("ULAW", mu_law_compand), ("ALAW", a_law_compand)])
def test_companding_matches_g711_quality(tmp_path, law, compand):
    # libsndfile implements the real, segmented G.711 tables; our continuous-law codec must give
    # speech an SNR within 2 dB of it (both about 35-40 dB at a normal level).
    x = speech_like(1.0, 8000, seed=9, peak=0.5)
    path = tmp_path / "g711.raw"
    soundfile.write(path, x, 8000, subtype=law, format="RAW")
    g711, _ = soundfile.read(path, samplerate=8000, channels=1, subtype=law, format="RAW", dtype="float64")

    def snr(y):
        return 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((y - x) ** 2))

    assert abs(snr(compand(x)) - snr(g711)) < 2.0
    assert 30 < snr(compand(x)) < 45


def test_companding_clips_out_of_range():
    y = mu_law_compand(np.array([2.0, -3.0]))
    assert np.all(np.abs(y) <= 1.0) and y[0] > 0.97 and y[1] < -0.97
