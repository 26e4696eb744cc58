"""Hostile input, the helpers of every test of it: what each refusal must be (one line naming
the culprit, exit status 2, and every file left where it was: no output, no partial artifact,
nothing outside the output, no marker file of an injected command), and builders of hostile
stage inputs and configs. The tests sit beside the module each one attacks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import yaml
from repo import TINY_CONFIG

from lead.__main__ import main

MARKER = "MARKER"
# Names a careless or malicious user might give where lead builds a path or a shell word.
HOSTILE_NAMES = ["$(touch MARKER)", "`touch MARKER`", "a;touch MARKER", "../../x", ".hidden",
                 "a/b", "a b", "x\n"]


def tree(*roots: Path) -> dict[str, tuple]:
    """Every path under `roots` with what it is: a folder, a link and its target, or a file and
    the hash of its bytes. Links are not followed."""
    state: dict[str, tuple] = {}
    for root in roots:
        for folder, folders, files in os.walk(root):
            for name in folders + files:
                path = Path(folder, name)
                if path.is_symlink():
                    state[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    state[str(path)] = ("folder",)
                else:
                    state[str(path)] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def run_stage(capsys, *argv) -> tuple[int, str]:
    """`python -m lead ARGV` in this process: (exit status, what it printed on stderr)."""
    capsys.readouterr()
    status = main([str(arg) for arg in argv])
    return status, capsys.readouterr().err


def error_line(stage: str, status: int, err: str) -> str:
    """The one error line of a refused stage; fails unless it is the only one, is last (a
    message spanning lines would continue after it), and the status is 2 (a user error)."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"lead {stage}: error: ")]
    assert status == 2, f"exit status {status}, expected 2:\n{err}"
    assert "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one error line:\n{err}"
    return errors[0]


def refused(capsys, roots: list[Path], *argv, expect: tuple[str, ...] = ()) -> str:
    """Run a stage that must refuse: one line holding every `expect` fragment, and no path
    under `roots` created, changed or removed. Returns the line."""
    before = tree(*roots)
    status, err = run_stage(capsys, *argv)
    line = error_line(str(argv[0]), status, err)
    for fragment in expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert_unchanged(before, tree(*roots))
    return line


def failed(capsys, roots: list[Path], *argv, expect: tuple[str, ...] = ()) -> str:
    """Run a stage that must fail on what no input could prevent (a full disk): one line
    pointing at --debug, exit status 1, and no path under `roots` created, changed or removed
    (no partial output beside an earlier one). Returns the line."""
    before = tree(*roots)
    status, err = run_stage(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"lead {argv[0]}: error: ")]
    assert status == 1 and "Traceback" not in err, f"exit status {status}:\n{err}"
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one error line:\n{err}"
    for fragment in (*expect, "(rerun with --debug for the traceback)"):
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    assert_unchanged(before, tree(*roots))
    return errors[0]


def assert_unchanged(before: dict[str, tuple], after: dict[str, tuple]) -> None:
    changed = {path: (before.get(path), after.get(path)) for path in before.keys() | after.keys()
               if before.get(path) != after.get(path)}
    assert not changed, f"paths created, changed or removed: {sorted(changed.items())}"


# --- stage inputs ---------------------------------------------------------------------------------


def local_settings(corpus, queries: dict, qrels: dict, source: str = "trec",
                   eval_splits=("test",)) -> dict:
    return {"source": source, "eval_splits": list(eval_splits),
            "local": {"corpus": str(corpus), "queries": {k: str(v) for k, v in queries.items()},
                      "qrels": {k: str(v) for k, v in qrels.items()}}}


