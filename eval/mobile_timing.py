"""Per-frame CPU latency of an exported model's streaming files, float vs int8, side by side.

    python -m eval.mobile_timing MODEL_DIR [--threads 1] [--frames 2000] [--warmup 200] [--json]
                                  [--offline-seconds 60] [--per-layer]

For ``streaming.tflite`` and ``streaming_int8.tflite`` (LiteRT; its default XNNPACK delegate takes
the float and int8 CPU kernels): warm-up frames, then ``--frames`` timed frames of speech-like
noise with the states fed back as a real stream would. Two numbers per frame:

* ``invoke``: the interpreter call alone, what a native (C++/Java) runtime pays per 16 ms frame;
* ``step``: invoke plus Python's copies of the audio and every state tensor in and out.

Reports p50/p90/p99 in ms, the real-time factor (p50 / 16 ms), MACs per frame (from metadata.json)
and the achieved GMAC/s at p50. Also times the whole-signal path on ``--offline-seconds`` of audio:
``offline.tflite`` in one call, and ``bwe.runtime`` (block.tflite with carried state).
``--per-layer`` lists each convolution's share of the MACs (TFLite's op profiler is not exposed
in Python; on a phone use ``benchmark_model --enable_op_profiling=true``, see eval/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from bwe.metadata import ModelMetadata
from bwe.runtime import ExportedModel, ModelError, StatefulRunner, without_delegate_notice

FRAME_MS = 16.0


def _percentiles(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


def time_streaming(runner: StatefulRunner, frames: int, warmup: int, seed: int = 0) -> dict:
    """Time ``frames`` calls of one streaming runner, after ``warmup`` untimed ones, with the states fed
    back; returns invoke/step percentiles. The step is the runner's `feed`, `invoke` and `fetch`: what
    `StatefulRunner.run` does for every frame of a session."""
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((warmup + frames, runner.frame_in))).astype(np.float32)
    states = [s.copy() for s in runner.zero_states]
    invoke_t, step_t = [], []
    for i in range(warmup + frames):
        t0 = time.perf_counter()
        runner.feed(audio[i], states)
        t1 = time.perf_counter()
        runner.invoke()
        t2 = time.perf_counter()
        _, states = runner.fetch()
        t3 = time.perf_counter()
        if i >= warmup:
            invoke_t.append(t2 - t1)
            step_t.append(t3 - t0)
    return {"invoke": _percentiles(invoke_t), "step": _percentiles(step_t)}


def time_offline(model_dir: str, meta: ModelMetadata, threads: int, seconds: float) -> dict:
    """Real-time factors of offline.tflite (one call) and bwe.runtime (blocks) on ``seconds`` of audio."""
    from ai_edge_litert.interpreter import Interpreter

    rate, frame = meta.input_rate, meta.frame_input_samples
    x = (0.1 * np.random.default_rng(1).standard_normal(int(seconds * rate))).astype(np.float32)
    x = x[: len(x) // frame * frame]
    offline_s = None
    if "offline" in meta.files:  # the bundled default model leaves offline.tflite out
        interpreter = Interpreter(model_path=os.path.join(model_dir, meta.files["offline"].file),
                                  num_threads=threads)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, [1, len(x), 1])
        with without_delegate_notice():
            interpreter.allocate_tensors()
        interpreter.set_tensor(index, x[None, :, None])
        t0 = time.perf_counter()
        interpreter.invoke()
        offline_s = time.perf_counter() - t0
    duration = len(x) / rate
    result = {"seconds": duration, "offline_tflite_rtf": None if offline_s is None else offline_s / duration}
    variants = [("runtime_blocks_rtf", False)] + ([("runtime_blocks_int8_rtf", True)]
                                                  if "block_int8" in meta.files else [])
    for key, int8 in variants:
        model = ExportedModel(model_dir, int8=int8, num_threads=threads)
        # Warm up both interpreters (a block and a frame): a first invoke packs the weights.
        model(x[: (meta.files["block"].frames_per_call + 1) * frame])
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
        result[key] = float(np.median(times)) / duration
    return result


def macs_per_layer(meta: ModelMetadata) -> dict[str, int]:
    from bwe.config import recipe_from_dict
    from bwe.models.seanet import macs_per_layer as per_layer

    return per_layer(recipe_from_dict(meta.recipe).model)


def run(model_dir: str, threads: int = 1, frames: int = 2000, warmup: int = 200, offline_seconds: float = 60.0,
        per_layer: bool = False) -> dict:
    model = ExportedModel(model_dir, num_threads=threads)
    meta = model.metadata
    macs = meta.macs_per_frame
    report = {"model_dir": os.path.abspath(model_dir), "threads": threads, "frames": frames, "warmup": warmup,
              "params": meta.params, "macs_per_frame": macs, "frame_ms": FRAME_MS, "streaming": {}}
    for key in ("streaming", "streaming_int8"):
        if key not in meta.files:
            continue
        result = time_streaming(model.runner(key), frames, warmup)
        p50 = result["invoke"]["p50"]
        result["rtf_invoke_p50"] = p50 / FRAME_MS
        result["rtf_step_p50"] = result["step"]["p50"] / FRAME_MS
        result["gmac_per_s_p50"] = macs / (p50 * 1e-3) / 1e9
        report["streaming"][key] = result
    if offline_seconds > 0:
        report["offline"] = time_offline(model_dir, meta, threads, offline_seconds)
    if per_layer:
        report["macs_per_layer"] = macs_per_layer(meta)
    return report


def format_report(report: dict) -> str:
    lines = [f"model: {report['model_dir']}",
             f"params {report['params']:,}  MACs/frame {report['macs_per_frame']:,}  threads {report['threads']}  "
             f"frames {report['frames']} (after {report['warmup']} warm-up)",
             "",
             f"{'file':<16}{'what':<8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'RTF p50':>9}{'GMAC/s':>8}"]
    for key, result in report["streaming"].items():
        for what in ("invoke", "step"):
            p = result[what]
            rtf = p["p50"] / FRAME_MS
            gmacs = f"{result['gmac_per_s_p50']:8.2f}" if what == "invoke" else ""
            lines.append(f"{key:<16}{what:<8}{p['p50']:9.3f}{p['p90']:9.3f}{p['p99']:9.3f}{rtf:9.4f}{gmacs}")
    if "offline" in report:
        o = report["offline"]
        offline = "not in this export" if o["offline_tflite_rtf"] is None else f"{o['offline_tflite_rtf']:.4f}"
        lines += ["", f"whole signal ({o['seconds']:.0f} s): offline.tflite RTF {offline}, "
                      f"bwe.runtime (block.tflite) RTF {o['runtime_blocks_rtf']:.4f} "
                      f"({1 / o['runtime_blocks_rtf']:.0f}x real time)"]
        if "runtime_blocks_int8_rtf" in o:
            lines.append(f"  int8 (block_int8.tflite) RTF {o['runtime_blocks_int8_rtf']:.4f} "
                         f"({1 / o['runtime_blocks_int8_rtf']:.0f}x real time)")
    if "macs_per_layer" in report:
        total = sum(report["macs_per_layer"].values())
        lines += ["", "MACs per 16 ms frame by layer:"]
        for name, value in sorted(report["macs_per_layer"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<22}{value:>12,}  {100 * value / total:5.1f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.mobile_timing", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="a bwe-export output folder")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1: one core)")
    parser.add_argument("--frames", type=int, default=2000, help="timed frames per file (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed frames first (default 200)")
    parser.add_argument("--offline-seconds", type=float, default=60.0,
                        help="length of the whole-signal timing input (0 skips it; default 60)")
    parser.add_argument("--per-layer", action="store_true", help="list MACs per layer (imports TensorFlow)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model_dir, "metadata.json")):
        print(f"mobile_timing: {args.model_dir}: no metadata.json (not a bwe-export folder)", file=sys.stderr)
        return 2
    if args.frames < 1 or args.threads < 1 or args.warmup < 0:
        print("mobile_timing: --frames and --threads must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        report = run(args.model_dir, args.threads, args.frames, args.warmup, args.offline_seconds, args.per_layer)
    except ModelError as e:
        print(f"mobile_timing: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
