"""A run's checkpoints of its `TrainingState`: ``checkpoints/`` (the latest, to resume), ``checkpoints/best``
(the best validation LSD) and ``checkpoints/periodic`` (every ``train.keep_periodic_every`` steps).

The names the checkpoint gives each object (`checkpoint_objects`) are the checkpoint format: renaming one
would leave every existing run directory unable to resume.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings

from bwe.config import Recipe
from bwe.metadata import WEIGHTS_FILE
from bwe.rundir import BEST_DIR, CHECKPOINT_DIR, PERIODIC_DIR, RunDirError
from bwe.training.state import TrainingState, generator_adam


def checkpoint_objects(state: TrainingState) -> dict:
    """What a checkpoint holds, under the names it holds it by (``envelope_optimizer`` only with a head)."""
    objects = dict(
        generator=state.generator, discriminators=state.discriminators,
        generator_optimizer=state.generator_optimizer, discriminator_optimizer=state.discriminator_optimizer,
        step=state.step, best_valid_lsd=state.best_valid_lsd, nonfinite_steps=state.nonfinite_steps)
    if state.envelope_optimizer is not None:
        objects["envelope_optimizer"] = state.envelope_optimizer
    return objects


class RunCheckpoints:
    """Saves and restores a run's `TrainingState` in its run directory.

    Args:
        state: what is saved and restored into.
        recipe: the run's recipe (learning rates and model, for `restore`).
        strategy: the tf.distribute strategy the state was built under.
        run_dir: the run directory.
        worker: ``(is_chief, worker_index)`` (`bwe.training.distribution.worker_role`).
        keep_worker_checkpoints: non-chief workers keep their copy of every checkpoint in
            ``RUN/workers/worker-N`` instead of deleting it after writing (lets one check that workers agree).
    """

    def __init__(self, state: TrainingState, recipe: Recipe, strategy, run_dir: str, worker: tuple[bool, int],
                 keep_worker_checkpoints: bool = False):
        import tensorflow as tf

        self.state, self.recipe, self.strategy, self.run_dir = state, recipe, strategy, run_dir
        self.is_chief, self.worker_index = worker
        self.keep_worker_checkpoints = keep_worker_checkpoints
        self.checkpoint = tf.train.Checkpoint(**checkpoint_objects(state))
        self.managers = {
            "latest": self._manager(CHECKPOINT_DIR, recipe.train.keep_checkpoints),
            "best": self._manager(BEST_DIR, 1),
            "periodic": self._manager(PERIODIC_DIR, None),
        }

    def _manager(self, subdir: str, max_to_keep: int | None):
        import tensorflow as tf

        directory = os.path.join(self.run_dir, subdir)
        if not self.is_chief:
            # Every worker takes part in a save (MultiWorkerMirroredStrategy); only the chief's copy is the run's.
            directory = os.path.join(self.run_dir, "workers", f"worker-{self.worker_index}", subdir)
        return tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)

    def save(self, which: str) -> str:
        """Save into ``which`` ("latest", "best" or "periodic"), numbered by the step; returns the path."""
        manager = self.managers[which]
        path = manager.save(checkpoint_number=int(self.state.step.numpy()))
        if not self.is_chief and not self.keep_worker_checkpoints:
            shutil.rmtree(manager.directory, ignore_errors=True)
        return path

    def restore(self) -> int:
        """Restore the latest checkpoint of the run (the chief's); returns the step it reached (0 if none)."""
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(os.path.join(self.run_dir, CHECKPOINT_DIR))
        if latest is None:
            if self.recipe.train.init_from:
                self._initialise_generator(self.recipe.train.init_from)
            return 0
        try:
            if self.state.envelope_optimizer is not None and not any(
                    name.startswith("envelope_optimizer/") for name, _ in tf.train.list_variables(latest)):
                self._restore_into_new_head(latest)
            else:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:
            raise RunDirError(f"checkpoint {latest} does not fit this recipe's networks ({e}). "
                              "Use a new --run-dir for a different model.") from None
        if self.recipe.optim.lr_schedule == "constant":
            # A constant rate is an optimizer variable, so the checkpoint just restored it; the recipe's
            # value must win, or a --force resume with another optim.*_lr would silently train as before.
            self.state.generator_optimizer.learning_rate = self.recipe.optim.generator_lr
            self.state.discriminator_optimizer.learning_rate = self.recipe.optim.discriminator_lr
        return int(self.state.step.numpy())

    def _initialise_generator(self, source: str) -> None:
        """A new run's generator from ``train.init_from``: an exported folder's weights or a .weights.h5 file."""
        weights = os.path.join(source, WEIGHTS_FILE) if os.path.isdir(source) else source
        if not os.path.isfile(weights):
            raise RunDirError(f"train.init_from: {weights} does not exist (give an exported folder, which holds "
                              f"{WEIGHTS_FILE}, or a .weights.h5 file)")
        try:
            with warnings.catch_warnings():  # Keras warns of each layer a mismatched file leaves out
                warnings.simplefilter("ignore", UserWarning)
                self.state.generator.load_weights(weights)
            return
        except ValueError as e:
            if not self.recipe.quant.enabled:
                if os.path.isdir(source):
                    self._initialise_from_export(source, e)
                    return
                raise RunDirError(f"train.init_from: {weights} does not fit this recipe's generator ({e})") from None
        # QAT from a float model's weights: its kernels, by layer name; the input ranges start from the first batch.
        from bwe.models.seanet import build_generator
        from bwe.streaming.convert import copy_weights

        float_generator = build_generator(self.recipe.model)
        try:
            float_generator.load_weights(weights)
        except ValueError as e:
            raise RunDirError(f"train.init_from: {weights} does not fit this recipe's generator, float or "
                              f"quantised ({e})") from None
        copy_weights(float_generator, self.state.generator)

    def _initialise_from_export(self, folder: str, mismatch: ValueError) -> None:
        """An exported folder whose fixed filters differ from this recipe's (e.g. ``model.split_taps``), or
        which lacks the gap band this recipe adds (``model.envelope_gap_hz``; its layers start afresh): its
        own generator, built from its metadata, gives every trained weight by layer name."""
        from bwe.export import ExportError, load_generator
        from bwe.models.seanet import GAP_BAND_LAYERS
        from bwe.streaming.convert import copy_weights

        try:
            exported = load_generator(folder)[0]
            copy_weights(exported, self.state.generator, fixed_filters_from_target=True,
                         new_layers=GAP_BAND_LAYERS if self.recipe.model.envelope_gap_hz else ())
        except (ExportError, ValueError) as e:
            raise RunDirError(f"train.init_from: {folder} does not fit this recipe's generator ({mismatch}; "
                              f"by layer name: {e})") from None

    def _restore_into_new_head(self, path: str) -> None:
        """Restore a checkpoint taken before the envelope head was added (the same recipe with
        model.envelope_bands: 0), so a trained run can gain a head. The checkpoint must match that
        head-less generator exactly; its weights are copied by layer name (the checkpoint addresses
        layers by position, which the head's layers shift), everything else is restored as usual, and
        the head keeps its identity initialisation."""
        import tensorflow as tf

        from bwe.models.seanet import build_generator

        state = self.state
        with self.strategy.scope():
            headless = build_generator(dataclasses.replace(self.recipe.model, envelope_bands=0))
            optimizer = generator_adam(self.recipe)  # built like the run's, so the checkpoint's slots match
            optimizer.build(headless.trainable_variables)
        tf.train.Checkpoint(generator=headless, generator_optimizer=optimizer).restore(
            path).expect_partial().assert_existing_objects_matched()
        for layer in headless.layers:  # its fixed band-split filter has no counterpart: the head replaces it
            if layer.trainable_weights:
                state.generator.get_layer(layer.name).set_weights(layer.get_weights())
        # Everything else as it was saved: the generator's optimizer holds the same variables in the same order
        # (the head's are not among them: they have their own optimizer, which starts afresh).
        rest = {name: obj for name, obj in checkpoint_objects(state).items()
                if name not in ("generator", "envelope_optimizer")}
        tf.train.Checkpoint(**rest).restore(path).expect_partial().assert_existing_objects_matched()
