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
  for. Before those steps the head is switched off (every gain 1); its phase switches it on. A checkpoint of the
  same recipe without the head resumes into it (`bwe.training.checkpoints`), so a trained run can gain one.
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

This module is the loop (`Trainer`) and the command line; the pieces it puts together live in `bwe.training`
(the state, its checkpoints, the step of each phase, distribution, validation, progress reporting).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

import numpy as np

from bwe.config import Recipe, RecipeError, load_recipe
from bwe.data.datasets import DatasetError, dataset_files
from bwe.data.pipeline import DataPipelineError, validation_set
from bwe.rundir import LOG_DIR, RunDirError, prepare_run_dir
from bwe.training.distribution import select_strategy, worker_role
from bwe.training.validation import VALID_HISTORY_FILE

logger = logging.getLogger("bwe.train")

EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130


class TrainingStopped(RuntimeError):
    """Training stopped on purpose (non-finite values); checkpoints were left as they were."""


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

        from bwe.models.seanet import generator_delay_samples
        from bwe.training.checkpoints import RunCheckpoints
        from bwe.training.state import build_training_state, check_training_recipe
        from bwe.training.steps import compiled_steps
        from bwe.training.validation import Validator

        self.recipe, self.run_dir = recipe, run_dir
        self.strategy = strategy or select_strategy()
        self.is_chief, self.worker_index = worker_role(self.strategy)
        self.delay = generator_delay_samples(recipe.model)
        check_training_recipe(recipe, self.delay, self.strategy.num_replicas_in_sync)
        keras.utils.set_random_seed(recipe.train.seed)
        self.state = build_training_state(recipe, self.strategy, self.delay)
        self.checkpoints = RunCheckpoints(self.state, recipe, self.strategy, run_dir,
                                          (self.is_chief, self.worker_index), keep_worker_checkpoints)
        self.steps = compiled_steps(self.state, recipe, self.strategy, self.delay)
        self.writer = (tf.summary.create_file_writer(os.path.join(run_dir, LOG_DIR)) if self.is_chief
                       else tf.summary.create_noop_writer())
        history = os.path.join(run_dir, VALID_HISTORY_FILE) if self.is_chief else None
        self.validator = Validator(self.state.generator, self.delay, recipe, self.writer, history)

    # The run's state under the names its callers use (tests, eval/train_benchmark.py, main).
    generator = property(lambda self: self.state.generator)
    discriminators = property(lambda self: self.state.discriminators)
    generator_optimizer = property(lambda self: self.state.generator_optimizer)
    discriminator_optimizer = property(lambda self: self.state.discriminator_optimizer)
    envelope_optimizer = property(lambda self: self.state.envelope_optimizer)
    head_variables = property(lambda self: self.state.head_variables)
    body_variables = property(lambda self: self.state.body_variables)
    step = property(lambda self: self.state.step)
    best_valid_lsd = property(lambda self: self.state.best_valid_lsd)
    nonfinite_steps = property(lambda self: self.state.nonfinite_steps)
    managers = property(lambda self: self.checkpoints.managers)

    def restore(self) -> int:
        """Restore the latest checkpoint of the run (the chief's); returns the step it reached (0 if none)."""
        return self.checkpoints.restore()

    def _save(self, which: str) -> str:
        return self.checkpoints.save(which)

    def learning_rates(self) -> dict[str, float]:
        return self.state.learning_rates()

    def make_dataset(self, files: list[str], start_step: int):
        """The distributed training stream, starting at example ``start_step * batch_size``."""
        from bwe.data.pipeline import make_dataset

        recipe = self.recipe

        def dataset_fn(context):
            return make_dataset(files, recipe.data, context.get_per_replica_batch_size(recipe.train.batch_size),
                                recipe.train.seed, training=True, start_index=start_step * recipe.train.batch_size,
                                shard_index=context.input_pipeline_id, num_shards=context.num_input_pipelines)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def train_step(self, narrowband, wideband, step: int) -> dict[str, float]:
        """One step at ``step`` (warm-up, GAN or envelope head by the recipe); returns the metrics, ``finite``
        among them."""
        from bwe.models.seanet import activate_envelope_head
        from bwe.training.steps import phase_of

        phase = phase_of(self.recipe, step)
        if phase == "envelope_head":
            activate_envelope_head(self.generator)  # until its phase the head is the identity
        return {k: v.numpy() for k, v in self.steps[phase](narrowband, wideband).items()}

    # -- the loop ------------------------------------------------------------------------------------------------

    def fit(self, train_files: list[str], validation_pairs: list[tuple[np.ndarray, np.ndarray]],
            log: Callable[[str], None] = print) -> dict[str, float]:
        """Train from the restored step up to ``train.steps``. Returns the last validation metrics."""
        from bwe.training.progress import Progress

        steps = self.recipe.train.steps
        self.validator.pairs = validation_pairs
        start = self.restore()
        if start >= steps:
            log(f"run already at step {start} of train.steps={steps}; nothing to do")
            return {}
        if start:
            log(f"resuming from step {start}")
        iterator = iter(self.make_dataset(train_files, start))
        progress = Progress(self.recipe, self.writer, start, self.is_chief, self._extra_scalars)
        self._last_saved, self._nonfinite_in_a_row, valid = start, 0, {}
        try:
            for step in range(start, steps):
                metrics = self.train_step(*next(iterator), step)
                finished = step + 1
                self.step.assign(finished)
                progress.add(metrics, self._check_finite(metrics, finished, log))
                progress.log_if_due(finished)
                scores = self._validate_if_due(finished, progress)
                valid = valid if scores is None else scores
                self._checkpoint_if_due(finished)
        except KeyboardInterrupt:
            if int(self.step.numpy()) > self._last_saved:
                self._save("latest")
            progress.close()
            log(f"interrupted: checkpoint at step {int(self.step.numpy())} saved; rerun the command to resume")
            raise
        finally:
            progress.close()
            self.writer.flush()
        return valid

    def _extra_scalars(self) -> dict[str, float]:
        return {**self.learning_rates(), "train/nonfinite_steps": float(self.nonfinite_steps.numpy())}

    def _check_finite(self, metrics: dict, finished: int, log: Callable[[str], None]) -> bool:
        """Pop ``finite`` from a step's metrics. A non-finite step (nothing was applied) is counted, and stops
        training as ``train.nan_policy`` and ``max_consecutive_nonfinite`` say: without a checkpoint, so the
        last good one stays the latest."""
        if metrics.pop("finite"):
            self._nonfinite_in_a_row = 0
            return True
        cfg = self.recipe.train
        self.nonfinite_steps.assign_add(1)
        self._nonfinite_in_a_row += 1
        where = (f"non-finite loss or gradient at step {finished} "
                 f"({', '.join(k for k, v in metrics.items() if not np.isfinite(v)) or 'values'})")
        if cfg.nan_policy == "stop":
            raise TrainingStopped(f"{where}; train.nan_policy=stop: stopped without writing a checkpoint "
                                  f"(latest good checkpoint: step {self._last_saved})")
        if self._nonfinite_in_a_row >= cfg.max_consecutive_nonfinite:
            raise TrainingStopped(f"{where}; {self._nonfinite_in_a_row} steps in a row were skipped "
                                  f"(train.max_consecutive_nonfinite); latest good checkpoint: step "
                                  f"{self._last_saved}. Lower optim.*_lr or check the data.")
        log(f"{where}: step skipped ({int(self.nonfinite_steps.numpy())} so far)")
        return False

    def _validate_if_due(self, finished: int, progress) -> dict[str, float] | None:
        """Every ``train.valid_every`` steps and the last (with validation pairs): validate, keep the best
        checkpoint by LSD, report a line. Returns the scores, None when not due."""
        cfg = self.recipe.train
        if not self.validator.pairs or (finished % cfg.valid_every and finished != cfg.steps):
            return None
        valid = self.validator(finished)
        if valid["lsd"] < float(self.best_valid_lsd.numpy()):
            self.best_valid_lsd.assign(valid["lsd"])
            self._save("best")
        pesq = f", WB-PESQ {valid['pesq_wb']:.3f}" if "pesq_wb" in valid else ""
        progress.write(f"step {finished}: valid LSD {valid['lsd']:.3f} (LF {valid['lsd_lf']:.3f}, "
                       f"HF {valid['lsd_hf']:.3f}){pesq}; best LSD {float(self.best_valid_lsd.numpy()):.3f}")
        return valid

    def _checkpoint_if_due(self, finished: int) -> None:
        """The latest checkpoint every ``train.checkpoint_every`` steps and the last; periodic keeps as set."""
        cfg = self.recipe.train
        if finished % cfg.checkpoint_every == 0 or finished == cfg.steps:
            self._save("latest")
            self._last_saved = finished
        if cfg.keep_periodic_every and finished % cfg.keep_periodic_every == 0:
            self._save("periodic")


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
