"""Audio files in and out, and high-quality resampling.

Reading goes through soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...). Whatever the
file holds, :func:`load_audio` returns mono float32 samples in [-1, 1] of shape [time]:
multi-channel files are downmixed by averaging the channels, because speech recorded on several
microphones is the same signal on each and the mean keeps the level of a single channel (a sum
would clip; picking one channel would depend on which one happened to be first).

Every failure is an :class:`AudioError` whose message starts with the file name: a missing file,
an empty (0-byte) file, something that is not audio, a truncated file, audio without samples,
NaN/Inf samples. Nothing here modifies an input file: :func:`save_audio` writes to a temporary file
in the destination directory and renames it into place (atomic on POSIX), and refuses to write over
any path passed in ``protect`` (compared after resolving symlinks).

Resampling uses soxr at its "VHQ" setting (linear phase, so it adds a constant group delay that
soxr itself compensates: the output is time-aligned with the input).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable

import numpy as np
import soundfile
import soxr

from bwe.files import replacing

PathLike = str | os.PathLike

# Extensions :func:`list_audio_files` picks up; all are formats libsndfile reads.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64")

# soundfile container name for each extension save_audio can write.
_WRITE_FORMATS = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".aif": "AIFF",
    ".aiff": "AIFF",
    ".au": "AU",
    ".caf": "CAF",
    ".w64": "W64",
    ".rf64": "RF64",
    ".mp3": "MP3",  # libsndfile 1.1 or later (LAME); refused with a clear error by an older one
}

# libsndfile notes a data chunk shorter than its header claims as "data : N (should be M)".
_TRUNCATED_RE = re.compile(r"^\s*data\s*:\s*\d+\s*\(should be \d+\)", re.MULTILINE)


class AudioError(ValueError):
    """An audio file cannot be read or written; the message names the file and the reason."""


def as_signal(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as float64 [time]; ValueError naming ``name`` if it is empty, not 1-D, or has NaN/Inf."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D signal [time], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or Inf samples")
    return x


def _check_input_file(path: str) -> None:
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


def _validate_samples(path: str, data: np.ndarray) -> None:
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio samples (zero length)")
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1) if data.ndim == 2 else finite))
        raise AudioError(f"{path}: contains NaN or Inf samples (first at frame {first})")


def _to_mono(data: np.ndarray) -> np.ndarray:
    """[time, channels] -> [time] by the channel mean (see the module docstring for why)."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    if data.shape[1] == 1:
        return data[:, 0].astype(np.float32, copy=True)
    return data.mean(axis=1, dtype=np.float64).astype(np.float32)


def open_audio(path: PathLike) -> soundfile.SoundFile:
    """Open an audio file for block-wise reading, with the same checks and errors as :func:`load_audio`.

    For files too long to load at once (``bwe-enhance`` reads hour-long input in blocks). The caller
    closes the returned ``soundfile.SoundFile`` and must still check the samples it reads for NaN/Inf.
    """
    path = os.fspath(path)
    _check_input_file(path)
    try:
        f = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: not a readable audio file or corrupt ({e})") from e
    if f.format in ("WAV", "WAVEX", "W64", "RF64") and _TRUNCATED_RE.search(f.extra_info):
        f.close()
        raise AudioError(f"{path}: truncated file (the data chunk is shorter than its header says)")
    if f.frames == 0:
        f.close()
        raise AudioError(f"{path}: contains no audio samples (zero length)")
    return f


