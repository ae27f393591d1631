"""Objective evaluation: LSD, LSD-LF, LSD-HF and WB-PESQ of systems against wideband references.

    python eval/evaluate.py --model folding --model runs/x/export --data DIR --out OUT [--limit N]

Every audio file under DIR (recursively) is a wideband reference; it is read as mono, resampled to
16 kHz if needed, degraded to 8 kHz with the fixed ``bwe.data.degrade.evaluation_degradation``, and
passed through each system. A system is ``sinc``, ``folding`` (the baselines, always included) or
the directory of an exported model (``bwe.runtime.ExportedModel``). Outputs are trimmed to the
reference's length; systems must be time-aligned with their input, which the report checks
(median cross-correlation delay per system).

Writes, atomically:
  OUT/metrics.csv  one row per file and system: file, model, lsd, lsd_lf, lsd_hf, pesq_wb
                   (pesq_wb is the text ``unscorable`` when PESQ finds no utterance, never a number)
  OUT/report.md    the mean of every metric per system, side by side, with the unscorable count

Metric definitions live in ``bwe.metrics``; corpus figures are means over files.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from bwe.baselines import BASELINES
from bwe.data.audio import AudioError, list_audio_files, load_audio
from bwe.data.degrade import EVAL_CUTOFF_HZ, EVAL_FILTER_ORDER, EVAL_RIPPLE_DB, evaluation_degradation
from bwe.metrics import LSD_N_FFT, estimate_delay, lsd_all, pesq_wb

WIDEBAND_RATE = 16000
UNSCORABLE = "unscorable"
CSV_COLUMNS = ("file", "model", "lsd", "lsd_lf", "lsd_hf", "pesq_wb")
# A delay check over +-20 ms catches a model whose delay compensation is off, without being fooled
# by the periodicity of voiced speech (pitch periods are 2.5-10 ms, but their peaks are lower).
DELAY_SEARCH = 320

System = Callable[[np.ndarray], np.ndarray]


class EvaluationError(RuntimeError):
    """A command-line argument or input cannot be used; the message says which and why."""


@dataclass
class Row:
    """Scores of one system on one file. ``pesq_wb`` None means PESQ could not score it."""

    file: str
    model: str
    lsd: float
    lsd_lf: float
    lsd_hf: float
    pesq_wb: float | None
    delay: int


def load_system(name: str) -> System:
    """A baseline by name, or an exported model from its directory (needs ``bwe.runtime``)."""
    if name in BASELINES:
        return BASELINES[name]
    if not os.path.isdir(name):
        raise EvaluationError(
            f"--model {name}: neither a baseline ({', '.join(sorted(BASELINES))}) nor an existing model directory"
        )
    try:
        from bwe.runtime import ExportedModel  # imported lazily: baselines need no model runtime
    except ImportError as e:
        raise EvaluationError(f"--model {name}: cannot load exported models, bwe.runtime is unavailable ({e})") from e
    try:
        return ExportedModel(name)
    except Exception as e:  # the runtime's own error says what is wrong with the directory
        raise EvaluationError(f"--model {name}: cannot load the exported model ({type(e).__name__}: {e})") from e


def load_systems(names: Sequence[str]) -> dict[str, System]:
    """Baselines first (always), then the requested systems in order, without duplicates."""
    ordered = list(BASELINES) + [n for n in names if n not in BASELINES]
    systems: dict[str, System] = {}
    for name in ordered:
        label = name if name in BASELINES else os.path.normpath(name)
        if label not in systems:
            systems[label] = load_system(name)
    return systems


def score_pair(reference: np.ndarray, output: np.ndarray) -> tuple[dict[str, float], float | None, int]:
    """LSDs, WB-PESQ (None if unscorable) and the delay of ``output`` against ``reference`` at 16 kHz."""
    output = np.asarray(output, dtype=np.float32)[: reference.shape[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unscorable files are counted in the report instead
        pesq = pesq_wb(reference, output)
    return lsd_all(reference, output), pesq, estimate_delay(reference, output, DELAY_SEARCH)


def evaluate_pair(
    name: str, reference: np.ndarray, narrowband: np.ndarray, systems: dict[str, System]
) -> list[Row]:
    """Run every system on one 8 kHz input and score it against its 16 kHz reference."""
    rows = []
    for label, system in systems.items():
        try:
            output = system(narrowband)
        except Exception as e:
            raise EvaluationError(f"{name}: system {label} failed ({type(e).__name__}: {e})") from e
        if np.shape(output) != (2 * narrowband.shape[0],):
            raise EvaluationError(
                f"{name}: system {label} returned shape {np.shape(output)}, expected ({2 * narrowband.shape[0]},)"
            )
        if not np.isfinite(output).all():
            raise EvaluationError(f"{name}: system {label} returned NaN or Inf samples")
        lsds, pesq, delay = score_pair(reference, output)
        rows.append(Row(name, label, lsds["lsd"], lsds["lsd_lf"], lsds["lsd_hf"], pesq, delay))
    return rows


def evaluate_files(
    files: Iterable[str], root: str, systems: dict[str, System], progress: bool = True
) -> tuple[list[Row], list[str]]:
    """Score every system on every reference file. Returns (rows, files skipped as too short)."""
    rows: list[Row] = []
    skipped: list[str] = []
    files = list(files)
    for path in tqdm(files, desc="evaluating", unit="file", disable=not progress, file=sys.stderr):
        name = os.path.relpath(path, root)
        reference, _ = load_audio(path, target_rate=WIDEBAND_RATE)
        if reference.shape[0] <= LSD_N_FFT // 2:
            skipped.append(name)
            continue
        rows.extend(evaluate_pair(name, reference, evaluation_degradation(reference), systems))
    return rows, skipped


def summarize(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """Per system: files, mean lsd/lsd_lf/lsd_hf, mean pesq_wb over scorable files, unscorable count,
    median delay. Systems keep their order of first appearance."""
    summary: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        scored = [r.pesq_wb for r in mine if r.pesq_wb is not None]
        summary[model] = {
            "files": len(mine),
            "lsd": float(np.mean([r.lsd for r in mine])),
            "lsd_lf": float(np.mean([r.lsd_lf for r in mine])),
            "lsd_hf": float(np.mean([r.lsd_hf for r in mine])),
            "pesq_wb": float(np.mean(scored)) if scored else float("nan"),
            "pesq_scored": len(scored),
            "unscorable": len(mine) - len(scored),
            "median_delay": float(np.median([r.delay for r in mine])),
        }
    return summary


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def metrics_csv(rows: Sequence[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        pesq = UNSCORABLE if r.pesq_wb is None else f"{r.pesq_wb:.6f}"
        writer.writerow([r.file, r.model, f"{r.lsd:.6f}", f"{r.lsd_lf:.6f}", f"{r.lsd_hf:.6f}", pesq])
    return buffer.getvalue()


def report_markdown(summary: dict[str, dict[str, float]], data: str, n_files: int, skipped: Sequence[str]) -> str:
    lines = [
        "# Objective evaluation",
        "",
        f"References: `{data}`, {n_files} files scored"
        + (f", {len(skipped)} skipped as shorter than {LSD_N_FFT // 2 + 1} samples." if skipped else "."),
        f"Input: each reference degraded by the fixed evaluation channel (Chebyshev I, order {EVAL_FILTER_ORDER}, "
        f"{EVAL_RIPPLE_DB} dB ripple, {EVAL_CUTOFF_HZ:.0f} Hz, zero-phase; soxr to 8 kHz).",
        "Metrics: `bwe.metrics` (LSD: n_fft 2048, hop 512, Hann, log10 power; LSD-LF 0-4 kHz, LSD-HF 4-8 kHz; "
        "WB-PESQ P.862.2). Means over files; lower LSD and higher PESQ are better.",
        "",
        "| system | files | LSD | LSD-LF | LSD-HF | WB-PESQ | PESQ unscorable | median delay |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, s in summary.items():
        pesq = "n/a" if s["pesq_scored"] == 0 else f"{s['pesq_wb']:.3f}"
        lines.append(
            f"| {model} | {s['files']} | {s['lsd']:.3f} | {s['lsd_lf']:.3f} | {s['lsd_hf']:.3f} | {pesq} "
            f"| {s['unscorable']} | {s['median_delay']:+.0f} |"
        )
    lines += [
        "",
        "WB-PESQ is the mean over the files PESQ could score; `unscorable` files (no utterance found) are counted, "
        "not scored. A median delay other than +0 samples means a system's output is not time-aligned with its input.",
    ]
    if skipped:
        lines += ["", "Skipped (too short for the LSD STFT): " + ", ".join(f"`{s}`" for s in skipped)]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="sinc, folding or an exported model directory; repeatable (the baselines are always included)",
    )
    parser.add_argument("--data", required=True, help="folder of wideband reference audio, searched recursively")
    parser.add_argument("--out", required=True, help="output folder for metrics.csv and report.md")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N files (sorted by path)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.limit is not None and args.limit < 1:
            raise EvaluationError(f"--limit must be at least 1, got {args.limit}")
        files = list_audio_files(args.data)
        if not files:
            raise EvaluationError(f"--data {args.data}: no audio files found")
        files = files[: args.limit]
        systems = load_systems(args.model)
        os.makedirs(args.out, exist_ok=True)
        root = args.data if os.path.isdir(args.data) else os.path.dirname(args.data)
        rows, skipped = evaluate_files(files, root, systems, progress=not args.no_progress)
        if not rows:
            raise EvaluationError(f"--data {args.data}: every file was too short to score")
        write_text_atomic(os.path.join(args.out, "metrics.csv"), metrics_csv(rows))
        report = report_markdown(summarize(rows), args.data, len(files) - len(skipped), skipped)
        write_text_atomic(os.path.join(args.out, "report.md"), report)
    except (EvaluationError, AudioError, OSError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    print(report, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
