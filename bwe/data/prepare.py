"""Fetch training data: ``python -m bwe.data.prepare``.

    python -m bwe.data.prepare librispeech --root DATA --download --subsets train-clean-100 dev-clean
    python -m bwe.data.prepare vctk --root DATA --download
    python -m bwe.data.prepare debian-corpus --root CORPUS

``debian-corpus`` builds the real-speech corpus of the bundled models from Debian packages (see
:mod:`bwe.data.debian_corpus`). The rest of this module downloads, verifies and extracts
LibriSpeech and VCTK.

Each step can be interrupted and rerun:

- Downloads go to ``<archive>.part`` and continue where they stopped (HTTP ``Range``); a server
  that ignores ``Range`` makes the download start over rather than corrupt the file. Dropped
  connections are retried, each retry resuming.
- A finished download is checked against the SHA-256 in :data:`CHECKSUMS` (or one given with
  ``--checksum NAME=SHA256``) before it is renamed to its final name; on a mismatch the bad file is
  deleted, nothing is extracted and the error names both digests. Where no digest is known the size
  announced by the server is checked and the archive's own CRCs are checked as it is extracted.
- Extraction writes into a hidden temporary folder next to the target and moves the result into
  place with ``rename`` (whole subset folders at once), so an interrupted extraction leaves no
  half-filled corpus folder. Members with absolute paths, ``..``, links or device files are refused
  before anything reaches the target.
- A corpus folder that already exists (``LibriSpeech/<subset>``, ``VCTK-Corpus-0.92``) is not
  downloaded or extracted again; rerunning only prints the listing.

Without ``--download``, archives already in ``--root`` (downloaded by hand) are verified and
extracted. The archives are kept unless ``--remove-archives`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import posixpath
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bwe.data import datasets, debian_corpus

logger = logging.getLogger(__name__)

LIBRISPEECH_URL = "https://www.openslr.org/resources/12"
VCTK_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3443"

# SHA-256 of the official archives, as torchaudio.datasets (LIBRISPEECH, VCTK_092) pins them; the
# dev-clean value also matches independent recomputations. openslr.org publishes MD5s
# (resources/12/md5sum.txt), which are not repeated here.
CHECKSUMS = {
    "dev-clean.tar.gz": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other.tar.gz": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean.tar.gz": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other.tar.gz": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100.tar.gz": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360.tar.gz": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500.tar.gz": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
    "VCTK-Corpus-0.92.zip": "f96258be9fdc2cbff6559541aae7ea4f59df3fcaf5cf963aae5ca647357e359c",
}

_CHUNK = 1 << 20
RETRY_BACKOFF_S = 2.0  # wait before retry k is k times this
_TRANSIENT_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


class PrepareError(RuntimeError):
    """Download, verification or extraction failed; the message says which file and why."""


class ChecksumError(PrepareError):
    """A downloaded or supplied archive does not have the expected SHA-256."""


@dataclass(frozen=True)
class Archive:
    """One archive of a corpus.

    Attributes:
        name: file name on the server and in ``--root``.
        target: the folder (relative to ``--root``) the archive creates; its presence means done.
        extract_to: folder (relative to ``--root``) the members are extracted into.
    """

    name: str
    target: str
    extract_to: str = ""


def librispeech_archive(subset: str) -> Archive:
    if subset not in datasets.LIBRISPEECH_SUBSETS:
        raise PrepareError(f"unknown LibriSpeech subset {subset!r}; known: {', '.join(datasets.LIBRISPEECH_SUBSETS)}")
    # The tarballs hold LibriSpeech/<subset>/... plus shared LibriSpeech/*.TXT files.
    return Archive(name=f"{subset}.tar.gz", target=posixpath.join("LibriSpeech", subset))


# The 0.92 zip has no top-level folder (wav48_silence_trimmed/, txt/, speaker-info.txt, ...).
VCTK_ARCHIVE = Archive(name="VCTK-Corpus-0.92.zip", target="VCTK-Corpus-0.92", extract_to="VCTK-Corpus-0.92")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _verify_sha256(path: str, expected: str | None, source: str) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"{source}: SHA-256 mismatch: expected {expected.lower()}, got {actual}")


def _content_range_total(value: str | None) -> int | None:
    """Total size from a ``Content-Range: bytes a-b/total`` (or ``bytes */total``) header."""
    match = re.match(r"^\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*$", value or "")
    return int(match.group(1)) if match else None


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/", value or "")
    return int(match.group(1)) if match else None


def _progress(total: int | None, initial: int, desc: str):
    from tqdm import tqdm

    # disable=None: a bar on a terminal, silence in logs and tests.
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=None, leave=False)


def _fetch_once(url: str, part: str, timeout: float) -> bool:
    """One request continuing ``part`` from its current size. Returns True when the file is complete.

    A server answering 200 to a ranged request sends the whole file, so ``part`` is rewritten from
    the start; 416 (range not satisfiable) means ``part`` already holds every byte, or is longer
    than the file and is restarted.
    """
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "bwe-prepare"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            total = _content_range_total(e.headers.get("Content-Range"))
            e.close()
            if total == offset:
                return True
            os.truncate(part, 0)
            return False
        raise
    with response:
        if response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise PrepareError(f"{url}: server resumed at byte {start}, asked for {offset}")
            total = _content_range_total(response.headers.get("Content-Range"))
            mode = "ab"
        else:
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
        with open(part, mode) as out, _progress(total, offset, os.path.basename(part)) as bar:
            while block := response.read(_CHUNK):
                out.write(block)
                bar.update(len(block))
    size = os.path.getsize(part)
    if total is None:
        return True  # nothing to check the length against; the checksum or the archive CRCs will
    if size > total:
        os.truncate(part, 0)
        return False
    return size == total


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff_s: float | None = None,
) -> str:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming an earlier partial download.

    Up to ``retries`` dropped connections or short reads are retried, each continuing from the
    bytes already on disk. The finished file is checked against ``sha256`` (when given) before it
    is renamed to ``dest``; on a mismatch the download is deleted and ChecksumError raised.

    Raises:
        PrepareError: the server refused (HTTP error) or the retries ran out; ``dest.part`` is kept
            so that the next call resumes.
        ChecksumError: the finished download has another SHA-256.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    dest = os.fspath(dest)
    part = dest + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    for attempt in range(retries + 1):
        try:
            if _fetch_once(url, part, timeout):
                break
            reason = "incomplete transfer"
        except urllib.error.HTTPError as e:
            raise PrepareError(f"{url}: HTTP {e.code} {e.reason}") from None
        except _TRANSIENT_ERRORS as e:
            reason = f"{type(e).__name__}: {e}"
        if attempt == retries:
            kept = os.path.getsize(part) if os.path.exists(part) else 0
            raise PrepareError(f"{url}: download failed after {retries + 1} attempts ({reason});"
                               f" {kept} bytes kept in {part}, rerun to resume")
        logger.warning("%s: %s; resuming (attempt %d of %d)", url, reason, attempt + 2, retries + 1)
        time.sleep((RETRY_BACKOFF_S if backoff_s is None else backoff_s) * (attempt + 1))
    try:
        _verify_sha256(part, sha256, url)
    except ChecksumError as e:
        os.unlink(part)
        raise ChecksumError(f"{e}; the download was deleted, nothing was extracted") from None
    os.replace(part, dest)
    return dest


def _check_member_name(archive: str, name: str) -> None:
    """Refuse names that would land outside the extraction folder."""
    normalised = name.replace("\\", "/")
    if (not normalised or normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised)
            or ".." in normalised.split("/")):
        raise PrepareError(f"{archive}: unsafe member path {name!r} (absolute or with '..'); nothing was extracted")


def _safe_tar_filter(archive: str) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo]:
    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        _check_member_name(archive, member.name)
        if not (member.isreg() or member.isdir()):
            raise PrepareError(f"{archive}: member {member.name!r} is a link or special file, which corpus"
                               " archives never contain; nothing was extracted")
        # tarfile's own "data" filter also drops set-uid bits and checks the final path.
        return tarfile.data_filter(member, dest)

    return check


def _extract_into(archive: str, dest: str) -> None:
    if tarfile.is_tarfile(archive):
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter=_safe_tar_filter(archive))
        except tarfile.FilterError as e:
            raise PrepareError(f"{archive}: unsafe member ({e}); nothing was extracted") from None
        except (tarfile.TarError, EOFError, OSError) as e:
            raise PrepareError(f"{archive}: corrupt or truncated archive ({e})") from None
    elif zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member_name(archive, info.filename)
                    mode = info.external_attr >> 16
                    if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
                        raise PrepareError(f"{archive}: member {info.filename!r} is a link or special file;"
                                           " nothing was extracted")
                zf.extractall(dest)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
            raise PrepareError(f"{archive}: corrupt or truncated archive ({e})") from None
    else:
        raise PrepareError(f"{archive}: neither a tar nor a zip archive")


def _merge(src: str, dest: str) -> None:
    """Move the tree ``src`` into ``dest``: whole folders by one rename, never overwriting a file."""
    for name in sorted(os.listdir(src)):
        s, d = os.path.join(src, name), os.path.join(dest, name)
        if not os.path.lexists(d):
            os.rename(s, d)
        elif os.path.isdir(s) and os.path.isdir(d) and not os.path.islink(d):
            _merge(s, d)


def extract(archive: str | os.PathLike, root: str | os.PathLike, extract_to: str = "") -> None:
    """Extract ``archive`` into ``root/extract_to`` safely and atomically (see the module docstring).

    The members go to a hidden temporary folder inside ``root`` first (same file system, so the
    final moves are renames); on any error that folder is removed and ``root`` is untouched.
    Existing files in ``root`` are never overwritten.
    """
    archive, root = os.fspath(archive), os.fspath(root)
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".extract-{os.path.basename(archive)}-", dir=root)
    try:
        inner = os.path.join(staging, extract_to) if extract_to else staging
        os.makedirs(inner, exist_ok=True)
        _extract_into(archive, inner)
        _merge(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_archive(
    archive: Archive,
    root: str,
    base_url: str,
    download_missing: bool,
    sha256: str | None,
    remove_archive: bool = False,
    retries: int = 5,
) -> str:
    """Make ``root/archive.target`` exist: download (optional), verify, extract. Returns the target."""
    target = os.path.join(root, archive.target)
    if os.path.isdir(target):
        logger.info("%s exists; not extracting %s again", target, archive.name)
        return target
    path = os.path.join(root, archive.name)
    url = f"{base_url.rstrip('/')}/{archive.name}"
    if sha256 is None:
        logger.warning("%s: no SHA-256 known; checking only the size the server announces and the"
                       " archive's own CRCs", archive.name)
    if os.path.exists(path):
        _verify_sha256(path, sha256, path)
    elif download_missing:
        logger.info("downloading %s", url)
        download(url, path, sha256=sha256, retries=retries)
    else:
        raise PrepareError(f"{path}: archive not found and {target} does not exist;"
                           f" pass --download to fetch {url}")
    logger.info("extracting %s", path)
    extract(path, root, archive.extract_to)
    if not os.path.isdir(target):
        raise PrepareError(f"{path}: extracted, but {target} did not appear; is it the right archive?")
    if remove_archive:
        os.unlink(path)
    return target


def prepare(
    corpus: str,
    root: str | os.PathLike,
    subsets: Sequence[str] = (),
    download_missing: bool = False,
    base_url: str | None = None,
    checksums: dict[str, str] | None = None,
    remove_archives: bool = False,
    retries: int = 5,
) -> dict[str, datasets.FileList]:
    """Prepare ``corpus`` (``librispeech`` or ``vctk``) under ``root``; returns the file listing per split.

    ``checksums`` (archive name -> SHA-256) override or extend :data:`CHECKSUMS`, e.g. for a mirror
    that repackages the archives.
    """
    root = os.fspath(root)
    known = {**CHECKSUMS, **(checksums or {})}
    if corpus == "librispeech":
        subsets = list(subsets) or ["train-clean-100", "dev-clean"]
        archives = [librispeech_archive(s) for s in subsets]
        base_url = base_url or LIBRISPEECH_URL
    elif corpus == "vctk":
        if subsets:
            raise PrepareError("vctk comes as one archive; --subsets applies to librispeech only")
        archives = [VCTK_ARCHIVE]
        base_url = base_url or VCTK_URL
    else:
        raise PrepareError(f"unknown corpus {corpus!r}; use librispeech or vctk")
    for archive in archives:
        prepare_archive(archive, root, base_url, download_missing, known.get(archive.name),
                        remove_archive=remove_archives, retries=retries)
    if corpus == "librispeech":
        return {s: datasets.screen_files(datasets.librispeech_files(root, [s])) for s in subsets}
    return {s: datasets.screen_files(datasets.vctk_files(root, [s])) for s in ("train", "test")}


def _parse_checksums(values: Sequence[str]) -> dict[str, str]:
    parsed = {}
    for value in values:
        name, sep, digest = value.partition("=")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{64}", digest.strip()):
            raise PrepareError(f"--checksum {value!r}: expected ARCHIVE_NAME=<64 hex digits of SHA-256>")
        parsed[name.strip()] = digest.strip().lower()
    return parsed


def _add_archive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="folder that receives the archives and the corpus")
    parser.add_argument("--download", action="store_true", help="download archives missing from --root")
    parser.add_argument("--subsets", nargs="+", default=[],
                        help="LibriSpeech subsets (default: train-clean-100 dev-clean)")
    parser.add_argument("--base-url", help=f"mirror to download from (default: {LIBRISPEECH_URL} / {VCTK_URL})")
    parser.add_argument("--checksum", action="append", default=[], metavar="NAME=SHA256",
                        help="expected SHA-256 of an archive, overriding the built-in table (repeatable)")
    parser.add_argument("--remove-archives", action="store_true", help="delete each archive once extracted")
    parser.add_argument("--retries", type=int, default=5, help="resumed retries per download (default 5)")


def _add_debian_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True,
                        help="folder that receives train/, valid/, corpus.tsv and .raw/ (the packages, about 1.5 GB)")
    parser.add_argument("--apt-update", action="store_true",
                        help="run apt-get update (needs root) before downloading; without it the system's"
                             " package lists are used as they are")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="recordings converted at a time (default: the number of CPUs)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bwe.data.prepare",
        description="Fetch training data: download (resuming), verify (SHA-256) and safely extract LibriSpeech"
                    " or VCTK 0.92, or build the real-speech corpus of the bundled models from Debian packages.",
    )
    corpora = parser.add_subparsers(dest="corpus", required=True, metavar="{librispeech,vctk,debian-corpus}")
    for name, what in (("librispeech", "LibriSpeech from openslr.org"), ("vctk", "VCTK 0.92 from datashare.ed.ac.uk")):
        _add_archive_arguments(corpora.add_parser(name, help=what, description=f"Download, verify and extract {what}."))
    _add_debian_corpus_arguments(corpora.add_parser(
        "debian-corpus", help="about 7 h of wideband speech from Debian packages (apt-get, dpkg-deb, ffmpeg)",
        description=debian_corpus.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _run_debian_corpus(args: argparse.Namespace) -> int:
    result = debian_corpus.build_corpus(args.root, apt_update=args.apt_update, jobs=args.jobs)
    if result.reused:
        print(f"debian-corpus: already built in {args.root} ({len(result.entries)} files in"
              f" {debian_corpus.TSV_NAME}; delete it to rebuild)")
    for line in result.summary_lines():
        print(f"debian-corpus {line}")
    raw = os.path.join(args.root, ".raw")
    print(f"use data.train_dir={os.path.join(args.root, 'train')} data.valid_dir={os.path.join(args.root, 'valid')};"
          f" {raw} holds the packages (the eval tool asterisk_pairs reads it; otherwise it can be deleted)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "retries", 0) < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    if getattr(args, "jobs", 1) < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.corpus == "debian-corpus":
            return _run_debian_corpus(args)
        listings = prepare(args.corpus, args.root, args.subsets, args.download, args.base_url,
                           _parse_checksums(args.checksum), args.remove_archives, args.retries)
    except (PrepareError, debian_corpus.DebianCorpusError, datasets.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, listing in listings.items():
        print(f"{args.corpus} {split}: {listing.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
