"""Measure names: ir_measures' syntax in, canonical names out, and what lead refuses."""

from __future__ import annotations

import ir_measures
import pytest

from lead.errors import ConfigError
from lead.evaluation.measures import (
    DEFAULT_MEASURES,
    default_measures,
    measure_name,
    parse_measure,
    parse_measures,
)


@pytest.mark.parametrize(
    ("given", "level", "written"),
    [
        ("RR@10", 1, "RR@10"),
        ("MRR@10", 1, "RR@10"),  # an ir_measures alias, written canonically
        ("NDCG@10", 2, "nDCG@10"),  # graded: no rel, whatever the level
        ("nDCG", 1, "nDCG"),  # no cut-off: the whole run
        ("P(judged_only=False)@10", 1, "P@10"),  # a default parameter is dropped
        ("AP@1000", 2, "AP(rel=2)@1000"),  # the evaluation's level, carried in the name
        ("AP(rel=2)@1000", 1, "AP(rel=2)@1000"),  # an explicit rel= wins over the level
        ("AP(rel=3)@1000", 2, "AP(rel=3)@1000"),
        ("Success@5", 2, "Success(rel=2)@5"),
        ("Judged@10", 2, "Judged@10"),
        ("R@1000", 1, "R@1000"),
        ("Rprec", 2, "Rprec(rel=2)"),
    ],
)
def test_names_are_written_canonically_and_read_back_to_the_same_measure(given, level, written):
    assert measure_name(given, level) == written
    assert measure_name(written, level) == written  # what lead writes is a valid input
    # ir_measures reads the written name as the measure lead computed
    theirs = ir_measures.parse_measure(written)
    assert repr(theirs) == written
    ours = parse_measure(given)
    if ours.binary:
        assert theirs["rel"] == ours.level(level)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Foo@10", r"unknown measure 'Foo@10' \(measure not found: Foo\); lead computes P, R,"),
        ("nDCG@@10", r"unknown measure 'nDCG@@10'"),
        ("ERR@10", r"measure 'ERR@10' is not supported; lead computes .*Judged"),
        ("P(judged_only=True)@10", r"'P\(judged_only=True\)@10': lead does not support judged_"),
        ("nDCG(gains={0:0,1:1})@10", r"lead does not support gains"),
        ("R", r"measure 'R' needs a cut-off \(R@k\)"),
        ("Rprec@10", r"measure 'Rprec@10': unsupported params found: \['cutoff'\]"),
        ("P@10.5", r"measure 'P@10.5': invalid param cutoff=10.5"),
        ("P@0", r"measure 'P@0': cut-off must be an integer >= 1, got 0"),
        ("AP(rel=0)@10", r"measure 'AP\(rel=0\)@10': rel must be an integer >= 1, got 0"),
    ],
)
def test_unknown_and_unsupported_measures_are_one_line_config_errors(name, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_measure(name)
    assert "\n" not in str(caught.value)


def test_rel_1_at_another_level_is_refused_because_its_name_would_read_back_differently():
    # ir_measures writes AP(rel=1)@1000 as AP@1000, which a level-2 evaluation reads as rel=2.
    message = r"'AP\(rel=1\)@1000' at relevance level 2: ir_measures names it 'AP@1000'"
    with pytest.raises(ConfigError, match=message):
        measure_name("AP(rel=1)@1000", 2)
    assert measure_name("AP(rel=1)@1000", 1) == "AP@1000"


def test_measures_that_name_the_same_measure_are_listed_twice():
    with pytest.raises(ConfigError, match=r"name 'AP\(rel=2\)@1000' twice"):
        parse_measures(["AP@1000", "AP(rel=2)@1000"], 2)
    with pytest.raises(ConfigError, match="name 'RR@10' twice"):
        parse_measures(["RR@10", "MRR@10"], 1)
    assert len(parse_measures(["AP@1000", "AP(rel=2)@1000"], 1)) == 2  # rel 1 and rel 2
    with pytest.raises(ConfigError, match="non-empty list"):
        parse_measures("RR@10", 1)


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (1000, ("RR@10", "nDCG@10", "R@100", "R@1000", "AP@1000")),
        (100, ("RR@10", "nDCG@10", "R@100", "AP@100")),  # R@100 once
        (50, ("RR@10", "nDCG@10", "R@50", "AP@50")),  # too shallow for R@100
    ],
)
def test_default_measures_follow_the_search_depth(depth, expected):
    assert default_measures(depth) == expected
    assert [measure_name(name, 1) for name in expected] == list(expected)


def test_default_measures_need_a_positive_integer_depth():
    for depth in (0, -5, True, 10.0):
        with pytest.raises(ConfigError, match="depth must be an integer >= 1"):
            default_measures(depth)
    assert [measure_name(name, 1) for name in DEFAULT_MEASURES] == list(DEFAULT_MEASURES)
