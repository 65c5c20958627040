"""SIMD vectors for numba: a native-width vector type and the few intrinsics the kernels use.

LLVM's auto-vectorizers decide for themselves which loops become vector code; the GEMM
micro-kernel and the FMA probe must not depend on that, so they are written with explicit
vectors: one value of ``Vec`` is one register (512 bits on AVX-512 hosts, else 256 bits).
"""

from __future__ import annotations

from typing import Any

from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from kernels import _jit  # noqa: F401  (policy first)


def _host_vector_bytes() -> int:
    feats = llvm_binding.get_host_cpu_features()
    return 64 if feats.get("avx512f", False) else 32


VECTOR_BYTES = _host_vector_bytes()


def lanes(itemsize: int) -> int:
    return VECTOR_BYTES // itemsize


class Vec(types.Type):  # type: ignore[misc]
    def __init__(self, dtype: Any, nlanes: int) -> None:
        self.dtype = dtype
        self.lanes = nlanes
        super().__init__(name=f"Vec({dtype}x{nlanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):  # type: ignore[misc]
    def __init__(self, dmm: Any, fe_type: Vec) -> None:
        scalar = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(scalar, fe_type.lanes))


def _vec_of(arrty: Any) -> Vec:
    return Vec(arrty.dtype, VECTOR_BYTES // (arrty.dtype.bitwidth // 8))


def _elem_ptr(context: Any, builder: Any, arrty: Any, arr: Any, idx: Any) -> Any:
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [idx])


def _i32(v: int) -> ir.Constant:
    return ir.Constant(ir.IntType(32), v)


