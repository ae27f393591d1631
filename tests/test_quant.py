"""Quantisation-aware training: the fake-quant functions against NumPy (rounding, clipping, per-channel
scales, the straight-through gradient, range tracking), a quantised conv against a NumPy conv of the
quantised input and kernel, a quantised generator that streams as it runs offline, the ``quant:`` recipe
section, and a QAT step of the trainer from a float model's weights."""

import numpy as np
import pytest
import tensorflow as tf

from bwe.config import RecipeError, load_recipe
from bwe.layers.quant import (
    QuantSpec,
    activation_limits,
    fake_quant_activations,
    fake_quant_weights,
    max_level,
    split_for_int8,
    tracked_range,
)
from test_train import TINY, _batch


def _numpy_weights(w, bits, axis):
    """Per-channel symmetric rounding, TF's round-half-up."""
    other = tuple(a for a in range(w.ndim) if a != axis % w.ndim)
    scale = np.max(np.abs(w), axis=other, keepdims=True) / max_level(bits)
    return np.floor(w / scale + 0.5) * scale, scale


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("axis", [2, 1])
def test_weights_round_per_channel_to_a_symmetric_grid(bits, axis):
    rng = np.random.default_rng(bits + axis)
    w = (rng.normal(size=(5, 6, 7)) * rng.uniform(0.01, 3, size=7 if axis == 2 else (1, 6, 1))).astype(np.float32)
    got = fake_quant_weights(tf.constant(w), bits, axis).numpy()
    want, scale = _numpy_weights(w, bits, axis)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.max(np.abs(w)))
    levels = got / scale
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # on the grid
    assert np.max(np.abs(np.round(levels))) == max_level(bits)  # each channel's largest weight is +-max exactly
    assert len(np.unique(np.round(levels))) <= 2 * max_level(bits) + 1
    assert np.max(np.abs(got - w) / scale) <= 0.5 + 1e-4


def test_activations_clip_and_round_over_the_tracked_range():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 300, 3)).astype(np.float32) * 3
    # int8: asymmetric [low, high] (here -1 and 2: zero falls on the grid, nothing is nudged)
    got = fake_quant_activations(tf.constant(x), tf.constant([-1.0, 2.0]), 8).numpy()
    scale = 3.0 / 255
    want = np.floor((np.clip(x, -1, 2) + 1) / scale + 0.5) * scale - 1
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.min() == pytest.approx(-1) and got.max() == pytest.approx(2)
    # int16: symmetric +-max(|low|, |high|), no zero point
    got = fake_quant_activations(tf.constant(x), tf.constant([-1.0, 2.0]), 16).numpy()
    scale = np.float32(4.0 / 65534)  # in float32 and from the range's low end, as TF computes it
    want = np.floor((np.clip(x, -2, 2) + np.float32(2)) * (np.float32(1) / scale) + np.float32(0.5)) * scale - 2
    np.testing.assert_allclose(got, want, atol=1e-6)
    # a range that excludes zero is widened to hold it (zero padding must stay exact)
    low, high = activation_limits(tf.constant([0.5, 2.0]), 8)
    assert (float(low), float(high)) == (0.0, 2.0)
    assert fake_quant_activations(tf.zeros([4]), tf.constant([0.5, 2.0]), 8).numpy().tolist() == [0.0] * 4


