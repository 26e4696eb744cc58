"""The report (lead.evaluation.report) from synthetic metrics and logs: tables, tests, plots."""

from __future__ import annotations

import json
import math
import shutil

import pyarrow as pa
import pytest
from hostile import refused

from lead.__main__ import main
from lead.errors import DataError
from lead.evaluation.report import build_report, seeded_rows
from lead.io import write_table
from lead.schemas import METRICS, PER_QUERY_METRICS

SETTINGS = {"report_measures": ["nDCG@10", "RR@10"], "significance_measure": "nDCG@10"}
LEVELS = {"main": {"dl19": 2}}
QUERIES = ["q1", "q2", "q3", "q4", "q5"]
SPREAD = [-0.2, -0.1, 0.0, 0.1, 0.2]  # per-query offsets around each model's mean
# nDCG@10 of each model (the mean over its queries)
NDCG = {
    "teacher-init": 0.70,
    "student-init": 0.40,
    "student-none-s1": 0.50, "student-none-s2": 0.51, "student-none-s3": 0.49,
    "student-response-s1": 0.55, "student-response-s2": 0.56, "student-response-s3": 0.57,
    "student-lead-s1": 0.60, "student-lead-s2": 0.62, "student-lead-s3": 0.58,
}
MODELS = list(NDCG)


def write_metrics(root, split: str, rr_name: str, models=MODELS) -> None:
    for model in models:
        directory = root / model / split
        values = [NDCG[model] + offset for offset in SPREAD]
        per_query = {
            "query_id": QUERIES * 2,
            "measure": ["nDCG@10"] * 5 + [rr_name] * 5,
            "value": values + [NDCG[model] / 2] * 5,
        }
        write_table(pa.Table.from_pydict(per_query, PER_QUERY_METRICS),
                    directory / "per_query.parquet")
        summary = {"measure": ["nDCG@10", rr_name],
                   "value": [math.fsum(values) / 5, NDCG[model] / 2]}
        write_table(pa.Table.from_pydict(summary, METRICS), directory / "summary.parquet")


def write_log(path, with_layers: bool) -> None:
    steps = [0, 10, 20, 30]
    columns = {
        "step": pa.array(steps, pa.int64()),
        "loss": pa.array([None, 2.0, 1.5, 1.2], pa.float64()),
        "student_ce": pa.array([None, 1.5, 1.0, 0.9], pa.float64()),
        "lr": pa.array([None, 1e-5, 2e-5, 1e-5], pa.float64()),
        "grad_norm": pa.array([None, 4.0, 3.0, 2.0], pa.float64()),
        "dev_nDCG@10": pa.array([0.3, None, 0.4, 0.5], pa.float64()),
    }
    if with_layers:
        # (teacher layer, student layer) pairs; teacher has 4 layers, k = 2
        columns["layers"] = pa.array(
            [None, [[1, 1], [3, 2]], [[2, 1], [4, 2]], [[1, 1], [4, 2]]],
            pa.list_(pa.list_(pa.int32())),
        )
        columns["layer_weights"] = pa.array(
            [None, [0.4, 0.6], [0.3, 0.7], [0.45, 0.55]], pa.list_(pa.float64())
        )
    write_table(pa.table(columns), path)


@pytest.fixture
def inputs(tmp_path):
    roots = {"main": tmp_path / "metrics", "other": tmp_path / "other" / "metrics"}
    write_metrics(roots["main"], "test", "RR@10")
    write_metrics(roots["main"], "dl19", "RR(rel=2)@10")
    write_metrics(roots["other"], "test", "RR@10")
    logs = {"student-lead-s1": tmp_path / "lead.parquet",
            "student-none-s1": tmp_path / "none.parquet"}
    write_log(logs["student-lead-s1"], with_layers=True)
    write_log(logs["student-none-s1"], with_layers=False)
    return roots, logs


SPLITS = [("main", "test"), ("main", "dl19"), ("other", "test")]


