"""Scoring (lead.evaluation.evaluate), hand-checked: values are worked out in the comments."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile import refused, run_stage, trec_run
from run_files import write_parquet

from lead.__main__ import main
from lead.errors import ConfigError, DataError
from lead.evaluation.evaluate import evaluate_run, write_evaluation
from lead.evaluation.measures import measure_name
from lead.evaluation.runs import export_trec, rank_run
from lead.io import OUTPUT_MARKER, read_provenance, read_table
from lead.schemas import METRICS, PER_QUERY_METRICS, QRELS, RUN


def make_run(rankings: dict[str, list[str]]) -> pd.DataFrame:
    """Each query's docs in rank order, with strictly decreasing scores."""
    rows = [
        (query_id, doc_id, float(len(docs) - position))
        for query_id, docs in rankings.items()
        for position, doc_id in enumerate(docs)
    ]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "score"])


def make_qrels(judgments: dict[str, dict[str, int]]) -> pd.DataFrame:
    rows = [(q, d, grade) for q, docs in judgments.items() for d, grade in docs.items()]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "relevance"])


def scores(summary: pd.DataFrame) -> dict[str, float]:
    return dict(zip(summary["measure"], summary["value"], strict=True))


def per_query(table: pd.DataFrame, measure: str) -> dict[str, float]:
    rows = table[table["measure"] == measure]
    return dict(zip(rows["query_id"], rows["value"], strict=True))


FILLER = [f"n{i:02d}" for i in range(20)]  # unjudged documents


def test_rr_at_10_cuts_the_run_at_depth_10():
    # q_late: its only relevant doc at rank 11 -> outside the top 10 -> RR@10 = 0,
    #         though RR@20 (run cut at 20) sees it: 1/11.
    # q_early: relevant doc at rank 3 -> RR@10 = 1/3.
    run = make_run({"q_late": [*FILLER[:10], "rel", "n99"], "q_early": ["a", "b", "rel"]})
    qrels = make_qrels({"q_late": {"rel": 1}, "q_early": {"rel": 1}})
    summary, table = evaluate_run(run, qrels, measures=["RR@10", "RR@20"])
    assert per_query(table, "RR@10") == {"q_early": pytest.approx(1 / 3), "q_late": 0.0}
    assert per_query(table, "RR@20")["q_late"] == pytest.approx(1 / 11)
    # mean over both queries: (1/3 + 0) / 2
    assert scores(summary)["RR@10"] == pytest.approx((1 / 3 + 0) / 2)


def test_ap_and_recall_are_computed_on_the_run_cut_at_their_depth():
    # relevant docs r1 at rank 2, r2 at rank 8; a third relevant doc r3 never retrieved.
    # AP@5: only r1 inside the cut: precision at rank 2 = 1/2; divided by all 3 relevant -> 1/6
    # AP@1000: (1/2 + 2/8) / 3 = 0.75 / 3 = 0.25
    # R@5 = 1/3 (r1), R@50 = 2/3 (r1, r2)
    ranking = ["x1", "r1", "x2", "x3", "x4", "x5", "x6", "r2", "x7"]
    run = make_run({"q": ranking})
    qrels = make_qrels({"q": {"r1": 1, "r2": 1, "r3": 1}})
    summary, _ = evaluate_run(run, qrels, measures=["AP@5", "AP@1000", "R@5", "R@50"])
    assert scores(summary) == pytest.approx(
        {"AP@5": 1 / 6, "AP@1000": 0.25, "R@5": 1 / 3, "R@50": 2 / 3}
    )


