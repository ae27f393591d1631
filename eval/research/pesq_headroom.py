"""Where a bandwidth extender loses WB-PESQ: its high band, corrected in steps towards the reference.

    python eval/pesq_headroom.py --model bwe/pretrained --data CORPUS/valid [--limit 40] [--visqol] [--json]
    python eval/pesq_headroom.py --model bwe/pretrained --pairs PAIRS/nb PAIRS/wb [--limit 40]

Each wideband reference is degraded by the fixed evaluation channel (or, with ``--pairs``, its real
narrowband recording is used, paired by file name and aligned as ``evaluate.py`` aligns them), run
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
bands of its level minus the reference's, in dB; their medians over frames, averaged over files.
The oracles use the reference, so they are diagnostics, never results. ``--visqol`` scores every
variant with ViSQOL too (``bwe.metrics.visqol_speech``), a second perceptual model, so a
conclusion does not rest on PESQ's alone. STFT: 512-sample periodic Hann, hop 128, at 16 kHz (scipy.signal.stft/istft);
WB-PESQ, ViSQOL and LSD-HF from ``bwe.metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import scipy.signal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bwe.config import OUTPUT_RATE as RATE
from bwe.baselines import sinc  # noqa: E402
from bwe.data.audio import AudioError, list_audio_files, load_audio, spread_indices  # noqa: E402
from bwe.data.degrade import evaluation_degradation  # noqa: E402
from bwe.metrics import LSD_N_FFT, estimate_delay, import_visqol, lsd_all, pesq_wb, visqol_speech  # noqa: E402
from evaluate import (  # noqa: E402
    DEFAULT_MAX_OFFSET_MS, METRIC_LABELS, EvaluationError, load_system, paired_stems, shift,
)

N_FFT = 512
HOP = 128
SPLIT_HZ = 4000.0
DEFAULT_GAINS = (1.0, 0.7, 0.5, 0.3, 0.0)
DEFAULT_FRACTIONS = (0.25, 0.5, 0.75)
ENERGY_FLOOR = 1e-12


def _stft(x: np.ndarray) -> np.ndarray:
    return scipy.signal.stft(x, RATE, nperseg=N_FFT, noverlap=N_FFT - HOP)[2]


def _istft(spectrum: np.ndarray, n: int) -> np.ndarray:
    y = scipy.signal.istft(spectrum, RATE, nperseg=N_FFT, noverlap=N_FFT - HOP)[1][:n]
    return np.pad(y, (0, n - len(y))).astype(np.float32)


def _band_gains(reference: np.ndarray, estimate: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per-frame amplitude gains [frames] that give ``estimate``'s ``rows`` the energy of ``reference``'s."""
    ref = np.sum(np.abs(reference[rows]) ** 2, axis=0)
    est = np.sum(np.abs(estimate[rows]) ** 2, axis=0)
    return np.sqrt((ref + ENERGY_FLOOR) / (est + ENERGY_FLOOR))


def _band_rows(freqs: np.ndarray, band_hz: float) -> list[np.ndarray]:
    """Masks over ``freqs`` of the ``band_hz`` wide bands tiling 4-8 kHz (the last one keeps Nyquist)."""
    return [(freqs >= lo) & (freqs < lo + band_hz) | ((freqs == RATE / 2) & (lo + band_hz >= RATE / 2))
            for lo in np.arange(SPLIT_HZ, RATE / 2, band_hz)]


def band_levels_db(spectrum: np.ndarray, rows: Sequence[np.ndarray]) -> np.ndarray:
    """[frames, bands]: the energy of each band (a mask of ``rows``) of an STFT ``spectrum`` [bins, frames], in dB."""
    return np.stack([10 * np.log10(np.sum(np.abs(spectrum[r]) ** 2, axis=0) + ENERGY_FLOOR) for r in rows], axis=1)


