"""Pairs for ``eval.evaluate --pairs`` whose narrowband side went through a real telephone codec.

    python -m eval.codec_pairs OUT_DIR --codec gsm REF_DIR [REF_DIR ...]
    python -m eval.codec_pairs OUT_DIR --codec pcm --channel telephone REF_DIR [REF_DIR ...]
    python -m eval.evaluate --model bwe/pretrained --pairs OUT_DIR/nb OUT_DIR/wb --out REPORT

Every wideband reference below the REF_DIRs (any audio file, any rate, resampled to 16 kHz) goes
through a fixed channel (``--channel``: ``lowpass``, the simulated test set's
:func:`bwe.data.degrade.evaluation_degradation`, or ``telephone``, the 300-3400 Hz band of
:func:`bwe.data.degrade.telephone_degradation`), is quantised to 16-bit PCM (a pair whose channel
output would exceed full scale is scaled down, both sides alike, rather than clipped), and is then
encoded and decoded by a real codec of the telephone network, with ffmpeg's encoders and decoders
(``--codec``, one of :data:`bwe.data.codecs.CODECS`: G.711 mu-law and A-law, G.726, GSM full rate,
G.723.1, Speex, Opus), or left as 16-bit PCM (``pcm``).

This is the codec half of "real 8 kHz input" with references that are clean: the real Asterisk
pairs (``python -m eval.research asterisk-pairs``) have real recordings on the narrowband side, but G.722 decodes as
references, whose 4-8 kHz band carries that codec's noise (see the model card). Writes
``OUT_DIR/nb/<REF_DIR name>/<path>.wav`` (8 kHz, 16-bit, the decoded codec output) and
``OUT_DIR/wb/<REF_DIR name>/<path>.wav`` (the reference at 16 kHz, 32-bit float), with equal
relative names. Everything is written to a temporary folder first and renamed to OUT_DIR at the
end, so a failed run leaves nothing behind; the references are only read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

import numpy as np

from bwe.config import INPUT_RATE
from bwe.config import OUTPUT_RATE as RATE
from bwe.data.audio import AudioError, list_audio_files, load_audio, save_audio
from bwe.data.codecs import CODECS, CodecError, round_trip
from bwe.data.degrade import evaluation_degradation, telephone_degradation
from bwe.files import staging_folder
from eval.evaluate import EvaluationError, check_new_folder

PROG = "python -m eval.codec_pairs"
FULL_SCALE = 32767 / 32768  # the largest 16-bit sample
CHANNELS = {"lowpass": evaluation_degradation, "telephone": telephone_degradation}
PCM = "pcm"  # no codec: the channel's output as 16-bit PCM
# A request this tool cannot carry out, or ffmpeg failing; the message says what to change.
CodecPairsError = CodecError


def codec_round_trip(narrowband: np.ndarray, codec: str, work_dir: str) -> np.ndarray:
    """float [n] at 8 kHz -> float32: 16-bit PCM, then (unless ``pcm``) ``codec``'s round trip by ffmpeg.

    The decoded length and delay are the codec's; ``eval.evaluate --pairs`` aligns and trims.
    """
    if codec == PCM:
        return np.round(np.asarray(narrowband, np.float64) * 32768).clip(-32768, 32767).astype(np.float32) / 32768
    return round_trip(narrowband, codec, work_dir)


def build_pairs(out_dir: str, codec: str, reference_dirs: Sequence[str], channel: str = "lowpass") -> int:
    """Write OUT_DIR/nb and OUT_DIR/wb (see the module docstring); returns the number of pairs."""
    if codec not in CODECS and codec != PCM:
        raise CodecPairsError(f"--codec {codec!r}: choose one of {', '.join([*CODECS, PCM])}")
    if channel not in CHANNELS:
        raise CodecPairsError(f"--channel {channel!r}: choose one of {', '.join(CHANNELS)}")
    try:
        check_new_folder(out_dir, out_dir)
    except EvaluationError as e:
        raise CodecPairsError(str(e)) from None
    names = [os.path.basename(os.path.abspath(d)) for d in reference_dirs]
    if len(set(names)) < len(names):
        raise CodecPairsError(f"reference folders {list(reference_dirs)}: two have the same name")
    sources = []
    for folder, name in zip(reference_dirs, names):
        if not os.path.isdir(folder):
            raise CodecPairsError(f"{folder}: not a directory")
        files = list_audio_files(folder)
        if not files:
            raise CodecPairsError(f"{folder}: no audio files")
        sources += [(path, os.path.join(name, os.path.splitext(os.path.relpath(path, folder))[0] + ".wav"))
                    for path in files]
    written: dict[str, str] = {}
    for path, rel in sources:  # a.wav and a.flac would both become a.wav
        if rel in written:
            raise CodecPairsError(f"{written[rel]} and {path} would both be written as {rel}; rename one")
        written[rel] = path
    work = staging_folder(out_dir)
    try:
        scratch = os.path.join(work, "scratch")
        os.makedirs(scratch)
        for path, rel in sources:
            reference, _ = load_audio(path, target_rate=RATE)
            narrowband = CHANNELS[channel](reference)
            # The channel's ripple can push a full-scale recording past 16-bit full scale; rather
            # than clip it, both sides of the pair are scaled by the same factor.
            scale = min(1.0, FULL_SCALE / max(float(np.max(np.abs(narrowband))), 1e-12))
            reference, narrowband = reference * scale, narrowband * scale
            decoded = codec_round_trip(narrowband, codec, scratch)
            for side, audio, rate, subtype in (("wb", reference, RATE, "FLOAT"), ("nb", decoded, INPUT_RATE, "PCM_16")):
                target = os.path.join(work, side, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                save_audio(target, audio, rate, subtype=subtype)
        shutil.rmtree(scratch)
        os.rename(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return len(sources)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        epilog=f"example: {PROG} pairs_gsm --codec gsm CORPUS/valid/tuxpaint CORPUS/valid/klettres")
    parser.add_argument("out", help="new folder: nb/ and wb/ are written inside")
    parser.add_argument("references", nargs="+", metavar="REF_DIR", help="folders of wideband reference audio")
    parser.add_argument("--codec", required=True, choices=sorted([*CODECS, PCM]),
                        help="; ".join(f"{k}: {v.description}" for k, v in CODECS.items()) + f"; {PCM}: 16-bit PCM, no codec")
    parser.add_argument("--channel", default="lowpass", choices=sorted(CHANNELS),
                        help="lowpass: the evaluation channel (default); telephone: the 300-3400 Hz band")
    args = parser.parse_args(argv)
    try:
        n = build_pairs(args.out, args.codec, args.references, args.channel)
    except (CodecPairsError, AudioError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    through = CODECS[args.codec][2] if args.codec in CODECS else "16-bit PCM"
    print(f"{n} pairs through the {args.channel} channel and {through} in {args.out}: "
          f"python -m eval.evaluate --pairs {os.path.join(args.out, 'nb')} {os.path.join(args.out, 'wb')} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