def load_audio(path: PathLike, target_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32.

    Args:
        path: a file soundfile can read.
        target_rate: if given and different from the file's rate, resample to it with soxr (VHQ).

    Returns:
        ``(samples, rate)``: float32 [time] in [-1, 1] (integer formats) and the rate in Hz
        (``target_rate`` when given).

    Raises:
        AudioError: missing, empty, unreadable, truncated or zero-length file, or NaN/Inf samples.
    """
    path = os.fspath(path)
    with open_audio(path) as f:
        rate = f.samplerate
        try:
            data = f.read(dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
            raise AudioError(f"{path}: audio data is corrupt ({e})") from e
    _validate_samples(path, data)
    x = _to_mono(data)
    if target_rate is not None and target_rate != rate:
        x = resample(x, rate, target_rate)
        rate = int(target_rate)
    return x, rate


def load_raw(
    path: PathLike,
    rate: int,
    subtype: str = "PCM_16",
    channels: int = 1,
    endian: str = "LITTLE",
    target_rate: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read a headerless file (e.g. telephony ``.raw``/``.pcm``, or G.711 with ``subtype="ULAW"``/``"ALAW"``).

    The caller states what the header would have: ``rate``, ``subtype`` (a soundfile subtype),
    ``channels`` and ``endian``. Same checks and return value as :func:`load_audio`.
    """
    path = os.fspath(path)
    _check_input_file(path)
    try:
        data, _ = soundfile.read(
            path,
            samplerate=rate,
            channels=channels,
            subtype=subtype,
            endian=endian,
            format="RAW",
            dtype="float32",
            always_2d=True,
        )
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: cannot read as raw {subtype} x{channels} at {rate} Hz ({e})") from e
    _validate_samples(path, data)
    x = _to_mono(data)
    if target_rate is not None and target_rate != rate:
        return resample(x, rate, target_rate), int(target_rate)
    return x, int(rate)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float32 [time] (or [time, channels]) with soxr VHQ; output length round(n*to/from).

    The output is time-aligned with the input (soxr removes its filter's delay).
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    x = np.asarray(x, dtype=np.float32)
    if from_rate == to_rate:
        return x.copy()
    return soxr.resample(x, from_rate, to_rate, quality="VHQ").astype(np.float32, copy=False)


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # catches hard links
    except OSError:
        return False


def check_output_path(output: PathLike, protect: Iterable[PathLike] = ()) -> str:
    """Return ``output`` as str after checking it may be written.

    Raises AudioError if it resolves (through symlinks and hard links) to one of ``protect``
    (typically the inputs), if its directory does not exist or is not writable, or if it is a directory.
    """
    output = os.fspath(output)
    for p in protect:
        if _same_file(output, os.fspath(p)):
            raise AudioError(f"{output}: refusing to overwrite the input file {os.fspath(p)}")
    if os.path.isdir(output):
        raise AudioError(f"{output}: is a directory")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise AudioError(f"{output}: output directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise AudioError(f"{output}: output directory {directory} is not writable")
    return output


def output_format(path: str, subtype: str | None = "PCM_16") -> tuple[str, str | None]:
    """``(container, subtype)`` for writing ``path``: the container from the extension.

    The default "PCM_16" becomes None (the container's default, e.g. Vorbis for OGG, MPEG layer III
    for MP3) where the container has no 16-bit PCM; any other subtype the container cannot hold is an AudioError.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in _WRITE_FORMATS:
        raise AudioError(f"{path}: unknown audio extension {ext!r}; use one of {sorted(_WRITE_FORMATS)}")
    fmt = _WRITE_FORMATS[ext]
    if fmt not in soundfile.available_formats():
        raise AudioError(f"{path}: this libsndfile ({soundfile.__libsndfile_version__}) cannot write {fmt}")
    if subtype == "PCM_16" and not soundfile.check_format(fmt, subtype):
        return fmt, None
    if subtype is not None and not soundfile.check_format(fmt, subtype):
        raise AudioError(f"{path}: subtype {subtype!r} cannot be stored in {fmt}")
    return fmt, subtype


def save_audio(
    path: PathLike,
    x: np.ndarray,
    rate: int,
    subtype: str | None = "PCM_16",
    protect: Iterable[PathLike] = (),
) -> str:
    """Write ``x`` (float [time] or [time, channels], nominally in [-1, 1]) atomically.

    The container comes from the extension (.wav, .flac, .ogg, ...). Integer subtypes clip samples
    outside [-1, 1) (libsndfile's behaviour); a warning says how many were clipped. ``subtype=None``
    lets soundfile pick the container's default; so does the default "PCM_16" for a container
    that has no 16-bit PCM (OGG gets Vorbis).

    Raises:
        AudioError: NaN/Inf or empty ``x``, unknown extension, output equal to a ``protect`` path,
            missing or unwritable output directory, or a write failure. On any failure an existing
            file at ``path`` is left as it was.
    """
    path = check_output_path(path, protect)
    fmt, subtype = output_format(path, subtype)
    x = np.asarray(x)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise AudioError(f"{path}: expected non-empty samples of shape [time] or [time, channels], got {x.shape}")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: refusing to write NaN or Inf samples")
    if subtype is not None and subtype.startswith("PCM"):
        n_clipped = int(np.count_nonzero(np.abs(x) > 1.0))
        if n_clipped:
            warnings.warn(f"{path}: {n_clipped} samples outside [-1, 1] were clipped", stacklevel=2)
    try:
        with replacing(path) as tmp:
            soundfile.write(tmp, x, int(rate), subtype=subtype, format=fmt)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
        raise AudioError(f"{path}: cannot write audio ({e})") from e
    return path


def spread_indices(n_items: int, n: int) -> list[int]:
    """Indices of up to ``n`` of ``n_items`` items, spread evenly (first and last included), sorted.

    Sorted file lists run speaker by speaker and source by source, so taking these instead of the
    first ``n`` files samples all of them.
    """
    if n <= 0 or n_items <= 0:
        return []
    return np.unique(np.linspace(0, n_items - 1, min(n, n_items)).round().astype(int)).tolist()


def list_audio_files(root: PathLike) -> list[str]:
    """All audio files (by :data:`AUDIO_EXTENSIONS`, case-insensitive) under ``root``, recursively, sorted.

    Hidden files and directories (names starting with '.') are skipped, which also skips the
    temporary files of interrupted :func:`save_audio` calls. A file ``root`` is returned as ``[root]``.
    """
    root = os.fspath(root)
    if os.path.isfile(root):
        return [root]
    if not os.path.isdir(root):
        raise AudioError(f"{root}: no such directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                found.append(os.path.join(dirpath, name))
    return sorted(found)


# Bandwidth check (used to keep band-limited recordings out of the training targets).
BANDWIDTH_BAND_HZ = 250.0
BANDWIDTH_REFERENCE_HZ = (1000.0, 4000.0)
BANDWIDTH_MIN_SAMPLES = 1024  # one Welch window


def effective_bandwidth_hz(x: np.ndarray, rate: int, drop_db: float = 30.0) -> float:
    """The highest frequency up to which a recording has real content, in Hz (0 for silence).

    The long-term power spectrum (Welch, 1024-point Hann windows) is averaged over 250 Hz bands;
    the result is the upper edge of the highest band whose level is within ``drop_db`` of the
    1-4 kHz average, where speech always has energy. A file stored at 16 kHz but made from 14 kHz
    audio, or through a 7 kHz codec, measures about 7000; true wideband speech 7750-8000. A
    30 dB margin is far below any speech spectrum's natural tilt up to 8 kHz (about 10-15 dB
    under the 1-4 kHz level in the project's corpus) and far above a resampler's stop band.
    """
    import scipy.signal

    x = as_signal(x, "x")
    if rate < 2 * BANDWIDTH_REFERENCE_HZ[1]:
        raise ValueError(f"rate must be at least {2 * BANDWIDTH_REFERENCE_HZ[1]:.0f} Hz, got {rate}")
    if x.shape[0] < BANDWIDTH_MIN_SAMPLES:
        raise ValueError(f"x: {x.shape[0]} samples are too few to measure a bandwidth (need {BANDWIDTH_MIN_SAMPLES})")
    freqs, power = scipy.signal.welch(x, rate, nperseg=BANDWIDTH_MIN_SAMPLES)
    low, high = BANDWIDTH_REFERENCE_HZ
    reference = power[(freqs >= low) & (freqs < high)].mean()
    if not reference > 0:
        return 0.0
    edges = np.arange(0.0, rate / 2.0, BANDWIDTH_BAND_HZ)
    levels = np.array([power[(freqs >= a) & (freqs < a + BANDWIDTH_BAND_HZ)].mean() for a in edges])
    within = np.nonzero(levels > reference * 10.0 ** (-drop_db / 10.0))[0]
    return float(edges[within[-1]] + BANDWIDTH_BAND_HZ) if within.size else 0.0