def error_and_bias_db(differences: np.ndarray) -> tuple[float, float]:
    """``(error, bias)`` of level differences [frames, bands] in dB: the medians over frames of the RMS
    over bands (the size of the error) and of the mean over bands (its sign: a band too loud or too
    quiet overall)."""
    return (float(np.median(np.sqrt(np.mean(np.square(differences), axis=1)))),
            float(np.median(np.mean(differences, axis=1))))


def band_level_errors_db(reference: np.ndarray, output: np.ndarray, band_hz: float = 500.0) -> tuple[float, float]:
    """How far ``output``'s high-band envelope is from ``reference``'s, per STFT frame and ``band_hz``
    band of 4-8 kHz: :func:`error_and_bias_db` of output minus reference level."""
    rows = _band_rows(np.fft.rfftfreq(N_FFT, 1.0 / RATE), band_hz)
    return error_and_bias_db(band_levels_db(_stft(output[: len(reference)]), rows)
                             - band_levels_db(_stft(reference), rows))


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
    ref_spec, out_spec = _stft(reference), _stft(output)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
    high = freqs >= SPLIT_HZ
    low_band = _istft(out_spec * ~high[:, None], n)
    out_high = out_spec * high[:, None]
    result = {"sinc baseline": sinc_output[:n]} if sinc_output is not None else {}
    result.update({gain_name(g): low_band + _istft(out_spec * gain_per_bin(g, freqs)[:, None], n) for g in gains})
    result["oracle frame level"] = low_band + _istft(out_high * _band_gains(ref_spec, out_spec, high)[None], n)
    band_gains = np.ones(out_spec.shape)
    for rows in _band_rows(freqs, band_hz):
        band_gains[rows] = _band_gains(ref_spec, out_spec, rows)[None]
    # A gain g applied as g**f moves each band's level the fraction f of the way (in dB) to the reference's.
    result.update({f"oracle band levels {f:.0%}": low_band + _istft(out_high * band_gains ** f, n) for f in fractions})
    result["oracle band levels"] = low_band + _istft(out_high * band_gains, n)
    result["reference high band"] = low_band + _istft(ref_spec * high[:, None], n)
    return result


def score_all_or_none(reference: np.ndarray, signals: dict[str, np.ndarray], scorers: dict[str, Callable],
                      scores: dict[str, dict[str, list[float]]]) -> list[str]:
    """Score every signal against ``reference`` with every scorer (a ``bwe.metrics`` function that
    returns None for an unscorable pair) into ``scores[metric][signal name]``. A file one signal cannot
    be scored on by a metric adds nothing to that metric, so signals are compared on the same files.
    Returns the metrics this file was left out of."""
    left_out = []
    for metric, scorer in scorers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unscorable files are counted, not scored
            scored = {name: scorer(reference, signal) for name, signal in signals.items()}
        if any(v is None for v in scored.values()):
            left_out.append(metric)
            continue
        for name, value in scored.items():
            scores.setdefault(metric, {}).setdefault(name, []).append(value)
    return left_out


def perceptual_scorers(visqol: bool) -> dict[str, Callable]:
    """The perceptual metrics to score, by their ``bwe.metrics`` function: WB-PESQ, and ViSQOL if asked for."""
    return {"pesq_wb": pesq_wb, **({"visqol": visqol_speech} if visqol else {})}


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# One scored example: (name, wideband reference, narrowband input at 8 kHz, the lag in samples at 16 kHz
# of the input's sinc rendering behind the reference, undone before scoring).
Example = tuple[str, np.ndarray, np.ndarray, int]


def simulated_examples(files: Sequence[str]) -> Iterator[Example]:
    """Each wideband file and its narrowband version through the fixed evaluation channel (no lag)."""
    for path in files:
        reference, _ = load_audio(path, target_rate=RATE)
        yield path, reference, evaluation_degradation(reference), 0


