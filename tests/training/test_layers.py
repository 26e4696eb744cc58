"""Layer selection: relative order kept, same draw on every process, re-drawn on schedule."""

from __future__ import annotations

from collections import Counter

import pytest

from lead.config import resolve
from lead.errors import ConfigError
from lead.training.layers import LayerSelector


def test_random_pairs_are_sorted_and_paired_in_order():
    selector = LayerSelector("random", 5, teacher_layers=12, student_layers=6, seed=888)
    for step in range(0, 500, 10):
        pairs = selector.pairs(step)
        teacher = [t for t, _ in pairs]
        student = [s for _, s in pairs]
        assert len(pairs) == 5
        assert teacher == sorted(set(teacher)) and student == sorted(set(student))
        assert all(1 <= t <= 12 for t in teacher) and all(1 <= s <= 6 for s in student)


def test_two_selectors_draw_the_same_layers_as_two_processes_would():
    first = LayerSelector("random", 3, 12, 6, resample_every=7, seed=42)
    second = LayerSelector("random", 3, 12, 6, resample_every=7, seed=42)
    assert [first.pairs(s) for s in range(200)] == [second.pairs(s) for s in range(200)]
    other_seed = LayerSelector("random", 3, 12, 6, resample_every=7, seed=43)
    assert [first.pairs(s) for s in range(200)] != [other_seed.pairs(s) for s in range(200)]


def test_random_pairs_are_redrawn_exactly_every_resample_every_steps():
    selector = LayerSelector("random", 2, 6, 4, resample_every=10, seed=1)
    blocks = [[selector.pairs(step) for step in range(b * 10, b * 10 + 10)] for b in range(30)]
    for block in blocks:
        assert all(pairs == block[0] for pairs in block)  # constant within a block
    # a new draw starts at each multiple of 10 (30 draws of 2-of-6 x 2-of-4 cannot all agree)
    assert len({tuple(block[0]) for block in blocks}) > 10
    # the draw is a function of step // resample_every only (a resumed run draws the same)
    fresh = LayerSelector("random", 2, 6, 4, resample_every=10, seed=1)
    assert fresh.pairs(137) == blocks[13][0]


def test_random_draw_is_uniform_over_each_models_layers():
    selector = LayerSelector("random", 2, 8, 4, resample_every=1, seed=0)
    draws = 4000
    teacher, student = Counter(), Counter()
    for step in range(draws):
        for t, s in selector.pairs(step):
            teacher[t] += 1
            student[s] += 1
    # each teacher layer is drawn with probability 2/8, each student layer 2/4
    assert all(abs(teacher[i] / draws - 0.25) < 0.04 for i in range(1, 9))
    assert all(abs(student[i] / draws - 0.5) < 0.04 for i in range(1, 5))


def test_last_strategy_takes_the_top_blocks_of_each_model():
    assert LayerSelector("last", 3, 12, 6).pairs(0) == [(10, 4), (11, 5), (12, 6)]


def test_skip_gives_the_release_pairs_for_the_release_shapes():
    # 1-based; the release's passage run: student 2..6 with teacher 1, 3, 5, 7, 9
    assert LayerSelector("skip", 5, 12, 6).pairs(99) == [(1, 2), (3, 3), (5, 4), (7, 5), (9, 6)]
    # its document run, k = 6: student 1..6 with teacher 1, 3, ..., 11
    assert LayerSelector("skip", 6, 12, 6).pairs(0) == [
        (1, 1), (3, 2), (5, 3), (7, 4), (9, 5), (11, 6)
    ]


def test_skip_is_defined_for_other_shapes_as_documented():
    # 24 -> 12: stride 24 // 12 = 2 from teacher block 1, against the student's last k blocks
    assert LayerSelector("skip", 5, 24, 12).pairs(0) == [
        (1, 8), (3, 9), (5, 10), (7, 11), (9, 12)
    ]
    assert LayerSelector("skip", 12, 24, 12).pairs(0) == [(1 + 2 * i, 1 + i) for i in range(12)]
    # same depth: stride 1; a shallower teacher: stride 1 as well
    assert LayerSelector("skip", 3, 6, 6).pairs(0) == [(1, 4), (2, 5), (3, 6)]
    assert LayerSelector("skip", 2, 3, 6).pairs(0) == [(1, 5), (2, 6)]
    # 12 -> 4: stride 3
    assert LayerSelector("skip", 4, 12, 4).pairs(0) == [(1, 1), (4, 2), (7, 3), (10, 4)]


def test_explicit_pairs_are_kept_one_based_and_sorted():
    selector = LayerSelector("pairs", 1, 12, 6, pairs=[[12, 6], [4, 2]])
    assert selector.pairs(0) == [(4, 2), (12, 6)] == selector.pairs(1000)


def test_k_larger_than_the_shallower_model_is_refused():
    with pytest.raises(ConfigError, match=r"layers.k = 7 .*min\(12, 6\) = 6"):
        LayerSelector("random", 7, 12, 6)
    with pytest.raises(ConfigError, match=r"layers\.k = 0"):
        LayerSelector("last", 0, 12, 6)


def test_pairs_outside_a_models_depth_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"\[13, 2\].*teacher has layers 1..12"):
        LayerSelector("pairs", 1, 12, 6, pairs=[[1, 1], [13, 2]])
    with pytest.raises(ConfigError, match=r"\[3, 0\]"):
        LayerSelector("pairs", 1, 12, 6, pairs=[[3, 0]])
    with pytest.raises(ConfigError, match="non-empty"):
        LayerSelector("pairs", 1, 12, 6)


def test_unknown_strategy_is_refused():
    with pytest.raises(ConfigError, match="'every'"):
        LayerSelector("every", 1, 12, 6)


def test_from_settings_uses_the_config_defaults_of_the_release():
    layers = resolve("distillation", {})["layers"]
    selector = LayerSelector.from_settings(layers, 12, 6, seed=888)
    assert (selector.strategy, selector.k, selector.resample_every) == ("random", 5, 10)
    assert selector.pairs(3) == LayerSelector("random", 5, 12, 6, seed=888).pairs(9)
