"""What a training run trains and checkpoints: the generator and discriminators, their optimizers (and
the envelope head's own), and the run's counters, built from a recipe that is first checked to fit them.

The generator's trainable variables are split in two: the envelope head's (its predictor, found through
the handles `build_generator` attaches, never by layer name), which only its own phase and optimizer
train, and the rest, the "body", which the generator's optimizer trains.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bwe.config import Recipe, RecipeError


def check_lengths(recipe: Recipe, delay: int) -> None:
    """Training segments must be long enough for every STFT after the delay crop."""
    usable = recipe.data.segment_samples - delay
    for key in ("discriminators.stft_fft_sizes", "losses.stft_fft_sizes"):
        section, name = key.split(".")
        sizes = getattr(getattr(recipe, section), name)
        if sizes and max(sizes) > usable:
            raise RecipeError(
                f"data.segment_samples: {recipe.data.segment_samples} samples minus the generator delay {delay} "
                f"leaves {usable}, shorter than the largest of {key} ({max(sizes)})")


def check_training_recipe(recipe: Recipe, delay: int, replicas: int) -> None:
    """Refuse, naming the key, a recipe whose training section does not fit its model or the replicas."""
    train = recipe.train
    if train.envelope_head_steps and not recipe.model.envelope_bands:
        raise RecipeError("train.envelope_head_steps: the model has no envelope head to fit (set "
                          "model.envelope_bands)")
    if train.envelope_head_steps > train.steps:
        raise RecipeError(f"train.envelope_head_steps: {train.envelope_head_steps} is more than "
                          f"train.steps ({train.steps})")
    check_lengths(recipe, delay)
    if train.batch_size % replicas:
        raise RecipeError(f"train.batch_size: {train.batch_size} is not divisible by the {replicas} replicas")


def _learning_rate(base: float, recipe: Recipe, decay_steps: int):
    import keras

    if recipe.optim.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, max(1, decay_steps), alpha=recipe.optim.lr_min_ratio)
    return base


def generator_adam(recipe: Recipe):
    """The generator body's optimizer (unbuilt). One place, because restoring a checkpoint taken before the
    envelope head was added needs an optimizer built exactly like the run's."""
    import keras

    opt = recipe.optim
    return keras.optimizers.Adam(_learning_rate(opt.generator_lr, recipe, recipe.train.steps),
                                 beta_1=opt.beta_1, beta_2=opt.beta_2, name="generator_adam")


@dataclasses.dataclass
class TrainingState:
    """Everything a run's checkpoint holds (`bwe.training.checkpoints`) and a training step updates."""

    generator: Any
    discriminators: Any
    generator_optimizer: Any  # trains body_variables
    discriminator_optimizer: Any
    envelope_optimizer: Any  # trains head_variables; None without an envelope head
    step: Any  # steps finished (tf.Variable, int64)
    best_valid_lsd: Any  # the best checkpoint's validation LSD (tf.Variable, float64)
    nonfinite_steps: Any  # steps skipped for a non-finite loss or gradient (tf.Variable, int64)
    head_variables: list  # the envelope head's trainable variables, in the generator's order
    body_variables: list  # the rest of the generator's

    def learning_rates(self) -> dict[str, float]:
        """Each optimizer's current rate, as ``learning_rate/<network>`` scalars."""
        import tensorflow as tf

        rates = {"generator": self.generator_optimizer.learning_rate,
                 "discriminator": self.discriminator_optimizer.learning_rate}
        if self.envelope_optimizer is not None:
            rates["envelope_head"] = self.envelope_optimizer.learning_rate
        # convert_to_tensor, not float(): under a distribution strategy the rate is a Keras variable wrapping a
        # MirroredVariable, which float() refuses.
        return {f"learning_rate/{k}": float(tf.convert_to_tensor(v).numpy()) for k, v in rates.items()}


def _envelope_adam(recipe: Recipe):
    """The envelope head's optimizer: its own schedule, cosine decay to a tenth over the head's phase (its
    first step is this optimizer's first iteration), which settles a regression on noisy frame-level targets."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(recipe.optim.envelope_lr,
                                                      max(1, recipe.train.envelope_head_steps), alpha=0.1)
    return keras.optimizers.Adam(schedule, name="envelope_adam")


def build_training_state(recipe: Recipe, strategy, delay: int) -> TrainingState:
    """The run's networks, optimizers (built: their slots exist before the first step) and counters, in
    ``strategy``'s scope. Call ``keras.utils.set_random_seed`` first for reproducible initial weights."""
    import keras
    import tensorflow as tf

    from bwe.models.discriminators import build_discriminators
    from bwe.models.seanet import build_generator, envelope_head_variables

    train, opt = recipe.train, recipe.optim
    with strategy.scope():
        generator = build_generator(recipe.model, quantization=recipe.quant.spec())
        head = envelope_head_variables(generator)
        in_head = {id(w) for w in head}
        body = [w for w in generator.trainable_variables if id(w) not in in_head]
        discriminators = build_discriminators(recipe.discriminators, recipe.data.segment_samples - delay)
        generator_optimizer = generator_adam(recipe)
        discriminator_optimizer = keras.optimizers.Adam(
            _learning_rate(opt.discriminator_lr, recipe, train.steps - train.warmup_steps), beta_1=opt.beta_1,
            beta_2=opt.beta_2, name="discriminator_adam")
        envelope_optimizer = _envelope_adam(recipe) if head else None
        # Built up front: optimizer slots cannot be created inside the conditional update.
        generator_optimizer.build(body)
        discriminator_optimizer.build(discriminators.trainable_variables)
        if envelope_optimizer is not None:
            envelope_optimizer.build(head)
        return TrainingState(
            generator=generator, discriminators=discriminators, generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer, envelope_optimizer=envelope_optimizer,
            step=tf.Variable(0, dtype=tf.int64, trainable=False, name="step"),
            best_valid_lsd=tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_valid_lsd"),
            nonfinite_steps=tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_steps"),
            head_variables=head, body_variables=body)
