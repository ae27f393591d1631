"""bwe.data.pipeline: shapes, determinism, real segments, alignment, loudness, bad files, resume, validation."""

import os

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import soundfile
import soxr
import tensorflow as tf

from bwe.config import recipe_from_dict
from bwe.data.degrade import evaluation_degradation
from bwe.data.pipeline import (
    CONTEXT,
    DataPipelineError,
    LevelledAudio,
    loudness_gain_db,
    make_dataset,
    validation_set,
)
from signals import speech_like
from tiny_corpora import write_garbage

tf.config.experimental.enable_op_determinism()

SEGMENT = 2048


def cfg(**values):
    base = {"train_dir": "unused", "segment_samples": SEGMENT, "min_seconds": 0.0}
    return recipe_from_dict({"data": {**base, **values}}).data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four speech-like files of different lengths and levels, one at 48 kHz."""
    root = tmp_path_factory.mktemp("corpus")
    specs = [(1.0, 16000, 0.5), (0.7, 16000, 0.05), (1.3, 48000, 0.3), (0.45, 16000, 0.2)]
    files = []
    for i, (seconds, rate, peak) in enumerate(specs):
        path = str(root / f"f{i}.wav")
        soundfile.write(path, speech_like(seconds, rate=rate, seed=10 + i, peak=peak), rate, subtype="FLOAT")
        files.append(path)
    return files


def batches(ds, n):
    return [(nb.numpy(), wb.numpy()) for nb, wb in ds.take(n)]


def find_segment(sources, wb):
    """(file index, start) where ``wb`` occurs in one of ``sources`` (zero-padding allowed), else None."""
    nonzero = np.flatnonzero(wb)
    j = int(nonzero[0])
    for f, x in enumerate(sources):
        for k in np.flatnonzero(x == wb[j]):
            start = int(k) - j
            lo, hi = max(start, 0), min(start + wb.shape[0], x.shape[0])
            expected = np.zeros_like(wb)
            expected[lo - start : hi - start] = x[lo:hi]
            if np.array_equal(expected, wb):
                return f, start
    return None


def test_batches_have_the_contract_shapes(corpus):
    nb, wb = batches(make_dataset(corpus, cfg(), batch_size=3, seed=0), 1)[0]
    assert nb.shape == (3, SEGMENT // 2, 1) and wb.shape == (3, SEGMENT, 1)
    assert nb.dtype == wb.dtype == np.float32
    assert np.isfinite(nb).all() and np.isfinite(wb).all()
    assert np.abs(wb).max() < 1.0 and np.abs(nb).max() <= 1.0


def test_same_seed_same_batches_regardless_of_parallelism(corpus):
    audio = LevelledAudio(corpus, -26.0)
    serial = batches(make_dataset(corpus, cfg(num_parallel_calls=1), 4, seed=7, audio=audio), 4)
    parallel = batches(make_dataset(corpus, cfg(num_parallel_calls=3), 4, seed=7), 4)
    other = batches(make_dataset(corpus, cfg(), 4, seed=8, audio=audio), 4)
    for (nb1, wb1), (nb2, wb2) in zip(serial, parallel):
        np.testing.assert_array_equal(nb1, nb2)
        np.testing.assert_array_equal(wb1, wb2)
    assert not np.array_equal(serial[0][1], other[0][1])


def test_wideband_is_a_real_segment_scaled_by_the_drawn_gain(corpus):
    audio = LevelledAudio(corpus, -26.0)
    gain = 10.0 ** (-6.0 / 20.0)
    ds = make_dataset(corpus, cfg(gain_db_range=[-6.0, -6.0], companding_probability=0.0), 4, seed=1, audio=audio)
    # The same float64 product make_training_pair computes, so that the match is exact.
    sources = [(audio.get(i).astype(np.float64) * gain).astype(np.float32) for i in range(len(corpus))]
    found = set()
    for _, wb in batches(ds, 3):
        for example in wb[..., 0]:
            hit = find_segment(sources, example)
            assert hit is not None, "a wideband example is not a segment of any source file"
            found.add(hit[0])
    assert found == {0, 1, 2, 3}  # 12 examples over 4 files in shuffled epochs reach every file


def test_narrowband_is_the_aligned_low_band_of_the_wideband(corpus):
    ds = make_dataset(corpus, cfg(companding_probability=0.0, gain_db_range=[0.0, 0.0]), 4, seed=2)
    nb, wb = batches(ds, 1)[0]
    # Below 3 kHz every drawn channel (cutoff >= 3.4 kHz) passes the signal, up to its pass-band
    # ripple; one 8 kHz sample of misalignment costs more correlation than the worst ripple (over 240
    # examples from 60 seeds: aligned >= 0.975, shifted by one sample <= 0.946).
    below_3k = scipy.signal.butter(8, 3000, fs=8000, output="sos")
    inner = slice(100, -100)  # away from the filters' edge transients
    for x8, x16 in zip(nb[..., 0], wb[..., 0]):
        reference = scipy.signal.sosfiltfilt(below_3k, soxr.resample(x16, 16000, 8000, quality="VHQ"))
        low = scipy.signal.sosfiltfilt(below_3k, x8)
        corr = {lag: np.corrcoef(np.roll(reference, lag)[inner], low[inner])[0, 1] for lag in (-1, 0, 1)}
        assert corr[0] > 0.97
        assert corr[0] > max(corr[-1], corr[1]) + 0.02


def test_evaluation_pass_covers_consecutive_segments_of_every_file(corpus):
    audio = LevelledAudio(corpus, -26.0)
    ds = make_dataset(corpus, cfg(gain_db_range=[0.0, 0.0], companding_probability=0.0), 5, seed=0,
                      training=False, audio=audio)
    wb = np.concatenate([w[..., 0] for _, w in batches(ds, 100)])
    visits = [max(1, audio.lengths[i] // SEGMENT) for i in range(len(corpus))]
    assert wb.shape[0] == sum(visits)  # one pass, short last batch kept
    expected = [(f, k * SEGMENT) for f, v in enumerate(visits) for k in range(v)]
    assert [find_segment([audio.get(i) for i in range(len(corpus))], w) for w in wb] == expected


def test_short_file_is_zero_padded_whole(tmp_path):
    path = str(tmp_path / "short.wav")
    soundfile.write(path, speech_like(0.05, seed=3), 16000, subtype="FLOAT")  # 800 samples < SEGMENT
    audio = LevelledAudio([path], -26.0)
    ds = make_dataset([path], cfg(gain_db_range=[0.0, 0.0], companding_probability=0.0), 3, seed=0, audio=audio)
    for example in batches(ds, 1)[0][1][..., 0]:
        f, start = find_segment([audio.get(0)], example)
        assert -(SEGMENT - 800) <= start <= 0  # the whole clip inside the segment
        assert np.count_nonzero(example) > 700


def test_files_are_levelled_to_the_loudness_target(corpus):
    audio = LevelledAudio(corpus[:3], -23.0)  # the 0.05-peak file needs about +20 dB
    meter = pyloudnorm.Meter(16000)
    for i in range(3):
        assert meter.integrated_loudness(audio.get(i).astype(np.float64)) == pytest.approx(-23.0, abs=0.05)
    clicks = np.zeros(16000)
    clicks[::4000] = 0.5  # very low loudness, high peak: the gain is limited by the peak instead
    gain_db = loudness_gain_db(clicks, -10.0)
    assert np.max(np.abs(clicks)) * 10 ** (gain_db / 20) == pytest.approx(10 ** (-0.1 / 20))
    assert loudness_gain_db(np.zeros(16000), -23.0) is None


def test_bad_files_are_skipped_and_counted_not_fatal(corpus, tmp_path):
    garbage = write_garbage(str(tmp_path / "garbage.wav"))
    silent = str(tmp_path / "silent.wav")
    soundfile.write(silent, np.zeros(16000, np.float32), 16000)
    truncated = str(tmp_path / "truncated.wav")
    soundfile.write(truncated, speech_like(1.0, seed=4), 16000)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)  # header intact, data cut: found only when decoded

    cached = LevelledAudio(corpus + [garbage, silent, truncated], -26.0, cache=True)
    assert set(cached.skipped) == {garbage, silent, truncated}
    assert "silent" in cached.skipped[silent] and "truncated" in cached.skipped[truncated]

    lazy = LevelledAudio([corpus[0], truncated], -26.0, cache=False)
    assert lazy.skipped == {}  # the header of the truncated file reads fine
    nb, wb = batches(make_dataset(None, cfg(cache=False), 4, seed=0, audio=lazy), 2)[1]
    assert wb.shape == (4, SEGMENT, 1)
    assert list(lazy.skipped) == [truncated]

    with pytest.raises(DataPipelineError, match="none of the 2 files can be used"):
        LevelledAudio([garbage, silent], -26.0)
    only_bad = LevelledAudio([truncated], -26.0, cache=False)
    with pytest.raises(tf.errors.OpError, match="every one of the 1 files failed"):
        batches(make_dataset(None, cfg(cache=False), 2, seed=0, audio=only_bad), 1)


@pytest.fixture(scope="module")
def band_limited(tmp_path_factory):
    """A file stored at 16 kHz but made at 12 kHz: nothing above ~6 kHz. A target like that
    teaches the model to leave the top of the band empty."""
    path = str(tmp_path_factory.mktemp("band_limited") / "from12k.wav")
    soundfile.write(path, soxr.resample(speech_like(1.0, 12000, seed=7), 12000, 16000), 16000)
    return path


@pytest.mark.parametrize("cache", [True, False])
def test_band_limited_files_are_skipped_only_when_asked(corpus, band_limited, cache):
    files = [corpus[0], band_limited]
    assert LevelledAudio(files, -26.0, cache=cache).skipped == {}

    audio = LevelledAudio(files, -26.0, cache=cache, min_bandwidth_hz=7250)
    if not cache:  # judged when first decoded
        batches(make_dataset(None, cfg(cache=False), 4, seed=0, audio=audio), 2)
    assert list(audio.skipped) == [band_limited]
    assert audio.skipped[band_limited].startswith("band-limited: content reaches 6000 Hz, below data.min_bandwidth_hz 7250")
    if cache:
        assert audio.usable.tolist() == [0]


def test_min_bandwidth_reaches_the_dataset_from_the_recipe(corpus, band_limited, caplog):
    with caplog.at_level("WARNING"):
        nb, wb = batches(make_dataset([corpus[0], band_limited], cfg(min_bandwidth_hz=7250), 2, seed=0), 1)[0]
    assert "skipped 1 of 2 files (1 band-limited" in caplog.text
    with pytest.raises(Exception, match="data.min_bandwidth_hz"):
        cfg(min_bandwidth_hz=9000)


def test_start_index_resumes_and_shards_partition_the_stream(corpus):
    audio = LevelledAudio(corpus, -26.0)
    full = batches(make_dataset(corpus, cfg(), 2, seed=5, audio=audio), 4)
    resumed = batches(make_dataset(corpus, cfg(), 2, seed=5, audio=audio, start_index=4), 2)
    np.testing.assert_array_equal(resumed[0][1], full[2][1])
    np.testing.assert_array_equal(resumed[1][0], full[3][0])
    examples = np.concatenate([wb for _, wb in full])
    shard1 = batches(make_dataset(corpus, cfg(), 2, seed=5, audio=audio, shard_index=1, num_shards=2), 2)
    np.testing.assert_array_equal(np.concatenate([wb for _, wb in shard1]), examples[1::2])


def test_validation_set_is_fixed_levelled_and_uses_the_evaluation_channel(corpus):
    data = cfg(loudness_lufs=-23.0)
    pairs = validation_set(corpus, data, max_files=3, max_seconds=0.8)
    assert len(pairs) == 3  # files 0, 2 (middle of 4, rounded) and 3: spread over the list
    again = validation_set(corpus, data, max_files=3, max_seconds=0.8)
    for (nb, wb), (nb2, wb2) in zip(pairs, again):
        np.testing.assert_array_equal(wb, wb2)
        np.testing.assert_array_equal(nb, nb2)
        assert wb.shape[0] % 256 == 0 and wb.shape[0] <= 0.8 * 16000
        assert nb.shape[0] * 2 == wb.shape[0]
        np.testing.assert_array_equal(nb, evaluation_degradation(wb))
    full_file = validation_set(corpus[:1], data, max_files=1, max_seconds=10.0)[0][1]
    assert pyloudnorm.Meter(16000).integrated_loudness(full_file.astype(np.float64)) == pytest.approx(-23.0, abs=0.1)
    with pytest.raises(ValueError):
        validation_set(corpus, data, max_files=0)


def test_context_is_even():
    assert CONTEXT % 2 == 0 and CONTEXT >= 191


EXIT_SCRIPT = """
import numpy as np
import soundfile
from signals import speech_like  # found through PYTHONPATH, set to tests/ by the test below
from bwe.config import recipe_from_dict
from bwe.data.pipeline import make_dataset
soundfile.write({path!r}, speech_like(3.0, seed=0), 16000)
# Long segments keep the workers inside Python for a while, so the exit surely meets them there.
cfg = recipe_from_dict({{"data": {{"train_dir": "x", "segment_samples": 131072, "num_parallel_calls": 2}}}}).data
iterator = iter(make_dataset([{path!r}], cfg, 1, seed=0))  # a global: still prefetching at exit
next(iterator)
print("done")
"""


def test_process_with_a_live_iterator_exits_cleanly(tmp_path):
    """TensorFlow threads still inside the pipeline at interpreter exit must not abort the process."""
    import subprocess
    import sys

    script = EXIT_SCRIPT.format(path=str(tmp_path / "a.wav"))
    python_path = os.pathsep.join(filter(None, [os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": python_path}
    # Without the guard this aborts (status 134) or hangs in most runs.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240)  # a hang is the failure; a loaded CI machine is slow
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "done"


def test_cache_holds_16_bit_audio_and_gives_way_when_memory_is_short(corpus, monkeypatch, caplog):
    cached = LevelledAudio(corpus, -26.0, cache=True)
    uncached = LevelledAudio(corpus, -26.0, cache=False)
    for i in range(len(corpus)):
        assert cached._audio[i].dtype == np.int16
        np.testing.assert_allclose(cached.get(i), uncached.get(i), rtol=0, atol=0.5 / 32767 + 1e-7)
    monkeypatch.setattr("bwe.data.pipeline._memory_budget_bytes", lambda: 1000)
    with caplog.at_level("WARNING", logger="bwe.data.pipeline"):
        fallback = LevelledAudio(corpus, -26.0, cache=True)
    assert fallback.cache is False and "running uncached" in caplog.text
    np.testing.assert_array_equal(fallback.get(2), uncached.get(2))


@pytest.mark.parametrize("speed", [1.0, 1.2])
def test_speed_perturbation_plays_training_segments_faster_and_leaves_validation_alone(tmp_path, speed):
    """data.speed_range: a 1 kHz tone comes out at speed x 1 kHz in both halves of every training pair,
    and at 1 kHz in the evaluation pass; a range below 1 is refused."""
    path = str(tmp_path / "tone.wav")
    t = np.arange(2 * 16000) / 16000
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 1000.0 * t), 16000, subtype="FLOAT")
    settings = cfg(gain_db_range=[0.0, 0.0], companding_probability=0.0, speed_range=[speed, speed])

    def peak_hz(x, rate):
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]

    for nb, wb in batches(make_dataset([path], settings, 4, seed=3), 1):
        for x8, x16 in zip(nb[..., 0], wb[..., 0]):
            assert peak_hz(x16, 16000) == pytest.approx(1000.0 * speed, abs=8.0)
            assert peak_hz(x8, 8000) == pytest.approx(1000.0 * speed, abs=8.0)
    evaluation = make_dataset([path], settings, 4, seed=3, training=False)
    assert peak_hz(batches(evaluation, 1)[0][1][0, :, 0], 16000) == pytest.approx(1000.0, abs=8.0)
    with pytest.raises(Exception, match=r"data.speed_range: expected \[low, high\] with 1 <= low"):
        cfg(speed_range=[0.9, 1.1])
