"""Resumable, verified downloads and safe archive extraction (standard library only).

The MS MARCO files are gigabytes served from blob storage: a transfer that dies at 90% must
continue where it stopped, a file that does not match its recorded checksum must never be
taken for the real one, and an archive must not write outside the folder it is extracted to.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import http.client
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
from dataclasses import dataclass
from pathlib import Path

from lead.errors import DataError
from lead.io import atomic_path

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Azure blob storage (MS MARCO's host) answers Range requests properly only for recent API
# versions; other servers ignore the header.
HEADERS = {"User-Agent": "lead-data/0.1", "x-ms-version": "2019-12-12"}
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)
_CONNECTION_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


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
    """Fetch `url` to `dest`, resuming `dest.partial`, verifying size/checksums when known.

    An existing `dest` is trusted (it only ever appears by an atomic rename after
    verification) unless its size disagrees with `size`. Connection errors and 5xx answers
    are retried `retries` times with exponential backoff, each retry continuing the partial
    file with an HTTP Range request. A verification failure removes the partial file so that
    the next attempt starts from scratch, and raises DataError naming the file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest):
        if dest.exists():
            if size is None or dest.stat().st_size == size:
                return dest
            log.warning("%s has %d bytes, expected %d: downloading again", dest,
                        dest.stat().st_size, size)
            dest.unlink()
        partial = dest.with_name(dest.name + ".partial")
        failures = 0
        while True:
            before = _size(partial)
            try:
                _transfer(url, partial, size, timeout)
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
        _verify(partial, dest, size=size, md5=md5, sha256=sha256)
        os.replace(partial, dest)
    return dest


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


def _transfer(url: str, partial: Path, size: int | None, timeout: float) -> None:
    """One HTTP request that appends to `partial`, or restarts it when resuming is refused."""
    offset = _size(partial)
    if size is not None and offset > size:
        offset = 0
    if size is not None and offset == size:
        return
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
        expected = response.headers.get("Content-Length")
        received = 0
        with open(partial, "ab" if resumed else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
        if expected is not None and received < int(expected):
            raise _Incomplete(f"connection closed after {offset + received} bytes")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", header or "")
    return int(match.group(1)) if match else None


def _verify(
    partial: Path, dest: Path, *, size: int | None, md5: str | None, sha256: str | None
) -> None:
    actual_size = partial.stat().st_size
    problems = []
    if size is not None and actual_size != size:
        problems.append(f"size: expected {size} bytes, got {actual_size}")
    expected = {"md5": md5, "sha256": sha256}
    digests = {name: hashlib.new(name) for name, value in expected.items() if value}
    if digests:
        with open(partial, "rb") as file:
            while block := file.read(CHUNK):
                for digest in digests.values():
                    digest.update(block)
        for name, digest in digests.items():
            if digest.hexdigest() != expected[name].lower():
                problems.append(f"{name}: expected {expected[name]}, got {digest.hexdigest()}")
    if problems:
        partial.unlink()
        raise DataError(dest, None, "downloaded file does not match its record (" +
                        "; ".join(problems) + "); removed it, run again to download afresh")


def extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extract a .tar(.gz)/.tgz, .zip or single-file .gz into `dest_dir`, all or nothing.

    Members with absolute paths, `..` components, links leading outside `dest_dir`, or
    device files are refused (DataError naming the member); a truncated or corrupt archive
    raises DataError naming it. The archive is unpacked into a temporary sibling renamed
    into place at the end, so an existing `dest_dir` is always a complete extraction and is
    returned as it is.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if dest_dir.exists():
        return dest_dir
    name = archive.name.lower()
    with atomic_path(dest_dir) as tmp:
        tmp.mkdir()
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
