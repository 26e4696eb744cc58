"""Downloads (lead.data.download): resume, retry, checksums, cut archives, safe extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from data_server import FileServer

from lead.data.download import download, extract
from lead.errors import DataError

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, every byte value


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_resumes_after_the_connection_drops(tmp_path):
    with FileServer({"/big.bin": PAYLOAD}) as server:
        server.drop_after["/big.bin"] = 3000
        dest = download(f"{server.url}/big.bin", tmp_path / "big.bin", size=len(PAYLOAD),
                        sha256=sha256(PAYLOAD), backoff=0.01)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/big.bin", None), ("/big.bin", "bytes=3000-")]
    assert not (tmp_path / "big.bin.partial").exists()


def test_continues_a_partial_file_left_by_an_earlier_run(tmp_path):
    (tmp_path / "big.bin.partial").write_bytes(PAYLOAD[:7000])
    with FileServer({"/big.bin": PAYLOAD}) as server:
        download(f"{server.url}/big.bin", tmp_path / "big.bin", sha256=sha256(PAYLOAD))
    assert (tmp_path / "big.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/big.bin", "bytes=7000-")]


def test_restarts_when_the_server_ignores_range(tmp_path):
    (tmp_path / "big.bin.partial").write_bytes(PAYLOAD[:7000])
    with FileServer({"/big.bin": PAYLOAD}) as server:
        server.ignore_range.add("/big.bin")
        download(f"{server.url}/big.bin", tmp_path / "big.bin", sha256=sha256(PAYLOAD))
    assert (tmp_path / "big.bin").read_bytes() == PAYLOAD


def test_retries_after_503(tmp_path):
    with FileServer({"/f.txt": b"hello\n"}) as server:
        server.fail_first["/f.txt"] = 2
        download(f"{server.url}/f.txt", tmp_path / "f.txt", retries=2, backoff=0.01)
    assert (tmp_path / "f.txt").read_bytes() == b"hello\n"
    assert len(server.requests) == 3


def test_gives_up_after_the_allowed_retries(tmp_path):
    with FileServer({"/f.txt": b"hello\n"}) as server:
        server.fail_first["/f.txt"] = 10
        with pytest.raises(DataError, match=r"f\.txt.*3 failed attempts"):
            download(f"{server.url}/f.txt", tmp_path / "f.txt", retries=2, backoff=0.01)
    assert len(server.requests) == 3
    assert not (tmp_path / "f.txt").exists()


def test_missing_file_is_not_retried(tmp_path):
    with FileServer({}) as server, pytest.raises(DataError, match="HTTP 404"):
        download(f"{server.url}/nope.txt", tmp_path / "nope.txt", backoff=0.01)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "record, message",
    [
        ({"sha256": "0" * 64}, "sha256: expected 0000"),
        ({"md5": "f" * 32}, "md5: expected ffff"),
        ({"size": 99}, "size: expected 99 bytes, got 10240"),
    ],
)
def test_mismatch_names_the_file_and_leaves_nothing(tmp_path, record, message):
    with FileServer({"/big.bin": PAYLOAD}) as server, pytest.raises(DataError) as err:
        download(f"{server.url}/big.bin", tmp_path / "big.bin", **record)
    assert "big.bin" in str(err.value) and message in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin.lock"]


def test_checksum_error_reports_the_actual_digest(tmp_path):
    with FileServer({"/f.txt": b"abc"}) as server, pytest.raises(DataError) as err:
        download(f"{server.url}/f.txt", tmp_path / "f.txt", sha256="1" * 64)
    assert sha256(b"abc") in str(err.value)


def test_a_verified_file_is_not_fetched_again(tmp_path):
    with FileServer({"/f.txt": b"abc"}) as server:
        download(f"{server.url}/f.txt", tmp_path / "f.txt", sha256=sha256(b"abc"))
        download(f"{server.url}/f.txt", tmp_path / "f.txt", sha256=sha256(b"abc"))
    assert len(server.requests) == 1


def test_mismatch_of_a_cut_short_body_without_length_is_resumed_when_the_size_is_recorded(
        tmp_path):
    with FileServer({"/big.bin": PAYLOAD}) as server:
        server.no_length.add("/big.bin")
        server.drop_after["/big.bin"] = 4000
        download(f"{server.url}/big.bin", tmp_path / "big.bin", size=len(PAYLOAD), backoff=0)
    assert (tmp_path / "big.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/big.bin", None), ("/big.bin", "bytes=4000-")]


def _tar_gz_bytes(count: int = 20, end_marker: bool = True) -> bytes:
    """A tar.gz of `count` random members; without its end-of-archive marker if asked."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i in range(count):
            data = os.urandom(3000)
            member = tarfile.TarInfo(f"f{i}.bin")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        whole_members = tar.offset
    raw = buffer.getvalue()
    return gzip.compress(raw if end_marker else raw[:whole_members], mtime=0)


