"""python -m eval.codec_pairs: the narrowband side is the evaluation channel through the codec, the wideband
side the reference, paired by name; ffmpeg's failures and bad requests leave nothing behind."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from bwe.data.degrade import evaluation_degradation, telephone_degradation
from eval import codec_pairs
from eval.evaluate import paired_stems
from signals import speech_like, write_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A stand-in for ffmpeg whose "codec" halves the signal: it reads its -i file and writes WAV to its
# last argument, and fails with a message when FAKE_FFMPEG_FAIL is set.
FAKE_FFMPEG = """#!{python}
import os, sys
import soundfile
if os.environ.get("FAKE_FFMPEG_FAIL"):
    print("Unknown encoder 'libgsm'", file=sys.stderr)
    sys.exit(1)
args = sys.argv[1:]
source = args[args.index("-i") + 1]
x, rate = soundfile.read(source, dtype="int16")
halve = os.path.basename(source) == "pcm.wav"  # the encoding step
soundfile.write(args[-1], x // 2 if halve else x, rate, format="WAV", subtype="PCM_16")
"""


def _digest(folder):
    """sha256 of every file below ``folder``, by relative path."""
    return {os.path.relpath(os.path.join(d, n), folder): hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest()
            for d, _, names in os.walk(folder) for n in names}


@pytest.fixture
def references(tmp_path):
    speech = tmp_path / "refs" / "speech"
    (speech / "sub").mkdir(parents=True)
    write_wav(speech / "a.wav", speech_like(1.0, 16000, seed=1), 16000)
    write_wav(speech / "sub" / "b.flac", speech_like(0.7, 16000, seed=2), 16000)
    return speech


@pytest.fixture
def fake_ffmpeg(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ffmpeg"
    script.write_text(FAKE_FFMPEG.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_pairs_are_the_evaluation_channel_through_the_codec_and_the_reference(tmp_path, references, fake_ffmpeg):
    before = _digest(references)
    out = tmp_path / "pairs"
    assert codec_pairs.build_pairs(str(out), "gsm", [str(references)]) == 2
    pairs, unpaired = paired_stems(str(out / "nb"), str(out / "wb"))
    assert unpaired == []
    assert sorted(os.path.relpath(wide, out / "wb") for _, wide in pairs) == ["speech/a.wav", "speech/sub/b.wav"]
    for narrow, wide in pairs:
        reference_path = references / os.path.relpath(wide, out / "wb" / "speech")
        if not reference_path.exists():
            reference_path = reference_path.with_suffix(".flac")
        reference = soundfile.read(reference_path, dtype="float32")[0]
        written_reference, rate = soundfile.read(wide, dtype="float32")
        assert rate == 16000
        np.testing.assert_array_equal(written_reference, reference)
        # The narrowband side: the fixed channel, quantised to 16-bit, then the codec (here: halved),
        # to within the last bit of libsndfile's rounding.
        pcm = np.round(evaluation_degradation(reference) * 32768).astype(np.int32)
        decoded, rate = soundfile.read(narrow, dtype="int16")
        assert rate == 8000 and soundfile.info(narrow).subtype == "PCM_16"
        assert np.max(np.abs(decoded - pcm // 2)) <= 1
    assert sorted(os.listdir(out)) == ["nb", "wb"]  # no scratch files left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # a plain mkdir's mode, not mkdtemp's 0700
    assert _digest(references) == before


def test_telephone_channel_without_codec_is_the_telephone_band_as_pcm(tmp_path, references, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg needed without a codec
    out = tmp_path / "pairs"
    assert codec_pairs.build_pairs(str(out), "pcm", [str(references)], channel="telephone") == 2
    reference = soundfile.read(references / "a.wav", dtype="float32")[0]
    narrow, rate = soundfile.read(out / "nb" / "speech" / "a.wav", dtype="int16")
    assert rate == 8000
    expected = np.round(telephone_degradation(reference) * 32768).astype(np.int32)
    assert np.max(np.abs(narrow - expected)) <= 1
    with pytest.raises(codec_pairs.CodecPairsError, match="--channel 'radio': choose one of lowpass, telephone"):
        codec_pairs.build_pairs(str(tmp_path / "other"), "pcm", [str(references)], channel="radio")


def test_a_pair_that_would_clip_is_scaled_on_both_sides(tmp_path, fake_ffmpeg):
    refs = tmp_path / "loud"
    refs.mkdir()
    # A square wave at nearly full scale: band-limiting it rings past full scale (Gibbs).
    square = 0.99 * np.sign(np.sin(2 * np.pi * 310 * np.arange(16000) / 16000))
    write_wav(refs / "a.wav", square, 16000)
    reference = soundfile.read(refs / "a.wav", dtype="float32")[0]
    channel = evaluation_degradation(reference)
    assert np.max(np.abs(channel)) > 1.0  # the channel's ripple overshoots full scale: the test bites
    codec_pairs.build_pairs(str(tmp_path / "pairs"), "g711-mulaw", [str(refs)])
    scale = codec_pairs.FULL_SCALE / np.max(np.abs(channel))
    written = soundfile.read(tmp_path / "pairs" / "wb" / "loud" / "a.wav", dtype="float32")[0]
    np.testing.assert_allclose(written, scale * reference, rtol=1e-6, atol=1e-7)
    decoded = soundfile.read(tmp_path / "pairs" / "nb" / "loud" / "a.wav", dtype="int16")[0]
    expected = np.round(scale * channel * 32768).astype(np.int32) // 2  # unclipped, then "coded"
    assert np.max(np.abs(decoded - expected)) <= 1


def test_a_failing_codec_or_no_ffmpeg_leaves_nothing(tmp_path, references, fake_ffmpeg, monkeypatch):
    monkeypatch.setenv("FAKE_FFMPEG_FAIL", "1")
    with pytest.raises(codec_pairs.CodecPairsError, match=r"gsm encoder: ffmpeg failed \(Unknown encoder 'libgsm'\)"):
        codec_pairs.build_pairs(str(tmp_path / "pairs"), "gsm", [str(references)])
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(codec_pairs.CodecPairsError, match="ffmpeg not found"):
        codec_pairs.build_pairs(str(tmp_path / "pairs"), "gsm", [str(references)])
    assert sorted(os.listdir(tmp_path)) == ["bin", "empty_bin", "refs"]  # no output, no temporary folder


def _run(*args):
    return subprocess.run([sys.executable, "-m", "eval.codec_pairs", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def test_cli_refuses_bad_requests_with_one_line(tmp_path, references):
    (tmp_path / "taken").mkdir()
    (tmp_path / "twins").mkdir()
    write_wav(tmp_path / "twins" / "a.wav", speech_like(0.5, 16000, seed=5), 16000)
    soundfile.write(tmp_path / "twins" / "a.flac", speech_like(0.5, 16000, seed=6), 16000)
    (tmp_path / "other" / "speech").mkdir(parents=True)
    for args, message in (
        ((tmp_path / "taken", "--codec", "gsm", references), "already exists"),
        ((tmp_path / "new", "--codec", "gsm", tmp_path / "nope"), "nope: not a directory"),
        ((tmp_path / "new", "--codec", "gsm", tmp_path / "other" / "speech"), "no audio files"),
        ((tmp_path / "new", "--codec", "gsm", references, tmp_path / "other" / "speech"), "same name"),
        ((tmp_path / "new", "--codec", "amr", references), "invalid choice: 'amr'"),
        ((tmp_path / "new", "--codec", "gsm", tmp_path / "twins"), "would both be written as twins/a.wav"),
    ):
        result = _run(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()
