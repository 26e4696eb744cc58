# Retrieval: faiss over the encoded shards, merged with bounded memory; runs as parquet + TREC.


rule search:
    input:
        queries=f"{RESULTS}/embeddings/{{model}}/queries/{{split}}.parquet",
        corpus=expand(
            f"{RESULTS}/embeddings/{{{{model}}}}/corpus/{{shard}}.parquet",
            shard=SHARDS,
        ),
        code=COMMON_CODE + code("search.py", "evaluate.py", "cli/search.py"),
    output:
        run=f"{RESULTS}/runs/{{model}}/{{split}}.parquet",
        trec=f"{RESULTS}/runs/{{model}}/{{split}}.trec",
    log:
        f"{LOGS}/search/{{model}}-{{split}}.log",
    benchmark:
        f"{BENCHMARKS}/search/{{model}}-{{split}}.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=4 * 60,
    params:
        settings=settings(**config["search"]),
    shell:
        "python -m lead search --queries {input.queries} --corpus {input.corpus}"
        " --settings {params.settings:q} --out {output.run} --trec {output.trec}"
        " --tag {wildcards.model} > {log} 2>&1"


rule mining_run:
    """The miner retrieves for every training query (the paper's dense negatives)."""
    input:
        queries=f"{RESULTS}/embeddings/{MINER}/queries/train.parquet",
        corpus=expand(
            f"{RESULTS}/embeddings/{MINER}/corpus/{{shard}}.parquet", shard=SHARDS
        ),
        code=COMMON_CODE + code("search.py", "evaluate.py", "cli/search.py"),
    output:
        f"{RESULTS}/runs/{MINER}/mining.parquet",
    log:
        f"{LOGS}/search/{MINER}-mining.log",
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=4 * 60,
    params:
        settings=settings(
            **{**config["search"], "depth": config["negatives"]["retrieve_depth"]}
        ),
    shell:
        "python -m lead search --queries {input.queries} --corpus {input.corpus}"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"
