# Helpers shared by every rule: the validated config, its plan (lead.plan), paths, config
# slices and code hashes. Rules call `python -m lead <stage>`; the stage is named by the rule.

import copy
import os
import re
import sys
from pathlib import Path

from lead import config as lead_config
from lead import plan as lead_plan
from lead.code import stage_hash

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
    """Training entry point: torchrun with one process per GPU when a rule asks for several."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus > 1:
        # `--` keeps torchrun's parser off the stage's options (`--log` would match `--log-dir`).
        return f"torchrun --standalone --nproc_per_node {gpus} -m -- lead"
    return "python -m lead"


def warmup_section(role):
    return config["teacher_training" if role == "teacher" else "student_warmup"]
