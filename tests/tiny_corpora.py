"""Tiny LibriSpeech and VCTK corpora in their real layouts, plus archives of them, for tests.

The audio is generated (tests/signals.py), a fraction of a second per file, so building a corpus
takes milliseconds and no test needs the real data.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import numpy as np
import soundfile

from signals import speech_like

LIBRI_SPEAKERS = {"dev-clean": [("84", "121123"), ("174", "50561")], "train-clean-100": [("19", "198")]}
VCTK_SPEAKERS = ("p225", "p226", "p360", "s5")  # two train speakers, two held-out test speakers


def _flac_bytes(seconds: float, rate: int, seed: int) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, speech_like(seconds, rate=rate, seed=seed), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def librispeech_members(subset: str, utterances: int = 2, seconds: float = 0.6) -> dict[str, bytes]:
    """Archive member path -> bytes of a LibriSpeech subset: LibriSpeech/<subset>/<spk>/<chap>/..."""
    members = {"LibriSpeech/README.TXT": b"tiny LibriSpeech-layout corpus for tests\n"}
    seed = 0
    for speaker, chapter in LIBRI_SPEAKERS[subset]:
        folder = f"LibriSpeech/{subset}/{speaker}/{chapter}"
        lines = []
        for utt in range(utterances):
            uid = f"{speaker}-{chapter}-{utt:04d}"
            members[f"{folder}/{uid}.flac"] = _flac_bytes(seconds, 16000, seed)
            lines.append(f"{uid} HELLO WORLD")
            seed += 1
        members[f"{folder}/{speaker}-{chapter}.trans.txt"] = ("\n".join(lines) + "\n").encode()
    return members


def vctk092_members(utterances: int = 2, seconds: float = 0.6) -> dict[str, bytes]:
    """Member path -> bytes of a VCTK 0.92 zip (no top folder; 48 kHz flac, mic1 and mic2)."""
    members = {"speaker-info.txt": b"ID  AGE  GENDER  ACCENTS\n"}
    seed = 100
    for speaker in VCTK_SPEAKERS:
        for utt in range(1, utterances + 1):
            for mic in ("mic1", "mic2"):
                members[f"wav48_silence_trimmed/{speaker}/{speaker}_{utt:03d}_{mic}.flac"] = _flac_bytes(seconds, 48000, seed)
                seed += 1
        members[f"txt/{speaker}/{speaker}_001.txt"] = b"Please call Stella.\n"
    return members


def write_tree(root: str, members: dict[str, bytes]) -> list[str]:
    """Write members under ``root``; returns the written paths."""
    paths = []
    for name, data in members.items():
        path = os.path.join(root, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write_wav(path: str, seconds: float, rate: int = 16000, seed: int = 0) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, speech_like(seconds, rate=rate, seed=seed), rate, subtype="PCM_16")
    return path


def write_garbage(path: str, size: int = 2000, seed: int = 0) -> str:
    """A file with an audio extension and random bytes: unreadable."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path
