"""What the research subcommands take in: test examples from ``--data`` or ``--pairs``, and the flags they share.

An example is one wideband reference with its narrowband input: a file of ``--data`` through the
fixed evaluation channel, or a real recording pair of ``--pairs NB_DIR WB_DIR``, paired by file name
and aligned as ``eval.evaluate`` aligns them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence

import numpy as np

from bwe.baselines import sinc
from bwe.config import OUTPUT_RATE as RATE
from bwe.data.audio import list_audio_files, load_audio, spread_indices
from bwe.data.degrade import evaluation_degradation
from bwe.metrics import estimate_delay
from eval.evaluate import DEFAULT_MAX_OFFSET_MS, EvaluationError, paired_stems

# One scored example: (name, wideband reference, narrowband input at 8 kHz, the lag in samples at 16 kHz
# of the input's sinc rendering behind the reference, undone before scoring).
Example = tuple[str, np.ndarray, np.ndarray, int]


def simulated_examples(files: Sequence[str]) -> Iterator[Example]:
    """Each wideband file and its narrowband version through the fixed evaluation channel (no lag)."""
    for path in files:
        reference, _ = load_audio(path, target_rate=RATE)
        yield path, reference, evaluation_degradation(reference), 0


def real_pair_examples(pairs: Sequence[tuple[str, str]], max_offset: int) -> Iterator[Example]:
    """Each real (narrowband, wideband) recording pair, with the lag ``eval.evaluate`` would find."""
    for narrow_path, wide_path in pairs:
        narrowband, _ = load_audio(narrow_path, target_rate=RATE // 2)
        wideband, _ = load_audio(wide_path, target_rate=RATE)
        yield wide_path, wideband, narrowband, estimate_delay(wideband, sinc(narrowband), max_offset)


def add_test_set_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags :func:`chosen_examples` reads: ``--data`` or ``--pairs``, ``--max-offset-ms``, ``--limit``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder of wideband reference audio (searched recursively), degraded by the "
                                       "fixed evaluation channel")
    source.add_argument("--pairs", nargs=2, metavar=("NB_DIR", "WB_DIR"),
                        help="real narrowband recordings and their wideband references, paired by file name")
    parser.add_argument("--max-offset-ms", type=float, default=DEFAULT_MAX_OFFSET_MS,
                        help="largest lag searched when aligning --pairs (default %(default)s)")
    parser.add_argument("--limit", type=int, default=40,
                        help="files (or pairs) scored, spread evenly over the folder (or the pairs) (default 40)")


def chosen_examples(data: str | None, pairs: Sequence[str] | None, limit: int,
                    max_offset_ms: float) -> tuple[Iterator[Example], str]:
    """The examples of a ``--data`` folder or of ``--pairs NB_DIR WB_DIR`` (``limit`` spread over
    them) and words naming them; an EvaluationError naming the flag when they cannot be used."""
    if not pairs:
        return simulated_examples(spread_files(data, "--data", limit)), data
    for folder in pairs:
        if not os.path.isdir(folder):
            raise EvaluationError(f"--pairs {folder}: not a directory")
    if max_offset_ms < 0:
        raise EvaluationError(f"--max-offset-ms must be 0 or more, got {max_offset_ms}")
    paired = paired_stems(*pairs)[0]
    examples = real_pair_examples([paired[i] for i in spread_indices(len(paired), limit)],
                                  int(round(max_offset_ms * RATE / 1000.0)))
    return examples, f"the real pairs {' '.join(pairs)}"


def spread_files(folder: str, flag: str, limit: int) -> list[str]:
    """``limit`` audio files spread evenly over ``folder`` (searched recursively), or an EvaluationError
    naming ``flag`` when it is no directory or holds no audio."""
    if not os.path.isdir(folder):
        raise EvaluationError(f"{flag} {folder}: not a directory")
    files = list_audio_files(folder)
    if not files:
        raise EvaluationError(f"{flag} {folder}: no audio files")
    return [files[i] for i in spread_indices(len(files), limit)]


def numbers(flag: str, text: str) -> list[float]:
    """The comma-separated numbers of a flag's value (empty items skipped), or an EvaluationError naming the flag."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EvaluationError(f"{flag} {text!r}: expected numbers separated by commas") from None
