"""Names that become paths (lead.paths): one pattern, also in the schema, and `child`."""

from __future__ import annotations

import pytest

from lead.config import schema
from lead.errors import ConfigError
from lead.paths import MAX_NAME_LENGTH, NAME_PATTERN, check_name, child

BAD_NAMES = ["../../x", "$(touch MARKER)", "a b", ".hidden", "..", "", "a/b", "train\n",
             "x" * (MAX_NAME_LENGTH + 1)]


@pytest.mark.parametrize("name", ["train", "dev-small", "dl19", "trec-covid_v2.1", "A" * 64])
def test_usable_names_pass(name):
    assert check_name(name, "split name") == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unusable_names_are_refused_naming_them(name):
    with pytest.raises(ConfigError) as err:
        check_name(name, "config key dataset.eval_splits")
    message = str(err.value)
    assert message.startswith(f"config key dataset.eval_splits: {name!r} is not a usable name")


def test_child_stays_inside_its_root(tmp_path):
    assert child(tmp_path, "queries", "train.parquet") == tmp_path / "queries" / "train.parquet"
    for parts in (("..", "x"), ("queries", "../../x"), ("/etc", "passwd"), (".",)):
        with pytest.raises(ConfigError, match="does not lie inside"):
            child(tmp_path / "out", *parts)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)  # resolves outside: refused
    with pytest.raises(ConfigError, match="does not lie inside"):
        child(tmp_path / "out", "link", "x.parquet")


def _dataset(node: dict, *keys: str) -> dict:
    for key in keys:
        node = node["properties"][key]
    return node


def test_the_schema_uses_the_one_name_pattern():
    dataset = schema()["definitions"]["dataset"]
    properties = schema()["properties"]
    constraints = [
        _dataset(dataset, "eval_splits")["items"],
        _dataset(dataset, "local", "queries")["propertyNames"],
        _dataset(dataset, "local", "qrels")["propertyNames"],
        _dataset(dataset, "beir", "splits")["propertyNames"],
        properties["distillation"]["properties"]["variants"]["propertyNames"],
        {key: value for key, value in
         properties["evaluate"]["properties"]["collections"]["propertyNames"].items()
         if key != "not"},
        {"type": "string", **{k: properties["name"][k] for k in ("pattern", "maxLength")}},
    ]
    for constraint in constraints:
        assert constraint == {"type": "string", "pattern": NAME_PATTERN,
                              "maxLength": MAX_NAME_LENGTH}
