"""The data stage: any configured source to corpus.parquet, queries/{split}, qrels/{split}.

Sources that are downloaded (MS MARCO) are fetched first by the `download` stage into the
download cache (`downloads`, `download`): on a cluster it runs where the internet is (a
Snakemake localrule), and the data stage then reads only verified files from the cache.

The whole output folder is built in a temporary sibling and renamed into place at the end,
so a failure (a refused line, a broken download) never leaves some splits of a new build
next to others of an old one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lead.config import resolve
from lead.data import embedded, local, msmarco
from lead.data.checks import Checks
from lead.errors import ConfigError, DataError
from lead.io import atomic_path, claim_output, config_hash
from lead.io import cache_dir as lead_cache_dir
from lead.paths import check_name

log = logging.getLogger(__name__)



DOWNLOADED = ("msmarco-passage", "msmarco-document")


def downloads(settings: Mapping[str, Any]) -> list[str]:
    """The files (paths under the download cache) a source's data stage reads; none for a
    source that is not downloaded."""
    settings = resolve("dataset", settings)
    return [path for _, path in msmarco.remotes(settings)] \
        if settings["source"] in DOWNLOADED else []


def download_folder(settings: Mapping[str, Any]) -> str:
    """Where the workflow keeps a source's downloads: resources/<source>, shared by every
    config that reads the same files, or resources/<source>-<hash> for files served elsewhere
    (another base URL or other checksums, e.g. a rehearsal): one server's files never stand in
    for another's."""
    settings = resolve("dataset", settings)
    source = settings["source"]
    if source not in DOWNLOADED:
        return f"resources/{source}"
    keys = ("base_url", "trec_url", "rocketqa_url", "checksums")
    own = {key: settings["msmarco"][key] for key in keys}
    default = resolve("dataset", {"source": source})["msmarco"]
    if own == {key: default[key] for key in keys}:
        return f"resources/{source}"
    return f"resources/{source}-{config_hash(own)[:8]}"


def download(settings: Mapping[str, Any], cache_dir: str | Path | None = None) -> list[Path]:
    """Fetch and verify every file of a downloaded source into the cache."""
    settings = resolve("dataset", settings)
    if settings["source"] not in DOWNLOADED:
        raise ConfigError(f"dataset source {settings['source']!r} is not downloaded "
                          f"(only {', '.join(DOWNLOADED)} are)")
    return msmarco.download_all(settings, _cache_folder(cache_dir))


def build_dataset(
    settings: Mapping[str, Any], out_dir: str | Path, cache_dir: str | Path | None = None
) -> None:
    """Build the dataset described by the `dataset` config section into `out_dir`."""
    settings = resolve("dataset", settings)
    out_dir = Path(out_dir)
    _check_split_names(settings)
    claim_output(out_dir, "data", folder=True)
    checks = Checks(settings["strict"])
    source = settings["source"]
    if source in DOWNLOADED:
        cache_dir = _cache_folder(cache_dir)
    with atomic_path(out_dir, directory=True, made_by="data") as tmp:
        tmp.mkdir()
        if source == "embedded":
            embedded.build(settings, tmp)
        elif source == "msmarco-passage":
            msmarco.build_passage(settings, tmp, cache_dir, checks)
        elif source == "msmarco-document":
            msmarco.build_document(settings, tmp, cache_dir, checks)
        elif source == "beir":
            local.build_beir(settings, tmp, checks)
        else:
            local.build_files(settings, tmp, checks)
        _check_eval_splits(tmp, settings)
    checks.log_summary()


def _cache_folder(cache_dir: str | Path | None) -> Path:
    """The download cache (--cache, else $LEAD_CACHE, else ~/.cache/lead), refused in one
    line when a file stands where it or a folder above it would be."""
    path = Path(cache_dir) if cache_dir is not None else lead_cache_dir()
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataError(ancestor, None, f"is a file, so the download cache {path} cannot be a "
                                        "folder there: give --cache (or $LEAD_CACHE) a folder")
    return path


def _check_split_names(settings: Mapping[str, Any]) -> None:
    """Split names become file names: refused here, before anything is built, as the plan
    refuses them (the schema's pattern lets a trailing newline through)."""
    named = {"eval_splits": settings["eval_splits"]}
    if settings["source"] == "beir":
        named["beir.splits"] = settings["beir"]["splits"]
    elif settings["source"] in ("trec", "tsv"):
        named["local.queries"] = settings["local"]["queries"]
        named["local.qrels"] = settings["local"]["qrels"]
    for key, names in named.items():
        for name in names:
            check_name(name, f"config key dataset.{key}")


def _check_eval_splits(out_dir: Path, settings: Mapping[str, Any]) -> None:
    built = sorted(p.stem for p in (out_dir / "qrels").glob("*.parquet"))
    missing = [split for split in settings["eval_splits"] if split not in built]
    if missing:
        raise ConfigError(
            f"config key dataset.eval_splits names {missing}, which source "
            f"{settings['source']!r} does not produce (it produces {built})"
        )
