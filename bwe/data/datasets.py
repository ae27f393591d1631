"""Which audio files make up a training or validation set.

Three kinds of corpus, all ending as a sorted list of file paths:

- ``folder``: every audio file under a directory, recursively (hidden files and folders skipped).
- ``librispeech``: ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
  (the layout of the openslr.org archives); ``root`` may be the folder holding ``LibriSpeech/``
  or ``LibriSpeech/`` itself.
- ``vctk``: VCTK 0.80 (``VCTK-Corpus/wav48/<speaker>/<speaker>_<utt>.wav``) or VCTK 0.92
  (``wav48_silence_trimmed/<speaker>/<speaker>_<utt>_mic1.flac``), found anywhere up to three
  levels under ``root``. The 8 speakers of the usual BWE test split (:data:`VCTK_TEST_SPEAKERS`)
  are held out of ``train`` and form ``test``.

Every listing is screened (:func:`screen_files`): a file whose header cannot be read, or that
is shorter than ``min_seconds``, is skipped and counted instead of failing training later. The
screen reads headers only; a file whose header is fine but whose data is damaged is caught when
it is decoded (see ``bwe.data.pipeline``), and skipped and counted there.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import soundfile

from bwe.data.audio import AudioError, list_audio_files

logger = logging.getLogger(__name__)

KINDS = ("folder", "librispeech", "vctk")

LIBRISPEECH_SUBSETS = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
)

# The held-out speakers of the VCTK split used by the BWE literature (AudioUNet, NU-Wave,
# AERO, AP-BWE): the last 8 speakers of VCTK 0.92.
VCTK_TEST_SPEAKERS = ("p360", "p361", "p362", "p363", "p364", "p374", "p376", "s5")

# Default subsets when a recipe leaves them empty: (train, valid).
DEFAULT_SUBSETS = {
    "librispeech": (["train-clean-100"], ["dev-clean"]),
    "vctk": (["train"], ["test"]),
}

# VCTK audio folders by layout, newest first: (folder name, file name pattern).
_VCTK_LAYOUTS = (
    ("wav48_silence_trimmed", "{speaker}_*_{mic}.flac"),
    ("wav48", "{speaker}_*.wav"),
)
_VCTK_SPEAKER_RE = re.compile(r"^[ps]\d+$")


class DatasetError(ValueError):
    """A corpus folder is missing, has an unexpected layout, or holds no usable audio."""


@dataclass
class FileList:
    """The usable files of a dataset and what was left out.

    Attributes:
        files: paths of the usable audio files, sorted.
        seconds: total duration of ``files``.
        skipped: path -> reason for every file left out (unreadable, too short).
    """

    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{len(self.files)} files, {self.seconds / 3600:.2f} h"
        if self.skipped:
            path, reason = next(iter(self.skipped.items()))
            text += f"; skipped {len(self.skipped)} (e.g. {path}: {reason})"
        return text


def screen_files(paths: Iterable[str], min_seconds: float = 0.0) -> FileList:
    """Keep the files whose header reads and that last at least ``min_seconds``.

    Reads headers only (fast enough for LibriSpeech's 100k files); skipped files are listed
    with the reason and summarised in one warning.
    """
    result = FileList()
    for path in paths:
        try:
            info = soundfile.info(path)
        except (soundfile.LibsndfileError, RuntimeError, TypeError, OSError) as e:
            result.skipped[path] = f"unreadable ({e})"
            continue
        if info.frames <= 0 or info.samplerate <= 0:
            result.skipped[path] = "no audio samples"
            continue
        seconds = info.frames / info.samplerate
        if seconds < min_seconds:
            result.skipped[path] = f"too short ({seconds:.3f} s < min_seconds {min_seconds} s)"
            continue
        result.files.append(path)
        result.seconds += seconds
    result.files.sort()
    if result.skipped:
        logger.warning("skipped %d of %d audio files: %s", len(result.skipped),
                       len(result.skipped) + len(result.files), result.summary())
    return result


def prepare_command(kind: str, root: str | os.PathLike, subsets: Sequence[str] = ()) -> str:
    """The command that fetches a corpus of ``kind`` into ``root``, for messages about missing data.

    ``folder`` gets the real-speech corpus of the bundled models (``debian-corpus``).
    """
    root = shlex.quote(os.fspath(root))
    if kind == "librispeech":
        chosen = f" --subsets {' '.join(subsets)}" if subsets else ""
        return f"python -m bwe.data.prepare librispeech --root {root}{chosen} --download"
    if kind == "vctk":
        return f"python -m bwe.data.prepare vctk --root {root} --download"
    return f"python -m bwe.data.prepare debian-corpus --root {root}"


def _librispeech_subsets_in(data_cfg, key: str) -> list[str]:
    """The LibriSpeech subsets a recipe reads from the folder of ``key``; [] where they are what
    ``prepare`` fetches without ``--subsets`` (the default train and valid subsets)."""
    default_train, default_valid = DEFAULT_SUBSETS["librispeech"]
    valid = list(data_cfg.valid_subsets) or default_valid
    if key == "data.valid_dir":
        needed = valid
    else:  # the valid subsets come from train_dir too unless valid_dir is set
        needed = (list(data_cfg.train_subsets) or default_train) + (valid if data_cfg.valid_dir is None else [])
    needed = list(dict.fromkeys(needed))
    return [] if needed == default_train + default_valid else needed


def missing_data_hint(data_cfg, key: str) -> str:
    """What to run when the folder of a recipe's ``data.train_dir`` or ``data.valid_dir`` (``key``) is missing."""
    path = (data_cfg.train_dir if key == "data.train_dir" else data_cfg.valid_dir) or "DIR"
    if data_cfg.kind == "librispeech":
        return f"run {prepare_command('librispeech', path, _librispeech_subsets_in(data_cfg, key))}"
    if data_cfg.kind == "vctk":
        return f"run {prepare_command('vctk', path)}"
    parent, name = os.path.split(os.path.normpath(path))
    corpus = parent if name in ("train", "valid") and parent else path
    return (f"point it at a folder of speech audio, or build the real-speech corpus of the bundled models with"
            f" {prepare_command('folder', corpus)} and use data.train_dir={os.path.join(corpus, 'train')}"
            f" data.valid_dir={os.path.join(corpus, 'valid')}")


def folder_files(root: str | os.PathLike) -> list[str]:
    """All audio files under ``root`` (recursively), sorted."""
    try:
        return list_audio_files(root)
    except AudioError as e:
        raise DatasetError(str(e)) from None


def _librispeech_dir(root: str) -> str:
    for candidate in (os.path.join(root, "LibriSpeech"), root):
        if any(os.path.isdir(os.path.join(candidate, s)) for s in LIBRISPEECH_SUBSETS):
            return candidate
    raise DatasetError(
        f"{root}: no LibriSpeech subset found (looked for {root}/LibriSpeech/<subset> and {root}/<subset>);"
        f" run: {prepare_command('librispeech', root)}"
    )


def librispeech_files(root: str | os.PathLike, subsets: Sequence[str]) -> list[str]:
    """The ``.flac`` files of the given LibriSpeech subsets under ``root``, sorted."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such directory")
    base = _librispeech_dir(root)
    files: list[str] = []
    for subset in subsets:
        if subset not in LIBRISPEECH_SUBSETS:
            raise DatasetError(f"unknown LibriSpeech subset {subset!r}; known: {', '.join(LIBRISPEECH_SUBSETS)}")
        subset_dir = os.path.join(base, subset)
        if not os.path.isdir(subset_dir):
            raise DatasetError(
                f"{subset_dir}: LibriSpeech subset {subset!r} is missing;"
                f" run: {prepare_command('librispeech', root, [subset])}"
            )
        for speaker in sorted(os.listdir(subset_dir)):
            speaker_dir = os.path.join(subset_dir, speaker)
            if not os.path.isdir(speaker_dir):
                continue
            for chapter in sorted(os.listdir(speaker_dir)):
                chapter_dir = os.path.join(speaker_dir, chapter)
                if not os.path.isdir(chapter_dir):
                    continue
                prefix = f"{speaker}-{chapter}-"
                files.extend(
                    os.path.join(chapter_dir, name)
                    for name in os.listdir(chapter_dir)
                    if name.startswith(prefix) and name.endswith(".flac")
                )
    return sorted(files)


def find_vctk_audio_dir(root: str | os.PathLike) -> tuple[str, str]:
    """Locate VCTK's audio folder under ``root``: returns ``(folder, layout name)``.

    Searches ``root`` and up to three levels below it, so both ``root/VCTK-Corpus/wav48`` and an
    extracted 0.92 zip (``root/VCTK-Corpus-0.92/wav48_silence_trimmed``) are found. When both
    versions are present the 0.92 one wins.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such directory")
    found: dict[str, str] = {}
    level = [root]
    for _depth in range(4):
        next_level = []
        for directory in level:
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                if name.startswith(".") or not os.path.isdir(path):
                    continue
                if name in dict(_VCTK_LAYOUTS):
                    found.setdefault(name, path)
                else:
                    next_level.append(path)
        level = next_level
    for layout, _pattern in _VCTK_LAYOUTS:
        if layout in found:
            return found[layout], layout
    raise DatasetError(
        f"{root}: no VCTK audio folder (wav48_silence_trimmed/ or wav48/) found;"
        f" run: {prepare_command('vctk', root)}"
    )


def vctk_speakers(root: str | os.PathLike) -> list[str]:
    """Speaker IDs (``p225``, ..., ``s5``) present under ``root``, sorted."""
    audio_dir, _ = find_vctk_audio_dir(root)
    return sorted(d for d in os.listdir(audio_dir)
                  if _VCTK_SPEAKER_RE.match(d) and os.path.isdir(os.path.join(audio_dir, d)))


def resolve_vctk_speakers(available: Sequence[str], subsets: Sequence[str]) -> list[str]:
    """Speakers named by ``subsets``: ``train`` (all but the test speakers), ``test``
    (:data:`VCTK_TEST_SPEAKERS` present), or speaker IDs."""
    chosen: set[str] = set()
    for subset in subsets:
        if subset == "train":
            chosen.update(s for s in available if s not in VCTK_TEST_SPEAKERS)
        elif subset == "test":
            chosen.update(s for s in available if s in VCTK_TEST_SPEAKERS)
        elif subset in available:
            chosen.add(subset)
        else:
            raise DatasetError(f"VCTK subset {subset!r} is neither 'train', 'test' nor a speaker present"
                               f" ({len(available)} speakers found)")
    return sorted(chosen)


def vctk_files(root: str | os.PathLike, subsets: Sequence[str] = ("train",), mic: str = "mic1") -> list[str]:
    """VCTK audio files of the speakers named by ``subsets`` (see :func:`resolve_vctk_speakers`).

    ``mic`` picks the microphone of the 0.92 layout (``mic1`` or ``mic2``); 0.80 has one.
    """
    audio_dir, layout = find_vctk_audio_dir(root)
    pattern = dict(_VCTK_LAYOUTS)[layout]
    if mic not in ("mic1", "mic2"):
        raise DatasetError(f"VCTK mic must be 'mic1' or 'mic2', got {mic!r}")
    files: list[str] = []
    for speaker in resolve_vctk_speakers(vctk_speakers(root), subsets):
        wanted = pattern.format(speaker=speaker, mic=mic)
        speaker_dir = os.path.join(audio_dir, speaker)
        files.extend(os.path.join(speaker_dir, n) for n in os.listdir(speaker_dir) if fnmatch.fnmatchcase(n, wanted))
    return sorted(files)


def vctk_speaker_of(path: str) -> str:
    """The speaker ID of a VCTK file name (``p360_001_mic1.flac`` -> ``p360``)."""
    return os.path.basename(path).split("_", 1)[0]


def list_files(kind: str, root: str | os.PathLike, subsets: Sequence[str] = (), mic: str = "mic1") -> list[str]:
    """Unscreened file list of a corpus of ``kind`` (``folder``, ``librispeech``, ``vctk``)."""
    if kind == "folder":
        return folder_files(root)
    if kind == "librispeech":
        return librispeech_files(root, subsets or DEFAULT_SUBSETS["librispeech"][0])
    if kind == "vctk":
        return vctk_files(root, subsets or DEFAULT_SUBSETS["vctk"][0], mic=mic)
    raise DatasetError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")


def dataset_files(data_cfg, split: str = "train") -> FileList:
    """The screened files of a recipe's ``data`` section for ``split`` (``train`` or ``valid``).

    ``train`` reads ``data.train_dir`` with ``data.train_subsets``. ``valid`` reads
    ``data.valid_dir`` (for librispeech/vctk, ``data.train_dir`` when unset) with
    ``data.valid_subsets``; a folder recipe without ``valid_dir`` has no validation files and gets
    an empty list. Raises DatasetError when a split that has a source ends up with no usable file.
    """
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    kind = data_cfg.kind
    if kind not in KINDS:
        raise DatasetError(f"data.kind: unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")
    default_train, default_valid = DEFAULT_SUBSETS.get(kind, ([], []))
    if split == "train":
        root, key = data_cfg.train_dir, "data.train_dir"
        subsets = list(data_cfg.train_subsets) or default_train
    else:
        root, key = data_cfg.valid_dir, "data.valid_dir"
        if root is None:
            if kind == "folder":
                return FileList()
            root, key = data_cfg.train_dir, "data.train_dir"
        subsets = list(data_cfg.valid_subsets) or default_valid
    try:
        paths = list_files(kind, root, subsets, mic=getattr(data_cfg, "vctk_mic", "mic1"))
    except DatasetError as e:
        hint = "" if os.path.isdir(root) else f" — {missing_data_hint(data_cfg, key)}"
        raise DatasetError(f"{key}: {e}{hint}") from None
    listing = screen_files(paths, data_cfg.min_seconds)
    if not listing.files:
        raise DatasetError(f"{key}: {root} has no usable audio file for the {split} split"
                           f" ({len(listing.skipped)} skipped: {listing.summary()})")
    return listing
