"""Time-axis bookkeeping layers for whole-signal (non-streaming) models.

A strided encoder/decoder only maps a length that is a multiple of its total stride back to the
same length. Offline models pad the end of the signal with zeros up to that multiple and crop the
output back; for a causal model the padding cannot change any earlier output sample. Streaming
models need neither: their frame length is checked to be a multiple at build time.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bwe.layers.modes import Modes


@keras.saving.register_keras_serializable(package="bwe")
class PadTimeToMultiple(keras.layers.Layer):
    """Zero-pad the end of ``[batch, time, channels]`` so that time is a multiple of ``multiple``."""

    def __init__(self, multiple: int, mode: Modes | str = Modes.TRAINING, **kwargs):
        super().__init__(**kwargs)
        if multiple < 1:
            raise ValueError(f"PadTimeToMultiple '{self.name}': multiple must be >= 1, got {multiple}")
        self.multiple = int(multiple)
        self.mode = Modes.parse(mode)
        if self.mode.is_streaming:
            raise ValueError(
                f"PadTimeToMultiple '{self.name}': padding the end of the signal needs the whole signal; "
                "streaming models use a frame length that is already a multiple of the total stride.")

    def call(self, x):
        shape = tf.shape(x)
        pad = (-shape[1]) % self.multiple
        # Concatenating zeros (rather than tf.pad with computed paddings) keeps the static channel
        # count, which the TFLite converter needs for the convolutions that follow.
        zeros = tf.zeros(tf.stack([shape[0], pad, shape[2]]), dtype=x.dtype)
        return tf.concat([x, zeros], axis=1)

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        if length is not None:
            length = -(-length // self.multiple) * self.multiple
        return (input_shape[0], length, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple, "mode": self.mode.value}


@keras.saving.register_keras_serializable(package="bwe")
class CropTimeToReference(keras.layers.Layer):
    """``[x, reference] -> x[:, :reference_time]``: undo `PadTimeToMultiple`."""

    def __init__(self, mode: Modes | str = Modes.TRAINING, **kwargs):
        super().__init__(**kwargs)
        self.mode = Modes.parse(mode)

    def call(self, inputs):
        x, reference = inputs
        return x[:, : tf.shape(reference)[1]]

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], x_shape[2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode.value}


@keras.saving.register_keras_serializable(package="bwe")
class AddSignals(keras.layers.Layer):
    """Element-wise sum of equally shaped ``[batch, time, channels]`` tensors.

    Used instead of ``keras.layers.Add``: Keras 3 rewrites an add whose second operand has a single
    non-unit axis (e.g. a one-channel signal ``[1, T, 1]``) into ``BiasAdd``, which the TFLite
    converter then fails to lower.
    """

    def call(self, inputs):
        total = inputs[0]
        for x in inputs[1:]:
            total = tf.add(total, x)
        return total

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]
