"""``softpool``: the softmax-weighted mean of each window (Stergiou et al. 2021; SPEC section 3).

- :func:`softpool_window`, with the window's maximum subtracted before
  exponentiating, exact for any beta and value range: the CPU's fallback
  (:func:`softpool_kernel`) and :mod:`downpool.cuda`'s device function.
- beta = 0 is exactly avg.
- Where the image's range bounds the exponents (every e^(beta*(a - ref)),
  ref the range's middle, far inside float64), one pass of sums is exact: for
  integer input through tables of e and e*a (:data:`TABLE` over constant
  blocks, or the separable passes), for float input through the separable
  passes with an exponential per value.
- Over constant blocks where the exponents stay within e^+-8
  (:func:`float32_applies`: beta = 4.4 on 8- and 16-bit images),
  :func:`softpool_f32_kernel`, in float32, eight values per vector.
- Otherwise over blocks, relative to each window's maximum in passes along the
  row (:data:`RELATIVE`, :func:`_softpool_row`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from ..blocks import block_column, block_layout, block_plan, block_row, run_blocks
from ..core import PoolJob
from ..numba_idioms import block_max, jit, store, store_pixel, window_max
from ..separable import EXP_LIMIT, MODE_SOFT, MODE_TABLES, NO_TABLE, run_separable, working_values
from ..threads import run_rows
from .avg import pool as pool_avg

__all__ = ["softpool_window", "softpool_kernel", "SoftpoolParams", "softpool_blocks",
           "softpool_f32_kernel", "float32_applies", "pool"]

@jit
def softpool_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, beta, res):
    for c in range(res.shape[0]):
        # Subtracting the maximum keeps every exponent <= 0: no overflow for
        # any beta or value range, and the largest pixel always has weight 1.
        m = window_max(img, in_scale, y0, ny, x0, nx, c)
        num = 0.0
        den = 0.0
        for r in range(ny):
            for s in range(nx):
                a = img[y0 + r, x0 + s, c] * in_scale
                w = yw[i, r] * xw[j, s] * math.exp(beta * (a - m))
                num += w * a
                den += w
        res[c] = num / den


@jit(nogil=True)
def softpool_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, beta, i0, i1):
    res = np.empty(img.shape[2])
    for i in range(i0, i1):
        for j in range(out.shape[1]):
            softpool_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j, beta, res)
            store_pixel(out, i, j, res, out_max, out_int)


class SoftpoolParams(NamedTuple):
    """The parameters :func:`softpool_blocks` takes: the interleaved tables of e*a and
    e (:data:`TABLE`), beta, and the centre of the value range (:data:`FLOAT32`)."""

    in_scale: float
    out_max: float
    tables: np.ndarray
    beta: float
    ref: float


# The variants of softpool_blocks.
TABLE = 1
RELATIVE = 2
FLOAT32 = 3


@jit(inline="always")
def _softpool_table_block(rows, y0, ny, x0, nx, channels, c, tables):
    num = 0.0
    den = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            v = 2 * np.intp(src[(x0 + t) * channels + c])
            num += tables[v]  # a e^(beta (a - ref))
            den += tables[v + 1]  # e^(beta (a - ref))
    return num / den


def _bitcast(source, target):
    """An intrinsic that reads a ``source`` scalar's bits as a ``target`` of the same
    width: a bitcast, which LLVM vectorises."""
    @intrinsic
    def bitcast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))
        return target(source), codegen
    return bitcast


_float_bits = _bitcast(types.float64, types.int64)


_bits_float = _bitcast(types.int64, types.float64)


_float32_bits = _bitcast(types.float32, types.int32)


_bits_float32 = _bitcast(types.int32, types.float32)


_LOG2E = 1.4426950408889634


_LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (fdlibm's): n * _LN2_HI is exact


_LN2_LO = 1.90821492927058770002e-10


_ROUND = 6755399441055744.0  # 1.5 * 2**52: x + _ROUND has round(x) in its low bits


@jit(forceinline=True, fastmath={"contract"})
def _exp_nonpositive(x):
    """e^x for x <= 0, within 1e-14 relative of ``math.exp``; 0 below -708.

    ``math.exp`` is a call to libm that LLVM makes one value at a time; this
    one is arithmetic and bitcasts, which vectorise. e^x = 2^n e^r with n = round(x / ln 2), |r| <= ln(2)/2,
    e^r by its Taylor series to r^11 (the next term is below 1e-15), 2^n made
    from its exponent bits. Below -708, 2^n would be subnormal; such a weight
    is under 1e-307 of the window's largest (1), and is dropped.
    """
    y = max(x, -708.0)
    t = y * _LOG2E + _ROUND
    n = t - _ROUND
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    two_n = _bits_float((_float_bits(t) - _float_bits(_ROUND) + 1023) << 52)
    return p * two_n if x >= -708.0 else 0.0


# softpool in float32 (FLOAT32): 2^x as arithmetic on eight lanes. The
# exponents are bounded (:func:`float32_applies` takes images where
# beta * |a - ref| <= 8, so |x| <= 8 / ln 2 < 12), so neither 2^x nor a term
# e * a can leave float32's normal range.
_F32_ROUND = np.float32(12582912.0)  # 1.5 * 2**23: x + _F32_ROUND has round(x) in its low bits


_F32_ROUND_BITS = np.int32(np.array([_F32_ROUND]).view(np.int32)[0])


# 2^f on [-1/2, 1/2], a degree-5 polynomial fitted to the relative error
# (Lawson's iteration on Chebyshev nodes): within 7.5e-8 of 2^f, about float32's
# own rounding, where the Taylor series to f^5 is 30 times farther off.
_EXP2_C5 = np.float32(0.0013276471964577007)


_EXP2_C4 = np.float32(0.009675541739150917)


_EXP2_C3 = np.float32(0.055507132771198356)


_EXP2_C2 = np.float32(0.24022119716405663)


_EXP2_C1 = np.float32(0.6931469670603315)


_EXP2_C0 = np.float32(1.0000000716561699)


_F32_HALF = np.float32(0.5)


_F32_ZERO = np.float32(0.0)


@jit(forceinline=True, fastmath={"contract"})
def _exp2_f32(x):
    """2^x for a float32 |x| <= 126, within 2.2e-7 relative, in float32 arithmetic
    that LLVM vectorises eight values at a time.

    2^x = 2^n 2^f with n = round(x) (from the low bits of x + 1.5 * 2^23, where
    a float32 keeps no fraction), f = x - n in [-1/2, 1/2] (exact), 2^f by
    the polynomial above, and the factor 2^n added to its exponent bits.
    """
    t = x + _F32_ROUND
    n = t - _F32_ROUND
    f = x - n
    p = _EXP2_C5
    p = p * f + _EXP2_C4
    p = p * f + _EXP2_C3
    p = p * f + _EXP2_C2
    p = p * f + _EXP2_C1
    p = p * f + _EXP2_C0
    # 2^n p: n added to p's exponent bits, an integer add rather than a multiply.
    # p is within [2^-1/2, 2^1/2], and at least 1 where n = -126 (x >= -126 makes
    # f >= 0 there), so for |x| <= 126 the result is a normal float32.
    return _bits_float32(_float32_bits(p) + ((_float32_bits(t) - _F32_ROUND_BITS) << np.int32(23)))


def _store_f32(v, in_scale, out_max, out):
    """:func:`store` for a float32 ``v`` in stored units of the input, in float32."""


@overload(_store_f32, inline="always")
def _store_f32_impl(v, in_scale, out_max, out):
    if isinstance(out.dtype, types.Integer):
        def impl(v, in_scale, out_max, out):
            # Rounded half up as store rounds; float32 holds every uint16 value.
            x = np.floor(v * np.float32(in_scale * out_max) + _F32_HALF)
            x = x if x > _F32_ZERO else _F32_ZERO
            top = np.float32(out_max)
            return x if x < top else top
        return impl

    def impl_float(v, in_scale, out_max, out):
        return v * np.float32(in_scale)
    return impl_float


@jit(inline="always")
def _softpool_f32_exponent(params):
    """``(scale, shift)`` of FLOAT32, in float32: the weight of a stored value a is
    2^(a * scale - shift), scale = beta * in_scale / ln 2 and shift = ref * scale
    (``params.beta`` beta, ``params.ref`` ref, in working units)."""
    in_scale = params.in_scale
    scale = params.beta * in_scale * _LOG2E
    return np.float32(scale), np.float32(params.ref / in_scale * scale)


@jit(inline="always")
def _softpool_f32_window(rows, y0, ny, x0, nx, channels, c, scale, shift):
    """One window of FLOAT32 (the partial windows at the edges), in stored units,
    with the weights of :func:`_softpool_f32_row`."""
    num = _F32_ZERO
    den = _F32_ZERO
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = np.float32(src[(x0 + t) * channels + c])
            e = _exp2_f32(a * scale - shift)
            num += e * a
            den += e
    return num / den


@jit(inline="always")
def _softpool_f32_row(kh_dims, kw_dims, c_dims, rows, y0, n_cols, o, params, num, den, ratio):
    """softpool over the row's ``n_cols`` full blocks of constant size, in float32; returns
    ``n_cols``.

    ``params.beta`` is beta and ``params.ref`` the centre ``ref`` of the image's
    value range, both in working units, where :func:`pool` has checked
    that ``beta * |a - ref| <= 8`` and ``beta * |a| <= 16`` for every value a. The
    weights, in stored units, are then 2^(a * scale - shift) with ``scale = beta *
    in_scale / ln 2`` and ``shift = ref * scale``, between e^-8 and e^8: no window
    needs its maximum subtracted, and neither they nor a term e * a leave
    float32's normal range. Relative to the float64 formula, the weights are
    within 1.5e-6 (the roundings of a * scale < 24 and of the exponent; those
    of scale and shift scale beta and every weight alike), and a result within
    about that of its window's range (SPEC 1: 1e-5).

    Three passes along the row's contiguous W*C values, each vectorised eight
    float32 values at a time: each column's sums of e * a and of e over the
    block's rows; at every position x, the ratio of the sums over the
    columns x, x + C, ... of a block starting there, rounded as stored (half
    of them are not the start of a block, but a pass over every x vectorises
    where one over the blocks' starts would not); and the blocks' starts
    copied to the output: faster than the float64 tables of uint8 input,
    and than float exponentials per window's maximum on float32 input. ``num``, ``den`` and ``ratio`` are float32 rows of the
    row's W*C length, allocated apart (LLVM cannot tell views of one array
    apart, and then does not vectorise).
    """
    block_h, block_w, channels = len(kh_dims), len(kw_dims), len(c_dims)
    in_scale, out_max = params.in_scale, params.out_max
    # One multiply-add per value, not a subtraction and a multiply.
    scale, shift = _softpool_f32_exponent(params)
    length = n_cols * block_w * channels
    for x in range(length):
        n = _F32_ZERO
        d = _F32_ZERO
        for r in range(block_h):
            a = np.float32(rows[y0 + r, x])
            e = _exp2_f32(a * scale - shift)
            n += e * a
            d += e
        num[x] = n
        den[x] = d
    for x in range(length - (block_w - 1) * channels):
        n = num[x]
        d = den[x]
        for t in range(1, block_w):
            n += num[x + t * channels]
            d += den[x + t * channels]
        ratio[x] = _store_f32(n / d, in_scale, out_max, o)
    for j in range(n_cols):
        for c in range(channels):
            o[j * channels + c] = ratio[j * block_w * channels + c]
    return n_cols


@jit(nogil=True, error_model="numpy", fastmath={"contract"})
def softpool_f32_kernel(img, rows, out_rows, kh_dims, kw_dims, c_dims, params, i0, i1):
    """Output rows ``i0`` to ``i1`` of FLOAT32 over the image's full blocks, of the
    constant sizes ``len(kh_dims)`` by ``len(kw_dims)`` on ``len(c_dims)``
    channels (:func:`_softpool_f32_row`); ``rows`` and ``out_rows`` as in :func:`softpool_blocks`.

    A kernel of its own rather than a variant of :func:`softpool_blocks`: it
    compiles faster (softpool's first call is shorter).
    :func:`downpool.blocks.run_blocks` runs :func:`softpool_blocks` for the
    partial windows of odd-sized images, with :func:`_softpool_f32_window`.
    """
    block_h, block_w, channels = len(kh_dims), len(kw_dims), len(c_dims)
    i1 = min(i1, img.shape[0] // block_h)
    n_cols = img.shape[1] // block_w
    if i0 >= i1:
        return
    length = n_cols * block_w * channels
    num = np.empty(length, np.float32)
    den = np.empty(length, np.float32)
    ratio = np.empty(length, np.float32)
    for i in range(i0, i1):
        _softpool_f32_row(kh_dims, kw_dims, c_dims, rows, i * block_h, n_cols, out_rows[i],
                          params, num, den, ratio)


@jit(inline="always")
def _store_ratios(num, den, o, first, n_windows, block_w, last_width, channels, out_max):
    """The last step of the row passes: output ``first + j`` is the sum of ``num``
    over window j's columns over that of ``den``, for every channel.

    ``last_width`` is the last window's (less than ``block_w`` where it is
    partial); the others are ``block_w`` wide.
    """
    for j in range(n_windows):
        nx = block_w if j + 1 < n_windows else last_width
        for c in range(channels):
            n = 0.0
            d = 0.0
            for t in range(nx):
                n += num[(j * block_w + t) * channels + c]
                d += den[(j * block_w + t) * channels + c]
            o[(first + j) * channels + c] = store(n / d, out_max, o)


@jit(inline="always")
def _softpool_row(constant, rows, img, y0, ny, first, n_cols, block_w, channels, o, params,
                  scratch):
    """softpool, relative to each window's maximum (every exponent <= 0), for the
    row's windows from ``first`` on, partial ones at the edges included;
    returns ``n_cols``.

    Float input has no table: each value takes an exponential. Made window
    by window, the Horner chain of each is latency-bound; here the values go
    through :func:`_exp_nonpositive` in one pass along the row's contiguous
    W*C values, against their window's maximum spread over the window's
    columns, and LLVM vectorises it.
    For constant and run-time sizes alike, so no kernel compiles
    softpool's window function.
    ``scratch`` has 3 rows of the row's length.
    """
    if first >= n_cols:
        return first
    in_scale, out_max, beta = params.in_scale, params.out_max, params.beta
    width = img.shape[1]
    start = first * block_w * channels
    length = (min(n_cols * block_w, width) - first * block_w) * channels
    top = scratch[0, start:start + length]
    num = scratch[1, start:start + length]
    den = scratch[2, start:start + length]
    for j in range(n_cols - first):
        x0 = (first + j) * block_w
        # Constant kernels make full windows only: their width stays a constant.
        nx = block_w if len(constant) > 0 else min(block_w, width - x0)
        for c in range(channels):
            m = block_max(rows, y0, ny, x0, nx, channels, c) * in_scale
            for t in range(nx):
                top[(j * block_w + t) * channels + c] = m
    for x in range(length):
        num[x] = 0.0
        den[x] = 0.0
    for r in range(ny):
        src = rows[y0 + r, start:start + length]
        for x in range(length):
            a = src[x] * in_scale
            e = _exp_nonpositive(beta * (a - top[x]))
            num[x] += e * a
            den[x] += e
    last_width = block_w if len(constant) > 0 else min(block_w, width - (n_cols - 1) * block_w)
    _store_ratios(num, den, o, first, n_cols - first, block_w, last_width, channels, out_max)
    return n_cols


@jit(nogil=True, error_model="numpy")
def softpool_blocks(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
                    params, j0, i0, i1):
    """softpool over blocks (:func:`downpool.blocks.run_blocks`), variant
    ``len(variant_dims)``: :data:`TABLE` window by window, :data:`RELATIVE` in passes
    along the row (every window, partial ones too), :data:`FLOAT32` the partial
    windows at the edges of :func:`softpool_f32_kernel`'s image."""
    block_h, block_w, channels, n_cols, i1, constant = block_layout(img, out_rows, kh_dims, kw_dims,
                                                                    c_dims, sizes, i1)
    variant = len(variant_dims)
    if i0 >= i1:
        return
    scratch = np.empty((3, rows.shape[1] if variant == RELATIVE else 0))
    in_scale, out_max = params.in_scale, params.out_max
    for i in range(i0, i1):
        o, y0, ny, first = block_row(out_rows, i, block_h, img.shape[0], constant, j0)
        if variant == RELATIVE:
            _softpool_row(kh_dims, rows, img, y0, ny, first, n_cols, block_w, channels, o, params,
                          scratch)
            continue
        for j in range(first, n_cols):
            x0, nx, base = block_column(j, block_w, img.shape[1], constant, channels)
            if variant == TABLE:
                for c in range(channels):
                    o[base + c] = store(_softpool_table_block(rows, y0, ny, x0, nx, channels, c,
                                                              params.tables), out_max, o)
            else:
                scale, shift = _softpool_f32_exponent(params)
                for c in range(channels):
                    o[base + c] = _store_f32(_softpool_f32_window(rows, y0, ny, x0, nx, channels,
                                                                  c, scale, shift),
                                             in_scale, out_max, o)


