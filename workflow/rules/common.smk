# Helpers shared by every rule: config validation, paths, config slices, code inputs.

import os
import sys
from pathlib import Path

from lead import config as lead_config

# Stages run `python -m lead` and `torchrun` from the environment that runs Snakemake (e.g.
# `.venv/bin/snakemake` without an activated venv); a rule's conda env, when deployed, is
# activated after this and comes first.
os.environ.update(
    PATH=os.pathsep.join(
        [str(Path(sys.executable).parent), os.getenv("PATH", os.defpath)]
    )
)

# Validate before any job starts; fills every default from workflow/schemas/config.schema.yaml.
config.update(lead_config.validate(config))

RESULTS = f"results/{config['name']}"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
ROLES = ["teacher", "student"]
METHODS = config["distillation"]["methods"]
STUDENTS = [f"student-{method}" for method in METHODS]
# ColBERT and cross-encoder teachers cannot search a corpus: the report then shows students only.
MODELS = (["teacher"] if config["teacher"]["kind"] == "dual" else []) + STUDENTS
EVAL_SPLITS = config["dataset"]["eval_splits"]
SPLITS = sorted({"train", "dev", *EVAL_SPLITS})
SHARDS = [f"{i:03d}" for i in range(config["encode"]["shards"])]
# The dual encoder that mines dense negatives, and every model that gets encoded.
MINER = "student-warmup" if config["negatives"]["miner"] == "student" else "teacher"
ENCODED = MODELS + ([MINER] if config["negatives"]["source"] == "dense" else [])


wildcard_constraints:
    role="teacher|student",
    model="|".join(sorted(set(ENCODED))),
    method="|".join(METHODS),
    split="|".join(SPLITS),
    shard=r"\d{3}",


def settings(**sections):
    """The config slices a stage depends on, as canonical JSON (a rule param, so that a
    changed setting reruns that stage and its descendants only)."""
    return lead_config.dumps({name: value for name, value in sections.items()})


def code(*paths):
    """The package files a stage runs, as inputs: editing one reruns the stage."""
    files = []
    for path in paths:
        path = Path(workflow.basedir) / "lead" / path
        files += (
            sorted(str(p) for p in path.rglob("*.py")) if path.is_dir() else [str(path)]
        )
    return files


COMMON_CODE = code("__main__.py", "io.py", "config.py", "errors.py", "schemas.py")


# Each data source reads only its own sub-section: a change to another source's settings
# plans nothing.
SOURCE_SECTIONS = {
    "embedded": "embedded",
    "msmarco-passage": "msmarco",
    "msmarco-document": "msmarco",
    "beir": "beir",
    "trec": "local",
    "tsv": "local",
}


def dataset_settings():
    dataset = config["dataset"]
    own = SOURCE_SECTIONS[dataset["source"]]
    return settings(
        **{
            key: value
            for key, value in dataset.items()
            if key == own or key not in SOURCE_SECTIONS.values()
        }
    )


def role_of(model):
    return "teacher" if model == "teacher" else "student"


def model_dir(model):
    """The directory of a model; disabled warm-ups fall back to the initial model."""
    if model in ("teacher", "student-warmup"):
        role = role_of(model)
        return f"{RESULTS}/models/{role}-{'warm' if warmed(role) else 'init'}"
    return f"{RESULTS}/models/{model}"


def warmed(role):
    section = "teacher_training" if role == "teacher" else "student_warmup"
    return config[section]["enabled"]


def launch(resources):
    """Training entry point: torchrun with one process per GPU when a rule asks for several."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus > 1:
        # `--` keeps torchrun's parser off the stage's options (`--log` would match `--log-dir`).
        return f"torchrun --standalone --nproc_per_node {gpus} -m -- lead"
    return "python -m lead"


# Warm-up (contrastive) training does not run the distillation losses, so editing them reruns
# the distillation jobs and their descendants only.
WARMUP_CODE = code(
    "training",
    "modeling",
    "losses/__init__.py",
    "losses/contrastive.py",
    "evaluate.py",
    "cli/train.py",
)
DISTILL_CODE = WARMUP_CODE + code("losses/distillation.py")


def tokenizer_input(wildcards):
    if config[wildcards.role]["tokenizer"]["train"]:
        return {"tokenizer": f"{RESULTS}/tokenizers/{wildcards.role}"}
    return {}


def max_length(role, kind):
    return config[role][f"{kind}_max_length"]


def distillation_groups(wildcards=None):
    if config["negatives"]["source"] == "dense":
        return f"{RESULTS}/negatives/mined.parquet"
    return f"{RESULTS}/negatives/initial.parquet"


def warmup_settings(role):
    section = "teacher_training" if role == "teacher" else "student_warmup"
    return settings(model=config[role], optimisation=config[section]["optimisation"])


def encoder_inputs(wildcards):
    return {
        "model": model_dir(wildcards.model),
        "code": COMMON_CODE + code("encode.py", "modeling", "cli/encode.py"),
    }


def relevance_level(split):
    return config["evaluate"]["relevance_level"].get(split, 1)
