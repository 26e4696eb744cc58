# Data: one source (embedded, msmarco-passage, msmarco-document, beir, trec, tsv) -> parquet.


rule data:
    input:
        code=COMMON_CODE + code("data"),
    output:
        corpus=f"{RESULTS}/data/corpus.parquet",
        queries=expand(f"{RESULTS}/data/queries/{{split}}.parquet", split=SPLITS),
        qrels=expand(f"{RESULTS}/data/qrels/{{split}}.parquet", split=SPLITS),
    log:
        f"{LOGS}/data.log",
    benchmark:
        f"{BENCHMARKS}/data.tsv"
    conda:
        "../envs/lead.yaml"
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        settings=dataset_settings(),
        out=lambda wc, output: Path(output.corpus).parent,
        cache=f"resources/{config['dataset']['source']}",
    shell:
        "python -m lead data --settings {params.settings:q} --out {params.out}"
        " --cache {params.cache} > {log} 2>&1"