@pytest.mark.parametrize("name", ["marco.tar.gz", "queries.tsv.gz", "data.zip"])
def test_an_archive_cut_short_without_length_or_record_is_refused_then_fetched(tmp_path, name):
    """The server sends no Content-Length and drops the connection: only the archive's own
    integrity can tell, so it is checked, and the cut-short file is never trusted."""
    if name.endswith(".zip"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zipped:
            zipped.writestr("data.txt", os.urandom(20000))
        whole = buffer.getvalue()
    elif name.endswith(".tar.gz"):
        whole = _tar_gz_bytes()
    else:
        whole = gzip.compress(os.urandom(30000), mtime=0)
    dest = tmp_path / name
    with FileServer({f"/{name}": whole}) as server:
        server.no_length.add(f"/{name}")
        server.drop_after[f"/{name}"] = len(whole) * 2 // 3
        with pytest.raises(DataError) as err:
            download(f"{server.url}/{name}", dest, backoff=0)
        message = str(err.value)
        assert message.startswith(f"{dest}: the downloaded file failed verification "
                                  "(archive integrity: ")
        assert message.endswith("deleted it, run again to download it afresh")
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.lock"]
        download(f"{server.url}/{name}", dest, backoff=0)  # the rerun gets the whole file
    assert dest.read_bytes() == whole
    assert "archive integrity" in (tmp_path / f"{name}.verified").read_text()


def test_a_tar_gz_that_stops_between_members_is_refused(tmp_path):
    """Its gzip stream is whole (CRC right), but the tar lacks its end-of-archive marker."""
    with FileServer({"/marco.tar.gz": _tar_gz_bytes(end_marker=False)}) as server, \
            pytest.raises(DataError, match="the tar stops before its end-of-archive marker"):
        download(f"{server.url}/marco.tar.gz", tmp_path / "marco.tar.gz")
    assert not (tmp_path / "marco.tar.gz").exists()


def test_a_plain_file_is_trusted_only_if_its_length_was_announced(tmp_path):
    with FileServer({"/qrels.txt": b"q1 0 d1 1\n" * 500}) as server:
        server.no_length.add("/qrels.txt")
        with pytest.raises(DataError, match="did not announce its length"):
            download(f"{server.url}/qrels.txt", tmp_path / "qrels.txt")
        assert not (tmp_path / "qrels.txt").exists()
        # with a record, the record decides
        md5 = hashlib.md5(server.files["/qrels.txt"]).hexdigest()
        download(f"{server.url}/qrels.txt", tmp_path / "qrels.txt", md5=md5)
        assert "md5" in (tmp_path / "qrels.txt.verified").read_text()


def test_chunked_bodies_are_resumed_when_cut_and_trusted_when_whole(tmp_path):
    with FileServer({"/big.bin": PAYLOAD}) as server:
        server.chunked.add("/big.bin")
        server.drop_after["/big.bin"] = 5500  # cut inside a chunk, no final chunk
        download(f"{server.url}/big.bin", tmp_path / "big.bin", backoff=0)
    assert (tmp_path / "big.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/big.bin", None), ("/big.bin", "bytes=5000-")]  # 5 chunks
    marker = (tmp_path / "big.bin.verified").read_text()
    assert "the length announced by the server" in marker


