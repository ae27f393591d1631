"""bwe.metrics against independent implementations and analytic values."""

import numpy as np
import pytest

import scipy.signal

from bwe.metrics import (
    LONG_TERM_FREQS, align, band_level_errors_db, dnsmos, error_and_bias_db, estimate_delay, long_term_power, lsd,
    lsd_all, lsd_level_shape, pesq_wb, spectral_balance, visqol_speech,
)
from signals import speech_like


@pytest.fixture(scope="module")
def speech():
    return speech_like(3.0, 16000, seed=21).astype(np.float64)


def reference_log_power_difference(ref, est, sample_rate=16000, lo=None, hi=None):
    """log10 P_ref - log10 P_est [frames, bins of the band], written out with an explicit frame
    loop and np.fft.rfft, sharing no code with bwe.metrics."""
    n_fft, hop = 2048, 512
    n = min(len(ref), len(est))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann

    def log_power(x):
        x = np.asarray(x[:n], dtype=np.float64)
        # torch.stft(center=True, pad_mode="reflect"): mirror without repeating the edge sample.
        padded = np.concatenate([x[1 : n_fft // 2 + 1][::-1], x, x[-n_fft // 2 - 1 : -1][::-1]])
        rows = []
        for start in range(0, len(padded) - n_fft + 1, hop):
            spectrum = np.fft.rfft(padded[start : start + n_fft] * window)
            rows.append(np.log10(np.maximum(spectrum.real**2 + spectrum.imag**2, 1e-8)))
        return np.array(rows)

    a, b = log_power(ref), log_power(est)
    assert a.shape[0] == 1 + n // hop
    if lo is not None:
        k = np.arange(n_fft // 2 + 1)
        keep = (k * sample_rate / n_fft >= lo) & ((k * sample_rate / n_fft < hi) | (k == n_fft // 2) & (hi >= sample_rate / 2))
        a, b = a[:, keep], b[:, keep]
    return a - b


def reference_lsd(ref, est, sample_rate=16000, lo=None, hi=None):
    """The definition: per frame the root mean square of the difference, then the mean over frames."""
    per_frame = [np.sqrt(np.sum(d**2) / len(d)) for d in reference_log_power_difference(ref, est, sample_rate, lo, hi)]
    return sum(per_frame) / len(per_frame)


def test_lsd_matches_independent_loop_implementation(speech):
    rng = np.random.default_rng(0)
    est = speech * 0.7 + 0.01 * rng.standard_normal(speech.shape)
    for length in (len(speech), 1025, 5000, 16001):
        expected = reference_lsd(speech[:length], est[:length])
        assert lsd(speech[:length], est[:length]) == pytest.approx(expected, rel=1e-10)
    assert lsd(speech, est, band=(0, 4000)) == pytest.approx(reference_lsd(speech, est, lo=0, hi=4000), rel=1e-10)
    assert lsd(speech, est, band=(4000, 8000)) == pytest.approx(reference_lsd(speech, est, lo=4000, hi=8000), rel=1e-10)
    assert lsd(speech, est, band=(1000, 2000)) == pytest.approx(reference_lsd(speech, est, lo=1000, hi=2000), rel=1e-10)


def test_lsd_matches_librosa_stft_with_torch_defaults(speech):
    librosa = pytest.importorskip("librosa")
    est = np.roll(speech, 3) * 0.5
    spec = [
        np.abs(librosa.stft(x, n_fft=2048, hop_length=512, window="hann", center=True, pad_mode="reflect")) ** 2
        for x in (speech, est)
    ]
    logs = [np.log10(np.maximum(s, 1e-8)) for s in spec]  # [freq, frames]
    expected = np.mean(np.sqrt(np.mean((logs[0] - logs[1]) ** 2, axis=0)))
    assert lsd(speech, est) == pytest.approx(expected, rel=1e-6)


def test_lsd_analytic_values():
    rng = np.random.default_rng(1)
    noise = 0.1 * rng.standard_normal(8000)
    assert lsd(noise, noise) == 0.0
    # Scaling by a multiplies every bin's power by a^2: the log-power difference is 2 log10(a) everywhere.
    assert lsd(noise, 0.1 * noise) == pytest.approx(2.0, rel=1e-9)
    assert lsd(noise, 3.0 * noise, band=(4000, 8000)) == pytest.approx(2 * np.log10(3.0), rel=1e-9)
    # A silent estimate sits on the 1e-8 power floor.
    expected = reference_lsd(noise, np.zeros_like(noise))
    assert lsd(noise, np.zeros_like(noise)) == pytest.approx(expected, rel=1e-10)
    assert expected > 8


def test_lsd_bands_split_all_bins(speech):
    rng = np.random.default_rng(2)
    est = speech + 0.001 * rng.standard_normal(speech.shape)
    d = lsd_all(speech, est)
    assert set(d) == {"lsd", "lsd_lf", "lsd_hf"}
    assert d["lsd_lf"] == lsd(speech, est, band=(0, 4000))
    assert d["lsd_hf"] == lsd(speech, est, band=(4000, 8000))
    # The Nyquist bin belongs to a band reaching Nyquist: (0, 8000) is the full band, (0, 7999) is not.
    assert lsd(speech, est, band=(0, 8000)) == pytest.approx(d["lsd"], rel=1e-12)
    assert lsd(speech, est, band=(0, 7999)) != d["lsd"]


def test_lsd_low_band_error_only_shows_in_lsd_lf(speech):
    import scipy.signal

    # Remove 4-8 kHz: LSD-HF large, LSD-LF small; remove 0-4 kHz: the opposite.
    low = scipy.signal.sosfiltfilt(scipy.signal.butter(12, 3900, fs=16000, output="sos"), speech)
    high = scipy.signal.sosfiltfilt(scipy.signal.butter(12, 4100, "highpass", fs=16000, output="sos"), speech)
    d_low, d_high = lsd_all(speech, low), lsd_all(speech, high)
    assert d_low["lsd_hf"] > 2 and d_low["lsd_lf"] < 0.5 * d_low["lsd_hf"]
    assert d_high["lsd_lf"] > 2 and d_high["lsd_hf"] < 0.5 * d_high["lsd_lf"]


def test_lsd_level_shape_against_the_frame_loop_and_analytic_values(speech):
    rng = np.random.default_rng(2)
    # An estimate with too little and wrongly shaped high band: a low-pass plus some noise.
    est = scipy.signal.lfilter(*scipy.signal.butter(4, 5000, fs=16000), speech) + 1e-3 * rng.standard_normal(speech.shape)
    diff = reference_log_power_difference(speech, est, lo=4000, hi=8000)
    parts = lsd_level_shape(speech, est)
    assert parts["level"] == pytest.approx(np.mean([np.sum(d) / len(d) for d in diff]), rel=1e-10)
    assert parts["shape"] == pytest.approx(np.mean([np.sqrt(np.sum((d - d.mean()) ** 2) / len(d)) for d in diff]), rel=1e-10)
    assert parts["level"] > 0.3 and parts["shape"] > 0.1  # quieter than the reference, and misshapen
    # Per frame LSD^2 = level^2 + shape^2, so the mean LSD bounds each part's mean from above.
    assert lsd(speech, est, band=(4000, 8000)) >= max(parts["shape"], abs(parts["level"]))
    # Scaling by a shifts every bin by -2 log10(a) (white noise stays above the power floor): all
    # level, signed, and no shape.
    noise = 0.1 * rng.standard_normal(8000)
    scaled = lsd_level_shape(noise, 0.1 * noise, band=(0, 4000))
    assert scaled["level"] == pytest.approx(2.0, rel=1e-9) and scaled["shape"] == pytest.approx(0.0, abs=1e-9)
    assert lsd_level_shape(noise, 3 * noise)["level"] == pytest.approx(-2 * np.log10(3), rel=1e-9)
    with pytest.raises(ValueError, match="too short"):
        lsd_level_shape(np.ones(1024), np.ones(1024))


def test_lsd_trims_to_equal_length(speech):
    assert lsd(speech, speech[:-700]) == lsd(speech[:-700], speech[:-700]) == 0.0


@pytest.mark.parametrize(
    "ref, est, match",
    [
        (np.zeros(2000), np.zeros((2000, 1)), "estimate: expected a non-empty 1-D"),
        (np.zeros(0), np.zeros(2000), "reference: expected a non-empty 1-D"),
        (np.full(2000, np.nan), np.zeros(2000), "reference: contains NaN"),
        (np.zeros(2000), np.full(2000, np.inf), "estimate: contains NaN or Inf"),
        (np.zeros(1024), np.zeros(1024), "too short"),
    ],
)
def test_lsd_bad_input(ref, est, match):
    with pytest.raises(ValueError, match=match):
        lsd(ref, est)


def test_lsd_bad_band(speech):
    with pytest.raises(ValueError, match="lo < hi"):
        lsd(speech, speech, band=(4000, 4000))
    with pytest.raises(ValueError, match="no STFT bin"):
        lsd(speech, speech, band=(4001, 4003))


def test_pesq_identical_noisy_and_unscorable(speech):
    pytest.importorskip("pesq")
    assert pesq_wb(speech, speech) == pytest.approx(4.64, abs=0.01)
    rng = np.random.default_rng(3)
    mild = pesq_wb(speech, speech + 0.003 * rng.standard_normal(speech.shape))
    strong = pesq_wb(speech, speech + 0.03 * rng.standard_normal(speech.shape))
    assert 1.0 < strong < mild < 4.5
    with pytest.warns(UserWarning, match="all zeros"):
        assert pesq_wb(np.zeros(48000), np.zeros(48000)) is None
    with pytest.warns(UserWarning, match="BufferTooShortError"):
        assert pesq_wb(speech[:1000], speech[:1000]) is None
    with pytest.raises(ValueError, match="estimate: contains NaN"):
        pesq_wb(speech, np.full_like(speech, np.nan))


def test_visqol_ranks_noise_and_a_missing_high_band_and_refuses_what_it_cannot_score(speech):
    pytest.importorskip("visqol")
    identical = visqol_speech(speech, speech)
    # ViSQOL's identity score is not a constant (the MOS mapper sees each signal's own patches), but high.
    assert identical > 4.0
    rng = np.random.default_rng(3)
    mild = visqol_speech(speech, speech + 0.003 * rng.standard_normal(speech.shape))
    strong = visqol_speech(speech, speech + 0.01 * rng.standard_normal(speech.shape))
    assert 1.0 < strong < mild < identical
    # It judges the 4-8 kHz band: the same speech low-passed at 4 kHz scores clearly lower.
    lowpassed = scipy.signal.sosfiltfilt(scipy.signal.butter(12, 4000, fs=16000, output="sos"), speech)
    assert visqol_speech(speech, lowpassed) < identical - 0.3
    with pytest.warns(UserWarning, match="all zeros"):
        assert visqol_speech(np.zeros(48000), np.zeros(48000)) is None
    with pytest.warns(UserWarning, match="no speech patch"):
        assert visqol_speech(speech[:2000], speech[:2000]) is None
    with pytest.raises(ValueError, match="estimate: contains NaN"):
        visqol_speech(speech, np.full_like(speech, np.nan))


def test_dnsmos_hears_a_missing_high_band_clips_like_a_file_and_refuses_bad_signals(speech):
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    full = dnsmos(speech)
    assert set(full) == {"p808", "ovrl"} and all(1.0 <= v <= 5.0 for v in full.values())
    lowpassed = scipy.signal.sosfiltfilt(scipy.signal.butter(12, 4000, fs=16000, output="sos"), speech)
    assert dnsmos(lowpassed)["p808"] < full["p808"] - 0.1
    loud = 3.0 * speech
    kept = loud.copy()
    assert dnsmos(loud) == dnsmos(np.clip(loud, -1.0, 1.0))
    np.testing.assert_array_equal(loud, kept)  # the caller's signal is not clipped in place
    with pytest.raises(ValueError, match="signal: contains NaN"):
        dnsmos(np.full_like(speech, np.nan))
    with pytest.raises(ValueError, match="1-D"):
        dnsmos(np.stack([speech, speech]))


@pytest.mark.parametrize("shift", [0, 1, 17, -5, -160, 300])
def test_estimate_delay_and_align_recover_shift(speech, shift):
    # estimate[n] = reference[n - shift], with a little noise and a gain change.
    rng = np.random.default_rng(4)
    padded = np.concatenate([np.zeros(400), speech, np.zeros(400)])
    ref = padded[400:-400]
    est = 0.5 * padded[400 - shift : len(padded) - 400 - shift] + 0.005 * rng.standard_normal(len(ref))
    assert estimate_delay(ref, est, max_delay=320) == shift
    a, b = align(ref, est, max_delay=320)
    assert len(a) == len(b) == len(ref) - abs(shift)
    assert np.corrcoef(a, b)[0, 1] > 0.99


def test_estimate_delay_respects_max_delay(speech):
    est = np.concatenate([np.zeros(50), speech[:-50]])
    assert estimate_delay(speech, est, max_delay=50) == 50
    assert abs(estimate_delay(speech, est, max_delay=10)) <= 10
    assert estimate_delay(speech, np.zeros_like(speech), max_delay=10) == 0
    with pytest.raises(ValueError, match="max_delay"):
        estimate_delay(speech, speech, max_delay=-1)


PERIODIC_HANN_512 = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)


def reference_band_level_errors(ref, est, band_hz=500.0):
    """The band-level error and bias written out: zero-padded frames of 512 samples every 128, periodic
    Hann, each 500 Hz band of 4-8 kHz (Nyquist in the last) in dB, sharing no code with bwe.metrics."""
    freqs = np.arange(257) * 16000 / 512
    edges = np.arange(4000.0, 8000.0, band_hz)

    def levels(x):
        x = np.concatenate([np.zeros(256), x, np.zeros(256)])
        x = np.concatenate([x, np.zeros((-(len(x) - 512)) % 128)])  # whole frames up to the end
        rows = []
        for start in range(0, len(x) - 512 + 1, 128):
            power = np.abs(np.fft.rfft(x[start:start + 512] * PERIODIC_HANN_512)) ** 2 / PERIODIC_HANN_512.sum() ** 2
            rows.append([10 * np.log10(power[(freqs >= lo) & ((freqs < lo + band_hz) | (freqs == 8000) & (lo + band_hz >= 8000))].sum() + 1e-12)
                         for lo in edges])
        return np.array(rows)

    differences = levels(est[:len(ref)]) - levels(ref)
    return (np.median([np.sqrt(np.mean(d ** 2)) for d in differences]),
            np.median([np.mean(d) for d in differences]))


def test_error_and_bias_are_medians_over_frames_of_the_rms_and_the_mean_over_bands():
    differences = np.array([[3.0, -1.0], [0.0, 0.0], [6.0, 6.0]])  # RMS sqrt(5), 0, 6; means 1, 0, 6
    assert error_and_bias_db(differences) == pytest.approx((np.sqrt(5.0), 1.0))


@pytest.mark.parametrize("band_hz", [500.0, 1000.0])
def test_band_level_errors_match_the_frame_loop(speech, band_hz):
    low = scipy.signal.sosfiltfilt(scipy.signal.butter(8, 4000, fs=16000, output="sos"), speech)
    rng = np.random.default_rng(5)
    estimate = low + 0.3 * (speech - low) + 1e-4 * rng.standard_normal(len(speech))  # a quieter, noisier band
    expected = reference_band_level_errors(speech, estimate, band_hz)
    assert band_level_errors_db(speech, estimate, band_hz) == pytest.approx(expected, abs=1e-6)
    assert expected[1] < -3.0  # the test is not vacuous: the band is several dB too quiet


def test_long_term_power_sums_welch_frames(speech):
    expected = np.zeros(257)
    for start in range(0, len(speech) - 512 + 1, 256):
        frame = speech[start:start + 512] - speech[start:start + 512].mean()  # Welch's constant detrend
        power = np.abs(np.fft.rfft(frame * PERIODIC_HANN_512)) ** 2 / PERIODIC_HANN_512.sum() ** 2
        power[1:-1] *= 2  # one-sided
        expected += power
    np.testing.assert_allclose(long_term_power(speech), expected, rtol=1e-9)


def test_spectral_balance_of_a_quiet_band_and_a_hole():
    reference = np.ones_like(LONG_TERM_FREQS)
    estimate = 2.0 * reference  # an overall gain is normalised away (0.5-3 kHz)
    estimate[(LONG_TERM_FREQS >= 4500) & (LONG_TERM_FREQS < 7000)] *= 0.1
    estimate[(LONG_TERM_FREQS >= 3500) & (LONG_TERM_FREQS < 3600)] *= 0.01
    balance = spectral_balance(estimate, reference)
    assert balance == pytest.approx({"hf_level_db": -10.0, "worst_gap_db": -20.0, "worst_gap_hz": 3550.0})


def test_pesq_failing_inside_its_c_code_is_reported_unscorable(speech, monkeypatch):
    """PESQ's C code can fail on a finite pair (a NaN of its own, seen on one int8 output of a held-out
    file): the pair is unscorable, with the reason, and the evaluation goes on."""
    pesq = pytest.importorskip("pesq")

    def fails(*args, **kwargs):
        raise ValueError("cannot convert float NaN to integer")

    monkeypatch.setattr(pesq, "pesq", fails)
    with pytest.warns(UserWarning, match="PESQ failed: cannot convert float NaN to integer"):
        assert pesq_wb(speech, speech) is None
