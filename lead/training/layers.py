"""Which (teacher layer, student layer) pairs LEAD aligns at a given optimizer step.

Layers are 1-based Transformer blocks (the embedding output is not a layer). The pairs keep the
relative order of the two models: the i-th smallest teacher layer goes with the i-th smallest
student layer. The random strategy is a pure function of (seed, step // resample_every), so
every process draws the same layers without communicating and a resumed run draws the same
layers again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lead.errors import ConfigError

STRATEGIES = ("random", "last", "skip", "pairs")


class LayerSelector:
    def __init__(
        self,
        strategy: str,
        k: int,
        teacher_layers: int,
        student_layers: int,
        *,
        resample_every: int = 10,
        pairs: Iterable[Iterable[int]] = (),
        seed: int = 888,
    ):
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"layer selection strategy {strategy!r} is unknown; expected one of {STRATEGIES}"
            )
        if resample_every < 1:
            raise ConfigError(f"layers.resample_every must be >= 1, got {resample_every}")
        self.strategy = strategy
        self.k = k
        self.teacher_layers = teacher_layers
        self.student_layers = student_layers
        self.resample_every = resample_every
        self.seed = seed
        self._pairs = tuple(sorted(self._check_pairs(pairs))) if strategy == "pairs" else ()
        if strategy != "pairs" and not 1 <= k <= min(teacher_layers, student_layers):
            raise ConfigError(
                f"layers.k = {k} must be between 1 and min(teacher layers, student layers) = "
                f"min({teacher_layers}, {student_layers}) = {min(teacher_layers, student_layers)}"
            )

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], teacher_layers: int, student_layers: int, *, seed: int
    ) -> LayerSelector:
        """From the `distillation.layers` config section (defaults already resolved)."""
        return cls(
            settings["strategy"],
            settings["k"],
            teacher_layers,
            student_layers,
            resample_every=settings["resample_every"],
            pairs=settings["pairs"],
            seed=seed,
        )

    def pairs(self, step: int) -> list[tuple[int, int]]:
        """The (teacher_layer, student_layer) pairs, 1-based, for optimizer step `step`."""
        if self.strategy == "pairs":
            return list(self._pairs)
        if self.strategy == "last":
            teacher = range(self.teacher_layers - self.k + 1, self.teacher_layers + 1)
            student = range(self.student_layers - self.k + 1, self.student_layers + 1)
        elif self.strategy == "skip":
            teacher, student = skip_layers(self.teacher_layers, self.student_layers, self.k)
        else:
            rng = np.random.default_rng([self.seed, step // self.resample_every])
            teacher = sorted(rng.choice(self.teacher_layers, self.k, replace=False) + 1)
            student = sorted(rng.choice(self.student_layers, self.k, replace=False) + 1)
        return [(int(t), int(s)) for t, s in zip(teacher, student, strict=True)]

    def _check_pairs(self, pairs: Iterable[Iterable[int]]) -> list[tuple[int, int]]:
        checked = []
        for pair in pairs:
            pair = tuple(pair)
            if len(pair) != 2:
                raise ConfigError(f"layers.pairs entry {list(pair)} must be [teacher, student]")
            teacher, student = pair
            if not 1 <= teacher <= self.teacher_layers or not 1 <= student <= self.student_layers:
                raise ConfigError(
                    f"layers.pairs entry [{teacher}, {student}] is outside the models: the "
                    f"teacher has layers 1..{self.teacher_layers}, the student "
                    f"1..{self.student_layers}"
                )
            checked.append((teacher, student))
        if not checked:
            raise ConfigError("layers.strategy 'pairs' needs a non-empty layers.pairs list")
        return checked


def skip_layers(teacher_layers: int, student_layers: int, k: int) -> tuple[list[int], list[int]]:
    """The release's `skip` pairs, generalised: every s-th teacher block from block 1, with
    s = teacher depth // student depth (at least 1), against the student's last k blocks.

    The release hard-codes its two 12 -> 6 cases: k = 5 pairs teacher 1, 3, 5, 7, 9 with
    student 2..6 (passage), k = 6 pairs teacher 1, 3, ..., 11 with student 1..6 (document).
    """
    stride = max(1, teacher_layers // student_layers)  # k <= student depth keeps it in range
    teacher = [1 + stride * i for i in range(k)]
    student = list(range(student_layers - k + 1, student_layers + 1))
    return teacher, student
