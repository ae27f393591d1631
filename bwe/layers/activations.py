"""The generator's activation, in a form every integer converter can quantise when asked.

TFLite's quantiser keeps ELU in float32 (int8) or refuses it (16x8), so an integer export would not
be integer. ``ELU(integer_ops=True)`` computes the same function from ops it does quantise,
``max(x, exp(min(x, 0)) - 1)``: exact in float (for x > 0 the second term is 0, for x <= 0 it is
the larger), with the same gradient. (``relu(x) + exp(min(x, 0)) - 1`` is exact too, but loses
almost everything in int8: the ADD's output scale.) Float models keep the single ELU op, which
XNNPACK runs as one kernel.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="bwe")
class ELU(keras.layers.Layer):
    """ELU with alpha 1; ``integer_ops`` picks the quantisable form (see the module docstring)."""

    def __init__(self, integer_ops: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.integer_ops = bool(integer_ops)

    def call(self, x):
        if self.integer_ops:
            return tf.maximum(x, tf.exp(tf.minimum(x, 0.0)) - 1.0)
        return tf.nn.elu(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "integer_ops": self.integer_ops}
