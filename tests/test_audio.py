"""bwe.data.audio: reading, writing, resampling and every error it promises."""

import os
import warnings

import numpy as np
import pytest
import scipy.signal
import soundfile

from bwe.data.audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    check_output_path,
    effective_bandwidth_hz,
    list_audio_files,
    load_audio,
    load_raw,
    resample,
    save_audio,
    spread_indices,
)
from signals import speech_like, write_wav


@pytest.fixture
def speech16k():
    return speech_like(1.0, 16000, seed=3)


def test_round_trip_pcm16_and_float(tmp_path, speech16k):
    path = save_audio(tmp_path / "a.wav", speech16k, 16000)
    x, rate = load_audio(path)
    assert rate == 16000 and x.dtype == np.float32 and x.shape == speech16k.shape
    assert np.max(np.abs(x - speech16k)) <= 1.0 / 32768 + 1e-7  # 16-bit quantisation, nothing more
    path = save_audio(tmp_path / "b.flac", speech16k, 16000, subtype="PCM_24")
    x, _ = load_audio(path)
    assert np.max(np.abs(x - speech16k)) <= 2.0 / 2**24
    path = save_audio(tmp_path / "c.wav", speech16k, 16000, subtype="FLOAT")
    x, _ = load_audio(path)
    np.testing.assert_array_equal(x, speech16k)


def test_ogg_default_subtype_falls_back_to_vorbis(tmp_path, speech16k):
    path = save_audio(tmp_path / "a.ogg", speech16k, 16000)
    assert soundfile.info(path).subtype == "VORBIS"
    x, _ = load_audio(path)
    assert x.shape[0] == speech16k.shape[0]


def test_multichannel_is_downmixed_by_mean(tmp_path, speech16k):
    other = speech_like(1.0, 16000, seed=4)
    stereo = np.stack([speech16k, other], axis=1)
    path = write_wav(tmp_path / "stereo.wav", stereo, 16000, subtype="FLOAT")
    x, _ = load_audio(path)
    np.testing.assert_allclose(x, (speech16k + other) / 2, atol=1e-7)


def test_load_resamples_to_target_rate(tmp_path):
    # 1 kHz tone at 16 kHz -> 8 kHz must still be a 1 kHz tone of the same level and phase.
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    path = write_wav(tmp_path / "tone.wav", tone, 16000, subtype="FLOAT")
    x, rate = load_audio(path, target_rate=8000)
    assert rate == 8000 and x.shape == (8000,)
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000)
    np.testing.assert_allclose(x[200:-200], expected[200:-200], atol=2e-3)


def test_resample_is_aligned_and_band_limited(speech16k):
    y = resample(speech16k, 16000, 8000)
    assert y.dtype == np.float32 and y.shape == (8000,)
    # Aligned: the 8 kHz signal correlates best with the 16 kHz one decimated without a shift.
    ref = scipy.signal.resample_poly(speech16k, 1, 2)
    lags = [np.dot(np.roll(y, k), ref) for k in range(-3, 4)]
    assert int(np.argmax(lags)) == 3
    back = resample(y, 8000, 16000)
    f, p_in = scipy.signal.welch(speech16k, 16000, nperseg=512)
    _, p_back = scipy.signal.welch(back, 16000, nperseg=512)
    high = f > 4300
    assert 10 * np.log10(p_back[high].sum() / p_in[high].sum()) < -60
    with pytest.raises(ValueError, match="positive"):
        resample(speech16k, 0, 8000)