#: Largest |beta * (a - ref)| that softpool's float32 kernel takes: its weights
#: e^(beta * (a - ref)) lie in [e^-8, e^8], and each is within 1.5e-6 of the
#: float64 one (see :func:`float32_applies`).
_EXP_LIMIT_F32 = 8.0


def float32_applies(beta: float, lo: float, hi: float) -> bool:
    """Whether softpool's float32 block kernel (:data:`FLOAT32`) keeps SPEC 1's
    accuracy on an image whose values lie in [lo, hi].

    Its weights are centred on the range's middle and bounded by
    ``e^(beta * (hi - lo) / 2)`` (at most e^8), so every term e * a stays in
    float32's normal range when the values' magnitude does: float images of
    magnitude above 1e30 (e * a would near float32's largest) or below 1e-30
    (e * a would be subnormal, with fewer significant bits) keep the float64
    kernels. The kernel forms each exponent as ``a * beta / ln 2 - shift`` in one
    multiply-add, which rounds once where the CPU fuses it and twice where it
    does not: ``beta * |a| <= 16`` keeps both roundings below 1.5e-6 of a weight
    (values far from 0 relative to their spread, such as [1000, 1001] at a beta
    that spread needs, keep the float64 kernels). beta = 4.4 on 8- and 16-bit
    images gives an exponent of 2.2 and beta * |a| <= 4.4.
    """
    magnitude = max(abs(lo), abs(hi))
    return (beta * (0.5 * hi - 0.5 * lo) <= _EXP_LIMIT_F32
            and beta * magnitude <= 2.0 * _EXP_LIMIT_F32
            and (magnitude == 0.0 or 1e-30 <= magnitude <= 1e30))


