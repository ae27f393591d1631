"""What a G.722-coded reference does to a comparison: every system scored against its references as
given and against the same references after a G.722 round trip.

    python -m eval.research reference-codec --model bwe=bwe/pretrained --data CORPUS/valid/tuxpaint [--limit 40] [--json]
    python -m eval.research reference-codec --model bwe=bwe/pretrained --pairs PAIRS/nb PAIRS/wb --limit 129

Why it exists: the 16 kHz references of the real narrowband pairs (``asterisk-pairs``) and of
the corpus' ``asterisk-g722`` source are G.722 decodes. G.722 at 64 kbit/s codes 4-8 kHz with 2-bit
ADPCM (16 kbit/s), whose quantisation noise fills that band: the reference's high band is the
speaker's plus the codec's. This tool measures the effect on files whose references are clean
(``--data``: each wideband file R is degraded by the fixed evaluation channel) and shows where
real pairs stand (``--pairs``: the real narrowband recordings, aligned to their references as
``eval.evaluate`` aligns them; their references are coded already, so a second round trip barely
moves them). The baselines (sinc, folding) and every ``--model`` extend each input; each output is
scored (``eval.evaluate.score_pair``: LSD, LSD-LF, LSD-HF, WB-PESQ) against R and against G.722(R), the
ITU-T G.722 codec at 64 kbit/s (mode 1) from the ``G722`` package (a bit-exact implementation that
passes the ITU test vectors), its ``CODEC_DELAY`` removed.

Two more figures say why a ranking moves. LSD-HF's two parts (``bwe.metrics.lsd_level_shape``):
"HF lvl", how much quieter the output's 4-8 kHz band is than the reference's (mean log10 power
difference, means over frames and files), and "HF shp", the spread of that difference across the
band's bins. The header gives the codec's own effect on the band: the band-level bias of G.722(R)
against R (``bwe.metrics.band_level_errors_db``: per frame the mean over 500 Hz bands of 4-8 kHz of
its level minus R's, median over frames, mean over files), in dB; the table gives each system's
band-level bias against each reference the same way ("bias dB").

Outputs and inputs are identical in both columns; only the reference changes. A ranking that flips
between the columns is the codec's, not the systems'. ``--code-outputs`` adds a third column, each
output's own G.722 round trip against G.722(R): the comparison with the codec on both sides.
"""

from __future__ import annotations

import argparse
import array
import json
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from bwe.config import OUTPUT_RATE as RATE
from bwe.data.audio import AudioError, as_signal
from bwe.metrics import LSD_N_FFT, band_level_errors_db, lsd_level_shape
from eval.evaluate import METRIC_LABELS, EvaluationError, aligned_to_reference, load_systems, run_system, score_pair
from eval.research.inputs import Example, add_test_set_arguments, chosen_examples

PROG = "python -m eval.research reference-codec"
BIT_RATE = 64000  # G.722 mode 1: 48 kbit/s for 0-4 kHz, 16 kbit/s (2 bits a sample) for 4-8 kHz
# The decoded signal lags the input by the two QMF banks' delay; tests/test_reference_codec.py
# measures it on speech by cross-correlation.
CODEC_DELAY = 22
REFERENCES = ("given", "g722")
BOTH_CODED = "g722_both"  # the output's round trip against the reference's (--code-outputs)
METRICS = ("lsd", "lsd_lf", "lsd_hf", "hf_level", "hf_shape", "pesq_wb", "band_bias_db")
LABELS = {"hf_level": "HF lvl", "hf_shape": "HF shp", "band_bias_db": "bias dB"}


def import_g722():
    """The ``G722`` module (an "eval" extra), or an ImportError that says how to get it."""
    try:
        import G722
    except ImportError as e:
        raise ImportError("the G.722 round trip needs the G722 package: pip install 'bwe[eval]'") from e
    return G722


def g722_round_trip(x16k: np.ndarray) -> np.ndarray:
    """float [n] at 16 kHz -> float32 [n]: coded and decoded by G.722 at 64 kbit/s, delay removed.

    The codec takes 16-bit PCM, so the signal is quantised to it (samples beyond full scale are
    clipped, as a 16-bit file would hold them). The input is not modified. Raises ValueError for
    a non-1-D, empty or non-finite signal.
    """
    codec = import_g722()
    x = as_signal(x16k, "signal")
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    # Pad by the delay so that the last input sample comes out, and to an even length: the codec
    # takes samples in pairs and drops an odd last one. Fresh codec states for each call.
    padding = CODEC_DELAY + (x.shape[0] + CODEC_DELAY) % 2
    padded = np.concatenate([pcm, np.zeros(padding, np.int16)])
    coded = codec.G722(RATE, BIT_RATE).encode(array.array("h", padded.tobytes()))
    decoded = np.frombuffer(codec.G722(RATE, BIT_RATE, use_numpy=False).decode(coded), dtype=np.int16)
    return (decoded[CODEC_DELAY: CODEC_DELAY + x.shape[0]].astype(np.float32) / 32768.0)


