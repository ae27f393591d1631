"""How well can the 4-8 kHz envelope be predicted from the low band, and what would that envelope be worth?

    python -m eval.research envelope-probe --train CORPUS/train --data CORPUS/valid [--model bwe/pretrained] [--visqol]
    python -m eval.research envelope-probe --train CORPUS/train --pairs PAIRS/nb PAIRS/wb [--lag-ms 16] ...

A regression probe, the classical artificial-bandwidth-extension question asked of a corpus: an MLP
(scikit-learn, two hidden layers of 256) is fitted on ``--train`` to map the low band's levels to
the high band's, then predicts the high band's levels of ``--data`` blind, from the narrowband
input alone. Input: the level (dB) of each 250 Hz band from 0 to 3.75 kHz of the input played at
16 kHz (``sinc``), in the frame and the frames of the ``--context-ms`` before it, all moved
``--lag-ms`` back (0: the newest 32 ms analysis window is the predicted one, reaching 16 ms past
its centre; 16: it ends at that centre); target: the level of each 500 Hz band from 4 to 8 kHz of
the reference. Frames are those of ``bwe.metrics.band_stft`` (512-sample Hann, hop 128, 16 kHz), as in
``pesq-headroom``. Every reference is degraded by the fixed evaluation channel, for fitting, and for
testing unless ``--pairs`` names real narrowband recordings and their wideband references (paired by
file name and aligned as ``eval.evaluate`` does).

It reports the probe's envelope error and bias on the test files (``bwe.metrics.band_level_errors_db``:
medians over frames of the RMS and of the mean over bands of predicted minus reference level). With
``--model``, it also scores that system as it is and with its high band reshaped, frame by frame
and band by band, to the probe's predicted levels, at each ``--gains`` (WB-PESQ, ViSQOL with
``--visqol``, LSD-HF, envelope error; the sinc baseline beside them). The probe never sees the
reference of a file it predicts, so the reshaped system is a blind system too, just not one that
streams: at ``--lag-ms 0`` its analysis frames reach 16 ms ahead, and the reshaping spreads each
frame's gains over its 32 ms window either way. It answers whether a system's envelope error is
what the low band cannot tell (the probe does no better) or the system's own (the probe does better,
and the reshaped system shows what fixing it would be worth).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from bwe.baselines import sinc
from bwe.config import OUTPUT_RATE as RATE
from bwe.data.audio import AudioError, load_audio
from bwe.data.degrade import evaluation_degradation
from bwe.metrics import (
    BAND_FREQS, BAND_HOP, LSD_N_FFT, band_level_errors_db, band_levels_db, band_stft, error_and_bias_db,
    high_band_rows, import_visqol, lsd_all,
)
from eval.evaluate import METRIC_LABELS, EvaluationError, aligned_to_reference, load_system, shift
from eval.research.high_band import HIGH_BINS, band_istft, low_band
from eval.research.inputs import Example, add_test_set_arguments, chosen_examples, numbers, spread_files
from eval.research.scoring import perceptual_scorers, score_all_or_none

PROG = "python -m eval.research envelope-probe"
FRAME_MS = 1000.0 * BAND_HOP / RATE  # the STFT hop
LOW_BAND_HZ = 250.0
LOW_TOP_HZ = 3750.0  # the evaluation channel's passband ends at 3.8 kHz
DEFAULT_GAINS = (1.0, 0.7, 0.5)
LOW_ROWS = [(BAND_FREQS >= lo) & (BAND_FREQS < lo + LOW_BAND_HZ) for lo in np.arange(0.0, LOW_TOP_HZ, LOW_BAND_HZ)]
HIGH_ROWS = high_band_rows(500.0)


def features(narrowband: np.ndarray, context_frames: int, lag_frames: int = 0) -> np.ndarray:
    """[frames, low bands * (context_frames + 1)]: low-band levels of the frame ``lag_frames`` before
    this one and of the ``context_frames`` before that (the first frame's levels stand in for the
    time before the signal)."""
    levels = band_levels_db(band_stft(sinc(narrowband)), LOW_ROWS)
    newest = context_frames + lag_frames  # row of ``padded`` that holds frame 0's newest features
    padded = np.concatenate([np.repeat(levels[:1], newest, axis=0), levels])
    n = len(levels)
    return np.concatenate([padded[context_frames - k: context_frames - k + n] for k in range(context_frames + 1)], axis=1)


def example_features(wideband: np.ndarray, narrowband: np.ndarray, offset: int, context_frames: int,
                     lag_frames: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features, high-band levels of the reference) of one example, frame by frame on the input's
    timeline: the reference is moved by the lag ``offset`` (``eval.research.inputs.Example``) first."""
    x = features(narrowband, context_frames, lag_frames)
    reference = np.pad(wideband, (offset, 0)) if offset >= 0 else wideband[-offset:]
    y = band_levels_db(band_stft(reference), HIGH_ROWS)
    n = min(len(x), len(y))
    return x[:n], y[:n]


