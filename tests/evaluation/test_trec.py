"""TREC text files (lead.evaluation.trec): layouts, blanks, malformed lines, unwritable ids."""

from __future__ import annotations

import pandas as pd
import pytest
from run_files import EXPECTED_RUN, RUN_LINES, write_lines

from lead.errors import DataError
from lead.evaluation.runs import export_trec, load_qrels, rank_run


@pytest.mark.parametrize(
    ("separator", "ending"),
    [(" ", "\n"), ("\t", "\n"), ("  \t ", "\n"), (" ", "\r\n"), (" ", " \n")],
    ids=["spaces", "tabs", "mixed-blanks", "crlf", "trailing-blank"],
)
def test_run_files_read_alike_whatever_the_blanks(tmp_path, separator, ending):
    path = write_lines(tmp_path / "run.txt", RUN_LINES, separator, ending)
    pd.testing.assert_frame_equal(rank_run(path), EXPECTED_RUN, check_dtype=False)


def test_qrels_files_read_with_their_grades(tmp_path):
    lines = [("q1", "0", "d1", "2"), ("q1", "0", "d2", "0"), ("q2", "0", "d9", "-1")]
    for separator in (" ", "\t", " \t"):
        qrels = load_qrels(write_lines(tmp_path / "qrels.txt", lines, separator))
        assert qrels.to_dict("list") == {
            "query_id": ["q1", "q1", "q2"], "doc_id": ["d1", "d2", "d9"], "relevance": [2, 0, -1]
        }


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("q1 Q0 d9 4 1.0", r"run\.trec:3: expected `qid Q0 docid rank score tag` \(6 fields\), "
                           r"got 5 fields$"),
        ("q1 0 d9 1", r"run\.trec:3: .* got 4 fields \(`qid 0 docid grade`\?\)$"),
        ("", r"run\.trec:3: .* got a blank line$"),
        ("q1 Q0 d9 4 high tag", r"run\.trec:3: score 'high' is not a finite number$"),
        ("q1 Q0 d9 4 nan tag", r"run\.trec:3: score 'nan' is not a finite number$"),
        ("q1 Q0 d9 4.5 0.1 tag", r"run\.trec:3: rank '4.5' is not an integer$"),
        ("q1 Q0 d1 4 0.1 tag", r"run\.trec:3: duplicate \(query_id, doc_id\) = \('q1', 'd1'\)$"),
        ("q1 Q0 d\u00a0x 4 0.1 tag", r"run\.trec:3: .* got 7 fields$"),  # a no-break space
    ],
)
def test_malformed_run_lines_name_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "run.trec"
    path.write_text(f"q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\n{bad_line}\nq2 Q0 d1 1 1.0 t\n")
    with pytest.raises(DataError, match=message):
        rank_run(path)


def test_malformed_qrels_and_undecodable_files(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 1\nq1 0 d2 high\n")
    with pytest.raises(DataError, match=r"qrels\.txt:2: relevance 'high' is not an integer$"):
        load_qrels(path)
    path.write_text("q1 0 d1 1\nq1 Q0 d2 1 0.5 tag\n")
    with pytest.raises(DataError, match=r"qrels\.txt:2: expected `qid 0 docid grade` \(4 fields\)"
                                        r", got 6 fields \(`qid Q0 docid rank score tag`\?\)"):
        load_qrels(path)
    path.write_bytes(b"q1 0 d1 1\nq1 0 d\xff 1\n")
    with pytest.raises(DataError, match=r"qrels\.txt:2: not UTF-8 text"):
        load_qrels(path)


def test_export_refuses_any_whitespace_in_ids(tmp_path):
    for doc_id in ("d 1", "d\t1", "d\u00a01"):
        run = pd.DataFrame({"query_id": ["q"], "doc_id": [doc_id], "score": [1.0]})
        with pytest.raises(DataError, match="ids must not contain whitespace"):
            export_trec(run, tmp_path / "run.trec", "t")
    assert not (tmp_path / "run.trec").exists()
