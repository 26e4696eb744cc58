# Training groups: BM25 or given negatives for the teacher's warm-up; for distillation, either
# the same groups or, as in the paper, negatives mined by the trained teacher (`source: dense`).


rule negatives:
    input:
        corpus=f"{RESULTS}/data/corpus.parquet",
        queries=f"{RESULTS}/data/queries/train.parquet",
        qrels=f"{RESULTS}/data/qrels/train.parquet",
        code=COMMON_CODE + code("data/negatives.py", "cli/negatives.py"),
    output:
        f"{RESULTS}/negatives/initial.parquet",
    log:
        f"{LOGS}/negatives/initial.log",
    benchmark:
        f"{BENCHMARKS}/negatives.tsv"
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
        mem_mb=8000,
    params:
        # Dense mining needs a trained retriever first: the warm-up uses BM25 negatives.
        settings=settings(
            **{
                **config["negatives"],
                "source": (
                    "bm25"
                    if config["negatives"]["source"] == "dense"
                    else config["negatives"]["source"]
                ),
            }
        ),
        given=(
            f"--given {config['negatives']['given_path']}"
            if config["negatives"]["source"] == "given"
            else ""
        ),
    shell:
        "python -m lead negatives --settings {params.settings:q} --corpus {input.corpus}"
        " --queries {input.queries} --qrels {input.qrels} {params.given} --out {output}"
        " > {log} 2>&1"


rule mine_negatives:
    input:
        run=f"{RESULTS}/runs/{MINER}/mining.parquet",
        corpus=f"{RESULTS}/data/corpus.parquet",
        queries=f"{RESULTS}/data/queries/train.parquet",
        qrels=f"{RESULTS}/data/qrels/train.parquet",
        code=COMMON_CODE + code("data/negatives.py", "cli/negatives.py"),
    output:
        f"{RESULTS}/negatives/mined.parquet",
    log:
        f"{LOGS}/negatives/mined.log",
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        settings=settings(**config["negatives"]),
    shell:
        "python -m lead negatives --settings {params.settings:q} --corpus {input.corpus}"
        " --queries {input.queries} --qrels {input.qrels} --run {input.run} --out {output}"
        " > {log} 2>&1"
