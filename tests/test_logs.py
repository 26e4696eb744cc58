"""A stage's log (lead.logs): lead's own lines, without the libraries' debug noise."""

from __future__ import annotations

import logging
import subprocess
import sys

import pyarrow as pa
from repo import REPO

from lead import logs, schemas
from lead.io import write_table

SCRIPT = """
import sys
from pathlib import Path

from lead import logs

logs.setup()  # as `python -m lead` does, before any stage imports bm25s
from lead.data.negatives import bm25_groups

root = Path(sys.argv[1])
bm25_groups(root / "corpus.parquet", root / "queries.parquet", root / "qrels.parquet",
            root / "groups.parquet", depth=2, retrieve_depth=5, k1=0.9, b=0.4, threads=1)
"""


def test_a_bm25_negatives_log_has_no_bm25s_debug_line(tmp_path):
    """bm25s sets its own logger to DEBUG when it is imported, after logs.setup() quietened
    it: its "Building index from IDs" came through (a fresh process, so that the import
    happens after setup as in a stage)."""
    docs = {"d1": "the cat sat on the mat", "d2": "a dog ran in the park",
            "d3": "cats and dogs play", "d4": "the mat was red", "d5": "parks have trees"}
    write_table(pa.table({"doc_id": list(docs), "title": [""] * len(docs),
                          "text": list(docs.values())}, schemas.CORPUS),
                tmp_path / "corpus.parquet")
    write_table(pa.table({"query_id": ["q1", "q2"], "text": ["cat on a mat", "dog park"]},
                         schemas.QUERIES), tmp_path / "queries.parquet")
    write_table(pa.table({"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"],
                          "relevance": pa.array([1, 1], pa.int32())}, schemas.QRELS),
                tmp_path / "qrels.parquet")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "groups.parquet").is_file()
    lines = done.stderr.splitlines()
    assert not [line for line in lines if " DEBUG " in line], done.stderr


def test_a_quietened_library_stays_quiet_when_it_resets_its_own_level(caplog):
    library = logging.getLogger("bm25s")
    logs.setup()
    library.setLevel(logging.DEBUG)  # what `import bm25s` does
    with caplog.at_level(logging.DEBUG):
        library.debug("Building index from IDs")
        library.info("an info line")
        library.warning("a warning")
    assert [r.getMessage() for r in caplog.records if r.name == "bm25s"] == ["a warning"]
    try:
        logs.setup(debug=True)  # --debug: the libraries' lines too
        with caplog.at_level(logging.DEBUG):
            library.debug("Building index from IDs")
        assert "Building index from IDs" in [r.getMessage() for r in caplog.records]
    finally:
        logs.setup()
