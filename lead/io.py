"""Atomic parquet I/O with provenance, shared by every stage.

Every artifact is written to a temporary sibling and renamed into place only once complete,
so a killed job never leaves a file that Snakemake or a later stage could take for finished.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lead.errors import DataError

PROVENANCE_KEY = b"lead.provenance"
_VERSIONED_PACKAGES = ("lead", "torch", "transformers", "tokenizers", "pyarrow", "faiss-cpu")


def cache_dir() -> Path:
    """Downloads and unpacked models shared by every experiment: $LEAD_CACHE, else
    ~/.cache/lead."""
    return Path(os.environ.get("LEAD_CACHE") or Path.home() / ".cache" / "lead")


def config_hash(settings: Mapping[str, Any] | None) -> str:
    """A short, stable hash of a settings mapping (key order does not matter)."""
    canonical = json.dumps(settings or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def provenance(source: str, settings: Mapping[str, Any] | None = None, **extra: Any) -> dict:
    """What produced an artifact: the stage/source, its settings' hash and package versions.

    No timestamps: the same config and seed must give byte-identical artifacts.
    """
    return {
        "source": source,
        "config_hash": config_hash(settings),
        "settings": dict(settings or {}),
        "versions": _package_versions(),
        **extra,
    }


def _with_provenance(schema: pa.Schema, prov: Mapping[str, Any] | None) -> pa.Schema:
    if prov is None:
        return schema
    meta = dict(schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(prov, sort_keys=True, default=str).encode()
    return schema.with_metadata(meta)


def share_as_umask_allows(folder: Path) -> None:
    """Give a written folder's files the permissions the user's umask allows (0644 under the
    usual 022): libraries write some files owner-only (a model's weights, through a temporary
    file), which colleagues sharing a cluster folder could then not read."""
    mask = os.umask(0)
    os.umask(mask)
    for path in (folder, *folder.rglob("*")):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def input_file(path: str | Path) -> Path:
    """`path`, refused (DataError naming it) if it does not exist or is a folder."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, "is a folder, expected a file")
    if not path.exists():
        raise DataError(path, None, "file not found")
    return path


def check_output(path: str | Path, *, directory: bool | None = None) -> Path:
    """Refuse an output that cannot be replaced where it is, before any work is done.

    A symbolic link is refused: replacing it would drop the link, and writing through it would
    land wherever it points. With `directory` given, so is a folder where a file goes or a
    file where a folder goes. So is a file where a parent folder would go. Nothing is created.
    """
    path = Path(path)
    if path.is_symlink():
        raise DataError(path, None, f"is a symbolic link (to {os.readlink(path)}); refusing to "
                                    "replace it: give the real path of the output")
    if directory is not None and path.exists() and path.is_dir() != directory:
        found, expected = ("a folder", "a file") if path.is_dir() else ("a file", "a folder")
        raise DataError(path, None, f"is {found}; this output is {expected}: remove it or give "
                                    "another path")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataError(ancestor, None, f"is a file, so {path} cannot be written")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool | None = None,
                made_by: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; move it onto `path` only if the block succeeds.

    Works for files and directories (`directory` says which, so that an output of the other
    kind in the way is refused before the block runs; see `check_output`). On failure the
    temporary is removed and any existing `path` is left untouched. A folder output gets the
    marker of the command that `made_by` names, written last (`OUTPUT_MARKER`): the next run of
    that command may replace the folder, no other command may.
    """
    path = check_output(path, directory=directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if made_by is not None and tmp.is_dir():
            mark_output(tmp, made_by)
        check_output(path, directory=tmp.is_dir())
        if path.is_dir() and tmp.is_dir():
            # Two renames: the old folder moves aside first, so a kill at any moment leaves
            # either the old folder or the new one at `path`, never neither.
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)


# --------------------------------------------------------------------------- the output rule
#
# A command's output may be a new path, or an output this command made before (recognisable
# by what it wrote), never anything else, and never one of the command's own inputs: checked
# before any work (`claim_output`, called by lead.__main__ for every output a stage declares).

OUTPUT_MARKER = ".lead-output"  # in a folder output: {"command": ...}, written last
_HEAD = 4096  # bytes of a file output `made_by` reads
# Where a parquet's provenance `source` names a command other than itself.
_SOURCE_COMMANDS = {"train:contrastive": "warmup"}


def mark_output(folder: Path, command: str, *, whole: bool = True) -> None:
    """Mark a folder as `command`'s output: with the entries it holds now (`whole`), which are
    then all it may hold to be replaced, or as a work folder the command owns entirely (a
    training run's checkpoints)."""
    marker: dict[str, Any] = {"command": command}
    if whole:
        marker["entries"] = sorted(p.name for p in folder.iterdir() if p.name != OUTPUT_MARKER)
    (folder / OUTPUT_MARKER).write_text(json.dumps(marker) + "\n")


def made_by(path: Path) -> str | None:
    """The lead command that wrote `path`, as far as what it wrote shows: a folder's marker
    (with nothing in the folder but what the marker lists), a parquet's provenance, a TREC
    run's lines, the report's first line; else None."""
    if path.is_dir():
        marker = _marker(path)
        return marker["command"] if marker is not None and not _foreign(path, marker) else None
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD)
    except OSError:
        return None
    if head.startswith(b"PAR1"):
        try:
            source = read_provenance(path).get("source")
        except DataError:
            return None
        if isinstance(source, str) and source.startswith("train:"):
            return _SOURCE_COMMANDS.get(source, "distill")
        return source
    lines = head.decode("utf-8", errors="replace").splitlines()
    if lines and lines[0].startswith(REPORT_TITLE):
        return "report"
    if lines and lines[0] == METRICS_TSV_HEADER:
        return "report"
    # Every whole line a run line (the last one read may be cut off in a longer file), and at
    # least one: a one-line note is no TREC run.
    complete = lines if len(head) < _HEAD else lines[:-1]
    if complete and all(len(line.split()) == 6 and line.split()[1] == "Q0" for line in complete):
        return "trec-run"
    return None


