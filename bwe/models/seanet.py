"""The SEANet bandwidth-extension generator: 8 kHz ``[B, T8, 1]`` in, 16 kHz ``[B, 2*T8, 1]`` out.

Structure (Li et al. 2021, "Real-time speech frequency bandwidth extension"; SoundStream §III-A):

1. A fixed, non-trainable windowed-sinc 2x interpolator (a stride-2 `CausalConv1DTranspose`, so it
   streams like every other layer) brings the input to 16 kHz. It is a half-band filter: the input
   samples pass through unchanged at the even output positions, delayed by
   ``generator_delay_samples(cfg) = (upsampler_taps - 1) / 2`` samples at 16 kHz.
2. SEANet at 16 kHz: input conv (C channels) -> B encoder blocks, each 3 residual units
   (ELU, conv kernel ``residual_kernel_size`` with dilation 1/3/9, ELU, 1x1 conv, residual add)
   then ELU + a strided conv (kernel ``2 * stride``) that doubles the channels (up to
   ``max_channels``) -> ELU + bottleneck conv -> B decoder blocks mirroring the encoder (ELU +
   transposed conv, add the encoder's activations at that resolution, 3 residual units) -> ELU +
   output conv to one channel.
3. The network output is added to the interpolated input: it only has to learn the missing band.
4. Optionally (``envelope_bands``), an envelope head: the network's band, high-passed, is split by a
   fixed complementary bank into equal bands from 4 to 8 kHz; an envelope predictor (a causal
   residual conv stack at ``envelope_frame`` hop over the input's log power spectrum) predicts each
   band's level, and each band is scaled from its own level to the predicted one, crossfaded from
   frame to frame (`bwe.layers.envelope`). The network then only shapes the band's fine structure;
   its loudness, frame by frame and band by band, is the predictor's. With
   ``envelope_lookahead_frames`` the predictor reads that many frames ahead and the output waits as
   long (the offline model). With ``envelope_gap_hz`` one more band, below the split, restores what a
   channel removed under 4 kHz (the gap band).

All convolutions are causal (``cfg.causal``) or centred. The same function builds every mode (see
`bwe.layers.Modes`); layer names are fixed so weights can be copied by name between modes. Nothing
else goes by name: the layers that training and export act on are held by `GeneratorParts`.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import numpy as np
import scipy.signal

from bwe.config import (  # noqa: F401 -- the rates, the frame and the model checks are re-exported from here
    FRAME_INPUT_SAMPLES,
    FRAME_OUTPUT_SAMPLES,
    INPUT_RATE,
    OUTPUT_RATE,
    UPSAMPLE_FACTOR,
    ModelConfig,
    ModelConfigError,
    band_split_taps,
    head_band_count,
    total_stride,
    validate_model_config,
)
from bwe.layers.conv import (
    STREAMING_CONV_LAYERS,
    CausalConv1D,
    CausalDelay,
    CausalConv1DTranspose,
    conv1d,
    conv1d_transpose,
)
from bwe.layers.envelope import (
    ApplyBandGains,
    CrossfadeGains,
    FrameLevels,
    LevelRatioGains,
    LogPowerSpectrum,
    ShiftByLevel,
    SpectrumLevel,
)
from bwe.layers.activations import ELU
from bwe.layers.modes import Modes
from bwe.layers.quant import QuantSpec
from bwe.layers.time import AddSignals, CropTimeToReference, PadTimeToMultiple

SPLIT_HZ = INPUT_RATE / 2  # where the input's band ends and the generated one begins
GAP_LEVEL_LAYER = "envelope_gap_level"
# The layers a gap band (model.envelope_gap_hz) adds: a model without them can start a run that has them.
GAP_BAND_LAYERS = ("envelope_gap_band", GAP_LEVEL_LAYER)
UPSAMPLER_KAISER_BETA = 6.0


def block_channels(cfg: ModelConfig) -> list[int]:
    """Channels at each resolution: ``[input level, after block 1, ..., bottleneck]``."""
    return [min(cfg.channels * 2**b, cfg.max_channels) for b in range(len(cfg.strides) + 1)]


def generator_delay_samples(cfg: ModelConfig) -> int:
    """16 kHz samples by which the generator's output lags its input.

    The interpolator's group delay, plus the band-split filter's when ``cfg.highband_residual`` is on,
    plus, with an envelope head, its filter bank's and its look-ahead.
    """
    filter_delay = (cfg.upsampler_taps - 1) // 2
    if not cfg.highband_residual:
        return filter_delay
    split_delay = (band_split_taps(cfg) - 1) // 2
    if not cfg.envelope_bands:
        return filter_delay + split_delay
    return (filter_delay + split_delay + (cfg.envelope_filter_taps - 1) // 2
            + cfg.envelope_lookahead_frames * cfg.envelope_frame)


def interpolation_filter(taps: int) -> np.ndarray:
    """Kaiser-windowed half-band sinc for 2x interpolation by zero-stuffing, gain 2 (float32 [taps]).

    ``h[n] = sinc((n - c) / 2) * kaiser(n)`` with ``c = (taps - 1) / 2``: a cut-off at 4 kHz (the input
    Nyquist) and, because every other tap away from the centre is zero, the original samples are
    reproduced exactly at even output positions.
    """
    if taps % 2 == 0:
        raise ValueError(f"interpolation_filter: taps must be odd, got {taps}")
    centre = (taps - 1) / 2
    n = np.arange(taps)
    h = np.sinc((n - centre) / UPSAMPLE_FACTOR) * scipy.signal.windows.kaiser(taps, UPSAMPLER_KAISER_BETA)
    return h.astype(np.float32)


def band_split_kernel(taps: int) -> np.ndarray:
    """Kernel [taps, 2, 1] of the fixed conv that merges ``[interpolated, network output]``.

    Channel 0 (the interpolated input) is only delayed by the filter's centre; channel 1 (the network
    output) goes through the complementary high-pass ``delta - h/2`` of the half-band interpolation
    filter ``h`` (gain 2). Everything the network produces below the half-band's transition around
    4 kHz is removed, so the low band of the output is exactly the interpolated input.
    """
    lowpass = interpolation_filter(taps) / UPSAMPLE_FACTOR
    delay = np.zeros(taps, np.float32)
    delay[(taps - 1) // 2] = 1.0
    return np.stack([delay, delay - lowpass], axis=1)[:, :, None].astype(np.float32)


# Sample groups: the streaming models' convs with one input or output channel at the full rate are
# computed over groups of samples (`CausalConv1D` sample_groups): the same conv, 2-7x faster in XNNPACK.
# Each such conv passes its group where it is created, with its timing beside it: per call on one
# block's worth of input (65536 samples at 16 kHz, 32768 at 8 kHz), 2 threads, direct -> grouped.
# In the default model (8 channels at the full rate) each grouped kernel stays under 1024 weights,
# the size below which dynamic-range int8 leaves a conv float, so its int8 exports quantise what they
# did before; a wider model's grouped input and output convs may be quantised. Every group divides
# the 16 ms streaming frame (128 samples at 8 kHz, 256 at 16 kHz).

ENVELOPE_BANK_KAISER_BETA = 4.0  # neighbouring bands >= 26 dB down at each band's centre with 33 taps
SPECTRUM_WINDOW = 128  # input samples (16 ms at 8 kHz) of the envelope predictor's DFT: 62.5 Hz bins


def complementary_bank(taps: int, edges_hz, rate: int) -> np.ndarray:
    """Kernel ``[taps, 1, len(edges_hz) + 1]`` of a fixed bank split at ``edges_hz``: differences of
    Kaiser-windowed low-passes, the last band the rest of the spectrum. Complementary: the outputs
    sum exactly to the input delayed by ``(taps - 1) / 2``."""
    centre = np.zeros(taps)
    centre[(taps - 1) // 2] = 1.0
    lowpasses = [scipy.signal.firwin(taps, f, window=("kaiser", ENVELOPE_BANK_KAISER_BETA), fs=rate)
                 for f in edges_hz]
    bank = np.diff(np.stack([np.zeros(taps)] + lowpasses + [centre]), axis=0)  # [bands, taps]
    return bank.T[:, None, :].astype(np.float32)


def envelope_filter_bank(cfg: ModelConfig) -> np.ndarray:
    """The envelope head's bank: ``cfg.envelope_bands`` equal bands from 4 to 8 kHz, reading the
    network's output after the band-split high-pass. Complementary, so with every gain at 1 the
    head is the identity (the interpolated input is delayed by as much)."""
    bands = cfg.envelope_bands
    edges = [SPLIT_HZ + (OUTPUT_RATE / 2 - SPLIT_HZ) * k / bands for k in range(1, bands)]
    return complementary_bank(cfg.envelope_filter_taps, edges, OUTPUT_RATE)


def gap_band_kernel(cfg: ModelConfig) -> np.ndarray:
    """Kernel ``[split + bank - 1, 1, 1]`` of the gap band (``cfg.envelope_gap_hz``): the network's output
    below the band split (the split's low-pass) above the gap's edge (the complement of the bank's kind
    of low-pass there). As long as the split's high-pass and the bank together, so the gap band lines up
    with the bands above 4 kHz; with every gain 1 the two paths sum to the network's output above the edge."""
    split = band_split_kernel(band_split_taps(cfg))
    split_lowpass = split[:, 0, 0] - split[:, 1, 0]  # the delay minus the high-pass
    taps = cfg.envelope_filter_taps
    above_edge = -scipy.signal.firwin(taps, cfg.envelope_gap_hz, window=("kaiser", ENVELOPE_BANK_KAISER_BETA),
                                      fs=OUTPUT_RATE)
    above_edge[(taps - 1) // 2] += 1.0
    return np.convolve(split_lowpass, above_edge)[:, None, None].astype(np.float32)


def spectrum_kernel() -> np.ndarray:
    """Kernel ``[SPECTRUM_WINDOW, 1, 2 * bins]`` of the fixed strided conv that takes a periodic-Hann
    DFT of the last 16 ms of input at every envelope frame: real parts, then imaginary parts, of bins
    0 .. 4 kHz, normalised by the window's sum (a full-scale sine's bin has amplitude 1/2). The
    features of the envelope predictor: level, spectral slope, formants and the harmonics of voicing
    (62.5 Hz bins) at once."""
    n = np.arange(SPECTRUM_WINDOW)
    window = scipy.signal.windows.hann(SPECTRUM_WINDOW, sym=False)
    bins = np.arange(SPECTRUM_WINDOW // 2 + 1)
    phase = 2 * np.pi * np.outer(n, bins) / SPECTRUM_WINDOW
    kernel = np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * window[:, None] / window.sum()
    return kernel[:, None, :].astype(np.float32)


def gain_pair_kernel(bands: int) -> np.ndarray:
    """Kernel ``[2, K, 2K]`` of the fixed causal conv that puts each frame's gains beside the previous
    frame's (``[previous K, current K]``), for `CrossfadeGains` to interpolate. A conv, so the
    previous frame's gains are streaming state like any other; and small (< 1024 weights), so
    dynamic-range int8 leaves it float: a per-call activation scale over a block of frames would
    otherwise round the gains of its quiet frames to a few levels."""
    kernel = np.zeros((2, bands, 2 * bands), np.float32)
    kernel[0, :, :bands] = np.eye(bands)  # tap 0 reads the previous frame
    kernel[1, :, bands:] = np.eye(bands)
    return kernel


@dataclasses.dataclass(frozen=True)
class GeneratorParts:
    """Handles on the layers that code outside the model acts on, captured by identity as `build_generator`
    creates them (``model.bwe_parts``; `generator_parts` reads it). What trains in the envelope head's phase
    and what export scales never depend on a layer's name, so renaming a layer cannot silently change them.
    (Names only serve to copy weights between modes, which fails loudly on any mismatch.)"""

    # Every layer of the envelope predictor, in graph order (none without a head): the envelope head's phase
    # trains their variables and nothing else.
    envelope_predictor: tuple = ()
    # The layer whose ``active`` weight switches the envelope head on (the head is the identity until then).
    head_switch: LevelRatioGains | None = None
    # The last linear layer before the generated band joins the output, which export.highband_gain scales:
    # the output conv, or with an envelope head the fixed conv that hands its gains to the crossfade (the
    # head would undo a scaled network output: it measures the bands' levels). Every generator has one; only
    # `build_envelope_predictor`'s model, which makes no band, has none.
    highband_gain: keras.layers.Layer | None = None
    # The SEANet body's output conv, whose output the band split high-passes (losses.network_lowband_weight
    # reads it). Only `build_envelope_predictor`'s model has none.
    network_output: keras.layers.Layer | None = None


def generator_parts(model: keras.Model) -> GeneratorParts:
    """The `GeneratorParts` of a model from `build_generator` (any mode) or `build_envelope_predictor`."""
    parts = getattr(model, "bwe_parts", None)
    if not isinstance(parts, GeneratorParts):
        raise ValueError(f"{model.name}: not built by bwe.models.seanet.build_generator or "
                         "build_envelope_predictor (no bwe_parts)")
    return parts


def envelope_head_variables(model: keras.Model) -> list:
    """The variables the envelope head's training phase trains: its predictor's trainable variables (none
    without a head), in the order of ``model.trainable_variables`` (the order an optimizer checkpoints)."""
    head = {id(w) for layer in generator_parts(model).envelope_predictor for w in layer.trainable_weights}
    return [w for w in model.trainable_variables if id(w) in head]


class _Graph:
    """Applies layers while routing streaming state (external: extra model inputs/outputs), and keeps the
    layers it applies inside `collecting` (how `GeneratorParts` gets its handles)."""

    def __init__(self, mode: Modes, batch_size: int | None, integer_ops: bool = False,
                 quantization: QuantSpec | None = None):
        self.mode = mode
        self.batch_size = batch_size
        self.integer_ops = integer_ops  # activations in the form integer converters quantise
        self.quantization = quantization  # QAT: how the trainable convs fake-quantise (None: float)
        self.state_inputs: list = []
        self.state_outputs: list = []
        self._collectors: list[list] = []

    @contextlib.contextmanager
    def collecting(self):
        """Yields a list that receives every layer applied in the block, in order."""
        layers: list = []
        self._collectors.append(layers)
        try:
            yield layers
        finally:
            self._collectors.remove(layers)

    def __call__(self, layer, x):
        for layers in self._collectors:
            layers.append(layer)
        if self.mode is Modes.STREAM_EXTERNAL_STATE_INFERENCE and isinstance(layer, STREAMING_CONV_LAYERS):
            shape = layer.state_shape_for(x.shape[-1])
            if shape is not None:
                state_in = keras.Input(batch_shape=(self.batch_size,) + shape, name=f"{layer.name}_state")
                y, state_out = layer([x, state_in])
                self.state_inputs.append(state_in)
                self.state_outputs.append(state_out)
                return y
        return layer(x)


def _envelope_head(cfg: ModelConfig, mode: Modes, graph: _Graph, conv, audio, network_output, interpolated):
    """The envelope head (see the module docstring): ``interpolated`` (padded to the total stride in
    offline modes) delayed plus the network's band split into ``cfg.envelope_bands`` bands, each
    brought to the level the predictor gives it. Returns ``(wideband, GeneratorParts)``."""
    common = dict(mode=mode, state_batch_size=graph.batch_size or 1)
    fixed = dict(use_bias=False, trainable=False, **common)
    # Integer files keep these filters' stop bands: the network's output carries ~60 dB more below 4 kHz
    # than the band they pass (docs/experiments/integer-models.md).
    filters = dict(split_int8_weights=graph.integer_ops, **fixed)
    frame = cfg.envelope_frame
    lookahead = cfg.envelope_lookahead_frames * frame
    # The interpolated input waits for the high-pass, the bank and the look-ahead (all of the delay but its own).
    delay = generator_delay_samples(cfg) - (cfg.upsampler_taps - 1) // 2
    low = graph(CausalDelay(delay, name="envelope_delay", **common), interpolated)
    # The band split's high-pass, then the bank: two short convs cost fewer MACs than their product.
    split_taps = band_split_taps(cfg)
    highpass = band_split_kernel(split_taps)[:, 1:, :]
    h = graph(CausalConv1D(1, split_taps, name="envelope_highpass",
                           sample_groups=16,  # 1 -> 1, 33 taps: 0.45 -> 0.07 ms
                           kernel_initializer=keras.initializers.Constant(highpass), **filters), network_output)
    bands = graph(CausalConv1D(cfg.envelope_bands, cfg.envelope_filter_taps, name="envelope_bands",
                               sample_groups=4,  # 1 -> 4, 33 taps: 0.47 -> 0.16 ms
                               kernel_initializer=keras.initializers.Constant(envelope_filter_bank(cfg)),
                               **filters), h)
    if cfg.envelope_gap_hz:
        gap_kernel = gap_band_kernel(cfg)
        gap = graph(CausalConv1D(1, gap_kernel.shape[0], name="envelope_gap_band", sample_groups=16,
                                 kernel_initializer=keras.initializers.Constant(gap_kernel), **filters),
                    network_output)
        bands = graph(keras.layers.Concatenate(name="envelope_all_bands"), [gap, bands])
    if lookahead:
        bands = graph(CausalDelay(lookahead, name="envelope_lookahead", **common), bands)

    head_input = audio
    if not mode.is_streaming:
        head_input = PadTimeToMultiple(total_stride(cfg) // UPSAMPLE_FACTOR, mode=mode,
                                       name="envelope_pad_input")(audio)
    with graph.collecting() as predictor_layers:
        predicted = _envelope_predictor(cfg, graph, conv, head_input)
    measured = FrameLevels(frame, graph.integer_ops, name="envelope_band_levels")(bands)
    # A gap band is silent until the head's phase: the body never learned to add it.
    switch = LevelRatioGains(gated_bands=1 if cfg.envelope_gap_hz else 0, name="envelope_gain")
    gain_pairs = CausalConv1D(2 * head_band_count(cfg), 2, name="envelope_gain_pairs",
                              kernel_initializer=keras.initializers.Constant(gain_pair_kernel(head_band_count(cfg))),
                              **fixed)
    pairs = graph(gain_pairs, switch([predicted, measured]))
    gains = CrossfadeGains(frame, cfg.envelope_crossfade, name="envelope_crossfade")(pairs)
    high = ApplyBandGains(name="envelope_apply")([bands, gains])
    parts = GeneratorParts(highband_gain=gain_pairs, envelope_predictor=tuple(predictor_layers), head_switch=switch)
    return AddSignals(name="wideband")([low, high]), parts


def _envelope_predictor(cfg: ModelConfig, graph: _Graph, conv, audio):
    """``audio`` [batch, T8, 1] (T8 a multiple of the frame) -> each band's predicted level for each
    envelope frame, [batch, T8 / (envelope_frame / 2), head_band_count(cfg)], in standardised bels of its
    mean square (`bwe.layers.envelope.standardised_bels`). Every layer goes through ``graph``, so that
    `_envelope_head` collects them all: the head's training phase trains exactly these."""
    fixed = dict(use_bias=False, trainable=False, mode=graph.mode, state_batch_size=graph.batch_size or 1)
    spectrum = graph(CausalConv1D(SPECTRUM_WINDOW + 2, SPECTRUM_WINDOW, strides=cfg.envelope_frame // UPSAMPLE_FACTOR,
                                  name="envelope_spectrum",
                                  kernel_initializer=keras.initializers.Constant(spectrum_kernel()),
                                  split_int8_weights=graph.integer_ops, **fixed),
                     audio)
    g = graph(LogPowerSpectrum(graph.integer_ops, name="envelope_log_spectrum"), spectrum)
    if cfg.envelope_relative_levels:
        level = graph(SpectrumLevel(graph.integer_ops, name="envelope_input_level"), spectrum)
        change = graph(CausalConv1D(1, 2, name="envelope_level_change",
                                    kernel_initializer=keras.initializers.Constant([[[-1.0]], [[1.0]]]), **fixed),
                       level)
        # tanh: an onset from silence (or the first frame) reads the same at any recording level.
        change = graph(keras.layers.Activation("tanh", name="envelope_level_change_tanh"), change)
        relative = graph(ShiftByLevel(-1.0, name="envelope_relative_spectrum"), [g, level])
        g = graph(keras.layers.Concatenate(name="envelope_features"), [relative, change])
    g = graph(conv("envelope_project", cfg.envelope_channels, 1), g)
    for i, dilation in enumerate(cfg.envelope_dilations):
        y = graph(ELU(graph.integer_ops, name=f"envelope_elu{i}"), g)
        y = graph(conv(f"envelope_conv{i}", cfg.envelope_channels, 3, dilation=dilation), y)
        g = graph(AddSignals(name=f"envelope_res{i}"), [g, y])
    g = graph(ELU(graph.integer_ops, name="envelope_output_elu"), g)
    levels = graph(conv1d(True, cfg.envelope_bands, 1, name="envelope_level", mode=graph.mode,
                          state_batch_size=graph.batch_size or 1, quantization=graph.quantization), g)
    if cfg.envelope_gap_hz:  # its own conv, so that a model without a gap band can gain one (train.init_from)
        gap_level = graph(conv1d(True, 1, 1, name=GAP_LEVEL_LAYER, mode=graph.mode,
                                 state_batch_size=graph.batch_size or 1, quantization=graph.quantization), g)
        levels = graph(keras.layers.Concatenate(name="envelope_all_levels"), [gap_level, levels])
    if cfg.envelope_relative_levels:
        levels = graph(ShiftByLevel(1.0, name="envelope_absolute_levels"), [levels, level])
    return levels


def build_envelope_predictor(cfg: ModelConfig) -> keras.Model:
    """The generator's envelope predictor alone, for training mode: ``[B, T8, 1]`` 8 kHz audio (T8 a
    multiple of ``envelope_frame / 2``) -> ``[B, frames, head_band_count(cfg)]`` predicted levels. Its layers
    carry the generator's names, so weights fitted here copy into a generator by name. It carries
    ``bwe_parts`` too (its layers the predictor; no switch, no band to scale), so `envelope_head_variables`
    and `activate_envelope_head` (a no-op) apply to it as to a generator."""
    if not cfg.envelope_bands:
        raise ModelConfigError("model.envelope_bands: 0 has no envelope predictor to build")
    graph = _Graph(Modes.TRAINING, None)
    audio = keras.Input(batch_shape=(None, None, 1), name="audio")
    with graph.collecting() as layers:
        levels = _envelope_predictor(cfg, graph, _conv_maker(cfg, Modes.TRAINING, 1, None), audio)
    model = keras.Model(audio, levels, name="envelope_predictor")
    model.bwe_parts = GeneratorParts(envelope_predictor=tuple(layers))
    return model


def _conv_maker(cfg: ModelConfig, mode: Modes, state_batch: int, quantization: QuantSpec | None):
    """``conv(name, filters, kernel, stride=1, dilation=1, sample_groups=1)`` for the generator's trainable
    convs in ``mode``, fake-quantised by ``quantization`` (QAT). Sample groups only apply to causal convs (a
    centred model never streams)."""
    conv_args = dict(mode=mode, state_batch_size=state_batch, weight_norm=cfg.weight_norm and mode is Modes.TRAINING,
                     pad_mode=cfg.pad_mode, quantization=quantization)

    def conv(name, filters, kernel, stride=1, dilation=1, sample_groups=1):
        grouped = dict(sample_groups=sample_groups) if cfg.causal and sample_groups > 1 else {}
        return conv1d(cfg.causal, filters, kernel, strides=stride, dilation_rate=dilation, name=name, **conv_args,
                      **grouped)

    return conv


def activate_envelope_head(model: keras.Model) -> None:
    """Switch the envelope head on (its gains were all 1 until now): the start of its training phase.
    A model without a head is left as it is."""
    switch = generator_parts(model).head_switch
    if switch is not None:
        switch.active.assign(1.0)


def envelope_head_active(model: keras.Model) -> bool:
    """Whether the model has an envelope head and it is switched on."""
    switch = generator_parts(model).head_switch
    return switch is not None and float(switch.active.numpy()) == 1.0


def build_generator(
    cfg: ModelConfig,
    mode: Modes | str = Modes.TRAINING,
    *,
    input_samples: int | None = None,
    batch_size: int | None = None,
    integer_ops: bool = False,
    quantization: QuantSpec | None = None,
) -> keras.Model:
    """Build the generator in ``mode``.

    Args:
      cfg: the model section of a recipe.
      mode: TRAINING (weight norm active when ``cfg.weight_norm``), NON_STREAM_INFERENCE (plain
        kernels, any length), or a streaming mode (one fixed frame per call).
      input_samples: static length of the 8 kHz input. Streaming modes default to one 16 ms frame
        (128 samples) and need a multiple of ``total_stride(cfg) / 2``; offline modes default to a
        dynamic time axis (any length; padded internally to the total stride and cropped back).
      batch_size: static batch size; streaming modes default to 1.
      integer_ops: build the activations from ops that integer (full-integer, 16x8) TFLite conversion
        quantises (`bwe.layers.activations.ELU`); the same function, for integer exports only.
      quantization: fake-quantise the trainable convs' kernels and inputs (`bwe.layers.quant`; the recipe's
        ``quant:`` section, `QuantConfig.spec`); None builds the float model.

    Returns:
      A functional keras.Model. Offline modes: ``[B, T8, 1] -> [B, 2*T8, 1]``. Internal state: the
      same on one frame, call ``reset_generator_states(model)`` between utterances. External state:
      inputs ``[audio, *states]`` and outputs ``[audio, *new_states]``; the state names are in
      ``model.state_input_names`` / ``model.state_output_names``, shapes in ``model.inputs``. Every
      model carries ``model.bwe_parts`` (`GeneratorParts`): handles on the layers training and export act on.
    """
    mode = Modes.parse(mode)
    hop = total_stride(cfg)
    if mode.is_streaming:
        input_samples = FRAME_INPUT_SAMPLES if input_samples is None else input_samples
        batch_size = 1 if batch_size is None else batch_size
        if (input_samples * UPSAMPLE_FACTOR) % hop:
            raise ModelConfigError(
                f"frame of {input_samples} input samples ({input_samples * UPSAMPLE_FACTOR} at 16 kHz) is not a "
                f"multiple of the total stride {hop}")
    common = dict(mode=mode, state_batch_size=batch_size or 1)
    graph = _Graph(mode, batch_size, integer_ops, quantization)

    audio = keras.Input(batch_shape=(batch_size, input_samples, 1), name="audio")
    upsampler = CausalConv1DTranspose(
        1, cfg.upsampler_taps, strides=UPSAMPLE_FACTOR, use_bias=False, trainable=False, name="upsampler",
        # Sample groups: 1 -> 1 transposed, stride 2, 33 taps (a 1 -> 2 conv of 17 taps at 8 kHz): 0.13 -> 0.04 ms.
        sample_groups=8,
        kernel_initializer=keras.initializers.Constant(interpolation_filter(cfg.upsampler_taps)[:, None, None]),
        **common)
    interpolated = graph(upsampler, audio)
    padded_interpolated = interpolated
    if not mode.is_streaming:
        padded_interpolated = PadTimeToMultiple(hop, mode=mode, name="pad_to_stride")(interpolated)
    conv = _conv_maker(cfg, mode, common["state_batch_size"], quantization)
    h, output_conv = _seanet_body(cfg, mode, graph, conv, padded_interpolated)
    if cfg.envelope_bands:
        wideband, parts = _envelope_head(cfg, mode, graph, conv, audio, h, padded_interpolated)
        if not mode.is_streaming:
            wideband = CropTimeToReference(mode=mode, name="crop_to_input")([wideband, interpolated])
    else:
        wideband = _headless_output(cfg, mode, graph, h, interpolated)
        parts = GeneratorParts(highband_gain=output_conv)
    parts = dataclasses.replace(parts, network_output=output_conv)
    return _functional_model(cfg, mode, graph, audio, wideband, parts)


def _seanet_body(cfg: ModelConfig, mode: Modes, graph, conv, h):
    """The SEANet encoder/decoder on the (padded) interpolated signal: its one-channel output, and the
    output conv that makes it (without an envelope head, the last linear layer of the generated band)."""
    conv_args = dict(mode=mode, state_batch_size=graph.batch_size or 1,
                     weight_norm=cfg.weight_norm and mode is Modes.TRAINING, pad_mode="constant",
                     quantization=graph.quantization)

    def elu(name):
        return ELU(graph.integer_ops, name=name)

    def residual_unit(prefix, h, dilation):
        channels = h.shape[-1]
        y = elu(f"{prefix}_elu1")(h)
        y = graph(conv(f"{prefix}_conv", channels, cfg.residual_kernel_size, dilation=dilation), y)
        y = elu(f"{prefix}_elu2")(y)
        y = graph(conv(f"{prefix}_pointwise", channels, 1), y)
        return AddSignals(name=f"{prefix}_add")([h, y])

    channels = block_channels(cfg)
    # Sample groups: 1 -> 8 channels, 7 taps: 0.16 -> 0.11 ms.
    h = graph(conv("input_conv", channels[0], cfg.kernel_size, sample_groups=2), h)
    skips = []
    for b, stride in enumerate(cfg.strides):
        for u, dilation in enumerate(cfg.dilations):
            h = residual_unit(f"enc{b}_res{u}", h, dilation)
        skips.append(h)
        h = elu(f"enc{b}_elu")(h)
        h = graph(conv(f"enc{b}_down", channels[b + 1], 2 * stride, stride=stride), h)
    h = elu("bottleneck_elu")(h)
    h = graph(conv("bottleneck", channels[-1], cfg.kernel_size), h)
    for b in reversed(range(len(cfg.strides))):
        stride = cfg.strides[b]
        h = elu(f"dec{b}_elu")(h)
        h = graph(conv1d_transpose(cfg.causal, channels[b], 2 * stride, strides=stride, name=f"dec{b}_up",
                                   **conv_args), h)
        if cfg.skip_connections:
            h = AddSignals(name=f"dec{b}_skip")([h, skips[b]])
        for u, dilation in enumerate(cfg.dilations):
            h = residual_unit(f"dec{b}_res{u}", h, dilation)
    h = elu("output_elu")(h)
    output_conv = conv("output_conv", 1, cfg.last_kernel_size, sample_groups=4)  # 8 -> 1, 7 taps: 0.72 -> 0.35 ms
    return graph(output_conv, h), output_conv


def _headless_output(cfg: ModelConfig, mode: Modes, graph, h, interpolated):
    """Without an envelope head: the network's output through the band split's high-pass beside the
    interpolated input (``highband_residual``), or simply added to it."""
    if not mode.is_streaming:
        h = CropTimeToReference(mode=mode, name="crop_to_input")([h, interpolated])
    if not cfg.highband_residual:
        return AddSignals(name="wideband")([interpolated, h])
    split_taps = band_split_taps(cfg)
    band_split = CausalConv1D(
        1, split_taps, use_bias=False, trainable=False, name="band_split",
        sample_groups=8,  # 2 -> 1, 33 taps: 0.83 -> 0.16 ms
        mode=mode, state_batch_size=graph.batch_size or 1,
        kernel_initializer=keras.initializers.Constant(band_split_kernel(split_taps)))
    both = keras.layers.Concatenate(axis=-1, name="interpolated_and_residual")([interpolated, h])
    return graph(band_split, both)


def _functional_model(cfg: ModelConfig, mode: Modes, graph, audio, wideband, parts: GeneratorParts) -> keras.Model:
    """The keras.Model, with the state names the streaming runtime feeds, the config it was built from and
    the handles on its parts."""
    if mode is Modes.STREAM_EXTERNAL_STATE_INFERENCE:
        model = keras.Model([audio] + graph.state_inputs, [wideband] + graph.state_outputs,
                            name=f"seanet_{mode.value}")
        model.state_input_names = [t.name for t in graph.state_inputs]
        model.state_output_names = [f"{name}_next" for name in model.state_input_names]
    else:
        model = keras.Model(audio, wideband, name=f"seanet_{mode.value}")
        model.state_input_names = []
        model.state_output_names = []
    model.bwe_model_config = dataclasses.replace(cfg)
    model.bwe_quantization = graph.quantization
    model.bwe_mode = mode
    model.bwe_parts = parts  # a plain dataclass: no checkpoint dependency, the checkpoint format is unchanged
    return model


def streaming_layers(model: keras.Model) -> list:
    """The model's streaming-aware convolution layers, in graph order."""
    return [layer for layer in model.layers if isinstance(layer, STREAMING_CONV_LAYERS)]


def reset_generator_states(model: keras.Model) -> None:
    """Zero every internal state (STREAM_INTERNAL_STATE_INFERENCE) before a new utterance."""
    for layer in streaming_layers(model):
        layer.reset_states()


def count_params(cfg: ModelConfig) -> int:
    """Trainable parameters of the generator (weight norm folded, the fixed interpolator excluded)."""
    model = build_generator(cfg, Modes.NON_STREAM_INFERENCE, input_samples=FRAME_INPUT_SAMPLES, batch_size=1)
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def macs_per_layer(cfg: ModelConfig) -> dict[str, int]:
    """Multiply-accumulates of each convolution for one 16 ms frame (128 input samples)."""
    model = build_generator(cfg, Modes.NON_STREAM_INFERENCE, input_samples=FRAME_INPUT_SAMPLES, batch_size=1)
    macs = {}
    for layer in streaming_layers(model):
        source = layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input
        macs[layer.name] = int(layer.macs(source.shape[1]))
    return macs


def macs_per_frame(cfg: ModelConfig) -> int:
    """Multiply-accumulates per 16 ms frame, from the convolutions' shapes (activations/adds excluded)."""
    return sum(macs_per_layer(cfg).values())
