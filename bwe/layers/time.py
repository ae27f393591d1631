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
        length = tf.shape(x)[1]
        pad = (-length) % self.multiple
        return tf.pad(x, [[0, 0], [0, pad], [0, 0]])

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
