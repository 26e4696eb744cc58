"""TREC run and qrels files in, TREC runs out: layouts, malformed lines, ranks against scores."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lead.errors import DataError
from lead.evaluation.runs import export_trec, load_qrels, rank_run
from lead.schemas import QRELS, RUN

RUN_LINES = [
    ("q2", "Q0", "d7", "1", "0.5", "tag"),
    ("q1", "Q0", "d3", "1", "12.25", "tag"),
    ("q1", "Q0", "d1", "2", "12.25", "tag"),  # tied with d3; the rank column decides
    ("q1", "Q0", "d2", "3", "-1e-3", "tag"),
]
EXPECTED_RUN = pd.DataFrame(
    {
        "query_id": ["q1", "q1", "q1", "q2"],
        "doc_id": ["d3", "d1", "d2", "d7"],
        "score": [12.25, 12.25, -0.001, 0.5],
        "rank": [1, 2, 3, 1],
    }
)


def write_lines(path, lines, separator=" ", ending="\n"):
    path.write_bytes("".join(separator.join(line) + ending for line in lines).encode())
    return path


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


def test_files_are_told_apart_by_content_then_suffix(tmp_path):
    # parquet content under a text name reads as parquet; text under .parquet is an error
    frame = EXPECTED_RUN.astype({"rank": "int32", "score": "float32"})[RUN.names]
    pq.write_table(pa.Table.from_pandas(frame, schema=RUN, preserve_index=False),
                   tmp_path / "run.trec")
    pd.testing.assert_frame_equal(rank_run(tmp_path / "run.trec"), EXPECTED_RUN,
                                  check_dtype=False)
    text = write_lines(tmp_path / "run.parquet", RUN_LINES)
    with pytest.raises(DataError, match=r"run\.parquet: not a readable parquet file"):
        rank_run(text)
    with pytest.raises(DataError, match=r"absent\.trec: file not found"):
        rank_run(tmp_path / "absent.trec")


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


def contradicting_run() -> pd.DataFrame:
    # q2's rank 2 (d5) scores more than its rank 1 (d4): the ranks contradict the scores.
    return pd.DataFrame(
        {"query_id": ["q1", "q1", "q2", "q2", "q3", "q3"],
         "doc_id": ["d1", "d2", "d4", "d5", "d6", "d7"],
         "rank": pa.array([1, 2, 1, 2, 2, 1], pa.int32()),
         "score": pa.array([2.0, 1.0, 0.5, 0.75, 3.0, 4.0], pa.float32())}
    )


def test_ranks_that_contradict_scores_are_refused_in_the_export(tmp_path):
    path = tmp_path / "run.parquet"
    pq.write_table(pa.Table.from_pandas(contradicting_run()[RUN.names], schema=RUN), path)
    message = (r"run\.parquet \(row 3\): query 'q2': rank 2 scores 0\.75, above rank 1 \(0\.5\);"
               r" ranks must follow descending scores$")
    with pytest.raises(DataError, match=message):
        export_trec(path, tmp_path / "run.trec", "t")
    assert not (tmp_path / "run.trec").exists()
    as_text = tmp_path / "contradicting.trec"
    as_text.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 2.5 t\n")
    with pytest.raises(DataError, match=r"contradicting\.trec:2: query 'q1': rank 2 scores 2\.5"):
        export_trec(as_text, tmp_path / "run.trec", "t")


def test_export_reads_back_as_the_same_run(tmp_path):
    run = contradicting_run()
    run["rank"] = pa.array([1, 2, 2, 1, 2, 1], pa.int32())  # now in score order
    path = tmp_path / "run.parquet"
    pq.write_table(pa.Table.from_pandas(run[RUN.names], schema=RUN), path)
    assert export_trec(path, tmp_path / "run.trec", "lead") == 6
    assert (tmp_path / "run.trec").read_text().splitlines()[2] == "q2 Q0 d5 1 0.75 lead"
    pd.testing.assert_frame_equal(rank_run(tmp_path / "run.trec"), rank_run(path))


def test_export_refuses_any_whitespace_in_ids(tmp_path):
    for doc_id in ("d 1", "d\t1", "d\u00a01"):
        run = pd.DataFrame({"query_id": ["q"], "doc_id": [doc_id], "score": [1.0]})
        with pytest.raises(DataError, match="ids must not contain whitespace"):
            export_trec(run, tmp_path / "run.trec", "t")
    assert not (tmp_path / "run.trec").exists()


def test_qrels_parquet_and_trec_agree(tmp_path):
    frame = pd.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["a", "b"], "relevance": [1, 3]})
    pq.write_table(pa.Table.from_pandas(frame, schema=QRELS), tmp_path / "q.parquet")
    write_lines(tmp_path / "q.txt", [("q1", "0", "a", "1"), ("q2", "0", "b", "3")])
    pd.testing.assert_frame_equal(
        load_qrels(tmp_path / "q.parquet"), load_qrels(tmp_path / "q.txt")
    )