def test_judged_query_missing_from_run_counts_zero_and_unjudged_run_query_is_ignored():
    # q1: relevant at rank 1 -> RR 1. q2: judged relevant, absent from the run -> 0.
    # q3: only a grade-0 judgment -> not counted (documented rule).
    # q4: in the run, not in the qrels -> ignored.
    # mean RR@10 over {q1, q2} = (1 + 0) / 2 = 0.5
    run = make_run({"q1": ["d1", "d2"], "q3": ["e1"], "q4": ["f1"]})
    qrels = make_qrels({"q1": {"d1": 1}, "q2": {"d9": 1}, "q3": {"e1": 0}})
    summary, table = evaluate_run(run, qrels, measures=["RR@10", "nDCG@10"])
    assert sorted(table["query_id"].unique()) == ["q1", "q2"]
    assert per_query(table, "RR@10") == {"q1": 1.0, "q2": 0.0}
    assert scores(summary) == {"RR@10": 0.5, "nDCG@10": 0.5}


# Ranking d2(1) d9(0) d1(3) dx(unjudged) d3(2): grades 1, 0, 3, -, 2 at ranks 1..5.
GRADED_RUN = make_run({"q": ["d2", "d9", "d1", "dx", "d3"]})
GRADED_QRELS = make_qrels({"q": {"d1": 3, "d2": 1, "d3": 2, "d9": 0}})
# nDCG@10, gain = grade, discount log2(rank + 1):
#   DCG  = 1/log2(2) + 3/log2(4) + 2/log2(6) = 1 + 1.5 + 0.77371 = 3.27371
#   IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.26186 + 0.5 = 4.76186
GRADED_NDCG = (1 + 3 / 2 + 2 / math.log2(6)) / (3 + 2 / math.log2(3) + 1 / 2)


def test_ndcg_uses_graded_gains_with_log2_discount():
    summary, _ = evaluate_run(GRADED_RUN, GRADED_QRELS, measures=["nDCG@10"])
    assert scores(summary)["nDCG@10"] == pytest.approx(GRADED_NDCG)
    assert scores(summary)["nDCG@10"] == pytest.approx(3.27371 / 4.76186, abs=1e-5)


def test_relevance_level_two_drops_grade_one_from_binary_measures_only():
    measures = ["RR@10", "AP@1000", "R@50", "nDCG@10"]
    # level 1: relevant = d2 (rank 1), d1 (rank 3), d3 (rank 5)
    #   RR = 1, AP = (1/1 + 2/3 + 3/5) / 3 = 0.75556, R@50 = 1
    level_1, _ = evaluate_run(GRADED_RUN, GRADED_QRELS, relevance_level=1, measures=measures)
    assert scores(level_1) == pytest.approx(
        {"RR@10": 1.0, "AP@1000": (1 + 2 / 3 + 3 / 5) / 3, "R@50": 1.0, "nDCG@10": GRADED_NDCG}
    )
    # level 2: relevant = d1 (rank 3), d3 (rank 5); d2 (grade 1) no longer counts
    #   RR = 1/3, AP = (1/3 + 2/5) / 2 = 0.36667, R@50 = 1; nDCG unchanged (graded)
    level_2, _ = evaluate_run(GRADED_RUN, GRADED_QRELS, relevance_level=2, measures=measures)
    assert scores(level_2) == pytest.approx(
        {
            "RR(rel=2)@10": 1 / 3,
            "AP(rel=2)@1000": (1 / 3 + 2 / 5) / 2,
            "R(rel=2)@50": 1.0,
            "nDCG@10": GRADED_NDCG,
        }
    )
    assert measure_name("AP@1000", 2) == "AP(rel=2)@1000"
    assert measure_name("nDCG@10", 2) == "nDCG@10"


def test_relevance_level_decides_which_queries_count():
    # q_low has only grade-1 judgments: counted at level 1, not at level 2 (even for nDCG).
    run = make_run({"q_high": ["h"], "q_low": ["l"]})
    qrels = make_qrels({"q_high": {"h": 2}, "q_low": {"l": 1}})
    _, level_1 = evaluate_run(run, qrels, relevance_level=1, measures=["nDCG@10"])
    _, level_2 = evaluate_run(run, qrels, relevance_level=2, measures=["nDCG@10"])
    assert sorted(level_1["query_id"]) == ["q_high", "q_low"]
    assert level_2["query_id"].tolist() == ["q_high"]


