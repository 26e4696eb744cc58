"""Data sources: every supported collection converted to the corpus/queries/qrels parquet.

`lead.data.sources.build_dataset` is the entry point; `lead.data.msmarco`, `lead.data.local`
and `lead.data.embedded` build one kind of source each. Beneath them: `tsv` (block parsing),
`text` (encoding repair and text checks), `readers` (queries, judgments, JSON lines),
`corpus` (validated corpus writing), `checks` (`dataset.strict`), `splits` (split handling),
`download` (verified downloads) and `docstrings` (the embedded dataset's docstring parser).
`lead.data.negatives` builds the training groups, on `bm25` for BM25 retrieval.
"""
