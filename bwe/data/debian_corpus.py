"""The real-speech corpus of the bundled models, built from Debian packages.

    python -m bwe.data.prepare debian-corpus --root CORPUS [--apt-update]

Debian ships wideband human speech in a few packages (a Russian festival voice, the Asterisk phone
prompts, children's software), reachable wherever ``apt-get`` is, without general internet access.
This module downloads them with ``apt-get download`` (no root needed), unpacks them with
``dpkg-deb -x``, decodes the G.722 prompts with ``ffmpeg`` and converts every recording to 16 kHz
mono 16-bit WAV:

- ``CORPUS/train/<source>/<name>_<key>.wav`` and ``CORPUS/valid/...``: ``key`` is the first 8 hex
  digits of the MD5 of the recording's path under ``CORPUS/.raw``; a key starting below ``0d``
  puts the file in ``valid/`` (about 5 % of every source, the same files on every run and machine).
- ``CORPUS/corpus.tsv``: one line per file, ``source<TAB>split<TAB>path<TAB>seconds``, the path
  relative to ``CORPUS``. Its presence means the corpus is complete: a rerun only reports it.
- ``CORPUS/.raw/``: the ``.deb`` files (``.raw/debs``) and one unpacked folder per package, reused
  by a rerun and read by ``python -m eval.research asterisk-pairs``; about 1.5 GB, removable otherwise.

Recordings that cannot be read, are sampled below 16 kHz (narrowband: not a wideband target) or last
less than a quarter of a second are skipped and counted.

Nothing is installed and ``apt-get update`` is not run unless ``--apt-update`` is given, since both
need root and change the system: on a machine whose package lists are missing or stale,
``apt-get download`` cannot find the packages, and the error says so. Every step writes through a
temporary file or folder and a rename, so an interrupted run leaves no half-written .deb, package
folder, wav or corpus.tsv, and the next run continues.

Sources (about 7 hours, several dozen speakers, 15+ languages):

=============================  ==================================================================
festvox-ru                     620 read sentences, one male Russian speaker, studio-clean,
                               low-passed near 7.2 kHz (BSD-like)
asterisk-g722                  phone prompts, en/es/fr/ru, 3 female + 1 male; G.722-coded, so
                               4-8 kHz carries codec noise (CC-BY-SA-3.0)
tuxpaint                       single words and short phrases, 44.1 kHz volunteer recordings,
                               many languages (GPL-2)
klettres, ktuberling           letters, syllables and words, about 20 languages (GPL-2+)
kajongg                        game calls, 8 English/German speakers (GPL-2+)
=============================  ==================================================================

Its limits are the data's: short clips, few long utterances, uneven quality. The usual training
data of the field is LibriSpeech / VCTK (``python -m bwe.data.prepare librispeech|vctk``).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from bwe.data import audio
from bwe.files import replacing, staging_folder, write_text_atomic

logger = logging.getLogger(__name__)

PACKAGES = (
    "festvox-ru",
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-es-g722",
    "asterisk-core-sounds-fr-g722",
    "asterisk-core-sounds-ru-g722",
    "tuxpaint-stamps-default",
    "klettres-data",
    "ktuberling-data",
    "kajongg",
)

# Corpus source -> glob patterns, under .raw/, of its recordings (each starts with a package folder).
SOURCES = {
    "festvox-ru": ("festvox-ru/**/msu_ru_nsh_clunits/wav/*.wav",),
    "asterisk-g722": ("asterisk-core-sounds-*-g722/**/*.wav",),  # the decodes of the .g722 files
    "tuxpaint": ("tuxpaint-stamps-default/**/*_desc*.ogg",),  # the spoken descriptions, not the effects
    "klettres": ("klettres-data/**/*.ogg",),
    "ktuberling": ("ktuberling-data/**/sounds/**/*.ogg", "ktuberling-data/**/sounds/**/*.wav"),
    "kajongg": ("kajongg/**/voices/**/*.ogg",),
}
G722_PATTERN = "asterisk-core-sounds-*-g722/**/*.g722"

RATE = 16000
VALID_KEY_BELOW = 13  # of 256 values of the key's first byte: about 5 % of every source is validation
TSV_NAME = "corpus.tsv"

# Why a recording was left out (see convert_recording).
SKIP_UNREADABLE = "unreadable"
SKIP_NARROWBAND = "sampled below 16 kHz"
SKIP_SHORT = "shorter than 1/4 s"

_TOOL_HINTS = {
    "apt-get": "it downloads the packages and comes with Debian and Ubuntu; elsewhere, put the .deb files of"
               " {packages} (from packages.debian.org) into {debs} and rerun",
    "dpkg-deb": "it unpacks the packages; install dpkg (part of every Debian/Ubuntu system; elsewhere e.g."
                " `brew install dpkg`)",
    "ffmpeg": "it decodes the G.722 Asterisk prompts; install it (Debian/Ubuntu: sudo apt-get install ffmpeg)",
}


class DebianCorpusError(RuntimeError):
    """A package cannot be fetched or unpacked, a tool is missing, or no audio came out."""


class CorpusEntry(NamedTuple):
    """One line of corpus.tsv."""

    source: str
    split: str
    path: str  # relative to the corpus folder
    seconds: float

    def tsv_line(self) -> str:
        return f"{self.source}\t{self.split}\t{self.path}\t{self.seconds:.2f}"


@dataclass
class BuildResult:
    """What :func:`build_corpus` found or made; ``reused`` when corpus.tsv was already there."""

    entries: list[CorpusEntry]
    skipped: Counter = field(default_factory=Counter)
    reused: bool = False

    def summary_lines(self) -> list[str]:
        """Hours per source and split, then the total."""
        hours: Counter = Counter()
        for entry in self.entries:
            hours[(entry.source, entry.split)] += entry.seconds / 3600
        lines = [f"{source:14s} {split:5s} {h:6.2f} h" for (source, split), h in sorted(hours.items())]
        lines.append(f"total {sum(hours.values()):.2f} h in {len(self.entries)} files")
        if self.skipped:
            lines.append("skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())))
        return lines


def corpus_key(raw: str, path: str) -> str:
    """The 8 hex digits naming a recording: the MD5 of its path relative to ``raw`` (the .raw folder)."""
    return hashlib.md5(os.fsencode(os.path.relpath(path, raw))).hexdigest()[:8]


def split_of(key: str) -> str:
    return "valid" if int(key[:2], 16) < VALID_KEY_BELOW else "train"


def output_path(source: str, path: str, key: str) -> str:
    """``split/source/name_key.wav`` (relative to the corpus), the name made of safe characters only."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in stem)
    return os.path.join(split_of(key), source, f"{name}_{key}.wav")


