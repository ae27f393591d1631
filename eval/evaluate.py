"""Objective evaluation: LSD, LSD-LF, LSD-HF and WB-PESQ (and ViSQOL) of systems against wideband references.

    python -m eval.evaluate --model folding --model runs/x/export --data DIR --out OUT [--limit N]
    python -m eval.evaluate --model runs/x/export --pairs NB_DIR WB_DIR --out OUT
    python -m eval.evaluate --model a=runs/x/export --model b=runs/y/export --data DIR --pairs NB WB --out OUT
    python -m eval.evaluate --model runs/x/export --data DIR --out OUT --visqol

Two kinds of test material, one or both per run:

``--data DIR``: every audio file under DIR (recursively) is a wideband reference; it is read as
mono, resampled to 16 kHz if needed, degraded to 8 kHz with the fixed
``bwe.data.degrade.evaluation_degradation``, and passed through each system.

``--pairs NB_DIR WB_DIR``: real narrowband recordings (read at 8 kHz) with their wideband
counterparts (16 kHz), paired by relative path without extension. The two recordings of a pair
may be offset in time; the offset is found once per pair with ``bwe.metrics.estimate_delay``
between the reference and the input played at 16 kHz (``sinc``), and removed from every system's
output alike, so a system that shifts its output still shows as delayed.

A system is ``sinc``, ``folding`` (the baselines, always included) or the directory of an exported
model (``bwe.runtime.ExportedModel``; ``DIR:int8`` for its int8 streaming model), optionally named
``NAME=DIR``; repeat ``--model`` to put several side by side. Outputs are trimmed to the reference's length; systems must be time-aligned
with their input, which the report checks (median cross-correlation delay per system).

``--visqol`` adds ViSQOL (v3, speech mode: ``bwe.metrics.visqol_speech``) as a second perceptual
metric beside WB-PESQ, in every table and file below (a ``visqol`` column after ``pesq_wb``).

Writes, atomically:
  OUT/metrics.csv      one row per file and system: file, model, lsd, lsd_lf, lsd_hf, pesq_wb,
                       [visqol,] set, delay, offset (pesq_wb/visqol is the text ``unscorable`` when
                       the metric finds nothing to score, never a number; set is ``data`` or
                       ``pairs``; delay is the output's residual lag in samples; offset the pair's
                       alignment shift, empty for ``data``)
  OUT/summary.json     per set and system: mean and 95 % confidence interval of every metric;
                       for ``--data`` spread over several first-level folders (sources, speakers),
                       the same per folder under ``by_folder``
  OUT/report.md        the tables (means; confidence intervals; per folder), box plots and spectrograms
  OUT/figures/*.png    box plots per metric and set; spectrogram panels (reference / input /
                       each system) for ``--spectrograms`` files per set

Metric definitions live in ``bwe.metrics``; corpus figures are means over files, with Student-t
95 % confidence intervals over files.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from bwe.baselines import BASELINES, sinc
from bwe.config import INPUT_RATE, OUTPUT_RATE
from bwe.data.audio import AudioError, list_audio_files, load_audio, spread_indices
from bwe.data.degrade import EVAL_CUTOFF_HZ, EVAL_FILTER_ORDER, EVAL_RIPPLE_DB, evaluation_degradation
from bwe.files import write_text_atomic
from bwe.metrics import LSD_N_FFT, estimate_delay, import_visqol, lsd_all, pesq_wb, visqol_speech
from eval.stats import mean_ci95, nan_to_none

UNSCORABLE = "unscorable"
CSV_COLUMNS = ("file", "model", "lsd", "lsd_lf", "lsd_hf", "pesq_wb", "set", "delay", "offset")
METRICS = ("lsd", "lsd_lf", "lsd_hf", "pesq_wb")
VISQOL = "visqol"
METRIC_LABELS = {"lsd": "LSD", "lsd_lf": "LSD-LF", "lsd_hf": "LSD-HF", "pesq_wb": "WB-PESQ", VISQOL: "ViSQOL"}
# Metrics a file may be unscorable by (None in a Row), reported with how many files each scored.
PERCEPTUAL = ("pesq_wb", VISQOL)
UNSCORABLE_LABELS = {"pesq_wb": "PESQ unscorable", VISQOL: "ViSQOL unscorable"}
DATA_SET, PAIRS_SET = "data", "pairs"
# A delay check over +-20 ms catches a model whose delay compensation is off, without being fooled
# by the periodicity of voiced speech (pitch periods are 2.5-10 ms, but their peaks are lower).
DELAY_SEARCH = 320
# Real pairs come from two recordings or codec chains; their offset can be much larger than a
# model's delay error, so the search for it is wider.
DEFAULT_MAX_OFFSET_MS = 250.0

System = Callable[[np.ndarray], np.ndarray]


class EvaluationError(RuntimeError):
    """A command-line argument or input cannot be used; the message says which and why."""


@dataclass
class Row:
    """Scores of one system on one file. ``pesq_wb`` (``visqol``) None means PESQ (ViSQOL) could not
    score it; ``visqol`` is also None when ViSQOL was not asked for (``SetResult.visqol`` says which).

    ``set`` is ``data`` (simulated narrowband) or ``pairs`` (real narrowband); ``offset`` is the
    shift applied to align a real pair (None for simulated input).
    """

    file: str
    model: str
    lsd: float
    lsd_lf: float
    lsd_hf: float
    pesq_wb: float | None
    delay: int
    set: str = DATA_SET
    offset: int | None = None
    visqol: float | None = None


@dataclass
class SetResult:
    """Everything one set of test material produced: rows, skipped files, spectrogram material."""

    name: str
    description: str
    visqol: bool = False
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)
    panels: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


INT8_SUFFIX = ":int8"


def load_system(name: str) -> System:
    """A baseline by name, or an exported model from its directory (needs ``bwe.runtime``).

    A model runs whole files through its block model (``block.tflite``, which gives exactly the
    output of the float streaming model, one call per block of frames); ``DIR:int8`` runs the int8
    one instead (``block_int8.tflite``, or ``streaming_int8.tflite`` frame by frame when the export
    has no int8 block model).
    """
    if name in BASELINES:
        return BASELINES[name]
    int8 = name.endswith(INT8_SUFFIX) and not os.path.isdir(name)
    folder = name[: -len(INT8_SUFFIX)] if int8 else name
    if not os.path.isdir(folder):
        raise EvaluationError(
            f"--model {name}: neither a baseline ({', '.join(sorted(BASELINES))}) nor an existing model directory"
        )
    try:
        from bwe.runtime import ExportedModel  # imported lazily: baselines need no model runtime
    except ImportError as e:
        raise EvaluationError(f"--model {name}: cannot load exported models, bwe.runtime is unavailable ({e})") from e
    try:
        return ExportedModel(folder, int8=int8)
    except Exception as e:  # the runtime's own error says what is wrong with the directory
        raise EvaluationError(f"--model {name}: cannot load the exported model ({type(e).__name__}: {e})") from e


def split_model_spec(spec: str) -> tuple[str, str]:
    """``NAME=DIR`` -> (NAME, DIR); a plain value is labelled by itself (a baseline name or a path)."""
    name, sep, target = spec.partition("=")
    if sep and name and target and not os.path.exists(spec):
        return name, target
    return (spec if spec in BASELINES else os.path.normpath(spec)), spec


def load_systems(names: Sequence[str]) -> dict[str, System]:
    """Baselines first (always), then the requested systems in order, without duplicates.

    Raises:
        EvaluationError: a system cannot be loaded, or two different systems share a label.
    """
    systems: dict[str, System] = {}
    targets: dict[str, str] = {}
    for spec in list(BASELINES) + [n for n in names if n not in BASELINES]:
        label, target = split_model_spec(spec)
        if label in targets:
            if os.path.normpath(targets[label]) != os.path.normpath(target):
                raise EvaluationError(f"--model {spec}: the label {label!r} is already used for {targets[label]}")
            continue
        targets[label] = target
        systems[label] = load_system(target)
    return systems


def score_pair(reference: np.ndarray, output: np.ndarray, visqol: bool = False) -> dict[str, float | None]:
    """LSDs, WB-PESQ (None if unscorable), ViSQOL if asked for (None if unscorable) and the delay
    of ``output`` against ``reference`` at 16 kHz, by name (``Row``'s field names)."""
    output = np.asarray(output, dtype=np.float32)[: reference.shape[0]]
    scores: dict[str, float | None] = dict(lsd_all(reference, output))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unscorable files are counted in the report instead
        scores["pesq_wb"] = pesq_wb(reference, output)
        if visqol:
            scores[VISQOL] = visqol_speech(reference, output)
    scores["delay"] = estimate_delay(reference, output, DELAY_SEARCH)
    return scores


def run_system(name: str, label: str, system: System, narrowband: np.ndarray) -> np.ndarray:
    """One system's 16 kHz output for one 8 kHz input, checked for shape and finiteness."""
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
    return np.asarray(output, dtype=np.float32)


def evaluate_pair(
    name: str,
    reference: np.ndarray,
    narrowband: np.ndarray,
    systems: dict[str, System],
    outputs: dict[str, np.ndarray] | None = None,
    visqol: bool = False,
) -> list[Row]:
    """Run every system on one 8 kHz input and score it against its 16 kHz reference.

    If ``outputs`` is a dict, every system's (trimmed) output is stored in it by label.
    """
    rows = []
    for label, system in systems.items():
        output = run_system(name, label, system, narrowband)
        rows.append(Row(name, label, **score_pair(reference, output, visqol)))
        if outputs is not None:
            outputs[label] = output[: reference.shape[0]]
    return rows


def panel_indices(n_files: int, n_panels: int) -> set[int]:
    """Indices of ``n_panels`` files spread evenly over ``n_files`` (first and last included)."""
    return set(spread_indices(n_files, n_panels))


def evaluate_files(
    files: Iterable[str], root: str, systems: dict[str, System], progress: bool = True, spectrograms: int = 0,
    visqol: bool = False,
) -> SetResult:
    """Score every system on every reference file, degraded by the fixed evaluation channel."""
    result = SetResult(DATA_SET, "simulated narrowband", visqol)
    files = list(files)
    keep = panel_indices(len(files), spectrograms)
    for index, path in enumerate(tqdm(files, desc="evaluating", unit="file", disable=not progress, file=sys.stderr)):
        name = os.path.relpath(path, root)
        reference, _ = load_audio(path, target_rate=OUTPUT_RATE)
        if reference.shape[0] <= LSD_N_FFT // 2:
            result.skipped.append(name)
            continue
        narrowband = evaluation_degradation(reference)
        outputs: dict[str, np.ndarray] | None = {} if index in keep else None
        result.rows.extend(evaluate_pair(name, reference, narrowband, systems, outputs, visqol))
        if outputs is not None:
            result.panels[name] = {"reference": reference, "input (8 kHz)": sinc(narrowband)[: len(reference)], **outputs}
    return result


def _by_stem(root: str, flag: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in list_audio_files(root):
        stem = os.path.splitext(os.path.relpath(path, root))[0]
        if stem in found:
            raise EvaluationError(f"{flag} {root}: {found[stem]} and {path} have the same name; cannot pair them")
        found[stem] = path
    return found


def paired_stems(nb_dir: str, wb_dir: str) -> tuple[list[tuple[str, str]], list[str]]:
    """``(pairs, unpaired)``: the (narrowband, wideband) paths of the files of ``nb_dir`` and ``wb_dir``
    with the same relative name up to the extension, sorted by it, and the files without a partner;
    an EvaluationError when no name is in common."""
    narrow, wide = _by_stem(nb_dir, "--pairs"), _by_stem(wb_dir, "--pairs")
    unpaired = sorted(
        [os.path.relpath(narrow[s], nb_dir) + " (no wideband)" for s in narrow.keys() - wide.keys()]
        + [os.path.relpath(wide[s], wb_dir) + " (no narrowband)" for s in wide.keys() - narrow.keys()]
    )
    stems = sorted(narrow.keys() & wide.keys())
    if not stems:
        raise EvaluationError(f"--pairs {nb_dir} {wb_dir}: no file names in common, nothing to pair")
    return [(narrow[s], wide[s]) for s in stems], unpaired


def shift(reference: np.ndarray, estimate: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Undo a lag of ``offset`` samples of ``estimate`` behind ``reference``; trim both to equal length.

    The same shift as ``bwe.metrics.align`` applies, with the offset given instead of estimated,
    so one offset found for a pair can be applied to every system's output.
    """
    if offset > 0:
        estimate = estimate[offset:]
    elif offset < 0:
        reference = reference[-offset:]
    n = min(len(reference), len(estimate))
    return reference[:n], estimate[:n]


def aligned_to_reference(wideband: np.ndarray, signals: dict[str, np.ndarray],
                         offset: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The reference and each of ``signals`` (on the input's timeline) with the lag ``offset`` undone
    by :func:`shift`, all trimmed to the shortest."""
    shifted = {name: shift(wideband, signal, offset) for name, signal in signals.items()}
    n = min(len(estimate) for _, estimate in shifted.values())
    reference = next(iter(shifted.values()))[0][:n]  # every shift drops the same start of the reference
    return reference, {name: estimate[:n] for name, (_, estimate) in shifted.items()}


def evaluate_real_pairs(
    nb_dir: str,
    wb_dir: str,
    systems: dict[str, System],
    max_offset: int,
    limit: int | None = None,
    progress: bool = True,
    spectrograms: int = 0,
    visqol: bool = False,
) -> SetResult:
    """Score every system on real narrowband recordings against their wideband counterparts."""
    result = SetResult(PAIRS_SET, "real narrowband pairs", visqol)
    pairs, result.unpaired = paired_stems(nb_dir, wb_dir)
    pairs = pairs[:limit]
    keep = panel_indices(len(pairs), spectrograms)
    for index, (narrow_path, wide_path) in enumerate(
            tqdm(pairs, desc="pairs", unit="pair", disable=not progress, file=sys.stderr)):
        name = os.path.relpath(wide_path, wb_dir)
        narrowband, _ = load_audio(narrow_path, target_rate=INPUT_RATE)
        wideband, _ = load_audio(wide_path, target_rate=OUTPUT_RATE)
        upsampled = sinc(narrowband)
        offset = estimate_delay(wideband, upsampled, max_offset)
        reference, _ = shift(wideband, upsampled, offset)
        if reference.shape[0] <= LSD_N_FFT // 2:
            result.skipped.append(name)
            continue
        outputs: dict[str, np.ndarray] = {}
        for label, system in systems.items():
            output = run_system(name, label, system, narrowband)
            ref, est = shift(wideband, output, offset)
            result.rows.append(Row(name, label, **score_pair(ref, est, visqol), set=PAIRS_SET, offset=offset))
            outputs[label] = est
        if index in keep:
            n = min(len(v) for v in outputs.values())
            aligned_input = shift(wideband, upsampled, offset)[1]
            result.panels[name] = {
                "reference": reference[:n],
                "input (8 kHz)": aligned_input[:n],
                **{k: v[:n] for k, v in outputs.items()},
            }
    return result


def metrics_of(visqol: bool) -> tuple[str, ...]:
    return METRICS + ((VISQOL,) if visqol else ())


def count_keys(metric: str) -> tuple[str, str]:
    """The summary keys of a perceptual metric's (scored, unscorable) file counts. PESQ's keep their
    original names, which summary.json readers already use."""
    return ("pesq_scored", "unscorable") if metric == "pesq_wb" else (f"{metric}_scored", f"{metric}_unscorable")


def summarize(rows: Sequence[Row], visqol: bool = False) -> dict[str, dict[str, float]]:
    """Per system: files, mean lsd/lsd_lf/lsd_hf, mean pesq_wb (and visqol) over the files each could
    score with the counts (``pesq_scored``/``unscorable``, ``visqol_scored``/``visqol_unscorable``),
    median delay, and the 95 % confidence interval of each mean (``<metric>_ci95``: [low, high]).
    Systems keep their order of first appearance."""
    summary: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        entry: dict = {"files": len(mine)}
        for metric in metrics_of(visqol):
            values = [getattr(r, metric) for r in mine]
            if metric in PERCEPTUAL:
                values = [v for v in values if v is not None]
            mean, low, high = mean_ci95(values)
            entry[metric] = mean
            entry[f"{metric}_ci95"] = [low, high]
            if metric in PERCEPTUAL:
                scored_key, unscorable_key = count_keys(metric)
                entry[scored_key] = len(values)
                entry[unscorable_key] = len(mine) - len(values)
        entry["median_delay"] = float(np.median([r.delay for r in mine]))
        if any(r.offset is not None for r in mine):
            entry["median_offset"] = float(np.median([r.offset for r in mine if r.offset is not None]))
        summary[model] = entry
    return summary


def folder_of(file: str) -> str:
    """The first folder of a file's path relative to ``--data`` ("." for a file directly in it)."""
    parts = file.replace(os.sep, "/").split("/")
    return parts[0] if len(parts) > 1 else "."


def summarize_by_folder(rows: Sequence[Row], visqol: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`summarize` per first-level folder (in order of appearance); empty unless there are several."""
    folders = list(dict.fromkeys(folder_of(r.file) for r in rows))
    if len(folders) < 2:
        return {}
    return {folder: summarize([r for r in rows if folder_of(r.file) == folder], visqol) for folder in folders}


def check_new_folder(out_dir: str, what: str) -> None:
    """Before anything is written: an EvaluationError naming ``what`` unless ``out_dir`` (a folder a
    script is about to build beside itself and rename into place) is new and its parent exists."""
    if os.path.exists(out_dir):
        raise EvaluationError(f"{what}: already exists; choose a new folder (nothing was written)")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise EvaluationError(f"{what}: parent folder {parent} does not exist")


def _score_text(value: float | None) -> str:
    return UNSCORABLE if value is None else f"{value:.6f}"


def metrics_csv(rows: Sequence[Row], visqol: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = list(CSV_COLUMNS)
    if visqol:
        columns.insert(columns.index("pesq_wb") + 1, VISQOL)
    writer.writerow(columns)
    for r in rows:
        offset = "" if r.offset is None else str(r.offset)
        perceptual = [_score_text(r.pesq_wb)] + ([_score_text(r.visqol)] if visqol else [])
        writer.writerow([r.file, r.model, f"{r.lsd:.6f}", f"{r.lsd_lf:.6f}", f"{r.lsd_hf:.6f}", *perceptual, r.set,
                         r.delay, offset])
    return buffer.getvalue()


def _ci(interval: Sequence[float], digits: int = 3) -> str:
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _mean(summary: dict, metric: str) -> str:
    """A perceptual metric's mean for a table: n/a when it scored no file."""
    return "n/a" if math.isnan(summary[metric]) else f"{summary[metric]:.3f}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "file"


def _input_lines(result: SetResult, source: str, n_files: int) -> list[str]:
    """How a set's input was made: the references and the degradation, or the real pairs."""
    if result.name == DATA_SET:
        return [
            f"References: `{source}`, {n_files} files scored"
            + (f", {len(result.skipped)} skipped as shorter than {LSD_N_FFT // 2 + 1} samples." if result.skipped else "."),
            f"Input: each reference degraded by the fixed evaluation channel (Chebyshev I, order {EVAL_FILTER_ORDER}, "
            f"{EVAL_RIPPLE_DB} dB ripple, {EVAL_CUTOFF_HZ:.0f} Hz, zero-phase; soxr to 8 kHz).",
        ]
    return [
        f"Pairs: `{source}`, {n_files} pairs scored"
        + (f", {len(result.skipped)} skipped as shorter than {LSD_N_FFT // 2 + 1} samples" if result.skipped else "")
        + (f", {len(result.unpaired)} files without a counterpart." if result.unpaired else "."),
        "Input: the real 8 kHz recording. Each pair is aligned once (cross-correlation of the reference with the "
        "input played at 16 kHz) and the same shift is applied to every system's output.",
    ]


def _score_tables(summary: dict[str, dict], perceptual: Sequence[str], visqol: bool) -> list[str]:
    """The metrics used, the table of means per system and the table of their confidence intervals."""
    lines = [
        "Metrics: `bwe.metrics` (LSD: n_fft 2048, hop 512, Hann, log10 power; LSD-LF 0-4 kHz, LSD-HF 4-8 kHz; "
        "WB-PESQ P.862.2" + ("; ViSQOL v3 speech mode" if visqol else "") + "). Means over files; lower LSD and "
        "higher PESQ" + (" and ViSQOL" if visqol else "") + " are better.",
        "",
        "| system | files | LSD | LSD-LF | LSD-HF |"
        + "".join(f" {METRIC_LABELS[m]} | {UNSCORABLE_LABELS[m]} |" for m in perceptual) + " median delay |",
        "|---|---:|---:|---:|---:|" + "---:|---:|" * len(perceptual) + "---:|",
    ]
    for model, s in summary.items():
        lines.append(
            f"| {model} | {s['files']} | {s['lsd']:.3f} | {s['lsd_lf']:.3f} | {s['lsd_hf']:.3f} |"
            + "".join(f" {_mean(s, m)} | {s[count_keys(m)[1]]} |" for m in perceptual) + f" {s['median_delay']:+.0f} |"
        )
    lines += [
        "",
        "95 % confidence intervals of the means (Student t over files; WB-PESQ"
        + (" and ViSQOL" if visqol else "") + " over the scorable files):",
        "",
        "| system | LSD | LSD-LF | LSD-HF |" + "".join(f" {METRIC_LABELS[m]} |" for m in perceptual),
        "|---|---|---|---|" + "---|" * len(perceptual),
    ]
    for model, s in summary.items():
        lines.append(f"| {model} | {_ci(s['lsd_ci95'])} | {_ci(s['lsd_lf_ci95'])} | {_ci(s['lsd_hf_ci95'])} |"
                     + "".join(f" {_ci(s[f'{m}_ci95'])} |" for m in perceptual))
    lines += [
        "",
        "WB-PESQ is the mean over the files PESQ could score; `unscorable` files (no utterance found) are counted, "
        "not scored" + (" (the same for ViSQOL: no speech patch found)" if visqol else "")
        + ". A median delay other than +0 samples means a system's output is not time-aligned with its input.",
    ]
    return lines


def _folder_lines(result: SetResult, perceptual: Sequence[str]) -> list[str]:
    """The simulated set's table per first-level folder; nothing when there is none (or for pairs)."""
    by_folder = summarize_by_folder(result.rows, result.visqol) if result.name == DATA_SET else {}
    if not by_folder:
        return []
    lines = [
        "",
        "By first-level folder (a corpus that mixes sources shows here which of them a system does worse on):",
        "",
        "| folder | system | files | LSD | LSD-HF |" + "".join(f" {METRIC_LABELS[m]} |" for m in perceptual),
        "|---|---|---:|---:|---:|" + "---:|" * len(perceptual),
    ]
    for folder, systems in by_folder.items():
        for model, s in systems.items():
            lines.append(f"| {folder} | {model} | {s['files']} | {s['lsd']:.3f} | {s['lsd_hf']:.3f} |"
                         + "".join(f" {_mean(s, m)} |" for m in perceptual))
    return lines


def _file_notes_and_figures(result: SetResult, summary: dict[str, dict], figures: dict[str, str]) -> list[str]:
    """The pairs' alignment shifts, the skipped and unpaired files, and the figures."""
    lines = []
    if result.name == PAIRS_SET and summary:
        offsets = sorted({r.offset for r in result.rows if r.offset is not None})
        lines += ["", f"Pair alignment shifts (samples at 16 kHz): {offsets[0]:+d} to {offsets[-1]:+d}."]
    if result.skipped:
        lines += ["", "Skipped (too short for the LSD STFT): " + ", ".join(f"`{s}`" for s in result.skipped)]
    if result.unpaired:
        lines += ["", "Not paired: " + ", ".join(f"`{s}`" for s in result.unpaired)]
    boxes = [f"![{METRIC_LABELS[m]}]({figures[m]})" for m in metrics_of(result.visqol) if m in figures]
    if boxes:
        lines += ["", "Per-file distributions:", "", " ".join(boxes)]
    spectra = [(k[len("spec:") :], v) for k, v in figures.items() if k.startswith("spec:")]
    if spectra:
        lines += ["", "Spectrograms (reference / input / each system):", ""]
        lines += [f"![{name}]({path})" for name, path in spectra]
    return lines


def report_section(result: SetResult, source: str, figures: dict[str, str], n_files: int) -> list[str]:
    """Markdown for one set: how its input was made, the tables, and its figures."""
    summary = summarize(result.rows, result.visqol)
    perceptual = [m for m in metrics_of(result.visqol) if m in PERCEPTUAL]
    return (_input_lines(result, source, n_files) + _score_tables(summary, perceptual, result.visqol)
            + _folder_lines(result, perceptual) + _file_notes_and_figures(result, summary, figures))


def make_figures(result: SetResult, out: str) -> dict[str, str]:
    """Box plots per metric and spectrogram panels for one set; returns {key: path relative to out}."""
    from eval.plots import boxplot, spectrogram_panels

    folder = os.path.join(out, "figures")
    os.makedirs(folder, exist_ok=True)
    figures = {}
    models = list(dict.fromkeys(r.model for r in result.rows))
    for metric in metrics_of(result.visqol):
        groups = {}
        for model in models:
            values = [getattr(r, metric) for r in result.rows if r.model == model]
            groups[model] = [np.nan if v is None else v for v in values]
        rel = f"figures/{result.name}_{metric}.png"
        boxplot(groups, os.path.join(out, rel), ylabel=METRIC_LABELS[metric], title=f"{METRIC_LABELS[metric]} ({result.description})")
        figures[metric] = rel
    for name, signals in result.panels.items():
        rel = f"figures/{result.name}_spectrogram_{_safe_name(os.path.splitext(name)[0])}.png"
        spectrogram_panels(signals, OUTPUT_RATE, os.path.join(out, rel), title=name)
        figures[f"spec:{name}"] = rel
    return figures


def report_markdown(sections: Sequence[tuple[SetResult, str, dict[str, str], int]]) -> str:
    lines = ["# Objective evaluation", ""]
    titled = len(sections) > 1
    for result, source, figures, n_files in sections:
        if titled:
            title = "Simulated narrowband (`--data`)" if result.name == DATA_SET else "Real narrowband pairs (`--pairs`)"
            lines += [f"## {title}", ""]
        lines += report_section(result, source, figures, n_files) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def summary_json(sections: Sequence[tuple[SetResult, str, dict[str, str], int]]) -> str:
    body = {
        result.name: {
            "source": source,
            "files": n_files,
            "skipped": result.skipped,
            "unpaired": result.unpaired,
            "systems": summarize(result.rows, result.visqol),
            **({"by_folder": summarize_by_folder(result.rows, result.visqol)} if result.name == DATA_SET else {}),
        }
        for result, source, _, n_files in sections
    }
    return json.dumps(nan_to_none(body), indent=2) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m eval.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="sinc, folding, an exported model directory (DIR:int8 for its int8 model) or NAME=DIR; repeatable "
        "(the baselines are always included)",
    )
    parser.add_argument("--data", help="folder of wideband reference audio, searched recursively")
    parser.add_argument(
        "--pairs", nargs=2, metavar=("NB_DIR", "WB_DIR"), help="real narrowband recordings and their wideband counterparts (same names)"
    )
    parser.add_argument("--out", required=True, help="output folder for metrics.csv, summary.json, report.md, figures/")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N files of each set (sorted by path)")
    parser.add_argument("--spectrograms", type=int, default=3, help="spectrogram panels for N files per set (0: none)")
    parser.add_argument("--no-plots", action="store_true", help="no box plots and no spectrograms")
    parser.add_argument(
        "--max-offset-ms", type=float, default=DEFAULT_MAX_OFFSET_MS, help="largest offset searched when aligning --pairs"
    )
    parser.add_argument("--visqol", action="store_true",
                        help="also score ViSQOL (v3 speech mode; needs visqol-python, in the eval extra)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.data is None and args.pairs is None:
            raise EvaluationError("give --data DIR and/or --pairs NB_DIR WB_DIR")
        if args.limit is not None and args.limit < 1:
            raise EvaluationError(f"--limit must be at least 1, got {args.limit}")
        if args.spectrograms < 0:
            raise EvaluationError(f"--spectrograms must be 0 or more, got {args.spectrograms}")
        if args.max_offset_ms < 0:
            raise EvaluationError(f"--max-offset-ms must be 0 or more, got {args.max_offset_ms}")
        files = []
        if args.data is not None:
            files = list_audio_files(args.data)
            if not files:
                raise EvaluationError(f"--data {args.data}: no audio files found")
            files = files[: args.limit]
        if args.pairs is not None:
            for folder in args.pairs:
                if not os.path.isdir(folder):
                    raise EvaluationError(f"--pairs: {folder}: no such directory")
        systems = load_systems(args.model)
        if args.visqol:
            import_visqol()  # fail now, not after the first file, when it is not installed
        spectrograms = 0 if args.no_plots else args.spectrograms
        progress = not args.no_progress
        os.makedirs(args.out, exist_ok=True)
        results = []
        if args.data is not None:
            root = args.data if os.path.isdir(args.data) else os.path.dirname(args.data)
            result = evaluate_files(files, root, systems, progress=progress, spectrograms=spectrograms,
                                    visqol=args.visqol)
            if not result.rows:
                raise EvaluationError(f"--data {args.data}: every file was too short to score")
            results.append((result, args.data, len(files) - len(result.skipped)))
        if args.pairs is not None:
            max_offset = int(round(args.max_offset_ms * OUTPUT_RATE / 1000.0))
            result = evaluate_real_pairs(
                *args.pairs, systems, max_offset, limit=args.limit, progress=progress, spectrograms=spectrograms,
                visqol=args.visqol,
            )
            if not result.rows:
                raise EvaluationError(f"--pairs {' '.join(args.pairs)}: every pair was too short to score")
            n_pairs = len({r.file for r in result.rows})
            results.append((result, " / ".join(args.pairs), n_pairs))
        sections = []
        for result, source, n_files in results:
            figures = {} if args.no_plots else make_figures(result, args.out)
            sections.append((result, source, figures, n_files))
        write_text_atomic(os.path.join(args.out, "metrics.csv"),
                          metrics_csv([r for res, *_ in sections for r in res.rows], args.visqol))
        write_text_atomic(os.path.join(args.out, "summary.json"), summary_json(sections))
        report = report_markdown(sections)
        write_text_atomic(os.path.join(args.out, "report.md"), report)
    except (EvaluationError, AudioError, OSError, ImportError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    print(report, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