def test_equal_scores_break_by_doc_id_whatever_the_row_order():
    # "b" (relevant) and "a" tie at 1.0 below "c" (2.0). Order: c, a, b (doc_id ascending
    # among equals) -> relevant at rank 3 -> RR = 1/3. trec_eval alone would put b before a.
    rows = [("q", "c", 2.0), ("q", "b", 1.0), ("q", "a", 1.0)]
    qrels = make_qrels({"q": {"b": 1}})
    results = []
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        run = pd.DataFrame([rows[i] for i in order], columns=["query_id", "doc_id", "score"])
        summary, _ = evaluate_run(run, qrels, measures=["RR@10"])
        results.append(scores(summary)["RR@10"])
        assert rank_run(run)["doc_id"].tolist() == ["c", "a", "b"]
    assert results == pytest.approx([1 / 3] * 3)


def test_rank_column_is_authoritative():
    # Given ranks put b first despite the equal score: RR = 1.
    run = pd.DataFrame(
        {"query_id": ["q", "q"], "doc_id": ["a", "b"], "score": [1.0, 1.0], "rank": [2, 1]}
    )
    summary, _ = evaluate_run(run, make_qrels({"q": {"b": 1}}), measures=["RR@10"])
    assert scores(summary)["RR@10"] == 1.0


def test_cli_round_trip_writes_the_three_files(tmp_path, capsys):
    run = make_run({"q1": ["x", "r"], "q2": ["s"]})
    run["rank"] = [1, 2, 1]
    run_path = write_parquet(run[RUN.names], tmp_path / "run.parquet", RUN)
    qrels_path = write_parquet(
        make_qrels({"q1": {"r": 2}, "q2": {"s": 1}, "q3": {"t": 2}}), tmp_path / "q.parquet", QRELS
    )
    out = tmp_path / "metrics"
    argv = ["evaluate", "--run", str(run_path), "--qrels", str(qrels_path), "--out", str(out),
            "--relevance-level", "2", "--measures", "RR@10", "nDCG@10"]
    assert main(argv) == 0
    # level 2 counts q1 and q3 (q2 has grade 1 only). q1: RR = 1/2; q3 missing -> 0.
    # nDCG@10 of q1: (2/log2(3)) / (2/log2(2)) = 1/log2(3) = 0.63093
    summary = read_table(out / "summary.parquet", METRICS).to_pandas()
    assert scores(summary) == pytest.approx(
        {"RR(rel=2)@10": (1 / 2 + 0) / 2, "nDCG@10": (1 / math.log2(3) + 0) / 2}
    )
    per_q = read_table(out / "per_query.parquet", PER_QUERY_METRICS).to_pandas()
    assert per_q["query_id"].tolist() == ["q1", "q1", "q3", "q3"]
    markdown = (out / "summary.md").read_text()
    assert "| RR(rel=2)@10 | 0.2500 |" in markdown and "2 judged queries" in markdown
    assert read_provenance(out / "summary.parquet")["settings"]["relevance_level"] == 2
    assert capsys.readouterr().out == markdown  # the summary table, printed
    # no temporaries left; the marker says which command made the folder (lead.io)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [OUTPUT_MARKER]
    assert main([*argv[:6], str(tmp_path / "again"), *argv[7:]]) == 0
    for name in ("summary.parquet", "per_query.parquet", "summary.md"):  # deterministic bytes
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_bad_runs_name_the_file_and_row(tmp_path):
    qrels = make_qrels({"q": {"a": 1}})
    no_score = write_parquet(pd.DataFrame({"query_id": ["q"], "doc_id": ["a"]}),
                             tmp_path / "no_score.parquet")
    with pytest.raises(DataError, match=r"no_score\.parquet \(column 'score'\): missing"):
        evaluate_run(no_score, qrels)
    text_score = pd.DataFrame({"query_id": ["q", "q"], "doc_id": ["a", "b"], "score": ["1", "x"]})
    with pytest.raises(DataError, match=r"row 1, column 'score'.*'x' is not a finite number"):
        evaluate_run(text_score, qrels)
    duplicate = write_parquet(
        pd.DataFrame({"query_id": ["q", "q", "q"], "doc_id": ["a", "b", "a"],
                      "score": [3.0, 2.0, 1.0]}),
        tmp_path / "dup.parquet",
    )
    with pytest.raises(DataError, match=r"dup\.parquet \(row 2\): duplicate .*'q', 'a'"):
        evaluate_run(duplicate, qrels)


