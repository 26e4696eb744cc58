"""The report, from small synthetic metrics and training logs."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest

from lead.__main__ import main
from lead.errors import DataError
from lead.io import write_table
from lead.report import build_report
from lead.schemas import METRICS, PER_QUERY_METRICS

MODELS = ["teacher", "student-none", "student-response", "student-lead"]
SETTINGS = {
    "relevance_level": {"dl19": 2},
    "report_measures": ["nDCG@10", "RR@10"],
    "significance_measure": "nDCG@10",
}
QUERIES = ["q1", "q2", "q3", "q4", "q5"]
BASE = [0.5, 0.1, 0.3, 0.2, 0.4]  # student-none's nDCG@10 per query, mean 0.3
# per-query nDCG@10 of each model; student-lead = student-none + (0.1, 0.2, 0.3, 0.4, 0.5)
NDCG = {
    "teacher": [0.9, 0.8, 0.7, 0.6, 0.5],  # mean 0.7
    "student-none": BASE,
    "student-response": [b + 0.05 for b in BASE],  # mean 0.35
    "student-lead": [b + d for b, d in zip(BASE, [0.1, 0.2, 0.3, 0.4, 0.5], strict=True)],  # 0.6
}
RR = {"teacher": 0.8, "student-none": 0.5, "student-response": 0.55, "student-lead": 0.625}


def write_metrics(root, split: str, rr_name: str) -> None:
    for model in MODELS:
        directory = root / model / split
        values = NDCG[model]
        per_query = {
            "query_id": QUERIES * 2,
            "measure": ["nDCG@10"] * 5 + [rr_name] * 5,
            "value": values + [RR[model]] * 5,
        }
        per_query_table = pa.Table.from_pydict(per_query, PER_QUERY_METRICS)
        write_table(per_query_table, directory / "per_query.parquet")
        summary = {"measure": ["nDCG@10", rr_name], "value": [math.fsum(values) / 5, RR[model]]}
        write_table(pa.Table.from_pydict(summary, METRICS), directory / "summary.parquet")


def write_log(path, with_layers: bool) -> None:
    steps = [0, 10, 20, 30]
    columns = {
        "step": pa.array(steps, pa.int64()),
        "loss": pa.array([3.0, 2.0, 1.5, 1.2], pa.float64()),
        "loss_ce_student": pa.array([2.0, 1.5, 1.0, 0.9], pa.float64()),
        "lr": pa.array([0.0, 1e-5, 2e-5, 1e-5], pa.float64()),
        "grad_norm": pa.array([5.0, 4.0, 3.0, 2.0], pa.float64()),
        "dev_nDCG@10": pa.array([None, None, 0.4, 0.5], pa.float64()),
    }
    if with_layers:
        # (teacher layer, student layer) pairs; teacher has 4 layers, k = 2
        columns["layers"] = pa.array(
            [[[1, 1], [3, 2]], [[2, 1], [4, 2]], [[1, 1], [4, 2]], None],
            pa.list_(pa.list_(pa.int32())),
        )
        columns["layer_weights"] = pa.array(
            [[0.4, 0.6], [0.3, 0.7], [0.45, 0.55], None], pa.list_(pa.float64())
        )
    write_table(pa.table(columns), path)


@pytest.fixture
def inputs(tmp_path):
    root = tmp_path / "metrics"
    write_metrics(root, "test", "RR@10")
    write_metrics(root, "dl19", "RR(rel=2)@10")
    logs = {"student-lead": tmp_path / "lead.parquet", "student-none": tmp_path / "none.parquet"}
    write_log(logs["student-lead"], with_layers=True)
    write_log(logs["student-none"], with_layers=False)
    return root, logs


def test_report_renders_metrics_significance_and_plots(tmp_path, inputs):
    root, logs = inputs
    out = tmp_path / "out" / "report.md"
    text = build_report(SETTINGS, root, logs, out, tmp_path / "out" / "plots",
                        splits=["test", "dl19"], models=MODELS)
    assert out.read_text() == text
    # values in %, two decimals; dl19 reports the binary measure at its relevance level
    assert "| model | test nDCG@10 | test RR@10 | dl19 nDCG@10 | dl19 RR(rel=2)@10 |" in text
    assert "| teacher | 70.00 | 80.00 | 70.00 | 80.00 |" in text
    assert "| student-response | 35.00 | 55.00 | 35.00 | 55.00 |" in text
    assert "| student-lead | 60.00 | 62.50 | 60.00 | 62.50 |" in text
    # LEAD vs student-none: differences 0.1..0.5 -> delta +30 points, t-test p = 0.0132
    # (t = 3*sqrt(2), 4 dof; see test_evaluate), exact permutation p = 2/32 = 0.0625
    lead_vs_none = (
        "| test | nDCG@10 | student-none | 60.00 | 30.00 | +30.00 | 0.0132 * | 0.0625 | 5 |"
    )
    assert lead_vs_none in text
    # vs teacher: lead (0.6, 0.3, 0.6, 0.6, 0.9) - teacher (0.9, 0.8, 0.7, 0.6, 0.5)
    #   = (-0.3, -0.5, -0.1, 0, +0.4), sum -0.5. Sign flips reaching |sum| >= 0.5: with +0.5,
    #   0.5 + (±0.3 ±0.1 ±0.4) in {1.3, .5, 1.1, .3, .7, -.1, .5, -.3} -> 5 of 8; mirrored -> 10
    #   of 16; the zero's sign doubles both -> 20/32 = 0.625 (not significant, no *)
    assert "| test | nDCG@10 | teacher | 60.00 | 70.00 | -10.00 | 0.546 | 0.625 | 5 |" in text
    plots = tmp_path / "out" / "plots"
    expected = ["student-lead-dev.png", "student-lead-layer-weights.png",
                "student-lead-losses.png", "student-none-dev.png", "student-none-losses.png"]
    assert sorted(p.name for p in plots.iterdir()) == expected
    for name in expected:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name})" in text
    assert "evaluate settings hash" in text


def test_report_is_byte_identical_on_rerun(tmp_path, inputs):
    root, logs = inputs
    outputs = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        build_report(SETTINGS, root, {"student-lead": logs["student-lead"]}, out / "report.md",
                     out / "plots", splits=["test"], models=MODELS)
        outputs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]


def test_missing_model_metrics_name_the_file(tmp_path, inputs):
    root, logs = inputs
    with pytest.raises(DataError, match=r"student-extra/test/summary\.parquet.*'student-extra'"):
        build_report(SETTINGS, root, logs, tmp_path / "r.md", tmp_path / "plots",
                     splits=["test"], models=[*MODELS, "student-extra"])
    assert not (tmp_path / "r.md").exists()


def test_report_cli(tmp_path, inputs, capsys):
    root, logs = inputs
    out = tmp_path / "report.md"
    argv = ["report", "--settings", json.dumps(SETTINGS), "--metrics-root", str(root),
            "--log", f"student-lead={logs['student-lead']}", "--splits", "test",
            "--out", str(out), "--plots", str(tmp_path / "plots")]
    assert main(argv) == 0
    assert "| student-lead | 60.00 | 62.50 |" in out.read_text()
    assert (tmp_path / "plots" / "student-lead-layer-weights.png").exists()
    assert main([*argv[:-4], "--log", "broken", "--out", str(out),
                 "--plots", str(tmp_path / "plots")]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err


def test_malformed_layer_log_names_the_row(tmp_path, inputs):
    root, _ = inputs
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
        build_report(SETTINGS, root, {"lead": log}, tmp_path / "r.md", tmp_path / "plots",
                     splits=["test"], models=MODELS)
