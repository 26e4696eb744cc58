"""What a config asks the workflow to build, and whether it can: the plan and its checks.

From a validated config this computes the models to train (one distillation job per method,
variant and seed), the models to evaluate, the collections they are scored on, where every
model lives and which tokenizer it reads, whether the frozen teacher is read from its layer
cache, and which measures the evaluation must compute for the report. Snakemake's rules are
written from it (workflow/rules/common.smk) and `python -m lead check-config` prints it; both
run its checks first, so a config that cannot work fails before any job starts, naming the key:
layer choices against the models' depths (read from their config files), models that cannot do
what they are asked (a ColBERT teacher as dense miner), splits the sources do not have, measure
names, names that would become paths.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lead.config import merge, resolve, validate
from lead.errors import ConfigError
from lead.methods import DISTILLING, LEAD, METHODS
from lead.paths import check_name

log = logging.getLogger(__name__)

MAIN = "main"  # the collection of the config's own `dataset`
# The splits each source can produce ("dev" is held out from "train" when a source has none).
SOURCE_SPLITS = {
    "embedded": ("train", "dev", "test"),
    "msmarco-passage": ("train", "dev", "dev-small", "dl19", "dl20"),
    "msmarco-document": ("train", "dev", "dev-docs", "dl19", "dl20"),
}


@dataclass(frozen=True)
class StudentJob:
    """One distillation: a method (or a variant of one) trained with one seed."""

    name: str  # e.g. "lead-s888"; the model is "student-<name>"
    method: str
    seed: int
    variant: str | None
    distillation: dict[str, Any]  # the resolved section this job runs with

    @property
    def model(self) -> str:
        return f"student-{self.name}"

    @property
    def row(self) -> str:
        """The method or variant, without the seed: what the report averages over seeds."""
        return self.variant or self.method


@dataclass(frozen=True)
class Collection:
    """A collection the models are scored on, and where its artifacts live."""

    name: str
    root: str  # results/<name> for the main dataset, results/<name>/collections/<c> otherwise
    dataset: dict[str, Any]
    eval_splits: tuple[str, ...]
    splits: tuple[str, ...]  # every split its data stage writes

    def relevance_level(self, split: str) -> int:
        return int(self.dataset["relevance_level"].get(split, 1))


@dataclass(frozen=True)
class Plan:
    config: dict[str, Any]
    results: str
    teacher_warm: bool
    student_warm: bool
    students: tuple[StudentJob, ...]
    evaluated: tuple[str, ...]  # models scored on every collection, in report order
    collections: tuple[Collection, ...]
    teacher_cached: bool
    miner: str | None  # the model that mines dense negatives
    measures: tuple[str, ...]  # what the evaluate rule computes: what the report needs and more
    notes: list[str] = field(default_factory=list)  # what the checks could not verify

    @property
    def training(self) -> bool:
        return bool(self.students) or self.teacher_warm or self.student_warm

    @property
    def distillation_teacher(self) -> str:
        return "teacher-warm" if self.teacher_warm else "teacher-init"

    @property
    def distillation_student(self) -> str:
        return "student-warm" if self.student_warm else "student-init"

    @property
    def models(self) -> tuple[str, ...]:
        """Every model with a directory: the evaluated ones, the miner, the distillation pair."""
        extra = [self.miner] if self.miner else []
        if self.students:
            extra += [self.distillation_teacher, self.distillation_student]
        return tuple(dict.fromkeys([*self.evaluated, *extra]))

    def model_dir(self, model: str) -> str:
        return f"{self.results}/models/{model}"

    @staticmethod
    def role(model: str) -> str:
        return "teacher" if model.startswith("teacher") else "student"

    def student(self, name: str) -> StudentJob:
        return next(job for job in self.students if job.name == name)

    def collection(self, name: str) -> Collection:
        return next(c for c in self.collections if c.name == name)

    def summary(self) -> str:
        lines = [f"config {self.config['name']!r}: results in {self.results}/"]
        if self.students:
            rows = sorted({job.row for job in self.students})
            seeds = sorted({job.seed for job in self.students})
            lines.append(f"  {len(self.students)} distillations: {', '.join(rows)} x seeds "
                         f"{seeds}" + (" (teacher read from its layer cache)"
                                       if self.teacher_cached else ""))
        for model in ("teacher", "student"):
            if getattr(self, f"{model}_warm"):
                lines.append(f"  {model} warm-up: "
                             f"{self.config[_warmup(model)]['optimisation']['steps']} steps")
        lines.append(f"  {len(self.evaluated)} models scored: {', '.join(self.evaluated)}")
        for collection in self.collections:
            lines.append(f"  collection {collection.name} ({collection.dataset['source']}): "
                         f"{', '.join(collection.eval_splits)}")
        lines.append(f"  measures: {', '.join(self.measures)}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _warmup(role: str) -> str:
    return "teacher_training" if role == "teacher" else "student_warmup"


def build(config: Mapping[str, Any], *, raw: Mapping[str, Any] | None = None) -> Plan:
    """The plan of a validated config; `raw` (the config as written) tells whether the
    dataset was given. Raises ConfigError naming the key of the first problem found."""
    from lead.evaluation.measures import default_measures, measure_name

    config = copy.deepcopy(dict(config))
    _check_name(config["name"], "name")
    distill = config["distillation"]
    students = _student_jobs(distill)
    teacher_kind, student_kind = config["teacher"]["kind"], config["student"]["kind"]
    for role in ("teacher", "student"):
        _check_vocabulary(config[role], role)
        _check_random_size(config[role], role)
        _check_lengths(config[role], role)
    if students and student_kind != "dual":
        raise ConfigError(f"config key student.kind: students are dual encoders, not "
                          f"{student_kind!r}")
    teacher_warm = config["teacher_training"]["enabled"]
    student_warm = bool(students) and config["student_warmup"]["enabled"]
    training = bool(students) or teacher_warm or student_warm
    dataset_given = raw is None or "dataset" in raw or training
    negatives = config["negatives"]
    if training and negatives["source"] == "given":
        _check_given_path(negatives.get("given_path"))
    miner = None
    if training and negatives["source"] == "dense":
        miner = ("teacher-warm" if teacher_warm else "teacher-init") \
            if negatives["miner"] == "teacher" else (
            "student-warm" if student_warm else "student-init")
        if negatives["miner"] == "teacher" and teacher_kind != "dual":
            raise ConfigError(
                f"config key negatives.miner: a {teacher_kind} teacher cannot search a corpus "
                "to mine dense negatives; use negatives.miner: student"
            )
    evaluated = []
    if teacher_kind == "dual":
        evaluated.append("teacher-init")
        if teacher_warm:
            evaluated.append("teacher-warm")
    if students:
        evaluated.append("student-init")
        if student_warm:
            evaluated.append("student-warm")
    evaluated += [job.model for job in students]
    results = f"results/{config['name']}"
    collections = []
    if dataset_given:
        collections.append(_collection(MAIN, results, config["dataset"], training))
    for name, section in config["evaluate"]["collections"].items():
        _check_name(name, "evaluate.collections")
        collections.append(_collection(name, f"{results}/collections/{name}", section, False,
                                       key=f"evaluate.collections.{name}"))
        if training:
            _check_leakage(config["dataset"], collections[-1])
    if not collections:
        raise ConfigError("config: nothing to evaluate on (no dataset and no "
                          "evaluate.collections)")
    if not evaluated:
        raise ConfigError("config: no model to evaluate (a ColBERT or cross-encoder teacher "
                          "and no distillation.methods)")
    evaluate = config["evaluate"]
    search_depth = config["search"]["depth"]
    wanted = [*default_measures(search_depth), *evaluate["report_measures"],
              evaluate["significance_measure"]]
    for key, names in (("evaluate.report_measures", evaluate["report_measures"]),
                       ("evaluate.significance_measure", [evaluate["significance_measure"]])):
        for name in names:
            try:
                measure_name(name, 1)
            except ConfigError as err:
                raise ConfigError(f"config key {key}: {err}") from err
    plan = Plan(
        config=config,
        results=results,
        teacher_warm=teacher_warm,
        student_warm=student_warm,
        students=tuple(students),
        evaluated=tuple(dict.fromkeys(evaluated)),
        collections=tuple(collections),
        teacher_cached=any(_cached(config, job) for job in students),
        miner=miner,
        measures=tuple(dict.fromkeys(wanted)),
    )
    _check_training(plan)
    return plan


def cached(plan: Plan, job: StudentJob) -> bool:
    """Whether a distillation reads its teacher from the layer cache."""
    return _cached(plan.config, job)


def _cached(config: Mapping[str, Any], job: StudentJob) -> bool:
    distill = job.distillation
    return (job.method in DISTILLING and config["teacher"]["kind"] == "dual"
            and not distill["teacher_trainable"] and distill["teacher_cache"]["enabled"] == "auto")


def _student_jobs(distill: Mapping[str, Any]) -> list[StudentJob]:
    seeds = distill["seeds"] or [distill["optimisation"]["seed"]]
    base = {k: v for k, v in distill.items() if k not in ("methods", "seeds", "variants")}
    rows: list[tuple[str, str | None, dict]] = [(m, None, base) for m in distill["methods"]]
    for name, overrides in distill["variants"].items():
        _check_name(name, "distillation.variants")
        if name in METHODS:
            raise ConfigError(f"config key distillation.variants.{name}: a variant cannot take "
                              f"the name of a method ({', '.join(METHODS)})")
        overrides = dict(overrides)
        method = overrides.pop("method", LEAD)
        if method not in METHODS:
            raise ConfigError(f"config key distillation.variants.{name}.method: {method!r} is "
                              f"not one of {list(METHODS)}")
        for key in ("methods", "seeds", "variants"):
            if key in overrides:
                raise ConfigError(f"config key distillation.variants.{name}.{key}: variants "
                                  "cannot set it")
        if "seed" in (overrides.get("optimisation") or {}):
            raise ConfigError(f"config key distillation.variants.{name}.optimisation.seed: a "
                              "variant trains once per seed of distillation.seeds, like every "
                              "method; it cannot set its own")
        try:
            section = resolve("distillation", merge(copy.deepcopy(base), overrides))
        except ConfigError as err:
            raise ConfigError(f"{err} (in distillation.variants.{name})") from err
        rows.append((method, name, {k: v for k, v in section.items()
                                    if k not in ("methods", "seeds", "variants")}))
    jobs = []
    for method, variant, section in rows:
        for seed in seeds:
            settings = copy.deepcopy(section)
            settings["optimisation"]["seed"] = seed
            jobs.append(StudentJob(f"{variant or method}-s{seed}", method, seed, variant,
                                   settings))
    return jobs


def _collection(name: str, root: str, dataset: Mapping[str, Any], training: bool,
                key: str = "dataset") -> Collection:
    dataset = validate({"dataset": dict(dataset)},
                       {"type": "object",
                        "properties": {"dataset": {"$ref": "#/definitions/dataset"}}})["dataset"]
    available = _source_splits(dataset)
    for split in dataset["eval_splits"]:
        _check_name(split, f"{key}.eval_splits")
    if training and available is not None and "train" not in available:
        raise ConfigError(
            f"config key {key}: training needs a train split, and source "
            f"{dataset['source']!r} as configured has only {sorted(available)}"
        )
    if available is not None:
        missing = [s for s in dataset["eval_splits"] if s not in available]
        if missing:
            raise ConfigError(f"config key {key}.eval_splits: {missing} not among the splits "
                              f"source {dataset['source']!r} produces ({sorted(available)})")
    if training:
        scored = sorted({"train", "dev"} & set(dataset["eval_splits"]))
        if scored:
            raise ConfigError(f"config key {key}.eval_splits: {scored} would score the queries "
                              "the students train on or are selected on")
    splits = list(dataset["eval_splits"])
    known = set(splits) | {"train", "dev"} | (available or set())
    unknown = sorted(set(dataset["relevance_level"]) - known)
    if unknown:
        raise ConfigError(f"config key {key}.relevance_level: {unknown} is no split of this "
                          f"collection ({sorted(known)}); a misspelt split would be scored at "
                          "level 1")
    if training:
        splits = ["train", "dev", *splits]
    else:
        dataset = _scored_splits_only(dataset)
    return Collection(name, root, dataset, tuple(dataset["eval_splits"]),
                      tuple(sorted(set(splits))))


def _scored_splits_only(dataset: dict) -> dict:
    """A collection that trains nothing reads only the splits it is scored on: a train split
    beside them would be read, cleaned and have a dev split carved out of it, for nothing."""
    wanted = set(dataset["eval_splits"])
    if dataset["source"] == "beir":
        splits = dataset["beir"]["splits"]
        dataset["beir"]["splits"] = {k: v for k, v in splits.items() if k in wanted}
    elif dataset["source"] in ("trec", "tsv"):
        for kind in ("queries", "qrels"):
            files = dataset["local"][kind]
            dataset["local"][kind] = {k: v for k, v in files.items() if k in wanted}
    return dataset


def _source_splits(dataset: Mapping[str, Any]) -> set[str] | None:
    source = dataset["source"]
    if source in SOURCE_SPLITS:
        return set(SOURCE_SPLITS[source])
    if source == "beir":
        names = set(dataset["beir"]["splits"])
    else:
        if set(dataset["local"]["queries"]) != set(dataset["local"]["qrels"]):
            raise ConfigError(
                "config keys dataset.local.queries and dataset.local.qrels must name the same "
                f"splits (queries: {sorted(dataset['local']['queries'])}, qrels: "
                f"{sorted(dataset['local']['qrels'])})"
            )
        names = set(dataset["local"]["qrels"])
    for name in names:
        _check_name(name, f"dataset.{'beir.splits' if source == 'beir' else 'local.qrels'}")
    return names | ({"dev"} if "train" in names else set())


def _check_name(name: str, key: str) -> None:
    """Names become paths and shell words: one pattern (lead.paths) for all of them."""
    check_name(name, f"config key {key}")


def _check_vocabulary(model: Mapping[str, Any], role: str) -> None:
    """A model's vocabulary has one source, and a random model has one."""
    tokenizer = model["tokenizer"]
    if tokenizer["train"] and tokenizer["from"] is not None:
        raise ConfigError(f"config key {role}.tokenizer: `from` and `train: true` exclude each "
                          "other (a trained vocabulary, or another model's)")
    if tokenizer["from"] == "random":
        raise ConfigError(f"config key {role}.tokenizer.from: 'random' is no vocabulary; name a "
                          "model source (e.g. package:bert-tiny)")
    if model["init"] == "random" and not tokenizer["train"] and tokenizer["from"] is None:
        raise ConfigError(f"config key {role}.init: a random model needs a vocabulary: "
                          f"{role}.tokenizer.from (e.g. package:bert-tiny) or "
                          f"{role}.tokenizer.train: true")


