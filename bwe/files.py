"""Atomic writes whose results have the permissions a plain ``open()`` or ``mkdir`` would give them.

Every output of bwe (enhanced audio, recipes, exported models, reports, figures) is written to a
temporary file or folder beside its destination and renamed into place, so that a crash leaves the
previous file intact and a reader never sees half a file. ``tempfile`` creates files 0600 and
folders 0700, and the rename keeps that mode: without a fix another user (a web server playing a
listening test, a colleague reading a shared folder) cannot read the output. The helpers here give
the result the mode the process's umask asks for instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

__all__ = ["current_umask", "give_plain_mode", "replacing", "write_text_atomic", "staging_folder"]


def current_umask() -> int:
    """The process's umask. (Reading it means setting it, so it is set back at once.)"""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_plain_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """chmod ``path`` to what ``open(path, "w")`` (or ``os.mkdir`` with ``folder``) would have created."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, give the
    file written there a plain mode and rename it onto ``path``. On an exception the temporary file
    is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        give_plain_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)


def staging_folder(out_dir: str | os.PathLike) -> str:
    """A new empty folder beside ``out_dir`` (whose parent must exist) to build ``out_dir`` in and
    rename into place, with the mode a plain ``mkdir`` would give it."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    work = tempfile.mkdtemp(dir=os.path.dirname(out_dir), prefix=f".{os.path.basename(out_dir)}.")
    give_plain_mode(work, folder=True)
    return work
