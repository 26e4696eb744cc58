"""Resumable, verified downloads and safe archive extraction (standard library only).

The MS MARCO files are gigabytes served from blob storage: a transfer that dies at 90% must
continue where it stopped, and a file is taken for the real one only once verified: by its
recorded size or checksum; failing a record, by the archive's own integrity (a gzip stream's
CRC32 and length, a tar's end-of-archive marker, a zip's member CRCs); failing both, by the
length the server announced and delivered. A body whose end the server never announced (no
Content-Length, not chunked) proves nothing. An archive must not write outside the folder it
is extracted to.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from lead.errors import DataError
from lead.io import atomic_path

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Azure blob storage (MS MARCO's host) answers Range requests properly only for recent API
# versions; other servers ignore the header.
HEADERS = {"User-Agent": "lead-data/0.1", "x-ms-version": "2019-12-12"}
PROGRESS_STEP = 0.05  # log a progress line every 5% of the file...
PROGRESS_SECONDS = 10.0  # ...or every 10 s, whichever comes first
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)
_CONNECTION_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)
_clock = time.monotonic


@dataclass(frozen=True)
class Remote:
    """A file to fetch and what it is known to be. None: not recorded, so not checked."""

    name: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None


class _Incomplete(Exception):
    """The server closed the connection before sending everything it announced."""


class _Retry(Exception):
    """A transient server answer (5xx, 429): try again later."""


def download(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
) -> Path:
    """Fetch `url` to `dest`, resuming `dest.partial`, and verify it (see the module doc).

    Connection errors, 5xx answers and bodies shorter than announced (or than the recorded
    size) are retried `retries` times with exponential backoff, each retry continuing the
    partial file with an HTTP Range request. A verified file gets a `dest.verified` marker,
    so a cached multi-GB file is hashed once, not on every run; a cached file without a
    valid marker is verified again. A file whose size differs from its record is downloaded
    again; one that fails its checksum or integrity check is deleted, and DataError names
    it and says to run again.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    record = Remote(dest.name, size, md5, sha256)
    with _locked(dest):
        if dest.exists() and _cached_file_is_good(dest, record):
            return dest
        partial = dest.with_name(dest.name + ".partial")
        failures = 0
        while True:
            before = _size(partial)
            try:
                announced = _transfer(url, partial, size, timeout)
                break
            except (_Incomplete, _Retry, *_CONNECTION_ERRORS) as err:
                if isinstance(err, urllib.error.HTTPError) and err.code not in _RETRYABLE_STATUS:
                    raise DataError(dest, None, f"cannot download {url}: HTTP {err.code}") from err
                # A transfer that made progress before dying is not counted as a failure:
                # a long download over a flaky link must be able to finish.
                failures = 0 if _size(partial) > before else failures + 1
                if failures > retries:
                    raise DataError(
                        dest, None, f"cannot download {url}: {failures} failed attempts: {err}"
                    ) from err
                delay = backoff * 2 ** max(failures - 1, 0)
                log.warning("download of %s interrupted (%s); retrying in %.1f s", url, err, delay)
                time.sleep(delay)
        how = _verify(partial, dest, record, announced=announced)
        os.replace(partial, dest)
        _write_marker(dest, record, how)
    return dest


def _cached_file_is_good(dest: Path, record: Remote) -> bool:
    """Whether an existing `dest` can be used as it is; False: download it again.

    A file that fails its checksum or integrity check is deleted (DataError): a cache that
    holds a corrupt file must be noticed, not silently patched over.
    """
    actual = dest.stat().st_size
    if record.size is not None and actual != record.size:
        log.warning("%s has %d bytes, expected %d: downloading again", dest, actual, record.size)
        dest.unlink()
        return False
    if _marker_matches(dest, record):
        return True
    _marker_path(dest).unlink(missing_ok=True)  # stale: it vouches for another file or record
    if not (record.md5 or record.sha256 or record.size is not None or _self_checking(dest)):
        log.warning("%s cannot be verified (nothing is recorded for it, and it is no archive "
                    "that checks itself): downloading again", dest)
        dest.unlink()
        return False
    how = _verify(dest, dest, record, announced=None)
    _write_marker(dest, record, how)
    return True