# Splits whose queries a source holds in one place whatever the collection's name: scoring
# one of these on a collection of the same source scores the training queries again.
TRAINING_SPLITS = ("train", "dev")
MAX_RANDOM_PARAMETERS = 1_000_000_000


def _check_leakage(dataset: Mapping[str, Any], collection: Collection) -> None:
    """An evaluation collection must not score the queries the students train on: the same
    source's train or dev split, or a query file of the main dataset's training split."""
    main = validate({"dataset": dict(dataset)}, {"type": "object", "properties": {
        "dataset": {"$ref": "#/definitions/dataset"}}})["dataset"]
    other = collection.dataset
    key = f"config key evaluate.collections.{collection.name}.eval_splits"
    if main["source"] == other["source"] and main["source"] in SOURCE_SPLITS:
        leaked = sorted(set(TRAINING_SPLITS) & set(other["eval_splits"]))
        if leaked:
            raise ConfigError(f"{key}: {leaked} of {other['source']} are the training data")
    train_files = {_resolved(path) for path in _split_files(main, "train")}
    for split in other["eval_splits"]:
        shared = train_files & {_resolved(path) for path in _split_files(other, split)}
        if shared:
            raise ConfigError(f"{key}: split {split!r} reads {sorted(shared)[0]}, the training "
                              "queries of the main dataset")


