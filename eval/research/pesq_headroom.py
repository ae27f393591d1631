"""Where a bandwidth extender loses WB-PESQ: its high band, corrected in steps towards the reference.

    python -m eval.research pesq-headroom --model bwe/pretrained --data CORPUS/valid [--limit 40] [--visqol] [--dnsmos] [--json]
    python -m eval.research pesq-headroom --model bwe/pretrained --pairs PAIRS/nb PAIRS/wb [--limit 40]

Each wideband reference is degraded by the fixed evaluation channel (or, with ``--pairs``, its real
narrowband recording is used, paired by file name and aligned as ``eval.evaluate`` aligns them), run
through the system, and the system's 4-8 kHz band is then rescored as it is and after each of these
changes (its 0-4 kHz band is never touched):

* ``sinc baseline``: the input resampled with soxr, for reference;
* ``gain G``: the whole high band scaled by G (1 = as is, 0 = the system's own low band alone);
  ``gain G1/G2/...``: 4-8 kHz split into as many equal bands, each scaled by its own gain (``1/1/1/3``:
  7-8 kHz three times as loud, the rest as is), to ask whether a tilt of the band trades better than
  a level;
* ``oracle frame level``: each STFT frame's high band rescaled to the reference's high-band energy
  in that frame (right loudness over time, the system's own spectral shape inside 4-8 kHz);
* ``oracle band levels``: each frame's high band rescaled in ``--band-hz`` wide bands to the
  reference's energy in each (right envelope in time and frequency, the system's fine structure);
* ``oracle band levels F %``: the same correction carried only F % of the way (in dB), i.e. the
  system's band-level errors shrunk to 100 - F % of their size: how accurate the envelope would
  have to be for the metric to prefer the extension to no extension (``--fractions``);
* ``reference high band``: the reference's own 4-8 kHz band (the ceiling).

It answers questions a plain evaluation cannot: does this metric reward adding a high band at
all (the gain sweep), is the loss in the envelope or in the fine structure (the oracles), and how
much smaller would the envelope errors have to be (the partial oracles)? The report also gives
the system's own band-level error and bias: per frame the RMS (and the mean) over ``--band-hz``
bands of its level minus the reference's, in dB (``bwe.metrics.band_level_errors_db``); their medians
over frames, averaged over files.
The oracles use the reference, so they are diagnostics, never results. ``--visqol`` scores every
variant with ViSQOL too (``bwe.metrics.visqol_speech``), a second perceptual model, so a
conclusion does not rest on PESQ's alone; ``--dnsmos`` with DNSMOS P.808 (``bwe.metrics.dnsmos``), a
learned predictor of listeners' ratings that hears each variant alone, without the reference.
STFT: ``bwe.metrics.band_stft`` (512-sample periodic Hann, hop 128, at 16 kHz) and its inverse;
WB-PESQ, ViSQOL and LSD-HF from ``bwe.metrics``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from bwe.baselines import sinc
from bwe.config import OUTPUT_RATE as RATE
from bwe.data.audio import AudioError
from bwe.metrics import (
    BAND_ENERGY_FLOOR, BAND_FREQS, ENVELOPE_BAND_HZ, HF_BAND, LSD_N_FFT, band_level_errors_db, band_stft,
    high_band_rows, import_dnsmos, import_visqol, lsd_all,
)
from eval.evaluate import EvaluationError, aligned_to_reference, load_system
from eval.research.high_band import HIGH_BINS, band_istft, low_band
from eval.research.inputs import Example, add_test_set_arguments, chosen_examples, numbers
from eval.research.scoring import LABELS, perceptual_scorers, score_all_or_none

PROG = "python -m eval.research pesq-headroom"
SPLIT_HZ = HF_BAND[0]
DEFAULT_GAINS = (1.0, 0.7, 0.5, 0.3, 0.0)
DEFAULT_FRACTIONS = (0.25, 0.5, 0.75)


def _band_gains(reference: np.ndarray, estimate: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per-frame amplitude gains [frames] that give ``estimate``'s ``rows`` the energy of ``reference``'s."""
    ref = np.sum(np.abs(reference[rows]) ** 2, axis=0)
    est = np.sum(np.abs(estimate[rows]) ** 2, axis=0)
    return np.sqrt((ref + BAND_ENERGY_FLOOR) / (est + BAND_ENERGY_FLOOR))


