"""FFT butterflies: one Stockham pass per radix (2, 3, 4, 5, 8) on split re/im vectors.

A pass turns ``s`` interleaved transforms of length ``L`` into ``s*r`` interleaved
transforms of length ``L/r`` (decimation in frequency, natural-order output after the last
pass). Element ``(j, q)`` of the batch lives at ``j*s + q``; the inner loop runs over ``q``
one SIMD vector at a time, so ``s`` must be a multiple of the vector lanes. Forward sign
only: the inverse is taken as conj(fft(conj(x))) by the caller.
"""

from __future__ import annotations

import math
from typing import Any

from kernels._jit import jit
from kernels._simd import (
    vadd,
    vbcast,
    vfma,
    vfnma,
    vlanes,
    vload,
    vload_even,
    vload_odd,
    vmul,
    vsplat,
    vstore,
    vstore_interleaved,
    vstore_interleaved_nt,
    vsub,
)

S3 = math.sqrt(3.0) / 2.0
C51 = math.cos(2 * math.pi / 5)
C52 = math.cos(4 * math.pi / 5)
S51 = math.sin(2 * math.pi / 5)
S52 = math.sin(4 * math.pi / 5)
R2 = math.sqrt(0.5)


@jit()
def _cmul_store(yr: Any, yi: Any, o: int, zr: Any, zi: Any, wr: Any, wi: Any) -> None:
    vstore(yr, o, vfnma(zi, wi, vmul(zr, wr)))
    vstore(yi, o, vfma(zr, wi, vmul(zi, wr)))


@jit()
def pass2(xr: Any, xi: Any, yr: Any, yi: Any, L: int, s: int, twr: Any, twi: Any,
          to: int) -> None:  # fmt: skip
    m = L // 2
    w = vlanes(xr)
    for p in range(m):
        w1r = vbcast(twr, to + p)
        w1i = vbcast(twi, to + p)
        ia = s * p
        ib = ia + s * m
        io = 2 * s * p
        for q in range(0, s, w):
            ar = vload(xr, ia + q)
            ai = vload(xi, ia + q)
            br = vload(xr, ib + q)
            bi = vload(xi, ib + q)
            vstore(yr, io + q, vadd(ar, br))
            vstore(yi, io + q, vadd(ai, bi))
            _cmul_store(yr, yi, io + s + q, vsub(ar, br), vsub(ai, bi), w1r, w1i)


@jit()
def _ld(xr: Any, xi: Any, i: int, il: bool, sgv: Any) -> Any:
    """Element i as (re, im) vectors: from split arrays, or from interleaved complex ``xr``."""
    if il:
        return vload_even(xr, 2 * i), vmul(sgv, vload_odd(xr, 2 * i))
    return vload(xr, i), vload(xi, i)


@jit()
def pass4(xr: Any, xi: Any, yr: Any, yi: Any, L: int, s: int, twr: Any, twi: Any,
          to: int) -> None:  # fmt: skip
    pass4_from(xr, xi, 0, s, yr, yi, L, s, twr, twi, to, False, 1.0)