def pool(job: PoolJob, beta: float) -> None:
    """softpool of ``job`` on the CPU."""
    lo, hi = job.value_range
    if beta == 0.0:
        pool_avg(job)  # e^0 = 1: exactly avg, for any range
        return
    # With the exponent centred on the image's mid value, every e^(beta*(a - ref))
    # lies within e^+-(beta * (hi - lo) / 2); one pass of sums is exact when
    # that and the terms e * a stay far inside float64 (below e^600).
    # Otherwise each window subtracts its own maximum. Over constant blocks,
    # where e^(beta*|a - ref|) <= e^8, in float32 (eight values per vector),
    # with no table or window maximum.
    ref = 0.5 * (lo + hi)
    plan = block_plan(job)
    in_scale, out_max = float(job.in_scale), float(job.out_max)
    if plan is not None and plan.constant and float32_applies(beta, lo, hi):
        run_blocks(plan, softpool_blocks, job.image, job.out,
                   SoftpoolParams(in_scale, out_max, NO_TABLE, float(beta), float(ref)), FLOAT32,
                   full_kernel=softpool_f32_kernel)
        return
    magnitude = max(abs(lo), abs(hi), 1.0)
    bounded = beta * (0.5 * hi - 0.5 * lo) + math.log(magnitude) <= EXP_LIMIT
    values = working_values(job)
    if bounded and values is not None:  # integer input: tables of e and e * a
        weights = np.exp(beta * (values - ref))
        if plan is not None and plan.constant:
            # Interleaved, so that a value's two entries share a cache line.
            tables = np.stack([weights * values, weights], axis=1).ravel()
            run_blocks(plan, softpool_blocks, job.image, job.out,
                       SoftpoolParams(in_scale, out_max, tables, 0.0, 0.0), TABLE)
        else:
            run_separable(job, MODE_TABLES, weights * values, weights)
    elif plan is not None:
        run_blocks(plan, softpool_blocks, job.image, job.out,
                   SoftpoolParams(in_scale, out_max, NO_TABLE, float(beta), 0.0), RELATIVE)
    elif bounded:
        run_separable(job, MODE_SOFT, param=beta, ref=ref)
    else:
        run_rows(softpool_kernel, job.out, *job.kernel_args(), float(beta))
