"""The SEANet generator: shapes, the built-in interpolator and its delay, causality, sizes, refusals."""

import dataclasses

import keras
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from bwe.config import ModelConfig, load_recipe
from bwe.layers.modes import Modes
from bwe.models.seanet import (
    ModelConfigError,
    build_generator,
    count_params,
    generator_delay_samples,
    interpolation_filter,
    macs_per_frame,
    macs_per_layer,
)
from bwe.streaming import to_streaming
from signals import speech_like

tf.config.experimental.enable_op_determinism()
TINY = load_recipe("recipes/tiny.yaml").model
# Small enough to count by hand (see test_params_and_macs_match_hand_count).
HAND = ModelConfig(channels=2, max_channels=4, strides=[2, 2], kernel_size=3, residual_kernel_size=3,
                   dilations=[1, 3], last_kernel_size=3, upsampler_taps=5,
                   highband_residual=False)


@pytest.fixture(scope="module")
def tiny_training():
    keras.utils.set_random_seed(0)
    return build_generator(TINY, Modes.TRAINING)


def _zero_network(model):
    """Zero the last conv so the generator reduces to its fixed interpolator."""
    layer = model.get_layer("output_conv")
    for w in layer.weights:
        w.assign(np.zeros(w.shape, np.float32))


@pytest.mark.parametrize("length", [128, 1000])
def test_output_shape_any_length(tiny_training, length):
    x = np.zeros((2, length, 1), np.float32)
    assert tuple(tiny_training(x).shape) == (2, 2 * length, 1)


