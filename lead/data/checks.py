"""`dataset.strict` applied to the problems a real collection may plausibly contain.

Structural problems (column counts, duplicate or malformed ids) are always errors; the
tolerable ones (an empty text, a judgment of an unknown id) go through `Checks.problem`, an
error in strict mode and a counted warning otherwise. Repairs are counted and logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lead.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Checks:
    """Applies `dataset.strict` to the tolerable problems and counts what happened."""

    strict: bool = True
    problems: Counter = field(default_factory=Counter)
    repairs: Counter = field(default_factory=Counter)

    def problem(
        self, kind: str, path: str | Path, where: int | str | None, message: str, count: int = 1
    ) -> None:
        """Raise in strict mode; otherwise log the first of each kind and count them all."""
        if self.strict:
            raise DataError(path, where, f"{message} (dataset.strict: false would {kind})")
        if not self.problems[kind]:
            log.warning("%s; the data stage will %s (further cases are counted)",
                        DataError(path, where, message), kind)
        self.problems[kind] += count

    def repaired(self, kind: str, count: int) -> None:
        self.repairs[kind] += count

    def log_summary(self) -> None:
        for kind, count in sorted(self.problems.items()):
            log.warning("%d data problems: %s", count, kind)
        for kind, count in sorted(self.repairs.items()):
            log.info("%d repaired: %s", count, kind)