def report(tmp_path, inputs, **changes):
    roots, logs = inputs
    options = {"splits": SPLITS, "models": MODELS, "levels": LEVELS, **changes}
    out = tmp_path / "out"
    return build_report(SETTINGS, roots, logs, out / "report.md", out / "plots",
                        tables=out / "metrics.tsv", **options)


def test_students_are_grouped_by_method_and_seed():
    rows = seeded_rows(MODELS)
    assert list(rows) == ["none", "response", "lead"]
    assert rows["lead"] == {1: "student-lead-s1", 2: "student-lead-s2", 3: "student-lead-s3"}
    assert "teacher-init" not in str(rows) and "student-init" not in str(rows)


def test_one_table_per_collection_with_the_initial_models_rows(tmp_path, inputs):
    text = report(tmp_path, inputs)
    assert (tmp_path / "out" / "report.md").read_text() == text
    main_table = text.split("### main", 1)[1].split("### other", 1)[0]
    # values in %, two decimals; dl19 reports the binary measure at its relevance level
    assert ("| model | test nDCG@10 | test RR@10 | dl19 nDCG@10 | dl19 RR(rel=2)@10 |"
            in main_table)
    assert "| teacher-init | 70.00 | 35.00 | 70.00 | 35.00 |" in main_table
    assert "| student-init | 40.00 | 20.00 | 40.00 | 20.00 |" in main_table
    other = text.split("### other", 1)[1].split("##", 1)[0]
    assert "| model | test nDCG@10 | test RR@10 |" in other
    assert "| student-lead-s2 | 62.00 | 31.00 |" in other
    tsv = (tmp_path / "out" / "metrics.tsv").read_text().splitlines()
    assert tsv[0] == "collection\tsplit\tmodel\tmeasure\tvalue (%)"
    assert "other\ttest\tstudent-lead-s2\tnDCG@10\t62.00" in tsv


def test_methods_over_seeds_and_tests_across_seeds_by_hand(tmp_path, inputs):
    text = report(tmp_path, inputs)
    # lead: 60, 62, 58 -> mean 60, sd 2; none: 50, 51, 49 -> 50 ± 1; response: 56 ± 1
    assert "| lead | 3 | 60.00 ± 2.00 | 60.00 ± 2.00 | 60.00 ± 2.00 |" in text
    assert "| none | 3 | 50.00 ± 1.00 |" in text
    assert "| response | 3 | 56.00 ± 1.00 |" in text
    # lead - none by seed: 10, 11, 9 -> mean 10, sd 1; t = 10 / (1 / sqrt 3) = 17.32 with
    # 2 dof: p = 0.00332; all three differences positive: sign flips p = 2 / 2^3 = 0.25.
    # Detectable with 80% power over 3 seeds: 3.264 sd = 3.26 points (noncentral t, 2 dof)
    assert ("| main | test | nDCG@10 | lead | none | 3 | 60.00 ± 2.00 | 50.00 ± 1.00 "
            "| +10.00 ± 1.00 | 0.00332 * | 0.25 | 3.26 |") in text
    # lead - response: 5, 6, 1 -> mean 4, sd sqrt(7) = 2.65; t = 2.619, p = 0.120;
    # detectable: 3.26404 x 2.64575 = 8.64 points, more than the +4.00 measured
    assert ("| main | test | nDCG@10 | lead | response | 3 | 60.00 ± 2.00 | 56.00 ± 1.00 "
            "| +4.00 ± 2.65 | 0.12 | 0.25 | 8.64 |") in text
    assert "| p (sign flips) | detectable Δ (80% power) |" in text
    assert "Detectable Δ (80% power): the smallest true mean difference" in text
    assert ("lead − response on main test nDCG@10: +4.00 points over 3 seeds (p = 0.12): "
            "no significant difference.") in text
    assert "lead − none on main test nDCG@10: +10.00 points over 3 seeds (p = 0.00332): " \
           "lead is significantly better." in text
    # and per seed, over the 5 queries: lead-s1 vs none-s1 differ by 0.10 on every query
    per_query = text.split("## Tests over the queries of each seed", 1)[1]
    for seed, delta in ((1, "+10.00"), (2, "+11.00"), (3, "+9.00")):
        row = f"| main | test | nDCG@10 | lead | none | {seed} | {delta} | "
        assert row in per_query and per_query.split(row, 1)[1].split("\n", 1)[0].endswith("| 5 |")


