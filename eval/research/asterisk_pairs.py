"""Build a set of *real* narrowband/wideband pairs from the Asterisk prompts of the speech corpus.

Debian ships the same Asterisk voice prompts twice: as 8 kHz PCM wav (`asterisk-core-sounds-XX-wav`,
real telephone-band recordings made by the voice talent's studio, with their own anti-alias filter)
and as 16 kHz G.722 (`asterisk-core-sounds-XX-g722`, decoded to wav when the corpus is built).
Pairing them by file gives narrowband input that no simulation of ours produced, so a model that
only learned our degradation filter shows it here.

    python -m eval.research asterisk-pairs CORPUS_DIR OUT_DIR [--split valid]

CORPUS_DIR is what `python -m bwe.data.prepare debian-corpus` built (with its `.raw/` folder kept).
The 8 kHz packages are fetched with `apt-get download` into `.raw/debs` if missing. Writes
`OUT_DIR/nb/*.wav` (8 kHz) and `OUT_DIR/wb/*.wav` (16 kHz) with equal names, for
`python -m eval.evaluate --pairs OUT_DIR/nb OUT_DIR/wb`.
Only files of the given corpus split are used, so the default model never trained on them.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys

from bwe.data.debian_corpus import DebianCorpusError, corpus_key, fetch_and_unpack

PROG = "python -m eval.research asterisk-pairs"
LANGUAGES = ("en", "es", "fr", "ru")


def build_pairs(corpus: str, out: str, split: str) -> int:
    raw = os.path.join(corpus, ".raw")
    if not os.path.isdir(raw):
        raise SystemExit(f"error: {raw} not found; keep the corpus's .raw/ folder to build real pairs")
    fetch_and_unpack(raw, [f"asterisk-core-sounds-{lang}-wav" for lang in LANGUAGES])
    wideband = {}
    for path in glob.glob(os.path.join(corpus, split, "asterisk-g722", "*.wav")):
        wideband[os.path.splitext(path)[0].rsplit("_", 1)[-1]] = path
    os.makedirs(os.path.join(out, "nb"), exist_ok=True)
    os.makedirs(os.path.join(out, "wb"), exist_ok=True)
    pairs = 0
    for g722_wav in glob.glob(os.path.join(raw, "asterisk-core-sounds-*-g722", "**", "*.wav"), recursive=True):
        wb_path = wideband.get(corpus_key(raw, g722_wav))
        if wb_path is None:
            continue
        nb_path = g722_wav.replace("-g722" + os.sep, "-wav" + os.sep, 1)
        if not os.path.isfile(nb_path):
            continue
        name = os.path.basename(wb_path)
        shutil.copyfile(nb_path, os.path.join(out, "nb", name))
        shutil.copyfile(wb_path, os.path.join(out, "wb", name))
        pairs += 1
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("corpus", help="folder built by python -m bwe.data.prepare debian-corpus (with .raw/)")
    parser.add_argument("out", help="output folder; nb/ and wb/ are created inside")
    parser.add_argument("--split", default="valid", choices=("train", "valid"))
    args = parser.parse_args(argv)
    try:
        pairs = build_pairs(args.corpus, args.out, args.split)
    except DebianCorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{pairs} real 8 kHz / 16 kHz pairs in {args.out}/nb and {args.out}/wb")
    return 0 if pairs else 1
