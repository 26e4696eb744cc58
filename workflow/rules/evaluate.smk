# Scoring with trec_eval's semantics, and the report that puts the models side by side.


def relevance_level(split):
    return config["evaluate"]["relevance_level"].get(split, 1)


rule evaluate:
    input:
        run=f"{RESULTS}/runs/{{model}}/{{split}}.parquet",
        qrels=f"{RESULTS}/data/qrels/{{split}}.parquet",
        code=COMMON_CODE + code("evaluate.py", "cli/evaluate.py"),
    output:
        summary=f"{RESULTS}/metrics/{{model}}/{{split}}/summary.parquet",
        per_query=f"{RESULTS}/metrics/{{model}}/{{split}}/per_query.parquet",
        table=f"{RESULTS}/metrics/{{model}}/{{split}}/summary.md",
    params:
        out=lambda wc: f"{RESULTS}/metrics/{wc.model}/{wc.split}",
        level=lambda wc: relevance_level(wc.split),
    log:
        f"{LOGS}/evaluate/{{model}}-{{split}}.log",
    shell:
        "python -m lead evaluate --run {input.run} --qrels {input.qrels} --out {params.out}"
        " --relevance-level {params.level} > {log} 2>&1"


rule report:
    input:
        metrics=expand(
            f"{RESULTS}/metrics/{{model}}/{{split}}/per_query.parquet",
            model=MODELS,
            split=EVAL_SPLITS,
        ),
        logs=[f"{RESULTS}/training/{role}-warm.parquet" for role in ROLES if warmed(role)]
        + [f"{RESULTS}/training/{model}.parquet" for model in STUDENTS],
        code=COMMON_CODE + code("report.py", "evaluate.py", "cli/report.py"),
    output:
        report=f"{RESULTS}/report.md",
        plots=directory(f"{RESULTS}/plots"),
    params:
        settings=settings(**config["evaluate"]),
        logs=lambda wc, input: " ".join(
            f"--log {Path(path).stem}={path}" for path in input.logs
        ),
    log:
        f"{LOGS}/report.log",
    shell:
        "python -m lead report --settings {params.settings:q} --metrics-root {RESULTS}/metrics"
        " {params.logs} --splits {EVAL_SPLITS} --models {MODELS}"
        " --out {output.report} --plots {output.plots} > {log} 2>&1"
