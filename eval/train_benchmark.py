"""Training throughput of the shipped recipes on this machine: steps/s and samples/s, printed, not asserted.

    python -m eval.train_benchmark [RECIPE ...] [--steps N] [--warmup-only] [--set key=value ...]

For each recipe (default: every recipes/*.yaml that has a train section) the trainer is built exactly as
``python -m bwe.train`` builds it, then timed on synthetic batches of the recipe's shape (batch_size x
data.segment_samples; no data folders needed): a few untimed steps to trace and warm up, then ``--steps``
timed reconstruction-only (warm-up phase) steps and as many GAN steps. "samples" are training examples
(segments); audio seconds per second are printed too. Throughput does not depend on the audio content.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

import numpy as np

from bwe.config import OUTPUT_RATE, load_recipe


def _timed(trainer, batch, step: int, n: int) -> float:
    """Seconds per step over ``n`` steps at phase ``step`` (after two untimed steps)."""
    for _ in range(2):
        trainer.train_step(*batch, step)
    start = time.perf_counter()
    for _ in range(n):
        trainer.train_step(*batch, step)
    return (time.perf_counter() - start) / n


def benchmark(path: str, steps: int, overrides: list[str], warmup_only: bool) -> dict:
    import tensorflow as tf

    from bwe.train import Trainer

    recipe = load_recipe(path, overrides)
    batch, segment = recipe.train.batch_size, recipe.data.segment_samples
    rng = np.random.default_rng(0)
    wideband = (0.1 * rng.standard_normal((batch, segment, 1))).astype(np.float32)
    narrowband = wideband[:, ::2].copy()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, run_dir)
        data = (tf.constant(narrowband), tf.constant(wideband))
        result = {"recipe": os.path.basename(path), "batch": batch, "segment_s": segment / OUTPUT_RATE,
                  "generator_params": trainer.generator.count_params(),
                  "discriminator_params": trainer.discriminators.count_params(),
                  "warmup": _timed(trainer, data, 0, steps)}
        if not warmup_only:
            result["gan"] = _timed(trainer, data, recipe.train.warmup_steps, steps)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.train_benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", help="recipe files (default: recipes/*.yaml with a train section)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase (default 5)")
    parser.add_argument("--warmup-only", action="store_true", help="time only the reconstruction-only phase")
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="override applied to every recipe (repeatable)")
    args = parser.parse_args(argv)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes")
    paths = args.recipes or sorted(p for p in glob.glob(os.path.join(root, "*.yaml"))
                                   if "\ntrain:" in open(p, encoding="utf-8").read())
    import tensorflow as tf

    devices = [d.device_type for d in tf.config.list_logical_devices()]
    print(f"devices: {', '.join(sorted(set(devices)))}; CPU cores: {os.cpu_count()}")
    header = (f"{'recipe':24s} {'batch':>5s} {'seg s':>6s} {'G params':>9s} {'D params':>9s} "
              f"{'phase':>7s} {'steps/s':>8s} {'samples/s':>10s} {'audio s/s':>10s}")
    print(header)
    for path in paths:
        r = benchmark(path, args.steps, args.set, args.warmup_only)
        for phase in ("warmup", "gan"):
            if phase in r:
                sps = 1.0 / r[phase]
                print(f"{r['recipe']:24s} {r['batch']:5d} {r['segment_s']:6.3f} {r['generator_params']:9d} "
                      f"{r['discriminator_params']:9d} {phase:>7s} {sps:8.3f} {sps * r['batch']:10.2f} "
                      f"{sps * r['batch'] * r['segment_s']:10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
