"""What the loop reports between two log points: the training metrics averaged over the finite steps,
the learning rates, throughput and skipped-step count, written to TensorBoard every ``train.log_every``
steps and shown on the progress bar (the chief's only)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

# Shown on the progress bar, by the last part of their name, when the phase has them.
BAR_METRICS = ("loss/generator_total", "loss/discriminator")


class Progress:
    """The metrics window and the progress bar of one `Trainer.fit`.

    Args:
        recipe: the run's recipe (``train.steps``, ``log_every``, ``batch_size``).
        writer: the TensorBoard writer.
        start: the step training resumes from.
        show_bar: whether to draw the progress bar (the chief only).
        extra_scalars: called at each log point for scalars that are not step metrics (learning rates,
            the skipped-step count).
    """

    def __init__(self, recipe, writer, start: int, show_bar: bool, extra_scalars: Callable[[], dict]):
        from tqdm import tqdm

        self.train, self.writer, self.extra_scalars = recipe.train, writer, extra_scalars
        self.bar = tqdm(total=self.train.steps, initial=start, unit="step", disable=not show_bar,
                        dynamic_ncols=True, mininterval=1.0, desc="training")
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counted, self.steps, self.started = 0, 0, time.perf_counter()

    def add(self, metrics: dict, finite: bool) -> None:
        """One step done; its metrics count towards the averages only if it was finite (it was applied)."""
        if finite:
            for key, value in metrics.items():
                self.sums[key] += float(value)
            self.counted += 1
        self.steps += 1
        self.bar.update(1)

    def log_if_due(self, finished: int) -> None:
        """At every ``train.log_every`` steps and the last: write the window's scalars and start a new window."""
        if finished % self.train.log_every and finished != self.train.steps:
            return
        import tensorflow as tf

        elapsed = time.perf_counter() - self.started
        scalars = {key: value / max(self.counted, 1) for key, value in self.sums.items()}
        scalars.update(self.extra_scalars())
        scalars["train/steps_per_second"] = self.steps / elapsed
        scalars["train/samples_per_second"] = self.steps * self.train.batch_size / elapsed
        with self.writer.as_default(step=finished):
            for key, value in scalars.items():
                tf.summary.scalar(key, value)
        self.bar.set_postfix({key.split("/")[-1]: f"{scalars[key]:.3g}" for key in BAR_METRICS if key in scalars})
        self._reset()

    def write(self, line: str) -> None:
        """A line above the progress bar."""
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()
