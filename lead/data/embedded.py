"""The embedded default dataset: find a function's documentation from its one-line summary.

Every install of the project carries real, human-written English that needs no network: the
docstrings of the Python standard library and of the project's own dependencies. Each
documented function, class, method or module gives one example: the query is its one-line
summary, the relevant passage is the rest of its description (prose only: parameter lists,
examples, code and markup are removed). The source files are parsed, never imported, so
building has no side effects (no GUI, no network, no import-order effects) and depends only on
the installed files: the same Python and pinned packages give the same bytes.

Design choices, each against an easy shortcut:
- The title is the public module (plus the enclosing class for methods), never the object's
  own name, which would often restate the query.
- A query that appears verbatim in its passage is dropped (retrieval by string match), and so
  is a summary shared by several objects (it has no single answer).
- Near-duplicate passages (a docstring copied into another module or class) are kept once, so
  no copy of a test passage hides among the training data.
- The splits are made by family (the public module, e.g. `scipy.stats` for
  `scipy/stats/_stats_py.py`): test and dev queries come from modules none of whose queries are
  trained on, and trimmed queries of a split's last module are dropped rather than moved to
  training.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import importlib.util
import platform
import sysconfig
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse

from lead import schemas
from lead.data.docstrings import normalise, split_docstring
from lead.errors import LeadError
from lead.io import provenance, write_table

MIN_TRAIN_QUERIES = 2000
NEAR_DUPLICATE_CONTAINMENT = 0.7
SHINGLE_WORDS = 5
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class Source:
    """Part of the installed Python to read: a distribution's package (or the stdlib)."""

    package: str  # top-level import name; "" for the standard library
    distribution: str  # for the version in the provenance; "python" for the stdlib
    subtrees: tuple[str, ...] = ()  # relative paths to walk; empty walks the whole package
    skip: tuple[str, ...] = ()  # relative paths (directories or files) to leave out


# The packages are the runtime dependencies in pyproject.toml (what every install carries).
# Subtrees keep the build well under a minute and leave out machine-generated or templated
# documentation (transformers' per-model files, torch's compiler internals).
SOURCES: tuple[Source, ...] = (
    Source("", "python"),
    Source("numpy", "numpy"),
    Source("scipy", "scipy", skip=("_lib",)),
    Source("pandas", "pandas"),
    Source("matplotlib", "matplotlib"),
    Source(
        "torch",
        "torch",
        subtrees=(
            "nn", "optim", "distributions", "autograd", "utils/data", "amp", "functional.py",
            "serialization.py", "random.py", "hub.py", "_tensor.py", "library.py",
            "overrides.py", "quasirandom.py", "storage.py", "multiprocessing",
        ),
    ),
    Source("transformers", "transformers", skip=("models", "testing_utils.py")),
    Source("tokenizers", "tokenizers"),
    Source("safetensors", "safetensors"),
    Source("pyarrow", "pyarrow"),
    Source("faiss", "faiss-cpu"),
    Source("snakemake", "snakemake"),
    Source("snakemake_executor_plugin_slurm", "snakemake-executor-plugin-slurm"),
    Source("pytrec_eval", "pytrec-eval-terrier"),
    Source("bm25s", "bm25s"),
    Source("jsonschema", "jsonschema"),
    Source("yaml", "PyYAML"),
)

# Never worth reading: tests, GUIs and demos, vendored or bundled copies, generated data.
SKIP_DIRECTORIES = frozenset(
    {
        "__pycache__", "site-packages", "test", "tests", "testing", "idlelib", "tkinter",
        "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "_vendor", "vendored", "encodings",
        "dist-packages",
    }
)
SKIP_FILES = frozenset({"__main__.py", "conftest.py", "setup.py", "antigravity.py", "this.py",
                        "turtle.py"})


@dataclass(frozen=True)
class Entry:
    """One documented object: where it is defined, its title, query and passage."""

    module: str
    line: int
    title: str
    query: str | None
    passage: str

    @property
    def family(self) -> str:
        return family_of(self.module)


# ---------------------------------------------------------------- finding the source files


