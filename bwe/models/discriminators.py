"""GAN discriminators for 16 kHz speech: a multi-scale STFT discriminator and a multi-scale waveform one.

Every sub-discriminator maps a waveform ``[batch, time, 1]`` to ``(logits, feature_maps)``: ``logits`` is a
tensor of per-patch scores (no sigmoid: the losses in `bwe.losses` work on raw scores) and
``feature_maps`` the list of hidden activations that feature matching compares. The ensemble returns
one such pair per sub-discriminator, in a fixed order, with a stable name for each (for logging).

- `STFTDiscriminator` follows EnCodec's ``DiscriminatorSTFT`` (``msstftd.py``): the complex STFT as
  real/imaginary channels of a ``[batch, frames, bins, 2]`` image, then 2-D convs with stride 2 over
  frequency and growing dilation over time. One per FFT size.
- `WaveformDiscriminator` follows MelGAN's ``NLayerDiscriminator``: a kernel-15 conv, grouped strided
  convs whose channels grow by the stride up to a maximum, LeakyReLU(0.2). One per scale: the signal,
  then repeatedly average-pooled by 2.

Weight normalisation (used by both papers) is left out: the discriminators train without it here and it
keeps them plain Keras layers. Nothing here must be causal or streamable; discriminators only train.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from bwe.config import DiscriminatorConfig

LEAKY_SLOPE = 0.2


def complex_stft_image(waveform: tf.Tensor, fft_size: int, hop: int) -> tf.Tensor:
    """``[batch, time, 1]`` -> ``[batch, frames, fft_size // 2 + 1, 2]`` (real, imaginary).

    Periodic Hann window, no centring (frames start at sample 0, like EnCodec's ``center=False``),
    scaled by 1 / sqrt(sum(window^2)) as torchaudio's ``normalized=True`` does so that the input scale
    does not depend on the FFT size.
    """
    signal = waveform[..., 0]
    window_norm = math.sqrt(fft_size * 3.0 / 8.0)  # sum of a periodic Hann window squared = 3N/8
    spec = tf.signal.stft(signal, frame_length=fft_size, frame_step=hop, fft_length=fft_size,
                          window_fn=tf.signal.hann_window, pad_end=False)
    spec = spec / window_norm
    return tf.stack([tf.math.real(spec), tf.math.imag(spec)], axis=-1)


class STFTDiscriminator(keras.layers.Layer):
    """EnCodec-style discriminator on one STFT resolution. Input ``[batch, time, 1]``, needs time >= fft_size."""

    def __init__(self, fft_size: int, hop: int, channels: int = 32, dilations=(1, 2, 4), **kwargs):
        super().__init__(**kwargs)
        self.fft_size = int(fft_size)
        self.hop = int(hop)
        self.channels = int(channels)
        self.dilations = tuple(int(d) for d in dilations)
        self.conv_pre = keras.layers.Conv2D(self.channels, (3, 9), padding="same", name="conv_pre")
        # Stride 2 over frequency, dilation d over time. Keras refuses both in one conv, so the dilation is
        # done the way atrous convolution is implemented: the d interleaved time sub-sequences become batch
        # entries and get an undilated conv (see `_time_dilated`).
        self.convs_dilated = [
            keras.layers.Conv2D(self.channels, (3, 9), strides=(1, 2), padding="same", name=f"conv_dilated_{i}")
            for i in range(len(self.dilations))
        ]
        self.conv_last = keras.layers.Conv2D(self.channels, (3, 3), padding="same", name="conv_last")
        self.conv_post = keras.layers.Conv2D(1, (3, 3), padding="same", name="conv_post")

    @staticmethod
    def _time_dilated(conv, x, dilation: int):
        """``conv`` (kernel 3 over time, "same") applied with time dilation ``dilation`` to ``[batch, time, bins, ch]``.

        Output frame t = q*d + r only sees frames r, r + d, ... so each residue r is an ordinary sequence;
        zero-padding time to a multiple of d adds exactly the zeros "same" padding would see.
        """
        if dilation == 1:
            return conv(x)
        frames = tf.shape(x)[1]
        padded = -(-frames // dilation) * dilation
        x = tf.pad(x, [[0, 0], [0, padded - frames], [0, 0], [0, 0]])
        batch, bins, ch = tf.shape(x)[0], x.shape[2], x.shape[3]
        x = tf.reshape(x, [batch, padded // dilation, dilation, bins, ch])
        x = tf.reshape(tf.transpose(x, [0, 2, 1, 3, 4]), [batch * dilation, padded // dilation, bins, ch])
        y = conv(x)
        out_bins, out_ch = y.shape[2], y.shape[3]
        y = tf.reshape(y, [batch, dilation, padded // dilation, out_bins, out_ch])
        y = tf.reshape(tf.transpose(y, [0, 2, 1, 3, 4]), [batch, padded, out_bins, out_ch])
        return y[:, :frames]

    def call(self, waveform):
        x = complex_stft_image(waveform, self.fft_size, self.hop)
        x = tf.nn.leaky_relu(self.conv_pre(x), LEAKY_SLOPE)
        feature_maps = [x]
        for conv, dilation in zip(self.convs_dilated, self.dilations):
            x = tf.nn.leaky_relu(self._time_dilated(conv, x, dilation), LEAKY_SLOPE)
            feature_maps.append(x)
        x = tf.nn.leaky_relu(self.conv_last(x), LEAKY_SLOPE)
        feature_maps.append(x)
        return self.conv_post(x), feature_maps

    def get_config(self):
        return {**super().get_config(), "fft_size": self.fft_size, "hop": self.hop, "channels": self.channels,
                "dilations": list(self.dilations)}


class GroupedConv1D(keras.layers.Conv1D):
    """`keras.layers.Conv1D` whose grouped convolution runs as TensorFlow's native grouped conv.

    Keras 3 routes grouped convolutions on CPU through an XLA-compiled function, which makes a MelGAN
    discriminator step take tens of seconds on a CPU; ``tf.nn.conv1d`` handles groups natively (CPU and
    GPU) with identical results (tested against a per-group convolution).
    """

    def call(self, inputs):
        if self.padding not in ("valid", "same"):
            raise ValueError(f"{self.name}: padding {self.padding!r} is not supported; pad the input instead")
        outputs = tf.nn.conv1d(inputs, self.kernel, stride=self.strides[0], padding=self.padding.upper(),
                               dilations=self.dilation_rate[0])
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)


def _groups(in_channels: int, out_channels: int, groups_divisor: int) -> int:
    """MelGAN's ``groups = in_channels // 4``, reduced to a divisor of both channel counts."""
    wanted = max(1, in_channels // groups_divisor)
    return math.gcd(math.gcd(in_channels, out_channels), wanted)


class WaveformDiscriminator(keras.layers.Layer):
    """MelGAN ``NLayerDiscriminator`` on one time scale. Input ``[batch, time, 1]``."""

    def __init__(self, channels: int = 16, max_channels: int = 1024, strides=(4, 4, 4, 4), groups_divisor: int = 4,
                 **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.max_channels = int(max_channels)
        self.strides = tuple(int(s) for s in strides)
        self.groups_divisor = int(groups_divisor)
        # (padding, mode) before each conv: MelGAN reflect-pads the first conv and zero-pads the rest.
        self.convs = [keras.layers.Conv1D(self.channels, 15, name="conv_pre")]
        self.paddings = [(7, "REFLECT")]
        in_ch = self.channels
        for i, stride in enumerate(self.strides):
            out_ch = min(in_ch * stride, self.max_channels)
            conv = GroupedConv1D(out_ch, stride * 10 + 1, strides=stride,
                                       groups=_groups(in_ch, out_ch, self.groups_divisor), name=f"conv_strided_{i}")
            self.convs.append(conv)
            self.paddings.append((stride * 5, "CONSTANT"))
            in_ch = out_ch
        out_ch = min(in_ch * 2, self.max_channels)
        self.convs.append(keras.layers.Conv1D(out_ch, 5, name="conv_last"))
        self.paddings.append((2, "CONSTANT"))
        self.conv_post = keras.layers.Conv1D(1, 3, name="conv_post")

    def call(self, waveform):
        x = waveform
        feature_maps = []
        for conv, (pad, pad_mode) in zip(self.convs, self.paddings):
            x = conv(tf.pad(x, [[0, 0], [pad, pad], [0, 0]], mode=pad_mode))
            x = tf.nn.leaky_relu(x, LEAKY_SLOPE)
            feature_maps.append(x)
        logits = self.conv_post(tf.pad(x, [[0, 0], [1, 1], [0, 0]]))
        return logits, feature_maps

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "max_channels": self.max_channels,
                "strides": list(self.strides), "groups_divisor": self.groups_divisor}


def downsample_by_two(waveform: tf.Tensor) -> tf.Tensor:
    """MelGAN's ``AvgPool1d(4, stride=2, padding=1, count_include_pad=False)`` on ``[batch, time, channels]``."""
    padded = tf.pad(waveform, [[0, 0], [1, 1], [0, 0]])
    ones = tf.pad(tf.ones_like(waveform[:1, :, :1]), [[0, 0], [1, 1], [0, 0]])
    total = tf.nn.avg_pool1d(padded, 4, 2, "VALID")
    count = tf.nn.avg_pool1d(ones, 4, 2, "VALID")
    return total / count


class Discriminators(keras.Model):
    """All sub-discriminators of a recipe. ``call(waveform [batch, time, 1])`` returns a list with one
    ``(logits, feature_maps)`` per sub-discriminator, in the order of `names`."""

    def __init__(self, cfg: DiscriminatorConfig, **kwargs):
        super().__init__(**kwargs)
        self.stft_discriminators = [
            STFTDiscriminator(n, n // cfg.stft_hop_divisor, cfg.stft_channels, cfg.stft_dilations, name=f"stft_{n}")
            for n in cfg.stft_fft_sizes
        ]
        self.waveform_discriminators = [
            WaveformDiscriminator(cfg.waveform_channels, cfg.waveform_max_channels, cfg.waveform_strides,
                                  cfg.waveform_groups_divisor, name=f"waveform_{2 ** i}x")
            for i in range(cfg.waveform_scales)
        ]
        self.names = [d.name for d in self.stft_discriminators + self.waveform_discriminators]
        self.min_length = max(cfg.stft_fft_sizes, default=1)

    def call(self, waveform):
        outputs = [d(waveform) for d in self.stft_discriminators]
        scaled = waveform
        for i, d in enumerate(self.waveform_discriminators):
            if i:
                scaled = downsample_by_two(scaled)
            outputs.append(d(scaled))
        return outputs


def build_discriminators(cfg: DiscriminatorConfig, example_length: int | None = None) -> Discriminators:
    """Build the recipe's discriminators and create their weights on a zero input of ``example_length``
    samples (at least the largest FFT size)."""
    model = Discriminators(cfg, name="discriminators")
    length = max(example_length or 0, model.min_length, 1024)
    model(tf.zeros([1, length, 1]))
    return model