def test_cached_files_are_hashed_once_and_a_corrupted_one_is_deleted(tmp_path, monkeypatch):
    from lead.data import download as module

    dest = tmp_path / "big.bin"
    with FileServer({"/big.bin": PAYLOAD}) as server:
        download(f"{server.url}/big.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest())
        hashed = []
        real_new = module.hashlib.new
        monkeypatch.setattr(module.hashlib, "new", lambda name: hashed.append(name)
                            or real_new(name))
        download(f"{server.url}/big.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest())
        assert hashed == [] and len(server.requests) == 1  # trusted through its marker
        os.utime(dest, (1_000_000_000, 1_000_000_000))  # Snakemake touches a job's outputs
        download(f"{server.url}/big.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest())
        assert hashed == [] and len(server.requests) == 1  # still trusted, not hashed again
        # A record that changed is checked anew, once.
        download(f"{server.url}/big.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest(),
                 sha256=sha256(PAYLOAD))
        assert sorted(hashed) == ["md5", "sha256"] and len(server.requests) == 1
        # The cached file changes behind our back (same size): found, deleted, rerun asked.
        dest.write_bytes(PAYLOAD[::-1])
        with pytest.raises(DataError) as err:
            download(f"{server.url}/big.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest())
        assert str(err.value).startswith(f"{dest}: the cached file failed verification (md5")
        assert "run again" in str(err.value) and not dest.exists()
        assert not (tmp_path / "big.bin.verified").exists()
        download(f"{server.url}/big.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest())
        assert dest.read_bytes() == PAYLOAD and len(server.requests) == 2


def test_cached_files_without_a_marker_are_verified_or_fetched_again(tmp_path):
    with FileServer({"/big.bin": PAYLOAD, "/notes.txt": b"notes\n"}) as server:
        # left by an earlier version (no marker), whole: verified, not fetched
        (tmp_path / "big.bin").write_bytes(PAYLOAD)
        download(f"{server.url}/big.bin", tmp_path / "big.bin", sha256=sha256(PAYLOAD))
        assert server.requests == [] and (tmp_path / "big.bin.verified").exists()
        # the wrong size for its record: fetched again
        (tmp_path / "big.bin").write_bytes(PAYLOAD[:100])
        download(f"{server.url}/big.bin", tmp_path / "big.bin", size=len(PAYLOAD))
        assert (tmp_path / "big.bin").read_bytes() == PAYLOAD and len(server.requests) == 1
        # nothing recorded and no archive: it cannot be verified, so it is fetched again
        (tmp_path / "notes.txt").write_bytes(b"not")
        download(f"{server.url}/notes.txt", tmp_path / "notes.txt")
        assert (tmp_path / "notes.txt").read_bytes() == b"notes\n"


def test_progress_is_logged_at_a_bounded_rate(tmp_path, monkeypatch, caplog):
    from lead.data import download as module

    monkeypatch.setattr(module, "CHUNK", 64)  # 160 reads of the 10 KiB payload
    with FileServer({"/big.bin": PAYLOAD, "/stream.bin": PAYLOAD}) as server, \
            caplog.at_level("INFO", logger="lead.data.download"):
        download(f"{server.url}/big.bin", tmp_path / "big.bin", size=len(PAYLOAD))
        lines = [r.getMessage() for r in caplog.records]
        progress = [line for line in lines if line.startswith("big.bin: ")]
        assert lines[0] == "downloading big.bin (10.2 KB)"
        assert 15 <= len(progress) <= 20  # one per 5%, not one per read
        assert all("/s, ETA " in line and "%)" in line for line in progress)
        assert any(line.startswith("downloaded big.bin: 10.2 KB in ") for line in lines)
        # Size unknown (chunked): a line per 10 s of the (simulated) clock.
        caplog.clear()
        ticks = iter(range(0, 100_000, 4))
        monkeypatch.setattr(module, "_clock", lambda: next(ticks))
        server.chunked.add("/stream.bin")
        download(f"{server.url}/stream.bin", tmp_path / "stream.bin")
        progress = [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("stream.bin: ")]
        assert "downloading stream.bin (size unknown)" in caplog.text
        assert 50 <= len(progress) <= 60  # 160 reads, 4 s apart: every third one logs


def _tar(path: Path, members: list[tarfile.TarInfo], data: bytes = b"payload") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member


def test_extracts_a_tar_gz_all_at_once(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz",
                   [tarfile.TarInfo("top/inner/file.txt"), tarfile.TarInfo("top/other.txt")])
    dest = extract(archive, tmp_path / "out")
    assert (dest / "top" / "inner" / "file.txt").read_bytes() == b"payload"
    assert extract(archive, tmp_path / "out") == dest  # already complete: kept as it is
    assert (dest / "top" / "other.txt").exists()


def test_an_archive_downloaded_anew_is_extracted_anew(tmp_path):
    """An extraction stands for the archive it came from: another archive at the same path (a
    new download, another server's file) must not be read through the old one's files."""
    archive = _tar(tmp_path / "a.tar.gz", [tarfile.TarInfo("old.txt")])
    dest = extract(archive, tmp_path / "out")
    archive.unlink()
    _tar(archive, [tarfile.TarInfo("new.txt")])
    assert extract(archive, tmp_path / "out") == dest
    assert (dest / "new.txt").exists() and not (dest / "old.txt").exists()


@pytest.mark.parametrize(
    "member, reason",
    [
        (tarfile.TarInfo("../escape.txt"), "'..'"),
        (tarfile.TarInfo("safe/../../escape.txt"), "'..'"),
        (tarfile.TarInfo("/tmp/absolute.txt"), "absolute path"),
        (_link("innocent", "../../outside"), "leading outside"),
        (_link("innocent", "/etc/passwd"), "absolute path"),
        (_link("hard", "../outside", tarfile.LNKTYPE), "leading outside"),
    ],
)
def test_refuses_members_that_escape(tmp_path, member, reason):
    archive = _tar(tmp_path / "evil.tar.gz", [tarfile.TarInfo("ok.txt"), member])
    with pytest.raises(DataError) as err:
        extract(archive, tmp_path / "sub" / "out")
    message = str(err.value)
    assert "evil.tar.gz" in message and member.name in message and reason in message
    assert not (tmp_path / "sub" / "out").exists()
    assert list((tmp_path / "sub").iterdir()) == []  # the temporary folder is gone too
    assert not (tmp_path / "escape.txt").exists()


def test_refuses_device_files(tmp_path):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(DataError, match="special file"):
        extract(_tar(tmp_path / "dev.tar.gz", [fifo]), tmp_path / "out")


def test_truncated_tar_gz_is_a_data_error(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", [tarfile.TarInfo(f"f{i}.bin") for i in range(20)],
                data=os.urandom(20000))
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz.*truncated or corrupt"):
        extract(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_with_traversal_is_refused_and_truncated_zip_is_an_error(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("fine.txt", "x")
        zipped.writestr("../../escape.txt", "x")
    with pytest.raises(DataError, match=r"evil\.zip.*escape\.txt.*'\.\.'"):
        extract(evil, tmp_path / "out")
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("data.txt", os.urandom(5000))
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"cut\.zip.*truncated or corrupt"):
        extract(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extracts_zip_and_single_gz(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("corpus/data.txt", "zipped")
    assert (extract(archive, tmp_path / "z") / "corpus" / "data.txt").read_text() == "zipped"
    single = tmp_path / "queries.tsv.gz"
    single.write_bytes(gzip.compress(b"1\tq\n"))
    assert (extract(single, tmp_path / "g") / "queries.tsv").read_bytes() == b"1\tq\n"
    broken = tmp_path / "broken.tsv.gz"
    broken.write_bytes(gzip.compress(os.urandom(4000))[:-100])
    with pytest.raises(DataError, match=r"broken\.tsv\.gz.*truncated or corrupt"):
        extract(broken, tmp_path / "b")


# What a download never keeps: more than its recorded size, or a partial file that is not a prefix.


def test_a_partial_file_longer_than_the_record_is_fetched_afresh(tmp_path):
    (tmp_path / "f.bin.partial").write_bytes(b"\xff" * (len(PAYLOAD) + 500))
    with FileServer({"/f.bin": PAYLOAD}) as server:
        download(f"{server.url}/f.bin", tmp_path / "f.bin", size=len(PAYLOAD),
                 sha256=hashlib.sha256(PAYLOAD).hexdigest(), backoff=0.01)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/f.bin", None)]


def test_a_partial_file_the_server_cannot_continue_is_fetched_afresh(tmp_path):
    (tmp_path / "f.bin.partial").write_bytes(b"\xff" * (len(PAYLOAD) + 500))  # no record
    with FileServer({"/f.bin": PAYLOAD}) as server:
        download(f"{server.url}/f.bin", tmp_path / "f.bin",
                 sha256=hashlib.sha256(PAYLOAD).hexdigest(), backoff=0.01)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/f.bin", f"bytes={len(PAYLOAD) + 500}-"), ("/f.bin", None)]


class EndlessServer:
    """Answers every request with a body that does not end (no length), counting what the
    client let it send before hanging up."""

    def __init__(self, limit: int = 256 << 20):
        self.sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()
                block = b"x" * (64 << 10)
                try:
                    while server.sent < limit:
                        self.wfile.write(block)
                        server.sent += len(block)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> EndlessServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"


def test_a_body_beyond_the_recorded_size_is_cut_off_not_written_to_the_end(tmp_path):
    """A wrong URL or a server that never stops must not fill the disk: the transfer stops
    once past the recorded size, and nothing is kept."""
    with EndlessServer() as server, pytest.raises(DataError) as err:
        download(f"{server.url}/collection.tsv", tmp_path / "collection.tsv", size=1000,
                 retries=0, backoff=0.01)
    assert "collection.tsv" in str(err.value) and "expected 1000 bytes" in str(err.value)
    assert server.sent < 64 << 20  # it stopped reading long before the server's end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collection.tsv.lock"]