def small_files(folder: Path, corpus: bytes = b"p0\tsome text\np1\tother text\n",
                queries: bytes = b"q0\ta query\n", qrels: bytes = b"q0 Q0 p0 1\n") -> dict:
    """A trec-source collection of three small files (one `test` split)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.tsv").write_bytes(corpus)
    (folder / "queries.tsv").write_bytes(queries)
    (folder / "qrels.txt").write_bytes(qrels)
    return local_settings(folder / "corpus.tsv", {"test": folder / "queries.tsv"},
                          {"test": folder / "qrels.txt"})


def beir_folder(folder: Path, corpus: bytes = b'{"_id": "p0", "text": "some text"}\n',
                queries: bytes = b'{"_id": "q0", "text": "a query"}\n',
                qrels: bytes = b"query-id\tcorpus-id\tscore\nq0\tp0\t1\n") -> dict:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_bytes(corpus)
    (folder / "queries.jsonl").write_bytes(queries)
    (folder / "qrels" / "test.tsv").write_bytes(qrels)
    return {"source": "beir", "eval_splits": ["test"],
            "beir": {"path": str(folder), "splits": {"test": "test"}}}


def data(settings: dict, out: Path) -> list:
    return ["data", "--settings", json.dumps(settings), "--out", out]


def trec_run(path: Path, rows: list[tuple[str, str, int, float]]) -> Path:
    path.write_text("".join(f"{q} Q0 {d} {r} {s} t\n" for q, d, r, s in rows))
    return path


def damaged_model(artifacts: Path, work: Path, damage: str, name: str = "model") -> Path:
    model = work / name
    shutil.copytree(artifacts / "model", model)
    weights = model / "model.safetensors"
    config = json.loads((model / "config.json").read_text())
    if damage == "empty weights":
        weights.write_bytes(b"")
    elif damage == "weights cut in the header":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "weights cut at the end":
        weights.write_bytes(weights.read_bytes()[:-64])
    elif damage == "weights a folder":
        weights.unlink()
        weights.mkdir()
    else:
        changes = {"config: hidden size": {"hidden_size": 32},
                   "config: more layers": {"num_hidden_layers": 4},
                   "config: fewer layers": {"num_hidden_layers": 1},
                   "config: another model type": {"model_type": "gpt2"}}[damage]
        (model / "config.json").write_text(json.dumps({**config, **changes}))
    return model


def training_argv(artifacts: Path, work: Path, stage: str, teacher: Path, student: Path) -> list:
    optimisation = {"steps": 2, "batch_size": 2, "negatives_per_query": 1, "eval_every": 1,
                    "checkpoint_every": 1}
    tokens = artifacts / "tokens"
    common = ["--groups", artifacts / "groups.parquet", "--dev-query-tokens",
              tokens / "dev.parquet", "--dev-qrels", artifacts / "data" / "qrels" / "dev.parquet",
              "--out", work / "trained", "--log", work / "training.parquet", "--checkpoint-dir",
              work / "checkpoints"]
    if stage == "warmup":
        return ["warmup", "--settings", json.dumps({"optimisation": optimisation}), "--model",
                student, "--corpus-tokens", tokens / "corpus.parquet", "--query-tokens",
                tokens / "train.parquet", *common]
    return ["distill", "--method", "response", "--settings",
            json.dumps({"distillation": {"optimisation": optimisation}}), "--teacher", teacher,
            "--student", student, *(arg for role in ("teacher", "student") for arg in (
                f"--{role}-corpus-tokens", tokens / "corpus.parquet",
                f"--{role}-query-tokens", tokens / "train.parquet")), *common]


# --- configs --------------------------------------------------------------------------------------


def tiny(**changes) -> dict:
    """The tiny config, with top-level sections replaced or updated one level deep."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def named(where: str, name: str) -> dict:
    """The tiny config with `name` used where a name becomes a path or a shell word."""
    config = tiny()
    if where == "name":
        config["name"] = name
    elif where == "dataset.eval_splits":
        config["dataset"]["eval_splits"] = [name]
    elif where == "dataset.local":
        local = config["dataset"]["local"]
        for key in ("queries", "qrels"):
            local[key][name] = local[key].pop("test")
    elif where == "evaluate.collections":
        config["evaluate"]["collections"] = {name: {**config["dataset"], "eval_splits": ["test"]}}
    else:
        config["distillation"]["variants"] = {name: {"layers": {"k": 1}}}
    return config


NAME_KEYS = ["name", "dataset.eval_splits", "dataset.local", "evaluate.collections",
             "distillation.variants"]


FAILS_LATER = {
    # id: (config, the key the refusal must name)
    "k above the student's depth": (tiny(distillation={"layers": {"k": 9}}),
                                    "config key distillation.layers"),
    "pairs outside the models": (
        tiny(distillation={"layers": {"strategy": "pairs", "pairs": [[5, 1]]}}),
        "config key distillation.layers"),
    "a variant's k above the depth": (
        tiny(distillation={"variants": {"deep": {"layers": {"k": 9}}}}),
        "config key distillation.variants.deep.layers"),
    "a colbert teacher as dense miner": (
        tiny(negatives={"source": "dense", "miner": "teacher"}, teacher={"kind": "colbert"}),
        "config key negatives.miner"),
    "a cross-encoder teacher as dense miner": (
        tiny(negatives={"source": "dense", "miner": "teacher"}, teacher={"kind": "cross"}),
        "config key negatives.miner"),
    "an unknown report measure": (tiny(evaluate={"report_measures": ["nDCG@10", "MRR@ten"]}),
                                  "config key evaluate.report_measures"),
    "an unsupported significance measure": (tiny(evaluate={"significance_measure": "ERR@20"}),
                                            "config key evaluate.significance_measure"),
    "training on files without a train split": (
        tiny(dataset={"local": {key: {"test": tiny()["dataset"]["local"][key]["test"]}
                                for key in ("queries", "qrels")}}), "config key dataset"),
    "training on a beir folder without a train split": (
        tiny(dataset={"source": "beir", "beir": {"path": "tests/fixtures/data/beir",
                                                 "splits": {"test": "test"}}}),
        "config key dataset"),
    "a bm25 parameter typo": (tiny(negatives={"bm25": {"k": 1.2}}), "config key negatives.bm25"),
    "a bm25 section typo": (tiny(negatives={"bm_25": {"k1": 1.2}}), "config key negatives"),
    "an evaluation split the source lacks": (tiny(dataset={"eval_splits": ["dl19"]}),
                                             "config key dataset.eval_splits"),
    "given negatives without a file": (tiny(negatives={"source": "given"}),
                                       "config key negatives.given_path"),
    "a given file name Snakemake reads as a wildcard": (
        tiny(negatives={"source": "given", "given_path": "triples.{x}.tsv"}),
        "config key negatives.given_path"),
}


def cases() -> dict[str, tuple[dict, str]]:
    """Every config refused by both check-config and the workflow, with the key named."""
    found = {f"{where}={name!r}": (named(where, name), f"config key {where}")
             for where in NAME_KEYS for name in ("$(touch MARKER)",)}
    return {**found, **FAILS_LATER}


def check_config(capsys, config: dict, folder: Path) -> tuple[int, str]:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_stage(capsys, "check-config", path)