def real_pair_examples(pairs: Sequence[tuple[str, str]], max_offset: int) -> Iterator[Example]:
    """Each real (narrowband, wideband) recording pair, with the lag ``evaluate.py`` would find."""
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


def aligned_to_reference(wideband: np.ndarray, signals: dict[str, np.ndarray],
                         offset: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The reference and each of ``signals`` (on the input's timeline) with the lag ``offset`` undone
    by ``evaluate.shift``, all trimmed to the shortest."""
    shifted = {name: shift(wideband, signal, offset) for name, signal in signals.items()}
    n = min(len(estimate) for _, estimate in shifted.values())
    reference = next(iter(shifted.values()))[0][:n]  # every shift drops the same start of the reference
    return reference, {name: estimate[:n] for name, (_, estimate) in shifted.items()}


def headroom(
    examples: Iterable[Example], system: Callable[[np.ndarray], np.ndarray], gains: Sequence[Gain] = DEFAULT_GAINS,
    band_hz: float = 500.0, fractions: Sequence[float] = DEFAULT_FRACTIONS, visqol: bool = False,
) -> tuple[dict[str, dict[str, float]], tuple[float, float], list[str]]:
    """Per variant: mean WB-PESQ (and ViSQOL) over the examples each can score, and mean LSD-HF over
    all; the system's band-level error and bias in dB (:func:`band_level_errors_db`), means over
    examples; and the names of the examples too short to score after alignment (left out).

    An example one variant cannot score by a metric is left out of that metric's means for every
    variant, so the variants are compared on the same examples; the counts say how many were left out.
    """
    scorers = perceptual_scorers(visqol)
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
        prog="pesq_headroom.py", description=__doc__.split("\n\n")[0],
        epilog="example: python eval/pesq_headroom.py --model bwe/pretrained --data CORPUS/valid --limit 40")
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
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def numbers(flag: str, text: str) -> list[float]:
    """The comma-separated numbers of a flag's value (empty items skipped), or an EvaluationError naming the flag."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EvaluationError(f"{flag} {text!r}: expected numbers separated by commas") from None


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


def spread_files(folder: str, flag: str, limit: int) -> list[str]:
    """``limit`` audio files spread evenly over ``folder`` (searched recursively), or an EvaluationError
    naming ``flag`` when it is no directory or holds no audio."""
    if not os.path.isdir(folder):
        raise EvaluationError(f"{flag} {folder}: not a directory")
    files = list_audio_files(folder)
    if not files:
        raise EvaluationError(f"{flag} {folder}: no audio files")
    return [files[i] for i in spread_indices(len(files), limit)]


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
        table, (band_error, band_bias), too_short = headroom(
            examples, system, gains, args.band_hz, fractions, args.visqol)
    except (EvaluationError, AudioError, ImportError) as e:
        print(f"pesq_headroom.py: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"band_level_error_db": band_error, "band_level_bias_db": band_bias, "variants": table,
                          "too_short": too_short}, indent=2))
        return 0
    first = next(iter(table.values()))
    metrics = list(perceptual_scorers(args.visqol))
    left_out = ", ".join(f"{first[m + '_unscorable']} not scorable by {METRIC_LABELS[m]}" for m in metrics)
    print(f"{args.model} on {first['files']} file(s) of {source} ({left_out}, left out of its means)")
    if too_short:
        print(f"left out, too short to score: {', '.join(too_short)}")
    print(f"its high-band envelope error: {band_error:.1f} dB, bias {band_bias:+.1f} dB (medians over frames of "
          f"the RMS and of the mean over {args.band_hz:g} Hz bands of its level minus the reference's; "
          "mean over files)")
    print(f"{'high band':26s} " + " ".join(f"{METRIC_LABELS[m]:>8s}" for m in metrics) + f" {'LSD-HF':>7s}")
    for name, row in table.items():
        print(f"{name:26s} " + " ".join(f"{row[m]:8.3f}" for m in metrics) + f" {row['lsd_hf']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