def test_bad_qrels_and_settings_are_rejected(tmp_path, capsys):
    run = make_run({"q": ["a"]})
    graded = pd.DataFrame({"query_id": ["q"], "doc_id": ["a"], "relevance": [1.5]})
    with pytest.raises(DataError, match=r"row 0, column 'relevance'.*not an integer"):
        evaluate_run(run, graded)
    with pytest.raises(DataError, match="no query has a document with relevance >= 2"):
        evaluate_run(run, make_qrels({"q": {"a": 1}}), relevance_level=2)
    with pytest.raises(ConfigError, match="unknown measure 'MRR10'"):
        evaluate_run(run, make_qrels({"q": {"a": 1}}), measures=["MRR10"])
    with pytest.raises(ConfigError, match="relevance level"):
        evaluate_run(run, make_qrels({"q": {"a": 1}}), relevance_level=0)
    missing = tmp_path / "absent.parquet"
    argv = ["evaluate", "--run", str(missing), "--qrels", str(missing), "--out",
            str(tmp_path / "metrics")]
    assert main(argv) == 2
    assert "absent.parquet: file not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- any ir_measures name

# One query, no ties. Grades by rank: 1:g1  2:-  3:g2  4:g0  5:-  6:g3 ; relevant docs never
# retrieved: none. Judged docs: d1 d3 d4 d6 (4 of 6 retrieved).
WIDE_RUN = make_run({"q": ["d1", "u2", "d3", "d4", "u5", "d6"]})
WIDE_QRELS = make_qrels({"q": {"d1": 1, "d3": 2, "d4": 0, "d6": 3}})


def test_more_measures_by_hand():
    names = ["P@3", "P(rel=2)@4", "Success@1", "Success(rel=2)@2", "Judged@4", "Judged@10",
             "Judged", "RR", "AP", "AP@3", "nDCG", "nDCG@3", "Rprec", "R@3"]
    summary, _ = evaluate_run(WIDE_RUN, WIDE_QRELS, measures=names)
    # relevant at level 1: d1 (rank 1), d3 (rank 3), d6 (rank 6); 3 in all
    # nDCG, whole run: DCG = 1/log2(2) + 2/log2(4) + 0/log2(5) + 3/log2(7); ideal order 3, 2, 1
    dcg = 1 + 2 / 2 + 3 / math.log2(7)
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    # nDCG@3: DCG@3 = 1 + 2/2 = 2; ideal@3 the same 4.26186 (only 3 positive grades)
    assert scores(summary) == pytest.approx({
        "P@3": 2 / 3,  # d1, d3
        "P(rel=2)@4": 1 / 4,  # d3 only
        "Success@1": 1.0,
        "Success(rel=2)@2": 0.0,  # d3 is at rank 3
        "Judged@4": 3 / 4,  # d1 d3 d4
        "Judged@10": 4 / 6,  # only 6 retrieved: judged share of what the cut run holds
        "Judged": 4 / 6,
        "RR": 1.0,
        "AP": (1 / 1 + 2 / 3 + 3 / 6) / 3,
        "AP@3": (1 / 1 + 2 / 3) / 3,
        "nDCG": dcg / ideal,
        "nDCG@3": 2 / ideal,
        "Rprec": 2 / 3,  # 2 relevant in the top 3 (R = 3)
        "R@3": 2 / 3,
    })


