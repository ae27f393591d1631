"""Recipes: YAML files loaded into typed dataclasses.

A recipe has one section per stage (model, discriminators, losses, optim, data, train, export).
Each section is a dataclass below; loading checks every key and type against it, so a typo or a
wrong type fails at load time with the full key path (``model.strides[2]``) instead of deep
inside training. ``key=value`` overrides from the command line go through the same checks.

This module imports no TensorFlow: `bwe-export --recipe` and the inference tools read recipes too.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from bwe.data.datasets import missing_data_hint
from bwe.files import replacing


class RecipeError(ValueError):
    """A recipe key is unknown, missing or of the wrong type. The message names the key path."""


INPUT_RATE = 8000
OUTPUT_RATE = 16000
UPSAMPLE_FACTOR = OUTPUT_RATE // INPUT_RATE
FRAME_INPUT_SAMPLES = 128  # 16 ms at 8 kHz: the streaming frame
FRAME_OUTPUT_SAMPLES = FRAME_INPUT_SAMPLES * UPSAMPLE_FACTOR


class ModelConfigError(RecipeError):
    """A model configuration that cannot be built; the message names the offending field."""


def total_stride(cfg: ModelConfig) -> int:
    """Downsampling factor of the encoder at 16 kHz (16 kHz samples per bottleneck step)."""
    return math.prod(cfg.strides)


def band_split_taps(cfg: ModelConfig) -> int:
    """Taps of the band split's high-pass: ``cfg.split_taps``, or the interpolator's when 0."""
    return cfg.split_taps or cfg.upsampler_taps


GAP_BAND_RANGE_HZ = (3000.0, 3900.0)  # where model.envelope_gap_hz may start the gap band


def head_band_count(cfg: ModelConfig) -> int:
    """Bands the envelope head scales: ``cfg.envelope_bands`` above 4 kHz, and the gap band below when
    ``cfg.envelope_gap_hz`` is set (0 without a head)."""
    if not cfg.envelope_bands:
        return 0
    return cfg.envelope_bands + (1 if cfg.envelope_gap_hz else 0)


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise ModelConfigError naming the field if ``cfg`` cannot be built."""
    def positive(name, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelConfigError(f"model.{name}: must be a positive integer, got {value!r}")

    for name in ("channels", "max_channels", "kernel_size", "residual_kernel_size", "last_kernel_size",
                 "upsampler_taps"):
        positive(name, getattr(cfg, name))
    if not cfg.strides:
        raise ModelConfigError("model.strides: at least one downsampling block is needed")
    for i, s in enumerate(cfg.strides):
        positive(f"strides[{i}]", s)
    if not cfg.dilations:
        raise ModelConfigError("model.dilations: at least one residual unit per block is needed")
    for i, d in enumerate(cfg.dilations):
        positive(f"dilations[{i}]", d)
    if cfg.max_channels < cfg.channels:
        raise ModelConfigError(f"model.max_channels ({cfg.max_channels}) is below model.channels ({cfg.channels})")
    if cfg.upsampler_taps % 2 == 0 or cfg.upsampler_taps < 3:
        raise ModelConfigError(
            f"model.upsampler_taps: must be odd and >= 3 so the interpolator's group delay is a whole number of "
            f"16 kHz samples, got {cfg.upsampler_taps}")
    if cfg.split_taps and (isinstance(cfg.split_taps, bool) or not isinstance(cfg.split_taps, int)
                           or cfg.split_taps % 2 == 0 or cfg.split_taps < 3):
        raise ModelConfigError(
            f"model.split_taps: must be 0 (the interpolator's taps) or odd and >= 3 so the band split's group delay "
            f"is a whole number of 16 kHz samples, got {cfg.split_taps!r}")
    if cfg.pad_mode not in ("constant", "reflect"):
        raise ModelConfigError(f"model.pad_mode: must be 'constant' or 'reflect', got {cfg.pad_mode!r}")
    if cfg.causal and cfg.pad_mode != "constant":
        raise ModelConfigError(
            "model.pad_mode: reflect padding reads the signal's future and cannot stream; a causal model pads "
            "with zeros (set pad_mode: constant, or causal: false for an offline-only model)")
    if isinstance(cfg.envelope_bands, bool) or not isinstance(cfg.envelope_bands, int) or cfg.envelope_bands < 0:
        raise ModelConfigError(f"model.envelope_bands: must be an integer >= 0 (0 = no envelope head), got "
                               f"{cfg.envelope_bands!r}")
    if cfg.envelope_gap_hz and not cfg.envelope_bands:
        raise ModelConfigError("model.envelope_gap_hz: the gap band is one of the envelope head's bands; set "
                               "model.envelope_bands too")
    if cfg.envelope_bands:
        positive("envelope_channels", cfg.envelope_channels)
        positive("envelope_crossfade", cfg.envelope_crossfade)
        if not cfg.envelope_dilations:
            raise ModelConfigError("model.envelope_dilations: the envelope head needs at least one conv")
        for i, d in enumerate(cfg.envelope_dilations):
            positive(f"envelope_dilations[{i}]", d)
        positive("envelope_filter_taps", cfg.envelope_filter_taps)
        positive("envelope_frame", cfg.envelope_frame)
        if cfg.envelope_frame % UPSAMPLE_FACTOR or total_stride(cfg) % cfg.envelope_frame:
            raise ModelConfigError(f"model.envelope_frame: must be even and divide the total stride "
                                   f"{total_stride(cfg)}, got {cfg.envelope_frame}")
        lookahead = cfg.envelope_lookahead_frames
        if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 0:
            raise ModelConfigError(f"model.envelope_lookahead_frames: must be an integer >= 0, got {lookahead!r}")
        if cfg.envelope_crossfade > cfg.envelope_frame:
            raise ModelConfigError(f"model.envelope_crossfade: at most one envelope frame "
                                   f"({cfg.envelope_frame}), got {cfg.envelope_crossfade}")
        if cfg.envelope_filter_taps % 2 == 0:
            raise ModelConfigError(f"model.envelope_filter_taps: must be odd (a whole-sample delay), got "
                                   f"{cfg.envelope_filter_taps}")
        gap = cfg.envelope_gap_hz
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or (
                gap and not GAP_BAND_RANGE_HZ[0] <= gap <= GAP_BAND_RANGE_HZ[1]):
            raise ModelConfigError(f"model.envelope_gap_hz: 0 (no gap band) or a frequency in "
                                   f"{GAP_BAND_RANGE_HZ[0]:.0f}-{GAP_BAND_RANGE_HZ[1]:.0f} Hz, got {gap!r}")
        if not cfg.highband_residual:
            raise ModelConfigError("model.envelope_bands: the envelope head splits the generated band, which needs "
                                   "model.highband_residual: true")
        if total_stride(cfg) % UPSAMPLE_FACTOR:
            raise ModelConfigError(f"model.envelope_bands: the envelope head's frame is the total stride, which must "
                                   f"be even to be a whole number of input samples (strides {cfg.strides})")
    hop = total_stride(cfg)
    if cfg.causal and FRAME_OUTPUT_SAMPLES % hop:
        raise ModelConfigError(
            f"model.strides: the product of the strides ({hop}) must divide the {FRAME_OUTPUT_SAMPLES}-sample "
            f"(16 ms) output frame of the causal model, e.g. [2, 2, 8, 8]")


@dataclass
class ModelConfig:
    """SEANet generator. Shapes in docstrings are channels-last: [batch, time, channels]."""

    causal: bool = True
    channels: int = 8  # channels of the first conv; doubled at every downsampling block
    max_channels: int = 128
    strides: list[int] = field(default_factory=lambda: [2, 2, 8, 8])
    kernel_size: int = 7
    residual_kernel_size: int = 7
    dilations: list[int] = field(default_factory=lambda: [1, 3, 9])
    last_kernel_size: int = 7
    skip_connections: bool = True
    weight_norm: bool = True  # training-time only; folded into plain kernels for inference/export
    pad_mode: str = "constant"  # 'constant' (zeros) or 'reflect'; reflect is offline-only (causal: false)
    # Fixed windowed-sinc 8 -> 16 kHz interpolator inside the model; odd, so that its group delay
    # ((taps - 1) / 2 samples at 16 kHz) is a whole number of samples.
    upsampler_taps: int = 33
    # Pass the network's output through the interpolator's complementary (half-band) high-pass
    # before adding it: the 0-4 kHz band of the input then reaches the output untouched, and the
    # network only learns the missing band. Costs one more interpolator delay (16 samples, 1 ms).
    highband_residual: bool = True
    # Taps of that high-pass (0: upsampler_taps, the interpolator's complement). Its transition band
    # lets the network's own 0-4 kHz output (tens of dB above the band it makes) through just below
    # 4 kHz, on top of the input; a longer split keeps it out (docs/experiments/band-split.md), for
    # (split_taps - upsampler_taps) / 2 more samples of delay. A fixed filter: a trained model can be
    # exported again with another split (bwe-export --set model.split_taps=N).
    split_taps: int = 0
    # Envelope head (0 = off; needs highband_residual). A fixed, complementary filter bank
    # (``envelope_filter_taps`` taps, one more delay of (taps - 1) / 2 samples) splits the generated
    # band into this many equal bands from 4 to 8 kHz. An envelope predictor reads the input's log
    # power spectrum (a 16 ms window every ``envelope_frame`` output samples) through a residual
    # stack of causal convs (``envelope_channels`` wide, kernel 3, one per ``envelope_dilations``)
    # and predicts each band's level for each frame; each band is scaled to that level (the ratio of
    # the predicted level to the band's own, crossfaded from the previous frame's over
    # ``envelope_crossfade`` samples). The GAN invents the band's fine structure, the predictor its
    # loudness: a regression on log band energies (train.envelope_head_steps), the conditional mean.
    # It is the identity (every gain 1) until its training phase starts.
    envelope_bands: int = 0
    envelope_filter_taps: int = 33
    envelope_channels: int = 64
    envelope_dilations: list[int] = field(default_factory=lambda: [1, 2])
    envelope_frame: int = 256  # 16 kHz samples per envelope frame; divides the total stride
    # Frames the predictor reads ahead of the frame it scales: the output waits as long (an offline
    # model's look-ahead; 0 for the 16 ms streaming model).
    envelope_lookahead_frames: int = 0
    envelope_crossfade: int = 256
    # Predict levels relative to each frame's input level (its 0-4 kHz mean power), from the spectrum
    # relative to that level and the level's change since the previous frame: a gain on the input then
    # moves every predicted level by exactly that gain, so recording levels never seen in training
    # (a loud file, a quiet line) get the band they need instead of an extrapolation.
    envelope_relative_levels: bool = False
    # A gap band below the split (0 = none): the network's output from this frequency up to the split,
    # scaled to its own predicted level like the bands above 4 kHz (the head's first band; its gain is 0
    # until the head's phase). It restores what a channel removed under 4 kHz (a telephone band's
    # 3.4-4 kHz): the predictor sees the input's spectrum, so it learns to add nothing where the input
    # has that band. Its filter has the band split's and the bank's delay, so the latency is unchanged.
    envelope_gap_hz: float = 0.0

    def __post_init__(self) -> None:
        validate_model_config(self)


def _check_choice(path: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RecipeError(f"{path}: {value!r} is not one of {', '.join(choices)}")


def _check_positive(path: str, value: float) -> None:
    if value <= 0:
        raise RecipeError(f"{path}: must be > 0, got {value!r}")


INT8_MODES = ("dynamic", "full", "16x8")
INTEGER_MODES = ("full", "16x8")  # every tensor integer, ranges calibrated on speech
EXPORT_WEIGHT_BITS = (8, 4)


@dataclass
class ExportConfig:
    # How streaming_int8.tflite is quantised. 'dynamic': int8 weights, activations quantised per call
    # from their actual range (XNNPACK's int8 kernels on CPU). 'full': every tensor int8 with ranges
    # calibrated once (what integer-only NPUs/DSPs need); '16x8': the same with int16 activations and
    # int8 weights. TFLite has one scale per activation tensor, and the generator's tensors carry
    # content far louder than the band it generates (see docs/export-and-stream.md), so both integer
    # modes lose most of the generated band: use them only for such hardware, and check the SNRs the
    # export records.
    int8_mode: str = "dynamic"
    int8_calibration_frames: int = 400  # 'full' and '16x8' only: frames streamed through the float model to calibrate
    # 'full' and '16x8' only: false leaves out the names of the integer files' inner tensors (a tenth of a
    # 16x8 file's bytes); the interface keeps its names. python -m eval.research integer-snr needs them.
    int8_tensor_names: bool = True
    # 'dynamic' only: 4 stores the trained convs' weights in 4 bits (per output channel, LiteRT's int4
    # hybrid convs), two thirds of the int8 file's bytes; fixed filters stay float32 (bwe/int4_weights.py).
    weight_bits: int = 8
    # Scales the generated 4-8 kHz band of the exported files (the network's output layer, which reaches
    # the output only through the band-split high-pass, or with an envelope head the conv that hands on
    # its gains; the interpolated input is untouched; needs model.highband_residual). Below 1 trades
    # spectral distance for fewer audible errors: an invented band that is too loud is worse than one
    # too quiet.
    highband_gain: float = 1.0
    # With an envelope head: one more factor per band, low to high (empty: all 1), on top of highband_gain,
    # for a predictor whose level is off in some bands alone (measured on training files).
    band_gains: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_choice("export.int8_mode", self.int8_mode, INT8_MODES)
        _check_positive("export.int8_calibration_frames", self.int8_calibration_frames)
        if self.weight_bits not in EXPORT_WEIGHT_BITS:
            raise RecipeError(f"export.weight_bits: must be one of {EXPORT_WEIGHT_BITS}, got {self.weight_bits!r}")
        if self.weight_bits == 4 and self.int8_mode != "dynamic":
            raise RecipeError("export.weight_bits: 4 is made for export.int8_mode: dynamic only (the 4-bit filters are "
                              f"written into the float file; integer files stay 8-bit), got int8_mode {self.int8_mode!r}")
        if not self.highband_gain > 0:
            raise RecipeError(f"export.highband_gain: must be > 0, got {self.highband_gain!r}")
        if not all(g > 0 for g in self.band_gains):
            raise RecipeError(f"export.band_gains: every gain must be > 0, got {self.band_gains!r}")


@dataclass
class QuantConfig:
    # Quantisation-aware training (bwe.layers.quant): the generator's trainable convs compute with
    # fake-quantised kernels (symmetric, per output channel) and inputs (per tensor, so the streaming
    # states too; ranges tracked in training). Fine-tune a float model with it (train.init_from).
    enabled: bool = False
    weight_bits: int = 8  # 4-8
    activation_bits: int = 8  # 8 (int8, asymmetric), 16 (int16, symmetric: TFLite's 16x8 mode) or 0 (float: dynamic range)
    range_momentum: float = 0.99

    def __post_init__(self) -> None:
        try:
            self.spec()
        except ValueError as e:
            raise RecipeError(f"quant.{e}") from None

    def spec(self):
        """The per-layer `bwe.layers.quant.QuantSpec`, or None when QAT is off."""
        from bwe.layers.quant import QuantSpec

        spec = QuantSpec(self.weight_bits, self.activation_bits, self.range_momentum)
        return spec if self.enabled else None


@dataclass
class DiscriminatorConfig:
    """GAN discriminators (bwe.models.discriminators); a list left empty switches that family off.

    STFT discriminator (EnCodec): one sub-discriminator per FFT size, hop = fft_size // stft_hop_divisor,
    2-D convs over [time, frequency] with stride 2 over frequency and time dilations stft_dilations.
    Waveform discriminator (MelGAN): one sub-discriminator per scale (signal, 2x, 4x average-pooled),
    a k15 conv then len(waveform_strides) grouped strided convs, channels x stride up to max.
    """

    stft_fft_sizes: list[int] = field(default_factory=lambda: [512, 1024, 2048])
    stft_hop_divisor: int = 4
    stft_channels: int = 32
    stft_dilations: list[int] = field(default_factory=lambda: [1, 2, 4])
    waveform_scales: int = 3  # 0 switches the waveform discriminator off
    waveform_channels: int = 16
    waveform_max_channels: int = 1024
    waveform_strides: list[int] = field(default_factory=lambda: [4, 4, 4, 4])
    waveform_groups_divisor: int = 4  # groups = input channels // this (MelGAN)

    def __post_init__(self) -> None:
        for i, n in enumerate(self.stft_fft_sizes):
            if n < 16 or n % self.stft_hop_divisor:
                raise RecipeError(
                    f"discriminators.stft_fft_sizes[{i}]: {n} must be >= 16 and divisible by "
                    f"stft_hop_divisor={self.stft_hop_divisor}"
                )
        for name in ("stft_hop_divisor", "stft_channels", "waveform_channels", "waveform_max_channels",
                     "waveform_groups_divisor"):
            _check_positive(f"discriminators.{name}", getattr(self, name))
        if self.waveform_scales < 0:
            raise RecipeError(f"discriminators.waveform_scales: must be >= 0, got {self.waveform_scales}")
        if not self.stft_fft_sizes and self.waveform_scales == 0:
            raise RecipeError("discriminators: both stft_fft_sizes and waveform_scales are off; keep at least one")


@dataclass
class LossConfig:
    """Loss terms and weights (bwe.losses). Defaults follow SoundStream: adversarial 1, feature matching 100,
    reconstruction 1 (feature matching is a mean over layers x discriminators, as in SoundStream)."""

    adversarial: str = "hinge"  # hinge | lsgan
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 100.0
    reconstruction_weight: float = 1.0  # multi-resolution STFT: spectral convergence + log magnitude
    stft_fft_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    stft_hop_divisor: int = 4
    mel_weight: float = 0.0  # optional L1 log-mel loss over the same FFT sizes; 0 = off
    mel_bands: int = 80
    envelope_weight: float = 0.0  # optional squared log10 error of 500 Hz band energies above 4 kHz; 0 = off
    # How much more the envelope loss (envelope_weight and the envelope head's phase) weights a band
    # too loud than one too quiet (bwe.losses.highband_envelope_loss); 1 = symmetric.
    envelope_overshoot_weight: float = 1.0
    # Weight each frame's band error in the envelope loss by the louder of the reference's and the
    # output's band energy to this power (relative to the example's mean band energy; 0 = every frame
    # alike). A level error where either band is strong is heard (and costs WB-PESQ) far more than one
    # where both are faint; 0.5 weights the squared error by the square of a loudness-like power^0.25.
    envelope_energy_exponent: float = 0.0
    # Optional: the network's own output (before the band split high-passes it) kept free of 0-3.5 kHz
    # content (bwe.losses.network_lowband_loss). A float model's output does not change, since the band
    # split removes that band, but an integer model's tensor holds one scale for both bands; 0 = off.
    network_lowband_weight: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("losses.adversarial", self.adversarial, ("hinge", "lsgan"))
        for name in ("adversarial_weight", "feature_matching_weight", "reconstruction_weight", "mel_weight",
                     "envelope_weight", "network_lowband_weight"):
            if getattr(self, name) < 0:
                raise RecipeError(f"losses.{name}: must be >= 0, got {getattr(self, name)!r}")
        if not self.stft_fft_sizes:
            raise RecipeError("losses.stft_fft_sizes: needs at least one FFT size")
        for i, n in enumerate(self.stft_fft_sizes):
            if n < 16 or n % self.stft_hop_divisor:
                raise RecipeError(
                    f"losses.stft_fft_sizes[{i}]: {n} must be >= 16 and divisible by "
                    f"stft_hop_divisor={self.stft_hop_divisor}"
                )
        _check_positive("losses.mel_bands", self.mel_bands)
        if self.envelope_overshoot_weight < 1:
            raise RecipeError(f"losses.envelope_overshoot_weight: must be >= 1, got {self.envelope_overshoot_weight!r}")
        if not 0 <= self.envelope_energy_exponent <= 1:
            raise RecipeError(f"losses.envelope_energy_exponent: must be in [0, 1], got {self.envelope_energy_exponent!r}")


@dataclass
class OptimConfig:
    """Adam for both networks (MelGAN: lr 1e-4, betas 0.5/0.9)."""

    generator_lr: float = 1e-4
    discriminator_lr: float = 1e-4
    beta_1: float = 0.5
    beta_2: float = 0.9
    grad_clip_norm: float = 10.0  # global-norm clip of each network's gradients; 0 = off
    lr_schedule: str = "constant"  # constant | cosine (decays to lr * lr_min_ratio at train.steps)
    lr_min_ratio: float = 0.1
    # Adam's rate for the envelope head, cosine-decayed to a tenth over train.envelope_head_steps.
    envelope_lr: float = 1e-3

    def __post_init__(self) -> None:
        _check_positive("optim.generator_lr", self.generator_lr)
        _check_positive("optim.discriminator_lr", self.discriminator_lr)
        _check_positive("optim.envelope_lr", self.envelope_lr)
        for name in ("beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise RecipeError(f"optim.{name}: must be in [0, 1), got {getattr(self, name)!r}")
        if self.grad_clip_norm < 0:
            raise RecipeError(f"optim.grad_clip_norm: must be >= 0 (0 = off), got {self.grad_clip_norm!r}")
        _check_choice("optim.lr_schedule", self.lr_schedule, ("constant", "cosine"))
        if not 0 <= self.lr_min_ratio <= 1:
            raise RecipeError(f"optim.lr_min_ratio: must be in [0, 1], got {self.lr_min_ratio!r}")


@dataclass
class DataConfig:
    """Training data (bwe.data): where the audio is, how examples are cut, levelled and degraded.

    ``kind`` folder: ``train_dir``/``valid_dir`` are folders of audio files (searched recursively).
    ``kind`` librispeech/vctk: ``train_dir`` is the corpus root given to ``python -m bwe.data.prepare``
    and the subsets pick the files (librispeech: subset names, default train-clean-100 / dev-clean;
    vctk: ``train`` = all but the 8 held-out test speakers, ``test`` = those 8, or speaker IDs);
    ``valid_dir`` defaults to ``train_dir`` for them. Paths are checked by :meth:`validate`, which the
    trainer calls: a recipe read elsewhere (export, a copied run directory) does not need the data.
    """

    kind: str = "folder"  # folder | librispeech | vctk
    train_dir: str = ""
    valid_dir: str | None = None  # folder kind without it: no validation set
    train_subsets: list[str] = field(default_factory=list)
    valid_subsets: list[str] = field(default_factory=list)
    vctk_mic: str = "mic1"  # VCTK 0.92 microphone: mic1 | mic2
    segment_samples: int = 8192  # wideband (16 kHz) samples per training example; multiple of 256
    min_seconds: float = 0.5  # shorter files are skipped (and counted)
    loudness_lufs: float = -26.0  # each file is levelled to this integrated loudness (BS.1770) once
    # Training files whose content stops below this frequency are skipped (bwe.data.audio.
    # effective_bandwidth_hz): a target without 7-8 kHz teaches the model to leave that band empty.
    # 0 = keep every file.
    min_bandwidth_hz: float = 0.0
    # Narrowband simulation (bwe.data.degrade.simulate_narrowband), drawn anew for every example:
    cutoff_hz_range: list[float] = field(default_factory=lambda: [3400.0, 4000.0])  # random low-pass cutoff
    gain_db_range: list[float] = field(default_factory=lambda: [-18.0, 6.0])  # level change, target too
    companding_probability: float = 0.5  # chance of 8-bit mu-law or A-law companding
    highpass_probability: float = 0.0  # chance of a telephone channel's lower edge (high-pass)
    highpass_hz_range: list[float] = field(default_factory=lambda: [200.0, 400.0])  # its random cutoff
    # Speed perturbation of training segments: each played faster by a random factor in [low, high]
    # (pitch, formants and the band all move up; new voices from the same corpus). At least 1: a slower
    # segment would end below 8 kHz and teach an empty top band. [1, 1] = off.
    speed_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # Real codecs (bwe.data.codecs, run by ffmpeg): with this chance a training example's narrowband is
    # cut from one of ``codecs``' round trips of its file instead (a random channel as above per file and
    # codec, no companding, no speed change), all made once when the run starts. 0 = off.
    codec_probability: float = 0.0
    codecs: list[str] = field(default_factory=lambda: ["g726", "gsm"])
    # Light background noise on the narrowband input alone (the target stays clean, so the model learns
    # not to extend the noise): with this chance, Gaussian noise of a random spectral tilt (0 to -6 dB
    # per octave) at a signal-to-noise ratio drawn from ``noise_snr_db_range``. 0 = off.
    noise_probability: float = 0.0
    noise_snr_db_range: list[float] = field(default_factory=lambda: [15.0, 40.0])
    num_parallel_calls: int = 0  # example-making workers; 0 = tf.data AUTOTUNE
    cache: bool = True  # decode every file to 16 kHz once, keep it in memory as int16 (7 h = 0.8 GB)

    def __post_init__(self) -> None:
        _check_choice("data.kind", self.kind, ("folder", "librispeech", "vctk"))
        _check_choice("data.vctk_mic", self.vctk_mic, ("mic1", "mic2"))
        if self.segment_samples <= 0 or self.segment_samples % 256:
            raise RecipeError(
                f"data.segment_samples: {self.segment_samples} must be a positive multiple of 256 "
                "(one 16 ms output frame)"
            )
        if self.min_seconds < 0:
            raise RecipeError(f"data.min_seconds: must be >= 0, got {self.min_seconds!r}")
        if not -70.0 <= self.loudness_lufs <= 0.0:
            raise RecipeError(f"data.loudness_lufs: must be in [-70, 0] LUFS, got {self.loudness_lufs!r}")
        if not 0.0 <= self.min_bandwidth_hz <= 8000.0:
            raise RecipeError(f"data.min_bandwidth_hz: must be in [0, 8000] Hz (0 = off), got {self.min_bandwidth_hz!r}")
        if not 0.0 <= self.companding_probability <= 1.0:
            raise RecipeError(f"data.companding_probability: must be in [0, 1], got {self.companding_probability!r}")
        if not 0.0 <= self.highpass_probability <= 1.0:
            raise RecipeError(f"data.highpass_probability: must be in [0, 1], got {self.highpass_probability!r}")
        hp = self.highpass_hz_range
        if len(hp) != 2 or not 0.0 < hp[0] <= hp[1] < 1000.0:
            raise RecipeError(f"data.highpass_hz_range: expected [low, high] with 0 < low <= high < 1000 Hz, got {hp!r}")
        speed = self.speed_range
        if len(speed) != 2 or not 1.0 <= speed[0] <= speed[1] <= 1.5:
            raise RecipeError(f"data.speed_range: expected [low, high] with 1 <= low <= high <= 1.5, got {speed!r}")
        for name in ("codec_probability", "noise_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RecipeError(f"data.{name}: must be in [0, 1], got {getattr(self, name)!r}")
        from bwe.data.codecs import CODECS  # here, not at the top: bwe.data.codecs imports this module

        unknown = [c for c in self.codecs if c not in CODECS]
        if unknown or (self.codec_probability and not self.codecs):
            raise RecipeError(f"data.codecs: expected a non-empty list of {', '.join(CODECS)}, got {self.codecs!r}")
        snr = self.noise_snr_db_range
        if len(snr) != 2 or snr[0] > snr[1]:
            raise RecipeError(f"data.noise_snr_db_range: expected [low, high] with low <= high dB, got {snr!r}")
        if len(self.gain_db_range) != 2 or self.gain_db_range[0] > self.gain_db_range[1]:
            raise RecipeError(f"data.gain_db_range: expected [low, high] with low <= high, got {self.gain_db_range!r}")
        low, high = self.cutoff_hz_range if len(self.cutoff_hz_range) == 2 else (1.0, 0.0)
        if not 0.0 < low <= high < 8000.0:
            raise RecipeError(
                f"data.cutoff_hz_range: expected [low, high] with 0 < low <= high < 8000 Hz, got {self.cutoff_hz_range!r}"
            )
        if self.num_parallel_calls < 0:
            raise RecipeError(f"data.num_parallel_calls: must be >= 0 (0 = AUTOTUNE), got {self.num_parallel_calls!r}")

    def validate(self) -> None:
        """Check that the data folders exist; raises RecipeError naming the key."""
        if not self.train_dir:
            raise RecipeError("data.train_dir: not set; give the folder (or corpus root) of the training audio"
                              f" — {missing_data_hint(self, 'data.train_dir')}")
        if not os.path.isdir(self.train_dir):
            raise RecipeError(f"data.train_dir: {self.train_dir} is not a directory"
                              f" — {missing_data_hint(self, 'data.train_dir')}")
        if self.valid_dir is not None and not os.path.isdir(self.valid_dir):
            raise RecipeError(f"data.valid_dir: {self.valid_dir} is not a directory"
                              f" — {missing_data_hint(self, 'data.valid_dir')}")


@dataclass
class TrainConfig:
    """The training loop (bwe.train). Step counts are generator steps; ``steps`` is the total, so a
    resumed run continues up to it."""

    steps: int = 200_000
    batch_size: int = 16  # global batch, split over replicas
    seed: int = 0
    warmup_steps: int = 0  # generator trained on reconstruction only; discriminators start after
    log_every: int = 100
    valid_every: int = 2000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # latest checkpoints kept in RUN/checkpoints
    keep_periodic_every: int = 0  # also keep every N-th step forever in RUN/checkpoints/periodic; 0 = off
    audio_every: int = 0  # TensorBoard audio/spectrogram examples; 0 = at every validation
    valid_max_files: int = 32
    valid_max_seconds: float = 10.0  # longer validation files are cut
    audio_examples: int = 2
    nan_policy: str = "skip"  # skip (count the step, apply nothing) | stop (exit, checkpoints untouched)
    # The last N of ``steps`` fit the envelope head alone (model.envelope_bands): the rest of the generator
    # and the discriminators frozen, the envelope loss (bwe.losses.highband_envelope_loss) its only loss,
    # optimised with optim.envelope_lr. Before them the head stays the identity. 0 = never fitted.
    envelope_head_steps: int = 0
    max_consecutive_nonfinite: int = 20  # with nan_policy=skip, stop after this many in a row
    # A new run (no checkpoint yet) starts its generator from these weights: an exported folder (its
    # generator.weights.h5, e.g. bwe/pretrained to fine-tune the bundled model) or a .weights.h5 file.
    # The model section must build the same generator. "" = random initialisation.
    init_from: str = ""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "valid_every", "checkpoint_every", "keep_checkpoints",
                     "valid_max_files", "max_consecutive_nonfinite"):
            _check_positive(f"train.{name}", getattr(self, name))
        for name in ("warmup_steps", "keep_periodic_every", "audio_every", "audio_examples", "envelope_head_steps"):
            if getattr(self, name) < 0:
                raise RecipeError(f"train.{name}: must be >= 0, got {getattr(self, name)!r}")
        _check_positive("train.valid_max_seconds", self.valid_max_seconds)
        _check_choice("train.nan_policy", self.nan_policy, ("skip", "stop"))


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    discriminators: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)


_YAML_11_MISSED_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp``; raise RecipeError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, path)
            except RecipeError:
                pass
        raise RecipeError(f"{path}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{path or 'recipe'}: expected a mapping, got {type(value).__name__}")
        return _build_dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML_11_MISSED_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 (PyYAML) reads 5e-5, without a dot, as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{path}: expected a string, got {value!r}")
        return value
    raise RecipeError(f"{path}: unsupported field type {tp!r}")


def _build_dataclass(cls: type, values: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise RecipeError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _convert(values[f.name], hints[f.name], f"{path}.{f.name}" if path else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{path}.{f.name}: missing required key" if path else f"{f.name}: missing")
    return cls(**kwargs)


def _apply_override(tree: dict, override: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested dict; the value is parsed as YAML."""
    if "=" not in override:
        raise RecipeError(f"override {override!r}: expected key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"override {override!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw)


def recipe_from_dict(values: dict, overrides: typing.Sequence[str] = ()) -> Recipe:
    tree = dict(values or {})
    for override in overrides:
        _apply_override(tree, override)
    return _convert(tree, Recipe, "")


EXTENDS_KEY = "extends"  # a recipe may start from another (a path relative to it) and change some keys


def _read_recipe_values(path: str | os.PathLike, chain: tuple[str, ...] = ()) -> dict:
    """The recipe's sections as a dict, with ``extends:`` resolved: the base recipe's sections, each
    updated key by key from this file's."""
    real = os.path.realpath(path)
    if real in chain:
        raise RecipeError(f"{path}: {EXTENDS_KEY} loops back to itself ({' -> '.join(chain + (real,))})")
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if values is not None and not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections")
    values = dict(values or {})
    base = values.pop(EXTENDS_KEY, None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise RecipeError(f"{path}: {EXTENDS_KEY}: expected the path of another recipe, got {base!r}")
    merged = _read_recipe_values(os.path.join(os.path.dirname(path), base), chain + (real,))
    for section, keys in values.items():
        if isinstance(keys, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **keys}
        else:
            merged[section] = keys
    return merged


def load_recipe(path: str | os.PathLike, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Load a YAML recipe (resolving ``extends:``), apply ``key=value`` overrides, and check it against `Recipe`."""
    values = _read_recipe_values(path)
    try:
        return recipe_from_dict(values, overrides)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the fully resolved recipe atomically (temp file + rename)."""
    with replacing(path, suffix=".yaml") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(recipe_to_dict(recipe), f, sort_keys=False)
