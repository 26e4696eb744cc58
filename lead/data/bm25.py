"""BM25 retrieval for hard-negative mining: a bm25s index, searched in batches on threads.

bm25s scores one query at a time into a dense array over the whole corpus, then selects the
best over it: O(corpus) work per query, hours for MS MARCO's 502,939 training queries on
8.8M passages. Here a query touches only the passages that share a term with it: the
postings of its terms are added into a small accumulator one block of passages at a time
(so that it stays in cache), and the best `k` are kept behind a running threshold. Chunks of
queries run in compiled code (numba) on threads, without the GIL.

On a CPU with AVX-512 the inner loops take 16 at a time (the steps at the end of this
module): 16 postings of a term are added by one gather and one scatter (a term's postings
name distinct passages, so no two lanes collide), new candidates are packed into the
candidate list by one compress, and the candidate pass gathers 16 scores and packs their
keys. numba has no vector intrinsics, so the steps are emitted as LLVM IR, and they are
only ever compiled where the CPU has AVX-512F. They live in this file because numba's cache
is invalidated by the file of the function it caches, not by those the function calls.

The results are bm25s's to the bit: a passage's contributions are added in float32 in the
query's token order (a repeated token counts twice), as bm25s adds them; ties are broken by
corpus order (score descending, then index ascending); a passage that shares no term with
the query (score 0) is never retrieved. Each query is computed on its own, so the results do
not depend on the number of threads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llvmlite.binding
import llvmlite.ir as ir
import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from lead import schemas
from lead.io import iter_batches

STOPWORDS = "en"
BLOCK = 1 << 13  # passages per accumulator block: 32 KB of float32, inside L1
CHUNK = 256  # queries per task
LANES = 16  # float32 lanes of an AVX-512 register
AHEAD = 256  # postings prefetched ahead of those added: the walk waits on memory otherwise
AVX512 = ("+avx512f" in llvmlite.binding.get_host_cpu_features().flatten().split(",")
          and numba.config.CPU_NAME in (None, "host"))  # and numba compiles for this CPU


@dataclass(frozen=True)
class Index:
    """A bm25s index of a corpus's `title text`, and the doc ids in index order."""

    tokenizer: Any  # bm25s.tokenization.Tokenizer
    retriever: Any  # bm25s.BM25
    doc_ids: np.ndarray  # object array of str

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text; words the corpus does not have are left out."""
        return self.tokenizer.tokenize(texts, update_vocab=False, return_as="ids",
                                       show_progress=False, allow_empty=False)


def build_index(corpus: str | Path, k1: float, b: float) -> Index:
    """Index a CORPUS parquet with bm25s (Lucene's BM25, English stop words, no stemmer)."""
    import bm25s
    from bm25s.tokenization import Tokenizer

    # No stemmer: PyStemmer is not a dependency, and scores must not depend on what else is
    # installed.
    tokenizer = Tokenizer(lower=True, stopwords=STOPWORDS, stemmer=None)
    doc_ids: list[pa.Array] = []
    token_ids: list[list[int]] = []
    for batch in iter_batches(corpus, schemas.CORPUS):
        titles = pc.fill_null(batch.column("title"), "")
        texts = pc.binary_join_element_wise(titles, pc.fill_null(batch.column("text"), ""), " ")
        token_ids.extend(tokenizer.tokenize(
            texts.to_pylist(), update_vocab=True, return_as="ids", show_progress=False,
            allow_empty=False,
        ))
        doc_ids.append(batch.column("doc_id"))
    retriever = bm25s.BM25(k1=k1, b=b)  # method "lucene": no score for absent terms
    retriever.index((token_ids, tokenizer.get_vocab_dict()), create_empty_token=False,
                    show_progress=False)
    ids = pa.chunked_array(doc_ids, pa.string()).to_numpy(zero_copy_only=False)
    return Index(tokenizer, retriever, ids)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def top_k(
    index: Index, queries: Sequence[Sequence[int]], k: int, threads: int | None = None,
    vector: bool = AVX512,
) -> Iterator[np.ndarray]:
    """For each query (token ids), in order: the corpus indices of its `k` best passages,
    best first (fewer when fewer passages share a term with it).

    `threads` (default: every available core) run chunks of queries in parallel; at most two
    chunks per thread are held at once, so memory does not grow with the number of queries.
    `vector` takes the AVX-512 kernel (the default where the CPU has it); the results are
    the same either way.
    """
    threads = threads or available_cores()
    scores = index.retriever.scores
    postings = (np.ascontiguousarray(scores["indptr"], np.int64),
                np.ascontiguousarray(scores["indices"], np.int32),
                np.ascontiguousarray(scores["data"], np.float32), int(scores["num_docs"]))

    def run(chunk: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return _top_k_chunk(postings, chunk, k, vector)

    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Future] = deque()
        for start in range(0, len(queries), CHUNK):
            pending.append(pool.submit(run, queries[start : start + CHUNK]))
            if len(pending) >= 2 * threads:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _top_k_chunk(
    postings: tuple[np.ndarray, np.ndarray, np.ndarray, int], queries: Sequence[Sequence[int]],
    k: int, vector: bool,
) -> list[np.ndarray]:
    offsets = np.zeros(len(queries) + 1, np.int64)
    offsets[1:] = np.cumsum([len(query) for query in queries])
    tokens = np.fromiter((t for query in queries for t in query), np.int64, int(offsets[-1]))
    best = np.empty((len(queries), k), np.int32)
    counts = np.empty(len(queries), np.int64)
    longest = max(1, int(np.diff(offsets).max(initial=0)))
    search = _search_avx512 if vector else _search_scalar
    search(*postings, offsets, tokens, k, BLOCK, np.zeros(BLOCK, np.float32),
           np.empty(BLOCK + LANES, np.int32), np.empty(longest, np.int64),
           np.empty(max(4 * k, 64) + LANES, np.uint64), best, counts)
    return [best[i, : counts[i]] for i in range(len(queries))]


_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(nogil=True, cache=True)
def _cut(keys, kept, k):
    """Keep the `k` best of keys[:kept] at its front; returns `k` and the new threshold."""
    keys[:k] = np.partition(keys[:kept], kept - k)[kept - k :]
    return k, keys[:k].min()


def _kernel(vector: bool):
    """The kernel of `top_k` for one chunk of queries (see the module doc), with its inner
    loops 16 lanes wide (`vector`, AVX-512) or one posting at a time.

    A passage's rank is the key (float32 bits of its score << 32 | ~index): positive floats
    order as their bits do, so the largest key is the best passage and ties go to the lower
    index. Keys above the running threshold are buffered; a full buffer is cut back to its
    `k` best, which raises the threshold. The vector steps buffer every key whose score is
    at least the threshold's (a few more than needed, never fewer).
    """

    @numba.njit(nogil=True, cache=True)
    def search(indptr, indices, data, num_docs, offsets, tokens, k, block, acc, touched, cursor,
               keys, best, counts):
        capacity = len(keys) - LANES
        size = len(indices)
        bits = acc.view(np.uint32)
        for q in range(len(offsets) - 1):
            first, last = offsets[q], offsets[q + 1]
            for j in range(first, last):
                cursor[j - first] = indptr[tokens[j]]
            kept = 0
            threshold = np.uint64(0)
            for start in range(0, num_docs, block):
                end = start + block
                found = 0
                for j in range(first, last):  # token order: bm25s's order of additions
                    p, stop = cursor[j - first], indptr[tokens[j] + 1]
                    if vector:
                        # 16 at a time while 16 can be read; the scalar loop below takes the
                        # rest at the end of the arrays. Full vectors advance p by 16, apart
                        # from the lanes' work, so that the next loads need not wait for it;
                        # a masked one takes the block's last few postings.
                        if j == last - 1:  # its additions complete the scores: keys now
                            floor = np.uint32(threshold >> np.uint64(32))
                            while p + LANES <= stop and indices[p + LANES - 1] < end:
                                kept, _ = _final_postings(acc, indices, data, p, stop, start,
                                                          end, floor, keys, kept)
                                p += LANES
                                if kept >= capacity:
                                    kept, threshold = _cut(keys, kept, k)
                                    floor = np.uint32(threshold >> np.uint64(32))
                            if p < stop and indices[p] < end and p + LANES <= size:
                                kept, p = _final_postings(acc, indices, data, p, stop, start,
                                                          end, floor, keys, kept)
                                if kept >= capacity:
                                    kept, threshold = _cut(keys, kept, k)
                        else:
                            if j == first:  # the block's accumulator is all zeros yet
                                while p + LANES <= stop and indices[p + LANES - 1] < end:
                                    found, _ = _put_postings(acc, indices, data, p, stop,
                                                             start, end, touched, found)
                                    p += LANES
                            while p + LANES <= stop and indices[p + LANES - 1] < end:
                                found, _ = _add_postings(acc, indices, data, p, stop, start,
                                                         end, touched, found)
                                p += LANES
                            if p < stop and indices[p] < end and p + LANES <= size:
                                found, p = _add_postings(acc, indices, data, p, stop, start,
                                                         end, touched, found)
                    while p < stop and indices[p] < end:
                        slot = indices[p] - start
                        before = acc[slot]
                        touched[found] = slot
                        found += (before == 0) & (data[p] > 0)
                        acc[slot] = before + data[p]
                        p += 1
                    cursor[j - first] = p
                i = 0
                if vector:
                    while i < found:
                        kept = _take_candidates(acc, touched, i, found,
                                                np.uint32(threshold >> np.uint64(32)), start,
                                                keys, kept)
                        i += LANES
                        if kept >= capacity:
                            kept, threshold = _cut(keys, kept, k)
                while i < found:
                    slot = touched[i]
                    key = ((np.uint64(bits[slot]) << np.uint64(32))
                           | (_LOW32 - np.uint64(start + slot)))
                    acc[slot] = 0
                    if key > threshold:
                        keys[kept] = key
                        kept += 1
                        if kept >= capacity:
                            kept, threshold = _cut(keys, kept, k)
                    i += 1
            if kept > k:
                kept, threshold = _cut(keys, kept, k)
            ranked = np.sort(keys[:kept])[::-1]
            for i in range(len(ranked)):
                best[q, i] = np.int64(_LOW32 - (ranked[i] & _LOW32))
            counts[q] = len(ranked)

    return search


# Compiled on first use, and the vector one only where the CPU has AVX-512.
_search_scalar = _kernel(vector=False)
_search_avx512 = _kernel(vector=True)


# The AVX-512 steps of the vector kernel. Each adds in float32 exactly what the scalar loop
# adds, in the same order, so both kernels give the same results to the bit (a test compares
# them).

_f32, _i32, _i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
_F32, _I32, _MASK = (ir.VectorType(_f32, LANES), ir.VectorType(_i32, LANES),
                     ir.VectorType(ir.IntType(1), LANES))
_I64_HALF, _I32_HALF = ir.VectorType(_i64, 8), ir.VectorType(_i32, 8)
_PTR = ir.PointerType()
_ZEROS = ir.Constant(_F32, [0.0] * LANES)


def _declare(builder, name, returns, arguments):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(returns, arguments),
                                          name)