def pair(path: str, context_frames: int, lag_frames: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(reference, narrowband, features, high-band levels of the reference) of one file."""
    reference, _ = load_audio(path, target_rate=RATE)
    narrowband = evaluation_degradation(reference)
    return reference, narrowband, *example_features(reference, narrowband, 0, context_frames, lag_frames)


class EnvelopeProbe:
    """Standardised features -> MLP -> high-band levels (dB), fitted on whole files."""

    def __init__(self, context_frames: int, seed: int = 0, lag_frames: int = 0):
        self.context_frames = context_frames
        self.lag_frames = lag_frames
        self.seed = seed

    def fit(self, files: Sequence[str], max_frames: int = 200_000) -> EnvelopeProbe:
        from sklearn.neural_network import MLPRegressor
        from sklearn.preprocessing import StandardScaler

        xs, ys = [], []
        for path in files:
            _, _, x, y = pair(path, self.context_frames, self.lag_frames)
            xs.append(x)
            ys.append(y)
        x, y = np.concatenate(xs), np.concatenate(ys)
        if len(x) > max_frames:  # an even thinning keeps every file's share
            keep = np.linspace(0, len(x) - 1, max_frames).astype(int)
            x, y = x[keep], y[keep]
        self.scaler = StandardScaler().fit(x)
        self.mlp = MLPRegressor(hidden_layer_sizes=(256, 256), early_stopping=True, max_iter=60,
                                random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: early stopping decides
            self.mlp.fit(self.scaler.transform(x), y)
        self.frames = len(x)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.mlp.predict(self.scaler.transform(x)).reshape(len(x), len(HIGH_ROWS))


def reshape_high_band(output: np.ndarray, levels_db: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """``output`` with each frame's 500 Hz bands above 4 kHz rescaled to ``levels_db`` [frames, bands]
    (then scaled by ``gain``); the low band untouched."""
    n = len(output)
    spectrum = band_stft(output)
    frames = min(spectrum.shape[1], len(levels_db))
    gains = np.ones(spectrum.shape)
    current = band_levels_db(spectrum, HIGH_ROWS)
    for band, rows in enumerate(HIGH_ROWS):
        gains[rows, :frames] = (10 ** ((levels_db[:frames, band] - current[:frames, band]) / 20))[None]
    return low_band(spectrum, n) + gain * band_istft(spectrum * HIGH_BINS[:, None] * gains, n)


def probe_report(probe: EnvelopeProbe, examples: Iterable[Example],
                 system: Callable[[np.ndarray], np.ndarray] | None, gains: Sequence[float] = DEFAULT_GAINS,
                 visqol: bool = False) -> dict:
    """The probe's envelope error and bias on the ``examples`` (``eval.research.inputs.simulated_examples``
    or ``real_pair_examples``); with a ``system``, its scores as it is and reshaped to the probe's
    levels at each gain (means over examples; perceptual metrics over the examples every variant
    could be scored on). Each output is aligned to its reference by the example's lag, as
    ``eval.evaluate`` aligns it."""
    errors = []
    scorers = perceptual_scorers(visqol)
    rows: dict[str, dict[str, list[float]]] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    too_short = []
    for name, wideband, narrowband, offset in examples:
        upsampled = sinc(narrowband)
        if len(shift(wideband, upsampled, offset)[0]) <= LSD_N_FFT // 2:
            too_short.append(name)
            continue
        x, y = example_features(wideband, narrowband, offset, probe.context_frames, probe.lag_frames)
        predicted = probe.predict(x)
        errors.append(error_and_bias_db(predicted - y))
        if system is None:
            continue
        output = np.asarray(system(narrowband), np.float32)
        signals = {"sinc baseline": upsampled, "system as is": output}
        signals.update({f"system, probe envelope x{g:g}": reshape_high_band(output, predicted, g) for g in gains})
        reference, signals = aligned_to_reference(wideband, signals, offset)
        for variant, signal in signals.items():
            row = rows.setdefault(variant, {"lsd_hf": [], "envelope_error_db": []})
            row["lsd_hf"].append(lsd_all(reference, signal)["lsd_hf"])
            row["envelope_error_db"].append(band_level_errors_db(reference, signal)[0])
        score_all_or_none(reference, signals, scorers, scores)
    if not errors:
        raise EvaluationError(f"all {len(too_short)} test example(s) are too short to score (LSD needs more "
                              f"than {LSD_N_FFT // 2} samples at 16 kHz)")
    error, bias = np.mean(errors, axis=0)
    report = {"train_frames": probe.frames, "files": len(errors), "too_short": too_short,
              "probe_envelope_error_db": float(error), "probe_envelope_bias_db": float(bias)}
    if system is not None:
        for metric in scorers:
            for name, row in rows.items():
                row[metric] = scores.get(metric, {}).get(name, [])
        report["system"] = {name: {metric: float(np.mean(v)) if v else float("nan") for metric, v in row.items()}
                            | {f"{m}_files": len(row[m]) for m in scorers}
                            for name, row in rows.items()}
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        epilog=f"example: {PROG} --train CORPUS/train --data CORPUS/valid --model bwe/pretrained")
    parser.add_argument("--train", required=True, help="wideband references to fit the probe on (searched recursively)")
    add_test_set_arguments(parser)  # what the probe is tested on: --data or --pairs, --limit
    parser.add_argument("--model", help="also score this system (folding, an exported model directory, DIR:int8)")
    parser.add_argument("--train-limit", type=int, default=1500,
                        help="training files, spread evenly over --train (default 1500)")
    parser.add_argument("--context-ms", type=float, default=128.0, help="past context of the features (default 128)")
    parser.add_argument("--lag-ms", type=float, default=0.0,
                        help="predict each frame from the features this long before it, in steps of the 8 ms "
                             "hop: 16 takes away the look-ahead of the centred analysis window (default 0)")
    parser.add_argument("--gains", default=",".join(f"{g:g}" for g in DEFAULT_GAINS),
                        help="gains of the reshaped high band (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="MLP initialisation seed (default 0)")
    parser.add_argument("--visqol", action="store_true", help="also score ViSQOL (speech mode)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gains = numbers("--gains", args.gains)
        if (args.train_limit < 1 or args.limit < 1 or args.context_ms < 0 or args.lag_ms < 0
                or any(g < 0 for g in gains)):
            raise EvaluationError("--train-limit and --limit must be >= 1, --context-ms and --lag-ms >= 0 and "
                                  "every gain >= 0")
        train_files = spread_files(args.train, "--train", args.train_limit)
        examples, test_source = chosen_examples(args.data, args.pairs, args.limit, args.max_offset_ms)
        system = load_system(args.model) if args.model else None
        if args.visqol:
            import_visqol()
    except (EvaluationError, AudioError, ImportError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        probe = EnvelopeProbe(int(round(args.context_ms / FRAME_MS)), args.seed,
                              int(round(args.lag_ms / FRAME_MS))).fit(train_files)
        report = probe_report(probe, examples, system, gains, args.visqol)
    except (EvaluationError, AudioError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"probe fitted on {report['train_frames']} frames of {len(train_files)} file(s) of {args.train}; "
          f"tested on {report['files']} file(s) of {test_source}")
    if report["too_short"]:
        print(f"left out, too short to score: {', '.join(report['too_short'])}")
    print(f"probe envelope error {report['probe_envelope_error_db']:.2f} dB, bias "
          f"{report['probe_envelope_bias_db']:+.2f} dB")
    if system is not None:
        metrics = list(perceptual_scorers(args.visqol))
        print(f"{'high band':32s} " + " ".join(f"{METRIC_LABELS[m]:>8s}" for m in metrics)
              + f" {'LSD-HF':>7s} {'env dB':>7s}")
        for name, row in report["system"].items():
            print(f"{name:32s} " + " ".join(f"{row.get(m, float('nan')):8.3f}" for m in metrics)
                  + f" {row['lsd_hf']:7.3f} {row['envelope_error_db']:7.2f}")
    return 0
