"""`bwe-export`: a trained generator -> SavedModel + TFLite/LiteRT files + metadata.json.

    bwe-export RUN_DIR OUT_DIR                       a training run (checkpoints/best, else latest)
    bwe-export CHECKPOINT_PREFIX OUT_DIR [--recipe FILE]
    bwe-export EXPORTED_DIR OUT_DIR                  an exported folder (its metadata.json and weights)
    bwe-export --recipe FILE --random-init OUT_DIR [--seed N]   (tests and benchmarks)

OUT_DIR receives:

* ``saved_model/`` with signatures ``serving_default`` (whole signal), ``streaming`` (one 16 ms frame,
  external state) and ``block`` (``block_frames`` frames per call, same states);
* ``offline.tflite``: whole signal, ``[1, T8, 1] -> [1, 2*T8, 1]``; resize the time axis with
  ``resize_tensor_input`` to any length (a multiple of 128 gives exactly the streaming output);
* ``streaming.tflite``: float32, one frame ``[1, 128, 1] -> [1, 256, 1]`` plus the states;
* ``streaming_int8.tflite``: the same with int8 weights; audio and states stay float32 at the
  interface, so it is a drop-in replacement. ``export.int8_mode: dynamic`` (default) quantises the
  activations per call from their actual range and runs XNNPACK's int8 kernels (with
  ``export.weight_bits: 4``, the trained convs' filters in 4 bits, the fixed ones float:
  `bwe.int4_weights`); ``full`` and ``16x8`` make every tensor integer with ranges calibrated once by
  streaming real speech through the float model (states included), for integer-only accelerators (see
  ``bwe.config.ExportConfig``);
* ``block.tflite``: float32, ``block_frames`` frames per call with the same states as
  ``streaming.tflite`` (states are interchangeable between the two): the fast path for files;
* ``block_int8.tflite`` (integer modes, and ``dynamic`` for models without an envelope head): the
  block model of the same quantisation, the fast path for files with ``--int8``;
* ``metadata.json``: rates, frame sizes, latency, delay, tensor names, the state list in feed order
  (all start at zeros), parameter/MAC counts, the resolved recipe and measured export checks;
* ``generator.weights.h5``: the TRAINING generator's Keras weights (before ``export.highband_gain``),
  so that an exported folder is itself a SOURCE: export it again with other ``--set export.*`` values,
  or start a training run from it (``train.init_from``).

Everything is written into a temporary folder beside OUT_DIR and renamed into place at the end, so
a failed export leaves any previous OUT_DIR untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

from bwe import __version__
from bwe.config import INTEGER_MODES, Recipe, RecipeError, head_band_count, load_recipe, recipe_to_dict
from bwe.files import staging_folder
from bwe.int4_weights import int4_filters
from bwe.integer_conversion import convert_integer
from bwe.metadata import (
    FORMAT_VERSION,
    METADATA_FILE,
    WEIGHTS_FILE,
    ExportChecks,
    Int8Calibration,
    ModelFile,
    ModelMetadata,
    StateTensor,
    TensorNames,
)
from bwe.runtime import StatefulRunner, StreamSession

AUDIO_NAME = "audio"
INTEGER_SAVED_MODEL = "integer_saved_model"  # in the staging folder only: the source of integer conversion
DEFAULT_BLOCK_FRAMES = 256  # 4.096 s per call: ~15 % faster per second of audio than 64 frames (1.024 s)
# Export refuses to finish if a float TFLite file is further than this from the TF model:
# it catches converter traps that silently drop weights.
FLOAT_TOLERANCE = 1e-4
SAMPLE_WAV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", "sample_8k.wav")
CALIBRATION_GAINS_DB = (0.0, -12.0, 6.0)
CALIBRATION_FILES = 50
# Each file key's signature: the one of the SavedModel it was converted from.
SIGNATURES = {"offline": "serving_default", "streaming": "streaming", "streaming_int8": "streaming",
              "block": "block", "block_int8": "block"}
INT8_DESCRIPTIONS = {
    "dynamic": "dynamic range: int8 weights, activations quantised per call from their actual range",
    "full": "full integer: int8 weights and activations, ranges calibrated on speech",
    "16x8": "full integer: int8 weights, int16 activations, ranges calibrated on speech",
}
INT4_DESCRIPTION = ("dynamic range: int4 weights in the trained convs, float32 fixed filters, activations "
                    "quantised per call from their actual range")


class ExportError(RuntimeError):
    """The export cannot be made; the message says why and what to do."""


# ---- loading a generator -----------------------------------------------------------------------


def _find_recipe(start: str) -> str | None:
    directory = os.path.abspath(start)
    for _ in range(4):
        candidate = os.path.join(directory, "recipe.yaml")
        if os.path.isfile(candidate):
            return candidate
        directory = os.path.dirname(directory)
    return None


def resolve_checkpoint(source: str) -> str:
    """A run directory or checkpoint prefix -> the checkpoint prefix to restore."""
    import tensorflow as tf

    if os.path.isdir(source):
        for sub in (os.path.join("checkpoints", "best"), "checkpoints", ""):
            directory = os.path.join(source, sub)
            if os.path.isdir(directory):
                prefix = tf.train.latest_checkpoint(directory)
                if prefix:
                    return prefix
        raise ExportError(f"{source}: no checkpoint found in checkpoints/best/ or checkpoints/ "
                          "(is this a training run directory?)")
    if os.path.isfile(source + ".index"):
        return source
    raise ExportError(f"{source}: neither a run directory nor a checkpoint prefix (no {source}.index)")


def load_generator(source: str, recipe_path: str | None = None):
    """Restore the TRAINING generator from a run dir, a checkpoint or an exported folder.
    Returns (model, recipe, what was loaded)."""
    if os.path.isfile(os.path.join(source, METADATA_FILE)):
        return _load_exported_generator(source)
    import tensorflow as tf

    from bwe.models.seanet import build_generator

    prefix = resolve_checkpoint(source)
    recipe_path = recipe_path or _find_recipe(source if os.path.isdir(source) else os.path.dirname(prefix))
    if recipe_path is None:
        raise ExportError(f"{source}: no recipe.yaml found beside the checkpoint; pass --recipe FILE")
    recipe = load_recipe(recipe_path)
    generator = build_generator(recipe.model, quantization=recipe.quant.spec())
    try:
        status = tf.train.Checkpoint(generator=generator).restore(prefix)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise ExportError(f"{prefix}: the checkpoint does not match the recipe's model ({e})") from None
    reader = tf.train.load_checkpoint(prefix)
    if not any(key.startswith("generator/") for key in reader.get_variable_to_shape_map()):
        raise ExportError(f"{prefix}: the checkpoint holds no 'generator' object")
    return generator, recipe, prefix


def _load_exported_generator(folder: str):
    """The generator of an exported folder: its metadata.json's recipe and its ``WEIGHTS_FILE``."""
    from bwe.config import recipe_from_dict
    from bwe.metadata import MetadataError
    from bwe.models.seanet import build_generator

    weights = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise ExportError(f"{folder}: an exported model without {WEIGHTS_FILE} (exported by an older bwe-export); "
                          "export it again from its training run")
    try:
        recipe = recipe_from_dict(ModelMetadata.load(os.path.join(folder, METADATA_FILE)).recipe)
    except (MetadataError, RecipeError) as e:
        raise ExportError(f"{folder}: {e}") from None
    generator = build_generator(recipe.model, quantization=recipe.quant.spec())
    try:
        generator.load_weights(weights)
    except ValueError as e:
        raise ExportError(f"{weights}: does not match the model of {METADATA_FILE} ({e})") from None
    return generator, recipe, weights