@jit()
def pass4_from(xr: Any, xi: Any, xo: int, xs: int, yr: Any, yi: Any, L: int, s: int,
               twr: Any, twi: Any, to: int, il: bool, sg: float) -> None:  # fmt: skip
    m = L // 4
    w = vlanes(xr)
    sgv = vsplat(xr, sg)
    sm = xs * m
    if m == 1 and xo == 0 and xs == s and not il:  # last pass: every twiddle is 1
        _pass4_last(xr, xi, yr, yi, s)
        return
    for p in range(m):
        t = to + 3 * p
        w1r = vbcast(twr, t)
        w1i = vbcast(twi, t)
        w2r = vbcast(twr, t + 1)
        w2i = vbcast(twi, t + 1)
        w3r = vbcast(twr, t + 2)
        w3i = vbcast(twi, t + 2)
        ia = xo + xs * p
        io = 4 * s * p
        for q in range(0, s, w):
            ar, ai = _ld(xr, xi, ia + q, il, sgv)
            br, bi = _ld(xr, xi, ia + sm + q, il, sgv)
            cr, ci = _ld(xr, xi, ia + 2 * sm + q, il, sgv)
            dr, di = _ld(xr, xi, ia + 3 * sm + q, il, sgv)
            apcr = vadd(ar, cr)
            apci = vadd(ai, ci)
            amcr = vsub(ar, cr)
            amci = vsub(ai, ci)
            bpdr = vadd(br, dr)
            bpdi = vadd(bi, di)
            bmdr = vsub(br, dr)
            bmdi = vsub(bi, di)
            vstore(yr, io + q, vadd(apcr, bpdr))
            vstore(yi, io + q, vadd(apci, bpdi))
            # y1 = (a - c - i(b - d)) w1, y2 = (a + c - b - d) w2, y3 = (a - c + i(b - d)) w3
            _cmul_store(yr, yi, io + s + q, vadd(amcr, bmdi), vsub(amci, bmdr), w1r, w1i)
            _cmul_store(yr, yi, io + 2 * s + q, vsub(apcr, bpdr), vsub(apci, bpdi), w2r, w2i)
            _cmul_store(yr, yi, io + 3 * s + q, vsub(amcr, bmdi), vadd(amci, bmdr), w3r, w3i)


@jit()
def _pass4_last(xr: Any, xi: Any, yr: Any, yi: Any, s: int) -> None:
    w = vlanes(xr)
    for q in range(0, s, w):
        ar = vload(xr, q)
        ai = vload(xi, q)
        br = vload(xr, s + q)
        bi = vload(xi, s + q)
        cr = vload(xr, 2 * s + q)
        ci = vload(xi, 2 * s + q)
        dr = vload(xr, 3 * s + q)
        di = vload(xi, 3 * s + q)
        apcr = vadd(ar, cr)
        apci = vadd(ai, ci)
        amcr = vsub(ar, cr)
        amci = vsub(ai, ci)
        bpdr = vadd(br, dr)
        bpdi = vadd(bi, di)
        bmdr = vsub(br, dr)
        bmdi = vsub(bi, di)
        vstore(yr, q, vadd(apcr, bpdr))
        vstore(yi, q, vadd(apci, bpdi))
        vstore(yr, s + q, vadd(amcr, bmdi))
        vstore(yi, s + q, vsub(amci, bmdr))
        vstore(yr, 2 * s + q, vsub(apcr, bpdr))
        vstore(yi, 2 * s + q, vsub(apci, bpdi))
        vstore(yr, 3 * s + q, vsub(amcr, bmdi))
        vstore(yi, 3 * s + q, vadd(amci, bmdr))


@jit()
def pass3(xr: Any, xi: Any, yr: Any, yi: Any, L: int, s: int, twr: Any, twi: Any,
          to: int) -> None:  # fmt: skip
    m = L // 3
    w = vlanes(xr)
    sm = s * m
    half = vsplat(xr, 0.5)
    s3 = vsplat(xr, S3)
    for p in range(m):
        t = to + 2 * p
        w1r = vbcast(twr, t)
        w1i = vbcast(twi, t)
        w2r = vbcast(twr, t + 1)
        w2i = vbcast(twi, t + 1)
        ia = s * p
        io = 3 * s * p
        for q in range(0, s, w):
            ar = vload(xr, ia + q)
            ai = vload(xi, ia + q)
            br = vload(xr, ia + sm + q)
            bi = vload(xi, ia + sm + q)
            cr = vload(xr, ia + 2 * sm + q)
            ci = vload(xi, ia + 2 * sm + q)
            t1r = vadd(br, cr)
            t1i = vadd(bi, ci)
            t2r = vfnma(half, t1r, ar)
            t2i = vfnma(half, t1i, ai)
            # t3 = -i (sqrt(3)/2) (b - c)
            t3r = vmul(s3, vsub(bi, ci))
            t3i = vmul(s3, vsub(cr, br))
            vstore(yr, io + q, vadd(ar, t1r))
            vstore(yi, io + q, vadd(ai, t1i))
            _cmul_store(yr, yi, io + s + q, vadd(t2r, t3r), vadd(t2i, t3i), w1r, w1i)
            _cmul_store(yr, yi, io + 2 * s + q, vsub(t2r, t3r), vsub(t2i, t3i), w2r, w2i)


