"""bwe.files: atomic writes keep the old file on failure and give the new one a plain mode."""

import contextlib
import os

import pytest

from bwe.files import current_umask, replacing, staging_folder, write_text_atomic


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_written_file_and_staging_folder_follow_the_umask(tmp_path, mask):
    with umask(mask):
        assert current_umask() == mask
        write_text_atomic(tmp_path / "a.txt", "x\r\ny\n")
        work = staging_folder(tmp_path / "out")
    assert (tmp_path / "a.txt").read_bytes() == b"x\r\ny\n"  # newlines as given
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    assert os.path.dirname(work) == str(tmp_path) and os.listdir(work) == []
    assert os.stat(work).st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700


def test_replacing_keeps_the_old_file_when_the_block_fails(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary file left


def test_replacing_overwrites_only_at_the_end(tmp_path):
    target = tmp_path / "out.wav"
    target.write_text("old")
    with replacing(target, suffix=".wav") as tmp:
        assert tmp.endswith(".wav") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "w") as f:
            f.write("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
