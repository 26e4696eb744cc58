# Scoring with trec_eval's semantics, and the report that puts the models side by side.


rule evaluate:
    input:
        run=f"{RESULTS}/runs/{{model}}/{{split}}.parquet",
        qrels=f"{RESULTS}/data/qrels/{{split}}.parquet",
        code=COMMON_CODE + code("evaluate.py", "cli/evaluate.py"),
    output:
        summary=f"{RESULTS}/metrics/{{model}}/{{split}}/summary.parquet",
        per_query=f"{RESULTS}/metrics/{{model}}/{{split}}/per_query.parquet",
        table=f"{RESULTS}/metrics/{{model}}/{{split}}/summary.md",
    log:
        f"{LOGS}/evaluate/{{model}}-{{split}}.log",
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        out=lambda wc, output: Path(output.summary).parent,
        level=lambda wc: relevance_level(wc.split),
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
        logs=[
            f"{RESULTS}/training/{role}-warm.parquet" for role in ROLES if warmed(role)
        ]
        + [f"{RESULTS}/training/{model}.parquet" for model in STUDENTS],
        code=COMMON_CODE + code("report.py", "evaluate.py", "cli/report.py"),
    output:
        report=f"{RESULTS}/report.md",
        plots=directory(f"{RESULTS}/plots"),
    log:
        f"{LOGS}/report.log",
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        settings=settings(**config["evaluate"]),
        metrics=lambda wc, input: Path(input.metrics[0]).parents[2],
        splits=EVAL_SPLITS,
        models=MODELS,
        logs=lambda wc, input: " ".join(
            f"--log {Path(path).stem}={path}" for path in input.logs
        ),
    shell:
        "python -m lead report --settings {params.settings:q} --metrics-root {params.metrics}"
        " {params.logs} --splits {params.splits} --models {params.models}"
        " --out {output.report} --plots {output.plots} > {log} 2>&1"
