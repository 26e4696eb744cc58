"""Data sources: every supported collection converted to the corpus/queries/qrels parquet.

`lead.data.sources.build_dataset` is the entry point; `lead.data.msmarco`, `lead.data.local`
and `lead.data.embedded` build one kind of source each, on the readers and validation of
`lead.data.readers` and the split handling of `lead.data.splits`.
"""
