"""How a learned quality predictor rates every system, the wideband reference included: DNSMOS.

    python -m eval.research learned-quality --model bwe/pretrained/offline --data CORPUS/valid [--limit 200] [--json OUT]
    python -m eval.research learned-quality --model bwe/pretrained --pairs PAIRS/nb PAIRS/wb [--limit 200]

For the wideband reference, ``sinc`` and ``folding`` (always) and each ``--model`` (as ``eval.evaluate``
takes it), over the test files (``--data``: through the fixed evaluation channel; ``--pairs``: real or
codec pairs): the mean DNSMOS P.808 MOS, the 95 % confidence interval of its difference from sinc's
(paired over files), the mean P.835 overall MOS (``bwe.metrics.dnsmos``), and each system's *share* of
the P.808 gap from sinc to the reference (0 %: rated as plain upsampling, 100 %: as the real wideband
recording).

DNSMOS scores each signal alone, so it needs no alignment, and it was trained on listeners' ratings,
not on either of the intrusive metrics (LSD, WB-PESQ) the models are tuned and judged by: a second,
independent opinion of whether the restored band is heard.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from bwe.data.audio import AudioError
from bwe.metrics import dnsmos, import_dnsmos
from eval.evaluate import EvaluationError, load_systems, run_system
from eval.research.inputs import add_test_set_arguments, chosen_examples
from eval.stats import mean_ci95, nan_to_none

PROG = "python -m eval.research learned-quality"
REFERENCE = "reference"


def learned_quality(systems: dict, examples) -> dict[str, dict[str, float]]:
    """Per system (the reference first): files, P.808 mean and the 95 % CI of its difference from sinc's,
    P.835 overall mean, share of the sinc-to-reference gap."""
    scores: dict[str, list[dict[str, float]]] = {REFERENCE: [], **{label: [] for label in systems}}
    for name, wideband, narrowband, _ in examples:
        scores[REFERENCE].append(dnsmos(wideband))
        for label, system in systems.items():
            scores[label].append(dnsmos(run_system(name, label, system, narrowband)))
    if not scores[REFERENCE]:
        raise EvaluationError("no file to score")
    sinc = np.array([r["p808"] for r in scores["sinc"]])
    results = {}
    for label, rows in scores.items():
        p808 = np.array([r["p808"] for r in rows])
        _, lo, hi = mean_ci95(p808 - sinc)  # paired: each file against its own sinc rendering
        results[label] = {"files": len(rows), "p808": float(p808.mean()), "p808_vs_sinc_ci95": [lo, hi],
                          "ovrl": float(np.mean([r["ovrl"] for r in rows]))}
    gap = results[REFERENCE]["p808"] - results["sinc"]["p808"]
    for r in results.values():
        r["share_of_gap"] = (r["p808"] - results["sinc"]["p808"]) / gap if gap > 0 else float("nan")
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| system | files | DNSMOS P.808 | minus sinc's, 95 % CI (paired) | P.835 overall | "
             "share of the sinc-to-reference gap |", "|---|---:|---:|---|---:|---:|"]
    for label, r in results.items():
        lo, hi = r["p808_vs_sinc_ci95"]
        interval = "—" if label == "sinc" else f"[{lo:+.3f}, {hi:+.3f}]"
        share = "—" if np.isnan(r["share_of_gap"]) else f"{100 * r['share_of_gap']:.0f} %"
        lines.append(f"| {label} | {r['files']} | {r['p808']:.3f} | {interval} | {r['ovrl']:.3f} | {share} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                        help="an exported model folder (DIR:int8 for its int8 model); repeat for several")
    add_test_set_arguments(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    try:
        import_dnsmos()  # fail now, not after the first file, when it is not installed
    except ImportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        examples, described = chosen_examples(args.data, args.pairs, args.limit, args.max_offset_ms)
        results = learned_quality(load_systems(args.model), examples)
    except (EvaluationError, AudioError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"{described}\n\n{table(results)}")
    if args.json:
        from bwe.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(nan_to_none(results), indent=1) + "\n")
    return 0
