"""The envelope head's stateless layers: band levels per frame, log-gains to gains, gains applied.

The head (``bwe.models.seanet``, ``model.envelope_bands``) works at the bottleneck's frame rate: one
frame is ``total_stride`` output samples, which divides every streaming frame, so a layer that only
looks inside one frame gives the same values frame by frame as on the whole signal.
"""

from __future__ import annotations

import keras
import tensorflow as tf

LEVEL_FLOOR = 1e-10  # mean square floor of a silent band (-100 dB), so its level stays finite
LEVEL_CENTRE = -6.0  # bels: a 500 Hz - 1 kHz band of speech at about -26 dBFS
LEVEL_SPREAD = 2.0  # bels: roughly the spread of such band levels over speech and pauses
MAX_LOG_GAIN = 5.0  # natural log: gains between e^-5 and e^5 (-43 .. +43 dB)


@keras.saving.register_keras_serializable(package="bwe")
class FrameLevels(keras.layers.Layer):
    """``[batch, frames * frame, bands] -> [batch, frames, bands]``: log10 of each band's mean square
    over each ``frame`` samples (bels), the time axis a whole number of frames, then centred on
    LEVEL_CENTRE and scaled by 1 / LEVEL_SPREAD so that a conv reading them sees values of about unit
    size (a fixed standardisation: no statistics are gathered)."""

    def __init__(self, frame: int, **kwargs):
        super().__init__(**kwargs)
        if frame < 1:
            raise ValueError(f"FrameLevels '{self.name}': frame must be >= 1, got {frame}")
        self.frame = int(frame)

    def call(self, x):
        shape = tf.shape(x)
        frames = tf.reshape(x, tf.stack([shape[0], shape[1] // self.frame, self.frame, x.shape[-1]]))
        bels = tf.math.log(tf.reduce_mean(tf.square(frames), axis=2) + LEVEL_FLOOR) / tf.math.log(10.0)
        return (bels - LEVEL_CENTRE) / LEVEL_SPREAD

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        return (input_shape[0], None if length is None else length // self.frame, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "frame": self.frame}


@keras.saving.register_keras_serializable(package="bwe")
class LogGainToGain(keras.layers.Layer):
    """``exp`` of a natural-log gain clipped to +-MAX_LOG_GAIN, so an untrained or extreme head can
    neither silence a band for good nor blow it up."""

    def call(self, x):
        return tf.exp(tf.clip_by_value(x, -MAX_LOG_GAIN, MAX_LOG_GAIN))


@keras.saving.register_keras_serializable(package="bwe")
class CrossfadeGains(keras.layers.Layer):
    """``[batch, frames, 2K]`` (each frame's previous and own K gains) -> ``[batch, frames * frame, K]``:
    one gain per sample, moving linearly from the previous frame's gain to the frame's own over its
    first ``crossfade`` samples, then held. The two weights sum to 1 at every sample, so gains never
    step; a short crossfade applies each frame's gain to the frame whose levels it was computed from."""

    def __init__(self, frame: int, crossfade: int, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= crossfade <= frame:
            raise ValueError(f"CrossfadeGains '{self.name}': crossfade must be in [1, frame={frame}], got {crossfade}")
        self.frame = int(frame)
        self.crossfade = int(crossfade)

    def call(self, pairs):
        bands = pairs.shape[-1] // 2
        ramp = tf.minimum(tf.range(1, self.frame + 1, dtype=pairs.dtype) / self.crossfade, 1.0)[:, None]
        previous, current = pairs[:, :, None, :bands], pairs[:, :, None, bands:]
        per_sample = previous * (1.0 - ramp) + current * ramp  # [batch, frames, frame, K]
        shape = tf.shape(pairs)
        return tf.reshape(per_sample, tf.stack([shape[0], shape[1] * self.frame, bands]))

    def compute_output_shape(self, input_shape):
        frames = input_shape[1]
        return (input_shape[0], None if frames is None else frames * self.frame, input_shape[2] // 2)

    def get_config(self):
        return {**super().get_config(), "frame": self.frame, "crossfade": self.crossfade}


@keras.saving.register_keras_serializable(package="bwe")
class ApplyBandGains(keras.layers.Layer):
    """``[bands, gains]`` (both ``[batch, time, bands]``) -> ``[batch, time, 1]``: the bands, each
    scaled sample by sample by its gain, summed back into one signal."""

    def call(self, inputs):
        bands, gains = inputs
        return tf.reduce_sum(bands * gains, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0][:-1] + (1,)
