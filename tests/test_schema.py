"""The config schema documents itself: every key says what it does, and every default is valid.

The schema (lead/config.schema.yaml) is the one source of defaults and the reference a user
reads to write a config, so a key without a description, or a default the schema itself
refuses, is a bug in the documentation the pipeline ships.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from lead.config import schema, validate


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
