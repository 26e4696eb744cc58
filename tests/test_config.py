"""The config (lead.config): a documented schema, valid defaults, and what it refuses.

The schema (lead/config.schema.yaml) is the one source of defaults and the reference a user
reads to write a config, so a key without a description, or a default the schema itself
refuses, is a bug in the documentation the pipeline ships.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hostile import (
    HOSTILE_NAMES,
    NAME_KEYS,
    check_config,
    error_line,
    named,
    refused,
    run_stage,
    tiny,
)
from repo import REPO

from lead.config import resolve, schema, validate
from lead.errors import ConfigError


def _definition(root: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if "$ref" not in node:
        return None
    return root["definitions"][node["$ref"].rsplit("/", 1)[-1]]


def _merged(root: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """A node with its $ref resolved; the node's own keys (e.g. its description) win."""
    return {**(_definition(root, node) or {}), **{k: v for k, v in node.items() if k != "$ref"}}


def _children(root: Mapping[str, Any], node: Mapping[str, Any]) -> Iterator[tuple[str, dict]]:
    """(name, sub-schema) of every key under `node`: its properties, and the schema of the
    values of a name -> value mapping (`<name>`) or of array items (`[]`)."""
    node = _merged(root, node)
    yield from node.get("properties", {}).items()
    values = node.get("additionalProperties")
    if isinstance(values, Mapping):
        yield "<name>", values
    items = node.get("items")
    if isinstance(items, Mapping):
        yield "[]", items


def undocumented(root: Mapping[str, Any]) -> list[str]:
    """Every key of `root` (definitions included, $ref followed) without a non-empty
    description, named by its path; a sub-schema reached by several paths is named once."""
    missing: list[str] = []
    seen: set[int] = set()

    def walk(path: str, node: Mapping[str, Any], is_key: bool) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        description = _merged(root, node).get("description")
        if is_key and not (isinstance(description, str) and description.strip()):
            missing.append(path)
        for name, child in _children(root, node):
            walk(f"{path}.{name}" if path else name, child, name not in ("<name>", "[]"))

    walk("", root, False)
    for name, definition in root.get("definitions", {}).items():
        walk(f"definitions.{name}", definition, True)
    return missing


def test_every_key_of_the_schema_has_a_description():
    missing = undocumented(schema())
    assert not missing, f"{len(missing)} config keys without a description: {', '.join(missing)}"


def test_the_check_finds_keys_without_a_description():
    """The walk reaches nested keys, keys behind $ref and keys of mapping values; a $ref key
    may take its definition's description."""
    example = {
        "type": "object",
        "definitions": {
            "section": {"description": "a section", "type": "object",
                        "properties": {"plain": {"type": "integer"},
                                       "blank": {"type": "integer", "description": "  "}}},
        },
        "properties": {
            "ok": {"type": "string", "description": "documented"},
            "top": {"type": "object", "properties": {"inner": {"type": "string"}}},
            "linked": {"$ref": "#/definitions/section"},
            "named": {"type": "object", "description": "name -> entry",
                      "additionalProperties": {"type": "object",
                                               "properties": {"leaf": {"type": "string"}}}},
        },
    }
    assert undocumented(example) == [
        "top", "top.inner", "linked.plain", "linked.blank", "named.<name>.leaf",
    ]


def _filled(root: Mapping[str, Any], node: Mapping[str, Any], value: Any) -> Any:
    """`value` with the defaults of every absent property filled in, recursively: what
    validation must return for it (written independently of lead.config)."""
    node = _merged(root, node)
    if not isinstance(value, dict) or "properties" not in node:
        return value
    value = copy.deepcopy(value)
    for name, prop in node["properties"].items():
        merged = _merged(root, prop)
        if name not in value and "default" in merged:
            value[name] = copy.deepcopy(merged["default"])
        if name in value:
            value[name] = _filled(root, prop, value[name])
    return value


def test_an_empty_config_validates_to_every_default():
    root = schema()
    config = validate({})
    assert config == _filled(root, root, {})
    assert config["name"] == "embedded"
    assert config["distillation"]["optimisation"]["steps"] == 50000
    # the default's pair, not a student cut from its teacher
    assert (config["teacher"]["init"], config["student"]["init"]) == ("package:mpnet",
                                                                      "package:bert-tiny")
    assert validate(config) == config


