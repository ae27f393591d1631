"""bwe-enhance: files, folders, streaming, stdin/stdout pipes and every bad input, on the tiny export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from bwe import enhance
from bwe.runtime import ExportedModel
from exported_tiny import exported_tiny
from signals import speech_like

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir():
    return exported_tiny()[2]


@pytest.fixture(scope="module")
def model(model_dir):
    return ExportedModel(model_dir)


def narrowband(seconds: float, seed: int = 0) -> np.ndarray:
    x16 = speech_like(seconds, rate=16000, seed=seed)
    return soxr.resample(x16, 16000, 8000, quality="VHQ").astype(np.float32) * 0.5


def run_cli(args, capsys):
    code = enhance.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def test_file_round_trip_equals_offline_model(tmp_path, model_dir, model, capsys):
    x = narrowband(1.3)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, 8000, subtype="FLOAT")
    before = src.read_bytes()
    code, err = run_cli([src, dst, "--model", model_dir, "--subtype", "FLOAT"], capsys)
    assert code == 0, err
    y, rate = sf.read(dst, dtype="float32")
    assert rate == 16000 and len(y) == 2 * len(x)
    np.testing.assert_allclose(y, model(x), atol=1e-6)
    assert src.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_get_the_mode_a_plain_open_would_give(tmp_path, model_dir, capsys, mask):
    # Written through a temporary file and renamed, the outputs used to keep mkstemp's 0600:
    # unreadable to anyone but their owner (a web server, a shared folder's group).
    x = narrowband(0.5)
    (tmp_path / "calls").mkdir()
    sf.write(tmp_path / "calls" / "a.wav", x, 8000)
    old = os.umask(mask)
    try:
        for args in (["calls/a.wav", "file.wav"], ["--streaming", "calls/a.wav", "streamed.flac"],
                     ["calls", "wide"]):
            code, err = run_cli([tmp_path / a if not a.startswith("-") else a for a in args]
                                + ["--model", model_dir], capsys)
            assert code == 0, err
    finally:
        os.umask(old)
    for out in ("file.wav", "streamed.flac", "wide/a.wav"):
        assert os.stat(tmp_path / out).st_mode & 0o777 == 0o666 & ~mask, out


def test_default_subtype_is_pcm16(tmp_path, model_dir, capsys):
    src, dst = tmp_path / "in.wav", tmp_path / "out.flac"
    sf.write(src, narrowband(0.5), 8000)
    assert run_cli([src, dst, "--model", model_dir], capsys)[0] == 0
    info = sf.info(dst)
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)


def test_output_container_follows_the_extension(tmp_path, model_dir, capsys):
    """OGG has no 16-bit PCM: the default subtype falls back to Vorbis; an explicit impossible one is refused."""
    src = tmp_path / "in.wav"
    sf.write(src, narrowband(0.5), 8000)
    assert run_cli([src, tmp_path / "out.ogg", "--model", model_dir], capsys)[0] == 0
    assert sf.info(tmp_path / "out.ogg").format == "OGG"
    if "MP3" in sf.available_formats():  # libsndfile 1.1+, as in soundfile's wheels
        assert run_cli([src, tmp_path / "out.mp3", "--model", model_dir], capsys)[0] == 0
        info = sf.info(tmp_path / "out.mp3")
        assert (info.format, info.samplerate, info.frames) == ("MP3", 16000, 2 * sf.info(src).frames)
    code, err = run_cli([src, tmp_path / "bad.ogg", "--model", model_dir, "--subtype", "PCM_24"], capsys)
    assert code == 2 and "PCM_24" in err and not (tmp_path / "bad.ogg").exists()
    code, err = run_cli([src, tmp_path / "out.xyz", "--model", model_dir], capsys)
    assert code == 2 and "unknown audio extension" in err


def test_streaming_equals_offline(tmp_path, model_dir, model, capsys):
    x = narrowband(0.9, seed=3)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, 8000, subtype="FLOAT")
    assert run_cli([src, dst, "--model", model_dir, "--subtype", "FLOAT", "--streaming"], capsys)[0] == 0
    y, _ = sf.read(dst, dtype="float32")
    assert np.max(np.abs(y - model(x))) <= 1e-4


def test_chunked_reading_equals_one_piece(tmp_path, model_dir, model, capsys, monkeypatch):
    """Read blocks that are not a multiple of the frame still give the one-piece output, and input is held
    back until a whole block-model call is ready: only the tail goes through the one-frame model."""
    from bwe import runtime

    x = narrowband(2.0, seed=5)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, 8000, subtype="FLOAT")
    reference = model(x)
    calls = {}
    original_run = runtime.StatefulRunner.run

    def counting_run(self, frame, states):
        calls[len(frame)] = calls.get(len(frame), 0) + 1
        return original_run(self, frame, states)

    monkeypatch.setattr(runtime.StatefulRunner, "run", counting_run)
    monkeypatch.setattr(enhance, "READ_BLOCK_SECONDS", 0.0371)
    assert run_cli([src, dst, "--model", model_dir, "--subtype", "FLOAT"], capsys)[0] == 0
    y, _ = sf.read(dst, dtype="float32")
    np.testing.assert_allclose(y, reference, atol=1e-6)
    meta = json.loads(open(os.path.join(model_dir, "metadata.json")).read())
    block = meta["files"]["block"]["frames_per_call"] * meta["frame_input_samples"]
    assert calls.get(block, 0) == len(x) // block
    assert calls.get(meta["frame_input_samples"], 0) < meta["files"]["block"]["frames_per_call"] + 1


def test_any_rate_and_channels_are_resampled_and_wideband_input_warned(tmp_path, model_dir, model, capsys):
    x16 = speech_like(1.0, rate=16000, seed=2)
    x44 = soxr.resample(x16, 16000, 44100, quality="VHQ").astype(np.float32)
    stereo = np.stack([x44, 0.5 * x44], axis=1)
    src, dst = tmp_path / "in44k.wav", tmp_path / "out.wav"
    sf.write(src, stereo, 44100, subtype="FLOAT")
    code, err = run_cli([src, dst, "--model", model_dir, "--subtype", "FLOAT"], capsys)
    assert code == 0
    assert "already wideband" in err and "in44k.wav" in err
    y, rate = sf.read(dst, dtype="float32")
    assert rate == 16000 and len(y) == round(len(x44) * 16000 / 44100)
    expected = model(soxr.resample(stereo.mean(axis=1), 44100, 8000, quality="VHQ").astype(np.float32))
    np.testing.assert_allclose(y, expected[: len(y)], atol=1e-5)


def test_wideband_input_with_speech_like_little_energy_above_4_khz_is_warned(tmp_path, model_dir, capsys):
    # Real wideband speech has 0.3-1 % of its energy above 4 kHz; 0.3 % (-25 dB) must be flagged.
    low = soxr.resample(narrowband(1.0), 8000, 16000, quality="VHQ")
    noise = np.random.default_rng(0).standard_normal(len(low))
    high = np.fft.irfft(np.fft.rfft(noise) * (np.fft.rfftfreq(len(low), 1 / 16000) > 4200), len(low))
    high *= np.sqrt(0.003 * np.sum(low**2) / np.sum(high**2))
    src, dst = tmp_path / "wide.wav", tmp_path / "out.wav"
    sf.write(src, (low + high).astype(np.float32), 16000, subtype="FLOAT")
    code, err = run_cli([src, dst, "--model", model_dir], capsys)
    assert code == 0
    assert "already wideband" in err and "0.3 % of the energy (-25 dB) is above 4 kHz" in err


def test_narrowband_input_is_not_warned(tmp_path, model_dir, capsys):
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    x8 = narrowband(0.6)
    sf.write(src, soxr.resample(x8, 8000, 16000, quality="VHQ"), 16000, subtype="FLOAT")
    code, err = run_cli([src, dst, "--model", model_dir], capsys)
    assert code == 0 and "wideband" not in err


def test_folder_keeps_structure_and_reports_failures(tmp_path, model_dir, capsys):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    sf.write(src / "one.wav", narrowband(0.4), 8000)
    sf.write(src / "a" / "b" / "two.flac", narrowband(0.4, seed=1), 8000)
    (src / "a" / "broken.wav").write_bytes(b"RIFF....not really audio")
    code, err = run_cli([src, tmp_path / "out", "--model", model_dir], capsys)
    assert code == 1
    assert "1 of 3 files failed" in err and "broken.wav" in err
    assert sf.info(tmp_path / "out" / "one.wav").samplerate == 16000
    assert sf.info(tmp_path / "out" / "a" / "b" / "two.wav").samplerate == 16000
    assert not (tmp_path / "out" / "a" / "broken.wav").exists()


def test_output_folder_inside_the_input_folder_is_not_read_as_input(tmp_path, model_dir, capsys):
    src = tmp_path / "calls"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "one.wav", narrowband(0.4), 8000)
    sf.write(src / "sub" / "two.wav", narrowband(0.4, seed=1), 8000)
    for _ in range(2):  # the rerun finds the first run's outputs below calls/wideband/
        assert run_cli([src, src / "wideband", "--model", model_dir], capsys)[0] == 0
    written = sorted(p.relative_to(src / "wideband").as_posix() for p in (src / "wideband").rglob("*.wav"))
    assert written == ["one.wav", "sub/two.wav"]


def _write_truncated(path):
    sf.write(path, narrowband(0.5), 8000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_nan(path):
    x = narrowband(0.3)
    x[100] = np.nan
    sf.write(path, x, 8000, subtype="FLOAT")


@pytest.mark.parametrize(
    "make_input, message",
    [
        (None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is a text file, not audio" * 10), "not a readable audio file"),
        (_write_truncated, "truncated"),
        (_write_nan, "NaN"),
    ],
    ids=["missing", "empty", "not-audio", "truncated", "nan"],
)
def test_bad_input_fails_cleanly(tmp_path, model_dir, capsys, make_input, message):
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    if make_input is not None:
        make_input(src)
    before = src.read_bytes() if src.exists() else None
    code, err = run_cli([src, dst, "--model", model_dir], capsys)
    assert code == 2
    assert message in err and "in.wav" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["in.wav"] if before is not None else [])
    if before is not None:
        assert src.read_bytes() == before


def test_refuses_to_overwrite_input(tmp_path, model_dir, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, narrowband(0.3), 8000)
    before = src.read_bytes()
    os.symlink(src, tmp_path / "link.wav")
    for target in (src, tmp_path / "link.wav"):
        code, err = run_cli([src, target, "--model", model_dir], capsys)
        assert code == 2 and "overwrite the input" in err
    assert src.read_bytes() == before


def test_unwritable_output_directory(tmp_path, model_dir, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, narrowband(0.3), 8000)
    code, err = run_cli([src, tmp_path / "missing" / "out.wav", "--model", model_dir], capsys)
    assert code == 2 and "does not exist" in err


def test_file_into_an_existing_folder_asks_for_a_file_name(tmp_path, model_dir, capsys):
    src = tmp_path / "call.flac"
    sf.write(src, narrowband(0.3), 8000)
    (tmp_path / "out").mkdir()
    code, err = run_cli([src, tmp_path / "out", "--model", model_dir], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is a folder" in err and os.path.join(str(tmp_path / "out"), "call.wav") in err
    assert list((tmp_path / "out").iterdir()) == []
    code, err = run_cli([tmp_path, src, "--model", model_dir], capsys)  # and the other way round
    assert code == 2 and "output must be a folder too" in err


def test_failure_mid_run_keeps_previous_output(tmp_path, model_dir, capsys):
    """A NaN found after the first blocks were written leaves an existing output file untouched."""
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    x = narrowband(3.0)
    x[-50] = np.inf
    sf.write(src, x, 8000, subtype="FLOAT")
    dst.write_bytes(b"previous good result")
    enhance.READ_BLOCK_SECONDS, saved = 0.5, enhance.READ_BLOCK_SECONDS
    try:
        code, err = run_cli([src, dst, "--model", model_dir], capsys)
    finally:
        enhance.READ_BLOCK_SECONDS = saved
    assert code == 2 and "NaN or infinite" in err
    assert dst.read_bytes() == b"previous good result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.wav"]


def test_unknown_model_directory(tmp_path, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, narrowband(0.3), 8000)
    code, err = run_cli([src, tmp_path / "out.wav", "--model", tmp_path / "nope"], capsys)
    assert code == 2 and "model directory not found" in err
    (tmp_path / "empty_model").mkdir()
    code, err = run_cli([src, tmp_path / "out.wav", "--model", tmp_path / "empty_model"], capsys)
    assert code == 2 and "metadata.json" in err
    assert not (tmp_path / "out.wav").exists()


def test_model_with_mismatching_metadata(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad_model"
    shutil.copytree(model_dir, bad)
    meta = json.loads((bad / "metadata.json").read_text())
    meta["input_rate"] = 16000
    (bad / "metadata.json").write_text(json.dumps(meta))
    src = tmp_path / "in.wav"
    sf.write(src, narrowband(0.3), 8000)
    code, err = run_cli([src, tmp_path / "out.wav", "--model", bad], capsys)
    assert code == 2 and "16000 Hz" in err and "Traceback" not in err


def test_pipe_mode_needs_streaming_flag(model_dir, capsys):
    code, err = run_cli(["-", "-", "--model", model_dir], capsys)
    assert code == 2 and "--streaming" in err


def test_file_enhancement_needs_neither_tensorflow_nor_scipy(tmp_path):
    """The inference install has neither (setup.cfg keeps SciPy in the extras): a file through the
    bundled default model imports no module of either."""
    code = (
        "import sys, runpy; sys.argv = ['bwe-enhance'] + sys.argv[1:]\n"
        "try:\n runpy.run_module('bwe.enhance', run_name='__main__')\n"
        "except SystemExit as e:\n assert not e.code, e.code\n"
        "bad = sorted({k.split('.')[0] for k in sys.modules} & {'tensorflow', 'keras', 'scipy'})\n"
        "assert not bad, bad\n"
    )
    sample = os.path.join(REPO, "bwe", "pretrained", "sample_8k.wav")
    result = subprocess.run([sys.executable, "-c", code, sample, str(tmp_path / "out.wav")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sf.info(str(tmp_path / "out.wav")).samplerate == 16000


def test_stdin_stdout_pipe_streams_and_matches_offline(model_dir, model):
    """Raw 16-bit PCM through a real subprocess; a partial last frame is handled; no TensorFlow loaded."""
    x = narrowband(0.77, seed=9)
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    code = (
        "import sys, runpy; sys.argv = ['bwe-enhance'] + sys.argv[1:];"
        "rc = 0\n"
        "try:\n runpy.run_module('bwe.enhance', run_name='__main__')\n"
        "except SystemExit as e:\n rc = e.code\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "--streaming", "--model", model_dir, "-", "-"],
        input=pcm.tobytes(), capture_output=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    y = np.frombuffer(proc.stdout, "<i2").astype(np.float32) / 32768
    assert len(y) == 2 * len(pcm)
    expected = model(pcm.astype(np.float32) / 32768)
    assert np.max(np.abs(y - np.clip(expected, -1, 1))) <= 2 / 32768


def test_pipe_rejects_odd_byte_count(model_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "bwe.enhance", "--streaming", "--model", model_dir, "-", "-"],
        input=b"\x00" * 257, capture_output=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2 and b"middle of a 16-bit sample" in proc.stderr


BUNDLES = {"streaming": ("pretrained", "pretrained_codecs.yaml"),
           "offline": (os.path.join("pretrained", "offline"), "pretrained_offline_expectile.yaml")}


@pytest.mark.parametrize("flags", [[], ["--streaming"]], ids=["offline-default", "streaming"])
def test_bundled_model_enhances_the_bundled_sample_with_no_flags(tmp_path, flags):
    """README's first command: the default model, no --model, on the bundled real 8 kHz sample (the
    offline model for a file, the streaming one with --streaming)."""
    sample = os.path.join(REPO, "bwe", "pretrained", "sample_8k.wav")
    out = tmp_path / "enhanced.wav"
    proc = subprocess.run([sys.executable, "-m", "bwe.enhance", *flags, sample, str(out)], capture_output=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"", proc.stderr.decode()  # a clean run says nothing (no LiteRT notices)
    x, rate_in = sf.read(sample, dtype="float32")
    y, rate = sf.read(out, dtype="float32")
    assert (rate_in, rate, len(y)) == (8000, 16000, 2 * len(x))
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    high = spectrum[(freqs > 4500) & (freqs < 7500)].sum() / spectrum.sum()
    assert 1e-4 < high < 0.3  # a restored high band, not silence and not noise
    # The low band is the input's: the model only adds 4-8 kHz (band-split residual).
    reference = soxr.resample(x, 8000, 16000, quality="VHQ")
    low = (freqs > 100) & (freqs < 3000)
    difference = np.abs(np.fft.rfft(y - reference)) ** 2
    assert difference[low].sum() < 1e-3 * spectrum[low].sum()


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_bundle_ships_every_file_its_metadata_lists(bundle):
    folder = os.path.join(REPO, "bwe", BUNDLES[bundle][0])
    with open(os.path.join(folder, "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    assert {"streaming", "streaming_int8", "block"} <= set(metadata["files"])
    for entry in metadata["files"].values():
        assert os.path.isfile(os.path.join(folder, entry["file"])), entry["file"]
    assert set(metadata["tensor_names"]) == set(metadata["files"])


def test_files_go_through_the_offline_bundle_and_streams_through_the_streaming_one():
    from bwe.enhance import default_model_dir

    offline, streaming = ExportedModel(default_model_dir(False)), ExportedModel(default_model_dir(True))
    assert offline.metadata.lookahead_ms > 0 and streaming.metadata.lookahead_ms == 0
    # The 16 ms frame and 5 ms of fixed filters (interpolator, 65-tap band split, the head's band bank).
    assert streaming.metadata.architectural_latency_ms <= 21.0


def _highband_frame_levels_db(y: np.ndarray) -> np.ndarray:
    """4-8 kHz level of each 32 ms frame (16 ms hop), in dB."""
    import scipy.signal

    freqs, _, spec = scipy.signal.stft(y, 16000, nperseg=512)
    return 10 * np.log10(np.sum(np.abs(spec[freqs >= 4000]) ** 2, axis=0) + 1e-10)


# Per bundle: the least overall SNR (dB) of int8 against float, and the most median / 95th-percentile
# error (dB) of the generated band's frame levels. The offline model's band is louder (relative to
# the low band, whose int8 error is small), and its look-ahead predictor reads the int8 spectrum a
# little less well: measured 38.9 dB, 1.25 / 3.55 dB on the bundled sample (streaming 40.5 dB,
# 0.78 / 2.19 dB).
INT8_BOUNDS = {"streaming": (40.0, 1.0, 3.0), "offline": (38.0, 1.5, 4.0)}


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_bundled_int8_model_matches_the_float_one_on_the_bundled_sample(bundle):
    """The shipped int8 model is usable: close to float on real speech, and the band it generates at
    the float model's level frame by frame (median and 95th-percentile error over frames within 40 dB
    of the loudest bounded by INT8_BOUNDS; long-term within 1 dB).

    The band's waveform is not compared: int8 rounding moves the generated fine structure (4-8 kHz
    SNR ~20 dB) while its levels, what is heard, stay put. Files with --int8 go frame by frame through
    streaming_int8.tflite: the bundles leave out its block form, which the export found to compute exactly
    as it does (0 output steps apart)."""
    from bwe.export import snr_db

    min_snr, max_median, max_p95 = INT8_BOUNDS[bundle]
    bundled = os.path.join(REPO, "bwe", BUNDLES[bundle][0])
    x, _ = sf.read(os.path.join(REPO, "bwe", "pretrained", "sample_8k.wav"), dtype="float32")
    float_model, int8_model = ExportedModel(bundled), ExportedModel(bundled, int8=True)
    y_float, y_int8 = float_model(x), int8_model(x)
    assert int8_model.block_stream()._block is None  # int8 files run frame by frame
    assert float_model.metadata.checks.int8_block_vs_streaming_lsb == 0.0
    assert snr_db(y_float, y_int8) >= min_snr
    float_levels, int8_levels = _highband_frame_levels_db(y_float), _highband_frame_levels_db(y_int8)
    active = float_levels > float_levels.max() - 40
    frame_errors = np.abs(int8_levels - float_levels)[active]
    assert np.median(frame_errors) <= max_median and np.percentile(frame_errors, 95) <= max_p95
    long_term = 10 * np.log10(np.mean(10 ** (int8_levels / 10)) / np.mean(10 ** (float_levels / 10)))
    assert abs(long_term) <= 1.0


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_bundled_model_was_trained_with_the_shipped_recipe(bundle):
    """recipes/pretrained*.yaml reproduce the bundled models: each export recorded the same recipe
    (the data folders and the starting weights excepted, which name the training machine's paths). Read
    through the recipe parser, so that keys added since the export compare at their defaults."""
    from bwe.config import load_recipe, recipe_from_dict, recipe_to_dict

    folder, recipe_file = BUNDLES[bundle]
    recorded = json.loads(open(os.path.join(REPO, "bwe", folder, "metadata.json")).read())["recipe"]
    bundled = recipe_to_dict(recipe_from_dict(recorded))
    shipped = recipe_to_dict(load_recipe(os.path.join(REPO, "recipes", recipe_file)))
    for recipe in (bundled, shipped):
        recipe["data"].pop("train_dir")
        recipe["data"].pop("valid_dir")
        recipe["train"].pop("init_from")
    assert bundled == shipped


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_bundled_weights_are_the_bundled_model(bundle):
    """generator.weights.h5 beside each bundle is the generator its .tflite files were exported from:
    loaded through bwe-export's loader (recipe from metadata.json) and run in TensorFlow, it gives the
    bundled streaming file's output, so fine-tuning and re-exporting start from the shipped model."""
    from bwe.export import load_generator, scale_highband
    from bwe.layers.modes import Modes
    from bwe.streaming import to_streaming

    bundled = os.path.join(REPO, "bwe", BUNDLES[bundle][0])
    generator, recipe, _ = load_generator(bundled)
    offline = to_streaming(generator, Modes.NON_STREAM_INFERENCE)
    scale_highband((offline,), recipe)
    x, _ = sf.read(os.path.join(REPO, "bwe", "pretrained", "sample_8k.wav"), dtype="float32")
    x = x[: len(x) // 128 * 128]
    expected = np.asarray(offline(x[None, :, None]))[0, :, 0]
    streamed = ExportedModel(bundled).stream().process(x)
    # Float32 summed in another order: the head's gains (up to e^6) magnify last-bit differences, most at
    # one loud sample of the offline bundle (0.8-1.1e-4 there, under 8e-5 at the 99.99th percentile).
    assert np.max(np.abs(streamed - expected)) < 2e-4 * max(1.0, np.max(np.abs(expected)))
    assert np.percentile(np.abs(streamed - expected), 99.99) < 1e-4
