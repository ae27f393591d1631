"""The run directory of a training run, and when a command may continue an existing one.

Layout (the contract with `bwe.export` and the evaluation scripts)::

    RUN/recipe.yaml                 the fully resolved recipe of the run
    RUN/checkpoints/                tf.train.CheckpointManager, the latest few checkpoints
    RUN/checkpoints/best/           the checkpoint with the best validation LSD
    RUN/checkpoints/periodic/       every ``train.keep_periodic_every``-th step, kept forever
    RUN/logs/                       TensorBoard event files

Rerunning the command that created a run resumes it. A recipe that differs from the stored one only in
bookkeeping keys (how long to train, how often to log/validate/checkpoint, export settings) resumes and
updates ``recipe.yaml``; any other difference (model, losses, data, batch size...) is refused with the
list of changed keys, because silently mixing two recipes in one run makes its results meaningless.
``force=True`` accepts the new recipe anyway (e.g. to fine-tune with other loss weights); a run that
should start from scratch belongs in a new directory.

TensorFlow-free: reading a run directory must not cost a TensorFlow import.
"""

from __future__ import annotations

import os
from typing import Any

from bwe.config import Recipe, RecipeError, load_recipe, recipe_to_dict, save_recipe

RECIPE_FILE = "recipe.yaml"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = os.path.join(CHECKPOINT_DIR, "best")
PERIODIC_DIR = os.path.join(CHECKPOINT_DIR, "periodic")
LOG_DIR = "logs"

# Keys whose change does not alter what the run learns: a resumed run may change them.
RESUMABLE_KEYS = (
    "train.steps",
    "train.log_every",
    "train.valid_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.keep_periodic_every",
    "train.audio_every",
    "train.audio_examples",
    "train.nan_policy",
    "train.max_consecutive_nonfinite",
    "data.num_parallel_calls",
    "data.cache",
    "export.",
)


class RunDirError(RuntimeError):
    """The run directory cannot be used with this recipe; the message says why and what to do."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: tree}


def recipe_differences(old: Recipe, new: Recipe) -> dict[str, tuple[Any, Any]]:
    """``{key path: (old value, new value)}`` for every leaf that differs."""
    a, b = _flatten(recipe_to_dict(old)), _flatten(recipe_to_dict(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def prepare_run_dir(run_dir: str, recipe: Recipe, force: bool = False, write: bool = True) -> list[str]:
    """Check that ``recipe`` may run in ``run_dir`` and write it there as ``recipe.yaml``.

    Returns notes for the console (changed keys accepted on resume). Raises `RunDirError` when the
    directory holds another run (a different recipe) or unrelated files, unless ``force``.
    ``write=False`` only compares with a recipe already there (non-chief workers of a multi-worker run, which
    may look while the chief is still creating the directory).
    """
    notes: list[str] = []
    recipe_path = os.path.join(run_dir, RECIPE_FILE)
    if os.path.exists(recipe_path):
        try:
            old = load_recipe(recipe_path)
        except RecipeError as e:
            if not force:
                raise RunDirError(f"{run_dir} holds a recipe this version cannot read ({e}); "
                                  "use a new --run-dir, or --force to overwrite it") from None
            old = None
        if old is not None:
            changed = recipe_differences(old, recipe)
            blocking = {k: v for k, v in changed.items() if not _resumable(k)}
            if blocking and not force:
                lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in blocking.items())
                raise RunDirError(
                    f"{run_dir} holds a run with a different recipe:\n{lines}\n"
                    "Use a new --run-dir for a new experiment, or --force to continue this run with the new recipe.")
            notes += [f"recipe change accepted: {k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()]
    elif write and os.path.isdir(run_dir) and os.listdir(run_dir) and not force:
        raise RunDirError(f"{run_dir} exists, is not empty and has no {RECIPE_FILE}: not a bwe run directory. "
                          "Use an empty or new --run-dir (or --force).")
    if write:
        os.makedirs(run_dir, exist_ok=True)
        save_recipe(recipe, recipe_path)
    return notes