def _defaults(root: Mapping[str, Any]) -> Iterator[tuple[str, dict, Any]]:
    """(path, property, default) of every property that has a default."""
    seen: set[int] = set()

    def walk(path: str, node: Mapping[str, Any]) -> Iterator[tuple[str, dict, Any]]:
        for name, prop in _children(root, node):
            if id(prop) in seen:
                continue
            seen.add(id(prop))
            key = f"{path}.{name}" if path else name
            if "default" in prop:
                yield key, prop, prop["default"]
            yield from walk(key, prop)

    yield from walk("", root)
    for name, definition in root["definitions"].items():
        yield from walk(f"definitions.{name}", definition)


DEFAULTS = list(_defaults(schema()))


@pytest.mark.parametrize(("path", "prop", "default"), DEFAULTS, ids=[d[0] for d in DEFAULTS])
def test_every_default_satisfies_its_own_key(path, prop, default):
    wrapper = {"type": "object", "properties": {"value": prop}}
    assert validate({"value": copy.deepcopy(default)}, wrapper)["value"] == \
        _filled(schema(), prop, copy.deepcopy(default))


@pytest.mark.parametrize("name", ["../../x", "$(touch MARKER)", "a b", ".hidden"])
@pytest.mark.parametrize(
    "settings, key",
    [
        (lambda n: {"source": "trec", "eval_splits": [n]}, "dataset.eval_splits.0"),
        (lambda n: {"source": "trec", "local": {"queries": {n: "q.tsv"}}},
         "dataset.local.queries"),
        (lambda n: {"source": "tsv", "local": {"qrels": {n: "r.tsv"}}}, "dataset.local.qrels"),
        (lambda n: {"source": "beir", "beir": {"splits": {n: "test"}}}, "dataset.beir.splits"),
    ],
)
def test_config_validation_names_the_key_and_the_name(name, settings, key):
    with pytest.raises(ConfigError) as err:
        resolve("dataset", settings(name))
    assert str(err.value).startswith(f"config key {key}: {name!r} does not match")


# --- hostile input --------------------------------------------------------------------------------
# Each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("where", NAME_KEYS)
def test_check_config_refuses_a_name_that_is_no_path_or_word(capsys, here, where, name):
    before = sorted(os.listdir())
    status, err = check_config(capsys, named(where, name), here)
    line = error_line("check-config", status, err)
    assert f"config key {where}" in line and repr(name) in line
    assert sorted(os.listdir()) == before and os.listdir(here) == ["config.yaml"]


@pytest.mark.parametrize("text, expect", [
    ("- a list\n- of keys\n", "a config is a mapping of keys, not list"),
    ("name: [tiny\n", "cannot read config"),
    ("name: tiny\n\tsearch: {}\n", "cannot read config"),
])
def test_a_config_file_that_is_no_mapping_is_one_line(capsys, here, text, expect):
    path = here / "config.yaml"
    path.write_text(text)
    status, err = run_stage(capsys, "check-config", path)
    line = error_line("check-config", status, err)
    assert str(path) in line and expect in line


def test_a_config_of_nested_aliases_is_refused_in_one_short_line(capsys, here):
    """Five lines of YAML that stand for 111,110 values."""
    lines = ["name:", "  - &a0 [" + ", ".join(["xxxxxxxxxx"] * 10) + "]"]
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 5)]
    path = here / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    status, err = run_stage(capsys, "check-config", path)
    line = error_line("check-config", status, err)
    assert "config key name" in line and len(line) < 1000


BAD_VALUES = {"encode": ('{"batch_size": "x"}', "config key encode.batch_size"),
              "search": ('{"depth": 0}', "config key search.depth"),
              "negatives": ('{"depth": -1}', "config key negatives.depth")}


@pytest.mark.parametrize("settings", ["[1, 2]", '"a string"', "42", "a bad value",
                                      '{"unknown_key": 1}'])
