"""One training step of each phase: its losses and gradients, and the compiled, distributed step.

The causal generator's output lags its input by ``generator_delay_samples``, so its first samples are
dropped and as many are cut from the end of the target (`align`): the model is compared with what it
can know. The phases (``train.*``):

- warm-up (the first ``warmup_steps``): the generator body learns from the reconstruction loss alone;
- GAN: one generator forward, both discriminator outputs (real and fake), and the gradients of both
  networks from that one pass (simultaneous updates: one generator forward per step, which matters on a CPU);
- envelope head (the last ``envelope_head_steps``): the head alone, its envelope loss its only loss.
"""

from __future__ import annotations

from typing import Callable

from bwe.config import Recipe
from bwe.training.distribution import distributed_step
from bwe.training.state import TrainingState

PHASES = ("warmup", "gan", "envelope_head")


def phase_of(recipe: Recipe, step: int) -> str:
    """Which phase (one of `PHASES`) trains step ``step`` (0-based)."""
    train = recipe.train
    if step >= train.steps - train.envelope_head_steps:
        return "envelope_head"
    return "warmup" if step < train.warmup_steps else "gan"


def align(generator, delay: int, narrowband, wideband):
    """Generator output and target with the generator's delay removed: ``[batch, 2*time8 - delay, 1]`` each."""
    return trim_delay(generator(narrowband, training=True), delay, wideband)


def trim_delay(estimate, delay: int, wideband):
    """The generator's output without its first ``delay`` samples, and the target without as many at its end."""
    import tensorflow as tf

    length = tf.shape(wideband)[1] - delay
    return estimate[:, delay:], wideband[:, :length]


def envelope_loss(recipe: Recipe, target, estimate):
    """The high-band envelope loss as the recipe sets it (the GAN's optional term, the head's only loss)."""
    from bwe import losses

    return losses.highband_envelope_loss(target, estimate, overshoot_weight=recipe.losses.envelope_overshoot_weight,
                                         gap_hz=recipe.model.envelope_gap_hz,
                                         energy_exponent=recipe.losses.envelope_energy_exponent)


def reconstruction_terms(recipe: Recipe, target, estimate, network=None):
    """``(terms, total)``: the multi-resolution STFT terms, and the mel, envelope and network low-band terms
    where their weights are set (``losses.*``; ``network``: the body's output, `Gradients.forward`); ``total``
    is their weighted sum."""
    from bwe import losses

    cfg = recipe.losses
    convergence, log_magnitude = losses.multi_resolution_stft_loss(target, estimate, cfg.stft_fft_sizes,
                                                                   cfg.stft_hop_divisor)
    terms = {"spectral_convergence": convergence, "log_magnitude": log_magnitude}
    total = cfg.reconstruction_weight * (convergence + log_magnitude)
    if cfg.mel_weight > 0:
        terms["mel"] = losses.mel_loss(target, estimate, cfg.stft_fft_sizes, cfg.stft_hop_divisor, cfg.mel_bands)
        total += cfg.mel_weight * terms["mel"]
    if cfg.envelope_weight > 0:
        terms["envelope"] = envelope_loss(recipe, target, estimate)
        total += cfg.envelope_weight * terms["envelope"]
    if cfg.network_lowband_weight > 0:
        terms["network_lowband"] = losses.network_lowband_loss(target, network)
        total += cfg.network_lowband_weight * terms["network_lowband"]
    return terms, total


class Gradients:
    """Per replica, for each phase: ``(loss terms, {network: gradients})`` of one batch. Losses are divided
    by the number of replicas before the gradient, so the all-reduced sum is the global batch's."""

    def __init__(self, state: TrainingState, recipe: Recipe, delay: int, replicas: int):
        self.state, self.recipe, self.delay, self.replicas = state, recipe, delay, replicas
        self._with_network = None
        if recipe.losses.network_lowband_weight > 0:
            import keras

            from bwe.models.seanet import generator_parts

            generator = state.generator
            body_output = generator_parts(generator).network_output.output
            self._with_network = keras.Model(generator.inputs, [generator.outputs[0], body_output])

    def forward(self, narrowband, wideband):
        """``(estimate, target, network)``: `align`'s pair, and the body's output where a loss reads it."""
        if self._with_network is None:
            return (*align(self.state.generator, self.delay, narrowband, wideband), None)
        estimate, network = self._with_network(narrowband, training=True)
        return (*trim_delay(estimate, self.delay, wideband), network)

    def warmup(self, narrowband, wideband):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            estimate, target, network = self.forward(narrowband, wideband)
            terms, total = reconstruction_terms(self.recipe, target, estimate, network)
            scaled = total / self.replicas
        terms["generator_total"] = total
        return terms, {"generator": tape.gradient(scaled, self.state.body_variables)}

    def gan(self, narrowband, wideband):
        import tensorflow as tf

        from bwe import losses

        cfg, discriminators = self.recipe.losses, self.state.discriminators
        with tf.GradientTape(persistent=True) as tape:
            estimate, target, network = self.forward(narrowband, wideband)
            real = discriminators(target, training=True)
            fake = discriminators(estimate, training=True)
            # The discriminator's loss only reaches discriminator weights (its gradient is taken for them only),
            # so one D(fake) serves both networks.
            disc_loss = losses.discriminator_adversarial_loss(real, fake, cfg.adversarial)
            adversarial = losses.generator_adversarial_loss(fake, cfg.adversarial)
            feature_matching = losses.feature_matching_loss(real, fake)
            terms, total = reconstruction_terms(self.recipe, target, estimate, network)
            total += cfg.adversarial_weight * adversarial + cfg.feature_matching_weight * feature_matching
            scaled_gen, scaled_disc = total / self.replicas, disc_loss / self.replicas
        terms.update(adversarial=adversarial, feature_matching=feature_matching, generator_total=total,
                     discriminator=disc_loss)
        grads = {"generator": tape.gradient(scaled_gen, self.state.body_variables),
                 "discriminator": tape.gradient(scaled_disc, discriminators.trainable_variables)}
        del tape
        return terms, grads

    def envelope_head(self, narrowband, wideband):
        """The envelope head alone, by regression: the envelope loss is its only loss and it the only
        network that moves, so it learns the conditional mean of each band's level (in log10 energy;
        an expectile below it with an overshoot weight) for what the frozen rest of the generator makes."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            estimate, target = align(self.state.generator, self.delay, narrowband, wideband)
            envelope = envelope_loss(self.recipe, target, estimate)
            scaled = envelope / self.replicas
        return {"envelope": envelope}, {"envelope_head": tape.gradient(scaled, self.state.head_variables)}


def compiled_steps(state: TrainingState, recipe: Recipe, strategy, delay: int) -> dict[str, Callable]:
    """Phase name -> tf.function taking a (distributed) batch ``(narrowband, wideband)`` and returning its
    metrics, ``finite`` among them (`bwe.training.distribution.distributed_step`)."""
    import tensorflow as tf

    gradients = Gradients(state, recipe, delay, strategy.num_replicas_in_sync)
    # Which variables and optimizer each network name in the gradients' dicts updates.
    networks = {"generator": (state.body_variables, state.generator_optimizer),
                "discriminator": (state.discriminators.trainable_variables, state.discriminator_optimizer),
                "envelope_head": (state.head_variables, state.envelope_optimizer)}
    clip = recipe.optim.grad_clip_norm
    per_phase = {"warmup": gradients.warmup, "gan": gradients.gan, "envelope_head": gradients.envelope_head}
    return {phase: tf.function(distributed_step(strategy, gradients_fn, networks, clip))
            for phase, gradients_fn in per_phase.items()}
