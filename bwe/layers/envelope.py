"""The envelope head's stateless layers: log spectrum, band levels per frame, level-ratio gains,
gains applied.

The head (``bwe.models.seanet``, ``model.envelope_bands``) works at its own frame rate: one frame is
``model.envelope_frame`` output samples, which divides every streaming frame, so a layer that only
looks inside one frame gives the same values frame by frame as on the whole signal.

The level layers take ``integer_ops`` (as `bwe.layers.activations.ELU`): the same levels computed in
the log domain, ``ln mean(x^2) = m + ln mean(exp(2 ln|x| - m))`` with ``m`` the largest ``2 ln|x|``,
so that no tensor holds a power. A power spans twice the decibels of its amplitude: speech's 60-80 dB
of band and bin powers do not fit the ~45 dB of power that an int16 tensor resolves, while every
tensor of the log-domain form spans a few nats or lies in [0, 1] (docs/experiments/integer-models.md).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

LEVEL_FLOOR = 1e-10  # mean square floor of a silent band (-100 dB), so its level stays finite
LEVEL_CENTRE = -6.0  # bels: a 500 Hz - 1 kHz band of speech at about -26 dBFS
LEVEL_SPREAD = 2.0  # bels: roughly the spread of such band levels over speech and pauses
MAX_LOG_GAIN = 6.0  # natural log: gains between e^-6 and e^6 (-52 .. +52 dB)
EXACT_LOG_GAIN = 4.0  # log-gains up to this size (35 dB) are applied exactly; beyond, they bend towards the max
AMPLITUDE_FLOOR = 1e-20  # keeps ln|x| finite at 0 in the log-domain form; its square is far below LEVEL_FLOOR
AMPLITUDE_RANGES = (2.0**-5, 2.0**-10, 2.0**-15)  # where `_log` splits ln|x|: 30 dB apart
MEAN_RANGES = (2.0**-4,)  # and ln of a mean of terms in [0, 1], the largest 1: at least 1 / terms
BELS_TO_LOG_AMPLITUDE = 0.5 * 2.302585092994046  # ln(10) / 2: a level ratio in bels as a natural-log gain


@keras.saving.register_keras_serializable(package="bwe")
class FrameLevels(keras.layers.Layer):
    """``[batch, frames * frame, bands] -> [batch, frames, bands]``: log10 of each band's mean square
    over each ``frame`` samples (bels), the time axis a whole number of frames, then centred on
    LEVEL_CENTRE and scaled by 1 / LEVEL_SPREAD so that a conv reading them sees values of about unit
    size (a fixed standardisation: no statistics are gathered)."""

    def __init__(self, frame: int, integer_ops: bool = False, **kwargs):
        super().__init__(**kwargs)
        if frame < 1:
            raise ValueError(f"FrameLevels '{self.name}': frame must be >= 1, got {frame}")
        self.frame = int(frame)
        self.integer_ops = bool(integer_ops)

    def call(self, x):
        shape = tf.shape(x)
        frames = tf.reshape(x, tf.stack([shape[0], shape[1] // self.frame, self.frame, x.shape[-1]]))
        if self.integer_ops:
            return standardised_bels_of_log(_log_mean_exp(_log_square(frames), axis=2))
        return standardised_bels(tf.reduce_mean(frames * frames, axis=2))

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        return (input_shape[0], None if length is None else length // self.frame, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "frame": self.frame, "integer_ops": self.integer_ops}


def standardised_bels(mean_square):
    """log10 of a mean square (floored at LEVEL_FLOOR), centred on LEVEL_CENTRE, scaled by 1 / LEVEL_SPREAD."""
    bels = tf.math.log(mean_square + LEVEL_FLOOR) / tf.math.log(10.0)
    return (bels - LEVEL_CENTRE) / LEVEL_SPREAD


def standardised_bels_of_log(log_mean_square):
    """`standardised_bels` of ``exp(log_mean_square)``, its floor added in the log domain."""
    floored = _log_add_exp(log_mean_square, math.log(LEVEL_FLOOR))
    return (floored / math.log(10.0) - LEVEL_CENTRE) / LEVEL_SPREAD


def _log(v, thresholds):
    """``ln v`` (``v > 0``) as a sum of logs of ``v`` clipped to the ranges between ``thresholds``
    (descending) and their ends: ``ln max(v, t1) + sum_i [ln clip(v, t_{i+1}, t_i) - ln t_i]`` (the last
    lower end 0) is ``ln v`` wherever ``v`` lies. An integer LOG reads a lookup table spaced evenly over
    its input's range, which is coarse for inputs far below the range's top; each part's input spans
    one range of about 30 dB."""
    total = tf.math.log(tf.maximum(v, thresholds[0]))
    for top, bottom in zip(thresholds, [*thresholds[1:], 0.0]):
        total = total + (tf.math.log(tf.clip_by_value(v, bottom, top)) - math.log(top))
    return total


def _log_square(x):
    """``ln x^2``, finite at 0 (AMPLITUDE_FLOOR), for amplitudes up to about 1 (audio, band signals, DFT
    bins normalised by the window's sum)."""
    return 2.0 * _log(tf.abs(x) + AMPLITUDE_FLOOR, AMPLITUDE_RANGES)


def _log_add_exp(a, b):
    """``ln(e^a + e^b)`` with no tensor beyond ``max(a, b)``: the larger plus ``ln(1 + e^-|a - b|)``
    (the minimum of the two differences: integer conversion takes no NEG)."""
    return tf.maximum(a, b) + tf.math.log(1.0 + tf.exp(tf.minimum(a - b, b - a)))


def _log_mean_exp(v, axis: int):
    """``ln mean(e^v)`` over ``axis`` (dropped), each term scaled by the largest so that it lies in [0, 1]."""
    top = tf.reduce_max(v, axis=axis, keepdims=True)
    return tf.squeeze(top, axis) + _log(tf.reduce_mean(tf.exp(v - top), axis=axis), MEAN_RANGES)


def _log_power(x):
    """`_power` in the log domain: ``ln(re^2 + im^2)`` of each bin."""
    bins = x.shape[-1] // 2
    return _log_add_exp(_log_square(x[..., :bins]), _log_square(x[..., bins:]))


def _power(x):
    """Each bin's power from ``[..., 2 * bins]`` (real parts, then imaginary parts). Products rather than
    tf.square, which integer TFLite conversion leaves in float."""
    bins = x.shape[-1] // 2
    real, imaginary = x[..., :bins], x[..., bins:]
    return real * real + imaginary * imaginary


@keras.saving.register_keras_serializable(package="bwe")
class LogPowerSpectrum(keras.layers.Layer):
    """``[batch, frames, 2 * bins]`` (real parts, then imaginary parts, of a DFT per frame) ->
    ``[batch, frames, bins]``: each bin's power as standardised bels (`standardised_bels`)."""

    def __init__(self, integer_ops: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.integer_ops = bool(integer_ops)

    def call(self, x):
        if self.integer_ops:
            return standardised_bels_of_log(_log_power(x))
        return standardised_bels(_power(x))

    def get_config(self):
        return {**super().get_config(), "integer_ops": self.integer_ops}

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (input_shape[-1] // 2,)


@keras.saving.register_keras_serializable(package="bwe")
class SpectrumLevel(keras.layers.Layer):
    """``[batch, frames, 2 * bins]`` (a DFT per frame, as `LogPowerSpectrum` takes it) ->
    ``[batch, frames, 1]``: the frame's mean power over its bins, in standardised bels."""

    def __init__(self, integer_ops: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.integer_ops = bool(integer_ops)

    def call(self, x):
        if self.integer_ops:
            return standardised_bels_of_log(_log_mean_exp(_log_power(x), axis=-1)[..., None])
        return standardised_bels(tf.reduce_mean(_power(x), axis=-1, keepdims=True))

    def get_config(self):
        return {**super().get_config(), "integer_ops": self.integer_ops}

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (1,)


@keras.saving.register_keras_serializable(package="bwe")
class ShiftByLevel(keras.layers.Layer):
    """``[levels, level]`` (``[batch, frames, K]`` and ``[batch, frames, 1]``, standardised bels) ->
    ``levels + sign * level``: levels made relative to a frame's own level (sign -1) and back (+1).
    Differences of standardised bels are level ratios, so the centring cancels."""

    def __init__(self, sign: float, **kwargs):
        super().__init__(**kwargs)
        if sign not in (-1.0, 1.0):
            raise ValueError(f"ShiftByLevel '{self.name}': sign must be -1 or +1, got {sign}")
        self.sign = float(sign)

    def call(self, inputs):
        levels, level = inputs
        return levels + self.sign * level

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "sign": self.sign}


def soft_limit(x, exact, limit):
    """``x`` where ``|x| <= exact``; beyond, ``exact + (limit - exact) tanh((|x| - exact) / (limit - exact))``
    with x's sign: continuous with slope 1 at ``exact``, never reaching ``limit``. Written as the clipped
    part plus the bent excess (tanh is odd), from ops that integer TFLite conversion quantises."""
    core = tf.clip_by_value(x, -exact, exact)
    return core + (limit - exact) * tf.tanh((x - core) / (limit - exact))


@keras.saving.register_keras_serializable(package="bwe")
class LevelRatioGains(keras.layers.Layer):
    """``[predicted, measured]`` band levels (both ``[batch, frames, K]``, standardised bels) -> the
    gains ``[batch, frames, K]`` that bring each measured band to its predicted level. The log-gain
    is exact up to +-EXACT_LOG_GAIN and bends smoothly (tanh) towards +-MAX_LOG_GAIN beyond, so that
    a silent band is not blown up and a band out of reach still passes a gradient back.

    ``active`` (a non-trainable 0/1 weight) multiplies the log-gain: 0 makes the head the identity
    (every gain 1) until its training phase switches it on (`bwe.models.seanet.activate_envelope_head`).
    The first ``gated_bands`` bands' gains are 0 instead until then: bands the head adds, not splits.
    """

    def __init__(self, gated_bands: int = 0, **kwargs):
        super().__init__(**kwargs)
        if gated_bands < 0:
            raise ValueError(f"LevelRatioGains '{self.name}': gated_bands must be >= 0, got {gated_bands}")
        self.gated_bands = int(gated_bands)

    def build(self, input_shape):
        self.active = self.add_weight(name="active", shape=(), initializer="zeros", trainable=False)

    def call(self, inputs):
        predicted, measured = inputs
        log_gain = BELS_TO_LOG_AMPLITUDE * LEVEL_SPREAD * (predicted - measured)
        gains = tf.exp(self.active * soft_limit(log_gain, EXACT_LOG_GAIN, MAX_LOG_GAIN))
        if not self.gated_bands:
            return gains
        return tf.concat([self.active * gains[..., :self.gated_bands], gains[..., self.gated_bands:]], axis=-1)

    def get_config(self):
        return {**super().get_config(), "gated_bands": self.gated_bands}

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


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