def test_lead_agrees_with_ir_measures_where_their_semantics_agree():
    # No ties, every query in the run and with a relevant document at levels 1 and 2: then
    # lead's -M cut and -c rules change nothing and ir_measures' own providers (pytrec_eval,
    # and its python Judged) must give the same numbers for every family lead supports.
    import ir_measures

    judgments = {"q1": {"a": 2, "b": 1, "c": 0, "d": 3, "e": 1, "f": 2},
                 "q2": {"x": 2, "y": 0, "z": 1}}
    run = make_run({"q1": ["b", "n1", "a", "c", "n2", "d", "n3", "e", "f"],
                    "q2": ["y", "x", "n4", "z"]})
    qrels = make_qrels(judgments)
    names = ["P@3", "P(rel=2)@5", "R@4", "R(rel=2)@3", "Success@1", "Success(rel=2)@2", "RR",
             "RR@2", "RR(rel=2)@3", "AP", "AP@4", "AP(rel=2)@6", "nDCG", "nDCG@3", "Judged@2",
             "Judged@6", "Judged", "Rprec", "Rprec(rel=2)", "Bpref", "Bpref(rel=2)"]
    summary, _ = evaluate_run(run, qrels, measures=names)
    theirs = ir_measures.calc_aggregate(
        [ir_measures.parse_measure(name) for name in names],
        [ir_measures.Qrel(*row) for row in qrels.itertuples(index=False)],
        [ir_measures.ScoredDoc(*row) for row in run.itertuples(index=False)],
    )
    assert scores(summary) == pytest.approx({repr(m): v for m, v in theirs.items()}, abs=1e-12)
    assert len(set(scores(summary).values())) > 10  # the cases tell the measures apart


def test_explicit_rel_and_the_names_lead_writes_read_back():
    # AP(rel=2) at level 1 equals AP at level 2 here (one query, counted at both levels).
    explicit, _ = evaluate_run(GRADED_RUN, GRADED_QRELS, measures=["AP(rel=2)@1000", "AP@1000"])
    at_level_2, _ = evaluate_run(GRADED_RUN, GRADED_QRELS, relevance_level=2, measures=["AP@1000"])
    assert scores(explicit)["AP(rel=2)@1000"] == scores(at_level_2)["AP(rel=2)@1000"]
    assert scores(explicit)["AP@1000"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # the names written are inputs that give the same table again
    first, _ = evaluate_run(GRADED_RUN, GRADED_QRELS, relevance_level=2,
                            measures=["MRR@10", "AP@1000", "nDCG", "Judged@3", "P(rel=3)@2"])
    assert first["measure"].tolist() == [
        "RR(rel=2)@10", "AP(rel=2)@1000", "nDCG", "Judged@3", "P(rel=3)@2"
    ]
    again, _ = evaluate_run(GRADED_RUN, GRADED_QRELS, relevance_level=2,
                            measures=first["measure"].tolist())
    pd.testing.assert_frame_equal(first, again)


def test_a_cut_off_deeper_than_the_run_is_a_warning(tmp_path, caplog):
    # WIDE_RUN is 6 deep: R@10 and P@10 are computed on what exists (P@10 = 3/10), but warned.
    out = tmp_path / "metrics"
    summary = write_evaluation(out, WIDE_RUN, WIDE_QRELS, measures=["P@10", "R@10", "R@6"])
    assert scores(summary) == pytest.approx({"P@10": 3 / 10, "R@10": 1.0, "R@6": 1.0})
    expected = "P@10, R@10 cut deeper than the run (6 deep at most)"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{expected}: the documents it did not retrieve count as missed"
    ]
    assert f"Warning: {expected}" in (out / "summary.md").read_text()
    caplog.clear()
    evaluate_run(WIDE_RUN, WIDE_QRELS, measures=["R@6", "nDCG"])
    assert not caplog.records


def test_a_run_sharing_no_query_with_the_qrels_is_an_error(tmp_path):
    # Float ids: a run written with query ids 1.0, 2.0 against qrels 1, 2 used to score 0.
    run = write_parquet(
        pd.DataFrame({"query_id": ["1.0", "2.0"], "doc_id": ["a", "b"], "score": [1.0, 1.0]}),
        tmp_path / "run.parquet",
    )
    qrels = write_parquet(make_qrels({"1": {"a": 1}, "2": {"b": 1}}), tmp_path / "qrels.parquet")
    with pytest.raises(DataError, match=(
        r"run\.parquet: shares no query with .*qrels\.parquet: run ids look like '1\.0', "
        r"counted qrels ids like '1'; nothing to score$"
    )):
        evaluate_run(run, qrels)
    empty = pd.DataFrame({"query_id": [], "doc_id": [], "score": []})
    with pytest.raises(DataError, match=r"<run DataFrame>: the run is empty"):
        evaluate_run(empty, qrels)