@pytest.mark.parametrize("highband_residual", [False, True])
def test_interpolator_delay_and_passthrough(highband_residual):
    cfg = dataclasses.replace(TINY, highband_residual=highband_residual)
    keras.utils.set_random_seed(1)
    model = build_generator(cfg, Modes.NON_STREAM_INFERENCE)
    _zero_network(model)
    delay = generator_delay_samples(cfg)
    filter_delay = (cfg.upsampler_taps - 1) // 2
    assert filter_delay == 16 and delay == (2 if highband_residual else 1) * filter_delay
    x = speech_like(0.2, rate=8000, seed=3)
    y = np.asarray(model(x[None, :, None]))[0, :, 0]
    # Half-band interpolator: input samples reappear exactly at even positions, `delay` later.
    np.testing.assert_allclose(y[delay::2][: len(x) - delay // 2], x[: len(x) - delay // 2], atol=1e-6)
    impulse = np.zeros((1, 128, 1), np.float32)
    impulse[0, 10, 0] = 1.0
    response = np.asarray(model(impulse))[0, :, 0]
    assert np.argmax(np.abs(response)) == 20 + delay
    np.testing.assert_allclose(response[20 + delay - 16 : 20 + delay + 17], interpolation_filter(33), atol=1e-6)


def _added_band_spectra(cfg, seed=2):
    """Power spectra of what the network adds to the output and of the output without it, and their
    frequencies: a generator with a random output conv against the same one reduced to its interpolator.
    Away from the start/end transients of the network's random DC offset; Blackman-Harris (-92 dB
    sidelobes) so the strong added high band does not leak into the low bins of the measurement."""
    keras.utils.set_random_seed(seed)
    model = build_generator(cfg, Modes.NON_STREAM_INFERENCE)
    reference = build_generator(cfg, Modes.NON_STREAM_INFERENCE)
    _zero_network(reference)
    rng = np.random.default_rng(0)
    for w in model.get_layer("output_conv").weights:
        w.assign(rng.normal(0, 0.1, w.shape).astype(np.float32))
    x = speech_like(1.0, rate=8000, seed=5)[None, :, None]
    y, y0 = np.asarray(model(x))[0, :, 0], np.asarray(reference(x))[0, :, 0]
    window = scipy.signal.windows.blackmanharris(len(y) - 400)
    added = np.abs(np.fft.rfft((y - y0)[200:-200] * window)) ** 2
    base = np.abs(np.fft.rfft(y0[200:-200] * window)) ** 2
    return added, base, np.fft.rfftfreq(len(window), 1 / 16000)


def test_highband_residual_keeps_the_low_band():
    """Whatever the network adds, 0-3 kHz of the output is the interpolated input (>= 60 dB below it)."""
    added, base, freqs = _added_band_spectra(TINY)
    low, high = (freqs > 50) & (freqs < 3000), freqs > 4500
    assert added[high].sum() > 1e-2 * base.sum()  # the network does add a high band
    assert 10 * np.log10(added[low].sum() / base[low].sum()) < -60


def test_a_longer_band_split_keeps_the_network_off_the_input_band_below_4khz():
    """The 33-tap split's transition lets the network's own low band through at 3.2-3.6 kHz (20-30 dB
    down), on top of the input; 65 taps push it down by more than 20 dB more there, cost 16 samples of
    delay, and pass the band above 4.2 kHz as before."""
    added33, base, freqs = _added_band_spectra(TINY)
    added65, _, _ = _added_band_spectra(dataclasses.replace(TINY, split_taps=65))
    edge, band = (freqs > 3200) & (freqs < 3600), (freqs > 4200) & (freqs < 7800)
    assert 10 * np.log10(added33[edge].sum() / added65[edge].sum()) > 20
    assert abs(10 * np.log10(added33[band].sum() / added65[band].sum())) < 1.0
    assert (generator_delay_samples(dataclasses.replace(TINY, split_taps=65))
            - generator_delay_samples(TINY)) == (65 - 33) // 2


def test_interpolator_rejects_images():
    """A 1 kHz tone at 8 kHz becomes a 1 kHz tone at 16 kHz; its 7 kHz image is >= 40 dB down."""
    h = interpolation_filter(33)
    freqs = np.fft.rfftfreq(4096, 1 / 16000)
    response = np.abs(np.fft.rfft(h, 4096))

    def gain(f):
        return response[np.argmin(np.abs(freqs - f))]

    assert abs(20 * np.log10(gain(1000)) - 20 * np.log10(2.0)) < 0.1  # zero-stuffing gain of 2
    assert 20 * np.log10(gain(7000) / gain(1000)) < -40
    with pytest.raises(ValueError, match="must be odd"):
        interpolation_filter(32)


def test_causal_prefix_gives_prefix(tiny_training):
    x = speech_like(0.16, rate=8000, seed=4)[None, :, None]  # 1280 samples = 10 frames
    y = np.asarray(tiny_training(x))
    for n in (128, 384):
        np.testing.assert_allclose(np.asarray(tiny_training(x[:, :n]))[:, : 2 * n], y[:, : 2 * n], atol=1e-5)
    future = x.copy()
    future[:, 640:] = 0.3
    np.testing.assert_array_equal(np.asarray(tiny_training(future))[:, :1280], y[:, :1280])


def test_weight_norm_folding_preserves_output(tiny_training):
    assert any("kernel_g" in w.path for w in tiny_training.trainable_weights)
    inference = to_streaming(tiny_training, Modes.NON_STREAM_INFERENCE)
    assert not any("kernel_g" in w.path for w in inference.weights)
    x = speech_like(0.1, rate=8000, seed=5)[None, :, None]
    np.testing.assert_allclose(np.asarray(inference(x)), np.asarray(tiny_training(x)), atol=1e-5)


def test_upsampler_is_fixed(tiny_training):
    layer = tiny_training.get_layer("upsampler")
    assert not layer.trainable and layer.weights and not layer.trainable_weights
    np.testing.assert_array_equal(layer.plain_weights()["kernel"][:, 0, 0], interpolation_filter(33))


def test_layer_names_are_deterministic():
    names = [layer.name for layer in build_generator(TINY).layers]
    assert names == [layer.name for layer in build_generator(TINY).layers]
    assert {"upsampler", "input_conv", "enc0_res0_conv", "enc3_down", "bottleneck", "dec0_up", "dec3_skip",
            "output_conv", "band_split"} <= set(names)


def test_params_and_macs_match_hand_count():
    # channels per level [2, 4, 4]; each line below is one conv: kernel * in * out (+ bias)
    params = (3 * 1 * 2 + 2  # input_conv
              + 2 * (3 * 2 * 2 + 2 + 2 * 2 + 2)  # enc0: 2 residual units
              + 4 * 2 * 4 + 4  # enc0_down
              + 2 * (3 * 4 * 4 + 4 + 4 * 4 + 4)  # enc1 residual units
              + 4 * 4 * 4 + 4  # enc1_down
              + 3 * 4 * 4 + 4  # bottleneck
              + 4 * 4 * 4 + 4 + 2 * (3 * 4 * 4 + 4 + 4 * 4 + 4)  # dec1_up + residual units
              + 4 * 4 * 2 + 2 + 2 * (3 * 2 * 2 + 2 + 2 * 2 + 2)  # dec0_up + residual units
              + 3 * 2 * 1 + 1)  # output_conv
    assert count_params(HAND) == params == 641
    per_layer = macs_per_layer(HAND)
    assert per_layer["upsampler"] == 128 * 5
    assert per_layer["input_conv"] == 256 * 3 * 1 * 2
    assert per_layer["enc0_res1_conv"] == 256 * 3 * 2 * 2
    assert per_layer["enc0_down"] == 128 * 4 * 2 * 4
    assert per_layer["bottleneck"] == 64 * 3 * 4 * 4
    assert per_layer["dec1_up"] == 64 * 4 * 4 * 4
    assert per_layer["dec0_up"] == 128 * 4 * 4 * 2
    macs = (128 * 5 + 256 * 3 * 2 + 2 * 256 * (3 * 4 + 4) + 128 * 32 + 2 * 128 * (3 * 16 + 16) + 64 * 64
            + 64 * 48 + 64 * 64 + 2 * 128 * (3 * 16 + 16) + 128 * 32 + 2 * 256 * (3 * 4 + 4) + 256 * 3 * 2)
    assert macs_per_frame(HAND) == macs == 72320


def test_default_size_is_the_literature_figure():
    """channels 8..128, strides (2, 2, 8, 8): about 0.7 M parameters (SEANet BWE)."""
    assert 650_000 < count_params(ModelConfig()) < 750_000


def test_noncausal_variant_builds_and_trains():
    keras.utils.set_random_seed(2)
    cfg = dataclasses.replace(TINY, causal=False, pad_mode="reflect")
    model = build_generator(cfg, Modes.TRAINING)
    x = speech_like(0.064, rate=8000, seed=6)[None, :, None]
    target = speech_like(0.064, rate=16000, seed=6)[None, :, None]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.abs(model(x, training=True) - target))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert "upsampler" not in {w.path.split("/")[0] for w in model.trainable_weights}
    # Non-causal: a change in the future does reach earlier outputs.
    future = x.copy()
    future[:, 256:] += 0.5
    assert not np.allclose(np.asarray(model(future))[:, :256], np.asarray(model(x))[:, :256])


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(strides=[3, 2]), r"product of the strides \(6\) must divide the 256"),
        (dict(strides=[]), "at least one downsampling block"),
        (dict(strides=[2, 0]), r"strides\[1\]: must be a positive integer"),
        (dict(upsampler_taps=32), "upsampler_taps: must be odd"),
        (dict(split_taps=64), "split_taps: must be 0"),
        (dict(split_taps=1), "split_taps: must be 0"),
        (dict(pad_mode="reflect"), "reflect padding reads the signal's future"),
        (dict(max_channels=2), "max_channels"),
        (dict(dilations=[]), "model.dilations"),
    ],
)
def test_bad_configs_are_refused(change, match):
    """At construction (as every recipe section), not first when the model is built."""
    with pytest.raises(ModelConfigError, match=match):
        dataclasses.replace(TINY, **change)


def test_streaming_frame_must_be_a_multiple_of_the_stride():
    with pytest.raises(ModelConfigError, match="not a multiple of the total stride 256"):
        build_generator(TINY, Modes.STREAM_EXTERNAL_STATE_INFERENCE, input_samples=64)
    # The non-causal model may use any stride product (it never streams).
    build_generator(dataclasses.replace(TINY, causal=False, strides=[3]))
