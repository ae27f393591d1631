"""bwe.data.debian_corpus through ``python -m bwe.data.prepare debian-corpus``, with a stubbed download.

Tiny .deb packages are built with ``dpkg-deb --build``, holding a few short generated recordings at
the paths the real packages use, and a fake ``apt-get`` first on PATH hands them out (and logs each
call). The G.722 prompt needs ffmpeg to be made; without ffmpeg that part alone is left out.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import soxr

from bwe.data import debian_corpus, prepare
from signals import speech_like

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                                reason="dpkg-deb is not installed: the test builds and unpacks real .deb files")
HAVE_FFMPEG = shutil.which("ffmpeg") is not None

FESTVOX_DIR = "usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"
G722_MEMBER = "usr/share/asterisk/sounds/en/hello-world.g722"


def corpus_key(package: str, member: str) -> str:
    return hashlib.md5(f"{package}/{member}".encode()).hexdigest()[:8]


def split_of(key: str) -> str:
    return "valid" if int(key[:2], 16) < 13 else "train"


def festvox_member(split: str) -> str:
    """A festvox-ru recording name whose key puts it into ``split``."""
    return next(m for n in range(1000) if split_of(corpus_key("festvox-ru", m := f"{FESTVOX_DIR}/ru_{n:04d}.wav")) == split)


class Recording:
    """One file of a fake package: its samples, how it is stored, and what the corpus should make of it."""

    def __init__(self, package, member, seconds, rate, source=None, channels=1, fmt="WAV", seed=0):
        self.package, self.member, self.rate, self.source, self.fmt = package, member, rate, source, fmt
        x = speech_like(seconds, rate=rate, seed=seed)
        self.samples = np.stack([x, 0.5 * x[::-1]], axis=1) if channels == 2 else x

    def write(self, root: str) -> None:
        path = os.path.join(root, self.member)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        soundfile.write(path, self.samples, self.rate, format=self.fmt, subtype="VORBIS" if self.fmt == "OGG" else "PCM_16")


# source None: not part of the corpus (a pattern does not match, or the file is skipped).
RECORDINGS = [
    Recording("festvox-ru", festvox_member("valid"), 0.5, 16000, "festvox-ru", seed=1),
    Recording("festvox-ru", festvox_member("train"), 0.4, 16000, "festvox-ru", seed=2),
    Recording("festvox-ru", f"{FESTVOX_DIR}/ru_short.wav", 0.2, 16000, seed=3),  # < 1/4 s
    Recording("festvox-ru", "usr/share/festival/voices/russian/msu_ru_nsh_clunits/festival/x.wav", 0.5, 16000),
    Recording("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/cat_desc.ogg", 0.5, 44100,
              "tuxpaint", channels=2, fmt="OGG", seed=4),
    Recording("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/cat.ogg", 0.5, 44100, fmt="OGG"),
    Recording("klettres-data", "usr/share/klettres/data/en/alpha/a b!.ogg", 0.3, 22050, "klettres", fmt="OGG", seed=5),
    Recording("klettres-data", "usr/share/klettres/data/en/alpha/b.ogg", 0.5, 8000, fmt="OGG", seed=6),  # < 16 kHz
    Recording("ktuberling-data", "usr/share/ktuberling/sounds/de/hut.wav", 0.4, 48000, "ktuberling", seed=7),
    Recording("kajongg", "usr/share/kajongg/voices/ROBOT/s1.ogg", 0.6, 16000, "kajongg", fmt="OGG", seed=8),
]
UNREADABLE_MEMBER = ("ktuberling-data", "usr/share/ktuberling/sounds/de/broken.ogg")


def build_deb(package: str, tree: str, out_dir: str) -> None:
    os.makedirs(os.path.join(tree, "DEBIAN"), exist_ok=True)
    with open(os.path.join(tree, "DEBIAN", "control"), "w") as f:
        f.write(f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: test <test@example.org>\n"
                "Description: a fake package for tests\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", tree,
                    os.path.join(out_dir, f"{package}_1.0_all.deb")], check=True, capture_output=True)


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """Folder of fake .deb files for every package, the G.722 prompt's decode (None without ffmpeg), and
    the folder of the packages' contents."""
    base = tmp_path_factory.mktemp("apt")
    repo, trees = str(base / "repo"), base / "trees"
    os.makedirs(repo)
    for recording in RECORDINGS:
        recording.write(str(trees / recording.package))
    package, member = UNREADABLE_MEMBER
    (trees / package / member).write_bytes(os.urandom(3000))
    g722_decode = None
    if HAVE_FFMPEG:
        source = str(base / "prompt.wav")
        soundfile.write(source, speech_like(0.5, rate=16000, seed=9), 16000, subtype="PCM_16")
        g722 = trees / "asterisk-core-sounds-en-g722" / G722_MEMBER
        g722.parent.mkdir(parents=True)
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", source, "-f", "g722", str(g722)], check=True)
        g722_decode = str(base / "decoded.wav")
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "g722", "-i", str(g722), "-ar", "16000",
                        g722_decode], check=True)
    for package in debian_corpus.PACKAGES:
        doc = trees / package / "usr" / "share" / "doc" / package
        doc.mkdir(parents=True, exist_ok=True)
        (doc / "copyright").write_text("test data\n")
        build_deb(package, str(trees / package), repo)
    return repo, g722_decode, str(trees)


