"""The code a stage runs, as one hash: what makes Snakemake rerun a stage when its code changes.

A rule carries the hash of the source of every lead module its stage imports (the stage's
module in lead.cli and everything it imports, at module or function level, followed through the
package), as a param. Editing one of those modules reruns the stage and its descendants;
touching a file, moving the checkout or checking the same code out again changes nothing.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Every stage runs through the dispatcher, whose own imports are the stage table (not followed).
DISPATCH = ("lead.__main__", "lead.logs", "lead.errors", "lead.cli")


@cache
def _module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


@cache
def _imports(module: str) -> frozenset[str]:
    """The lead modules `module` imports anywhere in its source (and their packages)."""
    files = _module_files()
    tree = ast.parse(files[module].read_text(), filename=str(files[module]))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in files:  # `from lead.x import y`: y may be a name
                name = name.rpartition(".")[0]
            if name.startswith("lead"):
                found.add(name)
    packages = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    return frozenset(found | (packages & files.keys()))


def closure(*modules: str) -> list[str]:
    """`modules` and every lead module they import, transitively (the dispatcher's stage table
    is not followed), sorted."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module != "lead.__main__":
            todo.extend(_imports(module) - seen)
    return sorted(seen)


def stage_hash(stage: str) -> str:
    """A short hash of the source of everything the stage `stage` imports."""
    module = f"lead.cli.{stage.replace('-', '_')}"
    files = _module_files()
    if module not in files:
        raise KeyError(f"no stage module {module}")
    digest = hashlib.sha256()
    for name in closure(module, *DISPATCH):
        digest.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    return digest.hexdigest()[:16]