# A high-band gain: one factor for all of 4-8 kHz, or a factor for each of equal bands tiling it.
Gain = float | tuple[float, ...]


def gain_name(gain: Gain) -> str:
    """The variant name of a gain: ``gain 0.5``, ``gain 1/1/1/3``."""
    return "gain " + "/".join(f"{g:g}" for g in (gain if isinstance(gain, tuple) else (gain,)))


def gain_per_bin(gain: Gain, freqs: np.ndarray) -> np.ndarray:
    """The amplitude factor of each of ``freqs`` in 4-8 kHz (0 below 4 kHz) for a :data:`Gain`: a tuple's
    factors apply to equal bands tiling 4-8 kHz, low to high."""
    factors = np.atleast_1d(np.asarray(gain, float))
    width = (RATE / 2 - SPLIT_HZ) / len(factors)
    band = np.clip((freqs - SPLIT_HZ) // width, 0, len(factors) - 1).astype(int)  # Nyquist: the last band
    return np.where(freqs >= SPLIT_HZ, factors[band], 0.0)


def variants(reference: np.ndarray, output: np.ndarray, gains: Sequence[Gain], band_hz: float,
             sinc_output: np.ndarray | None = None, fractions: Sequence[float] = ()) -> dict[str, np.ndarray]:
    """The system output with its high band changed in each way the module docstring lists (first the
    ``sinc_output`` as it is, if given)."""
    n = len(reference)
    ref_spec, out_spec = band_stft(reference), band_stft(output)
    low = low_band(out_spec, n)
    out_high = out_spec * HIGH_BINS[:, None]
    result = {"sinc baseline": sinc_output[:n]} if sinc_output is not None else {}
    result.update({gain_name(g): low + band_istft(out_spec * gain_per_bin(g, BAND_FREQS)[:, None], n) for g in gains})
    result["oracle frame level"] = low + band_istft(out_high * _band_gains(ref_spec, out_spec, HIGH_BINS)[None], n)
    band_gains = np.ones(out_spec.shape)
    for rows in high_band_rows(band_hz):
        band_gains[rows] = _band_gains(ref_spec, out_spec, rows)[None]
    # A gain g applied as g**f moves each band's level the fraction f of the way (in dB) to the reference's.
    result.update({f"oracle band levels {f:.0%}": low + band_istft(out_high * band_gains ** f, n) for f in fractions})
    result["oracle band levels"] = low + band_istft(out_high * band_gains, n)
    result["reference high band"] = low + band_istft(ref_spec * HIGH_BINS[:, None], n)
    return result


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def headroom(
    examples: Iterable[Example], system: Callable[[np.ndarray], np.ndarray], gains: Sequence[Gain] = DEFAULT_GAINS,
    band_hz: float = ENVELOPE_BAND_HZ, fractions: Sequence[float] = DEFAULT_FRACTIONS, visqol: bool = False,
    p808: bool = False,
) -> tuple[dict[str, dict[str, float]], tuple[float, float], list[str]]:
    """Per variant: mean WB-PESQ (and ViSQOL, DNSMOS P.808) over the examples each can score, and mean
    LSD-HF over all; the system's band-level error and bias in dB (:func:`band_level_errors_db`), means
    over examples; and the names of the examples too short to score after alignment (left out).

    An example one variant cannot score by a metric is left out of that metric's means for every
    variant, so the variants are compared on the same examples; the counts say how many were left out.
    """
    scorers = perceptual_scorers(visqol, p808)
    scores: dict[str, dict[str, list[float]]] = {metric: {} for metric in scorers}
    unscorable = dict.fromkeys(scorers, 0)
    lsd_hf: dict[str, list[float]] = {}
    band_errors = []
    too_short = []
    for name, wideband, narrowband, offset in examples:
        reference, aligned = aligned_to_reference(
            wideband, {"output": np.asarray(system(narrowband), np.float32), "sinc": sinc(narrowband)}, offset)
        if len(reference) <= LSD_N_FFT // 2:
            too_short.append(name)
            continue
        output, upsampled = aligned["output"], aligned["sinc"]
        band_errors.append(band_level_errors_db(reference, output, band_hz))
        signals = variants(reference, output, gains, band_hz, upsampled, fractions)
        for variant, signal in signals.items():
            lsd_hf.setdefault(variant, []).append(lsd_all(reference, signal)["lsd_hf"])
        for metric in score_all_or_none(reference, signals, scorers, scores):
            unscorable[metric] += 1
    if not band_errors:
        raise EvaluationError(f"all {len(too_short)} example(s) are too short to score (LSD needs more than "
                              f"{LSD_N_FFT // 2} samples at 16 kHz)")
    table = {name: {"lsd_hf": float(np.mean(values)), "files": len(values),
                    **{metric: _mean(scores[metric].get(name, [])) for metric in scorers},
                    **{f"{metric}_unscorable": unscorable[metric] for metric in scorers}}
             for name, values in lsd_hf.items()}
    error, bias = np.mean(band_errors, axis=0)
    return table, (float(error), float(bias)), too_short


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        epilog=f"example: {PROG} --model bwe/pretrained --data CORPUS/valid --limit 40")
    parser.add_argument("--model", required=True, help="folding, an exported model directory, or DIR:int8")
    add_test_set_arguments(parser)
    parser.add_argument("--gains", default=",".join(f"{g:g}" for g in DEFAULT_GAINS),
                        help="comma-separated high-band gains; G1/G2/... scales equal bands of 4-8 kHz, low to "
                             "high, each by its own (default %(default)s)")
    parser.add_argument("--band-hz", type=float, default=500.0, help="band width of the band-level oracle (default 500)")
    parser.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                        help="comma-separated fractions (0-1) of the band-level correction for the partial "
                             "oracles; empty for none (default %(default)s)")
    parser.add_argument("--visqol", action="store_true", help="also score every variant with ViSQOL (speech mode)")
    parser.add_argument("--dnsmos", action="store_true", help="also score every variant with DNSMOS P.808")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def gains_of(text: str) -> list[Gain]:
    """The gains of ``--gains``: comma-separated numbers, or slash-separated numbers for one per band;
    an EvaluationError naming the flag for anything else or a negative gain."""
    gains: list[Gain] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            factors = tuple(float(x) for x in item.split("/"))
        except ValueError:
            raise EvaluationError(f"--gains {text!r}: expected numbers separated by commas, or by slashes for "
                                  "one gain per band") from None
        if not all(np.isfinite(factors)) or min(factors) < 0:
            raise EvaluationError(f"--gains {text!r}: every gain must be a finite number, 0 or more")
        gains.append(factors if len(factors) > 1 else factors[0])
    return gains


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gains = gains_of(args.gains)
        fractions = numbers("--fractions", args.fractions)
        if args.limit < 1 or args.band_hz <= 0:
            raise EvaluationError("--limit must be >= 1 and --band-hz > 0")
        if any(not 0 < f < 1 for f in fractions):
            raise EvaluationError(f"--fractions {args.fractions!r}: every fraction must be between 0 and 1 "
                                  "(1 is the full oracle, always reported)")
        examples, source = chosen_examples(args.data, args.pairs, args.limit, args.max_offset_ms)
        system = load_system(args.model)
        if args.visqol:
            import_visqol()
        if args.dnsmos:
            import_dnsmos()
        table, (band_error, band_bias), too_short = headroom(
            examples, system, gains, args.band_hz, fractions, args.visqol, args.dnsmos)
    except (EvaluationError, AudioError, ImportError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"band_level_error_db": band_error, "band_level_bias_db": band_bias, "variants": table,
                          "too_short": too_short}, indent=2))
        return 0
    first = next(iter(table.values()))
    metrics = list(perceptual_scorers(args.visqol, args.dnsmos))
    left_out = ", ".join(f"{first[m + '_unscorable']} not scorable by {LABELS[m]}" for m in metrics)
    print(f"{args.model} on {first['files']} file(s) of {source} ({left_out}, left out of its means)")
    if too_short:
        print(f"left out, too short to score: {', '.join(too_short)}")
    print(f"its high-band envelope error: {band_error:.1f} dB, bias {band_bias:+.1f} dB (medians over frames of "
          f"the RMS and of the mean over {args.band_hz:g} Hz bands of its level minus the reference's; "
          "mean over files)")
    print(f"{'high band':26s} " + " ".join(f"{LABELS[m]:>8s}" for m in metrics) + f" {'LSD-HF':>7s}")
    for name, row in table.items():
        print(f"{name:26s} " + " ".join(f"{row[m]:8.3f}" for m in metrics) + f" {row['lsd_hf']:7.3f}")
    return 0
