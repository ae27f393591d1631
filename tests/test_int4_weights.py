"""bwe.int4_weights: 4-bit filters against TensorFlow's FakeQuant and the converter's own int4 file; exports."""

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from bwe.export import load_generator
from bwe.export import main as export
from bwe.int4_weights import int4_filters, pack_int4, quantise_int4, unpack_int4
from exported_tiny import RECIPE

FILTER = np.random.default_rng(3).normal(size=(1, 3, 16, 32)).astype(np.float32)  # HWIO: 1,536 weights


def test_pack_int4_golden_bytes():
    """Two levels to a byte, the first in the low nibble, two's complement; an odd count pads with 0."""
    assert pack_int4(np.array([1, -1, 7, -7, 0])) == bytes([0xF1, 0x97, 0x00])
    levels = np.arange(-7, 8, dtype=np.int8)
    assert np.array_equal(unpack_int4(pack_int4(levels), levels.size), levels)


def test_quantise_int4_is_tensorflows_per_channel_fake_quant():
    weights = np.random.default_rng(0).normal(size=(6, 1, 3, 5)).astype(np.float32)
    weights[4] = 0.0  # an all-zero channel
    levels, scales = quantise_int4(weights)
    channels_last = np.moveaxis(weights, 0, -1)
    limit = np.abs(channels_last).reshape(-1, 6).max(axis=0)
    expected = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        channels_last, -limit, limit, num_bits=4, narrow_range=True).numpy()
    np.testing.assert_allclose(levels * scales[:, None, None, None], np.moveaxis(expected, -1, 0), atol=1e-6)
    assert levels.min() >= -7 and levels.max() <= 7
    assert np.array_equal(np.abs(levels).reshape(6, -1).max(axis=1), [7, 7, 7, 7, 0, 7])


class _Conv(tf.Module):
    """One conv with a float filter, or with the filter through a 4-bit FakeQuant (the converter's own
    int4 path, which needs the FakeQuant to feed the conv directly)."""

    def __init__(self, fake_quant: bool):
        self.w = tf.Variable(FILTER)
        self.fake_quant = fake_quant

    @tf.function(input_signature=[tf.TensorSpec([1, 1, 40, 16], tf.float32)])
    def __call__(self, x):
        w = self.w
        if self.fake_quant:
            limit = tf.reduce_max(tf.abs(w), axis=[0, 1, 2])
            w = tf.quantization.fake_quant_with_min_max_vars_per_channel(w, -limit, limit, num_bits=4, narrow_range=True)
        return tf.nn.conv2d(x, w, 1, "SAME")


def _convert(fake_quant: bool, optimise: bool) -> bytes:
    module = _Conv(fake_quant)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    if optimise:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter._experimental_low_bit_qat = fake_quant  # private: the converter's only way to write int4
    return converter.convert()


def _filter(model_bytes: bytes):
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.operators[0].inputs[1]]
    return tensor, bytes(model.buffers[tensor.buffer].data)


def _run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model_bytes).get_signature_runner()
    return next(iter(runner(x=x).values()))


@pytest.fixture(scope="module")
def files():
    return {"float": _convert(False, False), "native": _convert(True, True)}


