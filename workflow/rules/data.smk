# Data: each collection's source (embedded, msmarco-passage, msmarco-document, beir, trec,
# tsv) -> corpus.parquet, queries/{split}.parquet, qrels/{split}.parquet. One rule per
# collection: `data` for the config's dataset, `data_<collection>` for evaluate.collections.

for collection in PLAN.collections:

    rule:
        """Runs `python -m lead data` (lead/cli/data.py, lead/data/sources.py)."""
        name:
            "data" if collection.name == lead_plan.MAIN else f"data_{collection.name}"
        output:
            corpus=f"{collection.root}/data/corpus.parquet",
            queries=expand(
                f"{collection.root}/data/queries/{{split}}.parquet",
                split=collection.splits,
            ),
            qrels=expand(
                f"{collection.root}/data/qrels/{{split}}.parquet",
                split=collection.splits,
            ),
        log:
            f"{LOGS}/data/{collection.name}.log",
        benchmark:
            f"{BENCHMARKS}/data/{collection.name}.tsv"
        conda:
            "../envs/lead.yaml"
        resources:
            mem_mb=4000,
            runtime=240,
        params:
            settings=dataset_settings(collection.dataset),
            out=lambda wc, output: Path(output.corpus).parent,
            cache=f"resources/{collection.dataset['source']}",
            code=code("data"),
        message:
            job_message(
                f"data: collection {collection.name} ({collection.dataset['source']})"
            )
        shell:
            "python -m lead data --settings {params.settings:q} --out {params.out:q}"
            " --cache {params.cache:q} > {log:q} 2>&1"