@intrinsic
def vload(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Unaligned load of one vector from a 1-D contiguous array at element ``idx``."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        p = builder.bitcast(p, context.get_value_type(vt).as_pointer())
        return builder.load(p, align=arr.dtype.bitwidth // 8)

    return vt(arr, idx), codegen


@intrinsic
def vstore(typingctx: Any, arr: Any, idx: Any, v: Any) -> Any:
    """Unaligned store of vector ``v`` into a 1-D contiguous array at element ``idx``."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        p = builder.bitcast(p, context.get_value_type(sig.args[2]).as_pointer())
        builder.store(args[2], p, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def vbcast(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Broadcast ``arr[idx]`` to every lane."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        x = builder.load(_elem_ptr(context, builder, sig.args[0], args[0], args[1]))
        ll = context.get_value_type(vt)
        v = builder.insert_element(ir.Constant(ll, ir.Undefined), x, _i32(0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(v, v, mask)

    return vt(arr, idx), codegen


@intrinsic
def prefetch(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Prefetch the cache line holding ``arr[idx]`` for writing (llvm.prefetch)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(p, i8p), _i32(1), _i32(3), _i32(1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen


@intrinsic
def vlanes(typingctx: Any, arr: Any) -> Any:
    """Lanes per vector for ``arr``'s dtype, as a compile-time constant."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(ir.IntType(64), vt.lanes)

    return types.int64(arr), codegen


@intrinsic
def vzero(typingctx: Any, arr: Any) -> Any:
    """A zero vector of ``arr``'s dtype."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def vfma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` with one rounding (llvm.fma)."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        vt = sig.args[0]
        ll = context.get_value_type(vt)
        name = f"llvm.fma.v{vt.lanes}f{vt.dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ll, [ll] * 3), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx: Any, a: Any, b: Any) -> Any:
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vsub(typingctx: Any, a: Any, b: Any) -> Any:
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fsub(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vmul(typingctx: Any, a: Any, b: Any) -> Any:
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fmul(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vfnma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``c - a * b`` with one rounding."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        vt = sig.args[0]
        ll = context.get_value_type(vt)
        name = f"llvm.fma.v{vt.lanes}f{vt.dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ll, [ll] * 3), name)
        return builder.call(fn, [builder.fneg(args[0]), args[1], args[2]])

    return a(a, b, c), codegen


@intrinsic
def vsplat(typingctx: Any, arr: Any, x: Any) -> Any:
    """``x`` (a scalar) in every lane of a vector of ``arr``'s dtype."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ll = context.get_value_type(vt)
        xv = context.cast(builder, args[1], sig.args[1], vt.dtype)
        v = builder.insert_element(ir.Constant(ll, ir.Undefined), xv, _i32(0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(v, v, mask)

    return vt(arr, x), codegen


def _halves(context: Any, builder: Any, arrty: Any, arr: Any, idx: Any, vt: Vec) -> Any:
    ll = context.get_value_type(vt)
    p0 = _elem_ptr(context, builder, arrty, arr, idx)
    p1 = builder.gep(p0, [ir.Constant(ir.IntType(64), vt.lanes)])
    align = vt.dtype.bitwidth // 8
    v0 = builder.load(builder.bitcast(p0, ll.as_pointer()), align=align)
    v1 = builder.load(builder.bitcast(p1, ll.as_pointer()), align=align)
    return v0, v1


@intrinsic
def vload_even(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Elements idx, idx+2, ... (the real parts of interleaved complex data), one vector."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        v0, v1 = _halves(context, builder, sig.args[0], args[0], args[1], vt)
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), list(range(0, 2 * vt.lanes, 2)))
        return builder.shuffle_vector(v0, v1, mask)

    return vt(arr, idx), codegen


@intrinsic
def vload_odd(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Elements idx+1, idx+3, ... (the imaginary parts of interleaved complex data)."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        v0, v1 = _halves(context, builder, sig.args[0], args[0], args[1], vt)
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), list(range(1, 2 * vt.lanes, 2)))
        return builder.shuffle_vector(v0, v1, mask)

    return vt(arr, idx), codegen


def _store_interleaved(context: Any, builder: Any, sig: Any, args: Any, nt: bool) -> Any:
    vt = sig.args[2]
    w = vt.lanes
    ll = context.get_value_type(vt)
    mty = ir.VectorType(ir.IntType(32), w)
    lo = [x for i in range(w // 2) for x in (i, w + i)]
    hi = [x for i in range(w // 2, w) for x in (i, w + i)]
    p0 = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
    p1 = builder.gep(p0, [ir.Constant(ir.IntType(64), w)])
    align = VECTOR_BYTES if nt else vt.dtype.bitwidth // 8
    v_lo = builder.shuffle_vector(args[2], args[3], ir.Constant(mty, lo))
    v_hi = builder.shuffle_vector(args[2], args[3], ir.Constant(mty, hi))
    for v, p in ((v_lo, p0), (v_hi, p1)):
        st = builder.store(v, builder.bitcast(p, ll.as_pointer()), align=align)
        if nt:
            st.set_metadata("nontemporal", builder.module.add_metadata([_i32(1)]))
    return context.get_dummy_value()


@intrinsic
def vstore_interleaved(typingctx: Any, arr: Any, idx: Any, re: Any, im: Any) -> Any:
    """Store re[0], im[0], re[1], im[1], ... from element idx (two vectors' worth)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return _store_interleaved(context, builder, sig, args, False)

    return types.none(arr, idx, re, im), codegen


@intrinsic
def vstore_interleaved_nt(typingctx: Any, arr: Any, idx: Any, re: Any, im: Any) -> Any:
    """``vstore_interleaved`` with non-temporal stores; ``arr[idx]`` must be vector-aligned."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return _store_interleaved(context, builder, sig, args, True)

    return types.none(arr, idx, re, im), codegen


def _transpose(builder: Any, rows: list[Any], w: int) -> list[Any]:
    """The w x w tile held in ``rows`` (w vectors), transposed, as w vectors."""
    rows = list(rows)
    mty = ir.VectorType(ir.IntType(32), w)
    h = w // 2
    while h >= 1:  # swap the off-diagonal h x h blocks of every 2h x 2h block
        m_a = [j if not j & h else w + j - h for j in range(w)]
        m_b = [j + h if not j & h else w + j for j in range(w)]
        for i in range(w):
            if i & h:
                continue
            a, b = rows[i], rows[i | h]
            rows[i] = builder.shuffle_vector(a, b, ir.Constant(mty, m_a))
            rows[i | h] = builder.shuffle_vector(a, b, ir.Constant(mty, m_b))
        h //= 2
    return rows


def _row_ptr(context: Any, builder: Any, arrty: Any, arr: Any, off: Any, ld: Any, i: int,
             ll: Any) -> Any:  # fmt: skip
    """Pointer to the vector at ``arr[off + i*ld]``."""
    idx = builder.add(off, builder.mul(ld, ir.Constant(ir.IntType(64), i)))
    return builder.bitcast(_elem_ptr(context, builder, arrty, arr, idx), ll.as_pointer())


def _vtranspose(src: Any, so: Any, sld: Any, dst: Any, do: Any, dld: Any, nt: bool) -> Any:
    """``vtranspose``'s signature and code; ``nt``: non-temporal stores."""
    vt = _vec_of(src)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        w = vt.lanes
        ll = context.get_value_type(vt)
        align = vt.dtype.bitwidth // 8
        s_arr, s_off, s_ld, d_arr, d_off, d_ld = args
        rows = [builder.load(_row_ptr(context, builder, sig.args[0], s_arr, s_off, s_ld, i, ll),
                             align=align) for i in range(w)]  # fmt: skip
        md = builder.module.add_metadata([_i32(1)]) if nt else None
        for j, row in enumerate(_transpose(builder, rows, w)):
            p = _row_ptr(context, builder, sig.args[3], d_arr, d_off, d_ld, j, ll)
            if md is None:
                builder.store(row, p, align=align)
            else:
                builder.store(row, p, align=VECTOR_BYTES).set_metadata("nontemporal", md)
        return context.get_dummy_value()

    return types.none(src, so, sld, dst, do, dld), codegen


@intrinsic
def vtranspose(typingctx: Any, src: Any, so: Any, sld: Any, dst: Any, do: Any, dld: Any) -> Any:
    """Transpose a lanes x lanes tile: rows at src[so + i*sld] to rows at dst[do + j*dld]."""
    return _vtranspose(src, so, sld, dst, do, dld, nt=False)


@intrinsic
def vtranspose_nt(typingctx: Any, src: Any, so: Any, sld: Any, dst: Any, do: Any,
                  dld: Any) -> Any:  # fmt: skip
    """``vtranspose`` with non-temporal stores: every dst[do + j*dld] vector-aligned."""
    return _vtranspose(src, so, sld, dst, do, dld, nt=True)


@intrinsic
def vtranspose_in(typingctx: Any, src: Any, so: Any, sld: Any, dr: Any, di: Any, do: Any,
                  dld: Any, sgv: Any) -> Any:  # fmt: skip
    """A lanes x lanes tile of interleaved complex numbers, transposed and split: row i of
    the tile is the 2 x lanes floats at src[so + i*sld]; column j goes to dr[do + j*dld]
    (real parts) and di[do + j*dld] (imaginary parts times the vector ``sgv``)."""
    vt = _vec_of(src)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        w = vt.lanes
        ll = context.get_value_type(vt)
        align = vt.dtype.bitwidth // 8
        s_arr, s_off, s_ld, r_arr, i_arr, d_off, d_ld, sg = args
        mty = ir.VectorType(ir.IntType(32), w)
        even = ir.Constant(mty, list(range(0, 2 * w, 2)))
        odd = ir.Constant(mty, list(range(1, 2 * w, 2)))
        w64 = ir.Constant(ir.IntType(64), w)
        res, ims = [], []
        for i in range(w):
            p0 = _row_ptr(context, builder, sig.args[0], s_arr, s_off, s_ld, i, ll)
            v0 = builder.load(p0, align=align)
            p1 = builder.bitcast(builder.gep(builder.bitcast(p0, ll.element.as_pointer()), [w64]),
                                 ll.as_pointer())  # fmt: skip
            v1 = builder.load(p1, align=align)
            res.append(builder.shuffle_vector(v0, v1, even))
            ims.append(builder.shuffle_vector(v0, v1, odd))
        for j, row in enumerate(_transpose(builder, res, w)):
            builder.store(row, _row_ptr(context, builder, sig.args[3], r_arr, d_off, d_ld, j, ll),
                          align=align)  # fmt: skip
        for j, row in enumerate(_transpose(builder, ims, w)):
            builder.store(builder.fmul(row, sg),
                          _row_ptr(context, builder, sig.args[4], i_arr, d_off, d_ld, j, ll),
                          align=align)  # fmt: skip
        return context.get_dummy_value()

    return types.none(src, so, sld, dr, di, do, dld, sgv), codegen


@intrinsic
def vtranspose_out(typingctx: Any, sr: Any, si: Any, so: Any, sld: Any, dst: Any, do: Any,
                   dld: Any, sre: Any, sim: Any) -> Any:  # fmt: skip
    """The inverse of ``vtranspose_in``: the tiles at sr[so + i*sld] (real) and
    si[so + i*sld] (imaginary), transposed, scaled by the vectors ``sre`` and ``sim`` and
    interleaved: column j of the tiles is stored as 2 x lanes floats at dst[do + j*dld]."""
    vt = _vec_of(sr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        w = vt.lanes
        ll = context.get_value_type(vt)
        align = vt.dtype.bitwidth // 8
        r_arr, i_arr, s_off, s_ld, d_arr, d_off, d_ld, scr, sci = args
        res = [builder.load(_row_ptr(context, builder, sig.args[0], r_arr, s_off, s_ld, i, ll),
                            align=align) for i in range(w)]  # fmt: skip
        ims = [builder.load(_row_ptr(context, builder, sig.args[1], i_arr, s_off, s_ld, i, ll),
                            align=align) for i in range(w)]  # fmt: skip
        mty = ir.VectorType(ir.IntType(32), w)
        lo = ir.Constant(mty, [x for i in range(w // 2) for x in (i, w + i)])
        hi = ir.Constant(mty, [x for i in range(w // 2, w) for x in (i, w + i)])
        w64 = ir.Constant(ir.IntType(64), w)
        for j, (re, im) in enumerate(zip(_transpose(builder, res, w), _transpose(builder, ims, w),
                                         strict=True)):  # fmt: skip
            re = builder.fmul(re, scr)
            im = builder.fmul(im, sci)
            p0 = _row_ptr(context, builder, sig.args[4], d_arr, d_off, d_ld, j, ll)
            p1 = builder.bitcast(builder.gep(builder.bitcast(p0, ll.element.as_pointer()), [w64]),
                                 ll.as_pointer())  # fmt: skip
            builder.store(builder.shuffle_vector(re, im, lo), p0, align=align)
            builder.store(builder.shuffle_vector(re, im, hi), p1, align=align)
        return context.get_dummy_value()

    return types.none(sr, si, so, sld, dst, do, dld, sre, sim), codegen


@intrinsic
def vstore_stream(typingctx: Any, arr: Any, idx: Any, v: Any) -> Any:
    """Non-temporal store of ``v`` at element ``idx``, which must be vector-aligned."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        p = builder.bitcast(p, context.get_value_type(sig.args[2]).as_pointer())
        st = builder.store(args[2], p, align=VECTOR_BYTES)
        md = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        st.set_metadata("nontemporal", md)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def misalignment(typingctx: Any, arr: Any) -> Any:
    """Elements from ``arr``'s start to its first vector-aligned element."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i64 = ir.IntType(64)
        addr = builder.ptrtoint(ary.data, i64)
        neg = builder.sub(ir.Constant(i64, 0), addr)
        rem = builder.and_(neg, ir.Constant(i64, VECTOR_BYTES - 1))
        return builder.udiv(rem, ir.Constant(i64, sig.args[0].dtype.bitwidth // 8))

    return types.int64(arr), codegen


@intrinsic
def fence(typingctx: Any) -> Any:
    """Store fence, so non-temporal stores are visible before the kernel returns."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def vsum(typingctx: Any, v: Any) -> Any:
    """Sum of the lanes."""
    if not isinstance(v, Vec):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        acc = builder.extract_element(args[0], _i32(0))
        for i in range(1, sig.args[0].lanes):
            acc = builder.fadd(acc, builder.extract_element(args[0], _i32(i)))
        return acc

    return v.dtype(v), codegen


# Vectors of an explicit width. ``kern`` is a compile-time kernel code (an integer literal,
# see kernels._cpu.Kernel.code): its vector width in bytes is ``kern // 100 % 1000``. The
# GEMM passes it down so that one process can run any micro-kernel, whatever the host's
# own width.


def _kern_bytes(kern: Any) -> int | None:
    if not isinstance(kern, types.IntegerLiteral):
        return None
    return int(kern.literal_value) // 100 % 1000


def _vec_w(arrty: Any, nbytes: int) -> Vec:
    return Vec(arrty.dtype, nbytes // (arrty.dtype.bitwidth // 8))


@intrinsic(prefer_literal=True)
def wload(typingctx: Any, arr: Any, idx: Any, kern: Any) -> Any:
    """``vload`` at the width of kernel code ``kern``."""
    nbytes = _kern_bytes(kern)
    if nbytes is None:
        return None
    vt = _vec_w(arr, nbytes)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        p = builder.bitcast(p, context.get_value_type(vt).as_pointer())
        return builder.load(p, align=arr.dtype.bitwidth // 8)

    return vt(arr, idx, kern), codegen


@intrinsic(prefer_literal=True)
def wbcast(typingctx: Any, arr: Any, idx: Any, kern: Any) -> Any:
    """``vbcast`` at the width of kernel code ``kern``."""
    nbytes = _kern_bytes(kern)
    if nbytes is None:
        return None
    vt = _vec_w(arr, nbytes)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        x = builder.load(_elem_ptr(context, builder, sig.args[0], args[0], args[1]))
        ll = context.get_value_type(vt)
        v = builder.insert_element(ir.Constant(ll, ir.Undefined), x, _i32(0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(v, v, mask)

    return vt(arr, idx, kern), codegen


@intrinsic(prefer_literal=True)
def wzero(typingctx: Any, arr: Any, kern: Any) -> Any:
    """``vzero`` at the width of kernel code ``kern``."""
    nbytes = _kern_bytes(kern)
    if nbytes is None:
        return None
    vt = _vec_w(arr, nbytes)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr, kern), codegen


@intrinsic(prefer_literal=True)
def wlanes(typingctx: Any, arr: Any, kern: Any) -> Any:
    """Lanes per vector of kernel code ``kern`` for ``arr``'s dtype (a constant)."""
    nbytes = _kern_bytes(kern)
    if nbytes is None:
        return None
    lanes_ = _vec_w(arr, nbytes).lanes

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(ir.IntType(64), lanes_)

    return types.int64(arr, kern), codegen


@intrinsic(prefer_literal=True)
def kern_field(typingctx: Any, kern: Any, field: Any) -> Any:
    """Digit ``field`` of kernel code ``kern`` (0: vectors per row, 1: rows, 5: prefetch
    distance), a constant."""
    if not isinstance(kern, types.IntegerLiteral) or not isinstance(field, types.IntegerLiteral):
        return None
    value = int(kern.literal_value) // 10 ** int(field.literal_value) % 10

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(ir.IntType(64), value)

    return types.int64(kern, field), codegen


@intrinsic
def prefetch_r(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Prefetch the cache line holding ``arr[idx]`` for reading, into L1 (a hint: an
    address past the end of ``arr`` is not read and cannot fault)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(p, i8p), _i32(0), _i32(3), _i32(1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen


@intrinsic
def prefetch_l2(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Prefetch the cache line holding ``arr[idx]`` for reading, to the outer caches
    (locality 2; a hint, as ``prefetch_r``)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(p, i8p), _i32(0), _i32(2), _i32(1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen
