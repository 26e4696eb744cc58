# Data: one source (embedded, msmarco-passage, msmarco-document, beir, trec, tsv) -> parquet.


rule data:
    input:
        code=COMMON_CODE + code("data"),
    output:
        corpus=f"{RESULTS}/data/corpus.parquet",
        queries=expand(f"{RESULTS}/data/queries/{{split}}.parquet", split=SPLITS),
        qrels=expand(f"{RESULTS}/data/qrels/{{split}}.parquet", split=SPLITS),
    params:
        settings=dataset_settings(),
        out=f"{RESULTS}/data",
    log:
        f"{LOGS}/data.log",
    benchmark:
        f"{BENCHMARKS}/data.tsv"
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "python -m lead data --settings {params.settings:q} --out {params.out}"
        " --cache resources/{config[dataset][source]} > {log} 2>&1"
