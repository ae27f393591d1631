"""Validation during training: LSD / LSD-LF / LSD-HF (`bwe.metrics`) over fixed validation pairs, and
WB-PESQ where the optional ``pesq`` package is installed; logged to TensorBoard (with example audio and
spectrograms every ``train.audio_every`` steps) and appended to ``RUN/valid_history.jsonl``.

The best checkpoint follows LSD only; PESQ is there because the two pull apart in BWE (a louder, noisier
high band can lower LSD and PESQ together), so a run shows both trends.
"""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict

import numpy as np

from bwe.config import Recipe

VALID_HISTORY_FILE = "valid_history.jsonl"
# WB-PESQ in validation needs the optional `pesq` package (the "eval" extra); only look for it here,
# bwe.metrics imports it when a validation runs.
PESQ_AVAILABLE = importlib.util.find_spec("pesq") is not None


def spectrogram_image(x: np.ndarray, fft_size: int = 512, hop: int = 128, floor_db: float = -90.0) -> np.ndarray:
    """float [time] -> float32 [1, bins, frames, 1] in [0, 1]: dB magnitude, low frequencies at the bottom."""
    if x.shape[0] < fft_size:
        x = np.pad(x, (0, fft_size - x.shape[0]))
    window = np.hanning(fft_size + 1)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(x, fft_size)[::hop] * window
    db = 20.0 * np.log10(np.maximum(np.abs(np.fft.rfft(frames, axis=-1)), 1e-9))
    db = np.clip((db - db.max() - floor_db) / -floor_db, 0.0, 1.0)
    return db.T[::-1][None, :, :, None].astype(np.float32)


def score(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """One file's scores: LSD, LSD-LF, LSD-HF, and WB-PESQ when installed and the file can be scored."""
    import warnings

    from bwe.metrics import lsd_all, pesq_wb

    scores = dict(lsd_all(reference, estimate))
    if PESQ_AVAILABLE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unscorable files are simply left out of the mean
            pesq = pesq_wb(reference, estimate)
        if pesq is not None:
            scores["pesq_wb"] = pesq
    return scores


class Validator:
    """Scores the generator on ``pairs`` (``(narrowband 8 kHz, wideband 16 kHz)`` float32 arrays) and logs it.

    Args:
        generator: the training generator (run with ``training=False``).
        delay: its delay in 16 kHz samples (`bwe.models.seanet.generator_delay_samples`).
        recipe: the run's recipe (``train.audio_every``, ``audio_examples``, ``valid_every``, ``steps``).
        writer: the TensorBoard writer (a no-op writer on non-chief workers).
        history_path: where to append each validation's line, or None (non-chief workers).
    """

    def __init__(self, generator, delay: int, recipe: Recipe, writer, history_path: str | None):
        import tensorflow as tf

        self.delay, self.recipe, self.writer, self.history_path = delay, recipe, writer, history_path
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self._enhance = tf.function(lambda x: generator(x, training=False),
                                    input_signature=[tf.TensorSpec([1, None, 1], tf.float32)])

    def enhance(self, narrowband: np.ndarray) -> np.ndarray:
        """float32 [n] @ 8 kHz -> float32 [2n] @ 16 kHz, delay-compensated (zeros appended, the lag cut off)."""
        n = narrowband.shape[0]
        padded = np.pad(narrowband, (0, (self.delay + 1) // 2)).astype(np.float32)
        out = self._enhance(padded[None, :, None]).numpy()[0, :, 0]
        return out[self.delay: self.delay + 2 * n]

    def __call__(self, step: int) -> dict[str, float]:
        """Score every pair at ``step``, log the means; returns them (``lsd``, ``lsd_lf``, ``lsd_hf``, ``pesq_wb``)."""
        per_file, outputs = defaultdict(list), []
        for narrowband, wideband in self.pairs:
            outputs.append(self.enhance(narrowband))
            for key, value in score(wideband, outputs[-1]).items():
                per_file[key].append(value)
        result = {key: float(np.mean(values)) for key, values in per_file.items()}
        self._log(step, result, outputs)
        return result

    def _log(self, step: int, result: dict[str, float], outputs: list[np.ndarray]) -> None:
        import tensorflow as tf

        train = self.recipe.train
        audio_every = train.audio_every or train.valid_every
        with self.writer.as_default(step=step):
            for key, value in result.items():
                tf.summary.scalar(f"valid/{key}", value)
            if step % audio_every == 0 or step == train.steps:
                for i in range(min(train.audio_examples, len(outputs))):
                    self._log_example(i, outputs[i])
        if self.history_path:
            with open(self.history_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **result}) + "\n")

    def _log_example(self, i: int, output: np.ndarray) -> None:
        """Pair ``i``'s input, output and reference as audio, and the output's and reference's spectrograms."""
        import tensorflow as tf

        narrowband, wideband = self.pairs[i]
        tf.summary.audio(f"valid_audio/{i}/input_8k", narrowband[None, :, None], 8000)
        tf.summary.audio(f"valid_audio/{i}/output", np.clip(output, -1, 1)[None, :, None], 16000)
        tf.summary.audio(f"valid_audio/{i}/reference", wideband[None, :, None], 16000)
        tf.summary.image(f"valid_spectrogram/{i}/output", spectrogram_image(output))
        tf.summary.image(f"valid_spectrogram/{i}/reference", spectrogram_image(wideband))

