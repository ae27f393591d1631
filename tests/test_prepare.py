"""bwe.data.prepare: resumable download, checksums, safe atomic extraction, CLI, served from loopback HTTP."""

import hashlib
import http.server
import io
import os
import re
import tarfile
import threading

import pytest

from bwe.data import prepare
from bwe.data.datasets import vctk_speaker_of
from bwe.data.prepare import ChecksumError, PrepareError, download, extract
from tiny_corpora import librispeech_members, tar_gz_bytes, vctk092_members, zip_bytes


class RangeServer:
    """A loopback HTTP server for byte strings, with ``Range: bytes=N-`` support and fault injection.

    ``cut_after[path] = (n_bytes, times)`` makes the next ``times`` GETs of ``path`` announce the
    full length but drop the connection after ``n_bytes`` of the body. ``ignore_range`` answers every
    request with 200 and the whole file, like a server without range support.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, tuple[int, int]] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if match and not server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cut, times = server.cut_after.get(self.path, (None, 0))
                if times > 0:
                    server.cut_after[self.path] = (cut, times - 1)
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = RangeServer()
    yield s
    s.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n=300_000):
    return bytes(range(256)) * (n // 256)


def test_download_writes_verified_file_without_leftovers(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    dest = download(f"{server.url}/a.bin", tmp_path / "a.bin", sha256=sha256(data), retries=0)
    assert open(dest, "rb").read() == data
    assert os.listdir(tmp_path) == ["a.bin"]


def test_interrupted_download_resumes_with_range_on_the_next_run(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    server.cut_after["/a.bin"] = (100_000, 1)
    with pytest.raises(PrepareError, match=r"download failed after 1 attempts.*100000 bytes kept.*rerun to resume"):
        download(f"{server.url}/a.bin", tmp_path / "a.bin", retries=0)
    assert os.path.getsize(tmp_path / "a.bin.part") == 100_000
    assert not (tmp_path / "a.bin").exists()

    download(f"{server.url}/a.bin", tmp_path / "a.bin", sha256=sha256(data), retries=0)
    assert (tmp_path / "a.bin").read_bytes() == data
    assert server.requests[-1] == ("/a.bin", "bytes=100000-")
    assert not (tmp_path / "a.bin.part").exists()


def test_dropped_connections_are_retried_and_resumed_within_one_call(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    server.cut_after["/a.bin"] = (70_000, 2)
    download(f"{server.url}/a.bin", tmp_path / "a.bin", sha256=sha256(data), retries=3, backoff_s=0)
    assert (tmp_path / "a.bin").read_bytes() == data
    assert [r for _, r in server.requests] == [None, "bytes=70000-", "bytes=140000-"]


def test_server_without_range_support_restarts_instead_of_corrupting(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data[:5000])
    server.ignore_range = True
    download(f"{server.url}/a.bin", tmp_path / "a.bin", sha256=sha256(data), retries=0)
    assert (tmp_path / "a.bin").read_bytes() == data


def test_complete_part_file_is_finished_by_a_416_answer(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data)
    download(f"{server.url}/a.bin", tmp_path / "a.bin", sha256=sha256(data), retries=0)
    assert (tmp_path / "a.bin").read_bytes() == data
    assert server.requests == [("/a.bin", f"bytes={len(data)}-")]


def test_http_error_is_clear(server, tmp_path):
    with pytest.raises(PrepareError, match=r"missing\.bin: HTTP 404"):
        download(f"{server.url}/missing.bin", tmp_path / "missing.bin", retries=3, backoff_s=0)
    assert len(server.requests) == 1  # a 404 is not retried


def test_librispeech_checksum_mismatch_extracts_nothing(server, tmp_path):
    # A tiny archive under an official name is checked against the official SHA-256 and must fail.
    server.files["/dev-clean.tar.gz"] = tar_gz_bytes(librispeech_members("dev-clean"))
    with pytest.raises(ChecksumError, match=r"SHA-256 mismatch: expected 76f87d09.*nothing was extracted"):
        prepare.prepare("librispeech", tmp_path, ["dev-clean"], download_missing=True, base_url=server.url, retries=0)
    assert os.listdir(tmp_path) == []  # no archive, no .part, no staging folder, no LibriSpeech/


def test_librispeech_cli_downloads_extracts_lists_and_is_idempotent(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prepare, "RETRY_BACKOFF_S", 0.0)
    archives = {s: tar_gz_bytes(librispeech_members(s)) for s in ("dev-clean", "train-clean-100")}
    for subset, data in archives.items():
        server.files[f"/mirror/{subset}.tar.gz"] = data
    server.cut_after["/mirror/dev-clean.tar.gz"] = (len(archives["dev-clean"]) // 2, 1)
    argv = ["librispeech", "--root", str(tmp_path), "--download", "--subsets", "dev-clean", "train-clean-100",
            "--base-url", f"{server.url}/mirror/", "--retries", "1"]
    argv += [f"--checksum={s}.tar.gz={sha256(d)}" for s, d in archives.items()]

    assert prepare.main(argv) == 0
    out = capsys.readouterr().out
    assert "librispeech dev-clean: 4 files" in out and "librispeech train-clean-100: 2 files" in out
    assert (tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123" / "84-121123-0001.flac").is_file()
    assert (tmp_path / "LibriSpeech" / "README.TXT").is_file()
    assert sorted(os.listdir(tmp_path)) == ["LibriSpeech", "dev-clean.tar.gz", "train-clean-100.tar.gz"]
    assert ("/mirror/dev-clean.tar.gz", f"bytes={len(archives['dev-clean']) // 2}-") in server.requests

    n_requests = len(server.requests)
    assert prepare.main(argv + ["--remove-archives"]) == 0
    assert len(server.requests) == n_requests  # nothing downloaded or extracted again
    assert "librispeech dev-clean: 4 files" in capsys.readouterr().out
    assert (tmp_path / "dev-clean.tar.gz").exists()


def test_local_archive_without_download_and_missing_archive_error(tmp_path, capsys):
    data = tar_gz_bytes(librispeech_members("dev-clean"))
    assert prepare.main(["librispeech", "--root", str(tmp_path), "--subsets", "dev-clean"]) == 1
    err = capsys.readouterr().err
    assert "dev-clean.tar.gz: archive not found" in err and "pass --download" in err
    (tmp_path / "dev-clean.tar.gz").write_bytes(data)
    with pytest.raises(ChecksumError):  # a user's own file is checked too, and kept
        prepare.prepare("librispeech", tmp_path, ["dev-clean"])
    assert (tmp_path / "dev-clean.tar.gz").read_bytes() == data
    listing = prepare.prepare("librispeech", tmp_path, ["dev-clean"], checksums={"dev-clean.tar.gz": sha256(data)},
                              remove_archives=True)
    assert len(listing["dev-clean"].files) == 4
    assert not (tmp_path / "dev-clean.tar.gz").exists()


def test_vctk_zip_prepared_with_held_out_speakers(server, tmp_path):
    data = zip_bytes(vctk092_members())
    server.files["/VCTK-Corpus-0.92.zip"] = data
    listing = prepare.prepare("vctk", tmp_path, download_missing=True, base_url=server.url,
                              checksums={"VCTK-Corpus-0.92.zip": sha256(data)}, retries=0)
    assert (tmp_path / "VCTK-Corpus-0.92" / "wav48_silence_trimmed" / "s5" / "s5_001_mic1.flac").is_file()
    assert {vctk_speaker_of(f) for f in listing["train"].files} == {"p225", "p226"}
    assert {vctk_speaker_of(f) for f in listing["test"].files} == {"p360", "s5"}
    with pytest.raises(PrepareError, match="one archive"):
        prepare.prepare("vctk", tmp_path, ["train"])


def test_vctk_official_checksum_is_enforced(server, tmp_path):
    server.files["/VCTK-Corpus-0.92.zip"] = zip_bytes(vctk092_members(utterances=1))
    with pytest.raises(ChecksumError, match="expected f96258be"):
        prepare.prepare("vctk", tmp_path, download_missing=True, base_url=server.url, retries=0)
    assert os.listdir(tmp_path) == []


def _tar_with(member: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("LibriSpeech/dev-clean/ok.txt")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"1"))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return buf.getvalue()


@pytest.mark.parametrize("make_member", [
    lambda: tarfile.TarInfo("../escape.txt"),
    lambda: tarfile.TarInfo("/tmp/absolute.txt"),
    lambda: tarfile.TarInfo("LibriSpeech/dev-clean/../../escape.txt"),
    lambda: _symlink("LibriSpeech/dev-clean/link", "/etc/passwd"),
])
def test_unsafe_archives_are_refused_before_anything_reaches_root(tmp_path, make_member):
    archive = tmp_path / "in" / "bad.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(_tar_with(make_member()))
    root = tmp_path / "root"
    with pytest.raises(PrepareError, match="unsafe member|link or special file"):
        extract(archive, root)
    assert os.listdir(root) == []
    assert not (tmp_path / "escape.txt").exists()


def _symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def test_truncated_archive_is_reported_and_leaves_root_untouched(tmp_path):
    data = tar_gz_bytes(librispeech_members("dev-clean"))
    archive = tmp_path / "dev-clean.tar.gz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(PrepareError, match="corrupt or truncated"):
        prepare.prepare("librispeech", tmp_path, ["dev-clean"], checksums={"dev-clean.tar.gz": sha256(data[: len(data) // 2])})
    assert sorted(os.listdir(tmp_path)) == ["dev-clean.tar.gz"]


def test_extraction_merges_without_overwriting(tmp_path):
    (tmp_path / "LibriSpeech").mkdir()
    (tmp_path / "LibriSpeech" / "README.TXT").write_text("the user's own")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz_bytes(librispeech_members("dev-clean")))
    extract(archive, tmp_path)
    assert (tmp_path / "LibriSpeech" / "README.TXT").read_text() == "the user's own"
    assert (tmp_path / "LibriSpeech" / "dev-clean" / "174" / "50561").is_dir()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".extract")]
