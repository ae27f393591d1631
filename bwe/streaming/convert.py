"""Turn a trained generator into an inference or streaming model (the kws_streaming recipe).

Conversion = check that every layer can stream -> rebuild the same functional graph in the target
mode on a fixed one-frame input -> copy the weights layer by layer, by name, folding weight
normalisation into plain kernels. Nothing is traced or rewritten: the streaming model is the model
definition itself, built in another mode, so there is one definition to get right.
"""

from __future__ import annotations

import keras
import numpy as np

from bwe.config import ModelConfig
from bwe.layers.activations import ELU
from bwe.layers.conv import STREAMING_CONV_LAYERS
from bwe.layers.envelope import (
    ApplyBandGains,
    CrossfadeGains,
    FrameLevels,
    LevelRatioGains,
    LogPowerSpectrum,
    ShiftByLevel,
    SpectrumLevel,
)
from bwe.layers.modes import Modes
from bwe.layers.time import AddSignals, CropTimeToReference, PadTimeToMultiple

# Layers that act on each time step independently, so they stream without state.
_POINTWISE_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.ELU,
    ELU,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.Activation,
    keras.layers.Dense,
    keras.layers.Identity,
    AddSignals,
    LevelRatioGains,
    LogPowerSpectrum,
    SpectrumLevel,
    ShiftByLevel,
    ApplyBandGains,
    # Read or write only inside one frame of the bottleneck's stride, which divides every streaming frame.
    FrameLevels,
    CrossfadeGains,
)
# Whole-signal padding/cropping that the builder leaves out of streaming graphs.
_OFFLINE_ONLY_LAYERS = (PadTimeToMultiple, CropTimeToReference)


class NotStreamableError(ValueError):
    """The model contains a layer that has no exact frame-by-frame equivalent."""


def check_streamable(model: keras.Model) -> None:
    """Raise NotStreamableError naming the first layer that cannot stream, and why."""
    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, STREAMING_CONV_LAYERS):
            if not layer.causal:
                raise NotStreamableError(
                    f"layer '{layer.name}' ({kind}) is centred: it needs future samples a stream does not have. "
                    "Train a causal model (model.causal: true) to stream.")
            continue
        if isinstance(layer, _POINTWISE_LAYERS + _OFFLINE_ONLY_LAYERS):
            continue
        if isinstance(layer, keras.layers.Concatenate):
            if layer.axis in (-1, 2):  # along channels: sample by sample, like Add
                continue
            raise NotStreamableError(
                f"layer '{layer.name}' (Concatenate, axis={layer.axis}) joins along time or batch; a stream only has "
                "the current frame. Only channel concatenation (axis -1) can stream.")
        if isinstance(layer, (keras.layers.LayerNormalization, keras.layers.GroupNormalization,
                              keras.layers.BatchNormalization, keras.layers.UnitNormalization)):
            raise NotStreamableError(
                f"layer '{layer.name}' ({kind}) normalises with statistics that may span the time axis; a stream "
                "only sees one frame, so frame-by-frame output would differ from the whole-signal output.")
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv1DTranspose)):
            raise NotStreamableError(
                f"layer '{layer.name}' is a plain keras {kind} (padding={getattr(layer, 'padding', '?')!r}): it keeps "
                "no state between frames. Use bwe.layers.conv.CausalConv1D / CausalConv1DTranspose.")
        raise NotStreamableError(
            f"layer '{layer.name}' ({kind}) is not known to be streamable; only bwe.layers convolutions and "
            "pointwise layers can be converted.")


def _weighted_layers(model: keras.Model, convs: bool) -> dict:
    return {layer.name: layer for layer in model.layers
            if isinstance(layer, STREAMING_CONV_LAYERS) == convs and (convs or layer.weights)}


def _same_shapes(a: keras.layers.Layer, b: keras.layers.Layer) -> bool:
    return [tuple(w.shape) for w in a.weights] == [tuple(w.shape) for w in b.weights]


