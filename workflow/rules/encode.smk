# Corpus and query embeddings of every evaluated model on every collection: the corpus in
# shards (one job each, so a cluster encodes in parallel and a killed job redoes one shard),
# and each query split.


rule encode_corpus:
    """Runs `python -m lead encode` (lead/cli/encode.py, lead/retrieval/encode.py; a cached teacher's
    vectors: lead/teacher_cache.py)."""
    input:
        unpack(corpus_source),
        model=encoder,
    output:
        "{root}/embeddings/{model}/corpus/{shard}.parquet",
    log:
        "{root}/logs/encode/{model}-corpus-{shard}.log",
    benchmark:
        "{root}/benchmarks/encode/{model}-corpus-{shard}.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=12 * 60,
    params:
        settings=settings(**config["encode"]),
        source=lambda wc, input: (
            ["--from-cache", input.cache]
            if "cache" in input.keys()
            else [
                "--tokens",
                input.tokens,
                "--shard",
                wc.shard,
                "--num-shards",
                len(SHARDS),
            ]
        ),
        code=code("encode"),
    message:
        job_message(
            "encode_corpus: {wildcards.model} on {wildcards.root}, shard {wildcards.shard}"
        )
    shell:
        "python -m lead.gpus {resources.gpu} --"
        " python -m lead encode --model {input.model:q} {params.source:q} --role passage"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"


rule encode_queries:
    """Runs `python -m lead encode` (lead/cli/encode.py, lead/retrieval/encode.py)."""
    input:
        model=encoder,
        tokens=lambda wc: f"{wc.root}/tokens/{role_of(wc.model)}/queries/{wc.split}.parquet",
    output:
        "{root}/embeddings/{model}/queries/{split}.parquet",
    log:
        "{root}/logs/encode/{model}-queries-{split}.log",
    benchmark:
        "{root}/benchmarks/encode/{model}-queries-{split}.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        settings=settings(**config["encode"]),
        code=code("encode"),
    message:
        job_message(
            "encode_queries: {wildcards.model} on {wildcards.root} {wildcards.split}"
        )
    shell:
        "python -m lead.gpus {resources.gpu} --"
        " python -m lead encode --model {input.model:q} --tokens {input.tokens:q} --role query"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"
