"""4-bit weights for LiteRT: a float file's convolution filters rewritten as int4.

LiteRT's hybrid CONV_2D (float activations, quantised per call; a quantised filter with one scale per
output channel) runs int4 filters, stored two to a byte, low nibble first. The TFLite converter writes
them only where a 4-bit FakeQuant op feeds a conv's filter directly, which a Keras conv1d's kernel never
does (it is reshaped to 2-D first). So an int4 file is the float file with each chosen filter rewritten
in the flatbuffer, rounded to 4 bits: symmetric per output channel,
``scale = max|w| / 7``, levels in ``[-7, 7]``, rounded by the very fake quantisation QAT trains with
(`bwe.layers.quant`), so a model trained with 4-bit weights is served with exactly the weights it
trained with.
"""

from __future__ import annotations

import typing

import numpy as np

MAX_LEVEL = 7  # narrow range: -7 .. 7, so that the scale is symmetric


def quantise_int4(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``weights`` [out, ...] as (int8 levels in [-7, 7], one float32 scale per output channel), rounded by
    the fake quantisation QAT trains with (`bwe.layers.quant.fake_quant_weights`), bit for bit."""
    from bwe.layers.quant import fake_quant_weights

    weights = np.asarray(weights, np.float32)
    limit = np.max(np.abs(weights.reshape(weights.shape[0], -1)), axis=1)
    scales = (np.where(limit > 0, limit, 1.0) / MAX_LEVEL).astype(np.float32)  # all zeros: any scale
    rounded = np.asarray(fake_quant_weights(weights, 4, channel_axis=0))
    levels = np.round(rounded / scales.reshape((-1,) + (1,) * (weights.ndim - 1)))
    return levels.astype(np.int8), scales


def pack_int4(levels: np.ndarray) -> bytes:
    """Signed 4-bit ``levels`` in row-major order, two to a byte, the first in the low nibble (LiteRT's
    packing); an odd count leaves the last high nibble zero."""
    nibbles = (levels.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()


def unpack_int4(packed: bytes, count: int) -> np.ndarray:
    """`pack_int4`'s inverse: the first ``count`` signed levels."""
    data = np.frombuffer(packed, np.uint8)
    nibbles = np.stack([data & 0xF, data >> 4], axis=1).reshape(-1)[:count].astype(np.int8)
    return np.where(nibbles > MAX_LEVEL, nibbles - 16, nibbles).astype(np.int8)


def int4_filters(float_model: bytes, keep: typing.Callable[[str], bool] = lambda name: False) -> bytes:
    """``float_model`` (a float TFLite file) with each constant CONV_2D filter in 4 bits, which makes the
    conv a hybrid one (float activations, quantised per call); filters whose tensor name ``keep`` accepts
    stay float32 (fixed filters whose stop bands 4 bits would lose)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_model))
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.CONV_2D:
                continue  # (small codes live in the deprecated field)
            tensor = graph.tensors[op.inputs[1]]
            data = model.buffers[tensor.buffer].data
            if tensor.type != schema.TensorType.FLOAT32 or data is None or keep(tensor.name.decode()):
                continue
            levels, scales = quantise_int4(np.frombuffer(bytes(data), np.float32).reshape(tuple(tensor.shape)))
            tensor.type = schema.TensorType.INT4
            tensor.quantization = schema.QuantizationParametersT()
            tensor.quantization.scale = scales.tolist()
            tensor.quantization.zeroPoint = [0] * len(scales)
            tensor.quantization.quantizedDimension = 0
            model.buffers[tensor.buffer].data = np.frombuffer(pack_int4(levels), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
