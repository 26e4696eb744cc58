# lead: LEAD distillation for dense retrieval, from data to a results table.
#
#   data -> tokenization (teacher and student separately) -> negatives -> teacher training
#   -> distillation (none, response, lead) -> encoding -> retrieval -> scoring -> report
#
# Run: snakemake --cores all [--configfile config/msmarco-passage.yaml]


# The embedded default, unless a config is given (`--configfile`): configs are complete
# documents, never merged over this one.
if not config:

    configfile: "config/default.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/negatives.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        report=f"{RESULTS}/report.md",
