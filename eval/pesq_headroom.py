"""Where a bandwidth extender loses WB-PESQ: its high band, corrected in steps towards the reference.

    python eval/pesq_headroom.py --model bwe/pretrained --data CORPUS/valid [--limit 40] [--json]

Each wideband reference is degraded by the fixed evaluation channel, run through the system, and
the system's 4-8 kHz band is then rescored as it is and after each of these changes (its 0-4 kHz
band is never touched):

* ``sinc baseline``: the input resampled with soxr, for reference;
* ``gain G``: the whole high band scaled by G (1 = as is, 0 = the system's own low band alone);
* ``oracle frame level``: each STFT frame's high band rescaled to the reference's high-band energy
  in that frame (right loudness over time, the system's own spectral shape inside 4-8 kHz);
* ``oracle band levels``: each frame's high band rescaled in ``--band-hz`` wide bands to the
  reference's energy in each (right envelope in time and frequency, the system's fine structure);
* ``reference high band``: the reference's own 4-8 kHz band (the ceiling).

It answers two questions a plain evaluation cannot: does this metric reward adding a high band at
all (the gain sweep), and is the loss in the envelope or in the fine structure (the oracles)? The
oracles use the reference, so they are diagnostics, never results. STFT: 512-sample periodic Hann,
hop 128, at 16 kHz (scipy.signal.stft/istft); WB-PESQ and LSD-HF from ``bwe.metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import scipy.signal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bwe.baselines import sinc  # noqa: E402
from bwe.data.audio import list_audio_files, load_audio, spread_indices  # noqa: E402
from bwe.data.degrade import evaluation_degradation  # noqa: E402
from bwe.metrics import lsd_all, pesq_wb  # noqa: E402
from evaluate import EvaluationError, load_system  # noqa: E402

RATE = 16000
N_FFT = 512
HOP = 128
SPLIT_HZ = 4000.0
DEFAULT_GAINS = (1.0, 0.7, 0.5, 0.3, 0.0)
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


def variants(reference: np.ndarray, output: np.ndarray, gains: Sequence[float], band_hz: float,
             sinc_output: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The system output with its high band changed in each way the module docstring lists (first the
    ``sinc_output`` as it is, if given)."""
    n = len(reference)
    ref_spec, out_spec = _stft(reference), _stft(output)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
    high = freqs >= SPLIT_HZ
    low_band = _istft(out_spec * ~high[:, None], n)
    out_high = out_spec * high[:, None]
    result = {"sinc baseline": sinc_output[:n]} if sinc_output is not None else {}
    result.update({f"gain {g:g}": low_band + g * _istft(out_high, n) for g in gains})
    result["oracle frame level"] = low_band + _istft(out_high * _band_gains(ref_spec, out_spec, high)[None], n)
    band_gains = np.ones(out_spec.shape)
    for lo in np.arange(SPLIT_HZ, RATE / 2, band_hz):
        rows = (freqs >= lo) & (freqs < lo + band_hz) | ((freqs == RATE / 2) & (lo + band_hz >= RATE / 2))
        band_gains[rows] = _band_gains(ref_spec, out_spec, rows)[None]
    result["oracle band levels"] = low_band + _istft(out_high * band_gains, n)
    result["reference high band"] = low_band + _istft(ref_spec * high[:, None], n)
    return result


def headroom(
    files: Sequence[str], system: Callable[[np.ndarray], np.ndarray], gains: Sequence[float] = DEFAULT_GAINS,
    band_hz: float = 500.0,
) -> dict[str, dict[str, float]]:
    """Mean WB-PESQ (over the files PESQ can score) and mean LSD-HF of every variant over ``files``."""
    pesq: dict[str, list[float]] = {}
    lsd_hf: dict[str, list[float]] = {}
    unscorable = 0
    for path in files:
        reference, _ = load_audio(path, target_rate=RATE)
        narrowband = evaluation_degradation(reference)
        output = np.asarray(system(narrowband), np.float32)[: len(reference)]
        scored = {}
        for name, signal in variants(reference, output, gains, band_hz, sinc(narrowband)).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unscorable files are counted, not scored
                scored[name] = pesq_wb(reference, signal)
            lsd_hf.setdefault(name, []).append(lsd_all(reference, signal)["lsd_hf"])
        if any(v is None for v in scored.values()):
            unscorable += 1
            continue
        for name, value in scored.items():
            pesq.setdefault(name, []).append(value)
    return {name: {"pesq_wb": float(np.mean(pesq[name])) if pesq.get(name) else float("nan"),
                   "lsd_hf": float(np.mean(values)), "files": len(values), "pesq_unscorable": unscorable}
            for name, values in lsd_hf.items()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pesq_headroom.py", description=__doc__.split("\n\n")[0],
        epilog="example: python eval/pesq_headroom.py --model bwe/pretrained --data CORPUS/valid --limit 40")
    parser.add_argument("--model", required=True, help="folding, an exported model directory, or DIR:int8")
    parser.add_argument("--data", required=True, help="folder of wideband reference audio (searched recursively)")
    parser.add_argument("--limit", type=int, default=40, help="files used, spread evenly over the folder (default 40)")
    parser.add_argument("--gains", default=",".join(f"{g:g}" for g in DEFAULT_GAINS),
                        help="comma-separated high-band gains (default %(default)s)")
    parser.add_argument("--band-hz", type=float, default=500.0, help="band width of the band-level oracle (default 500)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gains = [float(g) for g in args.gains.split(",")]
    except ValueError:
        print(f"pesq_headroom.py: error: --gains {args.gains!r}: expected numbers separated by commas", file=sys.stderr)
        return 2
    if args.limit < 1 or args.band_hz <= 0 or any(g < 0 for g in gains):
        print("pesq_headroom.py: error: --limit must be >= 1, --band-hz > 0 and every gain >= 0", file=sys.stderr)
        return 2
    if not os.path.isdir(args.data):
        print(f"pesq_headroom.py: error: --data {args.data}: not a directory", file=sys.stderr)
        return 2
    files = list_audio_files(args.data)
    if not files:
        print(f"pesq_headroom.py: error: --data {args.data}: no audio files", file=sys.stderr)
        return 2
    files = [files[i] for i in spread_indices(len(files), args.limit)]
    try:
        system = load_system(args.model)
    except EvaluationError as e:
        print(f"pesq_headroom.py: error: {e}", file=sys.stderr)
        return 2
    result = headroom(files, system, gains, args.band_hz)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    first = next(iter(result.values()))
    print(f"{args.model} on {first['files']} file(s) of {args.data} "
          f"({first['pesq_unscorable']} not scorable by PESQ, left out of its mean)")
    print(f"{'high band':24s} {'WB-PESQ':>8s} {'LSD-HF':>7s}")
    for name, row in result.items():
        print(f"{name:24s} {row['pesq_wb']:8.3f} {row['lsd_hf']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