def _pointer(context, builder, array_type, array, offset):
    """Address of array[offset]."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [offset])


def _load(builder, address, vector_type):
    return builder.load(builder.bitcast(address, ir.PointerType(vector_type)), align=4)


def _splat(builder, scalar, vector_type):
    lanes = vector_type.count
    first = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar,
                                   ir.Constant(_i32, 0))
    return builder.shuffle_vector(first, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(_i32, lanes), [0] * lanes))


def _gather(builder, base, slots, mask):
    """base[slots] in the lanes under `mask`, 0 in the others (which read no memory)."""
    gather = _declare(builder, "llvm.x86.avx512.mask.gather.dps.512", _F32,
                      [_F32, _PTR, _I32, _MASK, _i32])
    return builder.call(gather, [_ZEROS, builder.bitcast(base, _PTR), slots, mask,
                                 ir.Constant(_i32, 4)])


def _scatter(builder, base, slots, values, mask):
    scatter = _declare(builder, "llvm.x86.avx512.mask.scatter.dps.512", ir.VoidType(),
                       [_PTR, _MASK, _I32, _F32, _i32])
    builder.call(scatter, [builder.bitcast(base, _PTR), mask, slots, values,
                           ir.Constant(_i32, 4)])


def _first_lanes(builder, count):
    """The mask of the lanes below `count` (an int64; all of them from 16 up)."""
    count = builder.trunc(builder.select(builder.icmp_signed("<", count, ir.Constant(_i64, LANES)),
                                         count, ir.Constant(_i64, LANES)), _i32)
    return builder.icmp_signed("<", ir.Constant(_I32, list(range(LANES))),
                               _splat(builder, count, _I32))


def _popcount(builder, mask):
    bits = ir.IntType(mask.type.count)
    popcount = _declare(builder, f"llvm.ctpop.i{bits.width}", bits, [bits])
    return builder.zext(builder.call(popcount, [builder.bitcast(mask, bits)]), _i64)


def _append(builder, values, address, mask, count):
    """Store the lanes of `values` under `mask`, packed, at `address`; return `count` plus
    their number. All lanes are written (a packed register and a plain store are much
    faster than a masked compress-store): the array needs `LANES` spare slots at its end."""
    width = values.type.count
    element = "i64" if values.type.element == _i64 else "i32"
    compress = _declare(builder, f"llvm.x86.avx512.mask.compress.v{width}{element}",
                        values.type, [values.type, values.type, mask.type])
    packed = builder.call(compress, [values, ir.Constant(values.type, ir.Undefined), mask])
    builder.store(packed, builder.bitcast(address, ir.PointerType(values.type)),
                  align=values.type.element.width // 8)
    return builder.add(count, _popcount(builder, mask))


def _prefetch(context, builder, array_types, arrays, p):
    """Prefetch arrays[p + AHEAD] into every cache level (a prefetch never faults, even past
    an array's end)."""
    prefetch = _declare(builder, "llvm.prefetch.p0", ir.VoidType(), [_PTR, _i32, _i32, _i32])
    ahead = builder.add(p, ir.Constant(_i64, AHEAD))
    for array_type, array in zip(array_types, arrays, strict=True):
        address = builder.bitcast(_pointer(context, builder, array_type, array, ahead), _PTR)
        builder.call(prefetch, [address, ir.Constant(_i32, 0), ir.Constant(_i32, 3),
                                ir.Constant(_i32, 1)])


def _postings_lanes(context, builder, signature, args):
    """The lanes of the postings at p (up to 16, before `stop`, of passages below `end`):
    the accumulator's base, the mask of valid lanes, their slots and weights; the postings
    `AHEAD` are prefetched."""
    acc, indices, data, p, stop, start, end = args[:7]
    acc_type, indices_type, data_type = signature.args[:3]
    _prefetch(context, builder, (indices_type, data_type), (indices, data), p)
    ids = _load(builder, _pointer(context, builder, indices_type, indices, p), _I32)
    # The term's postings are sorted: the lanes before `stop` and below `end` are a prefix.
    valid = builder.and_(_first_lanes(builder, builder.sub(stop, p)),
                         builder.icmp_signed("<", ids, _splat(builder, builder.trunc(end, _i32),
                                                              _I32)))
    slots = builder.sub(ids, _splat(builder, builder.trunc(start, _i32), _I32))
    weights = _load(builder, _pointer(context, builder, data_type, data, p), _F32)
    acc_base = _pointer(context, builder, acc_type, acc, ir.Constant(_i64, 0))
    return acc_base, valid, slots, weights


def _count_and_next(context, builder, signature, count, p, valid):
    """The (count, p) a postings step returns: p past the valid lanes."""
    return context.make_tuple(builder, signature.return_type,
                              [count, builder.add(p, _popcount(builder, valid))])


def _postings_codegen(read_before):
    def codegen(context, builder, signature, args):
        p, touched, found = args[3], args[7], args[8]
        acc_base, valid, slots, weights = _postings_lanes(context, builder, signature, args)
        new = builder.and_(valid, builder.fcmp_ordered(">", weights, _ZEROS))
        if read_before:
            before = _gather(builder, acc_base, slots, valid)
            new = builder.and_(new, builder.fcmp_ordered("==", before, _ZEROS))
            _scatter(builder, acc_base, slots, builder.fadd(before, weights), valid)
        else:
            _scatter(builder, acc_base, slots, weights, valid)
        found = _append(builder, slots, _pointer(context, builder, signature.args[7], touched,
                                                 found), new, found)
        return _count_and_next(context, builder, signature, found, p, valid)
    return codegen


def _postings_signature(*args):
    return types.UniTuple(types.int64, 2)(*args)


@intrinsic
def _add_postings(typingctx, acc, indices, data, p, stop, start, end, touched, found):
    """For the postings from p, up to 16, before `stop` and of passages below `end`:
    acc[passage - start] += weight; the slots that were 0 (and get a positive weight) are
    appended to touched[found:]. Returns the new `found` and `p`. Reads indices and data
    at p to p+16, which must be inside the arrays."""
    return (_postings_signature(acc, indices, data, p, stop, start, end, touched, found),
            _postings_codegen(True))


@intrinsic
def _put_postings(typingctx, acc, indices, data, p, stop, start, end, touched, found):
    """`_add_postings` for the first term of a block, whose accumulator is all zeros: the
    weights are stored without reading it."""
    return (_postings_signature(acc, indices, data, p, stop, start, end, touched, found),
            _postings_codegen(False))


def _append_keys(context, builder, keys_type, keys, kept, scores, slots, start, keep):
    """Append the keys (score bits << 32 | ~(start + slot)) of the lanes under `keep` to
    keys[kept:]; return the new `kept`."""
    ones = ir.Constant(_I64_HALF, [0xFFFFFFFF] * 8)
    first = _splat(builder, start, _I64_HALF)
    for half in range(2):
        lanes = ir.Constant(_I32_HALF, list(range(8 * half, 8 * half + 8)))
        score = builder.zext(builder.shuffle_vector(scores, scores, lanes), _I64_HALF)
        slot = builder.zext(builder.shuffle_vector(slots, slots, lanes), _I64_HALF)
        key = builder.or_(builder.shl(score, ir.Constant(_I64_HALF, [32] * 8)),
                          builder.sub(ones, builder.add(first, slot)))
        mask = builder.shuffle_vector(keep, keep, lanes)
        kept = _append(builder, key, _pointer(context, builder, keys_type, keys, kept), mask,
                       kept)
    return kept


def _at_least(builder, scores, floor):
    """The lanes whose score is positive and whose bits are at least `floor`."""
    return builder.and_(builder.icmp_unsigned("!=", scores, ir.Constant(_I32, [0] * LANES)),
                        builder.icmp_unsigned(">=", scores, _splat(builder, floor, _I32)))


@intrinsic
def _final_postings(typingctx, acc, indices, data, p, stop, start, end, floor, keys, kept):
    """`_add_postings` for the query's last token, whose additions complete the scores: the
    keys of the passages whose score's bits are at least `floor` go straight to
    keys[kept:], and their slots are reset to 0, so that `_take_candidates` skips them.
    Returns the new `kept` and `p`."""

    def codegen(context, builder, signature, args):
        p, start, floor, keys, kept = args[3], args[5], args[7], args[8], args[9]
        acc_base, valid, slots, weights = _postings_lanes(context, builder, signature, args)
        scores = builder.fadd(_gather(builder, acc_base, slots, valid), weights)
        _scatter(builder, acc_base, slots, _ZEROS, valid)
        bits = builder.bitcast(scores, _I32)
        kept = _append_keys(context, builder, signature.args[8], keys, kept, bits, slots, start,
                            builder.and_(valid, _at_least(builder, bits, floor)))
        return _count_and_next(context, builder, signature, kept, p, valid)

    return (_postings_signature(acc, indices, data, p, stop, start, end, floor, keys, kept),
            codegen)


@intrinsic
def _take_candidates(typingctx, acc, touched, i, found, floor, start, keys, kept):
    """For the candidates touched[i:min(i+16, found)]: append the keys of those whose
    score is positive and whose bits are at least `floor` to keys[kept:] and reset their
    accumulator slots to 0; returns the new `kept`. A key is (score bits << 32 |
    ~(start + slot)), as in the scalar kernel."""

    def codegen(context, builder, signature, args):
        acc, touched, i, found, floor, start, keys, kept = args
        acc_type, touched_type, _, _, _, _, keys_type, _ = signature.args
        acc_base = _pointer(context, builder, acc_type, acc, ir.Constant(_i64, 0))
        valid = _first_lanes(builder, builder.sub(found, i))
        slots = _load(builder, _pointer(context, builder, touched_type, touched, i), _I32)
        scores = builder.bitcast(_gather(builder, acc_base, slots, valid), _I32)
        _scatter(builder, acc_base, slots, _ZEROS, valid)
        keep = builder.and_(valid, _at_least(builder, scores, floor))
        return _append_keys(context, builder, keys_type, keys, kept, scores, slots, start, keep)

    return types.int64(acc, touched, i, found, floor, start, keys, kept), codegen