def test_gradients_pass_straight_through_inside_the_range_and_stop_outside():
    x = tf.constant(np.linspace(-3, 3, 61, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(fake_quant_activations(x, tf.constant([-1.0, 2.0]), 8) * 3.0)
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(grad, np.where((x.numpy() >= -1) & (x.numpy() <= 2), 3.0, 0.0))
    w = tf.constant(np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32))
    upstream = np.random.default_rng(2).normal(size=(3, 4, 5)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(w)
        y = tf.reduce_sum(fake_quant_weights(w, 8, 2) * upstream)
    np.testing.assert_allclose(tape.gradient(y, w).numpy(), upstream, atol=1e-6)  # every weight is inside its range


def test_ranges_start_at_the_first_batch_then_follow_a_moving_average():
    value_range = tf.Variable([0.0, 0.0])
    tracked_range(value_range, tf.constant([-2.0, 1.0, 4.0]), 0.9)
    np.testing.assert_allclose(value_range.numpy(), [-2.0, 4.0])
    tracked_range(value_range, tf.constant([-1.0, 0.0, 14.0]), 0.9)
    np.testing.assert_allclose(value_range.numpy(), [0.9 * -2 + 0.1 * -1, 0.9 * 4 + 0.1 * 14], rtol=1e-6)


def test_a_quantised_conv_computes_on_the_quantised_input_and_kernel():
    from bwe.layers.conv import CausalConv1D

    rng = np.random.default_rng(3)
    layer = CausalConv1D(4, 3, dilation_rate=2, weight_norm=True, quantization=QuantSpec(8, 8, 0.5))
    x = rng.normal(size=(2, 40, 3)).astype(np.float32)
    layer(x, training=True)
    first = layer.input_range.numpy().copy()
    np.testing.assert_allclose(first, [x.min(), x.max()])
    y = layer(x * 0.5).numpy()  # inference: the tracked range, not this input's
    np.testing.assert_array_equal(layer.input_range.numpy(), first)

    kernel, _ = _numpy_weights(np.asarray(layer.effective_kernel()), 8, 2)
    scale = (first[1] - first[0]) / 255
    low = -np.round(-first[0] / scale) * scale  # the range moved to put zero on the grid (a zero point)
    xq = np.floor((np.clip(x * 0.5, low, low + 255 * scale) - low) / scale + 0.5) * scale + low
    padded = np.pad(xq, [(0, 0), (4, 0), (0, 0)])
    want = sum(padded[:, 2 * k: 2 * k + 40] @ kernel[k] for k in range(3)) + layer.bias.numpy()
    np.testing.assert_allclose(y, want, atol=2e-5)
    layer(x * 3, training=True)
    np.testing.assert_allclose(layer.input_range.numpy(), 0.5 * first + 0.5 * np.array([3 * x.min(), 3 * x.max()]),
                               rtol=1e-6)


def test_float_activations_leave_the_input_and_quantise_the_kernel_only():
    """activation_bits 0 (what a dynamic-range file computes): the input is not rounded, the kernel is."""
    from bwe.layers.conv import CausalConv1D

    layer = CausalConv1D(4, 3, quantization=QuantSpec(4, 0))
    x = np.random.default_rng(4).normal(size=(1, 30, 3)).astype(np.float32)
    y = layer(x, training=True).numpy()
    kernel, _ = _numpy_weights(np.asarray(layer.effective_kernel()), 4, 2)
    padded = np.pad(x, [(0, 0), (2, 0), (0, 0)])
    np.testing.assert_allclose(y, sum(padded[:, k: k + 30] @ kernel[k] for k in range(3)) + layer.bias.numpy(),
                               atol=1e-5)


def test_a_transposed_conv_quantises_each_phase_of_a_filter():
    """A transposed conv computes as a direct conv whose outputs are the phases of each filter; each phase
    gets its own scale (the kernel its TFLite file stores): here the odd phases are 9x louder, and the even
    ones still reach full scale."""
    from bwe.layers.conv import CausalConv1DTranspose

    quantised, plain = (CausalConv1DTranspose(3, 8, strides=4, quantization=spec) for spec in (QuantSpec(4, 0), None))
    for layer in (quantised, plain):
        layer(np.zeros((1, 5, 2), np.float32))
    kernel = quantised.kernel.numpy() * np.array([1, 9] * 4, np.float32)[:, None, None]  # [taps, filters, in]
    for layer in (quantised, plain):
        layer.kernel.assign(kernel)
    served = np.asarray(quantised._polyphase_kernel())  # [taps per phase, in, phases * filters]
    want, scale = _numpy_weights(np.asarray(plain._polyphase_kernel()), 4, 2)
    np.testing.assert_allclose(served, want, atol=1e-6)
    assert np.all(np.max(np.abs(np.round(served / scale)), axis=(0, 1)) == max_level(4))


def test_a_fixed_filter_split_in_two_int8_kernels_keeps_its_stop_band():
    """The band split's high-pass rounded to int8 as one kernel leaks its stop band at -47 dB; as
    `split_for_int8`'s two parts, each rounded with its own per-channel scale (TFLite's int8 weights),
    it keeps the float filter's -73 dB."""
    from bwe.models.seanet import band_split_kernel

    highpass = band_split_kernel(33)[:, 1:, :]
    coarse, fine = (part.numpy() for part in split_for_int8(tf.constant(highpass), channel_axis=2))
    np.testing.assert_array_equal(coarse + fine, highpass)
    rounded, _ = _numpy_weights(coarse, 8, 2)
    np.testing.assert_allclose(rounded, coarse, rtol=0, atol=1e-9)  # the coarse part converts exactly

    def stop_band_db(kernel):
        response = np.abs(np.fft.rfft(kernel[:, 0, 0], 4096))
        return 20 * np.log10(response[np.fft.rfftfreq(4096, 1 / 16000) < 1000].max())

    assert stop_band_db(highpass) < -70
    assert stop_band_db(_numpy_weights(highpass, 8, 2)[0]) > -50
    assert stop_band_db(rounded + _numpy_weights(fine, 8, 2)[0]) < -70


@pytest.mark.parametrize("groups", [1, 4])
def test_a_conv_with_split_int8_weights_computes_the_same_conv(groups):
    """In float the two parts' convs sum to the conv itself, offline and streamed over sample groups."""
    import keras

    from bwe.layers.conv import CausalConv1D, CausalConv1DTranspose
    from bwe.layers.modes import Modes

    x = np.random.default_rng(5).normal(size=(1, 256, 1)).astype(np.float32)
    kernel = np.random.default_rng(6).normal(size=(9, 1, 3)).astype(np.float32)
    common = dict(kernel_initializer=keras.initializers.Constant(kernel), use_bias=False)
    want = CausalConv1D(3, 9, **common)(x).numpy()
    for mode in (Modes.NON_STREAM_INFERENCE, Modes.STREAM_EXTERNAL_STATE_INFERENCE):
        layer = CausalConv1D(3, 9, mode=mode, sample_groups=groups if mode.is_streaming else 1,
                             split_int8_weights=True, **common)
        got = layer(x).numpy() if not mode.is_streaming else layer([x, np.zeros((1, 8, 1), np.float32)])[0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(kernel).max())
    with pytest.raises(ValueError, match="direct convs only"):
        CausalConv1DTranspose(1, 4, strides=2, split_int8_weights=True)


def _head_recipe(*overrides):
    return load_recipe(TINY, ["model.envelope_bands=4", "model.envelope_frame=128", "model.envelope_crossfade=32",
                              "model.envelope_channels=8", "model.envelope_relative_levels=true", *overrides])


def test_a_quantised_generator_streams_as_it_runs_offline_and_keeps_its_ranges():
    from bwe.layers.modes import Modes
    from bwe.models.seanet import build_generator
    from bwe.streaming.convert import copy_weights, to_streaming, zero_states

    recipe = _head_recipe("quant.enabled=true", "quant.activation_bits=16")
    generator = build_generator(recipe.model, quantization=recipe.quant.spec())
    x = np.random.default_rng(4).normal(size=(2, 1024, 1)).astype(np.float32) * 0.1
    generator(x, training=True)
    offline = to_streaming(generator, Modes.NON_STREAM_INFERENCE)
    stream = to_streaming(generator, Modes.STREAM_EXTERNAL_STATE_INFERENCE)
    convs = [layer for layer in generator.layers if getattr(layer, "quantization", None)]
    assert len(convs) > 20  # every trainable conv of the body and the predictor
    for layer in convs:
        np.testing.assert_array_equal(stream.get_layer(layer.name).input_range.numpy(), layer.input_range.numpy())
        assert np.ptp(layer.input_range.numpy()) > 0

    want = offline(x[:1]).numpy()
    states, frames = zero_states(stream), []
    for start in range(0, 1024, 128):
        out = stream([x[:1, start:start + 128]] + states)
        frames.append(out[0].numpy())
        states = [s.numpy() for s in out[1:]]
    # Same arithmetic; float sums in another order can move a value across a rounding boundary (one step).
    np.testing.assert_allclose(np.concatenate(frames, 1), want, atol=1e-3 * np.max(np.abs(want)))

    float_model = build_generator(recipe.model)
    copy_weights(generator, float_model)
    quantised = np.max(np.abs(to_streaming(float_model, Modes.NON_STREAM_INFERENCE)(x[:1]).numpy() - want))
    assert quantised > 1e-4  # the float model with the same weights differs: the rounding is really there


def test_the_quant_section_is_checked():
    assert load_recipe(TINY).quant.spec() is None
    assert load_recipe(TINY, ["quant.enabled=true", "quant.weight_bits=4"]).quant.spec() == QuantSpec(4, 8, 0.99)
    for override, message in (("quant.weight_bits=3", "quant.weight_bits: must be one of"),
                              ("quant.activation_bits=12", "quant.activation_bits: must be one of"),
                              ("quant.range_momentum=1", r"quant.range_momentum: must be in \[0, 1\)")):
        with pytest.raises(RecipeError, match=message):
            load_recipe(TINY, [override])


def test_a_qat_step_trains_a_quantised_generator_started_from_float_weights(tmp_path):
    from bwe.train import Trainer
    from exported_tiny import exported_tiny

    float_generator, _, folder = exported_tiny()
    trainer = Trainer(load_recipe(TINY, [f"train.init_from={folder}", "quant.enabled=true", "train.warmup_steps=0"]),
                      str(tmp_path))
    assert trainer.restore() == 0
    layer = trainer.generator.get_layer("input_conv")
    np.testing.assert_array_equal(layer.effective_kernel().numpy(),
                                  float_generator.get_layer("input_conv").effective_kernel().numpy())
    assert layer.input_range.numpy().tolist() == [0.0, 0.0]
    before = layer.effective_kernel().numpy().copy()
    for step in range(2):
        metrics = trainer.train_step(*_batch(step), step)
        assert metrics["finite"] and np.isfinite(metrics["loss/generator_total"])
    assert np.ptp(layer.input_range.numpy()) > 0
    assert not np.array_equal(layer.effective_kernel().numpy(), before)


def test_a_qat_model_exports_its_float_twin_and_an_integer_file(tmp_path):
    from bwe.export import export_generator, float_ops, load_generator
    from bwe.layers.modes import Modes
    from bwe.models.seanet import build_generator
    from bwe.streaming.convert import to_streaming

    recipe = load_recipe(TINY, ["quant.enabled=true"])
    generator = build_generator(recipe.model, quantization=recipe.quant.spec())
    generator(_batch(0)[0], training=True)
    integer_recipe = load_recipe(TINY, ["quant.enabled=true", "export.int8_mode=16x8"])
    export_generator(generator, integer_recipe, str(tmp_path / "integer"), log=lambda message: None)
    assert not float_ops((tmp_path / "integer" / "streaming_int8.tflite").read_bytes())

    export_generator(generator, recipe, str(tmp_path / "out"), log=lambda message: None)
    reloaded, reloaded_recipe, _ = load_generator(str(tmp_path / "out"))
    assert reloaded_recipe.quant.enabled
    ranges = generator.get_layer("bottleneck").input_range.numpy()
    np.testing.assert_array_equal(reloaded.get_layer("bottleneck").input_range.numpy(), ranges)

    from ai_edge_litert.interpreter import Interpreter

    x = _batch(1)[0].numpy()[:1]
    interpreter = Interpreter(model_path=str(tmp_path / "out" / "offline.tflite"))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    exported = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    twin = to_streaming(generator, Modes.NON_STREAM_INFERENCE, quantized=False)(x).numpy()
    np.testing.assert_allclose(exported, twin, atol=1e-4)
    quantised = to_streaming(generator, Modes.NON_STREAM_INFERENCE)(x).numpy()
    assert np.max(np.abs(quantised - twin)) > 1e-4