def copy_weights(source: keras.Model, target: keras.Model, *, fixed_filters_from_target: bool = False,
                 new_layers: tuple[str, ...] = ()) -> None:
    """Copy every weighted layer's weights from ``source`` to ``target`` by layer name.

    Streaming convs fold (or re-split) weight normalisation as each needs; other layers (the envelope
    head's switch) are copied as they are. Both models must contain the same set of weighted layers,
    but for ``new_layers``, which the target may have and the source lack (they keep their initial
    weights); a missing or extra one is an error, never silently random weights. With
    ``fixed_filters_from_target``, a fixed (non-trainable) conv of another length than the source's
    keeps the target's own kernel: its values follow from the target's recipe (e.g. ``model.split_taps``).
    """
    for convs in (True, False):
        src, dst = _weighted_layers(source, convs), _weighted_layers(target, convs)
        dst = {name: layer for name, layer in dst.items() if name in src or name not in new_layers}
        if set(src) != set(dst):
            missing = sorted(set(dst) - set(src))
            extra = sorted(set(src) - set(dst))
            raise ValueError(f"models differ in layers: missing in source {missing}, not in target {extra}")
        for name, layer in dst.items():
            if convs and fixed_filters_from_target and not layer.trainable and not _same_shapes(src[name], layer):
                continue
            if convs:
                layer.set_plain_weights(src[name].plain_weights())
            else:
                layer.set_weights(src[name].get_weights())


def to_streaming(
    model: keras.Model,
    mode: Modes | str = Modes.STREAM_EXTERNAL_STATE_INFERENCE,
    *,
    frames_per_call: int = 1,
    batch_size: int = 1,
    integer_ops: bool = False,
    quantized: bool = True,
) -> keras.Model:
    """Rebuild a generator (from `bwe.models.seanet.build_generator`) in ``mode`` with its weights.

    Args:
      model: a generator built by ``build_generator`` in any mode (usually TRAINING).
      mode: a streaming mode, or NON_STREAM_INFERENCE for the whole-signal model with folded weights.
      frames_per_call: streaming frame length in 16 ms frames (128 input samples each); e.g. 64 gives
        a one-second block model whose output is identical to 64 one-frame calls.
      batch_size: independent streams processed side by side (streaming modes).
      integer_ops: activations in the form integer TFLite conversion quantises (`build_generator`).
      quantized: keep a QAT model's fake quantisation (False: its float twin, the same weights in float).

    Returns:
      The rebuilt keras.Model (see ``build_generator`` for its inputs and outputs).
    """
    from bwe.models.seanet import FRAME_INPUT_SAMPLES, build_generator

    mode = Modes.parse(mode)
    cfg = getattr(model, "bwe_model_config", None)
    if not isinstance(cfg, ModelConfig):
        raise ValueError("to_streaming: the model was not built by bwe.models.seanet.build_generator "
                         "(no bwe_model_config); rebuild it with build_generator and load its weights")
    quantization = getattr(model, "bwe_quantization", None) if quantized else None
    if mode.is_streaming:
        check_streamable(model)
        if frames_per_call < 1:
            raise ValueError(f"to_streaming: frames_per_call must be >= 1, got {frames_per_call}")
        target = build_generator(cfg, mode, input_samples=FRAME_INPUT_SAMPLES * frames_per_call,
                                 batch_size=batch_size, integer_ops=integer_ops, quantization=quantization)
    elif mode is Modes.NON_STREAM_INFERENCE:
        target = build_generator(cfg, mode, integer_ops=integer_ops, quantization=quantization)
    else:
        raise ValueError(f"to_streaming: cannot convert to {mode.value}; build the training model directly")
    copy_weights(model, target)
    return target


def zero_states(model: keras.Model) -> list[np.ndarray]:
    """Initial (all-zero) states for an external-state model, in its input order."""
    return [np.zeros(tuple(t.shape), dtype="float32") for t in model.inputs[1:]]
