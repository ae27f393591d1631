"""Train a bandwidth-extension GAN from a recipe: ``python -m bwe.train RECIPE [--run-dir DIR] [key=value ...]``.

One training step takes a batch of (narrowband [batch, time8, 1] @ 8 kHz, wideband [batch, 2*time8, 1] @
16 kHz) pairs. The causal generator's output lags its input by ``generator_delay_samples`` (the fixed
interpolator's group delay), so its first samples are dropped and the same number of samples is cut from the
end of the target: the model is compared with what it can know.

- For the first ``train.warmup_steps`` steps the generator learns from the reconstruction loss alone and the
  discriminators are not trained (a GAN that starts from a sensible generator trains more stably).
- After that, one step computes the generator output once, both discriminator outputs (real and fake), and the
  gradients of both networks from that one forward pass; both are then updated (simultaneous updates: one
  generator forward per step instead of two, which matters on a CPU).
- With an envelope head (``model.envelope_bands``), the last ``train.envelope_head_steps`` steps fit the head alone:
  everything else frozen, the high-band envelope loss its only loss, its own Adam (``optim.envelope_lr``). It is a
  regression on what the finished GAN generator makes, so it learns the conditional mean of each band's level
  (an expectile below it with ``losses.envelope_overshoot_weight`` > 1), which the adversarial terms do not ask
  for. Before those steps the head is switched off (every gain 1); its phase switches it on. A checkpoint of the same recipe without the head resumes
  into it (`Trainer._restore_into_new_head`), so a trained run can gain one.
- Gradients are summed across replicas, clipped to ``optim.grad_clip_norm`` (global norm), and applied only if
  every loss and gradient is finite. Otherwise the step is skipped and counted (``train.nan_policy=skip``,
  stopping after ``train.max_consecutive_nonfinite`` in a row) or training stops at once without writing a
  checkpoint (``stop``), so the last good checkpoint stays the latest.

Checkpoints, the recipe and logs live in the run directory (`bwe.rundir`). Rerunning the same command resumes
from the latest checkpoint and continues up to ``train.steps``; the data stream resumes exactly where the
checkpoint was taken (example ``step * batch_size`` of the seeded stream), so a resumed run sees the data an
uninterrupted one would have.

Distribution uses `tf.distribute`: MultiWorkerMirroredStrategy when ``TF_CONFIG`` is set, MirroredStrategy when
several GPUs are visible, the default strategy otherwise. ``train.batch_size`` is the global batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from typing import Callable

import numpy as np

from bwe.config import Recipe, RecipeError, load_recipe
from bwe.data.datasets import DatasetError, dataset_files
from bwe.data.pipeline import DataPipelineError, validation_set
from bwe.rundir import BEST_DIR, CHECKPOINT_DIR, LOG_DIR, PERIODIC_DIR, RunDirError, prepare_run_dir

logger = logging.getLogger("bwe.train")

EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130
VALID_HISTORY_FILE = "valid_history.jsonl"
ENVELOPE_HEAD_PREFIX = "envelope_"  # layer names of the generator's envelope head (bwe.models.seanet)
# WB-PESQ in validation needs the optional `pesq` package (the "eval" extra); only look for it here,
# bwe.metrics imports it when a validation runs.
PESQ_AVAILABLE = importlib.util.find_spec("pesq") is not None


class TrainingStopped(RuntimeError):
    """Training stopped on purpose (non-finite values); checkpoints were left as they were."""


def select_strategy():
    """MultiWorkerMirroredStrategy with TF_CONFIG, MirroredStrategy with several GPUs, else the default."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(strategy) -> tuple[bool, int]:
    """``(is_chief, worker_index)``: the chief writes the run directory; others only what they must."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return is_chief, task_id if task_type == "worker" else 0


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


def apply_reduced_gradients(strategy, optimizer, grads, variables) -> None:
    """Apply already all-reduced ``grads`` with a Keras optimizer, in cross-replica context.

    ``optimizer.apply`` cannot be used here: it all-reduces again from a replica context, and under
    MirroredStrategy it needs a ``merge_call`` that is not available inside the ``tf.cond`` of the NaN guard.
    This is the update Keras itself runs after its all-reduce (``update_step`` per variable through
    ``strategy.extended.update``, then one more iteration), without the all-reduce.
    """
    learning_rate = optimizer.learning_rate
    for grad, variable in zip(grads, variables):
        strategy.extended.update(variable.value, lambda var, g: optimizer.update_step(g, var, learning_rate),
                                 args=(grad,), group=False)
    optimizer.iterations.assign_add(1)


def _learning_rate(base: float, recipe: Recipe, decay_steps: int):
    import keras

    if recipe.optim.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, max(1, decay_steps), alpha=recipe.optim.lr_min_ratio)
    return base


def spectrogram_image(x: np.ndarray, fft_size: int = 512, hop: int = 128, floor_db: float = -90.0) -> np.ndarray:
    """float [time] -> float32 [1, bins, frames, 1] in [0, 1]: dB magnitude, low frequencies at the bottom."""
    if x.shape[0] < fft_size:
        x = np.pad(x, (0, fft_size - x.shape[0]))
    window = np.hanning(fft_size + 1)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(x, fft_size)[::hop] * window
    db = 20.0 * np.log10(np.maximum(np.abs(np.fft.rfft(frames, axis=-1)), 1e-9))
    db = np.clip((db - db.max() - floor_db) / -floor_db, 0.0, 1.0)
    return db.T[::-1][None, :, :, None].astype(np.float32)


class Trainer:
    """Builds the networks, optimizers and checkpoints of a run and trains them.

    Args:
        recipe: the resolved recipe.
        run_dir: the run directory (already prepared by `prepare_run_dir` on the chief).
        strategy: a tf.distribute strategy; None picks one with `select_strategy`.
        keep_worker_checkpoints: non-chief workers of a multi-worker run keep their copy of every checkpoint in
            ``RUN/workers/worker-N`` instead of deleting it after writing (lets one check that workers agree).
    """

    def __init__(self, recipe: Recipe, run_dir: str, strategy=None, keep_worker_checkpoints: bool = False):
        import keras
        import tensorflow as tf

        from bwe.models.discriminators import build_discriminators
        from bwe.models.seanet import build_generator, generator_delay_samples

        self.tf = tf
        self.recipe = recipe
        self.run_dir = run_dir
        self.strategy = strategy or select_strategy()
        self.is_chief, self.worker_index = worker_role(self.strategy)
        self.keep_worker_checkpoints = keep_worker_checkpoints
        self.delay = generator_delay_samples(recipe.model)
        if recipe.train.envelope_head_steps and not recipe.model.envelope_bands:
            raise RecipeError("train.envelope_head_steps: the model has no envelope head to fit (set "
                              "model.envelope_bands)")
        if recipe.train.envelope_head_steps > recipe.train.steps:
            raise RecipeError(f"train.envelope_head_steps: {recipe.train.envelope_head_steps} is more than "
                              f"train.steps ({recipe.train.steps})")
        check_lengths(recipe, self.delay)
        train = recipe.train
        self.replicas = self.strategy.num_replicas_in_sync
        if train.batch_size % self.replicas:
            raise RecipeError(f"train.batch_size: {train.batch_size} is not divisible by the "
                              f"{self.replicas} replicas")
        keras.utils.set_random_seed(train.seed)
        with self.strategy.scope():
            self.generator = build_generator(recipe.model)
            # The envelope head (model.envelope_bands) has its own phase and optimizer; the "body" is the rest.
            head = {id(w) for layer in self.generator.layers if layer.name.startswith(ENVELOPE_HEAD_PREFIX)
                    for w in layer.trainable_weights}
            self.head_variables = [w for w in self.generator.trainable_variables if id(w) in head]
            self.body_variables = [w for w in self.generator.trainable_variables if id(w) not in head]
            self.discriminators = build_discriminators(recipe.discriminators, recipe.data.segment_samples - self.delay)
            opt = recipe.optim
            self.generator_optimizer = self._generator_adam()
            self.discriminator_optimizer = keras.optimizers.Adam(
                _learning_rate(opt.discriminator_lr, recipe, train.steps - train.warmup_steps), beta_1=opt.beta_1,
                beta_2=opt.beta_2, name="discriminator_adam")
            # Built up front: optimizer slots cannot be created inside the conditional update.
            self.generator_optimizer.build(self.body_variables)
            self.discriminator_optimizer.build(self.discriminators.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.best_valid_lsd = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_valid_lsd")
            self.nonfinite_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_steps")
            tracked = {}
            if self.head_variables:
                # Its own schedule: cosine decay to a tenth over the head's phase (its first step is this
                # optimizer's first iteration), which settles a regression on noisy frame-level targets.
                self.envelope_optimizer = keras.optimizers.Adam(
                    keras.optimizers.schedules.CosineDecay(opt.envelope_lr, max(1, train.envelope_head_steps),
                                                           alpha=0.1), name="envelope_adam")
                self.envelope_optimizer.build(self.head_variables)
                tracked["envelope_optimizer"] = self.envelope_optimizer
        self.checkpoint = tf.train.Checkpoint(
            generator=self.generator, discriminators=self.discriminators,
            generator_optimizer=self.generator_optimizer, discriminator_optimizer=self.discriminator_optimizer,
            step=self.step, best_valid_lsd=self.best_valid_lsd, nonfinite_steps=self.nonfinite_steps, **tracked)
        self.managers = {
            "latest": self._manager(CHECKPOINT_DIR, train.keep_checkpoints),
            "best": self._manager(BEST_DIR, 1),
            "periodic": self._manager(PERIODIC_DIR, None),
        }
        self._warmup_step = tf.function(self._distributed_step(self._warmup_gradients))
        self._gan_step = tf.function(self._distributed_step(self._gan_gradients))
        self._envelope_head_step = tf.function(self._distributed_step(self._envelope_head_gradients))
        self._enhance = tf.function(lambda x: self.generator(x, training=False),
                                    input_signature=[tf.TensorSpec([1, None, 1], tf.float32)])
        self.writer = (tf.summary.create_file_writer(os.path.join(run_dir, LOG_DIR)) if self.is_chief
                       else tf.summary.create_noop_writer())
        self.validation_pairs: list[tuple[np.ndarray, np.ndarray]] = []

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def _manager(self, subdir: str, max_to_keep: int | None):
        directory = os.path.join(self.run_dir, subdir)
        if not self.is_chief:
            # Every worker takes part in a save (MultiWorkerMirroredStrategy); only the chief's copy is the run's.
            directory = os.path.join(self.run_dir, "workers", f"worker-{self.worker_index}", subdir)
        return self.tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)

    def _save(self, which: str) -> str:
        manager = self.managers[which]
        path = manager.save(checkpoint_number=int(self.step.numpy()))
        if not self.is_chief and not self.keep_worker_checkpoints:
            shutil.rmtree(manager.directory, ignore_errors=True)
        return path

    def restore(self) -> int:
        """Restore the latest checkpoint of the run (the chief's); returns the step it reached (0 if none)."""
        latest = self.tf.train.latest_checkpoint(os.path.join(self.run_dir, CHECKPOINT_DIR))
        if latest is None:
            return 0
        try:
            if self.head_variables and not any(name.startswith("envelope_optimizer/")
                                               for name, _ in self.tf.train.list_variables(latest)):
                self._restore_into_new_head(latest)
            else:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:
            raise RunDirError(f"checkpoint {latest} does not fit this recipe's networks ({e}). "
                              "Use a new --run-dir for a different model.") from None
        if self.recipe.optim.lr_schedule == "constant":
            # A constant rate is an optimizer variable, so the checkpoint just restored it; the recipe's
            # value must win, or a --force resume with another optim.*_lr would silently train as before.
            self.generator_optimizer.learning_rate = self.recipe.optim.generator_lr
            self.discriminator_optimizer.learning_rate = self.recipe.optim.discriminator_lr
        return int(self.step.numpy())

    def _generator_adam(self):
        import keras

        opt = self.recipe.optim
        return keras.optimizers.Adam(_learning_rate(opt.generator_lr, self.recipe, self.recipe.train.steps),
                                     beta_1=opt.beta_1, beta_2=opt.beta_2, name="generator_adam")

    def _restore_into_new_head(self, path: str) -> None:
        """Restore a checkpoint taken before the envelope head was added (the same recipe with
        model.envelope_bands: 0), so a trained run can gain a head. The checkpoint must match that
        head-less generator exactly; its weights are copied by layer name (the checkpoint addresses
        layers by position, which the head's layers shift), everything else is restored as usual, and
        the head keeps its identity initialisation."""
        import dataclasses

        from bwe.models.seanet import build_generator

        tf = self.tf
        with self.strategy.scope():
            headless = build_generator(dataclasses.replace(self.recipe.model, envelope_bands=0))
            optimizer = self._generator_adam()  # built like the run's, so the checkpoint's slots match
            optimizer.build(headless.trainable_variables)
        tf.train.Checkpoint(generator=headless, generator_optimizer=optimizer).restore(
            path).expect_partial().assert_existing_objects_matched()
        for layer in headless.layers:  # its fixed band-split filter has no counterpart: the head replaces it
            if layer.trainable_weights:
                self.generator.get_layer(layer.name).set_weights(layer.get_weights())
        # The generator's optimizer holds the same variables in the same order (the head has its own).
        tf.train.Checkpoint(
            discriminators=self.discriminators, generator_optimizer=self.generator_optimizer,
            discriminator_optimizer=self.discriminator_optimizer, step=self.step, best_valid_lsd=self.best_valid_lsd,
            nonfinite_steps=self.nonfinite_steps).restore(path).expect_partial().assert_existing_objects_matched()

    # -- one training step ---------------------------------------------------------------------------------------

    def _align(self, narrowband, wideband):
        """Generator output and target with the generator's delay removed: ``[batch, 2*time8 - delay, 1]`` each."""
        estimate = self.generator(narrowband, training=True)
        length = self.tf.shape(wideband)[1] - self.delay
        return estimate[:, self.delay:], wideband[:, :length]

    def _reconstruction_terms(self, target, estimate):
        from bwe import losses

        cfg = self.recipe.losses
        convergence, log_magnitude = losses.multi_resolution_stft_loss(target, estimate, cfg.stft_fft_sizes,
                                                                       cfg.stft_hop_divisor)
        terms = {"spectral_convergence": convergence, "log_magnitude": log_magnitude}
        total = cfg.reconstruction_weight * (convergence + log_magnitude)
        if cfg.mel_weight > 0:
            terms["mel"] = losses.mel_loss(target, estimate, cfg.stft_fft_sizes, cfg.stft_hop_divisor, cfg.mel_bands)
            total += cfg.mel_weight * terms["mel"]
        if cfg.envelope_weight > 0:
            terms["envelope"] = losses.highband_envelope_loss(target, estimate,
                                                              overshoot_weight=cfg.envelope_overshoot_weight)
            total += cfg.envelope_weight * terms["envelope"]
        return terms, total

    def _warmup_gradients(self, narrowband, wideband):
        with self.tf.GradientTape() as tape:
            estimate, target = self._align(narrowband, wideband)
            terms, total = self._reconstruction_terms(target, estimate)
            scaled = total / self.replicas
        terms["generator_total"] = total
        grads = tape.gradient(scaled, self.body_variables)
        return terms, {"generator": grads}

    def _gan_gradients(self, narrowband, wideband):
        from bwe import losses

        cfg = self.recipe.losses
        with self.tf.GradientTape(persistent=True) as tape:
            estimate, target = self._align(narrowband, wideband)
            real = self.discriminators(target, training=True)
            fake = self.discriminators(estimate, training=True)
            # The discriminator's loss only reaches discriminator weights (its gradient is taken for them only),
            # so one D(fake) serves both networks.
            disc_loss = losses.discriminator_adversarial_loss(real, fake, cfg.adversarial)
            adversarial = losses.generator_adversarial_loss(fake, cfg.adversarial)
            feature_matching = losses.feature_matching_loss(real, fake)
            terms, total = self._reconstruction_terms(target, estimate)
            total += cfg.adversarial_weight * adversarial + cfg.feature_matching_weight * feature_matching
            scaled_gen, scaled_disc = total / self.replicas, disc_loss / self.replicas
        terms.update(adversarial=adversarial, feature_matching=feature_matching, generator_total=total,
                     discriminator=disc_loss)
        grads = {"generator": tape.gradient(scaled_gen, self.body_variables),
                 "discriminator": tape.gradient(scaled_disc, self.discriminators.trainable_variables)}
        del tape
        return terms, grads

    def _envelope_head_gradients(self, narrowband, wideband):
        """The envelope head alone, by regression: the envelope loss is its only loss and it the only
        network that moves, so it learns the conditional mean of each band's level (in log10 energy;
        an expectile below it with an overshoot weight) for what the frozen rest of the generator makes."""
        from bwe import losses

        with self.tf.GradientTape() as tape:
            estimate, target = self._align(narrowband, wideband)
            envelope = losses.highband_envelope_loss(
                target, estimate, overshoot_weight=self.recipe.losses.envelope_overshoot_weight)
            scaled = envelope / self.replicas
        return {"envelope": envelope}, {"envelope_head": tape.gradient(scaled, self.head_variables)}

    def _distributed_step(self, gradients_fn: Callable):
        """Wrap a per-replica ``(terms, grads) = gradients_fn(narrowband, wideband)`` into a full step."""
        tf = self.tf
        clip = self.recipe.optim.grad_clip_norm
        networks = {"generator": (self.body_variables, self.generator_optimizer),
                    "discriminator": (self.discriminators.trainable_variables, self.discriminator_optimizer),
                    "envelope_head": (self.head_variables, getattr(self, "envelope_optimizer", None))}

        def replica_step(narrowband, wideband):
            terms, grads = gradients_fn(narrowband, wideband)
            context = tf.distribute.get_replica_context()
            names = sorted(terms)
            # One all-reduce per kind of value; afterwards every replica holds identical sums, so the finiteness
            # decision below is the same everywhere.
            losses_mean = context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.stack([terms[k] for k in names]))
            metrics = {f"loss/{k}": losses_mean[i] for i, k in enumerate(names)}
            finite = tf.reduce_all(tf.math.is_finite(losses_mean))
            reduced = {}
            for net, net_grads in grads.items():
                summed = context.all_reduce(tf.distribute.ReduceOp.SUM, net_grads)
                norm = tf.linalg.global_norm(summed)
                finite = tf.logical_and(finite, tf.math.is_finite(norm))
                if clip > 0:
                    summed, _ = tf.clip_by_global_norm(summed, clip, use_norm=norm)
                reduced[net] = summed
                metrics[f"grad_norm/{net}"] = norm
            return reduced, metrics, finite

        def step(narrowband, wideband):
            with self.strategy.scope():
                reduced, metrics, finite = self.strategy.run(replica_step, args=(narrowband, wideband))
                finite_local = self.strategy.experimental_local_results(finite)[0]

                def apply():
                    for net, net_grads in reduced.items():
                        variables, optimizer = networks[net]
                        apply_reduced_gradients(self.strategy, optimizer, net_grads, variables)
                    return tf.constant(True)

                tf.cond(finite_local, apply, lambda: tf.constant(False))
                metrics = {k: self.strategy.experimental_local_results(v)[0] for k, v in metrics.items()}
                metrics["finite"] = finite_local
                return metrics

        return step

    # -- data ----------------------------------------------------------------------------------------------------

    def make_dataset(self, files: list[str], start_step: int):
        """The distributed training stream, starting at example ``start_step * batch_size``."""
        from bwe.data.pipeline import make_dataset

        recipe = self.recipe

        def dataset_fn(context):
            return make_dataset(files, recipe.data, context.get_per_replica_batch_size(recipe.train.batch_size),
                                recipe.train.seed, training=True, start_index=start_step * recipe.train.batch_size,
                                shard_index=context.input_pipeline_id, num_shards=context.num_input_pipelines)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # -- validation ----------------------------------------------------------------------------------------------

    def enhance(self, narrowband: np.ndarray) -> np.ndarray:
        """float32 [n] @ 8 kHz -> float32 [2n] @ 16 kHz, delay-compensated (zeros appended, the lag cut off)."""
        n = narrowband.shape[0]
        padded = np.pad(narrowband, (0, (self.delay + 1) // 2)).astype(np.float32)
        out = self._enhance(padded[None, :, None]).numpy()[0, :, 0]
        return out[self.delay: self.delay + 2 * n]

    def validate(self, step: int) -> dict[str, float]:
        """LSD / LSD-LF / LSD-HF (bwe.metrics) over the fixed validation pairs, and WB-PESQ (mean over the
        files it can score) when the ``pesq`` package is installed; logs them and example audio.

        The best checkpoint follows LSD only; PESQ is there because the two pull apart in BWE (a
        louder, noisier high band can lower LSD and PESQ together), so a run shows both trends.
        """
        import warnings

        from bwe.metrics import lsd_all, pesq_wb

        tf = self.tf
        per_file = defaultdict(list)
        outputs = []
        for narrowband, wideband in self.validation_pairs:
            estimate = self.enhance(narrowband)
            outputs.append(estimate)
            for key, value in lsd_all(wideband, estimate).items():
                per_file[key].append(value)
            if PESQ_AVAILABLE:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # unscorable files are simply left out of the mean
                    score = pesq_wb(wideband, estimate)
                if score is not None:
                    per_file["pesq_wb"].append(score)
        result = {key: float(np.mean(values)) for key, values in per_file.items()}
        audio_every = self.recipe.train.audio_every or self.recipe.train.valid_every
        with self.writer.as_default(step=step):
            for key, value in result.items():
                tf.summary.scalar(f"valid/{key}", value)
            if step % audio_every == 0 or step == self.recipe.train.steps:
                for i in range(min(self.recipe.train.audio_examples, len(outputs))):
                    narrowband, wideband = self.validation_pairs[i]
                    tf.summary.audio(f"valid_audio/{i}/input_8k", narrowband[None, :, None], 8000)
                    tf.summary.audio(f"valid_audio/{i}/output", np.clip(outputs[i], -1, 1)[None, :, None], 16000)
                    tf.summary.audio(f"valid_audio/{i}/reference", wideband[None, :, None], 16000)
                    tf.summary.image(f"valid_spectrogram/{i}/output", spectrogram_image(outputs[i]))
                    tf.summary.image(f"valid_spectrogram/{i}/reference", spectrogram_image(wideband))
        if self.is_chief:
            with open(os.path.join(self.run_dir, VALID_HISTORY_FILE), "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **result}) + "\n")
        return result

    # -- the loop ------------------------------------------------------------------------------------------------

    def learning_rates(self) -> dict[str, float]:
        # convert_to_tensor, not float(): under a distribution strategy the rate is a Keras variable wrapping a
        # MirroredVariable, which float() refuses.
        rates = {"generator": self.generator_optimizer.learning_rate,
                 "discriminator": self.discriminator_optimizer.learning_rate}
        if self.head_variables:
            rates["envelope_head"] = self.envelope_optimizer.learning_rate
        return {f"learning_rate/{k}": float(self.tf.convert_to_tensor(v).numpy()) for k, v in rates.items()}

    def train_step(self, narrowband, wideband, step: int) -> dict[str, float]:
        """One step at ``step`` (warm-up, GAN or envelope head by the recipe); returns the metrics, ``finite``
        among them."""
        train = self.recipe.train
        if step >= train.steps - train.envelope_head_steps:
            from bwe.models.seanet import activate_envelope_head

            activate_envelope_head(self.generator)
            step_fn = self._envelope_head_step
        elif step < train.warmup_steps:
            step_fn = self._warmup_step
        else:
            step_fn = self._gan_step
        return {k: v.numpy() for k, v in step_fn(narrowband, wideband).items()}

    def fit(self, train_files: list[str], validation_pairs: list[tuple[np.ndarray, np.ndarray]],
            log: Callable[[str], None] = print) -> dict[str, float]:
        """Train from the restored step up to ``train.steps``. Returns the last validation metrics."""
        from tqdm import tqdm

        tf = self.tf
        cfg = self.recipe.train
        self.validation_pairs = validation_pairs
        start = self.restore()
        if start >= cfg.steps:
            log(f"run already at step {start} of train.steps={cfg.steps}; nothing to do")
            return {}
        if start:
            log(f"resuming from step {start}")
        iterator = iter(self.make_dataset(train_files, start))
        sums: dict[str, float] = defaultdict(float)
        counted, consecutive_bad, last_saved, valid = 0, 0, start, {}
        window_start, window_steps = time.perf_counter(), 0
        bar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not self.is_chief, dynamic_ncols=True,
                   mininterval=1.0, desc="training")
        try:
            for step in range(start, cfg.steps):
                narrowband, wideband = next(iterator)
                metrics = self.train_step(narrowband, wideband, step)
                finished = step + 1
                self.step.assign(finished)
                if not metrics.pop("finite"):
                    self.nonfinite_steps.assign_add(1)
                    consecutive_bad += 1
                    where = (f"non-finite loss or gradient at step {finished} "
                             f"({', '.join(k for k, v in metrics.items() if not np.isfinite(v)) or 'values'})")
                    if cfg.nan_policy == "stop":
                        raise TrainingStopped(f"{where}; train.nan_policy=stop: stopped without writing a checkpoint "
                                              f"(latest good checkpoint: step {last_saved})")
                    if consecutive_bad >= cfg.max_consecutive_nonfinite:
                        raise TrainingStopped(f"{where}; {consecutive_bad} steps in a row were skipped "
                                              f"(train.max_consecutive_nonfinite); latest good checkpoint: step "
                                              f"{last_saved}. Lower optim.*_lr or check the data.")
                    log(f"{where}: step skipped ({int(self.nonfinite_steps.numpy())} so far)")
                else:
                    consecutive_bad = 0
                    for k, v in metrics.items():
                        sums[k] += float(v)
                    counted += 1
                window_steps += 1
                bar.update(1)
                if finished % cfg.log_every == 0 or finished == cfg.steps:
                    elapsed = time.perf_counter() - window_start
                    scalars = {k: v / max(counted, 1) for k, v in sums.items()}
                    scalars.update(self.learning_rates())
                    scalars["train/steps_per_second"] = window_steps / elapsed
                    scalars["train/samples_per_second"] = window_steps * cfg.batch_size / elapsed
                    scalars["train/nonfinite_steps"] = float(self.nonfinite_steps.numpy())
                    with self.writer.as_default(step=finished):
                        for k, v in scalars.items():
                            tf.summary.scalar(k, v)
                    bar.set_postfix({k.split("/")[-1]: f"{scalars[k]:.3g}" for k in
                                     ("loss/generator_total", "loss/discriminator") if k in scalars})
                    sums.clear()
                    counted, window_steps, window_start = 0, 0, time.perf_counter()
                if self.validation_pairs and (finished % cfg.valid_every == 0 or finished == cfg.steps):
                    valid = self.validate(finished)
                    if valid["lsd"] < float(self.best_valid_lsd.numpy()):
                        self.best_valid_lsd.assign(valid["lsd"])
                        self._save("best")
                    pesq = f", WB-PESQ {valid['pesq_wb']:.3f}" if "pesq_wb" in valid else ""
                    bar.write(f"step {finished}: valid LSD {valid['lsd']:.3f} (LF {valid['lsd_lf']:.3f}, "
                              f"HF {valid['lsd_hf']:.3f}){pesq}; best LSD {float(self.best_valid_lsd.numpy()):.3f}")
                if finished % cfg.checkpoint_every == 0 or finished == cfg.steps:
                    self._save("latest")
                    last_saved = finished
                if cfg.keep_periodic_every and finished % cfg.keep_periodic_every == 0:
                    self._save("periodic")
        except KeyboardInterrupt:
            if int(self.step.numpy()) > last_saved:
                self._save("latest")
            bar.close()
            log(f"interrupted: checkpoint at step {int(self.step.numpy())} saved; rerun the command to resume")
            raise
        finally:
            bar.close()
            self.writer.flush()
        return valid


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bwe.train",
        description="Train a bandwidth-extension GAN. Rerunning the same command resumes the run.")
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="recipe overrides, e.g. train.steps=1000 data.train_dir=/data/train")
    parser.add_argument("--run-dir", help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--force", action="store_true",
                        help="continue a run even though its recipe changed (model changes still fail to load)")
    parser.add_argument("--keep-worker-checkpoints", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_intermixed_args(argv)


def _absolute_data_paths(recipe: Recipe) -> None:
    """Store absolute data paths, so a resumed run started from another directory reads the same data."""
    if recipe.data.train_dir:
        recipe.data.train_dir = os.path.abspath(recipe.data.train_dir)
    if recipe.data.valid_dir:
        recipe.data.valid_dir = os.path.abspath(recipe.data.valid_dir)


def main(argv=None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bwe").setLevel(logging.INFO)
    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.recipe))[0])
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        recipe.data.validate()
        _absolute_data_paths(recipe)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # The strategy must exist before any other TensorFlow work (MultiWorkerMirroredStrategy's requirement).
    strategy = select_strategy()
    is_chief, _ = worker_role(strategy)
    try:
        for note in prepare_run_dir(run_dir, recipe, force=args.force, write=is_chief):
            print(note)
        train_files = dataset_files(recipe.data, "train")
        print(f"training data: {train_files.summary()}")
        valid_files = dataset_files(recipe.data, "valid")
        validation_pairs = validation_set(valid_files.files, recipe.data, recipe.train.valid_max_files,
                                          recipe.train.valid_max_seconds) if valid_files.files else []
        print(f"validation: {len(validation_pairs)} files" if validation_pairs else
              "validation: none (set data.valid_dir to track LSD and keep a best checkpoint)")
        trainer = Trainer(recipe, run_dir, strategy, keep_worker_checkpoints=args.keep_worker_checkpoints)
        valid = trainer.fit(train_files.files, validation_pairs)
    except (RecipeError, RunDirError, DatasetError, DataPipelineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if valid:
        print(f"done: step {recipe.train.steps}, valid LSD {valid['lsd']:.3f} (HF {valid['lsd_hf']:.3f}), "
              f"best {float(trainer.best_valid_lsd.numpy()):.3f}; run directory {run_dir}")
    else:
        print(f"done: run directory {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
