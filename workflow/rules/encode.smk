# Encoding: the corpus in shards (one job each, so a cluster encodes in parallel and a killed
# job redoes one shard), and each query split.


def encoder_inputs(wildcards):
    return {
        "model": model_dir(wildcards.model),
        "code": COMMON_CODE + code("encode.py", "modeling", "cli/encode.py"),
    }


rule encode_corpus:
    input:
        unpack(encoder_inputs),
        tokens=lambda wc: f"{RESULTS}/tokens/{role_of(wc.model)}/corpus.parquet",
    output:
        f"{RESULTS}/embeddings/{{model}}/corpus/{{shard}}.parquet",
    params:
        settings=settings(**config["encode"]),
        shards=len(SHARDS),
    log:
        f"{LOGS}/encode/{{model}}-corpus-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/encode/{{model}}-corpus-{{shard}}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=12 * 60,
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
    params:
        settings=settings(**config["encode"]),
    log:
        f"{LOGS}/encode/{{model}}-queries-{{split}}.log",
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    shell:
        "python -m lead encode --model {input.model} --tokens {input.tokens} --role query"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"