@jit()
def pass5(xr: Any, xi: Any, yr: Any, yi: Any, L: int, s: int, twr: Any, twi: Any,
          to: int) -> None:  # fmt: skip
    m = L // 5
    w = vlanes(xr)
    sm = s * m
    c1 = vsplat(xr, C51)
    c2 = vsplat(xr, C52)
    s1 = vsplat(xr, S51)
    s2 = vsplat(xr, S52)
    for p in range(m):
        t = to + 4 * p
        ia = s * p
        io = 5 * s * p
        for q in range(0, s, w):
            ar = vload(xr, ia + q)
            ai = vload(xi, ia + q)
            br = vload(xr, ia + sm + q)
            bi = vload(xi, ia + sm + q)
            cr = vload(xr, ia + 2 * sm + q)
            ci = vload(xi, ia + 2 * sm + q)
            dr = vload(xr, ia + 3 * sm + q)
            di = vload(xi, ia + 3 * sm + q)
            er = vload(xr, ia + 4 * sm + q)
            ei = vload(xi, ia + 4 * sm + q)
            t1r = vadd(br, er)
            t1i = vadd(bi, ei)
            t2r = vadd(cr, dr)
            t2i = vadd(ci, di)
            t3r = vsub(br, er)
            t3i = vsub(bi, ei)
            t4r = vsub(cr, dr)
            t4i = vsub(ci, di)
            vstore(yr, io + q, vadd(ar, vadd(t1r, t2r)))
            vstore(yi, io + q, vadd(ai, vadd(t1i, t2i)))
            m1r = vfma(c2, t2r, vfma(c1, t1r, ar))
            m1i = vfma(c2, t2i, vfma(c1, t1i, ai))
            m2r = vfma(c1, t2r, vfma(c2, t1r, ar))
            m2i = vfma(c1, t2i, vfma(c2, t1i, ai))
            u1r = vfma(s2, t4r, vmul(s1, t3r))
            u1i = vfma(s2, t4i, vmul(s1, t3i))
            u2r = vfnma(s1, t4r, vmul(s2, t3r))
            u2i = vfnma(s1, t4i, vmul(s2, t3i))
            # y1 = m1 - i u1, y4 = m1 + i u1, y2 = m2 - i u2, y3 = m2 + i u2
            _cmul_store(yr, yi, io + s + q, vadd(m1r, u1i), vsub(m1i, u1r),
                        vbcast(twr, t), vbcast(twi, t))  # fmt: skip
            _cmul_store(yr, yi, io + 2 * s + q, vadd(m2r, u2i), vsub(m2i, u2r),
                        vbcast(twr, t + 1), vbcast(twi, t + 1))  # fmt: skip
            _cmul_store(yr, yi, io + 3 * s + q, vsub(m2r, u2i), vadd(m2i, u2r),
                        vbcast(twr, t + 2), vbcast(twi, t + 2))  # fmt: skip
            _cmul_store(yr, yi, io + 4 * s + q, vsub(m1r, u1i), vadd(m1i, u1r),
                        vbcast(twr, t + 3), vbcast(twi, t + 3))  # fmt: skip


@jit()
def pass8(xr: Any, xi: Any, yr: Any, yi: Any, L: int, s: int, twr: Any, twi: Any,
          to: int) -> None:  # fmt: skip
    pass8_from(xr, xi, 0, s, yr, yi, L, s, twr, twi, to, False, 1.0)


