"""Streaming-aware 1-D convolutions: causal and centred, direct and transposed, with weight norm.

Shapes are channels-last: inputs ``[batch, time, channels_in]``, outputs ``[batch, time', filters]``.

All padding and state arithmetic lives in the four functions at the top of this module, so the
offline and streaming code paths cannot disagree about it:

* a convolution sees ``k_eff = (kernel_size - 1) * dilation + 1`` input samples per output;
* a causal convolution with stride ``s`` pads ``k_eff - s`` zeros on the left offline, and in
  streaming keeps the last ``k_eff - s`` input samples of the previous frame as its state. With a
  frame length divisible by ``s`` every frame starts on an output boundary, so the frame-by-frame
  output is the offline output cut into pieces (``k_eff < s`` means the first ``s - k_eff`` samples
  of each stride are never read: they are cropped instead, and there is no state);
* a causal transposed convolution emits exactly ``T * s`` samples per ``T`` inputs; the
  ``k - s`` samples that spill past the frame (the overlap tail, before the bias is added) are the
  state, added onto the start of the next frame's output. It is computed in polyphase form (a
  direct conv with ``ceil(k / s)`` taps and ``s * filters`` outputs, interleaved by a reshape), which
  is the same arithmetic as TRANSPOSE_CONV but converts to TFLite with a resizable time axis;
* with ``sample_groups=G``, the streaming modes of a causal conv (stride 1) or transposed conv
  compute the same convolution over groups of G samples (`grouped_valid_conv`), which XNNPACK runs
  much faster when a layer has one input or output channel; a grouped conv's state is rounded up
  to whole groups.

With ``quantization`` (a `bwe.layers.quant.QuantSpec`: quantisation-aware training) a layer computes
with its kernel fake-quantised per output channel and its input fake-quantised per tensor over a range
it tracks in training (``input_range``, copied with its weights); a direct conv's state is its past
input, so it holds quantised values too.

Weight normalisation (``kernel = g * v / ||v||``, one ``g`` per output channel) is a training-time
reparametrisation. ``plain_weights()`` returns the folded kernel, which is what the inference and
streaming models hold (see ``bwe.streaming``), so exported graphs contain no normalisation ops.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import keras
import tensorflow as tf

from bwe.layers.modes import Modes
from bwe.layers.quant import QuantSpec, fake_quant_activations, fake_quant_weights, split_for_int8, tracked_range


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Input samples one output of a (dilated) convolution depends on."""
    return (kernel_size - 1) * dilation + 1


