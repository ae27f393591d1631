"""Training losses: adversarial (hinge, LSGAN), feature matching, multi-resolution STFT and mel reconstruction.

Discriminator outputs follow one contract (`bwe.models.discriminators`): a list with one
``(logits, feature_maps)`` pair per sub-discriminator. Every adversarial and feature-matching loss is a
mean over sub-discriminators, so the weights in the recipe do not depend on how many there are.
Waveforms are ``[batch, time, 1]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

ADVERSARIAL_KINDS = ("hinge", "lsgan")
MAGNITUDE_FLOOR = 1e-7  # power floor before sqrt/log: keeps gradients finite on digital silence


class DiscriminatorOutputError(ValueError):
    """Discriminator outputs do not follow the ``[(logits, feature_maps), ...]`` contract."""


def check_discriminator_outputs(outputs, what: str = "discriminator outputs") -> None:
    """Raise `DiscriminatorOutputError` unless ``outputs`` is a non-empty list of ``(logits, [maps])`` pairs."""
    if not isinstance(outputs, (list, tuple)) or not outputs:
        raise DiscriminatorOutputError(
            f"{what}: expected a non-empty list of (logits, feature_maps) pairs, got {type(outputs).__name__}")
    for i, pair in enumerate(outputs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DiscriminatorOutputError(
                f"{what}[{i}]: expected a (logits, feature_maps) pair, got {type(pair).__name__}"
                + (f" of length {len(pair)}" if isinstance(pair, (list, tuple)) else ""))
        logits, feature_maps = pair
        if not tf.is_tensor(logits):
            raise DiscriminatorOutputError(f"{what}[{i}]: logits must be a tensor, got {type(logits).__name__}")
        if not isinstance(feature_maps, (list, tuple)) or not all(tf.is_tensor(m) for m in feature_maps):
            raise DiscriminatorOutputError(f"{what}[{i}]: feature_maps must be a list of tensors")


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL_KINDS:
        raise ValueError(f"adversarial loss {kind!r} is not one of {', '.join(ADVERSARIAL_KINDS)}")


def _check_real_fake_pair(real_outputs, fake_outputs) -> None:
    """Both follow the (logits, feature_maps) contract and come from the same discriminators."""
    check_discriminator_outputs(real_outputs, "real discriminator outputs")
    check_discriminator_outputs(fake_outputs, "fake discriminator outputs")
    if len(real_outputs) != len(fake_outputs):
        raise DiscriminatorOutputError(
            f"{len(real_outputs)} real vs {len(fake_outputs)} fake discriminator outputs")


def discriminator_adversarial_loss(real_outputs, fake_outputs, kind: str = "hinge") -> tf.Tensor:
    """Discriminator side. hinge: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)));
    lsgan: mean((D(real) - 1)^2) + mean(D(fake)^2). Averaged over sub-discriminators."""
    _check_kind(kind)
    _check_real_fake_pair(real_outputs, fake_outputs)
    terms = []
    for (real, _), (fake, _) in zip(real_outputs, fake_outputs):
        if kind == "hinge":
            terms.append(tf.reduce_mean(tf.nn.relu(1.0 - real)) + tf.reduce_mean(tf.nn.relu(1.0 + fake)))
        else:
            terms.append(tf.reduce_mean(tf.square(real - 1.0)) + tf.reduce_mean(tf.square(fake)))
    return tf.add_n(terms) / len(terms)


def generator_adversarial_loss(fake_outputs, kind: str = "hinge") -> tf.Tensor:
    """Generator side. hinge: mean(relu(1 - D(fake))) (SoundStream); lsgan: mean((D(fake) - 1)^2).
    Averaged over sub-discriminators."""
    _check_kind(kind)
    check_discriminator_outputs(fake_outputs, "fake discriminator outputs")
    terms = []
    for fake, _ in fake_outputs:
        if kind == "hinge":
            terms.append(tf.reduce_mean(tf.nn.relu(1.0 - fake)))
        else:
            terms.append(tf.reduce_mean(tf.square(fake - 1.0)))
    return tf.add_n(terms) / len(terms)


def feature_matching_loss(real_outputs, fake_outputs) -> tf.Tensor:
    """Mean absolute difference between the real (stop-gradient) and fake feature maps, each map averaged over
    its elements, then averaged over all maps of all sub-discriminators (layers x discriminators)."""
    _check_real_fake_pair(real_outputs, fake_outputs)
    terms = []
    for k, ((_, real_maps), (_, fake_maps)) in enumerate(zip(real_outputs, fake_outputs)):
        if len(real_maps) != len(fake_maps):
            raise DiscriminatorOutputError(
                f"discriminator {k}: {len(real_maps)} real vs {len(fake_maps)} fake feature maps")
        for real, fake in zip(real_maps, fake_maps):
            terms.append(tf.reduce_mean(tf.abs(tf.stop_gradient(real) - fake)))
    if not terms:
        raise DiscriminatorOutputError("feature matching needs at least one feature map")
    return tf.add_n(terms) / len(terms)


def stft_magnitude(waveform: tf.Tensor, fft_size: int, hop: int) -> tf.Tensor:
    """``[batch, time, 1]`` -> ``[batch, frames, fft_size // 2 + 1]``: periodic Hann, frames from sample 0,
    sqrt(max(power, 1e-7))."""
    spec = tf.signal.stft(waveform[..., 0], frame_length=fft_size, frame_step=hop, fft_length=fft_size,
                          window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.square(tf.math.real(spec)) + tf.square(tf.math.imag(spec))
    return tf.sqrt(tf.maximum(power, MAGNITUDE_FLOOR))


def _check_same_shape(reference: tf.Tensor, estimate: tf.Tensor) -> None:
    if reference.shape.rank != 3 or reference.shape[-1] != 1:
        raise ValueError(f"waveforms must be [batch, time, 1], got reference {reference.shape}")
    if not reference.shape.is_compatible_with(estimate.shape):
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} differ in shape")


def multi_resolution_stft_loss(reference: tf.Tensor, estimate: tf.Tensor, fft_sizes: Sequence[int],
                               hop_divisor: int = 4) -> tuple[tf.Tensor, tf.Tensor]:
    """Parallel WaveGAN's multi-resolution STFT loss, returned as ``(spectral_convergence, log_magnitude)``,
    each averaged over the FFT sizes (hop = fft_size // hop_divisor, window = fft_size).

    spectral convergence = ||S_ref| - |S_est||_F / ||S_ref||_F over the whole batch;
    log magnitude = mean |log|S_ref| - log|S_est||.
    """
    _check_same_shape(reference, estimate)
    convergence, log_magnitude = [], []
    for fft_size in fft_sizes:
        ref = stft_magnitude(reference, fft_size, fft_size // hop_divisor)
        est = stft_magnitude(estimate, fft_size, fft_size // hop_divisor)
        convergence.append(tf.norm(ref - est) / tf.norm(ref))
        log_magnitude.append(tf.reduce_mean(tf.abs(tf.math.log(ref) - tf.math.log(est))))
    return tf.add_n(convergence) / len(fft_sizes), tf.add_n(log_magnitude) / len(fft_sizes)


def mel_loss(reference: tf.Tensor, estimate: tf.Tensor, fft_sizes: Sequence[int], hop_divisor: int = 4,
             mel_bands: int = 80, sample_rate: int = 16000) -> tf.Tensor:
    """Mean |log mel(ref) - log mel(est)| over bins and frames, averaged over the FFT sizes. Mel filters are
    `tf.signal.linear_to_mel_weight_matrix` (HTK scale, 0 Hz to Nyquist) on magnitudes; mel energies are
    floored at 1e-5 before the log."""
    _check_same_shape(reference, estimate)
    terms = []
    for fft_size in fft_sizes:
        weights = tf.signal.linear_to_mel_weight_matrix(mel_bands, fft_size // 2 + 1, sample_rate, 0.0,
                                                        sample_rate / 2.0)
        ref = tf.matmul(stft_magnitude(reference, fft_size, fft_size // hop_divisor), weights)
        est = tf.matmul(stft_magnitude(estimate, fft_size, fft_size // hop_divisor), weights)
        terms.append(tf.reduce_mean(tf.abs(tf.math.log(tf.maximum(ref, 1e-5)) - tf.math.log(tf.maximum(est, 1e-5)))))
    return tf.add_n(terms) / len(fft_sizes)


def highband_envelope_loss(reference: tf.Tensor, estimate: tf.Tensor, fft_size: int = 512, hop: int = 128,
                           band_hz: float = 500.0, low_hz: float = 4000.0, sample_rate: int = 16000,
                           overshoot_weight: float = 1.0, gap_hz: float = 0.0,
                           energy_exponent: float = 0.0) -> tf.Tensor:
    """Mean squared difference of log10 band energies, per STFT frame and ``band_hz`` band from ``low_hz``
    to Nyquist: the high-band envelope error that WB-PESQ and ViSQOL punish (python -m eval.research pesq-headroom).

    A squared error pulls each band towards the conditional mean of its log level, the envelope a
    regression from the low band predicts (python -m eval.research envelope-probe), where the adversarial terms ask
    only for a plausible one. Energies are floored at 1e-8 before the log.

    ``overshoot_weight`` > 1 weights a band that is too loud that much more than one too quiet: the
    minimum is then an expectile below the mean, lower where the envelope is uncertain and close to
    the mean where it is not, because an invented band that is too loud is the worse error (for
    WB-PESQ and for listeners) where a global gain would lower every band alike.

    ``gap_hz`` > 0 adds one band from there to ``low_hz`` (a model's gap band, model.envelope_gap_hz): the
    whole output's level there, input and all, so a band the input still has needs nothing added.

    ``energy_exponent`` > 0 makes it a weighted mean: each frame's band weighted by the louder of its two
    energies (reference, estimate) over the reference's mean band energy, to that power. Where either
    band is strong a level error is heard; where both are faint (a vowel's top, a pause), hardly (WB-PESQ
    loses about 3x more to the errors of frames whose band is above the file's median:
    docs/experiments/level-errors.md). An estimate too loud where the band should be faint counts as loud.
    """
    _check_same_shape(reference, estimate)
    bins = fft_size // 2 + 1
    freqs = np.arange(bins) * sample_rate / fft_size
    edges = np.arange(low_hz, sample_rate / 2, band_hz)
    # [bins, bands]: each bin of [lo, lo + band_hz) sums into its band; Nyquist goes to the last band.
    bands = [(freqs >= lo) & ((freqs < lo + band_hz) | ((lo + band_hz >= sample_rate / 2) & (freqs <= sample_rate / 2)))
             for lo in edges]
    if gap_hz:
        bands.insert(0, (freqs >= gap_hz) & (freqs < low_hz))
    assignment = np.stack(bands, axis=1).astype(np.float32)
    ref = tf.matmul(tf.square(stft_magnitude(reference, fft_size, hop)), assignment)
    est = tf.matmul(tf.square(stft_magnitude(estimate, fft_size, hop)), assignment)
    log10 = np.log(10.0).astype(np.float32)
    excess = (tf.math.log(tf.maximum(est, 1e-8)) - tf.math.log(tf.maximum(ref, 1e-8))) / log10
    weights = tf.where(excess > 0, overshoot_weight, 1.0)
    if not energy_exponent:
        return tf.reduce_mean(weights * tf.square(excess))
    # The louder of the two bands: an overshoot where the band should be faint is as loud as it sounds.
    louder = tf.maximum(ref, tf.stop_gradient(est))
    relative = louder / tf.maximum(tf.reduce_mean(ref, axis=[1, 2], keepdims=True), 1e-8)
    emphasis = tf.pow(relative + 1e-8, energy_exponent)
    return tf.reduce_sum(emphasis * weights * tf.square(excess)) / tf.reduce_sum(emphasis)


def network_lowband_loss(reference: tf.Tensor, network_output: tf.Tensor, cutoff_hz: float = 3500.0,
                         fft_size: int = 512, hop: int = 128, sample_rate: int = 16000) -> tf.Tensor:
    """The power of ``network_output`` below ``cutoff_hz`` over the power of ``reference`` above 4 kHz,
    both summed over the batch: how far the network's low band, which the band split removes, sits above
    the band it is there to make (0 = none). An integer model holds the network's output in one scale,
    so that ratio is what drowns the band."""
    freqs = np.arange(fft_size // 2 + 1) * sample_rate / fft_size
    low = tf.constant(freqs < cutoff_hz)
    high = tf.constant(freqs >= 4000.0)
    network_power = tf.square(stft_magnitude(network_output, fft_size, hop))
    reference_power = tf.square(stft_magnitude(reference, fft_size, hop))
    leak = tf.reduce_sum(tf.boolean_mask(network_power, low, axis=2))
    band = tf.reduce_sum(tf.boolean_mask(reference_power, high, axis=2))
    return leak / tf.maximum(band, 1e-6)