@pytest.mark.parametrize("stage", ["encode", "search", "negatives"])
def test_settings_that_are_not_the_stage_section_are_one_line(capsys, work, roots, artifacts, stage,
                                                              settings):
    argv = {"encode": ["encode", "--model", artifacts / "model", "--tokens",
                       artifacts / "tokens" / "test.parquet", "--role", "query"],
            "search": ["search", "--queries", artifacts / "embeddings" / "test.parquet", "--corpus",
                       artifacts / "embeddings" / "corpus.parquet"],
            "negatives": ["negatives", "--qrels", artifacts / "data" / "qrels" / "train.parquet"],
            }[stage]
    if settings == "a bad value":
        settings, expect = BAD_VALUES[stage]
    elif "unknown_key" in settings:
        expect = f"config key {stage}: Additional properties are not allowed ('unknown_key'"
    else:
        expect = f"--settings must be a mapping, got {type(json.loads(settings)).__name__}"
    refused(capsys, roots, *argv, "--settings", settings, "--out", work / "out.parquet",
            expect=(expect,))


@pytest.mark.parametrize("settings", ["{a: [", "key: value: other", "\t- tab"])
def test_settings_that_are_not_yaml_are_one_line(capsys, work, roots, artifacts, settings):
    refused(capsys, roots, "encode", "--model", artifacts / "model", "--tokens",
            artifacts / "tokens" / "test.parquet", "--role", "query", "--settings", settings,
            "--out", work / "e.parquet", expect=("--settings is not valid JSON/YAML",))


# Configs that validated, then failed hours later or ran something else than they say.

INTEGERS_THAT_ARE_NOT = {
    "encode.shards": ({"encode": {"shards": 2.0}}, "config key encode.shards: 2.0 is not of "
                                                   "type 'integer'"),
    "distillation.optimisation.seed": (
        {"distillation": {"optimisation": {"seed": 888.0}}},
        "config key distillation.optimisation.seed: 888.0 is not of type 'integer'"),
    "distillation.seeds": ({"distillation": {"seeds": [2, 1.0]}},
                           "config key distillation.seeds.1: 1.0 is not of type 'integer'"),
    "dataset.seed": ({"dataset": {"seed": 7.0}},
                     "config key dataset.seed: 7.0 is not of type 'integer'"),
    "a boolean": ({"search": {"depth": True}},
                  "config key search.depth: True is not of type 'integer'"),
}


@pytest.mark.parametrize("key", INTEGERS_THAT_ARE_NOT)
def test_an_integer_key_refuses_a_float_even_a_whole_one(capsys, here, key):
    """JSON Schema calls 2.0 an integer; range(), a shard count or torch's seed do not."""
    changes, expect = INTEGERS_THAT_ARE_NOT[key]
    status, err = check_config(capsys, tiny(**changes), here)
    assert expect in error_line("check-config", status, err)
    section = next(iter(changes))
    if section in ("encode", "search"):
        with pytest.raises(ConfigError, match=re.escape(expect)):
            resolve(section, changes[section])


SEEDS = {
    "17 seeds": (list(range(17)), "config key distillation.seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "
                                  "10, 11, 12, 13, 14, 15, 16] is too long"),
    "a negative seed": ([1, -1], "config key distillation.seeds.1: -1 is less than the minimum "
                                 "of 0"),
    "a seed past 2^32": ([2**70], f"config key distillation.seeds.0: {2**70} is greater than "
                                  "the maximum of 4294967295"),
}


@pytest.mark.parametrize("case", SEEDS)
def test_seeds_are_at_most_16_and_each_one_numpy_and_torch_take(capsys, here, case):
    """The report's exact sign-flip test enumerates 2^n sign patterns; numpy's seeds are
    0..2^32-1."""
    seeds, expect = SEEDS[case]
    status, err = check_config(capsys, tiny(distillation={"seeds": seeds}), here)
    assert expect in error_line("check-config", status, err)
    status, err = check_config(capsys, tiny(distillation={"seeds": list(range(16))}), here)
    assert status == 0, err


TINY_TEXT = (REPO / "tests" / "configs" / "tiny.yaml").read_text()