def causal_conv_state_length(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Past input samples a causal conv keeps between frames (negative: samples it crops)."""
    return effective_kernel_size(kernel_size, dilation) - stride


def centered_padding(total: int) -> tuple[int, int]:
    """Split ``total`` padding (negative: cropping) into (left, right), the extra sample on the left."""
    right = total // 2
    return total - right, right


def _pad_or_crop_time(x: tf.Tensor, left: int, right: int, pad_mode: str = "constant") -> tf.Tensor:
    """Pad (positive) or crop (negative) the time axis of ``[batch, time, channels]`` at both ends."""
    if left < 0:
        x = x[:, -left:]
        left = 0
    if right < 0:
        x = x[:, : tf.shape(x)[1] + right]
        right = 0
    if left or right:
        x = tf.pad(x, [[0, 0], [left, right], [0, 0]], mode=pad_mode.upper())
    return x


def _check_positive(name: str, **values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")


class _StreamingConvBase(keras.layers.Layer):
    """Shared weight handling (plain or weight-normalised kernel) and mode bookkeeping."""

    causal = True
    transposed = False

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        strides: int = 1,
        dilation_rate: int = 1,
        use_bias: bool = True,
        weight_norm: bool = False,
        pad_mode: str = "constant",
        mode: Modes | str = Modes.TRAINING,
        state_batch_size: int = 1,
        kernel_initializer="glorot_uniform",
        padding: str | None = None,
        sample_groups: int = 1,
        quantization: QuantSpec | dict | None = None,
        split_int8_weights: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        kind = type(self).__name__
        _check_positive(f"{kind} '{self.name}'", filters=filters, kernel_size=kernel_size, strides=strides,
                        dilation_rate=dilation_rate, state_batch_size=state_batch_size, sample_groups=sample_groups)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.use_bias = bool(use_bias)
        self.weight_norm = bool(weight_norm)
        self.pad_mode = pad_mode
        self.mode = Modes.parse(mode)
        self.state_batch_size = int(state_batch_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.sample_groups = int(sample_groups)
        # Fake quantisation (QAT, bwe.layers.quant): the kernel per output channel, the input (and so the
        # state, the past input of a direct conv) per tensor over a range tracked in training.
        self.quantization = QuantSpec(**quantization) if isinstance(quantization, dict) else quantization
        # For integer exports of fixed filters: the kernel as two int8 kernels (`split_for_int8`).
        self.split_int8_weights = bool(split_int8_weights)
        if self.split_int8_weights and self.transposed:
            raise ValueError(f"{kind} '{self.name}': split_int8_weights is implemented for direct convs only")
        if self.sample_groups > 1 and not self.causal:
            raise ValueError(f"{kind} '{self.name}': sample_groups only changes how the streaming modes compute the "
                             "conv, and a centred layer cannot stream")
        if self.transposed and self.dilation_rate != 1:
            raise ValueError(f"{kind} '{self.name}': dilation is not supported in a transposed conv")
        if pad_mode not in ("constant", "reflect"):
            raise ValueError(f"{kind} '{self.name}': pad_mode must be 'constant' or 'reflect', got {pad_mode!r}")
        if self.causal:
            if padding not in (None, "causal"):
                raise ValueError(
                    f"{kind} '{self.name}': padding={padding!r} cannot be used in a causal layer: it would read "
                    "samples after the current one. The layer pads causally by itself; use the centred "
                    "variant for an offline-only model.")
            if pad_mode != "constant":
                raise ValueError(
                    f"{kind} '{self.name}': pad_mode={pad_mode!r} cannot be used in a causal layer: reflect "
                    "padding mirrors samples from the future of the signal's start and has no streaming "
                    "equivalent. Causal layers pad with zeros, which is what a stream starting from silence sees.")
        else:
            if padding not in (None, "same", "centered"):
                raise ValueError(f"{kind} '{self.name}': padding={padding!r}; centred layers pad 'same' by themselves")
            if self.mode.is_streaming:
                raise ValueError(
                    f"{kind} '{self.name}': a centred (non-causal) layer cannot stream: each output depends on "
                    f"{self._lookahead()} future input samples, which a frame-by-frame stream does not have yet. "
                    "Build the model with causal=True to stream it.")
        if self.weight_norm and self.mode.is_streaming:
            raise ValueError(
                f"{kind} '{self.name}': weight normalisation is a training-time reparametrisation; streaming "
                "models hold the folded kernel (convert with bwe.streaming.to_streaming).")
        self.state = None

    # ---- geometry -------------------------------------------------------------------------
    def _lookahead(self) -> int:
        return 0

    @property
    def _grouped(self) -> bool:
        """Whether this layer computes its conv over groups of samples (`grouped_valid_conv`)."""
        return self.sample_groups > 1 and self.mode.is_streaming

    @property
    def state_length(self) -> int:
        """Time steps of state carried between frames in the streaming modes (0: stateless)."""
        return 0

    @property
    def state_shape(self) -> tuple[int, int] | None:
        """Per-example state shape ``(time, channels)`` or None for a stateless layer (once built)."""
        return self.state_shape_for(self.in_channels)

    def state_shape_for(self, in_channels: int) -> tuple[int, int] | None:
        """Per-example state shape for an input with ``in_channels`` channels (None: stateless)."""
        if not self.state_length:
            return None
        return (self.state_length, int(in_channels))

    def output_length(self, input_length: int) -> int:
        raise NotImplementedError

    def macs(self, input_length: int) -> int:
        """Multiply-accumulates per example for ``input_length`` input samples (bias adds not counted)."""
        raise NotImplementedError

    # ---- weights ---------------------------------------------------------------------------
    def _kernel_shape(self, in_channels: int) -> tuple[int, int, int]:
        raise NotImplementedError

    def _norm_axes(self) -> tuple[int, int]:
        raise NotImplementedError

    def _check_input_shape(self, shape) -> int:
        if len(shape) != 3:
            raise ValueError(f"{type(self).__name__} '{self.name}': expected [batch, time, channels], got {shape}")
        if shape[-1] is None:
            raise ValueError(f"{type(self).__name__} '{self.name}': the channel axis must be known")
        if self.mode.is_streaming:
            frame = shape[1]
            if frame is None:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': streaming needs a fixed frame length, but the time axis "
                    "is dynamic. Build the streaming model on a fixed one-frame input, e.g. "
                    "keras.Input(batch_shape=(1, 128, 1)).")
            if not self.transposed and frame % self.strides:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': frame length {frame} is not divisible by the stride "
                    f"{self.strides}; each frame must start on an output boundary for streaming to equal offline.")
            if shape[0] is not None and shape[0] != self.state_batch_size:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': batch {shape[0]} differs from state_batch_size "
                    f"{self.state_batch_size}")
        return int(shape[-1])

    def build(self, input_shape):
        if self.mode is Modes.STREAM_EXTERNAL_STATE_INFERENCE and self.state_length:
            if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                    and isinstance(input_shape[0], (list, tuple))):
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': in external-state mode call the layer on "
                    "[inputs, state] and it returns [outputs, new_state]")
            input_shape = input_shape[0]
        self.in_channels = self._check_input_shape(tuple(input_shape))
        self._add_kernel_weights(self.in_channels)
        if self.quantization is not None:
            # [low, high] of the input; [0, 0] until the first training call sets it.
            self.input_range = self.add_weight(name="input_range", shape=(2,), initializer="zeros",
                                               trainable=False, aggregation="mean")
        if self.mode is Modes.STREAM_INTERNAL_STATE_INFERENCE and self.state_length:
            self.state = self.add_weight(name="state", shape=(self.state_batch_size,) + self.state_shape,
                                         initializer="zeros", trainable=False)

    def _add_kernel_weights(self, in_channels: int) -> None:
        """The kernel (plain, or weight-normalised as ``kernel_v`` and ``kernel_g``) and the bias."""
        shape = self._kernel_shape(in_channels)
        if self.weight_norm:
            initial = np.asarray(self.kernel_initializer(shape), dtype=np.float32)
            norm = np.sqrt(np.sum(initial**2, axis=self._norm_axes()))
            self.kernel_v = self.add_weight(name="kernel_v", shape=shape, initializer=lambda s, dtype=None: initial)
            self.kernel_g = self.add_weight(name="kernel_g", shape=(self.filters,),
                                            initializer=lambda s, dtype=None: norm)
        else:
            self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def effective_kernel(self) -> tf.Tensor:
        if not self.weight_norm:
            return self.kernel
        axes = list(self._norm_axes())
        norm = tf.sqrt(tf.reduce_sum(tf.square(self.kernel_v), axis=axes, keepdims=True))
        g = tf.reshape(self.kernel_g, [1, -1, 1] if self.transposed else [1, 1, -1])
        return g * self.kernel_v / norm

    def conv_kernel(self) -> tf.Tensor:
        """The kernel the conv computes with: `effective_kernel`, or under QAT its `rounded_kernel`."""
        if self.quantization is None:
            return self.effective_kernel()
        return self.rounded_kernel(self.quantization.weight_bits)

    def rounded_kernel(self, bits: int) -> tf.Tensor:
        """`effective_kernel` rounded to ``bits`` as the conv's TFLite file stores it: one symmetric scale
        per output channel."""
        return fake_quant_weights(self.effective_kernel(), bits, channel_axis=2)

    def _quantize_input(self, x: tf.Tensor, training) -> tf.Tensor:
        if self.quantization is None or not self.quantization.activation_bits:
            return x
        value_range = self.input_range
        if training:
            value_range = tracked_range(self.input_range, x, self.quantization.range_momentum)
        return fake_quant_activations(x, value_range, self.quantization.activation_bits)

    def plain_weights(self) -> dict[str, np.ndarray]:
        """The layer's weights with weight normalisation folded in: ``{'kernel', ['bias'], ['input_range']}``
        (the float kernel: a quantised target quantises it itself)."""
        weights = {"kernel": np.asarray(self.effective_kernel())}
        if self.use_bias:
            weights["bias"] = np.asarray(self.bias)
        if self.quantization is not None:
            weights["input_range"] = np.asarray(self.input_range)
        return weights

    def set_plain_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load ``plain_weights()`` output (from any mode of the same layer) into this layer."""
        kernel = np.asarray(weights["kernel"], dtype=np.float32)
        if self.weight_norm:
            expected = tuple(self.kernel_v.shape)
        else:
            expected = tuple(self.kernel.shape)
        if kernel.shape != expected:
            raise ValueError(f"{self.name}: kernel shape {kernel.shape} does not match {expected}")
        if self.weight_norm:
            norm = np.sqrt(np.sum(kernel**2, axis=self._norm_axes()))
            self.kernel_v.assign(kernel)
            self.kernel_g.assign(norm.astype(np.float32))
        else:
            self.kernel.assign(kernel)
        if self.use_bias != ("bias" in weights):
            raise ValueError(f"{self.name}: bias presence differs between source and destination")
        if self.use_bias:
            self.bias.assign(np.asarray(weights["bias"], dtype=np.float32))
        if self.quantization is not None and "input_range" in weights:  # a float source has none yet
            self.input_range.assign(np.asarray(weights["input_range"], dtype=np.float32))

    def reset_states(self) -> None:
        """Zero the internal state (start of a new utterance)."""
        if self.state is not None:
            self.state.assign(tf.zeros_like(self.state))

    # ---- call ------------------------------------------------------------------------------
    def _add_bias(self, y: tf.Tensor) -> tf.Tensor:
        return tf.nn.bias_add(y, self.bias) if self.use_bias else y

    def call(self, inputs, training=None):
        if self.mode is Modes.STREAM_EXTERNAL_STATE_INFERENCE and self.state_length:
            x, state = inputs
            y, new_state = self._stream_step(self._quantize_input(x, training), state)
            return [y, new_state]
        inputs = self._quantize_input(inputs, training)
        if self.mode is Modes.STREAM_INTERNAL_STATE_INFERENCE and self.state_length:
            y, new_state = self._stream_step(inputs, self.state)
            # The update must run even though only y is consumed downstream.
            with tf.control_dependencies([self.state.assign(new_state)]):
                return tf.identity(y)
        if self.mode.is_streaming:
            return self._stream_step(inputs, None)[0]
        return self._offline(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            use_bias=self.use_bias,
            weight_norm=self.weight_norm,
            pad_mode=self.pad_mode,
            mode=self.mode.value,
            state_batch_size=self.state_batch_size,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            sample_groups=self.sample_groups,
            quantization=None if self.quantization is None else dataclasses.asdict(self.quantization),
            split_int8_weights=self.split_int8_weights,
        )
        return config


class _Conv1DMixin:
    """Direct convolution: kernel ``[kernel_size, channels_in, filters]``."""

    def _kernel_shape(self, in_channels):
        return (self.kernel_size, in_channels, self.filters)

    def _norm_axes(self):
        return (0, 1)

    def output_length(self, input_length):
        return input_length // self.strides

    def macs(self, input_length):
        return self.output_length(input_length) * self.kernel_size * self.in_channels * self.filters

    def _kernel_parts(self) -> list[tf.Tensor]:
        """The kernels whose convs sum to this conv: `conv_kernel`, or its two int8 parts."""
        kernel = self.conv_kernel()
        return list(split_for_int8(kernel, channel_axis=2)) if self.split_int8_weights else [kernel]

    def _valid_conv(self, x: tf.Tensor) -> tf.Tensor:
        return self._add_bias(_sum([self._unbiased_conv(x, kernel) for kernel in self._kernel_parts()]))

    def _unbiased_conv(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        if self.strides > 1 and self.dilation_rate > 1:
            # TF's CPU kernels reject stride and dilation together: dilate, then keep every s-th output.
            y = tf.nn.conv1d(x, kernel, stride=1, padding="VALID", dilations=self.dilation_rate)
            return y[:, :: self.strides]
        return tf.nn.conv1d(x, kernel, stride=self.strides, padding="VALID", dilations=self.dilation_rate)


def _sum(tensors: list[tf.Tensor]) -> tf.Tensor:
    """Elementwise sum by ADD ops (integer converters do not take ADD_N; one tensor adds no op)."""
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total


def grouped_kernel_indices(taps: int, group: int) -> np.ndarray:
    """Where each weight of a conv over groups of samples comes from: ``[A, group, group]`` indices into
    the ``taps`` taps of a causal kernel (``taps - 1`` a multiple of ``group``), ``taps`` meaning zero.

    The signal is cut into groups of ``group`` samples, each one vector of ``group * channels``. Output
    sample ``r`` of group ``q`` is ``sum_{a, b} W[a, b, r] . x[group * (q + a) + b]`` over the padded
    input, with ``W[a, b, r] = w[group * a + b - r]`` where that tap exists, so a conv over groups with
    ``A = (taps - 1) / group + 1`` taps computes the original conv exactly.
    """
    if (taps - 1) % group:
        raise ValueError(f"grouped_kernel_indices: taps - 1 = {taps - 1} is not a multiple of group {group}")
    a, b, r = np.meshgrid(np.arange((taps - 1) // group + 1), np.arange(group), np.arange(group), indexing="ij")
    tap = group * a + b - r
    return np.where((tap >= 0) & (tap < taps), tap, taps)


def grouped_valid_conv(x: tf.Tensor, kernel: tf.Tensor, group: int, bias: tf.Tensor | None = None) -> tf.Tensor:
    """``VALID`` conv of ``x [batch, L, in]`` with ``kernel [K, in, out]`` (and ``bias``), computed over
    groups of ``group`` samples: ``[batch, L - K + 1, out]``. ``L`` and ``K - 1`` must be multiples of
    ``group``. The kernel is rearranged by `grouped_kernel_indices`; with frozen weights that is
    constant-folded, so TFLite sees RESHAPE, CONV_2D, RESHAPE."""
    taps, c_in, c_out = kernel.shape
    rows = grouped_kernel_indices(taps, group)
    grouped = tf.gather(tf.pad(kernel, [[0, 1], [0, 0], [0, 0]]), rows)  # [A, b, r, in, out]; row `taps` is zero
    grouped = tf.reshape(tf.transpose(grouped, [0, 1, 3, 2, 4]), [rows.shape[0], group * c_in, group * c_out])
    steps = x.shape[1] // group
    y = tf.nn.conv1d(tf.reshape(x, [-1, steps, group * c_in]), grouped, stride=1, padding="VALID")
    if bias is not None:  # added per group step, before the reshape, so TFLite fuses it into the conv
        y = tf.nn.bias_add(y, tf.tile(bias, [group]))
    return tf.reshape(y, [-1, (steps - rows.shape[0] + 1) * group, c_out])


@keras.saving.register_keras_serializable(package="bwe")
class CausalConv1D(_Conv1DMixin, _StreamingConvBase):
    """Causal Conv1D: output ``t`` depends on inputs up to the end of its stride, never later.

    ``[batch, time, channels_in] -> [batch, time // strides, filters]``. Streams in frames whose length
    is a multiple of ``strides``; the state is the last ``k_eff - strides`` input samples.

    ``sample_groups=G`` (stride 1 only) changes how the streaming modes compute the same conv: over groups
    of G samples, with ``G * channels_in`` inputs and ``G * filters`` outputs per step
    (`grouped_valid_conv`). That is more multiply-adds (the grouped kernel holds zeros) but one
    dense matrix product per group, where a conv with one input or output channel keeps most of
    XNNPACK's vector lanes idle: on 65536 samples, a 33-tap one-channel filter takes 0.45 ms directly
    and 0.07 ms grouped by 16. The state grows to ``k_eff - 1`` rounded up to a multiple of G (the
    extra past samples meet zero taps); frames must be a multiple of G. Training and offline
    inference keep the direct conv, so checkpoints and the trained arithmetic are unchanged.
    """

    causal = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.sample_groups > 1 and self.strides != 1:
            raise ValueError(f"CausalConv1D '{self.name}': sample_groups={self.sample_groups} needs stride 1, got "
                             f"{self.strides}")

    @property
    def state_length(self):
        length = max(causal_conv_state_length(self.kernel_size, self.strides, self.dilation_rate), 0)
        if self._grouped:
            length = -(-length // self.sample_groups) * self.sample_groups
        return length

    def _check_input_shape(self, shape):
        channels = super()._check_input_shape(shape)
        if self._grouped and shape[1] % self.sample_groups:
            raise ValueError(f"CausalConv1D '{self.name}': frame length {shape[1]} is not divisible by "
                             f"sample_groups={self.sample_groups}")
        return channels

    def _offline(self, x):
        pad = causal_conv_state_length(self.kernel_size, self.strides, self.dilation_rate)
        return self._valid_conv(_pad_or_crop_time(x, pad, 0))

    def _stream_step(self, x, state):
        pad = causal_conv_state_length(self.kernel_size, self.strides, self.dilation_rate)
        if pad <= 0:
            return self._valid_conv(_pad_or_crop_time(x, pad, 0)), None
        full = tf.concat([state, x], axis=1)
        conv = self._grouped_conv if self._grouped else self._valid_conv
        return conv(full), full[:, -self.state_length:]

    def _grouped_conv(self, full: tf.Tensor) -> tf.Tensor:
        """`_valid_conv` of ``state_length`` past samples and a frame, computed over groups of samples."""
        taps = self.state_length + 1
        # Tap t of the grouped filter reads kernel row (t - lead) / dilation where that is a whole row
        # (the `lead` leading taps meet the extra past samples); row kernel_size is a zero row.
        lead = taps - effective_kernel_size(self.kernel_size, self.dilation_rate)
        offset = np.arange(taps) - lead
        row = np.where((offset >= 0) & (offset % self.dilation_rate == 0), offset // self.dilation_rate,
                       self.kernel_size)
        bias = self.bias if self.use_bias else None
        parts = []
        for kernel in self._kernel_parts():
            dense = tf.gather(tf.pad(kernel, [[0, 1], [0, 0], [0, 0]]), row)
            parts.append(grouped_valid_conv(full, dense, self.sample_groups, None if parts else bias))
        return _sum(parts)


@keras.saving.register_keras_serializable(package="bwe")
class CausalDelay(CausalConv1D):
    """A pure delay of ``kernel_size - 1`` samples with the streaming state of a causal conv: the conv
    whose kernel is a unit impulse at its first tap, computed as a slice instead of a convolution
    (a long one-channel convolution is slow in TFLite for what is only a copy). No weights."""

    def __init__(self, delay: int, **kwargs):
        super().__init__(1, delay + 1, use_bias=False, **kwargs)
        if self.sample_groups != 1:  # a slice has no conv to group, and a rounded-up state would shift it
            raise ValueError(f"CausalDelay '{self.name}': sample_groups must be 1 (a delay is a slice), got "
                             f"{self.sample_groups}")

    def _add_kernel_weights(self, in_channels):
        pass  # the impulse is implicit in _valid_conv

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def macs(self, input_length):
        return 0

    def plain_weights(self):
        return {}

    def set_plain_weights(self, weights):
        pass

    def _valid_conv(self, x):
        return x[:, : tf.shape(x)[1] - (self.kernel_size - 1)]

    def get_config(self):
        config = {k: v for k, v in super().get_config().items() if k not in ("filters", "kernel_size", "use_bias")}
        return {**config, "delay": self.kernel_size - 1}


@keras.saving.register_keras_serializable(package="bwe")
class CenteredConv1D(_Conv1DMixin, _StreamingConvBase):
    """Non-causal ('same') Conv1D for offline models: the kernel is centred on the output sample.

    ``[batch, time, channels_in] -> [batch, time // strides, filters]``. Refuses the streaming modes.
    """

    causal = False

    def _lookahead(self):
        return centered_padding(causal_conv_state_length(self.kernel_size, self.strides, self.dilation_rate))[1]

    def _offline(self, x):
        left, right = centered_padding(causal_conv_state_length(self.kernel_size, self.strides, self.dilation_rate))
        return self._valid_conv(_pad_or_crop_time(x, left, right, self.pad_mode))


class _Conv1DTransposeMixin:
    """Transposed convolution: kernel ``[kernel_size, filters, channels_in]`` (tf.nn layout)."""

    transposed = True

    def _kernel_shape(self, in_channels):
        return (self.kernel_size, self.filters, in_channels)

    def _norm_axes(self):
        return (0, 2)

    def output_length(self, input_length):
        return input_length * self.strides

    def macs(self, input_length):
        return input_length * self.kernel_size * self.in_channels * self.filters

    @property
    def _taps_per_phase(self) -> int:
        """Input steps each output sample depends on: ``ceil(k / s)``."""
        return -(-self.kernel_size // self.strides)

    def _polyphase_kernel(self) -> tf.Tensor:
        """The transposed kernel as a direct one: ``[m, channels_in, strides * filters]``.

        Output sample ``t*s + r`` is ``sum_j x[t - j] @ W[j*s + r]`` (j < m): a causal direct conv with
        ``m`` taps whose ``s * filters`` outputs are the ``s`` phases, interleaved by a reshape. Only
        CONV_2D and RESHAPE reach TFLite, whose TRANSPOSE_CONV loses shapes on a dynamic time axis.
        """
        m, s = self._taps_per_phase, self.strides
        kernel = self.conv_kernel()  # [k, filters, channels_in]
        kernel = tf.pad(kernel, [[0, m * s - self.kernel_size], [0, 0], [0, 0]])
        kernel = tf.reshape(kernel, [m, s, self.filters, -1])[::-1]  # [j -> tap m-1-j, r, out, in]
        kernel = tf.transpose(kernel, [0, 3, 1, 2])  # [tap, in, r, out]
        return tf.reshape(kernel, [m, -1, s * self.filters])

    def rounded_kernel(self, bits: int) -> tf.Tensor:
        """`effective_kernel` rounded to ``bits`` with one scale per output channel of `_polyphase_kernel`
        (a phase of a filter: taps ``r, r + s, ...``), the kernel the TFLite file stores."""
        m, s = self._taps_per_phase, self.strides
        kernel = tf.pad(self.effective_kernel(), [[0, m * s - self.kernel_size], [0, 0], [0, 0]])
        phases = tf.reshape(kernel, [m, s * self.filters, -1])  # channel r * filters + out: a phase of a filter
        rounded = fake_quant_weights(phases, bits, channel_axis=1)
        return tf.reshape(rounded, [m * s, self.filters, -1])[: self.kernel_size]

    def _transpose_steps(self, x: tf.Tensor, past: tf.Tensor | None = None) -> tf.Tensor:
        """Output samples for the input steps of ``x`` (no bias): ``T * s`` samples. ``past``: the
        ``m - 1`` input steps before ``x`` (zeros when None, the start of the signal)."""
        m = self._taps_per_phase
        input_steps = x.shape[1]
        x = tf.pad(x, [[0, 0], [m - 1, 0], [0, 0]]) if past is None else tf.concat([past, x], axis=1)
        if self._grouped:
            # Zero taps in front (and as many zero steps before x) make the kernel's m - 1 past steps a
            # whole number of groups; zero steps after x, cropped from the output, make the length one.
            group = self.sample_groups
            lead = -(-(m - 1) // group) * group - (m - 1)
            x = tf.pad(x, [[0, 0], [lead, -input_steps % group], [0, 0]])
            kernel = tf.pad(self._polyphase_kernel(), [[lead, 0], [0, 0], [0, 0]])
            z = grouped_valid_conv(x, kernel, group)[:, :input_steps]
        else:
            z = tf.nn.conv1d(x, self._polyphase_kernel(), stride=1, padding="VALID")
        steps = None if z.shape[1] is None else z.shape[1]
        if steps is None:
            return tf.reshape(z, [tf.shape(z)[0], -1, self.filters])
        return tf.reshape(z, [-1 if z.shape[0] is None else z.shape[0], steps * self.strides, self.filters])


@keras.saving.register_keras_serializable(package="bwe")
class CausalConv1DTranspose(_Conv1DTransposeMixin, _StreamingConvBase):
    """Causal transposed Conv1D (upsampling by ``strides``): ``[B, T, C_in] -> [B, T * strides, filters]``.

    Keeps the first ``T * strides`` samples of the full output. Streaming state: the last
    ``ceil(k / strides) - 1`` input steps, which a frame's first outputs still read. (An input buffer,
    not the output's overlap tail: a buffer is concatenated, not added, so an integer file quantises it
    with the frame's own scale, and frame and block files round alike.)
    """

    causal = True

    @property
    def state_length(self):
        return self._taps_per_phase - 1

    def _offline(self, x):
        return self._add_bias(self._transpose_steps(x))

    def _stream_step(self, x, state):
        if not self.state_length:
            return self._add_bias(self._transpose_steps(x)), None
        y = self._transpose_steps(x, state)
        return self._add_bias(y), tf.concat([state, x], axis=1)[:, -self.state_length:]


@keras.saving.register_keras_serializable(package="bwe")
class CenteredConv1DTranspose(_Conv1DTransposeMixin, _StreamingConvBase):
    """Non-causal transposed Conv1D, the ``k - strides`` overhang trimmed evenly from both ends."""

    causal = False

    def _lookahead(self):
        return centered_padding(self.kernel_size - self.strides)[0]

    def _offline(self, x):
        left, _ = centered_padding(self.kernel_size - self.strides)
        left = max(left, 0)
        y = self._transpose_steps(tf.pad(x, [[0, 0], [0, self._taps_per_phase - 1], [0, 0]]))  # the whole overhang
        return self._add_bias(y[:, left : left + tf.shape(x)[1] * self.strides])


def conv1d(causal: bool, *args, **kwargs) -> _StreamingConvBase:
    """CausalConv1D or CenteredConv1D, by ``causal``."""
    return (CausalConv1D if causal else CenteredConv1D)(*args, **kwargs)


def conv1d_transpose(causal: bool, *args, **kwargs) -> _StreamingConvBase:
    """CausalConv1DTranspose or CenteredConv1DTranspose, by ``causal``."""
    return (CausalConv1DTranspose if causal else CenteredConv1DTranspose)(*args, **kwargs)


# CausalDelay is a CausalConv1D, so it is one of these too.
STREAMING_CONV_LAYERS = (CausalConv1D, CenteredConv1D, CausalConv1DTranspose, CenteredConv1DTranspose)
