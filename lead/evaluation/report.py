"""The final report: every model's metrics per collection, each method's mean and sd over
the distillation seeds, LEAD's tests against each baseline across seeds (paired by seed) and
over the queries of each seed, and plots of the training logs (losses, dev metric, layer
weights).

Inputs follow docs/artifacts.md: per collection, metrics/{model}/{split}/{summary,per_query}
.parquet, and the training logs. Students are named `student-<method or variant>-s<seed>`:
the rows the report averages over seeds. The output depends only on those inputs and the
settings (no timestamps, plot paths relative to the report), so a rerun gives the same bytes.
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

from lead import schemas
from lead.config import resolve
from lead.errors import ConfigError, DataError
from lead.evaluation.measures import measure_name
from lead.evaluation.significance import compare, compare_seeds, detectable_difference
from lead.io import (
    METRICS_TSV_HEADER,
    REPORT_TITLE,
    atomic_path,
    check_output,
    config_hash,
    mark_output,
    read_table,
)
from lead.methods import BASELINES, LEAD
from lead.schemas import METRICS

SIGNIFICANCE_ALPHA = 0.05
DETECTION_POWER = 0.8  # the power of the across-seeds table's "detectable Δ"
STUDENT = re.compile(r"^student-(?P<row>.+)-s(?P<seed>-?\d+)$")
_LOG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSIONED = ("lead", "pytrec-eval-terrier", "scipy", "matplotlib", "pyarrow")

Split = tuple[str, str]  # (collection, split)


# --------------------------------------------------------------------------- metrics


class Metrics:
    """Every model's summaries and per-query files, collection by collection."""

    def __init__(self, roots: Mapping[str, Path], levels: Mapping[str, Mapping[str, int]]):
        self.roots = {name: Path(path) for name, path in roots.items()}
        self.levels = levels

    def level(self, split: Split) -> int:
        return int(self.levels.get(split[0], {}).get(split[1], 1))

    def name(self, base: str, split: Split) -> str:
        return measure_name(base, self.level(split))

    def directory(self, model: str, split: Split) -> Path:
        return self.roots[split[0]] / model / split[1]

    def value(self, model: str, split: Split, measure: str) -> float:
        path = self.directory(model, split) / "summary.parquet"
        if not path.exists():
            raise DataError(path, None,
                            f"missing: no metrics for model {model!r} on {split[0]} {split[1]!r}")
        table = read_table(path, METRICS)
        values = dict(zip(table["measure"].to_pylist(), table["value"].to_pylist(), strict=True))
        if measure not in values:
            raise DataError(path, f"measure {measure!r}", f"absent; the file has {sorted(values)}")
        return values[measure]

    def per_query(self, model: str, split: Split) -> Path:
        return self.directory(model, split) / "per_query.parquet"


def _cell(value: float) -> str:
    return f"{100 * value:.2f}"


def _p_cell(p_value: float) -> str:
    if math.isnan(p_value):
        return "n/a"
    marker = " *" if p_value < SIGNIFICANCE_ALPHA else ""
    return f"{p_value:.3g}{marker}"