@jit()
def pass8_from(xr: Any, xi: Any, xo: int, xs: int, yr: Any, yi: Any, L: int, s: int,
               twr: Any, twi: Any, to: int, il: bool, sg: float) -> None:  # fmt: skip
    """Radix 8 as two radix-4 butterflies on x_k + x_(k+4) and (x_k - x_(k+4)) W8^k."""
    m = L // 8
    w = vlanes(xr)
    sgv = vsplat(xr, sg)
    sm = xs * m
    h = vsplat(xr, R2)
    nh = vsplat(xr, -R2)
    for p in range(m):
        t = to + 7 * p
        ia = xo + xs * p
        io = 8 * s * p
        for q in range(0, s, w):
            i0 = ia + q
            x0r, x0i = _ld(xr, xi, i0, il, sgv)
            x1r, x1i = _ld(xr, xi, i0 + sm, il, sgv)
            x2r, x2i = _ld(xr, xi, i0 + 2 * sm, il, sgv)
            x3r, x3i = _ld(xr, xi, i0 + 3 * sm, il, sgv)
            x4r, x4i = _ld(xr, xi, i0 + 4 * sm, il, sgv)
            x5r, x5i = _ld(xr, xi, i0 + 5 * sm, il, sgv)
            x6r, x6i = _ld(xr, xi, i0 + 6 * sm, il, sgv)
            x7r, x7i = _ld(xr, xi, i0 + 7 * sm, il, sgv)
            # a_k = x_k + x_(k+4); c_k = (x_k - x_(k+4)) W8^k
            a0r = vadd(x0r, x4r)
            a0i = vadd(x0i, x4i)
            a1r = vadd(x1r, x5r)
            a1i = vadd(x1i, x5i)
            a2r = vadd(x2r, x6r)
            a2i = vadd(x2i, x6i)
            a3r = vadd(x3r, x7r)
            a3i = vadd(x3i, x7i)
            c0r = vsub(x0r, x4r)
            c0i = vsub(x0i, x4i)
            b1r = vsub(x1r, x5r)
            b1i = vsub(x1i, x5i)
            c2r = vsub(x2i, x6i)  # (x2 - x6) * -i
            c2i = vsub(x6r, x2r)
            b3r = vsub(x3r, x7r)
            b3i = vsub(x3i, x7i)
            c1r = vmul(h, vadd(b1r, b1i))  # b1 (1 - i) / sqrt 2
            c1i = vmul(h, vsub(b1i, b1r))
            c3r = vmul(h, vsub(b3i, b3r))  # b3 (-1 - i) / sqrt 2
            c3i = vmul(nh, vadd(b3r, b3i))
            # radix 4 on a -> y0, y2, y4, y6
            pr = vadd(a0r, a2r)
            pi = vadd(a0i, a2i)
            mr = vsub(a0r, a2r)
            mi = vsub(a0i, a2i)
            qr = vadd(a1r, a3r)
            qi = vadd(a1i, a3i)
            dr = vsub(a1r, a3r)
            di = vsub(a1i, a3i)
            vstore(yr, io + q, vadd(pr, qr))
            vstore(yi, io + q, vadd(pi, qi))
            # radix 4 on c -> y1, y3, y5, y7
            er = vadd(c0r, c2r)
            ei = vadd(c0i, c2i)
            fr = vsub(c0r, c2r)
            fi = vsub(c0i, c2i)
            gr = vadd(c1r, c3r)
            gi = vadd(c1i, c3i)
            kr = vsub(c1r, c3r)
            ki = vsub(c1i, c3i)
            if m == 1:
                vstore(yr, io + 2 * s + q, vadd(mr, di))
                vstore(yi, io + 2 * s + q, vsub(mi, dr))
                vstore(yr, io + 4 * s + q, vsub(pr, qr))
                vstore(yi, io + 4 * s + q, vsub(pi, qi))
                vstore(yr, io + 6 * s + q, vsub(mr, di))
                vstore(yi, io + 6 * s + q, vadd(mi, dr))
                vstore(yr, io + s + q, vadd(er, gr))
                vstore(yi, io + s + q, vadd(ei, gi))
                vstore(yr, io + 3 * s + q, vadd(fr, ki))
                vstore(yi, io + 3 * s + q, vsub(fi, kr))
                vstore(yr, io + 5 * s + q, vsub(er, gr))
                vstore(yi, io + 5 * s + q, vsub(ei, gi))
                vstore(yr, io + 7 * s + q, vsub(fr, ki))
                vstore(yi, io + 7 * s + q, vadd(fi, kr))
            else:
                _cmul_store(yr, yi, io + s + q, vadd(er, gr), vadd(ei, gi),
                            vbcast(twr, t), vbcast(twi, t))  # fmt: skip
                _cmul_store(yr, yi, io + 2 * s + q, vadd(mr, di), vsub(mi, dr),
                            vbcast(twr, t + 1), vbcast(twi, t + 1))  # fmt: skip
                _cmul_store(yr, yi, io + 3 * s + q, vadd(fr, ki), vsub(fi, kr),
                            vbcast(twr, t + 2), vbcast(twi, t + 2))  # fmt: skip
                _cmul_store(yr, yi, io + 4 * s + q, vsub(pr, qr), vsub(pi, qi),
                            vbcast(twr, t + 3), vbcast(twi, t + 3))  # fmt: skip
                _cmul_store(yr, yi, io + 5 * s + q, vsub(er, gr), vsub(ei, gi),
                            vbcast(twr, t + 4), vbcast(twi, t + 4))  # fmt: skip
                _cmul_store(yr, yi, io + 6 * s + q, vsub(mr, di), vadd(mi, dr),
                            vbcast(twr, t + 5), vbcast(twi, t + 5))  # fmt: skip
                _cmul_store(yr, yi, io + 7 * s + q, vsub(fr, ki), vadd(fi, kr),
                            vbcast(twr, t + 6), vbcast(twi, t + 6))  # fmt: skip


