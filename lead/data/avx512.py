"""AVX-512 steps of the BM25 kernel (`lead.data.bm25`), 16 postings or candidates at a time.

The scalar kernel spends its time on one posting at a time: a load, a compare and a store
per posting into the accumulator, and a branchy pass over the candidates. With AVX-512, 16
postings of one term are added by one gather and one scatter (a term's postings name 16
distinct passages, so no two lanes collide), and the new candidates are packed into the
candidate list by one compress. numba has no vector intrinsics, so these are emitted as
LLVM IR; they are only ever compiled on a CPU that has AVX-512F (`AVAILABLE`).

Each step adds in float32 exactly what the scalar code adds, in the same order, so the two
kernels give the same results to the bit (a test compares them).
"""

from __future__ import annotations

import llvmlite.binding
import llvmlite.ir as ir
import numba
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16

AVAILABLE = ("+avx512f" in llvmlite.binding.get_host_cpu_features().flatten().split(",")
             and numba.config.CPU_NAME in (None, "host"))
"""The CPU has AVX-512F and numba compiles for it (not for a generic `NUMBA_CPU_NAME`)."""

_f32, _i8, _i16, _i32, _i64 = (ir.FloatType(), ir.IntType(8), ir.IntType(16), ir.IntType(32),
                               ir.IntType(64))
_F32, _I32, _MASK = (ir.VectorType(_f32, LANES), ir.VectorType(_i32, LANES),
                     ir.VectorType(ir.IntType(1), LANES))
_I64_HALF, _I32_HALF, _MASK_HALF = (ir.VectorType(_i64, 8), ir.VectorType(_i32, 8),
                                    ir.VectorType(ir.IntType(1), 8))
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


def _postings_codegen(read_before):
    def codegen(context, builder, signature, args):
        acc, indices, data, p, stop, start, end, touched, found = args
        acc_type, indices_type, data_type, _, _, _, _, touched_type, _ = signature.args
        acc_base = _pointer(context, builder, acc_type, acc, ir.Constant(_i64, 0))
        ids = _load(builder, _pointer(context, builder, indices_type, indices, p), _I32)
        # The term's postings are sorted: the lanes before `stop` and below `end` are a prefix.
        valid = builder.and_(_first_lanes(builder, builder.sub(stop, p)),
                             builder.icmp_signed("<", ids, _splat(builder, builder.trunc(end, _i32),
                                                                  _I32)))
        slots = builder.sub(ids, _splat(builder, builder.trunc(start, _i32), _I32))
        weights = _load(builder, _pointer(context, builder, data_type, data, p), _F32)
        new = builder.and_(valid, builder.fcmp_ordered(">", weights, _ZEROS))
        if read_before:
            before = _gather(builder, acc_base, slots, valid)
            new = builder.and_(new, builder.fcmp_ordered("==", before, _ZEROS))
            _scatter(builder, acc_base, slots, builder.fadd(before, weights), valid)
        else:
            _scatter(builder, acc_base, slots, weights, valid)
        found = _append(builder, slots, _pointer(context, builder, touched_type, touched, found),
                        new, found)
        return context.make_tuple(builder, signature.return_type,
                                  [found, builder.add(p, _popcount(builder, valid))])
    return codegen


def _postings_signature(*args):
    return types.UniTuple(types.int64, 2)(*args)


@intrinsic
def add_postings(typingctx, acc, indices, data, p, stop, start, end, touched, found):
    """For the postings from p, up to 16, before `stop` and of passages below `end`:
    acc[passage - start] += weight; the slots that were 0 (and get a positive weight) are
    appended to touched[found:]. Returns the new `found` and `p`. Reads indices and data
    at p to p+16, which must be inside the arrays."""
    return (_postings_signature(acc, indices, data, p, stop, start, end, touched, found),
            _postings_codegen(True))


@intrinsic
def put_postings(typingctx, acc, indices, data, p, stop, start, end, touched, found):
    """`add_postings` for the first term of a block, whose accumulator is all zeros: the
    weights are stored without reading it."""
    return (_postings_signature(acc, indices, data, p, stop, start, end, touched, found),
            _postings_codegen(False))


@intrinsic
def take_candidates(typingctx, acc, touched, i, found, floor, start, keys, kept):
    """For the candidates touched[i:min(i+16, found)]: append the keys of those whose
    score's bits are at least `floor` to keys[kept:] and reset their accumulator slots to 0;
    returns the new `kept`. A key is (score bits << 32 | ~(start + slot)), as in the scalar
    kernel."""

    def codegen(context, builder, signature, args):
        acc, touched, i, found, floor, start, keys, kept = args
        acc_type, touched_type, _, _, _, _, keys_type, _ = signature.args
        acc_base = _pointer(context, builder, acc_type, acc, ir.Constant(_i64, 0))
        valid = _first_lanes(builder, builder.sub(found, i))
        slots = _load(builder, _pointer(context, builder, touched_type, touched, i), _I32)
        scores = builder.bitcast(_gather(builder, acc_base, slots, valid), _I32)
        _scatter(builder, acc_base, slots, _ZEROS, valid)
        keep = builder.and_(valid, builder.icmp_unsigned(">=", scores, _splat(builder, floor,
                                                                                 _I32)))
        ones = ir.Constant(_I64_HALF, [0xFFFFFFFF] * 8)
        first = _splat(builder, start, _I64_HALF)
        for half in range(2):
            lanes = ir.Constant(_I32_HALF, list(range(8 * half, 8 * half + 8)))
            score = builder.zext(builder.shuffle_vector(scores, scores, lanes), _I64_HALF)
            slot = builder.zext(builder.shuffle_vector(slots, slots, lanes), _I64_HALF)
            key = builder.or_(builder.shl(score, ir.Constant(_I64_HALF, [32] * 8)),
                              builder.sub(ones, builder.add(first, slot)))
            mask = builder.shuffle_vector(keep, keep, lanes)
            kept = _append(builder, key, _pointer(context, builder, keys_type, keys, kept),
                           mask, kept)
        return kept

    return types.int64(acc, touched, i, found, floor, start, keys, kept), codegen
