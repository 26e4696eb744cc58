"""Names that become parts of file names, and paths proven to stay under their folder.

Split and collection names come from a config and end up in paths (`queries/{split}.parquet`)
and in shell commands. One pattern admits them: letters, digits, `_`, `.` and `-`, starting
with a letter or digit (so `..`, hidden files, blanks and shell syntax are impossible). The
config schema uses the same pattern; `check_name` applies it where a name is used.
"""

from __future__ import annotations

import re
from pathlib import Path

from lead.errors import ConfigError

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_NAME_LENGTH = 64
_NAME = re.compile(NAME_PATTERN.rstrip("$") + r"\Z")  # Python's `$` also matches before "\n"


def check_name(name: object, what: str) -> str:
    """`name` if it is a usable split or collection name; ConfigError naming `what` if not."""
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME.match(name):
        raise ConfigError(
            f"{what}: {name!r} is not a usable name (letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit, at most {MAX_NAME_LENGTH} characters)"
        )
    return name


def child(root: str | Path, *parts: str) -> Path:
    """`root / parts...`, refused (ConfigError) unless it resolves to a path inside `root`."""
    root = Path(root)
    path = root.joinpath(*parts)
    resolved_root, resolved = root.resolve(), path.resolve()
    if resolved == resolved_root or not resolved.is_relative_to(resolved_root):
        raise ConfigError(f"{path} does not lie inside {root}: refusing to use it")
    return path
