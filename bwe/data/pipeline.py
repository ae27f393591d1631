"""The tf.data input pipeline: (narrowband 8 kHz, wideband 16 kHz) pairs made on the fly.

:func:`make_dataset` turns a file list into batches ``(narrowband [B, T8, 1], wideband [B, 2*T8, 1])``
(float32, T8 = ``data.segment_samples / 2``):

1. **Audio.** Each file is decoded with soundfile, downmixed, resampled to 16 kHz (soxr) and
   levelled once to ``data.loudness_lufs`` (ITU-R BS.1770 integrated loudness via pyloudnorm, whose
   gating ignores pauses, so a file with long silences is not over-amplified as it would be by an
   RMS rule; the gain is lowered where it would push the peak over -0.1 dBFS). With
   ``data.cache`` (the default) this happens once for every file, up front, and the levelled audio
   stays in memory as 16-bit samples (115 MB per hour: 7 h take 0.8 GB, LibriSpeech
   train-clean-100 11.5 GB; 16 bits is what the corpora are stored in). A cache that would take
   more than half of the machine's memory is refused with a warning and the pipeline runs
   uncached: files are then decoded again on every use and only their gains are remembered.
2. **Segments.** An epoch visits every file ``max(1, samples // segment_samples)`` times, so
   long files are sampled in proportion to their length, in a random order. Each visit cuts a
   random segment; a file shorter than a segment is placed at a random offset in a zero-padded
   segment (padded, not skipped, so short clips still train; ``data.min_seconds`` drops the
   shortest).
3. **Degradation.** :func:`bwe.data.degrade.make_training_pair` draws a new narrowband channel
   per example (random low-pass, 8 kHz, random gain applied to the target too, companding). It
   runs on the segment plus :data:`CONTEXT` samples of real audio on each side, cut off afterwards,
   so the filters' edge transients stay outside the example. With ``data.speed_range`` a training
   segment is first played faster by a random factor (soxr): higher pitch and formants, a speaker
   the corpus does not have (speed perturbation), its band still reaching 8 kHz. With
   ``data.codec_probability`` an example is instead cut from its file's round trip through a real codec
   (:mod:`bwe.data.coded`), and with ``data.noise_probability`` its narrowband side gets light
   background noise (:func:`bwe.data.degrade.add_background_noise`); both draw from a random stream
   of their own, ``default_rng([seed, 3, i])``, so a recipe without them makes the same examples.

**Determinism.** Example ``i`` of the stream (counted from 0 across epochs) is a pure function
of ``(seed, i)``: the epoch's order comes from ``default_rng([seed, 0, epoch])`` and the segment
position and channel from ``default_rng([seed, 1, i])``. So the same seed gives identical batches
however many parallel workers run (the map is order-preserving), and ``start_index`` resumes the
stream exactly where a run stopped, without replaying it.

**Bad files** (undecodable, silent) are skipped and counted, never fatal: at load time with the
cache, when first used without it. So are band-limited files when ``data.min_bandwidth_hz`` is set
(:func:`bwe.data.audio.effective_bandwidth_hz`, judged once per file). Only a file list where every
file fails is an error.

TensorFlow is imported here (tf.data); the file I/O and DSP run in NumPy inside
``tf.numpy_function``, since tensorflow-io does not load with current TensorFlow.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile
import soxr

from bwe.config import OUTPUT_RATE
from bwe.data.audio import BANDWIDTH_MIN_SAMPLES, AudioError, effective_bandwidth_hz, load_audio, spread_indices
from bwe.data.coded import CodedAudio, padded_slice
from bwe.data.degrade import add_background_noise, evaluation_degradation, make_training_pair

logger = logging.getLogger(__name__)

# Skip reasons of files left out by data.min_bandwidth_hz start with this; the load summary counts them apart.
BAND_LIMITED = "band-limited"

# Real audio degraded on each side of a segment and then discarded, in 16 kHz samples: longer than
# the longest FIR of the degradation (191 taps) and the decay of its IIR filters' edge transients.
# Even, so that the cut falls on a whole 8 kHz sample.
CONTEXT = 512
# BS.1770 measures loudness over 400 ms blocks; shorter files get their RMS level instead.
_LOUDNESS_BLOCK_S = 0.4
_PEAK_LIMIT = 10.0 ** (-0.1 / 20.0)


class DataPipelineError(RuntimeError):
    """No file of a dataset can be used."""


class _ExitGuard:
    """Keeps tf.data's worker threads out of Python while the interpreter shuts down.

    A prefetching iterator still alive at exit (a script's global, say) keeps calling the
    ``tf.numpy_function`` from TensorFlow's threads. Once Python 3.11+ starts finalizing, a thread
    that asks for the GIL is ended with ``pthread_exit``, which inside TensorFlow's C++ frames is a
    ``std::terminate``: the process aborts (exit status 134) after all its work is done, at random.
    At exit this guard makes every further call end the stream at once (StopIteration, which
    TensorFlow turns into a quiet OutOfRange) and waits until no call is running.
    """

    def __init__(self):
        self.exiting = False
        self.running = 0
        self.last_call = 0.0
        self.lock = threading.Lock()
        self.registered = False

    def register(self) -> None:
        if not self.registered:
            self.registered = True
            atexit.register(self.drain)

    def drain(self, quiet_s: float = 0.1, timeout_s: float = 5.0) -> None:
        self.exiting = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.running == 0 and time.monotonic() - self.last_call > quiet_s:
                    return
            time.sleep(0.01)

    def call(self, function, *args):
        with self.lock:
            if self.exiting:
                self.last_call = time.monotonic()
                raise StopIteration("the interpreter is exiting; the data pipeline is stopped")
            self.running += 1
        try:
            return function(*args)
        finally:
            with self.lock:
                self.running -= 1
                self.last_call = time.monotonic()


_EXIT_GUARD = _ExitGuard()


def loudness_gain_db(x: np.ndarray, target_lufs: float, rate: int = OUTPUT_RATE) -> float | None:
    """Gain in dB that brings ``x`` (float [time]) to ``target_lufs``, limited to a -0.1 dBFS peak.

    Integrated loudness (BS.1770, gated) for clips of at least 400 ms; shorter clips use their RMS
    level in dBFS, within a few dB of LUFS for speech. Returns None for a silent clip (no block above
    BS.1770's -70 LUFS absolute gate), which has no loudness to match.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] >= int(_LOUDNESS_BLOCK_S * rate) + 1:
        import pyloudnorm

        loudness = pyloudnorm.Meter(rate).integrated_loudness(x)
    else:
        rms = float(np.sqrt(np.mean(x**2)))
        loudness = 20.0 * np.log10(rms) if rms > 0 else -np.inf
    if not np.isfinite(loudness) or loudness < -70.0:
        return None
    gain_db = target_lufs - float(loudness)
    peak = float(np.max(np.abs(x)))
    return min(gain_db, 20.0 * np.log10(_PEAK_LIMIT / peak))


def _memory_budget_bytes() -> int:
    """Half the physical memory: the most the audio cache may take."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def _file_samples_16k(path: str) -> int:
    """Length of ``path`` once resampled to 16 kHz, from its header (soxr's output length)."""
    info = soundfile.info(path)
    return int(round(info.frames * OUTPUT_RATE / info.samplerate))


class LevelledAudio:
    """The files of a dataset as levelled 16 kHz float32 [time] arrays, cached in memory or not.

    Files that cannot be used are recorded in :attr:`skipped` (path -> reason); :meth:`get`
    returns None for them.
    """

    def __init__(self, files: Sequence[str], loudness_lufs: float, cache: bool = True, workers: int | None = None,
                 min_bandwidth_hz: float = 0.0):
        self.files = [os.fspath(f) for f in files]
        if not self.files:
            raise DataPipelineError("the file list is empty")
        self.loudness_lufs = float(loudness_lufs)
        self.min_bandwidth_hz = float(min_bandwidth_hz)
        self.cache = cache
        self.skipped: dict[str, str] = {}
        self._gains: dict[int, float] = {}
        self._audio: list[np.ndarray | None] = []
        self._lock = threading.Lock()
        self._ready = False
        self.lengths = np.zeros(len(self.files), dtype=np.int64)
        for i, path in enumerate(self.files):
            try:
                self.lengths[i] = _file_samples_16k(path)
            except (soundfile.LibsndfileError, RuntimeError, TypeError, OSError) as e:
                self._skip(i, f"unreadable ({e})")
        if cache:
            needed, budget = 2 * int(self.lengths.sum()), _memory_budget_bytes()
            if needed > budget:
                logger.warning("data.cache: the audio would take %.1f GB, more than half of this machine's memory"
                               " (%.1f GB); running uncached (slower: files are decoded on every use)",
                               needed / 1e9, budget / 1e9)
                self.cache = False
        if self.cache:
            self._load_all(workers or min(8, os.cpu_count() or 1))
            self.lengths = np.array([0 if a is None else a.shape[0] for a in self._audio], dtype=np.int64)
        if len(self.skipped) == len(self.files):
            first = next(iter(self.skipped.items()))
            raise DataPipelineError(f"none of the {len(self.files)} files can be used (e.g. {first[0]}: {first[1]})")
        if self.skipped:
            kinds = Counter(BAND_LIMITED if reason.startswith(BAND_LIMITED) else "unusable"
                            for reason in self.skipped.values())
            logger.warning("skipped %d of %d files (%s; e.g. %s: %s)", len(self.skipped), len(self.files),
                           ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()),
                           *next(iter(self.skipped.items())))
        self._ready = True

    def __len__(self) -> int:
        return len(self.files)

    @property
    def usable(self) -> np.ndarray:
        """Indices of the files not skipped (so far)."""
        return np.array([i for i, f in enumerate(self.files) if f not in self.skipped and self.lengths[i] > 0],
                        dtype=np.int64)

    def _skip(self, index: int, reason: str) -> None:
        with self._lock:
            if self.files[index] not in self.skipped:
                self.skipped[self.files[index]] = reason
                if self._ready:  # during loading one summary is logged instead
                    logger.warning("skipping %s: %s (%d skipped so far)", self.files[index], reason, len(self.skipped))

    def _decode(self, index: int) -> np.ndarray | None:
        path = self.files[index]
        try:
            x, _ = load_audio(path, OUTPUT_RATE)
        except AudioError as e:
            self._skip(index, str(e))
            return None
        gain_db = self._gains.get(index)
        if gain_db is None:  # first decode of this file: judge it once
            gain_db = loudness_gain_db(x, self.loudness_lufs)
            if gain_db is None:
                self._skip(index, "silent (nothing above the -70 LUFS gate)")
                return None
            if self.min_bandwidth_hz > 0 and x.shape[0] >= BANDWIDTH_MIN_SAMPLES:
                bandwidth = effective_bandwidth_hz(x, OUTPUT_RATE)
                if bandwidth < self.min_bandwidth_hz:
                    self._skip(index, f"{BAND_LIMITED}: content reaches {bandwidth:.0f} Hz, "
                                      f"below data.min_bandwidth_hz {self.min_bandwidth_hz:.0f}")
                    return None
            self._gains[index] = gain_db
        return (x * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32, copy=False)

    def _decode_int16(self, index: int) -> np.ndarray | None:
        if self.files[index] in self.skipped:
            return None
        x = self._decode(index)
        return None if x is None else _to_int16(x)

    def _load_all(self, workers: int) -> None:
        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=workers) as pool:
            self._audio = list(tqdm(pool.map(self._decode_int16, range(len(self.files))), total=len(self.files),
                                    desc="decoding audio", unit="file", disable=None, leave=False))

    def get(self, index: int) -> np.ndarray | None:
        """Levelled float32 [time] at 16 kHz, or None for a skipped file."""
        if self.files[index] in self.skipped:
            return None
        if self.cache:
            return self._audio[index].astype(np.float32) * np.float32(1.0 / 32767.0)
        return self._decode(index)


class ExampleMaker:
    """Makes example ``i`` of a seeded stream of (narrowband, wideband) segments; see the module docstring."""

    def __init__(self, audio: LevelledAudio, data_cfg, seed: int, training: bool, coded: CodedAudio | None = None):
        self.audio = audio
        self.coded = coded if training else None
        self.codec_probability = float(data_cfg.codec_probability) if self.coded else 0.0
        self.noise_probability = float(data_cfg.noise_probability) if training else 0.0
        self.noise_snr_db_range = tuple(float(v) for v in data_cfg.noise_snr_db_range)
        self.segment = int(data_cfg.segment_samples)
        if self.segment <= 0 or self.segment % 2:
            raise ValueError(f"data.segment_samples must be a positive even number, got {self.segment}")
        self.seed = int(seed)
        self.training = training
        self.speed_range = tuple(float(v) for v in data_cfg.speed_range)
        self.degrade_kwargs = dict(
            cutoff_range=tuple(data_cfg.cutoff_hz_range),
            gain_db_range=tuple(data_cfg.gain_db_range),
            companding_probability=float(data_cfg.companding_probability),
            highpass_probability=float(data_cfg.highpass_probability),
            highpass_hz_range=tuple(data_cfg.highpass_hz_range),
        )
        usable = audio.usable
        visits = np.maximum(1, audio.lengths[usable] // self.segment)
        # Training: file index per visit; evaluation: (file, start) of consecutive segments.
        self.entries = np.repeat(usable, visits)
        self.starts = np.concatenate([np.arange(v) * self.segment for v in visits]) if len(visits) else np.zeros(0)

    def __len__(self) -> int:
        """Examples per epoch."""
        return int(self.entries.shape[0])

    @functools.lru_cache(maxsize=4)  # noqa: B019 -- datasets live as long as the run; 4 epochs' orders
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, epoch]).permutation(self.entries)

    def _window(self, x: np.ndarray, start: int, speed: float = 1.0) -> np.ndarray:
        """x[start - CONTEXT : start + segment + CONTEXT], zero outside the file; with ``speed`` > 1, that
        many times as many samples from ``start - CONTEXT`` on, played faster (soxr) to the same length."""
        length = self.segment + 2 * CONTEXT
        out = padded_slice(x, start - CONTEXT, length if speed == 1.0 else int(np.ceil(length * speed)) + 16)
        if speed == 1.0:
            return out
        faster = soxr.resample(out, OUTPUT_RATE * speed, OUTPUT_RATE, quality="HQ")
        return np.pad(faster, (0, max(0, length - faster.shape[0])))[:length].astype(np.float32)

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(narrowband float32 [segment/2], wideband float32 [segment], ok)``; ok False for a bad file."""
        index = int(index)
        rng = np.random.default_rng([self.seed, 1, index])
        if self.training:
            epoch, position = divmod(index, len(self))
            file_index = int(self._epoch_order(epoch)[position])
            x = self.audio.get(file_index)
            if x is not None:
                # Files shorter than a segment get a negative start: a random zero-padded placement.
                slack = x.shape[0] - self.segment
                start = int(rng.integers(min(0, slack), max(0, slack) + 1))
        else:
            file_index, start = int(self.entries[index]), int(self.starts[index])
            x = self.audio.get(file_index)
        if x is None:
            if len(self.audio.skipped) == len(self.audio):
                raise DataPipelineError(f"every one of the {len(self.audio)} files failed to load, e.g. "
                                        "{}: {}".format(*next(iter(self.audio.skipped.items()))))
            return (np.zeros(self.segment // 2, np.float32), np.zeros(self.segment, np.float32), False)
        # Codecs and noise draw from a stream of their own: without them a recipe's examples stay as they were.
        extra = np.random.default_rng([self.seed, 3, index])
        if extra.uniform() < self.codec_probability:
            nb, wb = self.coded.pair(int(extra.integers(len(self.coded.codecs))), file_index, x, start, self.segment)
        else:
            low, high = self.speed_range
            speed = float(rng.uniform(low, high)) if self.training and high > 1.0 else 1.0
            nb, wb, _ = make_training_pair(self._window(x, start, speed), rng, **self.degrade_kwargs)
            half = CONTEXT // 2
            nb, wb = nb[half : half + self.segment // 2], wb[CONTEXT : CONTEXT + self.segment]
        if extra.uniform() < self.noise_probability:
            nb, _ = add_background_noise(nb, extra, self.noise_snr_db_range)
        return nb.astype(np.float32), wb.astype(np.float32), True


def make_dataset(
    files: Sequence[str],
    data_cfg,
    batch_size: int,
    seed: int,
    training: bool = True,
    *,
    start_index: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    audio: LevelledAudio | None = None,
):
    """A tf.data.Dataset of ``(narrowband [B, T8, 1], wideband [B, 2*T8, 1])`` float32 batches.

    Args:
        files: audio files (any rate; resampled to 16 kHz), e.g. ``bwe.data.datasets.dataset_files(...).files``.
        data_cfg: the recipe's ``data`` section (bwe.config.DataConfig).
        batch_size: examples per batch (global batch; see ``num_shards``).
        seed: the stream's seed; equal seeds give identical batches.
        training: True: an endless stream of random segments, reshuffled every epoch, full batches.
            False: one pass over consecutive segments of every file in list order (still with a
            seeded random channel), the last batch may be short.
        start_index: first example of the stream (resume with ``step * batch_size``).
        shard_index, num_shards: for several workers: this worker takes examples
            ``start_index + shard_index + k * num_shards``; tf.data auto-sharding is then switched off.
        audio: an already loaded :class:`LevelledAudio` of ``files`` (to share one cache).

    The DSP runs in ``tf.numpy_function`` with ``data.num_parallel_calls`` workers (0 = AUTOTUNE),
    order-preserving; batches are prefetched.
    """
    import tensorflow as tf

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} must be in [0, num_shards={num_shards})")
    _EXIT_GUARD.register()
    if audio is None:
        audio = LevelledAudio(files, data_cfg.loudness_lufs, cache=data_cfg.cache,
                              min_bandwidth_hz=data_cfg.min_bandwidth_hz)
    coded = None
    if training and data_cfg.codec_probability > 0:
        needed = int(audio.lengths[audio.usable].sum()) * len(data_cfg.codecs)  # int16 at half the rate
        if needed > _memory_budget_bytes():
            raise DataPipelineError(f"data.codecs: the coded audio would take {needed / 1e9:.1f} GB, more than half "
                                    "of this machine's memory; use fewer codecs or a smaller training set")
        coded = CodedAudio(audio, data_cfg, seed)
    maker = ExampleMaker(audio, data_cfg, seed, training, coded)
    t16 = maker.segment
    usable_hours = float(audio.lengths[audio.usable].sum()) / OUTPUT_RATE / 3600.0
    logger.info("dataset: %d files, %d skipped, %.2f h usable, %d examples per epoch",
                len(audio), len(audio.skipped), usable_hours, len(maker))

    if training:
        indices = tf.data.Dataset.range(start_index + shard_index, np.iinfo(np.int64).max, num_shards)
    else:
        indices = tf.data.Dataset.range(start_index + shard_index, len(maker), num_shards)

    def make(index):
        nb, wb, ok = tf.numpy_function(functools.partial(_EXIT_GUARD.call, maker.example), [index],
                                       (tf.float32, tf.float32, tf.bool), stateful=False)
        return tf.ensure_shape(nb, [t16 // 2]), tf.ensure_shape(wb, [t16]), tf.ensure_shape(ok, [])

    parallel = data_cfg.num_parallel_calls or tf.data.AUTOTUNE
    ds = indices.map(make, num_parallel_calls=parallel, deterministic=True)
    ds = ds.filter(lambda nb, wb, ok: ok)
    ds = ds.map(lambda nb, wb, ok: (nb[:, None], wb[:, None]))
    ds = ds.batch(batch_size, drop_remainder=training)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if num_shards > 1 else tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options)


def validation_set(
    files: Sequence[str],
    data_cfg,
    max_files: int = 32,
    max_seconds: float = 10.0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed validation pairs ``(narrowband float32 [n/2] @ 8 kHz, wideband float32 [n] @ 16 kHz)``.

    Up to ``max_files`` files spread evenly over ``files`` (sorted lists are ordered by speaker, so
    this spreads over speakers), each levelled like the training audio, cut to its first
    ``max_seconds`` and to a multiple of 256 samples (whole 16 ms output frames), degraded with the
    fixed :func:`bwe.data.degrade.evaluation_degradation`. Unusable files are skipped with a warning.
    """
    if max_files <= 0 or max_seconds <= 0:
        raise ValueError(f"max_files and max_seconds must be positive, got {max_files}, {max_seconds}")
    files = list(files)
    if len(files) > max_files:
        files = [files[i] for i in spread_indices(len(files), max_files)]
    pairs = []
    skipped = {}
    limit = int(max_seconds * OUTPUT_RATE)
    for path in files:
        try:
            x, _ = load_audio(path, OUTPUT_RATE)
        except AudioError as e:
            skipped[path] = str(e)
            continue
        gain_db = loudness_gain_db(x, data_cfg.loudness_lufs)
        n = min(x.shape[0], limit) // 256 * 256
        if gain_db is None or n == 0:
            skipped[path] = "silent" if gain_db is None else "shorter than 256 samples"
            continue
        wb = (x[:n] * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)
        pairs.append((evaluation_degradation(wb), wb))
    if skipped:
        logger.warning("validation: skipped %d of %d files (e.g. %s: %s)", len(skipped), len(files),
                       *next(iter(skipped.items())))
    return pairs
