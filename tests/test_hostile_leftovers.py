"""What killed or misled writers leave behind (class 7), and the download cases
tests/test_download.py does not cover (class 3): a killed writer's temporary is removed by the
next write of the same output, a folder replaced by two renames is never lost, and a
download never keeps more than its recorded size or a partial file that is not a prefix."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_server import FileServer
from hostile import error_line, run_stage

from lead.data.download import download
from lead.errors import DataError
from lead.io import read_table, write_table
from lead.schemas import CORPUS

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny"
# A writer of `lead.io.atomic_path` that stops half-way and waits to be killed.
HALF_WRITTEN = """
import sys
from pathlib import Path
from lead.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    if sys.argv[2] == "folder":
        tmp.mkdir()
        (tmp / "corpus.parquet").write_text("half")
    else:
        tmp.write_text("half")
    print("writing", flush=True)
    sys.stdin.read()
"""


class HalfWriter:
    """A real process killed in the middle of an atomic write (or kept waiting in it)."""

    def __init__(self, path: Path, kind: str = "file"):
        self.process = subprocess.Popen(
            [sys.executable, "-c", HALF_WRITTEN, str(path), kind], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout.readline() == "writing\n"  # waits for the condition
        self.temporary = path.with_name(f".{path.name}.tmp-{self.process.pid}")
        assert self.temporary.exists()

    def kill(self) -> HalfWriter:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()
        return self


def dead_pid() -> int:
    """The id of a process that has ended (ids are not reused at once)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def data_settings() -> str:
    return json.dumps({"source": "trec", "eval_splits": ["test"], "local": {
        "corpus": str(TINY / "collection.tsv"), "queries": {"test": str(TINY / "queries.test.tsv")},
        "qrels": {"test": str(TINY / "qrels.test.tsv")}}})


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "table.parquet"
    killed = HalfWriter(out).kill()
    assert killed.temporary.exists() and not out.exists()  # nothing to take for finished
    waiting = HalfWriter(out)  # another writer still at work: its temporary is its own
    try:
        write_table(pa.table({"x": [1, 2]}), out)
        assert not killed.temporary.exists() and waiting.temporary.exists()
        assert pq.read_table(out)["x"].to_pylist() == [1, 2]
    finally:
        waiting.kill()
    write_table(pa.table({"x": [3]}), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_a_killed_data_stage_leaves_a_folder_the_next_run_removes(capsys, tmp_path):
    out = tmp_path / "data"
    killed = HalfWriter(out, "folder").kill()
    assert (killed.temporary / "corpus.parquet").exists() and not out.exists()
    status, err = run_stage(capsys, "data", "--settings", data_settings(), "--out", out)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert read_table(out / "corpus.parquet", CORPUS).num_rows == 380


def test_a_folder_set_aside_by_a_killed_replacement_is_put_back_even_if_the_run_fails(
        capsys, tmp_path):
    """Killed between the two renames: the old folder is aside and none is in place."""
    out = tmp_path / "data"
    status, err = run_stage(capsys, "data", "--settings", data_settings(), "--out", out)
    assert status == 0, err
    earlier = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    aside = tmp_path / f".data.old-{dead_pid()}"
    out.rename(aside)
    broken = json.loads(data_settings())
    broken["local"]["corpus"] = str(tmp_path / "missing.tsv")
    status, err = run_stage(capsys, "data", "--settings", json.dumps(broken), "--out", out)
    assert "missing.tsv: file not found" in error_line("data", status, err)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_set_aside_folder_beside_its_replacement_is_removed(capsys, tmp_path):
    out = tmp_path / "data"
    (tmp_path / f".data.old-{dead_pid()}" / "queries").mkdir(parents=True)
    status, err = run_stage(capsys, "data", "--settings", data_settings(), "--out", out)
    assert status == 0, err
    status, err = run_stage(capsys, "data", "--settings", data_settings(), "--out", out)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_leftovers_are_matched_by_the_exact_name_even_with_glob_characters(tmp_path):
    pid = dead_pid()
    mine = tmp_path / f".run[1].parquet.tmp-{pid}"
    other = tmp_path / f".run1.parquet.tmp-{pid}"  # what an unescaped [1] would match
    mine.write_text("half")
    other.write_text("half")
    write_table(pa.table({"x": [1]}), tmp_path / "run[1].parquet")
    assert not mine.exists() and other.exists()


# --------------------------------------------------------------------------------------------
# Class 3: downloads (what tests/test_download.py leaves out).

PAYLOAD = bytes(range(256)) * 40


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
