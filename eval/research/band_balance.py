"""Is the restored band as loud as the real one, and is there a hole? Long-term spectra and envelope errors.

    python -m eval.research band-balance --model bwe/pretrained/offline --data CORPUS/valid [--limit 200] [--json OUT]
    python -m eval.research band-balance --model bwe/pretrained --pairs PAIRS/nb PAIRS/wb [--limit 200]

For every system (``sinc`` and ``folding`` always, then each ``--model`` as ``eval.evaluate`` takes
it) and the test files (``--data``: through the fixed evaluation channel; ``--pairs``: real or
codec pairs, aligned as ``eval.evaluate`` aligns them), it reports (definitions in ``bwe.metrics``):

* ``HF level``: the long-term level of 4.5-7 kHz against the reference's, in dB, after both
  spectra are normalised to their 0.5-3 kHz level (0 = as loud as the real band, -15 = a band a
  listener hardly notices);
* ``worst gap``: the largest deviation of the long-term spectrum from the reference's in 100 Hz
  bands over 300-7500 Hz (dB, signed) and where: a hole at the band edge or below 300 Hz shows here
  (both ``bwe.metrics.spectral_balance``);
* ``envelope error`` / ``bias``: the frame-level band-level error of 4-8 kHz in 500 Hz bands
  (``bwe.metrics.band_level_errors_db``: medians over frames, means over files).

Long-term spectra are Welch power spectra (``bwe.metrics.long_term_power``: 512-sample periodic
Hann, hop 256) summed over all files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from bwe.data.audio import AudioError
from bwe.metrics import LONG_TERM_FREQS, LONG_TERM_N_FFT, band_level_errors_db, long_term_power, spectral_balance
from eval.evaluate import EvaluationError, aligned_to_reference, load_systems, run_system
from eval.research.inputs import add_test_set_arguments, chosen_examples

PROG = "python -m eval.research band-balance"


def band_balance(systems: dict, examples) -> dict[str, dict[str, float]]:
    """Per system: HF level, worst gap (and where), envelope error and bias over ``examples``."""
    reference_power = np.zeros_like(LONG_TERM_FREQS)
    powers = {label: np.zeros_like(LONG_TERM_FREQS) for label in systems}
    envelope = {label: [] for label in systems}
    files = 0
    for name, wideband, narrowband, offset in examples:
        outputs = {label: run_system(name, label, system, narrowband) for label, system in systems.items()}
        reference, aligned = aligned_to_reference(wideband, outputs, offset)
        if len(reference) < 4 * LONG_TERM_N_FFT:
            continue
        files += 1
        reference_power += long_term_power(reference)
        for label, output in aligned.items():
            powers[label] += long_term_power(output)
            envelope[label].append(band_level_errors_db(reference, output))
    if not files:
        raise EvaluationError("no file long enough to score")
    results = {}
    for label in systems:
        errors = np.array(envelope[label])
        results[label] = {"files": files, **spectral_balance(powers[label], reference_power),
                          "envelope_error_db": float(errors[:, 0].mean()), "envelope_bias_db": float(errors[:, 1].mean())}
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| system | files | HF level (dB) | worst gap 0.3-7.5 kHz (dB @ Hz) | envelope error (dB) | bias (dB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, r in results.items():
        lines.append(f"| {label} | {r['files']} | {r['hf_level_db']:+.1f} | {r['worst_gap_db']:+.1f} @ "
                     f"{r['worst_gap_hz']:.0f} | {r['envelope_error_db']:.2f} | {r['envelope_bias_db']:+.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                        help="an exported model folder (DIR:int8 for its int8 model); repeat for several")
    add_test_set_arguments(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    try:
        examples, described = chosen_examples(args.data, args.pairs, args.limit, args.max_offset_ms)
        results = band_balance(load_systems(args.model), examples)
    except (EvaluationError, AudioError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"{described}\n\n{table(results)}")
    if args.json:
        from bwe.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")
    return 0