def _check_text(capsys, folder, text: str, *config: str, name: str = "config.yaml"):
    path = folder / name
    path.write_text(text)
    return path, run_stage(capsys, "check-config", path, *(["--config", *config] if config
                                                             else []))


@pytest.mark.parametrize("text, key, line", [
    (TINY_TEXT + "search: {depth: 5}\n", "search", TINY_TEXT.count("\n") + 1),
    ("name: tiny\nname: other\n", "name", 2),
    (TINY_TEXT.replace("      dev: tests/fixtures/tiny/qrels.dev.tsv\n",
                       "      test: tests/fixtures/tiny/qrels.dev.tsv\n"), "test",
     TINY_TEXT.splitlines().index("      dev: tests/fixtures/tiny/qrels.dev.tsv") + 2),
])
def test_a_key_given_twice_in_a_config_file_is_refused(capsys, here, text, key, line):
    """Plain YAML keeps the last one silently (a test split scored on the dev judgments)."""
    path, (status, err) = _check_text(capsys, here, text)
    assert f"{path}: cannot read config: key {key!r} given twice (line {line})" in \
        error_line("check-config", status, err)


def test_a_key_given_twice_in_a_config_value_or_a_stages_settings_is_refused(
        capsys, here, work, roots, artifacts):
    status, err = run_stage(capsys, "check-config", REPO / "tests" / "configs" / "tiny.yaml",
                            "--config", "search={depth: 5, depth: 6}")
    assert "key 'depth' given twice" in error_line("check-config", status, err)
    refused(capsys, roots, "search", "--queries", artifacts / "embeddings" / "test.parquet",
            "--corpus", artifacts / "embeddings" / "corpus.parquet", "--settings",
            "{depth: 5, depth: 6}", "--out", work / "run.parquet",
            expect=("--settings is not valid JSON/YAML", "key 'depth' given twice"))


EXTENDS = {
    # case: (files written beside config.yaml, config.yaml's text, what the refusal says)
    "a cycle": ({"base.yaml": "extends: [config.yaml]\n"}, "extends: [base.yaml]\n",
                "config key extends: a cycle"),
    "itself": ({}, "extends: [config.yaml]\n", "config key extends: a cycle"),
    "a missing file": ({}, "extends: [missing.yaml]\n",
                       "missing.yaml: cannot read config: [Errno 2]"),
    "a folder": ({}, "extends: [.]\n", "cannot read config: [Errno 21] Is a directory"),
    "one path, not a list": ({"base.yaml": TINY_TEXT}, "extends: base.yaml\n",
                             "config key extends: expected a list of file paths"),
    "a base holding a key twice": ({"base.yaml": "name: a\nname: b\n"}, "extends: [base.yaml]\n",
                                   "base.yaml: cannot read config: key 'name' given twice"),
    "a base that is not UTF-8": ({"base.yaml": b"name: caf\xe9\n"}, "extends: [base.yaml]\n",
                                 "base.yaml: cannot read config: not UTF-8 text"),
}


@pytest.mark.parametrize("case", EXTENDS)
def test_a_config_extending_what_cannot_be_layered_is_one_line(capsys, here, case):
    files, text, expect = EXTENDS[case]
    for name, content in files.items():
        (here / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    _, (status, err) = _check_text(capsys, here, text)
    assert expect in error_line("check-config", status, err)


def test_a_config_file_that_is_not_utf8_is_one_line(capsys, here):
    """It used to end in UnicodeDecodeError with status 1."""
    path = here / "config.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    status, err = run_stage(capsys, "check-config", path)
    assert f"{path}: cannot read config: not UTF-8 text" in error_line("check-config", status,
                                                                        err)


@pytest.mark.parametrize("value", ["[base.yaml]", "base.yaml"])
def test_extends_given_with_config_is_refused_not_ignored(capsys, here, value):
    """`--config extends=[...]` layered nothing and passed: only a file's extends is read."""
    (here / "base.yaml").write_text("search: {depth: 7}\n")
    _, (status, err) = _check_text(capsys, here, TINY_TEXT, f"extends={value}")
    assert "config key extends is read from config files only" in \
        error_line("check-config", status, err)
