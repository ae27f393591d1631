"""Fake quantisation for quantisation-aware training (QAT): what the network trains on is the integer
arithmetic an integer TFLite file serves.

- **Weights**: symmetric, one scale per output channel, ``scale = max|w| / (2^(bits-1) - 1)`` over the
  channel's other axes, the integer range narrow (``[-127, 127]`` at 8 bits), as TFLite's per-channel
  int8 convolutions store them. 4 to 8 bits. A transposed conv computes as a direct conv whose output
  channels are the phases of each filter (`bwe.layers.conv`), and is quantised in that form: one scale
  per phase of a filter, the kernel its converted file stores.
- **Activations** (a conv's input, and so its streaming state, its past input): one range per tensor,
  tracked during training as an exponential moving average of each batch's minimum and maximum and
  fixed outside training. 8 bits are asymmetric ``[low, high]`` (int8 with a zero
  point, TFLite's int8 activations); 16 bits are symmetric ``±max(|low|, |high|)`` (TFLite's 16x8
  mode stores int16 activations without a zero point). 0 leaves them float: a dynamic-range file
  quantises each call's activations from their own range, which no fixed range simulates.
- **Gradients**: the straight-through estimator, ``d(fake_quant(x))/dx = 1`` inside the range and 0
  outside (a clipped value does not move with its input). Weight ranges follow the weights and carry
  no gradient; activation ranges are statistics, not trained.

Both use TensorFlow's FakeQuant ops. The TFLite converter cannot yet convert them on a conv1d's kernel
(docs/experiments/integer-models.md), so exports convert a QAT model's float twin, whose integer file
rounds the kernels the same way. Rounding is TensorFlow's: ``floor(v / scale + 0.5)`` in the shifted
integer domain. TensorFlow is imported where it is used, so that recipes can check a ``quant:`` section
without it.
"""

from __future__ import annotations

import dataclasses
import typing

if typing.TYPE_CHECKING:
    import tensorflow as tf

WEIGHT_BITS = (4, 5, 6, 7, 8)
ACTIVATION_BITS = (0, 8, 16)  # 0: float activations (weights only, as dynamic-range files compute)


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """How a layer fake-quantises: its weights' bits, its input's bits and the input range's averaging."""

    weight_bits: int = 8
    activation_bits: int = 8
    range_momentum: float = 0.99  # per training call: range <- m * range + (1 - m) * batch range

    def __post_init__(self) -> None:
        if self.weight_bits not in WEIGHT_BITS:
            raise ValueError(f"weight_bits: must be one of {WEIGHT_BITS}, got {self.weight_bits!r}")
        if self.activation_bits not in ACTIVATION_BITS:
            raise ValueError(f"activation_bits: must be one of {ACTIVATION_BITS}, got {self.activation_bits!r}")
        if not 0 <= self.range_momentum < 1:
            raise ValueError(f"range_momentum: must be in [0, 1), got {self.range_momentum!r}")


def max_level(bits: int) -> int:
    """The largest integer of a narrow symmetric range: 127 at 8 bits, 7 at 4."""
    return 2 ** (bits - 1) - 1


def fake_quant_weights(kernel: tf.Tensor, bits: int, channel_axis: int) -> tf.Tensor:
    """``kernel`` rounded to ``bits``-bit integers with one symmetric scale per index of ``channel_axis``."""
    import tensorflow as tf

    rank = len(kernel.shape)
    axis = channel_axis % rank
    order = [a for a in range(rank) if a != axis] + [axis]  # the per-channel op wants channels last
    moved = tf.transpose(kernel, order)
    limit = tf.stop_gradient(tf.reduce_max(tf.abs(moved), axis=list(range(rank - 1))))
    limit = tf.maximum(limit, 1e-12)  # an all-zero channel: any scale gives zeros
    quantised = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        moved, -limit, limit, num_bits=bits, narrow_range=True)
    return tf.transpose(quantised, tf.math.invert_permutation(order))


def split_for_int8(kernel: tf.Tensor, channel_axis: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``kernel`` as ``(coarse, fine)``, their sum exactly ``kernel``: ``coarse`` on the per-channel int8
    grid an integer converter rounds to (so it converts exactly), ``fine`` the rounding error. Computed
    as two convs, the converter gives ``fine`` its own scale, 1/254 of ``coarse``'s: the sum keeps about
    15 bits of each coefficient, so a fixed filter keeps its stop band (int8 alone: about -45 dB). The
    grid is `fake_quant_weights`'s, rounded with plain ops: the converter reads FakeQuant ops as
    quantisation annotations, which it cannot convert on a conv1d's kernel."""
    import tensorflow as tf

    rank = len(kernel.shape)
    others = [a for a in range(rank) if a != channel_axis % rank]
    limit = tf.reduce_max(tf.abs(kernel), axis=others, keepdims=True)
    scale = tf.maximum(limit, 1e-12) / max_level(8)
    coarse = tf.round(kernel / scale) * scale
    return coarse, kernel - coarse


def activation_limits(value_range: tf.Tensor, bits: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The ``(low, high)`` a tracked ``[low, high]`` quantises with: as is (widened to hold 0) at 8 bits,
    symmetric at 16."""
    import tensorflow as tf

    low = tf.minimum(value_range[0], 0.0)
    high = tf.maximum(value_range[1], 0.0)
    if bits == 16:
        high = tf.maximum(-low, high)
        low = -high
    high = tf.maximum(high, low + 1e-6)  # an all-zero tensor still needs a scale
    return low, high


def fake_quant_activations(x: tf.Tensor, value_range: tf.Tensor, bits: int) -> tf.Tensor:
    """``x`` rounded to ``bits``-bit integers over the tracked ``[low, high]`` (`activation_limits`)."""
    import tensorflow as tf

    low, high = activation_limits(tf.stop_gradient(value_range), bits)
    return tf.quantization.fake_quant_with_min_max_vars(x, low, high, num_bits=bits, narrow_range=bits == 16)


def tracked_range(value_range: tf.Variable, x: tf.Tensor, momentum: float) -> tf.Tensor:
    """Move ``value_range`` (``[low, high]``; ``[0, 0]`` = nothing seen yet) towards ``x``'s minimum and
    maximum and return the updated range. The first batch sets it outright."""
    import tensorflow as tf

    batch = tf.stack([tf.reduce_min(x), tf.reduce_max(x)])
    unseen = tf.equal(value_range[0], value_range[1])
    updated = tf.where(unseen, batch, momentum * value_range + (1.0 - momentum) * batch)
    value_range.assign(updated)
    return updated
