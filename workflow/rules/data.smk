# Data: each collection's source (embedded, msmarco-passage, msmarco-document, beir, trec,
# tsv) -> corpus.parquet, queries/{split}.parquet, qrels/{split}.parquet. One rule per
# collection: `data` for the config's dataset, `data_<collection>` for evaluate.collections.
# A downloaded source (MS MARCO) is fetched first by `download` / `download_<collection>`, a
# local rule: on a cluster it runs on the node Snakemake runs on, where the internet is, and
# the data rule (a compute job) reads only the verified files.

for collection in PLAN.collections:
    suffix = "" if collection.name == lead_plan.MAIN else f"_{collection.name}"
    cache = lead_sources.download_folder(collection.dataset)
    downloads = [
        f"{cache}/{path}" for path in lead_sources.downloads(collection.dataset)
    ]

    if downloads:

        rule:
            """Runs `python -m lead download` (lead/cli/download.py, lead/data/sources.py,
            lead/data/msmarco.py, lead/data/download.py)."""
            name:
                f"download{suffix}"
            output:
                downloads,
            log:
                f"{LOGS}/download/{collection.name}.log",
            benchmark:
                f"{BENCHMARKS}/download/{collection.name}.tsv"
            localrule: True
            # No code hash: the files are pinned by their URLs and checksums, so a new lead
            # re-fetches nothing (a code hash would rerun the whole reproduction on upgrade).
            params:
                settings=dataset_settings(collection.dataset),
                cache=cache,
            message:
                job_message(
                    f"download: collection {collection.name} "
                    f"({collection.dataset['source']}, {len(downloads)} files)"
                )
            shell:
                "python -m lead download --settings {params.settings:q}"
                " --cache {params.cache:q} > {log:q} 2>&1"

    rule:
        """Runs `python -m lead data` (lead/cli/data.py, lead/data/sources.py)."""
        name:
            f"data{suffix}"
        input:
            downloads,
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
            cache=cache,
            code=code("data"),
        message:
            job_message(
                f"data: collection {collection.name} ({collection.dataset['source']})"
            )
        shell:
            "python -m lead data --settings {params.settings:q} --out {params.out:q}"
            " --cache {params.cache:q} > {log:q} 2>&1"
