"""Training files through real codecs (``data.codecs``), made once when a run starts.

A codec round trip by ffmpeg costs tens of milliseconds to start, far too slow to run for every 0.5 s
example; run over a whole corpus at once it costs seconds. So each usable file goes through a random
channel of its own (:func:`bwe.data.degrade.simulate_narrowband`, the recipe's ranges, no companding:
the codec is the quantiser), the files are joined into streams of about half an hour with silence
between them, each stream makes one round trip through each codec (its delay removed), and the
results are cut back into files and kept in memory as 16-bit samples at 8 kHz (58 MB per hour and
codec). :meth:`CodedAudio.pair` then cuts a training example from a file's coded version and its
wideband original, scaled by the channel's gain.

A file's channel is drawn from ``(seed, file, codec)``: the same every run, one per file and codec.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bwe.config import INPUT_RATE
from bwe.data.codecs import MAX_DELAY, aligned_round_trip
from bwe.data.degrade import simulate_narrowband

logger = logging.getLogger(__name__)

STREAM_SECONDS = 1800.0  # files joined per ffmpeg run: long enough to amortise its start, short enough for memory
GAP = 4 * MAX_DELAY  # silence between joined files (8 kHz samples), so no codec carries one file into the next


def padded_slice(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """float32 x[start : start + length], zero where that runs outside ``x``."""
    out = np.zeros(length, dtype=np.float32)
    a, b = max(start, 0), min(start + length, x.shape[0])
    if b > a:
        out[a - start : b - start] = x[a:b]
    return out


class CodedAudio:
    """Every usable file of a :class:`bwe.data.pipeline.LevelledAudio` through a random channel and each codec."""

    def __init__(self, audio, data_cfg, seed: int, workers: int = 2):
        self.audio = audio
        self.codecs = list(data_cfg.codecs)
        self.channel_kwargs = dict(cutoff_range=tuple(data_cfg.cutoff_hz_range),
                                   gain_db_range=tuple(data_cfg.gain_db_range), companding_probability=0.0,
                                   highpass_probability=float(data_cfg.highpass_probability),
                                   highpass_hz_range=tuple(data_cfg.highpass_hz_range))
        self.seed = int(seed)
        files = [int(i) for i in audio.usable]
        # coded[codec][file] = (int16 narrowband at 8 kHz, the channel's gain for the wideband side)
        self.coded: list[dict[int, tuple[np.ndarray, float]]] = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for c, codec in enumerate(self.codecs):
                channels = list(pool.map(lambda i, c=c: self._channel(i, c), files))
                self.coded.append(self._through_codec(codec, files, channels))
                logger.info("data.codecs: %d files through %s", len(files), codec)

    def _channel(self, file_index: int, codec_index: int) -> tuple[np.ndarray, float]:
        rng = np.random.default_rng([self.seed, 2, file_index, codec_index])
        narrowband, params = simulate_narrowband(self.audio.get(file_index), rng, **self.channel_kwargs)
        return narrowband, params["gain"]

    @staticmethod
    def _through_codec(codec: str, files: list[int], channels: list[tuple[np.ndarray, float]]
                       ) -> dict[int, tuple[np.ndarray, float]]:
        coded, batch, batch_samples = {}, [], 0
        for k, (file_index, channel) in enumerate(zip(files, channels)):
            batch.append((file_index, channel))
            batch_samples += channel[0].shape[0] + GAP
            if batch_samples >= STREAM_SECONDS * INPUT_RATE or k == len(files) - 1:
                gap = np.zeros(GAP, np.float32)
                stream = aligned_round_trip(np.concatenate([part for _, (nb, _) in batch for part in (nb, gap)]), codec)
                offset = 0
                for index, (narrowband, gain) in batch:
                    piece = stream[offset : offset + narrowband.shape[0]]
                    coded[index] = (np.clip(np.round(piece * 32767.0), -32768, 32767).astype(np.int16), gain)
                    offset += narrowband.shape[0] + GAP
                batch, batch_samples = [], 0
        return coded

    def pair(self, codec_index: int, file_index: int, wideband: np.ndarray, start: int, segment: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """``(narrowband float32 [segment / 2], wideband float32 [segment])`` from sample ``start`` (rounded
        down to even) of file ``file_index`` (whose levelled audio is ``wideband``) through codec ``codec_index``."""
        narrowband, gain = self.coded[codec_index][file_index]
        start -= start % 2
        nb = padded_slice(narrowband, start // 2, segment // 2) * np.float32(1.0 / 32767.0)
        wb = padded_slice(wideband, start, segment) * np.float32(gain)
        return nb, wb
