"""Golden tests: every loss in bwe.losses against an independent NumPy implementation."""

import os

import numpy as np
import pytest
import tensorflow as tf

from bwe import losses
from bwe.config import RecipeError, load_recipe
from signals import speech_like

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

tf.config.experimental.enable_op_determinism()


def _fake_outputs(rng, n_disc=3, n_maps=(2, 3, 1), offset=0.0):
    """Discriminator-shaped outputs with different shapes per sub-discriminator and per map."""
    outputs = []
    for k in range(n_disc):
        logits = rng.normal(offset, 1.0, size=(2, 5 + k, 1)).astype(np.float32)
        maps = [rng.normal(size=(2, 7 + j, 3 + k)).astype(np.float32) for j in range(n_maps[k])]
        outputs.append((logits, maps))
    return outputs


def _to_tf(outputs):
    return [(tf.constant(logits), [tf.constant(m) for m in maps]) for logits, maps in outputs]


def _np_stft_magnitude(x, fft_size, hop):
    """Reference STFT: frames from sample 0 (no padding), periodic Hann, rfft."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(fft_size) / fft_size)
    n_frames = 1 + (len(x) - fft_size) // hop
    frames = np.stack([x[i * hop: i * hop + fft_size] for i in range(n_frames)]) * window
    power = np.abs(np.fft.rfft(frames.astype(np.float64), axis=-1)) ** 2
    return np.sqrt(np.maximum(power, losses.MAGNITUDE_FLOOR))


@pytest.mark.parametrize("kind", ["hinge", "lsgan"])
def test_adversarial_losses_match_numpy(kind):
    rng = np.random.default_rng(0)
    real, fake = _fake_outputs(rng, offset=0.5), _fake_outputs(rng, offset=-0.3)
    if kind == "hinge":
        d_ref = np.mean([np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f))
                         for (r, _), (f, _) in zip(real, fake)])
        g_ref = np.mean([np.mean(np.maximum(0, 1 - f)) for f, _ in fake])
    else:
        d_ref = np.mean([np.mean((r - 1) ** 2) + np.mean(f ** 2) for (r, _), (f, _) in zip(real, fake)])
        g_ref = np.mean([np.mean((f - 1) ** 2) for f, _ in fake])
    d = losses.discriminator_adversarial_loss(_to_tf(real), _to_tf(fake), kind)
    g = losses.generator_adversarial_loss(_to_tf(fake), kind)
    np.testing.assert_allclose(d.numpy(), d_ref, rtol=1e-5)
    np.testing.assert_allclose(g.numpy(), g_ref, rtol=1e-5)


def test_hinge_is_zero_for_a_confident_discriminator_and_lsgan_is_not():
    real = [(tf.fill([1, 4, 1], 2.0), [])]
    fake = [(tf.fill([1, 4, 1], -2.0), [])]
    assert losses.discriminator_adversarial_loss(real, fake, "hinge").numpy() == 0.0
    np.testing.assert_allclose(losses.discriminator_adversarial_loss(real, fake, "lsgan").numpy(), 1.0 + 4.0)


def test_feature_matching_matches_numpy_and_normalises_by_layers_times_discriminators():
    rng = np.random.default_rng(1)
    real, fake = _fake_outputs(rng), _fake_outputs(rng)
    diffs = [np.mean(np.abs(r - f)) for (_, rm), (_, fm) in zip(real, fake) for r, f in zip(rm, fm)]
    assert len(diffs) == 6
    got = losses.feature_matching_loss(_to_tf(real), _to_tf(fake))
    np.testing.assert_allclose(got.numpy(), np.sum(diffs) / 6, rtol=1e-5)


def test_feature_matching_does_not_push_gradients_into_the_real_maps():
    real = tf.Variable(tf.ones([1, 4, 2]))
    fake = tf.Variable(tf.zeros([1, 4, 2]))
    with tf.GradientTape() as tape:
        loss = losses.feature_matching_loss([(tf.zeros([1, 1, 1]), [real])], [(tf.zeros([1, 1, 1]), [fake])])
    grad_real, grad_fake = tape.gradient(loss, [real, fake])
    assert grad_real is None
    np.testing.assert_allclose(grad_fake.numpy(), -np.ones([1, 4, 2]) / 8)


@pytest.mark.parametrize("bad, message", [
    (tf.zeros([1, 3, 1]), "expected a non-empty list"),
    ([], "expected a non-empty list"),
    ([tf.zeros([1, 3, 1])], r"\[0\]: expected a \(logits, feature_maps\) pair"),
    ([(tf.zeros([1, 3, 1]), [tf.zeros([1, 2])], 3)], "of length 3"),
    ([(np.zeros([1, 3, 1]), [])], "logits must be a tensor"),
    ([(tf.zeros([1, 3, 1]), tf.zeros([1, 2]))], "feature_maps must be a list of tensors"),
])
def test_losses_reject_outputs_that_break_the_contract(bad, message):
    with pytest.raises(losses.DiscriminatorOutputError, match=message):
        losses.generator_adversarial_loss(bad)
    with pytest.raises(losses.DiscriminatorOutputError, match=message):
        losses.feature_matching_loss(bad, bad)


def test_losses_reject_mismatched_real_and_fake_outputs():
    one = [(tf.zeros([1, 3, 1]), [tf.zeros([1, 2, 2])])]
    two = one + one
    with pytest.raises(losses.DiscriminatorOutputError, match="1 real vs 2 fake"):
        losses.discriminator_adversarial_loss(one, two)
    with pytest.raises(losses.DiscriminatorOutputError, match="1 real vs 2 fake feature maps"):
        losses.feature_matching_loss(one, [(tf.zeros([1, 3, 1]), [tf.zeros([1, 2, 2])] * 2)])
    with pytest.raises(ValueError, match="not one of hinge, lsgan"):
        losses.generator_adversarial_loss(one, "wasserstein")


def test_stft_magnitude_matches_numpy():
    x = speech_like(0.3, seed=3)
    got = losses.stft_magnitude(tf.constant(x[None, :, None]), 512, 128).numpy()[0]
    np.testing.assert_allclose(got, _np_stft_magnitude(x, 512, 128), rtol=1e-3, atol=1e-4)


def test_multi_resolution_stft_loss_matches_numpy():
    ref = np.stack([speech_like(0.4, seed=s) for s in (4, 5)])
    est = ref + 0.05 * np.random.default_rng(6).normal(size=ref.shape).astype(np.float32)
    ffts = [256, 512, 1024]
    sc_ref, lm_ref = [], []
    for n in ffts:
        r = np.stack([_np_stft_magnitude(x, n, n // 4) for x in ref])
        e = np.stack([_np_stft_magnitude(x, n, n // 4) for x in est])
        sc_ref.append(np.linalg.norm(r - e) / np.linalg.norm(r))
        lm_ref.append(np.mean(np.abs(np.log(r) - np.log(e))))
    sc, lm = losses.multi_resolution_stft_loss(tf.constant(ref[..., None]), tf.constant(est[..., None]), ffts, 4)
    np.testing.assert_allclose(sc.numpy(), np.mean(sc_ref), rtol=1e-3)
    np.testing.assert_allclose(lm.numpy(), np.mean(lm_ref), rtol=1e-3)


def test_reconstruction_losses_vanish_on_identity_and_have_finite_gradients_on_silence():
    x = tf.constant(speech_like(0.3, seed=7)[None, :, None])
    sc, lm = losses.multi_resolution_stft_loss(x, x, [256, 512])
    assert sc.numpy() == 0.0 and lm.numpy() == 0.0
    assert losses.mel_loss(x, x, [512]).numpy() == 0.0
    estimate = tf.Variable(tf.zeros_like(x))
    with tf.GradientTape() as tape:
        sc, lm = losses.multi_resolution_stft_loss(x, estimate, [256])
        total = sc + lm + losses.mel_loss(x, estimate, [256])
    grad = tape.gradient(total, estimate)
    assert np.isfinite(total.numpy()) and np.all(np.isfinite(grad.numpy()))


def test_mel_loss_matches_numpy():
    ref = speech_like(0.4, seed=8)
    est = 0.5 * ref + 0.01 * np.random.default_rng(9).normal(size=ref.shape).astype(np.float32)
    terms = []
    for n in (512, 1024):
        # The filterbank is TF's; what is checked is the framing, magnitude, log floor and averaging.
        w = tf.signal.linear_to_mel_weight_matrix(40, n // 2 + 1, 16000, 0.0, 8000.0).numpy().astype(np.float64)
        r = np.maximum(_np_stft_magnitude(ref, n, n // 4) @ w, 1e-5)
        e = np.maximum(_np_stft_magnitude(est, n, n // 4) @ w, 1e-5)
        terms.append(np.mean(np.abs(np.log(r) - np.log(e))))
    got = losses.mel_loss(tf.constant(ref[None, :, None]), tf.constant(est[None, :, None]), [512, 1024], 4, 40)
    np.testing.assert_allclose(got.numpy(), np.mean(terms), rtol=1e-3)


def test_highband_envelope_loss_matches_numpy_and_measures_band_level_errors_in_bels():
    ref = speech_like(0.5, seed=10)
    est = ref + 0.02 * np.random.default_rng(11).normal(size=ref.shape).astype(np.float32)
    power = lambda x: _np_stft_magnitude(x, 512, 128).astype(np.float64) ** 2  # noqa: E731
    freqs = np.arange(257) * 16000 / 512
    # Eight 500 Hz bands from 4 kHz; the last one keeps the Nyquist bin.
    bands = [(freqs >= lo) & ((freqs < lo + 500) | (lo == 7500)) for lo in range(4000, 8000, 500)]
    r = np.stack([power(ref)[:, b].sum(1) for b in bands], 1)
    e = np.stack([power(est)[:, b].sum(1) for b in bands], 1)
    expected = np.mean((np.log10(np.maximum(r, 1e-8)) - np.log10(np.maximum(e, 1e-8))) ** 2)
    as_tf = lambda x: tf.constant(x[None, :, None])  # noqa: E731
    np.testing.assert_allclose(losses.highband_envelope_loss(as_tf(ref), as_tf(est)).numpy(), expected, rtol=1e-3)
    assert losses.highband_envelope_loss(as_tf(ref), as_tf(ref)).numpy() == 0.0
    # A high band 10 dB (1 bel) too loud everywhere, low band untouched, costs 1 (white noise: no band
    # of any frame falls to the energy floor, where both levels would be clipped alike).
    noise = 0.1 * np.random.default_rng(12).normal(size=8000).astype(np.float32)
    spectrum = np.fft.rfft(noise)
    spectrum[np.fft.rfftfreq(len(noise), 1 / 16000) >= 3900] *= np.sqrt(10.0)
    louder = np.fft.irfft(spectrum, len(noise)).astype(np.float32)
    assert losses.highband_envelope_loss(as_tf(noise), as_tf(louder)).numpy() == pytest.approx(1.0, rel=0.02)
    # With overshoot_weight 4 the band too loud costs 4, and the same band too quiet (the roles swapped) 1.
    assert losses.highband_envelope_loss(as_tf(noise), as_tf(louder), overshoot_weight=4.0).numpy() == \
        pytest.approx(4.0, rel=0.02)
    assert losses.highband_envelope_loss(as_tf(louder), as_tf(noise), overshoot_weight=4.0).numpy() == \
        pytest.approx(1.0, rel=0.02)
    # gap_hz adds one band below 4 kHz (a gap band's): 3.5-4 kHz first, then the eight above.
    gap = [(freqs >= 3500) & (freqs < 4000)] + bands
    r, e = (np.stack([power(x)[:, b].sum(1) for b in gap], 1) for x in (ref, est))
    expected = np.mean((np.log10(np.maximum(r, 1e-8)) - np.log10(np.maximum(e, 1e-8))) ** 2)
    np.testing.assert_allclose(losses.highband_envelope_loss(as_tf(ref), as_tf(est), gap_hz=3500.0).numpy(),
                               expected, rtol=1e-3)
    # energy_exponent: a mean weighted by the louder of each frame's two band energies over the reference's mean
    # band energy, to that power.
    emphasis = (np.maximum(r, e) / r.mean()) ** 0.5
    over = np.where(np.log10(np.maximum(e, 1e-8)) > np.log10(np.maximum(r, 1e-8)), 3.0, 1.0)
    squared = (np.log10(np.maximum(r, 1e-8)) - np.log10(np.maximum(e, 1e-8))) ** 2
    np.testing.assert_allclose(losses.highband_envelope_loss(as_tf(ref), as_tf(est), gap_hz=3500.0, overshoot_weight=3.0,
                                                             energy_exponent=0.5).numpy(),
                               np.sum(emphasis * over * squared) / np.sum(emphasis), rtol=1e-3)
    with pytest.raises(RecipeError, match="losses.envelope_overshoot_weight: must be >= 1"):
        load_recipe(os.path.join(REPO, "recipes", "tiny.yaml"), ["losses.envelope_overshoot_weight=0.5"])
    with pytest.raises(RecipeError, match=r"losses.envelope_energy_exponent: must be in \[0, 1\]"):
        load_recipe(os.path.join(REPO, "recipes", "tiny.yaml"), ["losses.envelope_energy_exponent=2"])


def test_energy_weighted_envelope_loss_counts_an_error_where_the_band_is_strong():
    """The same 10 dB overshoot costs more in the loud half of a signal than in its quiet half once the
    loss is weighted by band energy, and the same in both without; in the quiet half, an overshoot
    (a band that sounds) costs more than the same undershoot (a faint band fainter)."""
    noise = 0.1 * np.random.default_rng(13).normal(size=16000).astype(np.float32)
    noise[8000:] *= 0.03  # the second half 30 dB down
    def louder(x, part, factor=10.0 ** 0.5):
        y = x.copy()
        spectrum = np.fft.rfft(y[part])
        spectrum[np.fft.rfftfreq(8000, 1 / 16000) >= 3900] *= factor
        y[part] = np.fft.irfft(spectrum, 8000)
        return y
    as_tf = lambda x: tf.constant(x[None, :, None])  # noqa: E731
    loud_error, quiet_error = louder(noise, slice(0, 8000)), louder(noise, slice(8000, 16000))
    plain = [losses.highband_envelope_loss(as_tf(noise), as_tf(y)).numpy() for y in (loud_error, quiet_error)]
    weighted = [losses.highband_envelope_loss(as_tf(noise), as_tf(y), energy_exponent=0.5).numpy()
                for y in (loud_error, quiet_error)]
    assert plain[0] == pytest.approx(plain[1], rel=0.1)
    assert weighted[0] > 10 * weighted[1]
    too_quiet = losses.highband_envelope_loss(as_tf(noise), as_tf(louder(noise, slice(8000, 16000), 1 / np.sqrt(10.0))),
                                              energy_exponent=0.5).numpy()
    assert weighted[1] > 2 * too_quiet


def test_network_lowband_loss_matches_numpy_and_measures_a_tone_against_the_band():
    rng = np.random.default_rng(7)
    ref = np.stack([speech_like(0.4, seed=s) for s in (8, 9)])
    t = np.arange(ref.shape[1]) / 16000
    network = (ref + 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.01 * rng.normal(size=ref.shape)).astype(np.float32)
    freqs = np.arange(257) * 16000 / 512
    net_power = np.stack([_np_stft_magnitude(x, 512, 128) ** 2 for x in network])
    ref_power = np.stack([_np_stft_magnitude(x, 512, 128) ** 2 for x in ref])
    want = net_power[..., freqs < 3500].sum() / ref_power[..., freqs >= 4000].sum()
    got = losses.network_lowband_loss(tf.constant(ref[..., None]), tf.constant(network[..., None])).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3)
    highpassed = losses.network_lowband_loss(tf.constant(ref[..., None]), tf.constant(network[..., None] * 0))
    assert highpassed.numpy() < 1e-6 * got  # nothing in the network's low band: (almost) nothing to pay


def test_reconstruction_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        losses.multi_resolution_stft_loss(tf.zeros([1, 1000, 1]), tf.zeros([1, 900, 1]), [256])
    with pytest.raises(ValueError, match=r"\[batch, time, 1\]"):
        losses.mel_loss(tf.zeros([1, 1000]), tf.zeros([1, 1000]), [256])
