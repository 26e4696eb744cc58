"""Downloads (resume, retry, verification) against a local server, and safe extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zipfile
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