def find_tool(name: str, **details: str) -> str:
    """The path of the program ``name``, or a DebianCorpusError saying what it is for and how to get it."""
    found = shutil.which(name)
    if found is None:
        raise DebianCorpusError(f"{name} not found on PATH; " + _TOOL_HINTS[name].format(**details))
    return found


def run_tool(args: Sequence[str], what: str, hint: str = "", cwd: str | None = None) -> None:
    """Run a program quietly; on failure a DebianCorpusError with ``what``, its last lines of output and ``hint``."""
    try:
        result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise DebianCorpusError(f"{what}: cannot run {args[0]} ({e})") from None
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        said = f": {' / '.join(output)}" if output else ""
        raise DebianCorpusError(f"{what} failed (exit status {result.returncode}){said}" + (f"; {hint}" if hint else ""))


def downloaded_deb(debs: str, package: str) -> str | None:
    """A .deb of ``package`` already in ``debs`` (the newest name when there are several), or None."""
    found = sorted(glob.glob(os.path.join(glob.escape(debs), f"{package}_*.deb")))
    return found[-1] if found else None


def download_deb(apt_get: str, debs: str, package: str) -> str:
    """``apt-get download package`` into a staging folder, then the .deb moved into ``debs``."""
    staging = staging_folder(os.path.join(debs, package))
    try:
        run_tool([apt_get, "download", "-qq", package], f"apt-get download {package}", cwd=staging,
                 hint=f"if apt does not know {package}, its package lists are missing or stale: rerun with"
                      f" --apt-update (runs apt-get update, needs root) or run `sudo apt-get update` first;"
                      f" or put {package}_*.deb into {debs} by hand")
        got = glob.glob(os.path.join(glob.escape(staging), "*.deb"))
        if len(got) != 1:
            raise DebianCorpusError(f"apt-get download {package} succeeded but left {len(got)} .deb files, not 1")
        deb = os.path.join(debs, os.path.basename(got[0]))
        os.replace(got[0], deb)
        return deb
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_packages(debs: str, packages: Sequence[str], apt_update: bool = False) -> dict[str, str]:
    """The .deb of every package, downloading those not already in ``debs``: package -> path."""
    os.makedirs(debs, exist_ok=True)
    found = {package: downloaded_deb(debs, package) for package in packages}
    missing = [package for package, deb in found.items() if deb is None]
    if missing:
        apt_get = find_tool("apt-get", packages=" ".join(missing), debs=debs)
        if apt_update:
            run_tool([apt_get, "update", "-qq"], "apt-get update",
                     hint="it needs root: run it as root or with sudo, then rerun without --apt-update")
        for package in missing:
            logger.info("downloading %s", package)
            found[package] = download_deb(apt_get, debs, package)
    return found