@jit()
def _bf8(xr: Any, xi: Any, i0: int, sm: int, h: Any, nh: Any) -> Any:
    """The untwiddled 8-point DFT of x[i0 + k*sm], k = 0..7: (y0r, y0i, ..., y7r, y7i)."""
    x0r = vload(xr, i0)
    x0i = vload(xi, i0)
    x1r = vload(xr, i0 + sm)
    x1i = vload(xi, i0 + sm)
    x2r = vload(xr, i0 + 2 * sm)
    x2i = vload(xi, i0 + 2 * sm)
    x3r = vload(xr, i0 + 3 * sm)
    x3i = vload(xi, i0 + 3 * sm)
    x4r = vload(xr, i0 + 4 * sm)
    x4i = vload(xi, i0 + 4 * sm)
    x5r = vload(xr, i0 + 5 * sm)
    x5i = vload(xi, i0 + 5 * sm)
    x6r = vload(xr, i0 + 6 * sm)
    x6i = vload(xi, i0 + 6 * sm)
    x7r = vload(xr, i0 + 7 * sm)
    x7i = vload(xi, i0 + 7 * sm)
    a0r = vadd(x0r, x4r)
    a0i = vadd(x0i, x4i)
    a1r = vadd(x1r, x5r)
    a1i = vadd(x1i, x5i)
    a2r = vadd(x2r, x6r)
    a2i = vadd(x2i, x6i)
    a3r = vadd(x3r, x7r)
    a3i = vadd(x3i, x7i)
    c0r = vsub(x0r, x4r)
    c0i = vsub(x0i, x4i)
    b1r = vsub(x1r, x5r)
    b1i = vsub(x1i, x5i)
    c2r = vsub(x2i, x6i)
    c2i = vsub(x6r, x2r)
    b3r = vsub(x3r, x7r)
    b3i = vsub(x3i, x7i)
    c1r = vmul(h, vadd(b1r, b1i))
    c1i = vmul(h, vsub(b1i, b1r))
    c3r = vmul(h, vsub(b3i, b3r))
    c3i = vmul(nh, vadd(b3r, b3i))
    pr = vadd(a0r, a2r)
    pi = vadd(a0i, a2i)
    mr = vsub(a0r, a2r)
    mi = vsub(a0i, a2i)
    qr = vadd(a1r, a3r)
    qi = vadd(a1i, a3i)
    dr = vsub(a1r, a3r)
    di = vsub(a1i, a3i)
    er = vadd(c0r, c2r)
    ei = vadd(c0i, c2i)
    fr = vsub(c0r, c2r)
    fi = vsub(c0i, c2i)
    gr = vadd(c1r, c3r)
    gi = vadd(c1i, c3i)
    kr = vsub(c1r, c3r)
    ki = vsub(c1i, c3i)
    return (vadd(pr, qr), vadd(pi, qi), vadd(er, gr), vadd(ei, gi),
            vadd(mr, di), vsub(mi, dr), vadd(fr, ki), vsub(fi, kr),
            vsub(pr, qr), vsub(pi, qi), vsub(er, gr), vsub(ei, gi),
            vsub(mr, di), vadd(mi, dr), vsub(fr, ki), vadd(fi, kr))  # fmt: skip


