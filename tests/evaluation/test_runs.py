"""Runs and qrels from any source (lead.evaluation.runs): ranking order, TREC export."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile import refused, trec_run
from run_files import EXPECTED_RUN, RUN_LINES, write_lines, write_parquet

from lead.__main__ import main
from lead.errors import DataError, LeadError
from lead.evaluation.runs import export_trec, load_qrels, rank_run
from lead.schemas import QRELS, RUN


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


def test_qrels_parquet_and_trec_agree(tmp_path):
    frame = pd.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["a", "b"], "relevance": [1, 3]})
    pq.write_table(pa.Table.from_pandas(frame, schema=QRELS), tmp_path / "q.parquet")
    write_lines(tmp_path / "q.txt", [("q1", "0", "a", "1"), ("q2", "0", "b", "3")])
    pd.testing.assert_frame_equal(
        load_qrels(tmp_path / "q.parquet"), load_qrels(tmp_path / "q.txt")
    )


def test_export_trec_writes_tie_broken_ranks(tmp_path):
    run = pd.DataFrame(
        {"query_id": ["q2", "q1", "q1", "q1"], "doc_id": ["z", "b", "a", "c"],
         "rank": pa.array([1, 3, 2, 1], pa.int32()), "score": [1.0, 2.5, 2.5, 3.25]}
    )
    run_path = write_parquet(run[RUN.names], tmp_path / "run.parquet", RUN)
    out = tmp_path / "run.trec"
    assert main(["export-trec", "--run", str(run_path), "--out", str(out), "--tag", "lead"]) == 0
    assert out.read_text() == (
        "q1 Q0 c 1 3.25 lead\n"
        "q1 Q0 a 2 2.5 lead\n"
        "q1 Q0 b 3 2.5 lead\n"
        "q2 Q0 z 1 1 lead\n"
    )
    with pytest.raises(LeadError, match="tag"):
        export_trec(run_path, tmp_path / "bad.trec", "two words")
    spaced = pd.DataFrame({"query_id": ["q 1"], "doc_id": ["d"], "score": [1.0]})
    with pytest.raises(DataError, match="whitespace"):
        export_trec(spaced, tmp_path / "bad.trec", "lead")
    assert not (tmp_path / "bad.trec").exists()


def test_float32_scores_export_at_their_own_precision(tmp_path):
    run = pd.DataFrame({"query_id": ["q"], "doc_id": ["d"], "score": [0.1], "rank": [1]})
    run_path = write_parquet(run, tmp_path / "run.parquet", RUN)
    export_trec(run_path, tmp_path / "run.trec", "t")
    assert (tmp_path / "run.trec").read_text() == "q Q0 d 1 0.1 t\n"  # not 0.10000000149...


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("stage", ["evaluate", "export-trec"])
@pytest.mark.parametrize("form", ["trec", "parquet"])
def test_ranks_that_contradict_scores_are_refused(capsys, work, roots, qrels_1_2, stage, form):
    rows = [("1", "d1", 1, 0.5), ("1", "d9", 2, 0.9)]  # rank 2 scores above rank 1
    if form == "trec":
        run = trec_run(work / "run.trec", rows)
        where = f"{run}:2"
    else:
        run = work / "run.parquet"
        q, d, r, s = zip(*rows, strict=True)
        pq.write_table(pa.table({"query_id": q, "doc_id": d, "rank": r, "score": s}), run)
        where = f"{run} (row 1)"
    argv = (["evaluate", "--run", run, "--qrels", qrels_1_2, "--out", work / "metrics"]
            if stage == "evaluate" else ["export-trec", "--run", run, "--out", work / "o.trec",
                                         "--tag", "t"])
    refused(capsys, roots, *argv, expect=(where, "ranks must follow descending scores"))


@pytest.mark.parametrize(("grade", "form"), [
    ("1e20", "trec"), ("99999999999999999999", "trec"), ("3000000000", "trec"), ("65536", "trec"),
    ("65536", "parquet"), ("-2000000000", "parquet")])
def test_a_relevance_grade_out_of_range_is_refused(capsys, work, roots, grade, form):
    """trec_eval allocates memory for every grade up to the largest judged: 3e9 made evaluate
    allocate 24 GB and be killed; 1e20 wrapped to a negative int64 and silently judged the
    document not relevant."""
    qrels = work / "qrels.txt"
    qrels.write_text(f"q1 0 d1 1\nq1 0 d2 {grade}\n")
    where = f"{qrels}:2: relevance"
    if form == "parquet":
        qrels = write_parquet(pd.DataFrame({"query_id": ["q1", "q1"], "doc_id": ["d1", "d2"],
                                            "relevance": [1, int(grade)]}),
                              work / "qrels.parquet")
        where = f"{qrels} (row 1, column 'relevance')"
    run = trec_run(work / "run.trec", [("q1", "d2", 1, 2.0), ("q1", "d1", 2, 1.0)])
    refused(capsys, roots, "evaluate", "--run", run, "--qrels", qrels, "--out", work / "m",
            expect=(where, "is outside -65535..65535"))