def unpack_package(dpkg_deb: str, deb: str, target: str) -> None:
    """``dpkg-deb -x deb`` into ``target``, through a staging folder renamed into place; kept if there."""
    if os.path.isdir(target):
        return
    logger.info("unpacking %s", os.path.basename(deb))
    staging = staging_folder(target)
    try:
        run_tool([dpkg_deb, "-x", deb, staging], f"dpkg-deb -x {deb}",
                 hint="the file may be damaged: delete it and rerun to download it again")
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_and_unpack(raw: str, packages: Sequence[str], apt_update: bool = False) -> None:
    """Every package downloaded into ``raw/debs`` and unpacked into ``raw/PACKAGE``, reusing what is there
    (dpkg-deb is only needed when something is left to unpack)."""
    debs = fetch_packages(os.path.join(raw, "debs"), packages, apt_update)
    if not all(os.path.isdir(os.path.join(raw, package)) for package in debs):
        dpkg_deb = find_tool("dpkg-deb")
        for package, deb in debs.items():
            unpack_package(dpkg_deb, deb, os.path.join(raw, package))


def decode_g722(ffmpeg: str, path: str) -> None:
    """Decode one G.722 prompt to a 16 kHz wav beside it (same name, ``.wav``)."""
    with replacing(os.path.splitext(path)[0] + ".wav", suffix=".wav") as tmp:
        run_tool([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "g722", "-i", path,
                  "-ar", str(RATE), "-f", "wav", tmp], f"ffmpeg decoding {path}")


def decode_g722_prompts(raw: str, jobs: int) -> None:
    """Decode the Asterisk G.722 prompts not decoded by an earlier run (ffmpeg, ``jobs`` at a time)."""
    prompts = sorted(glob.glob(os.path.join(glob.escape(raw), G722_PATTERN), recursive=True))
    pending = [p for p in prompts if not os.path.isfile(os.path.splitext(p)[0] + ".wav")]
    if not pending:
        return
    ffmpeg = find_tool("ffmpeg")
    logger.info("decoding %d G.722 prompts", len(pending))
    with ThreadPoolExecutor(max(1, jobs)) as pool:  # threads: the work is in the ffmpeg processes
        list(pool.map(lambda p: decode_g722(ffmpeg, p), pending))