@jit()
def _bf4(xr: Any, xi: Any, i0: int, sm: int) -> Any:
    """The untwiddled 4-point DFT of x[i0 + k*sm], k = 0..3: (y0r, y0i, ..., y3r, y3i)."""
    ar = vload(xr, i0)
    ai = vload(xi, i0)
    br = vload(xr, i0 + sm)
    bi = vload(xi, i0 + sm)
    cr = vload(xr, i0 + 2 * sm)
    ci = vload(xi, i0 + 2 * sm)
    dr = vload(xr, i0 + 3 * sm)
    di = vload(xi, i0 + 3 * sm)
    apcr = vadd(ar, cr)
    apci = vadd(ai, ci)
    amcr = vsub(ar, cr)
    amci = vsub(ai, ci)
    bpdr = vadd(br, dr)
    bpdi = vadd(bi, di)
    bmdr = vsub(br, dr)
    bmdi = vsub(bi, di)
    return (vadd(apcr, bpdr), vadd(apci, bpdi), vadd(amcr, bmdi), vsub(amci, bmdr),
            vsub(apcr, bpdr), vsub(apci, bpdi), vsub(amcr, bmdi), vadd(amci, bmdr))  # fmt: skip


@jit()
def _il(of: Any, d: int, re: Any, im: Any, nt: bool) -> None:
    if nt:
        vstore_interleaved_nt(of, d, re, im)
    else:
        vstore_interleaved(of, d, re, im)