def _marker_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _marker(dest: Path, record: Remote) -> dict:
    """What a marker vouches for: this record, and the file as it was: its size and a hash of
    its first and last MiB. Not its modification time, which Snakemake may touch after a job
    (a verified multi-GB file would then be hashed again by every later stage)."""
    size = dest.stat().st_size
    sample = hashlib.sha256()
    with dest.open("rb") as handle:
        sample.update(handle.read(CHUNK))
        handle.seek(max(size - CHUNK, 0))
        sample.update(handle.read(CHUNK))
    return {"record": asdict(record), "size": size, "sample_sha256": sample.hexdigest()}


def _marker_matches(dest: Path, record: Remote) -> bool:
    try:
        written = json.loads(_marker_path(dest).read_text())
    except (OSError, ValueError):
        return False
    written.pop("verified_by", None)
    return written == _marker(dest, record)


def _write_marker(dest: Path, record: Remote, how: str) -> None:
    with atomic_path(_marker_path(dest)) as tmp:
        tmp.write_text(json.dumps({**_marker(dest, record), "verified_by": how}, sort_keys=True))


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """Serialise downloads of one file by concurrent jobs sharing a cache."""
    lock_path = dest.with_name(dest.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _transfer(url: str, partial: Path, size: int | None, timeout: float) -> int | None:
    """One HTTP request that appends to `partial`, or restarts it when resuming is refused.

    Returns the file's whole size when the server announced where the body ends
    (Content-Length, Content-Range or chunked encoding) and all of it arrived; None when the
    body simply stopped with the connection, which proves nothing.
    """
    offset = _size(partial)
    if size is not None and offset > size:
        offset = 0
    if size is not None and offset == size:
        return size
    headers = dict(HEADERS)
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Our partial file is not a prefix the server can continue: start over.
            partial.unlink()
            raise _Retry(f"HTTP 416 for a resume at byte {offset}") from err
        if err.code in _RETRYABLE_STATUS:
            raise _Retry(f"HTTP {err.code}") from err
        raise
    with response:
        resumed = bool(offset) and response.status == 206
        if resumed:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                partial.unlink()
                raise _Retry(f"server resumed at byte {start}, not {offset}")
        elif offset:
            log.info("%s ignored the Range request: restarting from byte 0", url)
            offset = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and not response.chunked else None
        progress = _Progress(partial.name.removesuffix(".partial"), offset,
                             size or (offset + expected if expected is not None else None))
        received = 0
        with open(partial, "ab" if resumed else "wb") as out:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    if size is not None and offset + received > size:
                        # Another file, or a server that never stops: not a disk's worth.
                        partial.unlink()
                        raise DataError(
                            partial.with_name(partial.name.removesuffix(".partial")), None,
                            f"the download failed verification (size: expected {size} bytes, "
                            f"got {offset + received} so far); stopped and deleted it: check "
                            f"{url}, then run again",
                        )
                    progress.update(offset + received)
            except http.client.IncompleteRead as err:
                out.write(err.partial)  # the whole chunks that came before the cut
                raise
        if expected is not None and received < expected:
            raise _Incomplete(f"connection closed after {offset + received} bytes")
        if size is not None and offset + received < size:
            raise _Incomplete(f"connection closed after {offset + received} of {size} bytes")
        progress.done(offset + received)
        # A truncated chunked body raises IncompleteRead inside response.read.
        return offset + received if expected is not None or response.chunked else None


class _Progress:
    """Start, end, and at most one line per 5% (or per 10 s) with the rate and ETA."""

    def __init__(self, name: str, offset: int, total: int | None):
        self.name, self.offset, self.total = name, offset, total
        self.start = self.last_time = _clock()
        self.last_bytes = offset
        where = f" from byte {offset:,}" if offset else ""
        log.info("downloading %s (%s)%s", name, _bytes(total) if total else "size unknown",
                 where)

    def update(self, done: int) -> None:
        now = _clock()
        step = self.total * PROGRESS_STEP if self.total else None
        if now - self.last_time < PROGRESS_SECONDS and (step is None
                                                         or done - self.last_bytes < step):
            return
        self.last_time, self.last_bytes = now, done
        rate = (done - self.offset) / max(now - self.start, 1e-9)
        if self.total:
            eta = (self.total - done) / rate if rate else float("inf")
            log.info("%s: %s of %s (%.0f%%), %s/s, ETA %s", self.name, _bytes(done),
                     _bytes(self.total), 100 * done / self.total, _bytes(rate), _duration(eta))
        else:
            log.info("%s: %s, %s/s", self.name, _bytes(done), _bytes(rate))

    def done(self, done: int) -> None:
        seconds = _clock() - self.start
        log.info("downloaded %s: %s in %s (%s/s)", self.name, _bytes(done - self.offset),
                 _duration(seconds), _bytes((done - self.offset) / max(seconds, 1e-9)))


def _bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", header or "")
    return int(match.group(1)) if match else None


def _verify(path: Path, dest: Path, record: Remote, *, announced: int | None) -> str:
    """Verify `path` (`dest` itself, or its partial file) as the module doc says; returns how
    it was verified. On failure `path` is deleted and DataError names `dest` and says to run
    again.
    """
    actual_size = path.stat().st_size
    problems, checked = [], []
    if record.size is not None:
        checked.append("size")
        if actual_size != record.size:
            problems.append(f"size: expected {record.size} bytes, got {actual_size}")
    expected = {"md5": record.md5, "sha256": record.sha256}
    digests = {name: hashlib.new(name) for name, value in expected.items() if value}
    if digests:
        log.info("verifying %s (%s, %s)", dest, _bytes(actual_size), " and ".join(digests))
        with open(path, "rb") as file:
            while block := file.read(CHUNK):
                for digest in digests.values():
                    digest.update(block)
        for name, digest in digests.items():
            checked.append(name)
            if digest.hexdigest() != expected[name].lower():
                problems.append(f"{name}: expected {expected[name]}, got {digest.hexdigest()}")
    if not checked:
        if _self_checking(dest):
            log.info("checking the integrity of %s (%s)", dest, _bytes(actual_size))
            problem = _integrity_problem(path, dest.name)
            checked.append("archive integrity")
            if problem:
                problems.append(f"archive integrity: {problem}")
        elif announced is not None and announced == actual_size:
            checked.append("the length announced by the server")
        else:
            problems.append("nothing is recorded for it and the server did not announce its "
                            "length, so a transfer cut short cannot be told from a whole one")
    if problems:
        path.unlink()
        what = "the cached file" if path == dest else "the downloaded file"
        raise DataError(dest, None, f"{what} failed verification (" + "; ".join(problems)
                        + "); deleted it, run again to download it afresh")
    log.info("verified %s (%s)", dest, ", ".join(checked))
    return ", ".join(checked)


def _self_checking(path: Path) -> bool:
    """Archives whose format proves them whole: gzip (CRC32 + length), tar, zip."""
    return path.name.lower().endswith((".gz", ".tgz", ".tar", ".zip"))


def _integrity_problem(path: Path, name: str) -> str | None:
    """Why the archive at `path` (named `name`) is not whole, or None.

    A gzip stream is decompressed to its end (which checks its CRC32 and length trailer); a
    tar, compressed or not, must reach its end-of-archive marker (tarfile alone takes a file
    that stops between two members for a whole one); a zip must have its central directory
    and every member's CRC right.
    """
    name = name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zipped:
                bad = zipped.testzip()
            return f"member {bad!r} has a wrong CRC" if bad else None
        compressed = name.endswith((".gz", ".tgz"))
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as stream:
            if name.endswith((".tar.gz", ".tgz", ".tar")) and not _reaches_end_of_archive(stream):
                return "the tar stops before its end-of-archive marker"
            while stream.read(CHUNK):
                pass
    except _CORRUPT as err:
        return f"truncated or corrupt: {err}"
    return None


def _reaches_end_of_archive(stream: IO[bytes]) -> bool:
    """Walk every member of the tar on `stream`; True if a zero block follows the last."""
    with tarfile.open(fileobj=stream, mode="r:") as tar:
        for _ in tar:
            pass
        end = tar.offset
    # tarfile stops on a zero block (the marker, read past) and on a plain end of data alike.
    return stream.tell() >= end + tarfile.BLOCKSIZE


def extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extract a .tar(.gz)/.tgz, .zip or single-file .gz into `dest_dir`, all or nothing.

    Members with absolute paths, `..` components, links leading outside `dest_dir`, or
    device files are refused (DataError naming the member); a truncated or corrupt archive
    raises DataError naming it. The archive is unpacked into a temporary sibling renamed
    into place at the end, so an existing `dest_dir` is always a complete extraction; it is
    returned as it is when it was extracted from this very archive (its name, size and
    modification time, recorded in EXTRACTED_FROM), and extracted again otherwise (an archive
    downloaded anew must not be read through an older one's files).
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    stamp = _archive_stamp(archive)
    if dest_dir.exists() and _read_stamp(dest_dir) == stamp:
        return dest_dir
    name = archive.name.lower()
    with atomic_path(dest_dir) as tmp:
        tmp.mkdir()
        (tmp / EXTRACTED_FROM).write_text(json.dumps(stamp, sort_keys=True) + "\n")
        try:
            if name.endswith((".tar.gz", ".tgz", ".tar")):
                _extract_tar(archive, tmp)
            elif name.endswith(".zip"):
                _extract_zip(archive, tmp)
            elif name.endswith(".gz"):
                with gzip.open(archive, "rb") as src, open(tmp / archive.name[:-3], "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            else:
                raise DataError(archive, None, "unknown archive type: expected .tar.gz/.zip/.gz")
        except _CORRUPT as err:
            raise DataError(archive, None, f"truncated or corrupt archive: {err}") from err
    return dest_dir


EXTRACTED_FROM = ".extracted-from.json"


def _archive_stamp(archive: Path) -> dict:
    stat = archive.stat()
    return {"archive": archive.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_stamp(dest_dir: Path) -> dict | None:
    try:
        return json.loads((dest_dir / EXTRACTED_FROM).read_text())
    except (OSError, ValueError):
        return None


def _unsafe_reason(name: str, link: str | None = None, hardlink: bool = False) -> str | None:
    """Why a member named `name` (optionally a link to `link`) must not be extracted."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "path with '..'"
    if link is not None:
        if link.startswith(("/", "\\")):
            return f"link to the absolute path {link!r}"
        base = "" if hardlink else posixpath.dirname(name)
        target = posixpath.normpath(posixpath.join(base, link))
        if target == ".." or target.startswith("../"):
            return f"link {link!r} leading outside the extraction folder"
    return None


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            link = member.linkname if (member.issym() or member.islnk()) else None
            reason = _unsafe_reason(member.name, link, hardlink=member.islnk())
            if reason is None and not (member.isfile() or member.isdir() or link is not None):
                reason = "special file (device or pipe)"
            if reason:
                raise DataError(archive, f"member {member.name!r}", f"refused: {reason}")
            tar.extract(member, dest, filter="data")


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            reason = _unsafe_reason(info.filename)
            if reason:
                raise DataError(archive, f"member {info.filename!r}", f"refused: {reason}")
        zipped.extractall(dest)
