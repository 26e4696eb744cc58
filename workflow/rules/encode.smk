# Corpus and query embeddings: the corpus in shards (one job each, so a cluster encodes in parallel and a killed
# job redoes one shard), and each query split.


rule encode_corpus:
    input:
        unpack(encoder_inputs),
        tokens=lambda wc: f"{RESULTS}/tokens/{role_of(wc.model)}/corpus.parquet",
    output:
        f"{RESULTS}/embeddings/{{model}}/corpus/{{shard}}.parquet",
    log:
        f"{LOGS}/encode/{{model}}-corpus-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/encode/{{model}}-corpus-{{shard}}.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=12 * 60,
    params:
        settings=settings(**config["encode"]),
        shards=len(SHARDS),
    shell:
        "python -m lead encode --model {input.model} --tokens {input.tokens} --role passage"
        " --shard {wildcards.shard} --num-shards {params.shards}"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"


rule encode_queries:
    input:
        unpack(encoder_inputs),
        tokens=lambda wc: f"{RESULTS}/tokens/{role_of(wc.model)}/queries/{wc.split}.parquet",
    output:
        f"{RESULTS}/embeddings/{{model}}/queries/{{split}}.parquet",
    log:
        f"{LOGS}/encode/{{model}}-queries-{{split}}.log",
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        settings=settings(**config["encode"]),
    shell:
        "python -m lead encode --model {input.model} --tokens {input.tokens} --role query"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"