def test_variants_are_compared_with_lead(tmp_path, inputs):
    roots, _ = inputs
    extra = {"student-k2-s1": 0.59, "student-k2-s2": 0.60, "student-k2-s3": 0.61}
    NDCG.update(extra)
    try:
        for split in ("test", "dl19"):
            write_metrics(roots["main"], split, "RR@10" if split == "test" else "RR(rel=2)@10",
                          models=list(extra))
        write_metrics(roots["other"], "test", "RR@10", models=list(extra))
        text = report(tmp_path, inputs, models=[*MODELS, *extra])
    finally:
        for model in extra:
            del NDCG[model]
    # k2 - lead: -1, -2, +3 -> mean 0 (shown with its sign)
    assert "| main | test | nDCG@10 | k2 | lead | 3 |" in text
    assert "| k2 | 3 | 60.00 ± 1.00 |" in text


def test_one_seed_has_no_test_and_no_detectable_difference(tmp_path, inputs):
    models = ["student-none-s1", "student-lead-s1"]
    text = report(tmp_path, inputs, models=models)
    # lead - none at seed 1: 60 - 50; no sd, no t-test, nothing to size a test with
    assert ("| main | test | nDCG@10 | lead | none | 1 | 60.00 | 50.00 | +10.00 | n/a | 1 "
            "| n/a |") in text


def test_lead_is_tested_against_the_peers_recipes_too(tmp_path, inputs):
    roots, _ = inputs
    extra = {"student-marginmse-s1": 0.57, "student-marginmse-s2": 0.58,
             "student-marginmse-s3": 0.59, "student-groupkl-s1": 0.61,
             "student-groupkl-s2": 0.60, "student-groupkl-s3": 0.62}
    NDCG.update(extra)
    try:
        for split in ("test", "dl19"):
            write_metrics(roots["main"], split, "RR@10" if split == "test" else "RR(rel=2)@10",
                          models=list(extra))
        write_metrics(roots["other"], "test", "RR@10", models=list(extra))
        text = report(tmp_path, inputs, models=[*MODELS, *extra])
    finally:
        for model in extra:
            del NDCG[model]
    across = text.split("## Tests across seeds", 1)[1].split("## Tests over the queries", 1)[0]
    rows = [line.split(" | ")[3:5] for line in across.splitlines()
            if line.startswith("| main | test |")]
    # LEAD is A against every baseline, in lead.methods.BASELINES order; never the reverse
    assert rows == [["lead", "response"], ["lead", "none"], ["lead", "marginmse"],
                    ["lead", "groupkl"]]
    # lead - marginmse: 3, 4, -1 -> +2.00 ± 2.65; lead - groupkl: -1, 2, -4 -> -1.00 ± 3.00
    assert "| lead | marginmse | 3 | 60.00 ± 2.00 | 58.00 ± 1.00 | +2.00 ± 2.65 |" in across
    assert "| lead | groupkl | 3 | 60.00 ± 2.00 | 61.00 ± 1.00 | -1.00 ± 3.00 |" in across


def test_report_plots_and_is_byte_identical_on_rerun(tmp_path, inputs):
    text = report(tmp_path, inputs)
    plots = tmp_path / "out" / "plots"
    expected = ["student-lead-s1-dev.png", "student-lead-s1-layer-weights.png",
                "student-lead-s1-losses.png", "student-none-s1-dev.png",
                "student-none-s1-losses.png"]
    assert sorted(p.name for p in plots.iterdir() if p.suffix == ".png") == expected
    for name in expected:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name})" in text
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    report(tmp_path, inputs)
    again = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert first == again