def find_recordings(raw: str) -> list[tuple[str, str]]:
    """``(source, path)`` of every recording under ``raw``, sorted by source then path."""
    recordings = []
    for source, patterns in SOURCES.items():
        paths = {p for pattern in patterns
                 for p in glob.glob(os.path.join(glob.escape(raw), pattern), recursive=True) if os.path.isfile(p)}
        if not paths:
            logger.warning("%s: no recordings found under %s", source, raw)
        recordings.extend((source, p) for p in sorted(paths))
    return recordings


def convert_recording(job: tuple[str, str]) -> float | str:
    """Write ``job = (input, output)`` as 16 kHz mono 16-bit WAV (soxr VHQ, atomic): its seconds,
    or why it was skipped (a ``SKIP_*`` reason)."""
    path, out = job
    try:
        x, rate = audio.load_audio(path)
    except audio.AudioError:
        return SKIP_UNREADABLE
    if rate < RATE:
        return SKIP_NARROWBAND
    if len(x) < rate // 4:  # too short to hold a word
        return SKIP_SHORT
    y = np.clip(audio.resample(x, rate, RATE), -1.0, 1.0)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    audio.save_audio(out, y, RATE, subtype="PCM_16")
    return len(y) / RATE


def _map(function, arguments: list, jobs: int) -> list:
    """``[function(a) for a in arguments]`` in ``jobs`` processes (in this one for 1), with a progress bar
    on a terminal."""
    progress = {"total": len(arguments), "unit": "file", "disable": None, "leave": False}
    if jobs <= 1:
        return list(tqdm(map(function, arguments), **progress))
    with ProcessPoolExecutor(jobs) as pool:
        return list(tqdm(pool.map(function, arguments, chunksize=32), **progress))


def convert_recordings(raw: str, dest: str, jobs: int) -> BuildResult:
    """Convert every recording under ``raw`` into ``dest``: the entries (in corpus.tsv's order) and the skips."""
    planned = []  # (source, input, split, output relative to dest)
    for source, path in find_recordings(raw):
        key = corpus_key(raw, path)
        planned.append((source, path, split_of(key), output_path(source, path, key)))
    logger.info("converting %d recordings to 16 kHz mono 16-bit wav", len(planned))
    outcomes = _map(convert_recording, [(path, os.path.join(dest, rel)) for _, path, _, rel in planned], jobs)
    result = BuildResult(entries=[])
    for (source, _, split, rel), outcome in zip(planned, outcomes):
        if isinstance(outcome, str):
            result.skipped[outcome] += 1
        else:
            result.entries.append(CorpusEntry(source, split, rel, outcome))
    result.entries.sort(key=CorpusEntry.tsv_line)
    return result


def read_corpus_tsv(path: str) -> list[CorpusEntry]:
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if fields == [""]:
                continue
            if len(fields) != 4:
                raise DebianCorpusError(f"{path}:{number}: expected source, split, path, seconds; got {line!r}")
            entries.append(CorpusEntry(fields[0], fields[1], fields[2], float(fields[3])))
    return entries


def build_corpus(dest: str | os.PathLike, apt_update: bool = False, jobs: int | None = None) -> BuildResult:
    """Build the corpus in ``dest`` (see the module docstring), or report the one already there.

    Raises:
        DebianCorpusError: a tool is missing, a package cannot be downloaded or unpacked, or the
            packages held no usable recording.
    """
    dest = os.fspath(dest)
    tsv = os.path.join(dest, TSV_NAME)
    if os.path.isfile(tsv):
        return BuildResult(entries=read_corpus_tsv(tsv), reused=True)
    jobs = jobs or os.cpu_count() or 1
    raw = os.path.join(dest, ".raw")
    fetch_and_unpack(raw, PACKAGES, apt_update)
    decode_g722_prompts(raw, jobs)
    result = convert_recordings(raw, dest, jobs)
    if not result.entries:
        raise DebianCorpusError(f"{raw}: the packages held no usable recording ({sum(result.skipped.values())}"
                                " skipped); has the packages' layout changed? (see SOURCES in bwe/data/debian_corpus.py)")
    write_text_atomic(tsv, "".join(entry.tsv_line() + "\n" for entry in result.entries))
    return result
