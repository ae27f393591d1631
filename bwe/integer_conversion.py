"""Full-integer TFLite conversion whose activation ranges sit on a grid.

TFLite's post-training quantiser sets each activation's scale from the min and max that calibration saw.
Two files converted from the same layers on the same audio, the streaming file (one frame a call) and its
block twin (many frames a call), see the same values only up to float rounding, which the envelope head's
level arithmetic magnifies in near-silent frames: their scales then differ by up to ~0.3 %, and the two
integer files round differently everywhere after (a median 2 output steps apart, the generated band 7
steps RMS). Rounding every calibrated range outward to ``RANGE_STEPS_PER_OCTAVE`` steps per octave puts
such near-equal ranges on the same grid point, so the twins compute bit for bit alike, at a cost of at
most a quarter octave of range (on average ~1/8 bit of resolution).

The quantiser behind TFLiteConverter (`tf.lite.python.optimize.calibrator`) has no public hook between
calibrating and quantising; this module uses its two halves as TFLiteConverter itself does.
"""

from __future__ import annotations

import math

import numpy as np

RANGE_STEPS_PER_OCTAVE = 4


def round_range_outward(value: float, upper: bool, steps_per_octave: int = RANGE_STEPS_PER_OCTAVE) -> float:
    """``value`` moved away from zero onto the grid ``±2**(k / steps_per_octave)`` when it bounds a range
    from above (``upper``, positive) or below (negative); a bound on the near side of zero (a positive min,
    a negative max) moves toward zero, so the range only ever grows. Zero stays zero."""
    if value == 0.0:
        return 0.0
    exponent = math.log2(abs(value)) * steps_per_octave
    outward = (value > 0) == upper
    exponent = math.ceil(exponent) if outward else math.floor(exponent)
    return math.copysign(2.0 ** (exponent / steps_per_octave), value)


def round_ranges(model: bytes, steps_per_octave: int = RANGE_STEPS_PER_OCTAVE) -> bytes:
    """A calibrated float TFLite model (min/max on its tensors) with every range rounded outward."""
    from tensorflow.lite.tools import flatbuffer_utils

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    for subgraph in tree.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            if q is None or q.min is None or not len(q.min):
                continue
            q.min = [round_range_outward(float(v), False, steps_per_octave) for v in q.min]
            q.max = [round_range_outward(float(v), True, steps_per_octave) for v in q.max]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def share_state_scales(model: bytes, signature: str, states: list[tuple[str, str]]) -> bytes:
    """An integer model whose each state input (``states``: (input, output) names in ``signature``) is
    quantised on entry with the scale its state output is dequantised from.

    Calibration gives a state input a range of its own, from the values it held at the start of each
    calibration call: a file called once per frame sees them all, a block file only a few, and clips
    the rest when it streams. The state output is a slice of the tensor the input is concatenated onto,
    so its scale covers every value a state can hold; entering with it also makes each state cross the
    float32 interface exactly (dequantised and quantised again at one scale).
    """
    from tensorflow.lite.tools import flatbuffer_utils
    from tensorflow.lite.tools.flatbuffer_utils import schema_fb

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    (sig,) = [d for d in tree.signatureDefs if d.signatureKey.decode() == signature]
    graph = tree.subgraphs[sig.subgraphIndex]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in tree.operatorCodes]

    def quantized(op_code, tensor, side):  # the integer tensor beside a float interface tensor
        for op in graph.operators:
            ends = op.inputs if side == "in" else op.outputs
            if codes[op.opcodeIndex] == op_code and tensor in list(ends):
                return (op.outputs if side == "in" else op.inputs)[0]
        raise ValueError(f"{signature}: interface tensor {tensor} has no {side}put (de)quantisation")

    inputs = {t.name.decode(): t.tensorIndex for t in sig.inputs}
    outputs = {t.name.decode(): t.tensorIndex for t in sig.outputs}
    for state_in, state_out in states:
        entry = quantized(schema_fb.BuiltinOperator.QUANTIZE, inputs[state_in], "in")
        exit_ = quantized(schema_fb.BuiltinOperator.DEQUANTIZE, outputs[state_out], "out")
        graph.tensors[entry].quantization = graph.tensors[exit_].quantization
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def drop_unread_fields(model: bytes, keep_names: bool = True) -> bytes:
    """An integer model without what its runtime never reads: the calibrated min/max beside each
    tensor's scale and zero point, and with ``keep_names`` false the names of every tensor but the
    signatures' inputs and outputs (which a runtime without signatures finds by name). The arithmetic
    is untouched: the same input gives the same output, bit for bit. Names help diagnosis
    (python -m eval.research integer-snr pairs the float and integer files' tensors by name); on a 16x8
    file of this generator they are a tenth of its bytes."""
    from tensorflow.lite.tools import flatbuffer_utils

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    interface = {(sig.subgraphIndex, t.tensorIndex) for sig in tree.signatureDefs for t in [*sig.inputs, *sig.outputs]}
    for index, subgraph in enumerate(tree.subgraphs):
        for position, tensor in enumerate(subgraph.tensors):
            if tensor.quantization is not None:
                tensor.quantization.min = tensor.quantization.max = None
            if not keep_names and (index, position) not in interface:
                tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def convert_integer(saved_model: str, signature: str, representative: list[dict], int16: bool,
                    states: list[tuple[str, str]], keep_names: bool = True) -> bytes:
    """The ``signature`` of ``saved_model`` as a full-integer TFLite model (int8 weights; int8, or int16
    with ``int16``, activations; float32 I/O), calibrated on ``representative`` (feed dicts) with its
    ranges on the grid and its ``states`` entering at their outputs' scales (`share_state_scales`),
    without the fields no runtime reads (`drop_unread_fields`). Refuses (ValueError from the quantiser)
    any op it cannot make integer."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python.optimize import calibrator

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[signature])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(representative)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 if int16
        else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True  # float model + each tensor's min/max
    calibrated = round_ranges(converter.convert())

    quantiser = calibrator.Calibrator(calibrated)
    # Prepared for the calibration inputs' shapes but fed nothing: the quantiser then reads the ranges the
    # model carries, the rounded ones.
    quantiser._interpreter = Interpreter(model_content=calibrated)
    inputs = quantiser._create_input_array_from_dict(None, representative[0])
    quantiser._calibrator.Prepare([list(x.shape) for x in inputs])
    activations = np.int16 if int16 else np.int8
    model = quantiser._calibrator.QuantizeModel(
        np.dtype(np.float32).num, np.dtype(np.float32).num, False,  # float32 I/O, no float fallback
        np.dtype(activations).num, np.dtype(np.int64 if int16 else np.int32).num,  # bias type
        False, False)  # per-channel weights everywhere
    return drop_unread_fields(share_state_scales(model, signature, states), keep_names)
