# Retrieval: faiss over the encoded shards, merged with bounded memory; runs as parquet + TREC.


rule search:
    """Runs `python -m lead search` (lead/cli/search.py, lead/retrieval/search.py)."""
    input:
        queries="{root}/embeddings/{model}/queries/{split}.parquet",
        corpus=expand(
            "{{root}}/embeddings/{{model}}/corpus/{shard}.parquet", shard=SHARDS
        ),
    output:
        run="{root}/runs/{model}/{split}.parquet",
        trec="{root}/runs/{model}/{split}.trec",
    log:
        "{root}/logs/search/{model}-{split}.log",
    benchmark:
        "{root}/benchmarks/search/{model}-{split}.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=search_runtime,
    params:
        settings=settings(**config["search"]),
        code=code("search"),
    message:
        job_message("search: {wildcards.model} on {wildcards.root} {wildcards.split}")
    shell:
        "python -m lead search --queries {input.queries:q} --corpus {input.corpus:q}"
        " --settings {params.settings:q} --out {output.run:q} --trec {output.trec:q}"
        " --tag {wildcards.model:q} > {log:q} 2>&1"


rule search_mining:
    """Runs `python -m lead search` for the miner over the training queries (the paper's dense
    negatives)."""
    input:
        queries=f"{RESULTS}/embeddings/{PLAN.miner}/queries/train.parquet",
        corpus=expand(
            f"{RESULTS}/embeddings/{PLAN.miner}/corpus/{{shard}}.parquet", shard=SHARDS
        ),
    output:
        temp(f"{RESULTS}/runs/{PLAN.miner}/mining.parquet"),
    log:
        f"{LOGS}/search/{PLAN.miner}-mining.log",
    benchmark:
        f"{BENCHMARKS}/search/{PLAN.miner}-mining.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=search_runtime,
    params:
        settings=settings(
            **{**config["search"], "depth": config["negatives"]["retrieve_depth"]}
        ),
        code=code("search"),
    message:
        job_message(f"search_mining: {PLAN.miner} retrieves for every training query")
    shell:
        "python -m lead search --queries {input.queries:q} --corpus {input.corpus:q}"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"
