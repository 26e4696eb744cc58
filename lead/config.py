"""Configuration: the schema in lead/config.schema.yaml is the one source of defaults.

Snakemake validates the whole config against it; each stage called directly resolves its own
section (e.g. `resolve("distillation", settings)`), so both paths see the same defaults.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lead.errors import ConfigError, one_line

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"


@cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _validator(sub_schema: Mapping[str, Any]) -> jsonschema.Validator:
    """A validator that also fills in defaults, including those of nested objects."""
    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, sub):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                prop = _deref(prop)
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, sub)

    def ref(validator, reference, instance, sub):
        yield from validator.descend(instance, _deref({"$ref": reference}))

    # An integer is an int: JSON Schema also calls 2.0 an integer, which would then reach
    # range(), a shard count or a seed as a float and fail far from the config.
    types = base.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
    extended = jsonschema.validators.extend(base, {"properties": set_defaults, "$ref": ref},
                                            type_checker=types)
    full = dict(sub_schema)
    full["definitions"] = schema()["definitions"]
    return extended(full)


def _deref(prop: Mapping[str, Any]) -> Mapping[str, Any]:
    if "$ref" not in prop:
        return prop
    name = prop["$ref"].rsplit("/", 1)[-1]
    merged = dict(schema()["definitions"][name])
    merged.update({k: v for k, v in prop.items() if k != "$ref"})
    return merged


def validate(config: Mapping[str, Any], sub_schema: Mapping[str, Any] | None = None) -> dict:
    """Return a copy of `config` with defaults filled in; raise ConfigError naming the key."""
    instance = copy.deepcopy(dict(config))
    validator = _validator(sub_schema or schema())
    # Fill defaults first (a pass that may report errors on the partial instance), then report.
    list(validator.iter_errors(instance))
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"config key {key}: {one_line(error.message)}")
    return instance


MAX_VALUES = 100_000  # a config is a few hundred; YAML aliases can make five lines a million


def _check_size(config: Any, source: str) -> None:
    """Refuse a config that expands past MAX_VALUES (shared alias nodes counted each time they
    are reached), before validation walks it."""
    if not isinstance(config, dict):
        return
    for key, value in config.items():
        count, stack = 0, [value]
        while stack:
            item = stack.pop()
            count += 1
            if count > MAX_VALUES:
                raise ConfigError(f"{source}: config key {key}: expands past {MAX_VALUES:,} "
                                  "values (nested YAML aliases?); write the values out")
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)


def resolve(section: str, settings: Mapping[str, Any] | None = None) -> dict:
    """Resolve one top-level section of the config (e.g. "encode") with its defaults."""
    sub = schema()["properties"].get(section)
    if sub is None:
        raise ConfigError(f"unknown config section {section!r}")
    resolved = validate({section: dict(settings or {})}, {
        "type": "object", "properties": {section: sub}
    })
    return resolved[section]


def resolve_optimisation(settings: Mapping[str, Any] | None) -> dict:
    """An `optimisation` section (of any training section) with its defaults."""
    reference = {"$ref": "#/definitions/optimisation"}
    wrapped = {"type": "object", "properties": {"optimisation": reference}}
    return validate({"optimisation": dict(settings or {})}, wrapped)["optimisation"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (line {mark.line + 1})", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """Parse YAML as configs are parsed: safely, a duplicate key refused."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _read_file(path: str | Path) -> dict:
    """One config file as written: a mapping, refused in one line naming the file if it cannot
    be read, is not YAML, holds a key twice, is not a mapping or expands past MAX_VALUES."""
    try:
        loaded = load_yaml(Path(path).read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: cannot read config: not UTF-8 text ({err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: cannot read config: {one_line(err)}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys, not {type(loaded).__name__}")
    _check_size(loaded, str(path))
    return loaded


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "default.yaml"


def layered(configfiles: list[Path], overrides: list[str]) -> tuple[dict, dict]:
    """(as written, validated) config of files merged in order (the default without any) with
    `key=value` overrides on top: what `snakemake --configfile ... --config ...` runs. The
    files a file `extends` are merged before it (`with_bases`)."""
    raw: dict = {}
    if not configfiles and not DEFAULT_CONFIG.is_file():
        raise ConfigError(f"no config file given, and no default one at {DEFAULT_CONFIG}")
    for path in with_bases(configfiles or [DEFAULT_CONFIG]):
        merge(raw, _read_file(path))
    for item in overrides:
        key, found, value = item.partition("=")
        if not found or not key or "." in key:
            raise ConfigError(f"--config {item!r}: expected KEY=VALUE with a top-level KEY, as "
                              "snakemake --config takes them (nested values: a config file)")
        _refuse_extends([key])
        try:
            raw[key] = load_yaml(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--config {item!r}: not a YAML value: {one_line(err)}") from err
    return copy.deepcopy(raw), validate(raw)


def with_bases(configfiles: list[Path]) -> list[Path]:
    """The files in merge order: each file's `extends` (recursively, paths relative to the
    file naming them) before it; a file merged once, at its first place."""
    ordered: list[Path] = []

    def visit(path: Path, chain: tuple[Path, ...]) -> None:
        path = Path(path).resolve()
        if path in chain:
            cycle = " -> ".join(str(p) for p in (*chain, path))
            raise ConfigError(f"{path}: config key extends: a cycle ({cycle})")
        bases = _read_file(path).get("extends", [])
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ConfigError(f"{path}: config key extends: expected a list of file paths")
        for base in bases:
            visit(path.parent / base, (*chain, path))
        if path not in ordered:
            ordered.append(path)

    for configfile in configfiles:
        visit(configfile, ())
    return ordered


def _refuse_extends(keys) -> None:
    """`extends` layers files under the file that names it: a --config value has no file to
    layer under, and would be ignored."""
    if "extends" in keys:
        raise ConfigError("--config extends=...: config key extends is read from config files "
                          "only (a --config value would be ignored); name the files in a "
                          "config file's extends, or give them with --configfile")


def bases_underneath(config: dict, configfiles: list[Path],
                     overrides: Mapping[str, Any] | None = None) -> None:
    """Merge, under a config Snakemake loaded from `configfiles` (and --config `overrides`),
    the files they extend that were not given: the same layering `layered` does. Every file
    is read with lead's loader on the way, so a key given twice stops the run as check-config
    does; `extends` given with --config is refused as check-config refuses it."""
    _refuse_extends(overrides or {})
    given = {Path(path).resolve() for path in configfiles}
    bases = [path for path in with_bases(configfiles) if path not in given]  # reads every file
    if not bases:
        return
    merged: dict = {}
    for path in bases:
        merge(merged, _read_file(path))
    snapshot = copy.deepcopy(config)
    config.clear()
    config.update(merge(merged, snapshot))


def merge(base: dict, changes: Mapping[str, Any]) -> dict:
    """Update `base` in place with `changes`, nested: mappings merge, other values replace
    (how several --configfile files layer)."""
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def parse_settings(text: str | None) -> dict:
    """Parse a stage's --settings argument (JSON or YAML, as written by the workflow)."""
    if not text:
        return {}
    try:
        # JSON first: YAML 1.1 reads JSON's `1e-08` as a string.
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = load_yaml(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--settings is not valid JSON/YAML: {one_line(err)}") from err
    if not isinstance(value, dict):
        raise ConfigError(f"--settings must be a mapping, got {type(value).__name__}")
    return value


def dumps(settings: Mapping[str, Any]) -> str:
    """Canonical JSON for passing a config slice to a stage (stable across runs)."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