def scores_of(reference: np.ndarray, output: np.ndarray) -> dict[str, float | None]:
    """Every one of ``METRICS`` for one output against one reference."""
    parts = lsd_level_shape(reference, output)
    return {**score_pair(reference, output), "hf_level": parts["level"], "hf_shape": parts["shape"],
            "band_bias_db": band_level_errors_db(reference, output)[1]}


def compare(examples: Iterable[Example], systems: dict,
            code_outputs: bool = False) -> tuple[dict[str, dict[str, dict[str, float]]], float, list[str]]:
    """Per system and comparison ("given", "g722", and with ``code_outputs`` "g722_both"): the mean of
    each of ``METRICS`` over the examples (WB-PESQ over those it can score in every comparison, their
    count as ``pesq_files``); the codec's band-level bias in dB (mean over examples); and the
    examples too short to score."""
    comparisons = REFERENCES + ((BOTH_CODED,) if code_outputs else ())
    scores = {label: {ref: {m: [] for m in METRICS} for ref in comparisons} for label in systems}
    biases, too_short = [], []
    for name, wideband, narrowband, offset in examples:
        outputs = {label: run_system(name, label, system, narrowband) for label, system in systems.items()}
        reference, aligned = aligned_to_reference(wideband, outputs, offset)
        if reference.shape[0] <= LSD_N_FFT // 2:
            too_short.append(name)
            continue
        references = {"given": reference, "g722": g722_round_trip(reference)}
        biases.append(band_level_errors_db(reference, references["g722"])[1])
        for label, output in aligned.items():
            rows = {ref: scores_of(signal, output) for ref, signal in references.items()}
            if code_outputs:
                rows[BOTH_CODED] = scores_of(references["g722"], g722_round_trip(output))
            scorable = all(row["pesq_wb"] is not None for row in rows.values())
            for ref, row in rows.items():
                for metric in METRICS:
                    if metric != "pesq_wb" or scorable:
                        scores[label][ref][metric].append(row[metric])
    if not biases:
        raise EvaluationError(f"all {len(too_short)} example(s) are too short to score (LSD needs more than "
                              f"{LSD_N_FFT // 2} samples at 16 kHz)")
    table = {label: {ref: {**{m: float(np.mean(v)) if v else float("nan") for m, v in per_ref.items()},
                           "files": len(per_ref["lsd"]), "pesq_files": len(per_ref["pesq_wb"])}
                     for ref, per_ref in per_system.items()}
             for label, per_system in scores.items()}
    return table, float(np.mean(biases)), too_short


def _cell(row: dict[str, float], metric: str) -> str:
    return f"{row[metric]:+7.1f}" if metric == "band_bias_db" else f"{row[metric]:7.3f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        epilog=f"example: {PROG} --model bwe=bwe/pretrained --data CORPUS/valid/tuxpaint")
    parser.add_argument("--model", action="append", default=[],
                        help="an exported model directory, DIR:int8, or NAME=DIR (repeatable); sinc and folding "
                             "are always scored")
    add_test_set_arguments(parser)
    parser.add_argument("--code-outputs", action="store_true",
                        help="also score each output's G.722 round trip against the reference's")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.limit < 1:
            raise EvaluationError(f"--limit must be >= 1, got {args.limit}")
        examples, source = chosen_examples(args.data, args.pairs, args.limit, args.max_offset_ms)
        import_g722()
        systems = load_systems(args.model)
        table, bias, too_short = compare(examples, systems, args.code_outputs)
    except (EvaluationError, AudioError, ImportError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"codec_band_bias_db": bias, "systems": table, "too_short": too_short}, indent=2))
        return 0
    first = next(iter(table.values()))["given"]
    print(f"{first['files']} example(s) of {source}; WB-PESQ over the {first['pesq_files']} it can score in "
          "every comparison; HF lvl / HF shp: LSD-HF's level part (> 0: the output is quieter) and shape part")
    if too_short:
        print(f"left out, too short to score: {', '.join(too_short)}")
    print(f"the G.722 round trip makes the reference's 4-8 kHz band {bias:+.1f} dB louder (median over frames "
          "of the mean over 500 Hz bands; mean over files)")
    names = [LABELS.get(m) or METRIC_LABELS[m] for m in METRICS]
    print(f"{'system':24s} | reference as given: " + " ".join(f"{n:>7s}" for n in names)
          + " | its G.722 round trip: " + " ".join(f"{n:>7s}" for n in names))
    for label, row in table.items():
        print(f"{label:24s} | {'':20s}" + " ".join(_cell(row['given'], m) for m in METRICS)
              + f" | {'':22s}" + " ".join(_cell(row['g722'], m) for m in METRICS))
    if args.code_outputs:
        print(f"{'system':24s} | both through G.722:  " + " ".join(f"{n:>7s}" for n in names))
        for label, row in table.items():
            print(f"{label:24s} | {'':20s}" + " ".join(_cell(row[BOTH_CODED], m) for m in METRICS))
    return 0