def _split_files(dataset: Mapping[str, Any], split: str) -> list[str]:
    """The files a local source reads a split's queries from (none for other sources)."""
    if dataset["source"] == "beir":
        name = dataset["beir"]["splits"].get(split)
        return [f"{dataset['beir']['path']}/qrels/{name}.tsv"] if name else []
    if dataset["source"] in ("trec", "tsv"):
        return [dataset["local"][kind][split] for kind in ("queries", "qrels")
                if split in dataset["local"][kind]]
    return []


def _resolved(path: str) -> str:
    from pathlib import Path

    return str(Path(path).expanduser().resolve())


def _check_random_size(model: Mapping[str, Any], role: str) -> None:
    """A random model is for tests, rehearsals and small students: a billion-parameter one is
    a typo that would fail hours later, out of memory."""
    if model["init"] != "random":
        return
    arch = model["architecture"]
    hidden, layers = arch["hidden_size"], arch["num_hidden_layers"]
    estimate = layers * (4 * hidden * hidden + 2 * hidden * arch["intermediate_size"])
    if estimate > MAX_RANDOM_PARAMETERS:
        raise ConfigError(f"config key {role}.architecture: {layers} blocks of {hidden} "
                          f"(feed-forward {arch['intermediate_size']}) are about "
                          f"{estimate / 1e9:.1f} billion parameters; random models are at most "
                          f"{MAX_RANDOM_PARAMETERS / 1e9:.0f} billion")