# ---- calibration audio -------------------------------------------------------------------------


def calibration_audio(calibration_dir: str | None, frames: int, frame: int) -> tuple[np.ndarray, str]:
    """``frames * frame`` samples of 8 kHz speech for int8 calibration, and a description.

    Default: the bundled real telephone-band prompt at 0, -12 and +6 dB (the levels training sees),
    repeated as needed. With ``calibration_dir``: up to ``CALIBRATION_FILES`` of its audio files, spread
    evenly over the sorted list (so several speakers and sources are seen), resampled to 8 kHz, an
    equal share from the start of each (the whole taken again from the start if short files leave it short).
    """
    from bwe.data.audio import list_audio_files, load_audio, spread_indices

    needed = frames * frame
    pieces, total = [], 0
    if calibration_dir:
        if not os.path.isdir(calibration_dir):
            raise ExportError(f"--calibration-dir {calibration_dir}: no such directory")
        files = list_audio_files(calibration_dir)
        if not files:
            raise ExportError(f"--calibration-dir {calibration_dir}: no audio files found")
        chosen = [files[i] for i in spread_indices(len(files), CALIBRATION_FILES)]
        share = -(-needed // len(chosen))
        for path in chosen:
            x, _ = load_audio(path, target_rate=8000)
            pieces.append(x[:share])
            total += len(pieces[-1])
        description = f"{len(chosen)} file(s) from {calibration_dir}"
    else:
        x, _ = load_audio(SAMPLE_WAV, target_rate=8000)
        description = f"bundled sample_8k.wav at {', '.join(f'{g:+.0f}' for g in CALIBRATION_GAINS_DB)} dB"
        i = 0
        while total < needed:
            gain = 10 ** (CALIBRATION_GAINS_DB[i % len(CALIBRATION_GAINS_DB)] / 20)
            pieces.append(np.clip(x * gain, -1.0, 1.0))
            total += len(x)
            i += 1
    audio = np.concatenate(pieces).astype(np.float32)
    if len(audio) < needed:
        audio = np.concatenate([audio, np.tile(audio, needed // len(audio) + 1)])
    return audio[:needed], description


# ---- TFLite helpers (LiteRT, no TensorFlow needed) ----------------------------------------------


def _stream_tflite(path: str, signature: str, states: tuple[StateTensor, ...], audio: np.ndarray,
                  record: list | None = None) -> np.ndarray:
    """``audio`` through a stateful .tflite (streaming or block) from the zero state, in calls of the
    file's own length, with bwe.runtime's loop; ``record`` collects each call's inputs (`StreamSession`)."""
    runner = StatefulRunner(path, signature, states, AUDIO_NAME, AUDIO_NAME, num_threads=1)
    return StreamSession(runner).process(audio, record)


def _run_offline_tflite(path: str, audio: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [1, len(audio), 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, audio[None, :, None].astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, :, 0]


def _tensor_names(path: str, key: str) -> TensorNames:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner(key)
    details = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    return TensorNames(inputs={name: details[d["index"]] for name, d in runner.get_input_details().items()},
                       outputs={name: details[d["index"]] for name, d in runner.get_output_details().items()})


def output_step(path: str, signature: str) -> float:
    """The quantisation step of an integer file's audio output: the scale of the tensor its final
    DEQUANTIZE reads."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    output = interpreter.get_signature_runner(signature).get_output_details()[AUDIO_NAME]["index"]
    for op in interpreter._get_ops_details():
        if op["op_name"] == "DEQUANTIZE" and output in list(op["outputs"]):
            details = {t["index"]: t for t in interpreter.get_tensor_details()}
            return float(details[op["inputs"][0]]["quantization_parameters"]["scales"][0])
    raise ExportError(f"{path}: its {AUDIO_NAME} output is not dequantised from an integer tensor")


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = np.sum((reference - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference**2) / max(noise, 1e-20)))


def highband(x: np.ndarray, rate: int, cutoff: float = 4000.0) -> np.ndarray:
    """``x`` with every DFT bin below ``cutoff`` zeroed: the band the network generates, for its own SNR
    (the whole-signal SNR is dominated by the low band, which the model passes through)."""
    spectrum = np.fft.rfft(x)
    spectrum[np.fft.rfftfreq(len(x), 1.0 / rate) < cutoff] = 0
    return np.fft.irfft(spectrum, len(x))


# ---- the export ---------------------------------------------------------------------------------


def _frozen_signature(model, specs, output_names):
    """A tf.function over ``model`` with its weights frozen into constants, returning a name->tensor dict.

    Freezing first is what makes the TFLite converter fold the kernels (and their layout transposes)
    into constants: converting a SavedModel that holds Keras 3 variables keeps them as runtime
    VAR_HANDLE/READ_VARIABLE ops, and int8 calibration then misses them.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=specs)
    def live(*args):
        outputs = model(list(args) if len(args) > 1 else args[0], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(output_names, outputs))

    frozen = convert_variables_to_constants_v2(live.get_concrete_function())
    keys = sorted(output_names)  # the frozen function returns the dict flattened in key order

    @tf.function(input_signature=specs)
    def signature(*args):
        return dict(zip(keys, frozen(*args)))

    return signature


def _streaming_specs(length: int, states: tuple[StateTensor, ...]) -> list:
    """Input specs of a stateful signature: ``length`` samples of audio, then the states."""
    import tensorflow as tf

    specs = [tf.TensorSpec([1, length, 1], tf.float32, name=AUDIO_NAME)]
    return specs + [tf.TensorSpec(s.shape, tf.float32, name=s.input) for s in states]


def _stateful_signature(model, states: tuple[StateTensor, ...]):
    """The frozen signature of a streaming or block model: audio and states in, audio and new states out."""
    return _frozen_signature(model, _streaming_specs(model.inputs[0].shape[1], states),
                             [AUDIO_NAME] + [s.output for s in states])


def _write_saved_model(path, offline, stream, block, states: tuple[StateTensor, ...]):
    """SavedModel (weights frozen) with signatures serving_default (offline), streaming and block."""
    import tensorflow as tf

    signatures = {
        "serving_default": _frozen_signature(offline, [tf.TensorSpec([1, None, 1], tf.float32, name=AUDIO_NAME)],
                                             [AUDIO_NAME]),
        "streaming": _stateful_signature(stream, states),
        "block": _stateful_signature(block, states),
    }
    tf.saved_model.save(tf.Module(), path, signatures=signatures)


def _write_integer_saved_model(path, integer, integer_block, states: tuple[StateTensor, ...]):
    """SavedModel with the signatures integer conversion reads: ``streaming`` and ``block``, built with
    integer_ops."""
    import tensorflow as tf

    signatures = {"streaming": _stateful_signature(integer, states), "block": _stateful_signature(integer_block, states)}
    tf.saved_model.save(tf.Module(), path, signatures=signatures)


def _convert(saved_model: str, key: str, quantize: bool = False) -> bytes:
    """Float TFLite; with ``quantize``, dynamic-range int8 (int8 weights)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[key])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def float_ops(model: bytes) -> list[str]:
    """The ops of a TFLite model that compute in float32: every op but QUANTIZE taking a float input
    and DEQUANTIZE giving a float output (the float I/O of an integer model, and dequantised constants)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(dtypes[i] == np.float32 for i in tensors):
            found.append(op["op_name"])
    return found


def scale_highband(models, recipe: Recipe) -> None:
    """Multiply the generated band of each converted model by ``export.highband_gain``.

    With ``model.highband_residual`` the network's output only reaches the output through the fixed
    complementary high-pass, so scaling its last (linear) conv scales exactly the generated band
    and leaves the interpolated low band as it is; without it the network also shapes the low band.
    With an envelope head, whose gains would undo a louder or quieter network output (it reads the
    bands' levels), the fixed conv that hands its gains to the crossfade is scaled instead: the last
    weights before the bands are weighted and summed. Each model names that layer itself
    (`bwe.models.seanet.GeneratorParts.highband_gain`), so which layer is scaled never hangs on its name.
    ``export.band_gains`` scales each band's pair of that conv's outputs (its previous and current
    frame's gain, `gain_pair_kernel`) by one more factor.
    """
    from bwe.models.seanet import generator_parts

    gain, band_gains = recipe.export.highband_gain, recipe.export.band_gains
    bands = head_band_count(recipe.model)
    if band_gains and len(band_gains) != bands:
        raise ExportError(f"export.band_gains: {len(band_gains)} gain(s) for a model with {bands} envelope "
                          "band(s); give one per band, low to high (a gap band first)")
    if gain == 1.0 and not band_gains:
        return
    if not recipe.model.highband_residual:
        raise ExportError("export.highband_gain needs model.highband_residual: true (without it the network's "
                          "output is not a high band alone, and scaling it would change the low band too)")
    # Along the output channels: [previous K, current K] with band gains, else one factor for all.
    factors = gain * np.tile(np.asarray(band_gains, np.float32), 2) if band_gains else gain
    for model in models:
        layer = generator_parts(model).highband_gain
        layer.set_weights([w * factors for w in layer.get_weights()])


def export_generator(
    generator,
    recipe: Recipe,
    out_dir: str,
    *,
    calibration_dir: str | None = None,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    source: str = "",
    log=print,
) -> ModelMetadata:
    """Export a TRAINING-mode generator (see module docstring). Returns the metadata written."""
    from bwe.layers.modes import Modes
    from bwe.streaming import to_streaming

    if not recipe.model.causal:
        raise ExportError("model.causal is false: only a causal model can be exported for streaming "
                          "(the whole-signal SavedModel of a non-causal model is what training already gives)")
    if block_frames < 1:
        raise ExportError(f"--block-frames must be >= 1, got {block_frames}")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir}: exists and is not a directory")
    started = time.time()
    tmp = staging_folder(out_dir)
    try:
        # A QAT model is converted as its float twin (FakeQuant ops do not convert: integer-models.md). Its
        # integer file rounds the trained kernels as training did (per channel, symmetric, max |w|) and
        # calibrates the activations' ranges on speech like any other model.
        offline = to_streaming(generator, Modes.NON_STREAM_INFERENCE, quantized=False)
        stream = to_streaming(generator, Modes.STREAM_EXTERNAL_STATE_INFERENCE, quantized=False)
        block = to_streaming(generator, Modes.STREAM_EXTERNAL_STATE_INFERENCE, frames_per_call=block_frames,
                             quantized=False)
        integer, integer_block = None, None
        if recipe.export.int8_mode in INTEGER_MODES:
            integer = to_streaming(generator, Modes.STREAM_EXTERNAL_STATE_INFERENCE, integer_ops=True, quantized=False)
            integer_block = to_streaming(generator, Modes.STREAM_EXTERNAL_STATE_INFERENCE, integer_ops=True,
                                         frames_per_call=block_frames, quantized=False)
        scale_highband([m for m in (offline, stream, block, integer, integer_block) if m is not None], recipe)
        generator.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        states = tuple(StateTensor(input=name_in, output=name_out, shape=tuple(t.shape), dtype="float32")
                       for name_in, name_out, t in
                       zip(stream.state_input_names, stream.state_output_names, stream.inputs[1:]))
        saved_model = os.path.join(tmp, "saved_model")
        log("writing SavedModel")
        _write_saved_model(saved_model, offline, stream, block, states)
        integer_saved_model = None
        if integer is not None:
            integer_saved_model = os.path.join(tmp, INTEGER_SAVED_MODEL)
            _write_integer_saved_model(integer_saved_model, integer, integer_block, states)
        files, calibration = _convert_files(saved_model, integer_saved_model, tmp, recipe, states, calibration_dir,
                                            block_frames, fixed_layer_names(stream), log)
        if integer_saved_model is not None:
            shutil.rmtree(integer_saved_model)
        log("checking the exported files")
        checks = _check_files(tmp, files, offline, states, block_frames, calibration)
        metadata = _describe(recipe, tmp, files, states, block_frames, checks, source)
        metadata.write(os.path.join(tmp, METADATA_FILE))
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"exported to {out_dir} in {time.time() - started:.1f} s "
        f"(float error {max(checks.max_abs_error_vs_tensorflow.values()):.2g}, "
        f"int8 SNR {checks.int8_snr_db_vs_float:.1f} dB, 4-8 kHz {checks.int8_highband_snr_db_vs_float:.1f} dB)")
    return metadata


def _convert_files(saved_model: str, integer_saved_model: str | None, tmp: str, recipe: Recipe,
                   states: tuple[StateTensor, ...], calibration_dir, block_frames: int, fixed_layers: frozenset[str],
                   log) -> tuple[dict[str, str], Int8Calibration | None]:
    """The TFLite files into ``tmp``: (file key -> file name, what int8 was calibrated on or None). An
    integer mode (``integer_saved_model`` given) converts the int8 streaming and block files from it,
    calibrated on the same audio; a dynamic file with 4-bit weights keeps ``fixed_layers``' filters float."""
    files = {"offline": "offline.tflite", "streaming": "streaming.tflite", "block": "block.tflite",
             "streaming_int8": "streaming_int8.tflite"}
    floats = {}
    for key, signature in (("offline", "serving_default"), ("streaming", "streaming"), ("block", "block")):
        log(f"converting {files[key]}")
        floats[key] = _convert(saved_model, signature)
        _write(tmp, files[key], floats[key])

    int8_mode = recipe.export.int8_mode
    if integer_saved_model is None:
        log(f"converting {files['streaming_int8']} ({int8_mode}, {recipe.export.weight_bits}-bit weights)")
        int8_file = _dynamic_file(saved_model, "streaming_int8", floats["streaming"], recipe, fixed_layers)
        _write(tmp, files["streaming_int8"], int8_file)
        # Dynamic range needs no calibration, so the block model could get an int8 twin for fast files;
        # but it quantises each call's input with one scale, and over 256 frames that scale is set by
        # the loudest: an envelope head then reads quiet frames' spectra wrong (4-8 kHz frame levels off
        # by 6-7 dB at the 95th percentile on real speech, against ~2 dB frame by frame), so models
        # with a head run int8 files through streaming_int8.tflite.
        if int8_mode == "dynamic" and not recipe.model.envelope_bands:
            files["block_int8"] = "block_int8.tflite"
            log(f"converting {files['block_int8']}")
            int8_file = _dynamic_file(saved_model, "block_int8", floats["block"], recipe, fixed_layers)
            _write(tmp, files["block_int8"], int8_file)
        return files, None

    files["block_int8"] = "block_int8.tflite"
    records, calibration = _calibration_records(tmp, files, states, calibration_dir, block_frames,
                                                recipe.export.int8_calibration_frames, log)
    for key in ("streaming_int8", "block_int8"):
        log(f"converting {files[key]} ({int8_mode} int8)")
        try:
            model = convert_integer(integer_saved_model, SIGNATURES[key], records[key], int16=int8_mode == "16x8",
                                    states=[(s.input, s.output) for s in states],
                                    keep_names=recipe.export.int8_tensor_names)
        except (ValueError, RuntimeError) as e:
            raise ExportError(f"export.int8_mode={int8_mode}: the quantiser cannot make {files[key]} integer-only "
                              f"({e}); not exporting") from None
        left_in_float = float_ops(model)
        if left_in_float:
            raise ExportError(f"export.int8_mode={int8_mode}: the converter left {sorted(set(left_in_float))} in "
                              "float32, so the file would not be integer-only; not exporting")
        _write(tmp, files[key], model)
    return files, calibration


def _dynamic_file(saved_model: str, key: str, float_model: bytes, recipe: Recipe,
                  fixed_layers: frozenset[str]) -> bytes:
    """The dynamic-range file of ``key`` (``streaming_int8`` or ``block_int8``); with ``export.weight_bits:
    4``, ``float_model`` (the float file of the same signature) with its trained convs' filters in 4 bits
    (fixed filters stay float)."""
    if recipe.export.weight_bits == 4:
        return int4_filters(float_model, keep=lambda name: _layer_of(name) in fixed_layers)
    return _convert(saved_model, SIGNATURES[key], quantize=True)


def fixed_layer_names(model) -> frozenset[str]:
    """Names of ``model``'s layers with weights that training does not change (fixed filters)."""
    return frozenset(layer.name for layer in model.layers if layer.weights and not layer.trainable)


def _layer_of(tensor_name: str) -> str:
    """The layer a converted tensor belongs to: ``"model_1/envelope_bands_1/conv1d"`` -> ``"envelope_bands"``
    (tracing suffixes ``_1`` to each name)."""
    parts = tensor_name.split("/")
    return re.sub(r"_\d+$", "", parts[1]) if len(parts) > 2 else ""


def _calibration_records(tmp: str, files: dict[str, str], states: tuple[StateTensor, ...], calibration_dir,
                         block_frames: int, frames: int, log) -> tuple[dict[str, list], Int8Calibration]:
    """Calibration data of the integer files: the float streaming and block files' own inputs and states,
    call by call, over the same audio (``frames`` rounded up to whole blocks). Every tensor of the two
    integer files then sees the same values up to float rounding, so both get the same ranges on
    `bwe.integer_conversion`'s grid and compute alike."""
    from bwe.models.seanet import FRAME_INPUT_SAMPLES

    frames = -(-frames // block_frames) * block_frames
    audio, description = calibration_audio(calibration_dir, frames, FRAME_INPUT_SAMPLES)
    log(f"calibrating on {frames} frames ({description})")
    records = {"streaming_int8": [], "block_int8": []}
    for key in records:
        float_key = key.removesuffix("_int8")
        _stream_tflite(os.path.join(tmp, files[float_key]), SIGNATURES[float_key], states, audio, record=records[key])
    return records, Int8Calibration(frames=frames, audio=description)


def _write(folder: str, name: str, content: bytes) -> None:
    with open(os.path.join(folder, name), "wb") as f:
        f.write(content)


def _check_files(tmp: str, files: dict[str, str], offline, states: tuple[StateTensor, ...], block_frames: int,
                 calibration: Int8Calibration | None) -> ExportChecks:
    """Float files against TensorFlow (refusing a broken conversion), int8 SNRs against float, on audio
    calibration did not start with."""
    from bwe.models.seanet import FRAME_INPUT_SAMPLES, OUTPUT_RATE

    check_frames = 40
    check, _ = calibration_audio(None, check_frames, FRAME_INPUT_SAMPLES)
    check = check[::-1].copy()
    reference = np.asarray(offline(check[None, :, None]))[0, :, 0]

    def repeated(frames: int) -> np.ndarray:  # the check audio repeated to ``frames`` frames
        return np.tile(check, frames // check_frames + 1)[: frames * FRAME_INPUT_SAMPLES]

    block_check = repeated(block_frames)
    block_ref = np.asarray(offline(block_check[None, :, None]))[0, :, 0]

    def run(key: str, audio: np.ndarray) -> np.ndarray:  # a call per frame, or one call of the block file
        return _stream_tflite(os.path.join(tmp, files[key]), SIGNATURES[key], states, audio)

    errors = {
        "offline": float(np.max(np.abs(_run_offline_tflite(os.path.join(tmp, files["offline"]), check) - reference))),
        "streaming": float(np.max(np.abs(run("streaming", check) - reference))),
        "block": float(np.max(np.abs(run("block", block_check) - block_ref))),
    }
    for name, error in errors.items():
        if not error <= FLOAT_TOLERANCE:
            raise ExportError(f"{files[name]} differs from the TensorFlow model by {error:.3g} "
                              f"(> {FLOAT_TOLERANCE}): the conversion is broken, not exporting")
    int8_out = run("streaming_int8", check)
    block_int8 = twin_lsb = None
    if "block_int8" in files:
        # Two blocks, so that a state crosses from one block call to the next; the first is block_check.
        two_blocks = repeated(2 * block_frames)
        block_int8 = run("block_int8", two_blocks)
        if calibration is not None:  # integer files: the streaming file against its block (offline) twin
            step = output_step(os.path.join(tmp, files["streaming_int8"]), SIGNATURES["streaming_int8"])
            twin_lsb = float(np.max(np.abs(run("streaming_int8", two_blocks) - block_int8)) / step)
        block_int8 = block_int8[: len(block_ref)]
    return ExportChecks(
        max_abs_error_vs_tensorflow=errors,
        int8_snr_db_vs_float=round(snr_db(reference, int8_out), 2),
        int8_highband_snr_db_vs_float=round(snr_db(highband(reference, OUTPUT_RATE),
                                                   highband(int8_out, OUTPUT_RATE)), 2),
        block_int8_snr_db_vs_float=round(snr_db(block_ref, block_int8), 2) if block_int8 is not None else None,
        int8_block_vs_streaming_lsb=twin_lsb,
        int8_calibration=calibration,
    )


# What metadata.json says in words (constant across exports).
LATENCY_NOTE = ("a frame of 16 ms must be buffered before its output exists, and the output lags the input by "
                "delay_samples: the group delays of the fixed linear-phase filters (the interpolator, the band "
                "split and, with an envelope head, its filter bank) plus the envelope predictor's look-ahead "
                "(lookahead_ms)")
OFFLINE_RUNTIME_NOTE = ("bwe.runtime runs whole files through block.tflite with the states carried between blocks "
                        "(then frame by frame for the remainder): bounded memory, output identical to one-piece "
                        "processing; int8: block_int8.tflite (if present) and streaming_int8.tflite the same way")


def _file_entries(files: dict[str, str], int8_mode: str, weight_bits: int, block_frames: int) -> dict[str, ModelFile]:
    """metadata.json's ``files``: each written file and how to call it."""
    def entry(key: str, **details) -> ModelFile:
        return ModelFile(file=files[key], signature=SIGNATURES[key], **details)

    int8 = {"dtype": "int8", "quantization": INT8_DESCRIPTIONS[int8_mode], "io_dtype": "float32"}
    if weight_bits == 4:
        int8["quantization"] = INT4_DESCRIPTION
    entries = {
        "offline": entry("offline", dtype="float32", input_shape=(1, -1, 1),
                         note="resize the time axis with resize_tensor_input"),
        "streaming": entry("streaming", dtype="float32", frames_per_call=1),
        "streaming_int8": entry("streaming_int8", frames_per_call=1, **int8),
        "block": entry("block", dtype="float32", frames_per_call=block_frames),
    }
    if "block_int8" in files:
        entries["block_int8"] = entry("block_int8", frames_per_call=block_frames, **int8)
    return entries


def _describe(recipe: Recipe, tmp: str, files: dict[str, str], states: tuple[StateTensor, ...], block_frames: int,
              checks: ExportChecks, source: str) -> ModelMetadata:
    """metadata.json's content: everything a runtime needs, and what the export measured."""
    from bwe.models.seanet import (
        FRAME_INPUT_SAMPLES,
        FRAME_OUTPUT_SAMPLES,
        INPUT_RATE,
        OUTPUT_RATE,
        count_params,
        generator_delay_samples,
        macs_per_frame,
    )

    cfg = recipe.model
    delay = generator_delay_samples(cfg)
    frame_ms = 1000.0 * FRAME_INPUT_SAMPLES / INPUT_RATE
    # The order exports have always listed tensor_names in (not that of `files`).
    tensor_name_keys = [key for key in ("streaming", "streaming_int8", "block", "offline", "block_int8") if key in files]
    return ModelMetadata(
        format_version=FORMAT_VERSION,
        bwe_version=__version__,
        input_rate=INPUT_RATE,
        output_rate=OUTPUT_RATE,
        frame_input_samples=FRAME_INPUT_SAMPLES,
        frame_output_samples=FRAME_OUTPUT_SAMPLES,
        frame_ms=frame_ms,
        delay_samples=delay,
        delay_ms=1000.0 * delay / OUTPUT_RATE,
        architectural_latency_ms=frame_ms + 1000.0 * delay / OUTPUT_RATE,
        lookahead_ms=(1000.0 * cfg.envelope_lookahead_frames * cfg.envelope_frame / OUTPUT_RATE
                      if cfg.envelope_bands else 0.0),
        latency_note=LATENCY_NOTE,
        audio_input=AUDIO_NAME,
        audio_output=AUDIO_NAME,
        files=_file_entries(files, recipe.export.int8_mode, recipe.export.weight_bits, block_frames),
        offline_runtime=OFFLINE_RUNTIME_NOTE,
        states=states,
        tensor_names={key: _tensor_names(os.path.join(tmp, files[key]), SIGNATURES[key]) for key in tensor_name_keys},
        highband_gain=recipe.export.highband_gain,
        params=count_params(cfg),
        macs_per_frame=macs_per_frame(cfg),
        causal=cfg.causal,
        checks=checks,
        source=source,
        recipe=recipe_to_dict(recipe),
    )


def _replace_dir(tmp: str, out_dir: str) -> None:
    """Move the finished export into place; an existing OUT_DIR is swapped out, then removed."""
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
        os.rmdir(old)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# ---- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bwe-export",
        description="Export a trained bwe generator to SavedModel + TFLite (offline, streaming float/int8, block).",
        epilog="examples:\n  bwe-export runs/librispeech exported/\n"
               "  bwe-export --recipe recipes/tiny.yaml --random-init /tmp/tiny_export",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="SOURCE OUT_DIR",
                        help="a training run directory or checkpoint prefix, then the output folder "
                             "(with --random-init: only the output folder)")
    parser.add_argument("--recipe", help="recipe YAML (required with --random-init; otherwise the run's recipe.yaml)")
    parser.add_argument("--random-init", action="store_true", help="export an untrained model (tests, timing)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    parser.add_argument("--calibration-dir",
                        help="audio files for int8 calibration with export.int8_mode=full (default: bundled speech)")
    parser.add_argument("--block-frames", type=int, default=DEFAULT_BLOCK_FRAMES,
                        help=f"16 ms frames per call of block.tflite (default {DEFAULT_BLOCK_FRAMES})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. --set export.int8_mode=full")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(f"bwe-export: {msg}", file=sys.stderr))
    try:
        if args.random_init:
            if len(args.paths) != 1:
                parser.error("with --random-init give only OUT_DIR")
            if not args.recipe:
                parser.error("--random-init needs --recipe FILE")
            recipe = load_recipe(args.recipe, args.overrides)
            import keras

            from bwe.models.seanet import build_generator

            keras.utils.set_random_seed(args.seed)
            generator = build_generator(recipe.model, quantization=recipe.quant.spec())
            source = f"random init (seed {args.seed}) from {args.recipe}"
        else:
            if len(args.paths) != 2:
                parser.error("give SOURCE and OUT_DIR (or --recipe FILE --random-init OUT_DIR)")
            generator, recipe, prefix = load_generator(args.paths[0], args.recipe)
            if args.overrides:
                generator, recipe = with_overrides(generator, recipe, args.overrides)
            source = os.path.abspath(prefix)
        export_generator(generator, recipe, args.paths[-1], calibration_dir=args.calibration_dir,
                         block_frames=args.block_frames, source=source, log=log)
    except (ExportError, RecipeError) as e:
        print(f"bwe-export: error: {e}", file=sys.stderr)
        return 2
    return 0


# Model keys that set only fixed filters, so a trained model can be exported with another value.
FIXED_FILTER_KEYS = ("model.split_taps",)


def load_recipe_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """Apply ``key=value`` overrides to an already loaded recipe (only export.* and FIXED_FILTER_KEYS may change)."""
    from bwe.config import recipe_from_dict

    bad = [o for o in overrides
           if not o.strip().startswith("export.") and o.split("=", 1)[0].strip() not in FIXED_FILTER_KEYS]
    if bad:
        raise ExportError(f"only export.* keys and {', '.join(FIXED_FILTER_KEYS)} can be overridden for a trained "
                          f"model, got {bad}")
    return recipe_from_dict(recipe_to_dict(recipe), overrides)


def with_overrides(generator, recipe: Recipe, overrides: list[str]):
    """``(generator, recipe)`` with ``overrides`` applied; a changed fixed filter rebuilds the generator,
    its trained weights copied by layer name."""
    from bwe.models.seanet import build_generator
    from bwe.streaming.convert import copy_weights

    changed = load_recipe_overrides(recipe, overrides)
    if changed.model == recipe.model:
        return generator, dataclasses.replace(recipe, export=changed.export)
    rebuilt = build_generator(changed.model, quantization=changed.quant.spec())
    copy_weights(generator, rebuilt, fixed_filters_from_target=True)
    return rebuilt, dataclasses.replace(recipe, model=changed.model, export=changed.export)


if __name__ == "__main__":
    sys.exit(main())
