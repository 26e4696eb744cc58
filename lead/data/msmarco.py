"""MS MARCO passage and document ranking, with the TREC Deep Learning 2019/2020 judgments.

Everything is downloaded (resumably) into the cache folder, and the collections are
converted in a single streaming pass, so memory does not depend on the corpus size.

Encoding: MS MARCO's collection.tsv holds passages whose UTF-8 bytes were once decoded as
latin-1 and re-encoded ("cafÃ©" for "café"). With `repair_encoding` (the default), each
text that carries such a marker has every run of latin-1-range characters re-encoded as
latin-1 and decoded as UTF-8 where that round-trip succeeds; other text is left untouched.

Recorded checksums: the MD5 sums below are those the ir_datasets project verifies for these
exact files (Anserini documents the same one for collectionandqueries.tar.gz); the one of
msmarco-docs.tsv.gz (7.9 GB) is published in the docTTTTTquery README. Nothing is recorded
for RocketQA's marco.tar.gz: like any archive without a record, it is accepted only once its
own integrity is checked (`lead.data.download`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import pyarrow as pa
import pyarrow.compute as pc

from lead.data.checks import Checks
from lead.data.corpus import CorpusBatch, tsv_corpus, write_corpus
from lead.data.download import Remote, download, extract
from lead.data.readers import read_qrels, read_queries
from lead.data.splits import Split, write_splits
from lead.data.tsv import Batch, iter_tsv
from lead.errors import DataError
from lead.io import provenance

log = logging.getLogger(__name__)

RECORDS = {
    remote.name: remote
    for remote in [
        Remote("collectionandqueries.tar.gz", md5="31644046b18952c1386cd4564ba2ae69"),
        Remote("msmarco-test2019-queries.tsv.gz", md5="eda71eccbe4d251af83150abe065368c"),
        Remote("msmarco-test2020-queries.tsv.gz", md5="00a406fb0d14ed3752d70d1e4eb98600"),
        Remote("2019qrels-pass.txt", md5="2f4be390198da108f6845c822e5ada14"),
        Remote("2020qrels-pass.txt", md5="0355ccee7509ac0463e8278186cdd8d1"),
        Remote("msmarco-docs.tsv.gz", md5="103b19e21ad324d8a5f1ab562425c0b4"),
        Remote("msmarco-doctrain-queries.tsv.gz", md5="4086d31a9cf2d7b69c4932609058111d"),
        Remote("msmarco-doctrain-qrels.tsv.gz", md5="9d1609e240113b0504fd2e61cb36d924"),
        Remote("msmarco-docdev-queries.tsv.gz", md5="ac20593d71b9c32ab2633230f9cdf10d"),
        Remote("msmarco-docdev-qrels.tsv.gz", md5="5eeafaeb4960979a62e7fed93273254e"),
        Remote("2019qrels-docs.txt", md5="d7ef53b995ef7e01676ea85d7ec01dda"),
        Remote("2020qrels-docs.txt", md5="e10f3545583b124a4ed5e7992293e15a"),
        Remote("marco.tar.gz"),
    ]
}
TREC_YEARS = {"dl19": "2019", "dl20": "2020"}


def convert_collection(
    tsv_path: str | Path,
    out_path: str | Path,
    *,
    titles: str | Path | None = None,
    repair_encoding: bool = True,
    strict: bool = True,
    prov: Mapping[str, Any] | None = None,
) -> int:
    """Convert `pid<TAB>passage` lines to CORPUS parquet, streaming; returns the row count.

    `titles` is a `pid<TAB>title` file listing the same pids in the same order (RocketQA's
    para.title.txt next to para.txt).
    """
    checks = Checks(strict)
    if prov is None:
        prov = provenance("msmarco-collection", {"repair_encoding": repair_encoding,
                                                 "titled": titles is not None})
    titles = Path(titles) if titles is not None else None
    count = write_corpus(
        _collection_batches(Path(tsv_path), titles, repair_encoding, checks),
        out_path,
        source=tsv_path,
        checks=checks,
        repair_encoding=repair_encoding,
        prov=prov,
    )
    checks.log_summary()
    return count


def _collection_batches(
    path: Path, titles: Path | None, repair: bool, checks: Checks
) -> Iterator[CorpusBatch]:
    if titles is None:
        yield from tsv_corpus(path, ("doc_id", "text"), repair_encoding=repair, checks=checks)
        return
    title_rows = _Rows(iter_tsv(titles, 2, repair_encoding=repair, checks=checks))
    for batch in iter_tsv(path, 2, repair_encoding=repair, checks=checks):
        ids, texts = batch.columns
        aligned = title_rows.take(len(ids))
        if aligned.num_rows < len(ids):
            raise DataError(titles, None, f"has fewer lines than {path}")
        title_ids = aligned["id"].combine_chunks()
        mismatch = pc.indices_nonzero(pc.not_equal(title_ids, ids))
        if len(mismatch):
            row = mismatch[0].as_py()
            raise DataError(
                titles,
                aligned["line"][row].as_py(),
                f"id {title_ids[row].as_py()!r} where line {batch.first_line + row} of {path} "
                f"has {ids[row].as_py()!r}: both files must list the same ids in the same order",
            )
        yield CorpusBatch(batch.lines, ids, aligned["value"].combine_chunks(), texts)
    extra = title_rows.take(1)
    if extra.num_rows:
        raise DataError(titles, extra["line"][0].as_py(), f"has more lines than {path}")


class _Rows:
    """Re-cuts a stream of two-column batches into pieces of exactly the requested length."""

    def __init__(self, batches: Iterator[Batch]):
        self._batches = batches
        self._buffer = _ROWS.empty_table()

    def take(self, count: int) -> pa.Table:
        """The next `count` rows (fewer at the end of the file): id, value, line."""
        parts = [self._buffer]
        have = self._buffer.num_rows
        while have < count and (batch := next(self._batches, None)) is not None:
            ids, values = batch.columns
            parts.append(pa.Table.from_arrays([ids, values, pa.array(batch.lines)], schema=_ROWS))
            have += len(ids)
        table = pa.concat_tables(parts)
        self._buffer = table.slice(count)
        return table.slice(0, count)


_ROWS = pa.schema([("id", pa.string()), ("value", pa.string()), ("line", pa.int64())])


def _fetch(url: str, folder: Path, ms: Mapping[str, Any]) -> Path:
    """Download `url` into `folder` under its file name, verified against its record (the
    config's `checksums` first, then RECORDS) if asked. A file already there and verified is
    not fetched again (lead.data.download), so after the `download` stage this needs no
    network."""
    name = Path(urlparse(url).path).name
    record = Remote(name)
    if ms["verify_checksums"]:
        given = ms["checksums"].get(name)
        record = Remote(name, md5=given) if given else RECORDS.get(name, record)
    return download(url, folder / name, size=record.size, md5=record.md5, sha256=record.sha256,
                    retries=ms["retries"])


def remotes(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(url, path under the download cache) of every file a source downloads."""
    ms, source = settings["msmarco"], settings["source"]
    base, trec = ms["base_url"], ms["trec_url"]
    if source == "msmarco-passage":
        names = [(base, "collectionandqueries.tar.gz")]
        names += [(base, f"msmarco-test{year}-queries.tsv.gz") for year in TREC_YEARS.values()]
        names += [(trec, f"{year}qrels-pass.txt") for year in TREC_YEARS.values()]
        urls = [(_url(where, name), name) for where, name in names]
        if ms["titled"]:
            urls.append((ms["rocketqa_url"], Path(urlparse(ms["rocketqa_url"]).path).name))
    else:
        names = [(base, name) for name in (
            "msmarco-docs.tsv.gz", "msmarco-doctrain-queries.tsv.gz",
            "msmarco-doctrain-qrels.tsv.gz", "msmarco-docdev-queries.tsv.gz",
            "msmarco-docdev-qrels.tsv.gz")]
        names += [(base, f"msmarco-test{year}-queries.tsv.gz") for year in TREC_YEARS.values()]
        names += [(trec, f"{year}qrels-docs.txt") for year in TREC_YEARS.values()]
        urls = [(_url(where, name), name) for where, name in names]
    return [(url, f"{source}/{name}") for url, name in urls]


def download_all(settings: Mapping[str, Any], cache_dir: Path) -> list[Path]:
    """The `download` stage: every file of the source, fetched and verified into the cache."""
    return [_fetch(url, cache_dir / Path(path).parent, settings["msmarco"])
            for url, path in remotes(settings)]


def _url(base: str, name: str) -> str:
    return urljoin(base if base.endswith("/") else base + "/", name)


def _find(folder: Path, name: str) -> Path:
    """A file extracted from an archive, wherever the archive put it."""
    matches = sorted(folder.rglob(name))
    if not matches:
        raise DataError(folder, None, f"the extracted archive has no file named {name!r}")
    return matches[0]


def _split(name: str, queries: Path, qrels: Path, fmt: str, checks: Checks, repair: bool) -> Split:
    return Split(
        name,
        read_queries(queries, checks, repair_encoding=repair),
        read_qrels(qrels, fmt, checks),
        queries,
        qrels,
    )


def build_passage(
    settings: Mapping[str, Any], out_dir: Path, cache_dir: Path, checks: Checks
) -> dict[str, int]:
    """msmarco-passage: splits train, dev (held out from train), dev-small, dl19, dl20."""
    ms = settings["msmarco"]
    repair = ms["repair_encoding"]
    root = cache_dir / "msmarco-passage"
    unpacked = extract(
        _fetch(_url(ms["base_url"], "collectionandqueries.tar.gz"), root, ms),
        root / "collectionandqueries",
    )
    if ms["titled"]:
        rocketqa = extract(_fetch(ms["rocketqa_url"], root, ms), root / "rocketqa-marco")
        texts, titles = _find(rocketqa, "para.txt"), _find(rocketqa, "para.title.txt")
    else:
        texts, titles = _find(unpacked, "collection.tsv"), None
    corpus_path = out_dir / "corpus.parquet"
    prov = provenance(settings["source"], settings)
    write_corpus(_collection_batches(texts, titles, repair, checks), corpus_path, source=texts,
                 checks=checks, repair_encoding=repair, prov=prov)
    splits = [
        _split("train", _find(unpacked, "queries.train.tsv"), _find(unpacked, "qrels.train.tsv"),
               "msmarco", checks, repair),
        _split("dev-small", _find(unpacked, "queries.dev.small.tsv"),
               _find(unpacked, "qrels.dev.small.tsv"), "msmarco", checks, repair),
    ]
    for split, year in TREC_YEARS.items():
        queries = _fetch(_url(ms["base_url"], f"msmarco-test{year}-queries.tsv.gz"), root, ms)
        qrels = _fetch(_url(ms["trec_url"], f"{year}qrels-pass.txt"), root, ms)
        splits.append(_split(split, queries, qrels, "trec", checks, repair))
    return write_splits(splits, out_dir, corpus_path=corpus_path, corpus_source=texts,
                        checks=checks, settings=settings, prov=prov)


def build_document(
    settings: Mapping[str, Any], out_dir: Path, cache_dir: Path, checks: Checks
) -> dict[str, int]:
    """msmarco-document: splits train, dev (held out from train), dev-docs, dl19, dl20."""
    ms = settings["msmarco"]
    repair = ms["repair_encoding"]
    root = cache_dir / "msmarco-document"
    docs = _fetch(_url(ms["base_url"], "msmarco-docs.tsv.gz"), root, ms)
    corpus_path = out_dir / "corpus.parquet"
    prov = provenance(settings["source"], settings)
    write_corpus(
        tsv_corpus(docs, ("doc_id", "url", "title", "text"), repair_encoding=repair,
                   checks=checks),
        corpus_path, source=docs, checks=checks, repair_encoding=repair, prov=prov,
    )

    def fetched(name: str, base: str = ms["base_url"]) -> Path:
        return _fetch(_url(base, name), root, ms)

    # The document qrels are blank-separated ("qid 0 docid 1"), as TREC's.
    splits = [
        _split("train", fetched("msmarco-doctrain-queries.tsv.gz"),
               fetched("msmarco-doctrain-qrels.tsv.gz"), "trec", checks, repair),
        _split("dev-docs", fetched("msmarco-docdev-queries.tsv.gz"),
               fetched("msmarco-docdev-qrels.tsv.gz"), "trec", checks, repair),
    ]
    for split, year in TREC_YEARS.items():
        splits.append(_split(split, fetched(f"msmarco-test{year}-queries.tsv.gz"),
                             fetched(f"{year}qrels-docs.txt", ms["trec_url"]), "trec", checks,
                             repair))
    return write_splits(splits, out_dir, corpus_path=corpus_path, corpus_source=docs,
                        checks=checks, settings=settings, prov=prov)