def _metrics_tables(settings, metrics: Metrics, models, splits) -> tuple[list[str], list[list]]:
    """One table per collection: a row per model, a column per split and measure."""
    lines, rows = [], []
    for collection in dict.fromkeys(c for c, _ in splits):
        columns = [(split, metrics.name(base, split)) for split in splits
                   if split[0] == collection for base in settings["report_measures"]]
        lines += [f"### {collection}", "",
                  "| model | " + " | ".join(f"{s} {name}" for (_, s), name in columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for model in models:
            values = [metrics.value(model, split, name) for split, name in columns]
            lines.append(f"| {model} | " + " | ".join(_cell(v) for v in values) + " |")
            rows += [[collection, split[1], model, name, value]
                     for (split, name), value in zip(columns, values, strict=True)]
        lines.append("")
    return lines, rows


def seeded_rows(models: Sequence[str]) -> dict[str, dict[int, str]]:
    """Row (method or variant) -> seed -> model, for the students named by seed."""
    rows: dict[str, dict[int, str]] = {}
    for model in models:
        match = STUDENT.match(model)
        if match:
            rows.setdefault(match["row"], {})[int(match["seed"])] = model
    return rows


def _mean_sd(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=np.float64)
    sd = values.std(ddof=1) if len(values) > 1 else math.nan
    return f"{_cell(values.mean())} ± {_cell(sd) if not math.isnan(sd) else 'n/a'}"


def selected_on_dev(log_path: Path) -> tuple[str, float, int] | None:
    """(measure, value, step) of the best dev evaluation in a training log: the checkpoint the
    run kept (its selection metric is the log's first dev column)."""
    table = _read_log(log_path)
    dev = [name for name in table.column_names if name.startswith("dev_")]
    if not dev:
        return None
    values = table.column(dev[0]).to_pylist()
    steps = table.column("step").to_pylist()
    known = [(v, -s) for v, s in zip(values, steps, strict=True) if v is not None]
    if not known:
        return None
    value, step = max(known)
    return dev[0].removeprefix("dev_"), value, -step


def _seed_tables(settings, metrics: Metrics, models, splits, logs) -> list[str]:
    rows = seeded_rows(models)
    if not rows:
        return ["No students named by seed (student-<method>-s<seed>) to summarise."]
    base = settings["significance_measure"]
    header = [f"{c} {s} {metrics.name(base, (c, s))}" for c, s in splits]
    selected = {model: selected_on_dev(Path(logs[model])) for m in rows.values()
                for model in m.values() if model in logs}
    dev_names = {found[0] for found in selected.values() if found}
    dev_header = [f"dev {dev_names.pop()} (selected)"] if len(dev_names) == 1 else []
    lines = ["| method | seeds | " + " | ".join(header + dev_header) + " |",
             "|---|---:|" + "---:|" * len(header + dev_header)]
    for row, by_seed in rows.items():
        cells = [_mean_sd([metrics.value(m, split, metrics.name(base, split))
                           for m in by_seed.values()]) for split in splits]
        if dev_header:
            found = [selected.get(m) for m in by_seed.values()]
            cells.append(_mean_sd([f[1] for f in found]) if all(found) else "n/a")
        lines.append(f"| {row} | {len(by_seed)} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sample standard deviation over the seeds, in points of {base}"
              + (" and, last, of the dev metric of the checkpoint each run kept (the dev split "
                 "picks checkpoints and settings; the reported splits never do)."
                 if dev_header else ".")]
    return lines


def _comparisons(rows: Mapping[str, Any]) -> list[tuple[str, str]]:
    """LEAD against each baseline present, then each variant against LEAD."""
    pairs = [(LEAD, b) for b in BASELINES if LEAD in rows and b in rows]
    pairs += [(row, LEAD) for row in rows if row not in (LEAD, *BASELINES) and LEAD in rows]
    return pairs


def _across_seeds(settings, metrics: Metrics, models, splits) -> tuple[list[str], list[str]]:
    rows = seeded_rows(models)
    pairs = _comparisons(rows)
    if not pairs:
        return [f"No paired tests: they need the {LEAD!r} student and a baseline."], []
    base = settings["significance_measure"]
    power = f"{100 * DETECTION_POWER:.0f}% power"
    lines = ["| collection | split | measure | A | B | seeds | A mean ± sd | B mean ± sd "
             f"| Δ mean ± sd (points) | p (paired t) | p (sign flips) | detectable Δ ({power}) |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for split in splits:
        name = metrics.name(base, split)
        for a, b in pairs:
            seeds = sorted(set(rows[a]) & set(rows[b]))
            if not seeds:
                continue
            result = compare_seeds(
                {s: metrics.value(rows[a][s], split, name) for s in seeds},
                {s: metrics.value(rows[b][s], split, name) for s in seeds},
            )
            means = (_pm(result["mean_a"], result["sd_a"]), _pm(result["mean_b"], result["sd_b"]))
            lines.append(
                f"| {split[0]} | {split[1]} | {name} | {a} | {b} | {result['n']} "
                f"| {means[0]} | {means[1]} "
                f"| {_pm(result['delta'], result['sd_delta'], signed=True)} "
                f"| {_p_cell(result['p_ttest'])} | {_p_cell(result['p_permutation'])} "
                f"| {_detectable_cell(result)} |"
            )
            verdicts.append(_verdict(a, b, split, name, result))
    lines += ["", "Paired by seed: each seed trains every method from the same initial "
              "student on the same data. p-values are two-sided: Student's paired t-test over "
              "the seeds and the exact sign-flip test over the 2^n sign vectors (with n seeds "
              f"it cannot go below 2/2^n). * marks p < {SIGNIFICANCE_ALPHA}.",
              "",
              f"Detectable Δ ({power}): the smallest true mean difference, in points, that "
              f"the paired t-test over these n seeds would find significant at p < "
              f"{SIGNIFICANCE_ALPHA} in {100 * DETECTION_POWER:.0f}% of repetitions, were the "
              "differences' sd the one measured here (noncentral t, docs/method.md); n/a with "
              "fewer than two seeds. A measured Δ below it is not evidence of no difference: "
              "the experiment could not have told. The sd is itself estimated from the same "
              "few seeds, so this is a rough guide; more seeds shrink it (about as 1/√n, "
              "faster at small n)."]
    return lines, verdicts


def _detectable_cell(result: Mapping[str, Any]) -> str:
    if result["n"] < 2 or not math.isfinite(result["sd_delta"]):
        return "n/a"
    return _cell(detectable_difference(result["sd_delta"], result["n"],
                                       alpha=SIGNIFICANCE_ALPHA, power=DETECTION_POWER))


def _pm(mean: float, sd: float, *, signed: bool = False) -> str:
    value = f"{100 * mean:+.2f}" if signed else _cell(mean)
    return f"{value} ± {_cell(sd)}" if not math.isnan(sd) else value


def _verdict(a: str, b: str, split: Split, name: str, result: Mapping[str, Any]) -> str:
    delta = 100 * result["delta"]
    where = f"{split[0]} {split[1]} {name}"
    if result["n"] < 2 or math.isnan(result["p_ttest"]):
        return f"{a} − {b} on {where}: {delta:+.2f} points with one seed; no test across seeds."
    if result["p_ttest"] < SIGNIFICANCE_ALPHA:
        word = "better" if delta > 0 else "worse"
        return (f"{a} − {b} on {where}: {delta:+.2f} points over {result['n']} seeds "
                f"(p = {result['p_ttest']:.3g}): {a} is significantly {word}.")
    return (f"{a} − {b} on {where}: {delta:+.2f} points over {result['n']} seeds "
            f"(p = {result['p_ttest']:.3g}): no significant difference.")


def _per_query(settings, metrics: Metrics, models, splits) -> list[str]:
    rows = seeded_rows(models)
    pairs = _comparisons(rows)
    if not pairs:
        return []
    base = settings["significance_measure"]
    lines = ["| collection | split | measure | A | B | seed | Δ (points) | p (t-test) "
             "| p (permutation) | queries |", "|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for split in splits:
        name = metrics.name(base, split)
        for a, b in pairs:
            for seed in sorted(set(rows[a]) & set(rows[b])):
                result = compare(metrics.per_query(rows[a][seed], split),
                                 metrics.per_query(rows[b][seed], split), name)
                lines.append(
                    f"| {split[0]} | {split[1]} | {name} | {a} | {b} | {seed} "
                    f"| {100 * result['delta']:+.2f} | {_p_cell(result['p_ttest'])} "
                    f"| {_p_cell(result['p_permutation'])} | {result['n']} |"
                )
    lines += ["", "Over the queries of ONE training run per seed: these say whether two trained "
              "models rank the queries differently, not whether one method beats the other "
              "(for that, the tests across seeds above)."]
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
    losses = [c for c in schemas.log_losses(table.schema) if c in
              _numeric_columns(table, lambda _: True)]
    if losses:
        path = plots_dir / f"{name}-losses.png"
        _plot_curves(table, losses, f"{name}: loss components", path)
        plots.append(("loss components", path))
    dev = _numeric_columns(table, lambda c: c.startswith(schemas.DEV_PREFIXES))
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
    metrics_roots: Mapping[str, str | Path],
    logs: Mapping[str, str | Path],
    out_md: str | Path,
    plots_dir: str | Path,
    *,
    splits: Sequence[Split],
    models: Sequence[str],
    levels: Mapping[str, Mapping[str, int]] | None = None,
    tables: str | Path | None = None,
) -> str:
    """Write the markdown report (its PNG plots, and `tables`, a TSV of every value when given);
    return the markdown text.

    `settings` is the config's `evaluate` section; `metrics_roots` maps a collection to its
    metrics folder, `levels` a collection to its splits' relevance levels, and `logs` a name
    (used in plot file names) to a training-log parquet.
    """
    resolved = resolve("evaluate", settings)
    if not splits or not models:
        raise ConfigError("the report needs at least one split and one model")
    metrics = Metrics(metrics_roots, levels or {})
    out_md = check_output(out_md, directory=False)
    plots_dir = check_output(plots_dir, directory=True)
    if tables is not None:
        tables = check_output(tables, directory=False)
    level_notes = [f"{c} {s}: grade >= {metrics.level((c, s))}" for c, s in splits]
    quality, table_rows = _metrics_tables(resolved, metrics, models, splits)
    across, verdicts = _across_seeds(resolved, metrics, models, splits)
    lines = [
        REPORT_TITLE,
        "",
        "## Retrieval quality (%)",
        "",
        *quality,
        "Binary measures (RR, R, AP, P) count as relevant " + "; ".join(level_notes)
        + ". nDCG uses the graded judgments. Judged queries missing from a run count as 0.",
        "",
        "## Methods over seeds",
        "",
        *_seed_tables(resolved, metrics, models, splits, logs),
        "",
        "## Tests across seeds",
        "",
        *across,
        "",
        *(f"- {verdict}" for verdict in verdicts),
        "",
        "## Tests over the queries of each seed",
        "",
        *_per_query(resolved, metrics, models, splits),
        "",
        "## Training",
        *_training_section(logs, plots_dir, out_md),
        "",
        "---",
        f"Provenance: evaluate settings hash `{config_hash(resolved)}`; {_versions()}.",
    ]
    text = "\n".join(lines) + "\n"
    plots_dir.mkdir(parents=True, exist_ok=True)  # a declared output, even with no plots
    mark_output(plots_dir, "report")
    if tables is not None:
        rows = [METRICS_TSV_HEADER]
        rows += [f"{c}\t{s}\t{m}\t{name}\t{100 * v:.2f}" for c, s, m, name, v in table_rows]
        with atomic_path(tables) as tmp:
            tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with atomic_path(out_md) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return text