def test_missing_model_metrics_name_the_file(tmp_path, inputs):
    with pytest.raises(DataError, match=r"student-extra-s1/test/summary\.parquet.*'student-ex"):
        report(tmp_path, inputs, models=[*MODELS, "student-extra-s1"])
    assert not (tmp_path / "out" / "report.md").exists()


def test_report_cli(tmp_path, inputs, capsys):
    roots, logs = inputs
    out = tmp_path / "report.md"
    argv = ["report", "--settings", json.dumps(SETTINGS), "--levels", json.dumps(LEVELS),
            "--metrics", f"main={roots['main']}", f"other={roots['other']}",
            "--logs", f"student-lead-s1={logs['student-lead-s1']}",
            "--splits", "main:test", "other:test", "--models", *MODELS,
            "--out", str(out), "--plots", str(tmp_path / "plots")]
    assert main(argv) == 0
    assert "| student-lead-s1 | 60.00 | 30.00 |" in out.read_text()
    assert (tmp_path / "plots" / "student-lead-s1-layer-weights.png").exists()
    bad = [*argv]
    bad[bad.index("--logs") + 1] = "broken"
    assert main(bad) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    bad = [*argv]
    bad[bad.index("--splits") + 1] = "nowhere:test"
    assert main(bad) == 2
    assert "'nowhere:test'" in capsys.readouterr().err


def test_malformed_layer_log_names_the_row(tmp_path, inputs):
    roots, _ = inputs
    log = tmp_path / "bad.parquet"
    table = pa.table(
        {
            "step": pa.array([0, 10], pa.int64()),
            "layers": pa.array([[[1, 1]], [[2, 1], [3, 2]]], pa.list_(pa.list_(pa.int32()))),
            "layer_weights": pa.array([[1.0], [1.0]], pa.list_(pa.float64())),  # row 1: 2 vs 1
        }
    )
    write_table(table, log)
    with pytest.raises(DataError, match=r"bad\.parquet \(row 1\): layers must be"):
        build_report(SETTINGS, roots, {"lead": log}, tmp_path / "r.md", tmp_path / "plots",
                     splits=[("main", "test")], models=MODELS)


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("name", ["../../x", ".hidden", "a/b", "$(touch MARKER)"])
def test_report_refuses_a_training_log_name_that_becomes_a_plot_path(capsys, work, roots, artifacts,
                                                                     name):
    metrics = work / "metrics" / "m" / "test"
    shutil.copytree(artifacts / "metrics", metrics)
    log = work / "training.parquet"
    write_table(pa.table({"step": [0, 1], "loss": [1.0, 0.5]}), log)
    refused(capsys, roots, "report", "--metrics", f"main={work / 'metrics'}", "--splits",
            "main:test", "--models", "m", "--logs", f"{name}={log}", "--out", work / "report.md",
            "--plots", work / "plots", expect=(f"log name {name!r}",))


@pytest.mark.parametrize("culprit", ["--out is a link", "--plots is a link to a folder outside"])
def test_report_writes_nothing_unless_every_output_can_be_written(capsys, work, roots, artifacts,
                                                                  culprit):
    shutil.copytree(artifacts / "metrics", work / "metrics" / "m" / "test")
    log = work / "training.parquet"
    write_table(pa.table({"step": [0, 1], "loss": [1.0, 0.5]}), log)
    (work / "outside").mkdir()
    out, plots = work / "report.md", work / "plots"
    if culprit == "--out is a link":
        (work / "outside" / "report.md").write_text("the user's file\n")
        out.symlink_to(work / "outside" / "report.md")
    else:
        plots.symlink_to(work / "outside")
    refused(capsys, roots, "report", "--metrics", f"main={work / 'metrics'}", "--splits",
            "main:test", "--models", "m", "--logs", f"student={log}", "--out", out,
            "--tables", work / "metrics.tsv", "--plots", plots, expect=("symbolic link",))
