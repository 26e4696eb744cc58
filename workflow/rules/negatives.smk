# Training groups: BM25 or given negatives for the warm-ups; for distillation, either the same
# groups or, as in the paper, negatives mined by a trained dual encoder (`source: dense`).


rule negatives:
    """Runs `python -m lead negatives` (lead/cli/negatives.py, lead/data/negatives.py)."""
    input:
        unpack(given_triples),
        corpus=f"{RESULTS}/data/corpus.parquet",
        queries=f"{RESULTS}/data/queries/train.parquet",
        qrels=f"{RESULTS}/data/qrels/train.parquet",
    output:
        f"{RESULTS}/negatives/initial.parquet",
    log:
        f"{LOGS}/negatives/initial.log",
    benchmark:
        f"{BENCHMARKS}/negatives/initial.tsv"
    # First when cores are free: the warm-ups and everything after them wait for it, while
    # the initial models' encodings can fill the cores at any time.
    priority: 10
    conda:
        "../envs/lead.yaml"
    threads: 2
    # BM25 at MS MARCO's size: 33 min on 2 shared cores, 8.9 GB (docs/rehearsal.md).
    resources:
        runtime=2 * 60,
        mem_mb=12000,
    params:
        # Dense mining needs a trained retriever first: the warm-ups use BM25 negatives.
        source=(
            "bm25"
            if config["negatives"]["source"] == "dense"
            else config["negatives"]["source"]
        ),
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
        code=code("negatives"),
    message:
        job_message("negatives: {params.source} hard negatives of the training queries")
    shell:
        "python -m lead negatives --settings {params.settings:q} --corpus {input.corpus:q}"
        " --queries {input.queries:q} --qrels {input.qrels:q} --threads {threads}"
        " --out {output:q} > {log:q} 2>&1"


rule negatives_mined:
    """Runs `python -m lead negatives` on the miner's run (lead/cli/negatives.py)."""
    input:
        run=f"{RESULTS}/runs/{PLAN.miner}/mining.parquet",
        corpus=f"{RESULTS}/data/corpus.parquet",
        queries=f"{RESULTS}/data/queries/train.parquet",
        qrels=f"{RESULTS}/data/qrels/train.parquet",
    output:
        f"{RESULTS}/negatives/mined.parquet",
    log:
        f"{LOGS}/negatives/mined.log",
    benchmark:
        f"{BENCHMARKS}/negatives/mined.tsv"
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        settings=settings(**config["negatives"]),
        code=code("negatives"),
    message:
        job_message(f"negatives_mined: negatives mined by {PLAN.miner}")
    shell:
        "python -m lead negatives --settings {params.settings:q} --corpus {input.corpus:q}"
        " --queries {input.queries:q} --qrels {input.qrels:q} --run {input.run:q}"
        " --out {output:q} > {log:q} 2>&1"