def test_rewritten_filter_is_the_converters_own_int4(files):
    """The converter writes int4 for a FakeQuant-fed conv (a hybrid conv: float activations); the float file
    rewritten holds the same bytes and scales, runs in LiteRT, and gives the same output."""
    ours = int4_filters(files["float"])
    (tensor, data), (native, native_data) = _filter(ours), _filter(files["native"])
    assert tensor.type == native.type == schema.TensorType.INT4
    assert data == native_data and len(data) == FILTER.size // 2
    np.testing.assert_allclose(tensor.quantization.scale, native.quantization.scale, rtol=1e-6)
    assert tensor.quantization.quantizedDimension == native.quantization.quantizedDimension == 0
    x = np.random.default_rng(1).normal(size=(1, 1, 40, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(ours, x), _run(files["native"], x), rtol=1e-5, atol=1e-5)
    assert len(ours) < len(files["float"]) - 3 * FILTER.size


def test_a_kept_filter_stays_float(files):
    kept = int4_filters(files["float"], keep=lambda name: True)
    assert _filter(kept)[0].type == schema.TensorType.FLOAT32


def test_export_with_4_bit_weights(tmp_path):
    """export.weight_bits=4 on a model with an envelope head: every trained conv's filter is int4 in the
    flatbuffer, the fixed filters (the head's band filters) float32, no filter int8; the file is the float
    one less 3.5 bytes per int4 weight (and their scales), and its SNR against float is recorded."""
    args = ["--recipe", RECIPE, "--random-init", "--block-frames", "8", "-q", "--set", "export.int8_mode=dynamic",
            "--set", "model.envelope_bands=4", "--set", "model.envelope_crossfade=32"]
    assert export(args + [str(tmp_path), "--set", "export.weight_bits=4"]) == 0
    model = flatbuffer_utils.read_model(str(tmp_path / "streaming_int8.tflite"))
    graph = model.subgraphs[0]
    conv = schema.BuiltinOperator.CONV_2D
    filters = {graph.tensors[op.inputs[1]].name.decode().split("/")[1]: graph.tensors[op.inputs[1]].type
               for op in graph.operators
               if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                      model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == conv}
    assert filters["envelope_bands_1"] == filters["envelope_highpass_1"] == schema.TensorType.FLOAT32
    assert filters["bottleneck_1"] == filters["dec0_up_1"] == filters["envelope_level_1"] == schema.TensorType.INT4
    assert schema.TensorType.INT8 not in filters.values()
    int4 = [t for t in graph.tensors if t.type == schema.TensorType.INT4]
    # 3.5 bytes a weight, less a float32 scale and an int64 zero point per output channel
    saved = sum(3.5 * int(np.prod(t.shape)) - 12 * int(t.shape[0]) for t in int4)
    sizes = {name: (tmp_path / name).stat().st_size for name in ("streaming.tflite", "streaming_int8.tflite")}
    assert abs(sizes["streaming.tflite"] - sizes["streaming_int8.tflite"] - saved) < 0.01 * saved
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["files"]["streaming_int8"]["quantization"].startswith("dynamic range: int4 weights")
    assert meta["checks"]["int8_snr_db_vs_float"] > 10.0


def test_4_bit_weights_need_the_dynamic_mode(tmp_path, capsys):
    assert export(["--recipe", RECIPE, "--random-init", str(tmp_path / "x"), "-q", "--set", "export.int8_mode=16x8",
                   "--set", "export.weight_bits=4"]) != 0
    assert "export.weight_bits: 4 is made for export.int8_mode: dynamic" in capsys.readouterr().err


def test_a_4_bit_qat_model_is_served_with_the_kernels_it_trained_with(tmp_path):
    """quant.weight_bits=4, quant.activation_bits=0 (what a dynamic-range file computes) exported with
    export.weight_bits=4: every int4 filter of the file, dequantised, is the kernel the QAT layer computes
    with: a direct conv's fake-quantised kernel, a transposed conv's fake-quantised polyphase kernel."""
    assert export(["--recipe", RECIPE, "--random-init", str(tmp_path), "-q", "--block-frames", "8",
                   "--set", "quant.enabled=true", "--set", "quant.weight_bits=4", "--set", "quant.activation_bits=0",
                   "--set", "export.int8_mode=dynamic", "--set", "export.weight_bits=4"]) == 0
    generator, _, _ = load_generator(str(tmp_path))
    layers = {layer.name: layer for layer in generator.layers}
    model = flatbuffer_utils.read_model(str(tmp_path / "streaming_int8.tflite"))
    compared = set()
    for tensor in model.subgraphs[0].tensors:
        if tensor.type != schema.TensorType.INT4:
            continue
        layer = layers[tensor.name.decode().split("/")[1].rsplit("_", 1)[0]]
        served = layer._polyphase_kernel() if layer.transposed else layer.conv_kernel()  # [taps, in, out]
        served = np.transpose(np.asarray(served), (2, 0, 1))[:, None]  # TFLite's [out, 1, taps, in]
        if served.shape != tuple(tensor.shape):
            continue  # a sample-grouped conv: its filter is rearranged
        levels = unpack_int4(bytes(model.buffers[tensor.buffer].data), served.size).reshape(served.shape)
        scales = np.asarray(tensor.quantization.scale, np.float32).reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(levels * scales, served, rtol=1e-6, atol=1e-7, err_msg=layer.name)
        compared.add(type(layer).__name__)
    assert {"CausalConv1D", "CausalConv1DTranspose"} <= compared