@jit()
def last_out(r: int, xr: Any, xi: Any, of: Any, s: int, B: int, base: int, ld: int,
             sre: Any, sim: Any, nt: bool) -> None:  # fmt: skip
    """The last pass (radix r = 4 or 8, m = 1), written interleaved into ``of``.

    Output element ``e = j*s + q`` is row ``e // B``, column ``e % B`` of a B-wide block
    whose rows are ``ld`` complex apart from complex index ``base``; re and im are scaled
    by the vectors ``sre`` and ``sim``; with ``nt``, by non-temporal stores (every store
    then vector-aligned, and the caller fences before the output is read elsewhere).
    """
    w = vlanes(xr)
    st = (s // B) * ld  # rows between outputs j and j + 1
    if r == 8:
        h = vsplat(xr, R2)
        nh = vsplat(xr, -R2)
        for q in range(0, s, w):
            y = _bf8(xr, xi, q, s, h, nh)
            d = 2 * (base + (q // B) * ld + q % B)
            _il(of, d, vmul(sre, y[0]), vmul(sim, y[1]), nt)
            _il(of, d + 2 * st, vmul(sre, y[2]), vmul(sim, y[3]), nt)
            _il(of, d + 4 * st, vmul(sre, y[4]), vmul(sim, y[5]), nt)
            _il(of, d + 6 * st, vmul(sre, y[6]), vmul(sim, y[7]), nt)
            _il(of, d + 8 * st, vmul(sre, y[8]), vmul(sim, y[9]), nt)
            _il(of, d + 10 * st, vmul(sre, y[10]), vmul(sim, y[11]), nt)
            _il(of, d + 12 * st, vmul(sre, y[12]), vmul(sim, y[13]), nt)
            _il(of, d + 14 * st, vmul(sre, y[14]), vmul(sim, y[15]), nt)
    else:
        for q in range(0, s, w):
            y = _bf4(xr, xi, q, s)
            d = 2 * (base + (q // B) * ld + q % B)
            _il(of, d, vmul(sre, y[0]), vmul(sim, y[1]), nt)
            _il(of, d + 2 * st, vmul(sre, y[2]), vmul(sim, y[3]), nt)
            _il(of, d + 4 * st, vmul(sre, y[4]), vmul(sim, y[5]), nt)
            _il(of, d + 6 * st, vmul(sre, y[6]), vmul(sim, y[7]), nt)


@jit()
def _tw_store(yr: Any, yi: Any, e: int, re: Any, im: Any, wrr: Any, wri: Any, k: int,
              wcr: Any, wci: Any) -> None:  # fmt: skip
    br = vbcast(wrr, k)
    bi = vbcast(wri, k)
    cr = vload(wcr, e)
    ci = vload(wci, e)
    _cmul_store(yr, yi, e, re, im, vfnma(bi, ci, vmul(br, cr)), vfma(br, ci, vmul(bi, cr)))


@jit()
def last_tw(r: int, xr: Any, xi: Any, yr: Any, yi: Any, s: int, B: int, wrr: Any, wri: Any,
            wo: int, wcr: Any, wci: Any) -> None:  # fmt: skip
    """The last pass (radix r = 4 or 8, m = 1) times the four-step twiddles: output element
    e (row e // B, column e % B) times wr[wo + e // B] * wc[e], stored at e of (yr, yi)."""
    w = vlanes(xr)
    if r == 8:
        h = vsplat(xr, R2)
        nh = vsplat(xr, -R2)
        for q in range(0, s, w):
            y = _bf8(xr, xi, q, s, h, nh)
            for j in range(8):
                e = j * s + q
                _tw_store(yr, yi, e, y[2 * j], y[2 * j + 1], wrr, wri, wo + e // B, wcr, wci)
    else:
        for q in range(0, s, w):
            y = _bf4(xr, xi, q, s)
            for j in range(4):
                e = j * s + q
                _tw_store(yr, yi, e, y[2 * j], y[2 * j + 1], wrr, wri, wo + e // B, wcr, wci)


@jit()
def stockham(ar: Any, ai: Any, br: Any, bi: Any, n: int, s: int, radices: Any, offsets: Any,
             twr: Any, twi: Any) -> int:  # fmt: skip
    """Run every pass on ``s`` interleaved length-``n`` transforms held in (ar, ai).

    Returns 0 when the result ended in (ar, ai), 1 when in (br, bi).
    """
    src = 0
    L = n
    for st in range(radices.shape[0]):
        r = radices[st]
        to = offsets[st]
        if src == 0:
            _pass(r, ar, ai, br, bi, L, s, twr, twi, to)
        else:
            _pass(r, br, bi, ar, ai, L, s, twr, twi, to)
        src ^= 1
        s *= r
        L //= r
    return src


@jit()
def pass_from(r: int, xr: Any, xi: Any, xo: int, xs: int, yr: Any, yi: Any, L: int, s: int,
              twr: Any, twi: Any, to: int, il: bool, sg: float) -> None:  # fmt: skip
    """The first pass (radix 4 or 8) reading element (j, q) at ``xo + j*xs + q``: from split
    (xr, xi), or with ``il`` from interleaved complex ``xr`` (xi unused), imag times ``sg``."""
    if r == 8:
        pass8_from(xr, xi, xo, xs, yr, yi, L, s, twr, twi, to, il, sg)
    else:
        pass4_from(xr, xi, xo, xs, yr, yi, L, s, twr, twi, to, il, sg)


@jit()
def _pass(r: int, xr: Any, xi: Any, yr: Any, yi: Any, L: int, s: int, twr: Any, twi: Any,
          to: int) -> None:  # fmt: skip
    if r == 8:
        pass8(xr, xi, yr, yi, L, s, twr, twi, to)
    elif r == 4:
        pass4(xr, xi, yr, yi, L, s, twr, twi, to)
    elif r == 2:
        pass2(xr, xi, yr, yi, L, s, twr, twi, to)
    elif r == 3:
        pass3(xr, xi, yr, yi, L, s, twr, twi, to)
    else:
        pass5(xr, xi, yr, yi, L, s, twr, twi, to)