def source_root(source: Source) -> Path | None:
    """Where a source's files live, found without importing it (None if not installed)."""
    if not source.package:
        return Path(sysconfig.get_paths()["stdlib"])
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def source_version(source: Source) -> str:
    if not source.package:
        return platform.python_version()
    try:
        return metadata.version(source.distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def _walk(path: Path, skip: frozenset[Path]) -> Iterator[Path]:
    if path in skip:
        return
    if path.is_file():
        if path.suffix == ".py" and path.name not in SKIP_FILES \
                and not path.name.startswith("test_") \
                and path.stat().st_size <= MAX_FILE_BYTES:
            yield path
        return
    if not path.is_dir() or path.name in SKIP_DIRECTORIES:
        return
    for child in sorted(path.iterdir(), key=lambda p: p.name):
        yield from _walk(child, skip)


def source_files(source: Source) -> list[tuple[str, Path]]:
    """(dotted module name, file) for every file a source contributes, sorted by module."""
    root = source_root(source)
    if root is None:
        return []
    skip = frozenset(root / s for s in source.skip)
    starts = [root / s for s in source.subtrees] if source.subtrees else [root]
    base = root.parent if source.package else root
    found = {}
    for start in starts:
        for file in _walk(start, skip):
            parts = file.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                found[".".join(parts)] = file
    return sorted(found.items())


# ---------------------------------------------------------------- reading docstrings


def family_of(module: str) -> str:
    """The public module a file belongs to: its dotted name up to the first private part.

    `scipy.stats._stats_py` and `scipy.stats._mstats_basic` both document `scipy.stats`;
    splitting them between training and test would leak one module's vocabulary.
    """
    parts = module.split(".")
    public = next((n for n in range(1, len(parts)) if parts[n].startswith("_")), len(parts))
    return ".".join(parts[:public])


def _parse(source: str) -> ast.Module:
    """ast.parse without the cyclic garbage collector, which would repeatedly scan the
    growing tree (an AST holds no reference cycles) and cost a third of the build time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old docstrings
            return ast.parse(source)
    finally:
        if enabled:
            gc.enable()


def documented_objects(family: str, source: str) -> Iterator[tuple[int, str, str]]:
    """(line, title, docstring) of a module, its classes, functions and methods.

    Nested functions are skipped: they are implementation details, rarely documented for a
    reader. The title is the public module, plus the enclosing classes for methods.
    """
    tree = _parse(source)
    doc = ast.get_docstring(tree)
    if doc:
        yield 0, family, doc
    yield from _members(tree.body, family)


def _members(body: Iterable[ast.stmt], title: str) -> Iterator[tuple[int, str, str]]:
    for node in body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        doc = ast.get_docstring(node)
        if doc:
            yield node.lineno, title, doc
        if isinstance(node, ast.ClassDef):
            yield from _members(node.body, f"{title}.{node.name}")


def read_entries(sources: Iterable[Source] = SOURCES) -> list[Entry]:
    """Every usable documented object of the sources, sorted by (module, line)."""
    entries = []
    for source in sources:
        for module, file in source_files(source):
            try:
                objects = list(documented_objects(family_of(module), file.read_text("utf-8")))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a file for another Python version or encoding: not ours to fix
            for line, title, doc in objects:
                query, passage = split_docstring(doc)
                if passage is not None:
                    entries.append(Entry(module, line, title, query, passage))
    return sorted(entries, key=lambda e: (e.module, e.line))


# ---------------------------------------------------------------- de-duplication


def _shingles(text: str) -> set[str]:
    words = normalise(text).split()
    return {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


def near_duplicate_groups(passages: list[str], max_shared: int = 50) -> list[int]:
    """For each passage, the index of the first passage it (near-)duplicates, or itself.

    Two passages are near-duplicates when most word 5-grams of the shorter one occur in the
    other. Overlaps are counted through a sparse product; 5-grams in more than `max_shared`
    passages are boilerplate and left out of the count (their quadratic cost buys nothing).
    """
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    sizes = np.zeros(len(passages), dtype=np.int64)
    for row, passage in enumerate(passages):
        shingles = sorted(_shingles(passage))
        sizes[row] = len(shingles)
        for shingle in shingles:
            rows.append(row)
            cols.append(vocabulary.setdefault(shingle, len(vocabulary)))
    matrix = scipy.sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int64), (rows, cols)),
        shape=(len(passages), len(vocabulary)),
    )
    common = np.asarray(matrix.sum(axis=0)).ravel() > max_shared
    matrix = matrix[:, np.flatnonzero(~common)]
    overlap = scipy.sparse.triu(matrix @ matrix.T, k=1).tocoo()
    smaller = np.minimum(sizes[overlap.row], sizes[overlap.col])
    duplicate = overlap.data >= NEAR_DUPLICATE_CONTAINMENT * np.maximum(smaller, 1)
    parent = list(range(len(passages)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in sorted(zip(overlap.row[duplicate].tolist(), overlap.col[duplicate].tolist(),
                           strict=True)):
        root_a, root_b = find(a), find(b)
        parent[max(root_a, root_b)] = min(root_a, root_b)
    return [find(i) for i in range(len(passages))]


def deduplicate(entries: list[Entry]) -> list[Entry]:
    """Keep the first of each group of (near-)duplicate passages; drop ambiguous queries.

    A summary shared by several remaining objects ("Return a copy.") has no single answer:
    those objects stay as passages without a query.
    """
    exact: dict[str, Entry] = {}
    for entry in entries:
        exact.setdefault(normalise(entry.passage), entry)
    unique = list(exact.values())
    groups = near_duplicate_groups([e.passage for e in unique])
    kept = [entry for i, entry in enumerate(unique) if groups[i] == i]
    counts: dict[str, int] = {}
    for entry in kept:
        if entry.query is not None:
            key = normalise(entry.query)
            counts[key] = counts.get(key, 0) + 1
    return [
        entry if entry.query is None or counts[normalise(entry.query)] == 1
        else replace(entry, query=None)
        for entry in kept
    ]


# ---------------------------------------------------------------- splits and writing


def _seeded_order(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def assign_splits(entries: list[Entry], seed: int, test_queries: int, dev_queries: int
                  ) -> dict[int, str]:
    """Split name of each query-bearing entry (by index); families never straddle splits.

    Families (modules) are visited in a seeded order; test and then dev take whole families
    until they hold their number of queries, trimming the last one (its surplus queries are
    dropped, not trained on). A family larger than a tenth of a split's size (and than 5)
    goes to training, so an evaluation split spans many modules (its score is not one module's).
    """
    by_family: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        if entry.query is not None:
            by_family.setdefault(entry.family, []).append(index)
    split_of: dict[int, str] = {}
    targets = [("test", test_queries), ("dev", dev_queries)]
    filled = {"test": 0, "dev": 0}
    for family in sorted(by_family, key=lambda f: _seeded_order(seed, f)):
        members = by_family[family]
        split = next((name for name, target in targets
                      if filled[name] < target and len(members) <= max(5, target // 10)),
                     "train")
        if split != "train":
            target = dict(targets)[split]
            members = sorted(members, key=lambda i: _seeded_order(seed, f"{family}\0{i}"))
            members = members[: target - filled[split]]
            filled[split] += len(members)
        for index in members:
            split_of[index] = split
    return split_of


def build(
    settings: Mapping[str, Any], out_dir: str | Path, *, sources: Sequence[Source] = SOURCES
) -> None:
    """Write corpus.parquet, queries/{train,dev,test}.parquet and qrels/ under out_dir.

    Raises LeadError, writing nothing, when the installed documentation is too small for the
    requested sizes (at least MIN_TRAIN_QUERIES training queries).
    """
    options = settings["embedded"]
    sources = [s for s in sources if source_root(s) is not None]
    entries = deduplicate(read_entries(sources))
    split_of = assign_splits(entries, settings["seed"], options["test_queries"],
                             options["dev_queries"])
    counts = {name: sum(1 for s in split_of.values() if s == name)
              for name in ("train", "dev", "test")}
    minimum = {"train": MIN_TRAIN_QUERIES, "dev": options["dev_queries"],
               "test": options["test_queries"]}
    short = [f"{n} {name} queries (need {minimum[name]})" for name, n in counts.items()
             if n < minimum[name]]
    if len(entries) < options["min_passages"]:
        short.append(f"{len(entries)} passages (need {options['min_passages']})")
    if short:
        raise LeadError(
            "embedded dataset: the installed documentation gives only " + ", ".join(short)
            + "; install the pinned dependencies or lower dataset.embedded settings"
        )
    prov = provenance(
        "embedded", settings, python=platform.python_version(),
        documentation={s.package or "stdlib": source_version(s) for s in sources},
    )
    out_dir = Path(out_dir)
    doc_ids = [f"d{i:06d}" for i in range(len(entries))]
    write_table(
        pa.table({"doc_id": doc_ids, "title": [e.title for e in entries],
                  "text": [e.passage for e in entries]}, schema=schemas.CORPUS),
        out_dir / "corpus.parquet", prov,
    )
    query_id = {index: f"q{n:06d}" for n, index in enumerate(sorted(split_of))}
    for split in ("train", "dev", "test"):
        members = sorted(i for i, s in split_of.items() if s == split)
        ids = [query_id[i] for i in members]
        write_table(
            pa.table({"query_id": ids, "text": [entries[i].query for i in members]},
                     schema=schemas.QUERIES),
            out_dir / "queries" / f"{split}.parquet", prov,
        )
        write_table(
            pa.table({"query_id": ids, "doc_id": [doc_ids[i] for i in members],
                      "relevance": [1] * len(members)}, schema=schemas.QRELS),
            out_dir / "qrels" / f"{split}.parquet", prov,
        )
