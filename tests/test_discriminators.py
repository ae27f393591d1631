"""Discriminators: the (logits, feature_maps) contract, shapes from the recipe, and their signal front ends
against NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from bwe.config import DiscriminatorConfig, RecipeError, recipe_from_dict
from bwe.losses import check_discriminator_outputs
from bwe.models.discriminators import build_discriminators, complex_stft_image, downsample_by_two
from signals import speech_like

tf.config.experimental.enable_op_determinism()

SMALL = DiscriminatorConfig(stft_fft_sizes=[256, 512], stft_channels=4, stft_dilations=[1, 2],
                            waveform_scales=3, waveform_channels=4, waveform_max_channels=32,
                            waveform_strides=[4, 4], waveform_groups_divisor=4)


@pytest.fixture(scope="module")
def small():
    tf.keras.utils.set_random_seed(0)
    return build_discriminators(SMALL)


def test_every_sub_discriminator_returns_logits_and_feature_maps(small):
    x = tf.constant(np.stack([speech_like(0.25, seed=s) for s in (0, 1)])[..., None])
    outputs = small(x)
    check_discriminator_outputs(outputs)
    assert small.names == ["stft_256", "stft_512", "waveform_1x", "waveform_2x", "waveform_4x"]
    # STFT: frames = 1 + (T - n) // hop; bins 129 halved twice (dilations [1, 2]) -> 33.
    for (logits, maps), n in zip(outputs[:2], (256, 512)):
        frames = 1 + (4000 - n) // (n // 4)
        assert logits.shape == (2, frames, (n // 2 + 1 + 3) // 4, 1)
        assert [m.shape[2] for m in maps] == [n // 2 + 1, (n // 2 + 2) // 2, (n // 2 + 4) // 4, (n // 2 + 4) // 4]
        assert all(m.shape[-1] == 4 for m in maps)
    # Waveform: each scale halves the time axis, each stride-4 conv divides it by 4 (rounding up).
    for scale, (logits, maps) in enumerate(outputs[2:]):
        length = 4000 // 2 ** scale
        assert [m.shape[1] for m in maps] == [length, -(-length // 4), -(-length // 16), -(-length // 16)]
        assert [m.shape[-1] for m in maps] == [4, 16, 32, 32]
        assert logits.shape == (2, -(-length // 16), 1)


def test_waveform_convs_are_grouped_like_melgan(small):
    kernels = {w.path.split("/")[-2]: tuple(w.shape) for w in small.waveform_discriminators[0].weights
               if w.path.endswith("kernel")}
    # groups = in_channels // 4: 4 -> 16 channels with 1 group, 16 -> 32 with 4 groups; kernel = stride*10+1.
    assert kernels["conv_strided_0"] == (41, 4, 16)
    assert kernels["conv_strided_1"] == (41, 4, 32)
    assert kernels["conv_pre"] == (15, 1, 4)


def test_gradients_reach_every_discriminator_weight(small):
    x = tf.constant(speech_like(0.2, seed=2)[None, :, None])
    with tf.GradientTape() as tape:
        outputs = small(x)
        total = tf.add_n([tf.reduce_mean(logits) + tf.add_n([tf.reduce_mean(m) for m in maps]) for logits, maps in outputs])
    grads = tape.gradient(total, small.trainable_weights)
    assert len(grads) == len(small.trainable_weights) > 0
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def test_sizes_follow_the_recipe():
    recipe = recipe_from_dict({"discriminators": {"stft_fft_sizes": [256], "stft_channels": 8,
                                                  "waveform_scales": 0}})
    model = build_discriminators(recipe.discriminators)
    assert model.names == ["stft_256"]
    assert {tuple(w.shape)[-1] for w in model.weights if w.path.endswith("kernel")} == {8, 1}
    with pytest.raises(RecipeError, match="discriminators: both"):
        recipe_from_dict({"discriminators": {"stft_fft_sizes": [], "waveform_scales": 0}})
    with pytest.raises(RecipeError, match=r"discriminators.stft_fft_sizes\[0\]"):
        recipe_from_dict({"discriminators": {"stft_fft_sizes": [250]}})


def test_complex_stft_image_matches_numpy():
    x = speech_like(0.2, seed=3)
    n, hop = 256, 64
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    frames = np.stack([x[i * hop: i * hop + n] for i in range(1 + (len(x) - n) // hop)])
    spec = np.fft.rfft(frames * window, axis=-1) / np.sqrt(np.sum(window ** 2))
    got = complex_stft_image(tf.constant(x[None, :, None]), n, hop).numpy()[0]
    np.testing.assert_allclose(got[..., 0], spec.real, atol=2e-5)
    np.testing.assert_allclose(got[..., 1], spec.imag, atol=2e-5)


def test_downsample_by_two_is_melgan_average_pooling():
    x = np.random.default_rng(4).normal(size=(2, 37, 1)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    valid = np.pad(np.ones_like(x), ((0, 0), (1, 1), (0, 0)))
    starts = range(0, padded.shape[1] - 3, 2)
    ref = np.stack([padded[:, s:s + 4].sum(1) / valid[:, s:s + 4].sum(1) for s in starts], axis=1)
    np.testing.assert_allclose(downsample_by_two(tf.constant(x)).numpy(), ref, rtol=1e-6)


def test_grouped_conv_equals_one_convolution_per_group():
    from bwe.models.discriminators import GroupedConv1D

    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(2, 101, 8)).astype(np.float32))
    layer = GroupedConv1D(12, 5, strides=2, groups=4)
    layer(x)
    layer.bias.assign(rng.normal(size=12).astype(np.float32))
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    expected = np.zeros((2, 49, 12), np.float32)
    for g in range(4):
        for o in range(3 * g, 3 * g + 3):
            for t in range(49):
                expected[:, t, o] = np.einsum("bki,ki->b", x.numpy()[:, 2 * t: 2 * t + 5, 2 * g: 2 * g + 2],
                                              kernel[:, :, o]) + bias[o]
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dilation, frames", [(1, 7), (2, 7), (4, 9), (4, 8)])
def test_time_dilated_strided_conv_equals_dilated_conv_then_every_other_bin(dilation, frames):
    """The reference: a 'same' conv dilated over time, stride 1, then every other frequency bin (odd bin
    counts, as an STFT of a power-of-two FFT size has)."""
    import keras

    from bwe.models.discriminators import STFTDiscriminator

    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(2, frames, 33, 3)).astype(np.float32))
    strided = keras.layers.Conv2D(5, (3, 9), strides=(1, 2), padding="same")
    strided(x)
    strided.bias.assign(rng.normal(size=5).astype(np.float32))
    reference = keras.layers.Conv2D(5, (3, 9), dilation_rate=(dilation, 1), padding="same")
    reference(x)
    reference.set_weights(strided.get_weights())
    got = STFTDiscriminator._time_dilated(strided, x, dilation)
    np.testing.assert_allclose(got.numpy(), reference(x).numpy()[:, :, ::2], rtol=1e-5, atol=1e-5)
