"""Quality against cost: several model widths, each in every number format LiteRT runs (the Pareto study).

    python -m eval.research pareto --width narrow=EXPORT --width default=EXPORT --width wide=EXPORT \\
        [--qat narrow=QAT_EXPORT ...] --data CORPUS/valid [--pairs NB_DIR WB_DIR] [--limit 100] \\
        [--frames 1000] [--calibration-dir CORPUS/train] --out OUT

For each width, ``formats`` writes a runnable folder per format (``OUT/NAME/...``); each format is scored
(LSD, LSD-HF, WB-PESQ on ``--limit`` files of ``--data`` spread over the folder, through the fixed
evaluation channel, and on the first ``--limit`` ``--pairs``), timed (p50 ms of one 16 ms frame's invoke,
one thread, the format's own streaming file) and weighed (that file's bytes). Writes ``OUT/pareto.json``,
``OUT/pareto.md`` (one row per width and format) and ``OUT/pareto.png`` (WB-PESQ against ms per frame
and against bytes, one colour per width, one marker per format). Each width's bytes and scores are
kept in ``OUT/NAME/points.json``: a run with one more width scores only that one. Every run times
every point again, one after another, so that the times are comparable.

``--qat NAME=EXPORT`` adds one point to width NAME: EXPORT is that width's quantisation-aware fine-tune
(``bwe.train`` with ``quant.enabled``), its 16x8 file (``16x8 QAT``) copied to ``OUT/NAME/16x8-qat``
and scored, weighed and timed beside the width's post-training formats (kept in
``OUT/NAME/qat_points.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from bwe.data.audio import list_audio_files, spread_indices
from bwe.config import OUTPUT_RATE
from bwe.files import write_text_atomic
from eval.research.formats import FORMATS, write_formats

MARKERS = {"float32": "o", "float16": "s", "dynamic": "^", "int4": "v", "full": "x", "16x8": "D", "16x8 QAT": "P"}
QAT_FORMAT = "16x8 QAT"
# every point's format -> (its folder under OUT/NAME, its streaming file, how eval.evaluate names it)
POINT_FORMATS = {**FORMATS, QAT_FORMAT: ("16x8-qat", "streaming_int8.tflite", "{dir}:int8")}


def score(systems: dict, data: str, pairs: tuple[str, str] | None, limit: int) -> dict[str, dict]:
    """Per format: the valid set's means (``data``) and, with ``pairs``, the pairs' (``pairs``)."""
    from eval.evaluate import DEFAULT_MAX_OFFSET_MS, evaluate_files, evaluate_real_pairs, summarize

    files = list_audio_files(data)
    files = [files[i] for i in spread_indices(len(files), limit)]
    sets = {"data": evaluate_files(files, data, systems, progress=False)}
    if pairs:
        offset = int(round(DEFAULT_MAX_OFFSET_MS * OUTPUT_RATE / 1000.0))
        sets["pairs"] = evaluate_real_pairs(*pairs, systems, offset, limit=limit, progress=False)
    summaries = {name: summarize(result.rows) for name, result in sets.items()}
    keys = ("lsd", "lsd_hf", "pesq_wb")
    return {system: {name: {k: summary[system][k] for k in keys} for name, summary in summaries.items()}
            for system in systems}


def time_frame(folder: str, file: str, frames: int) -> float:
    """p50 ms of one frame's invoke of ``folder``'s ``file``, one thread."""
    from bwe.runtime import ExportedModel
    from eval.mobile_timing import time_streaming

    model = ExportedModel(folder, num_threads=1)
    runner = model.runner(os.path.splitext(file)[0])  # the metadata's key of streaming(_int8).tflite
    return time_streaming(runner, frames, max(1, frames // 10))["invoke"]["p50"]


def kept_points(path: str, measure) -> list[dict]:
    """The points kept in ``path``, or ``measure()``'s, then kept there: a later run (another width
    added, an interrupted run) reuses them."""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    points = measure()
    write_text_atomic(path, json.dumps(points, indent=1))
    return points


def width_points(name: str, export: str, out: str, args) -> list[dict]:
    """Every format of one width: its bytes and scores (``OUT/NAME/points.json``)."""
    root = os.path.join(out, name)
    return kept_points(os.path.join(root, "points.json"), lambda: measure_width(name, export, root, args))


def qat_points(name: str, export: str, out: str, args) -> list[dict]:
    """A width's QAT export as one more point, ``16x8 QAT`` (``OUT/NAME/qat_points.json``)."""
    folder, file, spec = POINT_FORMATS[QAT_FORMAT]
    target = os.path.join(out, name, folder)

    def measure() -> list[dict]:
        from eval.evaluate import load_system

        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(export, target, ignore=shutil.ignore_patterns("saved_model"))
        scores = score({QAT_FORMAT: load_system(spec.format(dir=target))}, args.data, args.pairs, args.limit)
        return [{"width": name, "format": QAT_FORMAT, "bytes": os.path.getsize(os.path.join(target, file)),
                 **scores[QAT_FORMAT]}]

    return kept_points(os.path.join(out, name, "qat_points.json"), measure)