def test_same_rate_resample_returns_a_copy(speech16k):
    y = resample(speech16k, 16000, 16000)
    assert y is not speech16k
    np.testing.assert_array_equal(y, speech16k)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        load_audio(tmp_path / "nope.wav")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: empty file \(0 bytes\)"):
        load_audio(path)


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not a recording\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.wav: not a readable audio file"):
        load_audio(path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_wav(tmp_path, speech16k, keep):
    full = write_wav(tmp_path / "full.wav", speech16k, 16000)
    data = open(full, "rb").read()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated"):
        load_audio(path)


def test_header_only_wav(tmp_path, speech16k):
    full = write_wav(tmp_path / "full.wav", speech16k, 16000)
    path = tmp_path / "head.wav"
    path.write_bytes(open(full, "rb").read()[:30])
    with pytest.raises(AudioError, match=r"head\.wav: not a readable audio file"):
        load_audio(path)


def test_truncated_flac(tmp_path, speech16k):
    full = save_audio(tmp_path / "full.flac", speech16k, 16000)
    data = open(full, "rb").read()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.flac"):
        load_audio(path)


def test_zero_length_audio(tmp_path):
    path = write_wav(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    assert os.path.getsize(path) > 0
    with pytest.raises(AudioError, match=r"zero\.wav: contains no audio samples"):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = np.zeros(100, np.float32)
    x[37] = bad
    path = write_wav(tmp_path / "bad.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"bad\.wav: contains NaN or Inf samples \(first at frame 37\)"):
        load_audio(path)


def test_load_does_not_modify_input(tmp_path, speech16k):
    path = write_wav(tmp_path / "in.wav", np.stack([speech16k, speech16k], 1), 16000)
    before = open(path, "rb").read()
    mtime = os.stat(path).st_mtime_ns
    load_audio(path, target_rate=8000)
    assert open(path, "rb").read() == before and os.stat(path).st_mtime_ns == mtime


def test_raw_pcm_and_ulaw(tmp_path, speech16k):
    pcm = np.round(speech16k * 32767).astype("<i2")
    path = tmp_path / "x.raw"
    path.write_bytes(pcm.tobytes())
    x, rate = load_raw(path, 16000)
    assert rate == 16000
    np.testing.assert_allclose(x, pcm / 32768.0, atol=1e-7)
    x8, rate8 = load_raw(path, 16000, target_rate=8000)
    assert rate8 == 8000 and x8.shape == (8000,)
    ulaw = tmp_path / "x.ul"
    soundfile.write(ulaw, speech16k, 8000, subtype="ULAW", format="RAW")
    x, _ = load_raw(ulaw, 8000, subtype="ULAW")
    assert x.shape == speech16k.shape and np.max(np.abs(x - speech16k)) < 0.02
    empty = tmp_path / "e.raw"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_raw(empty, 8000)


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path, speech16k, monkeypatch):
    path = save_audio(tmp_path / "out.wav", speech16k, 16000)
    before = open(path, "rb").read()

    def broken_write(file, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(soundfile, "write", broken_write)
    with pytest.raises(AudioError, match=r"out\.wav: cannot write audio \(disk full\)"):
        save_audio(path, speech16k * 0.5, 16000)
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]  # no temporary file left behind


def test_save_gives_normal_permissions(tmp_path, speech16k):
    path = save_audio(tmp_path / "p.wav", speech16k, 16000)
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_save_refuses_to_overwrite_protected_input(tmp_path, speech16k):
    src = write_wav(tmp_path / "in.wav", speech16k, 16000)
    before = open(src, "rb").read()
    link = tmp_path / "link.wav"
    link.symlink_to(src)
    hard = tmp_path / "hard.wav"
    os.link(src, hard)
    for target in (src, link, hard, tmp_path / "sub" / ".." / "in.wav"):
        with pytest.raises(AudioError, match="refusing to overwrite the input"):
            save_audio(target, speech16k * 0.1, 16000, protect=[src])
    assert open(src, "rb").read() == before


def test_save_refuses_bad_samples_and_paths(tmp_path, speech16k):
    with pytest.raises(AudioError, match="NaN or Inf"):
        save_audio(tmp_path / "a.wav", np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(AudioError, match="non-empty"):
        save_audio(tmp_path / "a.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="non-empty"):
        save_audio(tmp_path / "a.wav", np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(AudioError, match="unknown audio extension '.txt'"):
        save_audio(tmp_path / "a.txt", speech16k, 16000)
    with pytest.raises(AudioError, match="output directory .*missing.* does not exist"):
        save_audio(tmp_path / "missing" / "a.wav", speech16k, 16000)
    with pytest.raises(AudioError, match="is a directory"):
        save_audio(tmp_path, speech16k, 16000)
    with pytest.raises(AudioError, match="cannot be stored"):
        save_audio(tmp_path / "a.flac", speech16k, 16000, subtype="FLOAT")
    assert os.listdir(tmp_path) == []


def test_a_container_this_libsndfile_cannot_write_is_refused_by_name(tmp_path, speech16k, monkeypatch):
    formats = {k: v for k, v in soundfile.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(soundfile, "available_formats", lambda: formats)
    with pytest.raises(AudioError, match="cannot write MP3"):
        save_audio(tmp_path / "a.mp3", speech16k, 16000)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_save_into_read_only_directory(tmp_path, speech16k):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(AudioError, match="not writable"):
            save_audio(ro / "a.wav", speech16k, 16000)
    finally:
        ro.chmod(0o700)


def test_save_warns_when_clipping(tmp_path):
    with pytest.warns(UserWarning, match="2 samples outside"):
        path = save_audio(tmp_path / "loud.wav", np.array([1.5, -2.0, 0.5], np.float32), 16000)
    x, _ = load_audio(path)
    assert np.all(np.abs(x) <= 1.0) and x[0] > 0.99 and x[1] == -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_audio(tmp_path / "float.wav", np.array([1.5], np.float32), 16000, subtype="FLOAT")


def test_check_output_path_returns_str(tmp_path):
    assert check_output_path(tmp_path / "x.wav", protect=[tmp_path / "y.wav"]) == str(tmp_path / "x.wav")


def test_list_audio_files(tmp_path, speech16k):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in ("z.wav", "a/y.FLAC", "a/b/x.ogg", ".hidden/h.wav", "a/.tmp.wav", "a/readme.txt"):
        (tmp_path / rel).write_bytes(b"x")
    found = list_audio_files(tmp_path)
    assert [os.path.relpath(p, tmp_path) for p in found] == ["a/b/x.ogg", "a/y.FLAC", "z.wav"]
    assert list_audio_files(tmp_path / "z.wav") == [str(tmp_path / "z.wav")]
    assert ".wav" in AUDIO_EXTENSIONS and ".flac" in AUDIO_EXTENSIONS
    with pytest.raises(AudioError, match="no such directory"):
        list_audio_files(tmp_path / "nope")


def test_save_into_unwritable_directory_as_root(tmp_path, speech16k, monkeypatch):
    # Root may write anywhere, so the permission check is driven through os.access here.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(AudioError, match="not writable"):
        save_audio(tmp_path / "a.wav", speech16k, 16000)


def test_spread_indices_cover_first_and_last_without_repeats():
    assert spread_indices(10, 3) == [0, 4, 9]  # linspace 0, 4.5, 9 rounded half to even
    assert spread_indices(3, 10) == [0, 1, 2]  # fewer items than asked: all of them, once
    assert spread_indices(5, 1) == [0]
    assert spread_indices(5, 0) == [] and spread_indices(0, 4) == []


@pytest.mark.parametrize("source_rate, low, high", [(12000, 5750, 6000), (14500, 6750, 7000), (16000, 8000, 8000)])
def test_effective_bandwidth_finds_where_content_stops(source_rate, low, high):
    # Speech made at a lower rate and resampled to 16 kHz has nothing above the old Nyquist
    # frequency (less soxr's transition band); true 16 kHz speech reaches 8 kHz.
    x = resample(speech_like(2.0, source_rate, seed=1), source_rate, 16000)
    assert low <= effective_bandwidth_hz(x, 16000) <= high


def test_effective_bandwidth_against_a_steep_low_pass():
    noise = np.random.default_rng(0).standard_normal(32000)
    sos = scipy.signal.ellip(10, 0.1, 80.0, 5000.0, fs=16000, output="sos")
    # The 250 Hz band that holds the filter's edge still counts: content reaches into 5-5.25 kHz.
    assert effective_bandwidth_hz(scipy.signal.sosfilt(sos, noise), 16000) == 5250.0
    assert effective_bandwidth_hz(noise, 16000) == 8000.0
    # 40 dB down from 5 kHz on: inside a 50 dB margin, outside the 30 dB default.
    shelf = scipy.signal.sosfilt(sos, noise) + 0.01 * noise
    assert effective_bandwidth_hz(shelf, 16000) == 5250.0
    assert effective_bandwidth_hz(shelf, 16000, drop_db=50.0) == 8000.0


def test_effective_bandwidth_of_silence_and_bad_input():
    assert effective_bandwidth_hz(np.zeros(4000), 16000) == 0.0
    with pytest.raises(ValueError, match="too few"):
        effective_bandwidth_hz(np.ones(1000), 16000)
    with pytest.raises(ValueError, match="rate"):
        effective_bandwidth_hz(np.ones(4000), 4000)
    with pytest.raises(ValueError, match="NaN"):
        effective_bandwidth_hz(np.full(4000, np.nan), 16000)
