"""One tiny exported model per test session, shared by test_export.py and test_runtime.py.

Exporting costs ~20 s (four TFLite conversions), so the export is made once, from a training run
directory laid out per the run-dir contract (recipe.yaml + checkpoints/), through the `bwe-export`
command line, and cached for the rest of the session.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np

_CACHE: dict = {}
RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "tiny.yaml")


def tiny_generator():
    """The tiny TRAINING generator with fixed random weights (non-zero biases too)."""
    import keras

    from bwe.config import load_recipe
    from bwe.layers.modes import Modes
    from bwe.models.seanet import build_generator

    keras.utils.set_random_seed(0)
    generator = build_generator(load_recipe(RECIPE).model, Modes.TRAINING)
    rng = np.random.default_rng(0)
    for w in generator.trainable_weights:
        if w.path.endswith("bias"):
            w.assign(rng.normal(0, 0.05, w.shape).astype(np.float32))
    return generator


def exported_tiny() -> tuple:
    """(generator, run_dir, export_dir) — exported once per session."""
    if "export" not in _CACHE:
        import tensorflow as tf

        from bwe.config import load_recipe, save_recipe
        from bwe.export import main

        root = tempfile.mkdtemp(prefix="bwe-test-export-")
        atexit.register(shutil.rmtree, root, True)
        run_dir = os.path.join(root, "run")
        os.makedirs(os.path.join(run_dir, "checkpoints"))
        recipe = load_recipe(RECIPE)
        save_recipe(recipe, os.path.join(run_dir, "recipe.yaml"))
        generator = tiny_generator()
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(generator=generator),
                                             os.path.join(run_dir, "checkpoints"), max_to_keep=1)
        manager.save()
        out_dir = os.path.join(root, "exported")
        assert main([run_dir, out_dir, "--block-frames", "8", "-q"]) == 0
        _CACHE["export"] = (generator, run_dir, out_dir)
    return _CACHE["export"]


def assert_same_trained_weights(expected, actual) -> None:
    """Every trainable layer of ``expected`` has its weights in ``actual`` (same layer name); convs are
    compared as the kernels they compute with (weight norm folded), so the two may store them differently."""
    def plain(layer):
        if hasattr(layer, "plain_weights"):
            return list(layer.plain_weights().values())
        return layer.get_weights()

    for layer in expected.layers:
        if layer.trainable_weights:
            for a, b in zip(plain(layer), plain(actual.get_layer(layer.name))):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
