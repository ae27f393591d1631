"""Streaming primitives: golden values against NumPy, causality, streaming == offline, refusals."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from bwe.layers.conv import (
    CausalConv1D,
    CausalConv1DTranspose,
    CausalDelay,
    CenteredConv1D,
    CenteredConv1DTranspose,
    causal_conv_state_length,
    effective_kernel_size,
    grouped_kernel_indices,
)
from bwe.layers.modes import Modes
from bwe.layers.time import CropTimeToReference, PadTimeToMultiple
from bwe.streaming import NotStreamableError, check_streamable

tf.config.experimental.enable_op_determinism()
IN_CH, OUT_CH = 2, 3


def _signal(length, channels=IN_CH, seed=0):
    return np.random.default_rng(seed).standard_normal((1, length, channels)).astype(np.float32)


def _numpy_causal_conv(x, w, b, stride, dilation):
    """Direct-form reference: y[j] = sum_i w[i] . xpad[j*s + i*d], left pad k_eff - s (crop if < 0)."""
    k = w.shape[0]
    pad = causal_conv_state_length(k, stride, dilation)
    x = x[0]
    xp = np.concatenate([np.zeros((pad, x.shape[1]), x.dtype), x]) if pad >= 0 else x[-pad:]
    n_out = x.shape[0] // stride
    y = np.zeros((n_out, w.shape[2]), np.float64)
    for j in range(n_out):
        for i in range(k):
            y[j] += xp[j * stride + i * dilation] @ w[i]
    return (y + b)[None]


def _numpy_causal_transpose(x, w, b, stride):
    """Reference: full[t*s + i] += w[i] @ x[t]; keep the first T*s samples."""
    t_in, k = x.shape[1], w.shape[0]
    full = np.zeros(((t_in - 1) * stride + max(k, stride), w.shape[1]), np.float64)
    for t in range(t_in):
        for i in range(k):
            full[t * stride + i] += w[i] @ x[0, t]
    return (full[: t_in * stride] + b)[None]


def _copy(src, dst):
    dst.set_plain_weights(src.plain_weights())


def _stream(layer_cls, kwargs, x, frame, offline_layer):
    """Run x frame by frame through the internal- and external-state versions of the layer."""
    internal = layer_cls(mode=Modes.STREAM_INTERNAL_STATE_INFERENCE, **kwargs)
    external = layer_cls(mode=Modes.STREAM_EXTERNAL_STATE_INFERENCE, **kwargs)
    shape = external.state_shape_for(x.shape[-1])
    state = None if shape is None else np.zeros((1,) + shape, np.float32)
    first = x[:, :frame]
    internal(first)
    external(first if state is None else [first, state])
    _copy(offline_layer, internal)
    _copy(offline_layer, external)
    internal.reset_states()
    outs_int, outs_ext = [], []
    for start in range(0, x.shape[1], frame):
        chunk = x[:, start : start + frame]
        outs_int.append(np.asarray(internal(chunk)))
        if state is None:
            y = external(chunk)
        else:
            y, state = external([chunk, state])
        outs_ext.append(np.asarray(y))
    return np.concatenate(outs_int, axis=1), np.concatenate(outs_ext, axis=1)


def test_padding_math():
    assert effective_kernel_size(7, 9) == 55
    assert causal_conv_state_length(7, 1, 3) == 18
    assert causal_conv_state_length(16, 8) == 8
    assert causal_conv_state_length(1, 2) == -1


CONV_CASES = list(itertools.product([1, 2, 3, 7], [1, 2, 4], [1, 3]))


@pytest.mark.parametrize("kernel,stride,dilation", CONV_CASES)
def test_causal_conv_golden_and_streaming(kernel, stride, dilation):
    keras.utils.set_random_seed(kernel * 100 + stride * 10 + dilation)
    kwargs = dict(filters=OUT_CH, kernel_size=kernel, strides=stride, dilation_rate=dilation, name="conv")
    frame = stride * (1 + (kernel + dilation) % 3)  # frame lengths 1x..3x the stride
    n_frames = 5
    x = _signal(frame * n_frames, seed=kernel)
    offline = CausalConv1D(mode=Modes.NON_STREAM_INFERENCE, **kwargs)
    offline(x)
    offline.bias.assign(np.linspace(-0.5, 0.5, OUT_CH).astype(np.float32))
    y = np.asarray(offline(x))
    w, b = offline.plain_weights()["kernel"], offline.plain_weights()["bias"]
    np.testing.assert_allclose(y, _numpy_causal_conv(x, w, b, stride, dilation), atol=1e-5)
    # Causality: changing the future leaves every earlier output untouched.
    cut = 2 * frame
    x2 = x.copy()
    x2[:, cut:] += 1.0
    np.testing.assert_array_equal(np.asarray(offline(x2))[:, : cut // stride], y[:, : cut // stride])
    y_int, y_ext = _stream(CausalConv1D, kwargs, x, frame, offline)
    np.testing.assert_allclose(y_int, y, atol=1e-5)
    np.testing.assert_allclose(y_ext, y, atol=1e-5)


SAMPLE_GROUP_CASES = [  # (kernel, dilation, group, channels in, channels out)
    (33, 1, 16, 1, 1), (33, 1, 8, 1, 4), (7, 1, 8, 8, 1), (7, 1, 4, 1, 8), (3, 3, 4, 2, 3), (1, 1, 4, 2, 3),
    (5, 2, 2, 2, 1)]


@pytest.mark.parametrize("kernel,dilation,group,c_in,c_out", SAMPLE_GROUP_CASES)
def test_sample_groups_streaming_equals_direct_offline(kernel, dilation, group, c_in, c_out):
    """The grouped computation of the streaming modes is the direct conv: same output frame by frame,
    with the state rounded up to whole groups (its extra past samples meet zero taps)."""
    keras.utils.set_random_seed(kernel + group)
    kwargs = dict(filters=c_out, kernel_size=kernel, dilation_rate=dilation, sample_groups=group, name="poly")
    frame = 2 * group
    x = _signal(frame * 6, channels=c_in, seed=kernel)
    offline = CausalConv1D(mode=Modes.NON_STREAM_INFERENCE, **kwargs)
    offline(x)
    offline.bias.assign(np.linspace(-0.5, 0.5, c_out).astype(np.float32))
    y = np.asarray(offline(x))
    w, b = offline.plain_weights()["kernel"], offline.plain_weights()["bias"]
    np.testing.assert_allclose(y, _numpy_causal_conv(x, w, b, 1, dilation), atol=1e-5)
    streaming = CausalConv1D(mode=Modes.STREAM_EXTERNAL_STATE_INFERENCE, **kwargs)
    direct_state = causal_conv_state_length(kernel, 1, dilation)
    assert streaming.state_shape_for(c_in) == ((-(-direct_state // group) * group, c_in) if direct_state else None)
    y_int, y_ext = _stream(CausalConv1D, kwargs, x, frame, offline)
    np.testing.assert_allclose(y_int, y, atol=1e-5)
    np.testing.assert_allclose(y_ext, y, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,group,frame", [(33, 2, 8, 8), (33, 2, 4, 6), (16, 8, 2, 3), (3, 2, 4, 4)])
def test_sample_groups_transpose_streaming_equals_offline(kernel, stride, group, frame):
    """A transposed conv over groups of input steps (frames of any length: zero steps pad the last
    group and are cropped) streams the same output as the direct offline one."""
    keras.utils.set_random_seed(kernel + group)
    kwargs = dict(filters=OUT_CH, kernel_size=kernel, strides=stride, sample_groups=group, name="grpt")
    x = _signal(frame * 5, seed=kernel)
    offline = CausalConv1DTranspose(mode=Modes.NON_STREAM_INFERENCE, **kwargs)
    offline(x)
    offline.bias.assign(np.linspace(-0.5, 0.5, OUT_CH).astype(np.float32))
    y = np.asarray(offline(x))
    w, b = offline.plain_weights()["kernel"], offline.plain_weights()["bias"]
    np.testing.assert_allclose(y, _numpy_causal_transpose(x, w, b, stride), atol=1e-5)
    y_int, y_ext = _stream(CausalConv1DTranspose, kwargs, x, frame, offline)
    np.testing.assert_allclose(y_int, y, atol=1e-5)
    np.testing.assert_allclose(y_ext, y, atol=1e-5)


def test_grouped_kernel_indices_golden():
    # 5 taps in groups of 2: output phase r of a group reads input phase b of group step a at tap 2a + b - r.
    idx = grouped_kernel_indices(5, 2)
    assert idx.shape == (3, 2, 2)
    np.testing.assert_array_equal(idx[:, :, 0], [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(idx[:, :, 1], [[5, 0], [1, 2], [3, 4]])  # 5 = no tap (zero)
    with pytest.raises(ValueError, match="not a multiple of group"):
        grouped_kernel_indices(6, 4)


def test_sample_groups_refusals_and_config():
    with pytest.raises(ValueError, match="sample_groups=4 needs stride 1"):
        CausalConv1D(2, 4, strides=2, sample_groups=4)
    with pytest.raises(ValueError, match="sample_groups must be a positive integer"):
        CausalConv1D(2, 4, sample_groups=0)
    layer = CausalConv1D(2, 5, sample_groups=4, mode=Modes.STREAM_INTERNAL_STATE_INFERENCE, name="grp")
    with pytest.raises(ValueError, match="frame length 6 is not divisible by sample_groups=4"):
        layer(np.zeros((1, 6, 2), np.float32))
    assert CausalConv1D.from_config(layer.get_config()).sample_groups == 4
    with pytest.raises(ValueError, match="a centred layer cannot stream"):
        CenteredConv1D(2, 3, sample_groups=2)
    with pytest.raises(ValueError, match="sample_groups must be 1 \\(a delay is a slice\\)"):
        CausalDelay(5, sample_groups=2)
    # Training and offline inference keep the direct conv and its state length.
    assert CausalConv1D(2, 5, sample_groups=4, name="t").state_length == 4
    assert CausalConv1D(2, 6, sample_groups=4, name="t").state_length == 5


TRANSPOSE_CASES = list(itertools.product([1, 2, 3, 4, 7, 16], [1, 2, 8]))


@pytest.mark.parametrize("kernel,stride", TRANSPOSE_CASES)
def test_causal_transpose_golden_and_streaming(kernel, stride):
    keras.utils.set_random_seed(kernel * 10 + stride)
    kwargs = dict(filters=OUT_CH, kernel_size=kernel, strides=stride, name="convt")
    frame = 1 + kernel % 3
    x = _signal(frame * 6, seed=kernel + stride)
    offline = CausalConv1DTranspose(mode=Modes.NON_STREAM_INFERENCE, **kwargs)
    offline(x)
    offline.bias.assign(np.linspace(-0.5, 0.5, OUT_CH).astype(np.float32))
    y = np.asarray(offline(x))
    assert y.shape == (1, x.shape[1] * stride, OUT_CH)
    w, b = offline.plain_weights()["kernel"], offline.plain_weights()["bias"]
    np.testing.assert_allclose(y, _numpy_causal_transpose(x, w, b, stride), atol=1e-5)
    x2 = x.copy()
    x2[:, 2 * frame :] -= 1.0
    np.testing.assert_array_equal(np.asarray(offline(x2))[:, : 2 * frame * stride], y[:, : 2 * frame * stride])
    y_int, y_ext = _stream(CausalConv1DTranspose, kwargs, x, frame, offline)
    np.testing.assert_allclose(y_int, y, atol=1e-5)
    np.testing.assert_allclose(y_ext, y, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (7, 1, 3), (4, 2, 1), (16, 8, 1), (3, 2, 2)])
def test_centered_conv_is_symmetric(kernel, stride, dilation):
    """A centred conv equals the causal conv on the input shifted left by its look-ahead."""
    keras.utils.set_random_seed(1)
    kwargs = dict(filters=OUT_CH, kernel_size=kernel, strides=stride, dilation_rate=dilation, name="c")
    x = _signal(stride * 12)
    centred = CenteredConv1D(mode=Modes.TRAINING, **kwargs)
    y = np.asarray(centred(x))
    assert y.shape == (1, 12, OUT_CH)
    causal = CausalConv1D(mode=Modes.TRAINING, **kwargs)
    causal(x)
    _copy(centred, causal)
    total = causal_conv_state_length(kernel, stride, dilation)
    lookahead = total // 2  # the centred layer's right padding
    shifted = np.concatenate([x[:, lookahead:], np.zeros_like(x[:, :lookahead])], axis=1)
    y_ref = np.asarray(causal(shifted))
    # Away from the ends (where the two pad differently) the outputs agree.
    n = max(1, -(-total // stride))
    np.testing.assert_allclose(y[:, n:-n], y_ref[:, n:-n], atol=1e-5)


def test_centered_transpose_shape_and_reflect_padding():
    keras.utils.set_random_seed(2)
    x = _signal(10)
    y = CenteredConv1DTranspose(OUT_CH, 16, strides=8, name="t")(x)
    assert y.shape == (1, 80, OUT_CH)
    reflect = CenteredConv1D(OUT_CH, 7, pad_mode="reflect", name="r")
    assert reflect(x).shape == (1, 10, OUT_CH)


def test_weight_norm_folds_exactly():
    keras.utils.set_random_seed(3)
    x = _signal(32)
    wn = CausalConv1D(OUT_CH, 5, dilation_rate=2, weight_norm=True, name="wn")
    y = np.asarray(wn(x))
    names = sorted(w.path.split("/")[-1] for w in wn.weights)
    assert names == ["bias", "kernel_g", "kernel_v"]
    # g scales each output channel: doubling g doubles that channel (bias is zero).
    wn.kernel_g.assign(wn.kernel_g * np.array([2.0, 1.0, 1.0], np.float32))
    y2 = np.asarray(wn(x))
    np.testing.assert_allclose(y2[..., 0], 2 * y[..., 0], rtol=1e-5, atol=1e-6)
    plain = CausalConv1D(OUT_CH, 5, dilation_rate=2, mode=Modes.NON_STREAM_INFERENCE, name="wn")
    plain(x)
    _copy(wn, plain)
    np.testing.assert_allclose(np.asarray(plain(x)), y2, atol=1e-5)
    # And back: a weight-norm layer loaded from plain weights reproduces them.
    wn2 = CausalConv1D(OUT_CH, 5, dilation_rate=2, weight_norm=True, name="wn")
    wn2(x)
    _copy(plain, wn2)
    np.testing.assert_allclose(wn2.plain_weights()["kernel"], plain.plain_weights()["kernel"], atol=1e-6)


def test_transpose_weight_norm_per_output_channel():
    keras.utils.set_random_seed(4)
    x = _signal(8)
    layer = CausalConv1DTranspose(OUT_CH, 4, strides=2, weight_norm=True, name="t")
    layer(x)
    assert tuple(layer.kernel_g.shape) == (OUT_CH,)
    kernel = layer.plain_weights()["kernel"]
    np.testing.assert_allclose(np.sqrt((kernel**2).sum(axis=(0, 2))), np.asarray(layer.kernel_g), rtol=1e-5)


def test_internal_state_reset():
    keras.utils.set_random_seed(5)
    layer = CausalConv1D(OUT_CH, 7, dilation_rate=3, mode=Modes.STREAM_INTERNAL_STATE_INFERENCE, name="s")
    a, b = _signal(8, seed=1), _signal(8, seed=2)
    first_b = np.asarray(layer(b))
    layer(a)
    after_a = np.asarray(layer(b))
    assert not np.allclose(after_a, first_b)
    layer.reset_states()
    np.testing.assert_array_equal(np.asarray(layer(b)), first_b)


def test_get_config_round_trip_keeps_mode():
    layer = CausalConv1D(4, 3, strides=2, dilation_rate=1, mode=Modes.STREAM_EXTERNAL_STATE_INFERENCE, name="x")
    config = layer.get_config()
    assert config["mode"] == "stream_external_state_inference"
    clone = CausalConv1D.from_config(config)
    assert clone.mode is Modes.STREAM_EXTERNAL_STATE_INFERENCE and clone.strides == 2
    assert Modes.parse("training") is Modes.TRAINING
    with pytest.raises(ValueError, match="unknown mode"):
        Modes.parse("streaming")


# ---- refusals ------------------------------------------------------------------------------


def test_centered_refuses_streaming():
    for mode in (Modes.STREAM_INTERNAL_STATE_INFERENCE, Modes.STREAM_EXTERNAL_STATE_INFERENCE):
        with pytest.raises(ValueError, match="centred .* cannot stream"):
            CenteredConv1D(2, 3, mode=mode)
        with pytest.raises(ValueError, match="cannot stream"):
            CenteredConv1DTranspose(2, 4, strides=2, mode=mode)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_causal_refuses_same_padding(padding):
    with pytest.raises(ValueError, match="cannot be used in a causal layer"):
        CausalConv1D(2, 3, padding=padding)


def test_causal_refuses_reflect_padding():
    with pytest.raises(ValueError, match="reflect padding .* no streaming"):
        CausalConv1D(2, 3, pad_mode="reflect")


def test_streaming_refuses_dynamic_frame_length():
    layer = CausalConv1D(2, 3, mode=Modes.STREAM_INTERNAL_STATE_INFERENCE, name="dyn")
    with pytest.raises(ValueError, match="fixed frame length"):
        layer(keras.Input(batch_shape=(1, None, 2)))


def test_streaming_refuses_frame_not_divisible_by_stride():
    layer = CausalConv1D(2, 4, strides=4, mode=Modes.STREAM_INTERNAL_STATE_INFERENCE, name="odd")
    with pytest.raises(ValueError, match="not divisible by the stride 4"):
        layer(np.zeros((1, 6, 2), np.float32))


def test_external_state_needs_state_input():
    layer = CausalConv1D(2, 3, mode=Modes.STREAM_EXTERNAL_STATE_INFERENCE, name="ext")
    with pytest.raises(ValueError, match=r"\[inputs, state\]"):
        layer(np.zeros((1, 4, 2), np.float32))


def test_streaming_refuses_weight_norm():
    with pytest.raises(ValueError, match="weight normalisation is a training-time"):
        CausalConv1D(2, 3, weight_norm=True, mode=Modes.STREAM_EXTERNAL_STATE_INFERENCE)


def test_bad_geometry_refused():
    with pytest.raises(ValueError, match="kernel_size must be a positive integer"):
        CausalConv1D(2, 0)
    with pytest.raises(ValueError, match="dilation is not supported in a transposed conv"):
        CausalConv1DTranspose(2, 4, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="pad_mode must be"):
        CenteredConv1D(2, 3, pad_mode="circular")


def test_padding_layers_refuse_streaming_and_round_trip():
    with pytest.raises(ValueError, match="needs the whole signal"):
        PadTimeToMultiple(8, mode=Modes.STREAM_EXTERNAL_STATE_INFERENCE)
    x = _signal(13, channels=1)
    padded = PadTimeToMultiple(8)(x)
    assert padded.shape == (1, 16, 1)
    np.testing.assert_array_equal(np.asarray(CropTimeToReference()([padded, x])), x)


@pytest.mark.parametrize(
    "layer,match",
    [
        (keras.layers.LayerNormalization(axis=1), "normalises"),
        (keras.layers.GroupNormalization(groups=1), "normalises"),
        (keras.layers.Conv1D(2, 3, padding="causal"), "plain keras Conv1D"),
        (keras.layers.GlobalAveragePooling1D(), "not known to be streamable"),
    ],
)
def test_check_streamable_refuses(layer, match):
    inputs = keras.Input(shape=(16, 2))
    model = keras.Model(inputs, layer(CausalConv1D(2, 3, name="ok")(inputs)))
    with pytest.raises(NotStreamableError, match=match):
        check_streamable(model)


def test_check_streamable_refuses_centred_layer():
    inputs = keras.Input(shape=(16, 2))
    model = keras.Model(inputs, CenteredConv1D(2, 3, name="mid")(inputs))
    with pytest.raises(NotStreamableError, match="'mid' .* is centred"):
        check_streamable(model)


@pytest.mark.parametrize("integer_ops", [False, True])
def test_elu_both_forms_are_elu_with_its_gradient(integer_ops):
    from bwe.layers.activations import ELU

    x = tf.Variable(np.linspace(-8, 8, 321, dtype=np.float32))
    with tf.GradientTape() as tape:
        y = ELU(integer_ops)(x)
    golden = np.where(x.numpy() > 0, x.numpy(), np.expm1(x.numpy()))
    np.testing.assert_allclose(y.numpy(), golden, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), np.where(x.numpy() > 0, 1.0, np.exp(x.numpy())), atol=1e-6)
    assert ELU.from_config(ELU(integer_ops).get_config()).integer_ops is integer_ops