@pytest.fixture
def apt(repository, tmp_path, monkeypatch):
    """A fake apt-get first on PATH; returns (its log, the folder it serves from, the folder it is in)."""
    repo = str(tmp_path / "served")
    shutil.copytree(repository[0], repo)
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text(f"""#!/bin/sh
echo "$*" >> '{log}'
[ "$1" = update ] && exit 0
for arg in "$@"; do package=$arg; done
[ "$1" = download ] && [ -f '{repo}'/"$package"_1.0_all.deb ] && exec /bin/cp '{repo}'/"$package"_1.0_all.deb .
echo "E: Unable to locate package $package" >&2
exit 100
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    log.touch()
    return log, repo, str(bin_dir)


def apt_calls(log) -> list[str]:
    return log.read_text().splitlines()


def expected_pcm16(path: str) -> np.ndarray:
    """The golden output for the input ``path``, made here without bwe: the channel mean, soxr VHQ to
    16 kHz, 16-bit."""
    x, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = x.mean(axis=1, dtype=np.float64).astype(np.float32) if x.shape[1] > 1 else x[:, 0]
    if rate != 16000:
        mono = soxr.resample(mono, rate, 16000, quality="VHQ")
    buf = io.BytesIO()
    soundfile.write(buf, np.clip(mono, -1, 1), 16000, format="WAV", subtype="PCM_16")
    return soundfile.read(io.BytesIO(buf.getvalue()), dtype="int16")[0]


def output_rel(source: str, package: str, member: str) -> str:
    key = corpus_key(package, member)
    name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in os.path.splitext(os.path.basename(member))[0])
    return f"{split_of(key)}/{source}/{name}_{key}.wav"


def corpus_files(dest: str) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(dest):
        dirnames[:] = [d for d in dirnames if d != ".raw"]
        found.update(os.path.relpath(os.path.join(dirpath, n), dest) for n in filenames)
    return found


def build(dest, *extra, jobs="1") -> int:
    return prepare.main(["debian-corpus", "--root", str(dest), "--jobs", jobs, *extra])


def test_corpus_has_the_script_layout_rows_and_audio(apt, repository, tmp_path, capsys):
    log, _, _ = apt
    dest = tmp_path / "corpus"
    assert build(dest, jobs="2") == 0
    out = capsys.readouterr().out

    assert sorted(apt_calls(log)) == sorted(f"download -qq {p}" for p in debian_corpus.PACKAGES)  # no update
    kept = [r for r in RECORDINGS if r.source]
    rows = {output_rel(r.source, r.package, r.member): (r.source, r) for r in kept}
    if repository[1]:
        rows[output_rel("asterisk-g722", "asterisk-core-sounds-en-g722", G722_MEMBER.replace(".g722", ".wav"))] = (
            "asterisk-g722", None)
    assert corpus_files(str(dest)) == set(rows) | {"corpus.tsv"}
    assert {"valid", "train"} == {rel.split("/")[0] for rel in rows}
    assert any(os.path.basename(rel).startswith("a_b__") for rel in rows)  # "a b!.ogg": safe characters only

    lines = (dest / "corpus.tsv").read_text().splitlines()
    assert lines == sorted(lines) and len(lines) == len(rows)
    for line in lines:
        source, split, rel, seconds = line.split("\t")
        assert (source, split) == (rows[rel][0], rel.split("/")[0])
        info = soundfile.info(str(dest / rel))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert float(seconds) == pytest.approx(info.frames / 16000, abs=0.005)
        got = soundfile.read(str(dest / rel), dtype="int16")[0]
        recording = rows[rel][1]
        golden = (soundfile.read(repository[1], dtype="int16")[0] if recording is None
                  else expected_pcm16(os.path.join(repository[2], recording.package, recording.member)))
        np.testing.assert_array_equal(got, golden, err_msg=rel)

    assert "skipped 1 sampled below 16 kHz, 1 shorter than 1/4 s, 1 unreadable" in out
    assert f"total {sum(float(r.split(chr(9))[3]) for r in lines) / 3600:.2f} h in {len(lines)} files" in out
    raw = dest / ".raw"
    assert sorted(os.listdir(raw / "debs")) == sorted(f"{p}_1.0_all.deb" for p in debian_corpus.PACKAGES)
    assert not [n for n in os.listdir(raw) if n.startswith(".")]  # no staging folders left


def test_rerun_reuses_downloads_unpacked_packages_and_a_finished_corpus(apt, tmp_path, capsys):
    log, _, _ = apt
    dest = tmp_path / "corpus"
    assert build(dest) == 0
    tsv = (dest / "corpus.tsv").read_bytes()
    n_calls = len(apt_calls(log))
    sentinel = dest / ".raw" / "kajongg" / "unpacked-once"
    sentinel.touch()
    capsys.readouterr()

    done = subprocess.run([sys.executable, "-m", "bwe.data.prepare", "debian-corpus", "--root", str(dest)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"already built in {dest} ({len(tsv.splitlines())} files in corpus.tsv; delete it to rebuild)" in done.stdout

    (dest / "corpus.tsv").unlink()
    decoded = list((dest / ".raw").glob("asterisk-core-sounds-en-g722/**/*.wav"))
    decoded_mtimes = [p.stat().st_mtime_ns for p in decoded]
    assert build(dest) == 0
    assert len(apt_calls(log)) == n_calls  # nothing downloaded again
    assert sentinel.exists()  # nor unpacked again
    assert [p.stat().st_mtime_ns for p in decoded] == decoded_mtimes  # nor decoded again
    assert (dest / "corpus.tsv").read_bytes() == tsv


def test_a_package_apt_cannot_download_is_named_with_the_way_out(apt, tmp_path, capsys):
    log, repo, _ = apt
    os.rename(os.path.join(repo, "kajongg_1.0_all.deb"), os.path.join(repo, "hidden.deb"))
    dest = tmp_path / "corpus"
    assert build(dest) == 1
    err = capsys.readouterr().err
    assert "apt-get download kajongg failed (exit status 100): E: Unable to locate package kajongg" in err
    assert "--apt-update" in err and f"put kajongg_*.deb into {dest / '.raw' / 'debs'} by hand" in err
    assert not (dest / "corpus.tsv").exists() and not (dest / "train").exists()
    assert not [n for n in os.listdir(dest / ".raw" / "debs") if n.startswith(".")]

    os.rename(os.path.join(repo, "hidden.deb"), os.path.join(repo, "kajongg_1.0_all.deb"))
    n_calls = len(apt_calls(log))
    assert build(dest, "--apt-update") == 0
    assert apt_calls(log)[n_calls:] == ["update -qq", "download -qq kajongg"]  # the others were kept


def link_tools(folder, names) -> None:
    for name in names:
        os.symlink(shutil.which(name), os.path.join(folder, name))


@pytest.mark.parametrize("missing", ["apt-get", "dpkg-deb", "ffmpeg"])
def test_missing_tools_are_named_with_how_to_get_them(apt, tmp_path, monkeypatch, capsys, missing):
    if missing == "ffmpeg" and not HAVE_FFMPEG:
        pytest.skip("ffmpeg is not installed: no G.722 prompt to decode")
    _, _, fake_apt_bin = apt
    tools = tmp_path / "tools"
    tools.mkdir()
    link_tools(tools, [name for name in ("dpkg-deb", "tar") if name != missing])
    path = str(tools) if missing == "apt-get" else f"{fake_apt_bin}{os.pathsep}{tools}"
    monkeypatch.setenv("PATH", path)
    assert build(tmp_path / "corpus") == 1
    err = capsys.readouterr().err
    expected = {
        "apt-get": "apt-get not found on PATH; it downloads the packages and comes with Debian and Ubuntu; elsewhere,"
                   f" put the .deb files of {' '.join(debian_corpus.PACKAGES)} (from packages.debian.org) into",
        "dpkg-deb": "dpkg-deb not found on PATH; it unpacks the packages",
        "ffmpeg": "ffmpeg not found on PATH; it decodes the G.722 Asterisk prompts; install it",
    }[missing]
    assert expected in err
