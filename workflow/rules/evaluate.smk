# Scoring with trec_eval's semantics on every collection, and the report that puts the models
# side by side.


rule evaluate:
    """Runs `python -m lead evaluate` (lead/cli/evaluate.py, lead/evaluation/evaluate.py)."""
    input:
        run="{root}/runs/{model}/{split}.parquet",
        qrels="{root}/data/qrels/{split}.parquet",
    output:
        summary="{root}/metrics/{model}/{split}/summary.parquet",
        per_query="{root}/metrics/{model}/{split}/per_query.parquet",
        table="{root}/metrics/{model}/{split}/summary.md",
    log:
        "{root}/logs/evaluate/{model}-{split}.log",
    benchmark:
        "{root}/benchmarks/evaluate/{model}-{split}.tsv"
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        out=lambda wc, output: Path(output.summary).parent,
        level=lambda wc: ROOTS[wc.root].relevance_level(wc.split),
        measures=list(PLAN.measures),
        code=code("evaluate"),
    message:
        job_message("evaluate: {wildcards.model} on {wildcards.root} {wildcards.split}")
    shell:
        "python -m lead evaluate --run {input.run:q} --qrels {input.qrels:q} --out {params.out:q}"
        " --relevance-level {params.level} --measures {params.measures:q} > {log:q} 2>&1"


REPORT_SPLITS = [(c, split) for c in PLAN.collections for split in c.eval_splits]
TRAINING_LOGS = {
    f"{role}-warm": f"{RESULTS}/training/{role}-warm.parquet"
    for role, warm in (("teacher", PLAN.teacher_warm), ("student", PLAN.student_warm))
    if warm
} | {job.model: f"{RESULTS}/training/{job.model}.parquet" for job in PLAN.students}


rule report:
    """Runs `python -m lead report` (lead/cli/report.py, lead/evaluation/report.py); a local
    rule: seconds of work, not worth a cluster job."""
    input:
        metrics=[
            f"{c.root}/metrics/{model}/{split}/per_query.parquet"
            for c, split in REPORT_SPLITS
            for model in PLAN.evaluated
        ],
        logs=list(TRAINING_LOGS.values()),
    output:
        report=report(
            f"{RESULTS}/report.md",
            caption="../report/report.rst",
            category="Results",
        ),
        # report.md rendered, so that `snakemake --report` shows its text (Python-Markdown).
        html=report(
            f"{RESULTS}/report.html",
            caption="../report/report-html.rst",
            category="Results",
        ),
        tables=report(
            f"{RESULTS}/report/metrics.tsv",
            caption="../report/metrics.rst",
            category="Results",
        ),
        plots=report(
            directory(f"{RESULTS}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Training",
        ),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCHMARKS}/report.tsv"
    localrule: True
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        settings=settings(**config["evaluate"]),
        metrics=[f"{c.name}={c.root}/metrics" for c in PLAN.collections],
        splits=[f"{c.name}:{split}" for c, split in REPORT_SPLITS],
        models=list(PLAN.evaluated),
        number=len(PLAN.evaluated),
        levels=lead_config.dumps(
            {c.name: c.dataset["relevance_level"] for c in PLAN.collections}
        ),
        logs=(
            ["--logs", *(f"{name}={path}" for name, path in TRAINING_LOGS.items())]
            if TRAINING_LOGS
            else []
        ),
        code=code("report"),
    message:
        job_message("report: {params.number} models on {params.splits}")
    shell:
        "python -m lead report --settings {params.settings:q} --levels {params.levels:q}"
        " --metrics {params.metrics:q} {params.logs:q} --splits {params.splits:q}"
        " --models {params.models:q} --out {output.report:q} --tables {output.tables:q}"
        " --plots {output.plots:q} > {log:q} 2>&1"
        " && {{ echo '<meta charset=\"utf-8\">'; python -m markdown -o html -x tables"
        " {output.report:q}; }} > {output.html:q} 2>> {log:q}"