def measure_width(name: str, export: str, root: str, args) -> list[dict]:
    from eval.evaluate import load_system

    write_formats(export, root, args.calibration_dir)
    specs = {fmt: spec.format(dir=os.path.join(root, folder)) for fmt, (folder, _, spec) in FORMATS.items()}
    scores = score({fmt: load_system(spec) for fmt, spec in specs.items()}, args.data, args.pairs, args.limit)
    points = []
    for fmt, (folder, file, _) in FORMATS.items():
        path = os.path.join(root, folder, file)
        points.append({"width": name, "format": fmt, "bytes": os.path.getsize(path), **scores[fmt]})
    return points


def time_points(points: list[dict], out: str, frames: int) -> None:
    """Every point's ms per frame, all in this run, one after another (side by side, not from runs
    made at other times under other loads)."""
    for p in points:
        folder, file, _ = POINT_FORMATS[p["format"]]
        p["ms_per_frame"] = time_frame(os.path.join(out, p["width"], folder), file, frames)


def table(points: list[dict]) -> str:
    has_pairs = any("pairs" in p for p in points)
    head = "| width | format | bytes | ms / frame | valid LSD / LSD-HF / WB-PESQ |" + (" pairs LSD-HF / WB-PESQ |" if has_pairs else "")
    lines = [head, "|---|---|---:|---:|---|" + ("---|" if has_pairs else "")]
    for p in points:
        d = p["data"]
        row = (f"| {p['width']} | {p['format']} | {p['bytes']:,} | {p['ms_per_frame']:.3f} | "
               f"{d['lsd']:.3f} / {d['lsd_hf']:.3f} / {d['pesq_wb']:.3f} |")
        if has_pairs:  # a point scored in a run without --pairs has none
            row += f" {p['pairs']['lsd_hf']:.3f} / {p['pairs']['pesq_wb']:.3f} |" if "pairs" in p else " — |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def plot(points: list[dict], path: str) -> str:
    from eval.plots import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    widths = list(dict.fromkeys(p["width"] for p in points))
    for colour, width in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], widths):
        for p in (p for p in points if p["width"] == width):
            for ax, x in zip(axes, (p["ms_per_frame"], p["bytes"] / 1e6)):
                ax.scatter(x, p["data"]["pesq_wb"], color=colour, marker=MARKERS[p["format"]],
                           label=f"{width} {p['format']}")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("ms per 16 ms frame (p50, one thread)")
    axes[1].set_xlabel("streaming file (MB)")
    axes[0].set_ylabel("WB-PESQ (valid)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=len(MARKERS), loc="upper center", bbox_to_anchor=(0.5, 0.0))
    return save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.research pareto", description=__doc__.split("\n")[0])
    parser.add_argument("--width", action="append", required=True, metavar="NAME=EXPORT",
                        help="a width's exported model folder; repeat for each width")
    parser.add_argument("--qat", action="append", default=[], metavar="NAME=EXPORT",
                        help="a width's quantisation-aware fine-tune (exported with 16x8): one more point")
    parser.add_argument("--data", required=True, help="folder of wideband reference audio (the valid split)")
    parser.add_argument("--pairs", nargs=2, metavar=("NB_DIR", "WB_DIR"), help="a codec set's pairs")
    parser.add_argument("--limit", type=int, default=100, help="files (and pairs) scored per format (default 100)")
    parser.add_argument("--frames", type=int, default=1000, help="frames timed per format (default 1000)")
    parser.add_argument("--calibration-dir", help="speech the integer formats calibrate on")
    parser.add_argument("--out", required=True, help="folder for the formats' folders and the results")
    args = parser.parse_args(argv)
    widths = [w.split("=", 1) for w in args.width]
    if any(len(w) != 2 or not os.path.isdir(w[1]) for w in widths):
        parser.error(f"--width: expected NAME=EXPORT with an existing folder, got {args.width}")
    qats = [q.split("=", 1) for q in args.qat]
    if any(len(q) != 2 or not os.path.isdir(q[1]) or q[0] not in dict(widths) for q in qats):
        parser.error(f"--qat: expected NAME=EXPORT with an existing folder and a NAME given to --width, got {args.qat}")
    if args.limit < 1 or args.frames < 1:
        parser.error("--limit and --frames must be at least 1")
    os.makedirs(args.out, exist_ok=True)
    qat = dict(qats)
    points = [p for name, export in widths
              for p in width_points(name, export, args.out, args)
              + (qat_points(name, qat[name], args.out, args) if name in qat else [])]
    time_points(points, args.out, args.frames)
    for name, text in (("pareto.json", json.dumps(points, indent=1)), ("pareto.md", table(points))):
        write_text_atomic(os.path.join(args.out, name), text)
    plot(points, os.path.join(args.out, "pareto.png"))
    print(table(points), end="")
    return 0