def test_partial_overlap_is_a_warning_with_counts(caplog):
    run = make_run({"q1": ["a"], "q2": ["b"], "q8": ["c"]})
    qrels = make_qrels({"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}, "q4": {"d": 0}})
    summary, _ = evaluate_run(run, qrels, measures=["RR@1"])
    assert scores(summary)["RR@1"] == pytest.approx(2 / 3)  # q3 missing -> 0; q8, q4 ignored
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "<run DataFrame> covers 2 of the 3 counted queries of <qrels DataFrame>: 1 missing "
        "(scored 0), 1 run queries without counted judgments (ignored)"
    ]


def test_ranks_that_contradict_scores_are_refused_in_evaluation(tmp_path):
    # a better rank with a strictly lower score: trec_eval would rank by the scores instead
    run = pd.DataFrame({"query_id": ["q1", "q1", "q2", "q2"], "doc_id": ["a", "b", "c", "d"],
                        "rank": [1, 2, 2, 1], "score": [1.0, 1.0, 5.0, 4.0]})
    with pytest.raises(DataError, match=(
        r"<run DataFrame> \(row 2\): query 'q2': rank 2 scores 5\.0, above rank 1 \(4\.0\)"
    )):
        evaluate_run(run, make_qrels({"q1": {"a": 1}}))
    trec = tmp_path / "run.trec"
    trec.write_text("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 1.0 t\nq2 Q0 d 1 4.0 t\nq2 Q0 c 2 5.0 t\n")
    with pytest.raises(DataError, match=r"run\.trec:4: query 'q2': rank 2 scores 5\.0"):
        evaluate_run(trec, make_qrels({"q1": {"a": 1}}))


def test_trec_run_and_qrels_score_like_their_parquet(tmp_path):
    run = make_run({"q1": ["x", "r", "s"], "q2": ["t", "u"]})
    run["rank"] = [1, 2, 3, 1, 2]
    run_parquet = write_parquet(run[RUN.names], tmp_path / "run.parquet", RUN)
    qrels = make_qrels({"q1": {"r": 2, "s": 1}, "q2": {"u": 1}})
    qrels_parquet = write_parquet(qrels, tmp_path / "qrels.parquet", QRELS)
    export_trec(run_parquet, tmp_path / "run.trec", "lead")
    (tmp_path / "qrels.txt").write_text(
        "".join(f"{q}\t0\t{d}\t{g}\n" for q, d, g in qrels.itertuples(index=False))
    )
    measures = ["RR@10", "nDCG@10", "AP", "Judged@2"]
    from_parquet = evaluate_run(run_parquet, qrels_parquet, measures=measures)
    from_trec = evaluate_run(tmp_path / "run.trec", tmp_path / "qrels.txt", measures=measures)
    for parquet_frame, trec_frame in zip(from_parquet, from_trec, strict=True):
        pd.testing.assert_frame_equal(parquet_frame, trec_frame)
    assert scores(from_trec[0])["RR@10"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_cli_evaluates_trec_files_at_the_defaults_of_a_depth(tmp_path, capsys):
    (tmp_path / "run.trec").write_text("q1 Q0 a 1 3 t\nq1 Q0 r 2 2 t\nq2 Q0 s 1 1 t\n")
    (tmp_path / "qrels.txt").write_text("q1 0 r 1\nq2 0 s 1\n")
    out = tmp_path / "metrics"
    argv = ["evaluate", "--run", str(tmp_path / "run.trec"), "--qrels",
            str(tmp_path / "qrels.txt"), "--out", str(out)]
    assert main([*argv, "--depth", "20"]) == 0
    summary = read_table(out / "summary.parquet", METRICS).to_pandas()
    # default_measures(20): RR@10 nDCG@10 R@20 AP@20; q1 relevant at rank 2, q2 at rank 1
    assert scores(summary) == pytest.approx(
        {"RR@10": 0.75, "nDCG@10": (1 / math.log2(3) + 1) / 2, "R@20": 1.0, "AP@20": 0.75}
    )
    printed = capsys.readouterr().out
    assert printed == (out / "summary.md").read_text()
    assert "| RR@10 | 0.7500 |" in printed and "R@20, AP@20 cut deeper than the run" in printed
    assert main([*argv, "--measures", "Success@1", "Judged@2"]) == 0
    assert "| Success@1 | 0.5000 |" in capsys.readouterr().out
    # One way to choose the measures at a time: refused in one line, before any work.
    assert main([*argv, "--depth", "20", "--measures", "RR@10"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main([*argv, "--measures", "ERR@10"]) == 2
    assert "measure 'ERR@10' is not supported" in capsys.readouterr().err


# --- hostile input --------------------------------------------------------------------------------
# Each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("existing", ["summary.md", "per_query.parquet", "summary.parquet"])
def test_evaluate_writes_none_of_its_files_unless_all_can_be(capsys, work, roots, artifacts,
                                                             existing):
    out = work / "metrics"
    (out / existing).mkdir(parents=True)  # a folder of the user's where an output would go
    (out / existing / "notes.txt").write_text("the user's\n")
    refused(capsys, roots, "evaluate", "--run", artifacts / "run.parquet", "--qrels",
            artifacts / "data" / "qrels" / "test.parquet", "--out", out,
            expect=(str(out), f"did not write ({existing})"))


@pytest.mark.parametrize("form", ["trec", "parquet"])
def test_float_query_ids_against_integer_ones_are_refused(capsys, work, roots, qrels_1_2, form):
    if form == "trec":
        run = trec_run(work / "run.trec", [("1.0", "d1", 1, 2.0), ("2.0", "d2", 1, 1.0)])
    else:  # a run exported by pandas with numeric ids
        run = work / "run.parquet"
        pq.write_table(pa.table({"query_id": [1.0, 2.0], "doc_id": ["d1", "d2"],
                                 "score": [2.0, 1.0]}), run)
    refused(capsys, roots, "evaluate", "--run", run, "--qrels", qrels_1_2, "--out",
            work / "metrics", expect=(str(run), "shares no query", "'1.0'", "'1'"))


def test_a_run_half_in_another_spelling_scores_with_a_written_warning(capsys, work, qrels_1_2):
    run = trec_run(work / "run.trec", [("1", "d1", 1, 2.0), ("2.0", "d2", 1, 1.0)])
    status, err = run_stage(capsys, "evaluate", "--run", run, "--qrels", qrels_1_2,
                            "--out", work / "metrics", "--measures", "RR@10")
    assert status == 0, err
    summary = (work / "metrics" / "summary.md").read_text()
    assert "covers 1 of the 2 counted queries" in summary and "1 missing (scored 0)" in summary


def test_a_run_sharing_no_query_with_the_qrels_is_refused(capsys, work, roots, artifacts):
    run = trec_run(work / "run.trec", [("q-unknown", "d000120", 1, 1.0)])
    refused(capsys, roots, "evaluate", "--run", run, "--qrels",
            artifacts / "data" / "qrels" / "test.parquet", "--out", work / "metrics",
            expect=("shares no query",))


@pytest.mark.parametrize("score", ["nan", "inf", "-inf", "1e999"])
def test_a_run_with_a_non_finite_score_is_refused(capsys, work, roots, qrels_1_2, score):
    run = work / "run.trec"
    run.write_text(f"1 Q0 d1 1 {score} t\n")
    refused(capsys, roots, "evaluate", "--run", run, "--qrels", qrels_1_2, "--out",
            work / "metrics", expect=(f"{run}:1", "is not a finite number"))