def _check_lengths(model: Mapping[str, Any], role: str) -> None:
    """Maximum lengths the model's position embeddings can take: a longer passage would be
    tokenized, then fail to encode, hours later. A model that cannot be read now is noted by
    `_check_training`."""
    from lead.modeling.spec import model_positions

    try:
        limit = model_positions(model)
    except ConfigError:
        return
    for key in ("query_max_length", "passage_max_length"):
        if limit is not None and model[key] > limit:
            raise ConfigError(f"config key {role}.{key}: {model[key]} tokens, but {model['init']} "
                              f"takes at most {limit} (its position embeddings)")


def _check_given_path(path: str | None) -> None:
    """The triples file is a Snakemake input: braces would read as wildcards."""
    if not path:
        raise ConfigError("config key negatives.given_path: source: given needs the triples "
                          "file (qid<TAB>positive pid<TAB>negative pid)")
    if "{" in path or "}" in path:
        raise ConfigError(f"config key negatives.given_path: {path!r} holds a brace, which "
                          "Snakemake reads as a wildcard; rename the file")


def _check_training(plan: Plan) -> None:
    """Layer choices against the models' depths, as far as the models can be read now."""
    from lead.modeling.spec import model_depth

    if not plan.students:
        return
    depths = {}
    for role in ("teacher", "student"):
        try:
            depths[role] = model_depth(plan.config[role])
        except ConfigError as err:
            plan.notes.append(f"layer choices not checked against the {role}: {err}")
    if len(depths) < 2:
        return
    from lead.training.layers import LayerSelector

    for job in plan.students:
        if "layer" not in METHODS[job.method].terms:
            continue
        key = ("distillation" if job.variant is None
               else f"distillation.variants.{job.variant}") + ".layers"
        try:
            LayerSelector.from_settings(job.distillation["layers"], depths["teacher"],
                                        depths["student"], seed=job.seed)
        except ConfigError as err:
            raise ConfigError(f"config key {key}: {err}") from err