def _marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) \
        else None


def _foreign(folder: Path, marker: dict | None) -> list[str]:
    """What a folder holds that its marker does not list (everything, without a marker).
    Empty folders are nothing: Snakemake makes the folders of a job's output files before
    the job runs."""
    present = sorted(p.name for p in folder.iterdir()
                     if p.name != OUTPUT_MARKER and not _only_folders(p))
    if marker is None:
        return present
    if "entries" not in marker:
        return []
    listed = set(marker["entries"]) if isinstance(marker["entries"], list) else set()
    return [name for name in present if name not in listed]


REPORT_TITLE = "# LEAD distillation report"  # the first line of lead.evaluation.report's
METRICS_TSV_HEADER = "collection\tsplit\tmodel\tmeasure\tvalue (%)"  # and of its tables
# Commands whose file outputs are TREC runs (`made_by` cannot tell which one wrote a run).
TREC_WRITERS = {"search", "export-trec"}


def _only_folders(path: Path) -> bool:
    """Whether `path` is a folder with no file anywhere under it."""
    if path.is_symlink() or not path.is_dir():
        return False
    return all(child.is_dir() and not child.is_symlink() for child in path.rglob("*"))


def claim_output(path: str | Path, command: str, *, folder: bool,
                 inputs: Sequence[Path] = ()) -> Path:
    """Refuse, before any work, an output `command` may not write: one that cannot be written
    where it is (`check_output`), one of the command's own inputs (or inside one, or holding
    one), or anything already there that this command did not make: a folder that is neither
    empty nor marked by this command, a file that is not this command's artifact."""
    path = check_output(path, directory=folder)
    target = path.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or source.is_relative_to(target) or target.is_relative_to(source):
            relation = ("is" if target == source else "holds" if source.is_relative_to(target)
                        else "is inside")
            raise DataError(path, None, f"{relation} the input {source}: give the output a "
                                        "path of its own")
    if not path.exists():
        return path
    if folder:
        marker = _marker(path)
        foreign = _foreign(path, marker if marker and marker["command"] == command else None)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise DataError(path, None, f"holds files `lead {command}` did not write ({shown}); "
                                        "give a new folder, or remove this one first")
        return path
    writer = made_by(path)
    if writer == command or (writer == "trec-run" and command in TREC_WRITERS):
        return path
    raise DataError(path, None, f"exists and is not a file `lead {command}` wrote; give a new "
                                "path, or remove it first")


def remove_stale_temporaries(path: Path) -> None:
    """Remove what killed writers of `path` left: temporaries and set-aside old folders of
    processes that no longer run (gigabytes per shard at MS MARCO scale)."""
    if not path.parent.is_dir():
        return
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*-*"):
        kind, _, pid = sibling.name.removeprefix(f".{path.name}.").partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or _running(int(pid)):
            continue
        if kind == "old" and not path.exists():
            os.replace(sibling, path)  # killed between the two renames: the old one is back
            continue
        _remove(sibling)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is about to write it again
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def parquet_writer(
    path: str | Path, schema: pa.Schema, prov: Mapping[str, Any] | None = None
) -> Iterator[pq.ParquetWriter]:
    """A streaming parquet writer (one row group per `write_table`) that lands atomically."""
    with atomic_path(path, directory=False) as tmp:
        writer = pq.ParquetWriter(tmp, _with_provenance(schema, prov), compression="zstd")
        try:
            yield writer
        finally:
            writer.close()


def write_table(table: pa.Table, path: str | Path, prov: Mapping[str, Any] | None = None) -> None:
    """Write a whole table atomically, with provenance in the schema metadata."""
    with parquet_writer(path, table.schema, prov) as writer:
        writer.write_table(table)


def read_provenance(path: str | Path) -> dict:
    meta = open_parquet(path).schema_arrow.metadata or {}
    raw = meta.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def check_schema(path: str | Path, actual: pa.Schema, expected: pa.Schema) -> None:
    """Fail with the file and column named if `actual` lacks a column of `expected`."""
    for field in expected:
        index = actual.get_field_index(field.name)
        if index < 0:
            raise DataError(
                path, f"column {field.name!r}", f"missing; expected columns {expected.names}"
            )
        if not actual.field(index).type.equals(field.type):
            raise DataError(
                path,
                f"column {field.name!r}",
                f"has type {actual.field(index).type}, expected {field.type}",
            )


def open_parquet(path: str | Path, schema: pa.Schema | None = None) -> pq.ParquetFile:
    """Open a parquet artifact for streaming; a missing or non-parquet file names the path."""
    path = input_file(path)
    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(path, None, f"not a parquet file: {err}") from err
    if schema is not None:
        check_schema(path, file.schema_arrow, schema)
    return file


def read_table(path: str | Path, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet artifact, checking it has the columns and types of `schema`."""
    return open_parquet(path, schema).read(columns=columns or schema.names)


def iter_batches(
    path: str | Path, schema: pa.Schema, batch_size: int = 65536, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a parquet artifact in record batches (memory independent of file size)."""
    file = open_parquet(path, schema)
    yield from file.iter_batches(batch_size=batch_size, columns=columns or schema.names)
