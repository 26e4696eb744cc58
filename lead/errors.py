"""User-facing errors: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations

from pathlib import Path


def one_line(problem: str | BaseException, limit: int = 300) -> str:
    """A message (or an exception's, its type name when it has none) as one line of at most
    `limit` characters: libraries quote whole values and draw carets over several lines."""
    text = " ".join(str(problem).split())
    if not text and isinstance(problem, BaseException):
        text = type(problem).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


class LeadError(Exception):
    """A problem the user can fix (bad input, bad config); printed without a traceback."""


class DataError(LeadError):
    """Bad input data: names the file, the line or record, and what was expected."""

    def __init__(self, path: str | Path, where: str | int | None, message: str):
        self.path = str(path)
        self.where = where
        location = self.path
        if isinstance(where, int):
            location += f":{where}"
        elif where:
            location += f" ({where})"
        super().__init__(f"{location}: {message}")


class ConfigError(LeadError):
    """A setting that does not fit the schema, a model or a checkpoint."""
