"""The final report: metrics of every model side by side, LEAD's paired significance against
each baseline, and plots of the training logs (losses, dev metric, LEAD's layer weights).

Inputs follow docs/artifacts.md: metrics_root/{model}/{split}/{summary,per_query}.parquet and
training logs. The output depends only on those inputs and the settings (no timestamps, plot
paths relative to the report), so a rerun gives the same bytes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lead.config import resolve
from lead.errors import ConfigError, DataError
from lead.io import atomic_path, config_hash, read_table
from lead.measures import measure_name
from lead.schemas import METRICS
from lead.significance import compare

DEFAULT_MODELS = ("teacher", "student-none", "student-response", "student-lead")
LEAD_MODEL = "student-lead"
SIGNIFICANCE_ALPHA = 0.05
# Training-log columns that are not loss components (docs/artifacts.md, lead/training/loop.py).
_LOG_BOOKKEEPING = {
    "step", "lr", "teacher_lr", "grad_norm", "teacher_grad_norm", "examples_per_s", "memory_mb",
    "layers", "layer_weights",
}
_DEV_PREFIX = "dev_"
_LOG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSIONED = ("lead", "pytrec-eval-terrier", "scipy", "matplotlib", "pyarrow")


# --------------------------------------------------------------------------- metrics


def _metrics_dir(metrics_root: Path, model: str, split: str) -> Path:
    return metrics_root / model / split


def _summary_values(metrics_root: Path, model: str, split: str) -> dict[str, float]:
    path = _metrics_dir(metrics_root, model, split) / "summary.parquet"
    if not path.exists():
        raise DataError(path, None, f"missing: no metrics for model {model!r} on split {split!r}")
    table = read_table(path, METRICS)
    return dict(zip(table["measure"].to_pylist(), table["value"].to_pylist(), strict=True))


def _level(settings: Mapping[str, Any], split: str) -> int:
    return int(settings["relevance_level"].get(split, 1))


def _metrics_table(
    settings: Mapping[str, Any], metrics_root: Path, models: Sequence[str], splits: Sequence[str]
) -> list[str]:
    columns = [
        (split, measure_name(base, _level(settings, split)))
        for split in splits
        for base in settings["report_measures"]
    ]
    lines = [
        "| model | " + " | ".join(f"{split} {name}" for split, name in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for model in models:
        summaries = {split: _summary_values(metrics_root, model, split) for split in splits}
        cells = []
        for split, name in columns:
            if name not in summaries[split]:
                path = _metrics_dir(metrics_root, model, split) / "summary.parquet"
                raise DataError(
                    path, f"measure {name!r}", f"absent; the file has {sorted(summaries[split])}"
                )
            cells.append(f"{100 * summaries[split][name]:.2f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _p_cell(p_value: float) -> str:
    if math.isnan(p_value):
        return "n/a"
    marker = " *" if p_value < SIGNIFICANCE_ALPHA else ""
    return f"{p_value:.3g}{marker}"


def _significance_table(
    settings: Mapping[str, Any], metrics_root: Path, models: Sequence[str], splits: Sequence[str]
) -> list[str]:
    baselines = [model for model in models if model != LEAD_MODEL]
    if LEAD_MODEL not in models or not baselines:
        return [f"No paired tests: the report needs {LEAD_MODEL!r} and at least one other model."]
    lines = [
        f"| split | measure | baseline | {LEAD_MODEL} | baseline value | Δ (points) "
        "| p (t-test) | p (permutation) | queries |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for split in splits:
        name = measure_name(settings["significance_measure"], _level(settings, split))
        lead_file = _metrics_dir(metrics_root, LEAD_MODEL, split) / "per_query.parquet"
        for baseline in baselines:
            baseline_file = _metrics_dir(metrics_root, baseline, split) / "per_query.parquet"
            result = compare(lead_file, baseline_file, name)
            lines.append(
                f"| {split} | {name} | {baseline} | {100 * result['mean_a']:.2f} "
                f"| {100 * result['mean_b']:.2f} | {100 * result['delta']:+.2f} "
                f"| {_p_cell(result['p_ttest'])} | {_p_cell(result['p_permutation'])} "
                f"| {result['n']} |"
            )
    lines += [
        "",
        f"Paired over queries; Δ = {LEAD_MODEL} − baseline. p-values are two-sided: Student's "
        "paired t-test and a paired randomisation test (sign flips of the per-query "
        f"differences, seeded; exact for few queries). * marks p < {SIGNIFICANCE_ALPHA}.",
    ]
    return lines


# --------------------------------------------------------------------------- plots


def _figure():
    from matplotlib.figure import Figure  # savefig renders PNG with Agg; no pyplot state

    figure = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def _read_log(path: Path) -> pa.Table:
    if not path.exists():
        raise DataError(path, None, "training log not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(path, None, f"not a readable parquet file: {err}") from err
    if "step" not in table.column_names:
        raise DataError(path, "column 'step'", "missing; a training log needs a step column")
    return table


def _numeric_columns(table: pa.Table, selected) -> list[str]:
    return [
        field.name
        for field in table.schema
        if selected(field.name)
        and pa.types.is_floating(field.type)
        and table[field.name].null_count < len(table)
    ]


def _plot_curves(table: pa.Table, columns: list[str], title: str, path: Path) -> None:
    figure, axes = _figure()
    steps = np.asarray(table["step"].to_pylist(), dtype=np.float64)
    for column in columns:
        values = np.asarray(
            [math.nan if v is None else v for v in table[column].to_pylist()], dtype=np.float64
        )
        known = ~np.isnan(values)
        marker = "o" if known.sum() < 30 else None  # sparse series (dev rows) need markers
        axes.plot(steps[known], values[known], marker=marker, label=column)
    axes.set_xlabel("step")
    axes.set_title(title)
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    _save(figure, path)


def _layer_weight_grid(table: pa.Table, path: Path) -> tuple[np.ndarray, list[int]] | None:
    """(teacher layer x logged step) weight matrix, NaN where a layer was not selected."""
    if not {"layers", "layer_weights"} <= set(table.column_names):
        return None
    rows = []
    for index, (step, pairs, weights) in enumerate(
        zip(
            table["step"].to_pylist(),
            table["layers"].to_pylist(),
            table["layer_weights"].to_pylist(),
            strict=True,
        )
    ):
        if not pairs or not weights:
            continue
        if len(pairs) != len(weights) or any(len(pair) != 2 or pair[0] < 1 for pair in pairs):
            raise DataError(
                path, f"row {index}",
                "layers must be (teacher, student) pairs of 1-based layers, one per layer weight",
            )
        by_teacher_layer = dict(zip((pair[0] for pair in pairs), weights, strict=True))
        rows.append((step, by_teacher_layer))
    if not rows:
        return None
    depth = max(max(weights) for _, weights in rows)
    grid = np.full((depth, len(rows)), np.nan)
    for column, (_, weights) in enumerate(rows):
        for teacher_layer, weight in weights.items():
            grid[teacher_layer - 1, column] = weight
    return grid, [step for step, _ in rows]


def _plot_layer_weights(grid: np.ndarray, steps: list[int], title: str, path: Path) -> None:
    figure, axes = _figure()
    extent = (-0.5, grid.shape[1] - 0.5, 0.5, grid.shape[0] + 0.5)
    image = axes.imshow(
        grid, aspect="auto", origin="lower", interpolation="nearest", extent=extent
    )
    ticks = np.unique(np.linspace(0, len(steps) - 1, num=min(len(steps), 8)).round().astype(int))
    axes.set_xticks(ticks, [str(steps[i]) for i in ticks])
    axes.set_yticks(range(1, grid.shape[0] + 1))
    axes.set_xlabel("step")
    axes.set_ylabel("teacher layer")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="layer weight")
    _save(figure, path)


def _log_plots(name: str, log_path: Path, plots_dir: Path) -> list[tuple[str, Path]]:
    """Render the plots a log supports; return (caption, path) for each."""
    table = _read_log(log_path)
    table = table.take(pc.sort_indices(table, [("step", "ascending")]))
    plots = []
    losses = _numeric_columns(
        table, lambda c: c not in _LOG_BOOKKEEPING and not c.startswith(_DEV_PREFIX)
    )
    if losses:
        path = plots_dir / f"{name}-losses.png"
        _plot_curves(table, losses, f"{name}: loss components", path)
        plots.append(("loss components", path))
    dev = _numeric_columns(table, lambda c: c.startswith(_DEV_PREFIX))
    if dev:
        path = plots_dir / f"{name}-dev.png"
        _plot_curves(table, dev, f"{name}: dev evaluation", path)
        plots.append(("dev metric", path))
    grid = _layer_weight_grid(table, log_path)
    if grid is not None:
        path = plots_dir / f"{name}-layer-weights.png"
        _plot_layer_weights(*grid, f"{name}: LEAD layer weights", path)
        plots.append(("LEAD layer weights (teacher layer x step)", path))
    return plots


def _training_section(logs: Mapping[str, str | Path], plots_dir: Path, out_md: Path) -> list[str]:
    if not logs:
        return ["", "No training logs were given."]
    lines: list[str] = []
    for name in sorted(logs):
        if not _LOG_NAME.match(name):
            raise ConfigError(f"log name {name!r}: use letters, digits, '.', '_' or '-'")
        lines += ["", f"### {name}", ""]
        plots = _log_plots(name, Path(logs[name]), plots_dir)
        if not plots:
            lines.append("The log has no loss, dev or layer-weight values to plot.")
        for caption, path in plots:
            relative = Path(os.path.relpath(path, out_md.parent)).as_posix()
            lines.append(f"![{name}: {caption}]({relative})")
    return lines


# --------------------------------------------------------------------------- report


def _versions() -> str:
    found = []
    for package in _VERSIONED:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def build_report(
    settings: Mapping[str, Any] | None,
    metrics_root: str | Path,
    logs: Mapping[str, str | Path],
    out_md: str | Path,
    plots_dir: str | Path,
    *,
    splits: Sequence[str],
    models: Sequence[str] = DEFAULT_MODELS,
) -> str:
    """Write the markdown report (and its PNG plots); return the markdown text.

    `settings` is the config's `evaluate` section; `logs` maps a name (used in plot file
    names) to a training-log parquet.
    """
    resolved = resolve("evaluate", settings)
    if not splits or not models:
        raise ConfigError("the report needs at least one split and one model")
    metrics_root, out_md, plots_dir = Path(metrics_root), Path(out_md), Path(plots_dir)
    levels = [f"{split}: grade >= {_level(resolved, split)}" for split in splits]
    lines = [
        "# LEAD distillation report",
        "",
        "## Retrieval quality (%)",
        "",
        *_metrics_table(resolved, metrics_root, models, splits),
        "",
        "Binary measures (RR, R, AP) count as relevant " + "; ".join(levels)
        + ". nDCG uses the graded judgments. Judged queries missing from a run count as 0.",
        "",
        f"## Paired significance of {LEAD_MODEL}",
        "",
        *_significance_table(resolved, metrics_root, models, splits),
        "",
        "## Training",
        *_training_section(logs, plots_dir, out_md),
        "",
        "---",
        f"Provenance: evaluate settings hash `{config_hash(resolved)}`; {_versions()}.",
    ]
    text = "\n".join(lines) + "\n"
    with atomic_path(out_md) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return text
