"""Is the restored band as loud as the real one, and is there a hole? Long-term spectra and envelope errors.

    python eval/band_balance.py --model bwe/pretrained/offline --data CORPUS/valid [--limit 200] [--json OUT]
    python eval/band_balance.py --model bwe/pretrained --pairs PAIRS/nb PAIRS/wb [--limit 200]

For every system (``sinc`` and ``folding`` always, then each ``--model`` as ``evaluate.py`` takes
it) and the test files (``--data``: through the fixed evaluation channel; ``--pairs``: real or
codec pairs, aligned as ``evaluate.py`` aligns them), it reports:

* ``HF level``: the long-term level of 4.5-7 kHz against the reference's, in dB, after both
  spectra are normalised to their 0.5-3 kHz level (0 = as loud as the real band, -15 = a band a
  listener hardly notices);
* ``worst gap``: the largest deviation of the long-term spectrum from the reference's in 100 Hz
  bands over 300-7500 Hz (dB, signed) and where: a hole at the band edge or below 300 Hz shows here;
* ``envelope error`` / ``bias``: the frame-level band-level error of 4-8 kHz in 500 Hz bands
  (``pesq_headroom.band_level_errors_db``: medians over frames, means over files).

Long-term spectra are Welch power spectra (512-sample periodic Hann, hop 256) summed over all files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np
import scipy.signal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bwe.config import OUTPUT_RATE as RATE
from bwe.data.audio import AudioError  # noqa: E402
from evaluate import EvaluationError, load_systems, run_system  # noqa: E402
from pesq_headroom import add_test_set_arguments, aligned_to_reference, band_level_errors_db, chosen_examples  # noqa: E402

WELCH_SIZE = 512
NORMALISE_HZ = (500.0, 3000.0)
HIGH_HZ = (4500.0, 7000.0)
GAP_RANGE_HZ = (300.0, 7500.0)
GAP_BAND_HZ = 100.0
FREQS = np.fft.rfftfreq(WELCH_SIZE, 1.0 / RATE)


def long_term_power(x: np.ndarray) -> np.ndarray:
    """Welch power spectrum summed over frames (not averaged), so that files add by their length."""
    _, power = scipy.signal.welch(x, RATE, window="hann", nperseg=WELCH_SIZE, noverlap=WELCH_SIZE // 2,
                                  scaling="spectrum", average="mean")
    frames = max(1, 1 + (len(x) - WELCH_SIZE) // (WELCH_SIZE // 2))
    return power * frames


def band_power(power: np.ndarray, lo: float, hi: float) -> float:
    return float(power[(FREQS >= lo) & (FREQS < hi)].sum())


def balance(output_power: np.ndarray, reference_power: np.ndarray) -> dict[str, float]:
    """HF level and the worst 100 Hz-band deviation (see the module docstring) of two long-term spectra."""
    def ratio_db(lo, hi):
        return 10 * np.log10(band_power(output_power, lo, hi) / max(band_power(reference_power, lo, hi), 1e-30))

    offset = ratio_db(*NORMALISE_HZ)
    edges = np.arange(GAP_RANGE_HZ[0], GAP_RANGE_HZ[1], GAP_BAND_HZ)
    deviations = np.array([ratio_db(lo, lo + GAP_BAND_HZ) - offset for lo in edges])
    worst = int(np.argmax(np.abs(deviations)))
    return {"hf_level_db": ratio_db(*HIGH_HZ) - offset, "worst_gap_db": float(deviations[worst]),
            "worst_gap_hz": float(edges[worst] + GAP_BAND_HZ / 2)}


def band_balance(systems: dict, examples) -> dict[str, dict[str, float]]:
    """Per system: HF level, worst gap (and where), envelope error and bias over ``examples``."""
    reference_power = np.zeros_like(FREQS)
    powers = {label: np.zeros_like(FREQS) for label in systems}
    envelope = {label: [] for label in systems}
    files = 0
    for name, wideband, narrowband, offset in examples:
        outputs = {label: run_system(name, label, system, narrowband) for label, system in systems.items()}
        reference, aligned = aligned_to_reference(wideband, outputs, offset)
        if len(reference) < 4 * WELCH_SIZE:
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
        results[label] = {"files": files, **balance(powers[label], reference_power),
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
    parser = argparse.ArgumentParser(prog="band_balance.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                        help="an exported model folder (DIR:int8 for its int8 model); repeat for several")
    add_test_set_arguments(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    try:
        examples, described = chosen_examples(args.data, args.pairs, args.limit, args.max_offset_ms)
        results = band_balance(load_systems(args.model), examples)
    except (EvaluationError, AudioError) as e:
        print(f"band_balance.py: error: {e}", file=sys.stderr)
        return 2
    print(f"{described}\n\n{table(results)}")
    if args.json:
        from bwe.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
