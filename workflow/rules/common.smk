# Helpers shared by every rule: the validated config, its plan (lead.plan), paths, config
# slices and code hashes. Rules call `python -m lead <stage>`; the stage is named by the rule.

import copy
import os
import re
import sys
from pathlib import Path

from lead import config as lead_config
from lead import plan as lead_plan
from lead.data import sources as lead_sources
from lead.code import stage_hash
from snakemake.common.tbdstring import TBDString

# Stages run `python -m lead` and `torchrun` from the environment that runs Snakemake (e.g.
# `.venv/bin/snakemake` without an activated venv); a rule's conda env, when deployed, is
# activated after this and comes first.
# The package itself comes from this workflow's source tree, so a rule's conda env (which holds
# the dependencies) and `--directory elsewhere` run the same code as the checkout.
os.environ.update(
    PATH=os.pathsep.join(
        [str(Path(sys.executable).parent), os.getenv("PATH", os.defpath)]
    ),
    PYTHONPATH=os.pathsep.join(
        [workflow.basedir, *filter(None, [os.getenv("PYTHONPATH")])]
    ),
)

# Validate before any job starts (every default from the schema), then check that the config
# can work: model depths, kinds, splits, measures, names (lead.plan, `python -m lead
# check-config`).
RAW_CONFIG = copy.deepcopy(dict(config))
config.update(lead_config.validate(config))
PLAN = lead_plan.build(config, raw=RAW_CONFIG)
for note in PLAN.notes:
    print(f"lead check-config: {note}", file=sys.stderr)

RESULTS = PLAN.results
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
SHARDS = [f"{i:03d}" for i in range(config["encode"]["shards"])]
COLLECTIONS = {c.name: c for c in PLAN.collections}
ROOTS = {c.root: c for c in PLAN.collections}
STUDENTS = {job.name: job for job in PLAN.students}
TRAINING_SPLITS = ["train", "dev"]


wildcard_constraints:
    role="teacher|student",
    model="|".join(re.escape(m) for m in PLAN.models),
    student="|".join(re.escape(name) for name in STUDENTS) or "(?!)",
    split="|".join(
        re.escape(s) for s in sorted({s for c in PLAN.collections for s in c.splits})
    ),
    shard=r"\d{3}",
    root="|".join(re.escape(root) for root in ROOTS),


def job_message(text):
    """The one-line summary Snakemake prints for a job. `LEAD_JOB_BOXES=1` shows Snakemake's
    own job boxes instead (threads and resources, as slurm-check reads them)."""
    return None if os.environ.get("LEAD_JOB_BOXES") else text


def settings(**sections):
    """The config slices a stage depends on, as canonical JSON (a rule param, so that a
    changed setting reruns that stage and its descendants only)."""
    return lead_config.dumps(sections)


def code(stage):
    """The hash of the code a stage runs (lead.code): editing it reruns the stage."""
    return stage_hash(stage)


def dataset_settings(dataset):
    """A data source's own sub-section and the common keys: another source's settings, or
    the relevance levels (used by scoring only), plan nothing."""
    own = {
        "embedded": "embedded",
        "msmarco-passage": "msmarco",
        "msmarco-document": "msmarco",
        "beir": "beir",
        "trec": "local",
        "tsv": "local",
    }[dataset["source"]]
    sources = {"embedded", "msmarco", "beir", "local"}
    return settings(
        **{
            key: value
            for key, value in dataset.items()
            if (key == own or key not in sources) and key != "relevance_level"
        }
    )


def model_dir(model):
    return PLAN.model_dir(model)


def role_of(model):
    return PLAN.role(model)


def tokens(role, root=RESULTS):
    return f"{root}/tokens/{role}"


def launch(resources):
    """Training entry point: torchrun with one process per GPU when a rule asks for several.
    GPU rules run under `python -m lead.gpus N --`, which gives a local job its own devices.
    """
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus > 1:
        # `--` keeps torchrun's parser off the stage's options (`--log` would match `--log-dir`).
        return f"torchrun --standalone --nproc_per_node {gpus} -m -- lead"
    return "python -m lead"


def search_runtime(wildcards, input, threads):
    """A search job's time limit from its inputs' sizes and threads (lead.retrieval.search):
    the MS MARCO mining search needs hours, a TREC DL search minutes. Before the embeddings
    exist it is Snakemake's to-be-determined value, which Snakemake computes again before it
    submits the job."""
    if not all(Path(path).exists() for path in [input.queries, *input.corpus]):
        return TBDString()
    from lead.retrieval.search import search_minutes

    return search_minutes(input.queries, input.corpus, threads)


def warmup_section(role):
    return config["teacher_training" if role == "teacher" else "student_warmup"]


def tokenizer_input(wildcards):
    if config[wildcards.role]["tokenizer"]["train"]:
        return {"tokenizer": f"{RESULTS}/tokenizers/{wildcards.role}"}
    return {}


def given_triples(wildcards):
    if config["negatives"]["source"] == "given":
        return {"given": config["negatives"]["given_path"]}
    return {}


def warm_groups(wildcards=None):
    return f"{RESULTS}/negatives/initial.parquet"


def distill_inputs(wildcards):
    job = STUDENTS[wildcards.student]
    inputs = {
        "teacher": model_dir(PLAN.distillation_teacher),
        "student": model_dir(PLAN.distillation_student),
        "teacher_corpus": f"{RESULTS}/tokens/teacher/corpus.parquet",
        "teacher_queries": f"{RESULTS}/tokens/teacher/queries/train.parquet",
        "student_corpus": f"{RESULTS}/tokens/student/corpus.parquet",
        "student_queries": f"{RESULTS}/tokens/student/queries/train.parquet",
        "dev_queries": f"{RESULTS}/tokens/student/queries/dev.parquet",
        "dev_qrels": f"{RESULTS}/data/qrels/dev.parquet",
        "groups": (
            f"{RESULTS}/negatives/mined.parquet"
            if config["negatives"]["source"] == "dense"
            else f"{RESULTS}/negatives/initial.parquet"
        ),
    }
    if lead_plan.cached(PLAN, job):
        inputs["cache_queries"] = f"{RESULTS}/teacher_cache/queries.parquet"
        inputs["cache_corpus"] = expand(
            f"{RESULTS}/teacher_cache/corpus/{{shard}}.parquet", shard=SHARDS
        )
    elif job.distillation["teacher_trainable"] and job.method != "none":
        inputs["teacher_dev_queries"] = f"{RESULTS}/tokens/teacher/queries/dev.parquet"
    return inputs


def distill_options(wildcards, input):
    options = []
    if "cache_queries" in input.keys():
        options += ["--teacher-cache-queries", input.cache_queries]
        options += ["--teacher-cache-passages", *input.cache_corpus]
    if "teacher_dev_queries" in input.keys():
        options += ["--teacher-dev-query-tokens", input.teacher_dev_queries]
    return options


def encoder(wildcards):
    return model_dir(wildcards.model)


def corpus_source(wildcards):
    """The frozen teacher's final vectors come off its layer cache (a float32 one holds them
    exactly); every other model encodes its tokens."""
    if (
        PLAN.teacher_cached
        and wildcards.model == PLAN.distillation_teacher
        and wildcards.root == RESULTS
        and config["distillation"]["teacher_cache"]["dtype"] == "float32"
    ):
        return {"cache": f"{RESULTS}/teacher_cache/corpus/{wildcards.shard}.parquet"}
    return {
        "tokens": f"{wildcards.root}/tokens/{role_of(wildcards.model)}/corpus.parquet"
    }
