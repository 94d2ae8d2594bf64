"""``dpp``: Detail-Preserving Pooling, Lite form (Saeedan et al. 2018; SPEC section 3).

Weights ``c (alpha + rho(a - g))``, g the coverage-weighted window mean,
``rho_sym(x) = (x^2 + eps^2)^(lam/2)``, ``rho_asym`` of ``max(0, x)``.

- :func:`dpp_window`, with the weights relative to the window's largest, so
  that no exponent or value can overflow them: the CPU's fallback and
  :mod:`downpool.cuda`'s device function.
- lam = 0 is avg.  The default lam = 1, where no weight times a value can
  overflow (checked in :func:`pool`), has the SPEC's weights as they stand, a
  square root per pixel (the *direct* forms): in the general kernel around the
  row's window means made first (:func:`_dpp_direct_row_taps`), over constant
  blocks window by window (vectorised across windows), over run-time blocks in
  passes along the row (:func:`_dpp_direct_row`, in float32 on 8- and 16-bit
  images).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..blocks import block_column, block_layout, block_plan, block_row, run_blocks
from ..core import PoolJob
from ..numba_idioms import (ROW_CHUNK, block_mean, column_sums, fill, fold_windows, inlined, jit,
                            power, power_inlined, row_buffer, row_float, store, store_pixel,
                            window_mean)
from ..separable import EXP_LIMIT, gather_taps, mean_row
from ..threads import run_rows
from .avg import pool as pool_avg

__all__ = ["DPP_EPS2", "dpp_scaling", "dpp_window", "dpp_kernel", "DppParams", "dpp_blocks", "pool"]

# eps^2 of the DPP reward functions (SPEC section 3), on [0, 1] values.
DPP_EPS2 = 1e-3


@jit
def dpp_scaling(big, half_lam, alpha):
    """``(eps2, inv_big, inv_peak, share)`` of a DPP window whose largest reward
    argument ``|a - g|`` is ``big`` (> 0), for weights relative to the largest.

    Differences are scaled by ``1/big`` so that squares of large float values
    cannot overflow; eps^2 is scaled alike (it may underflow to 0, harmlessly).
    The largest scaled argument is ``peak = 1 + eps2``; reciprocals are taken
    once per window, so a pixel costs a multiply instead of a divide.
    ``share`` is the bias as a share of the largest weight,
    alpha / (alpha + rho_max) with rho_max = (big^2 * peak)^(lam/2), in logs so
    that it cannot overflow.  A pixel's weight is then proportional to
    ``share + (1 - share) * ((d^2 + eps2) * inv_peak)^(lam/2)``, d = (a - g) / big.
    """
    eps2 = DPP_EPS2 / (big * big)
    peak = 1.0 + eps2
    if alpha > 0.0:
        log_rho_max = half_lam * (2.0 * math.log(big) + math.log(peak))
        share = 1.0 / (1.0 + math.exp(log_rho_max - math.log(alpha)))
    else:
        share = 0.0
    return eps2, 1.0 / big, 1.0 / peak, share


@jit
def dpp_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, alpha, lam, asym, res):
    half_lam = 0.5 * lam
    for c in range(res.shape[0]):
        g = window_mean(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, c)
        # Largest reward argument: the weights are computed relative to it so
        # that (x^2 + eps^2)^(lam/2) neither overflows nor underflows.
        big = 0.0
        for r in range(ny):
            for s in range(nx):
                d = img[y0 + r, x0 + s, c] * in_scale - g
                if asym:
                    d = max(d, 0.0)
                big = max(big, abs(d))
        # Equal weights give the average: lam = 0, a flat window, or a spread
        # so far below eps that every reward equals eps^lam to 1e-30.
        if lam == 0.0 or big * big < DPP_EPS2 * 1e-30:
            res[c] = g
            continue
        eps2, inv_big, inv_peak, t = dpp_scaling(big, half_lam, alpha)
        num = 0.0
        den = 0.0
        for r in range(ny):
            for s in range(nx):
                a = img[y0 + r, x0 + s, c] * in_scale
                d = (a - g) * inv_big
                if asym:
                    d = max(d, 0.0)
                rel = power((d * d + eps2) * inv_peak, half_lam)
                w = yw[i, r] * xw[j, s] * (t + (1.0 - t) * rel)
                num += w * a
                den += w
        res[c] = num / den


_dpp_scaling_inlined = inlined(dpp_scaling)


@jit(inline="always")
def _dpp_direct_row_taps(rows, in_scale, y0, ny, yw, i, taps_index, taps_weight, means, alpha,
                         asym, values, num, den):
    """dpp with lam = 1 as the SPEC writes it, weights ``c (alpha + sqrt((a - g)^2 + eps^2))``
    around each window's mean ``g`` (``means``), for every value ``k = j*C + c`` of an
    output row: ``num[k]`` the sum of window j's weighted values of channel c, ``den[k]``
    of its weights.

    The caller has checked that no weight times a value can overflow (as for
    the block kernels' direct form). As in dpid's direct row, the pixels
    are gathered through the column taps, and the weights' arithmetic runs across
    the row's values, which LLVM vectorises; each window sums in its own order.
    """
    for k in range(num.shape[0]):
        num[k] = 0.0
        den[k] = 0.0
    for r in range(ny):
        wr = yw[i, r]
        for t in range(taps_index.shape[0]):
            weight = taps_weight[t]
            gather_taps(rows[y0 + r], taps_index[t], in_scale, values)
            for k in range(values.shape[0]):
                a = values[k]
                d = a - means[k]
                if asym:
                    d = 0.0 if d < 0.0 else d  # max(d, 0.0), as a select that vectorises
                w = wr * weight[k] * (alpha + math.sqrt(d * d + DPP_EPS2))
                num[k] += w * a
                den[k] += w


@jit(nogil=True, error_model="numpy")
def dpp_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, alpha, lam, asym,
               direct_dims, rows, taps_index, taps_weight, i0, i1):
    """dpp of output rows ``i0`` to ``i1``: the direct form where ``direct_dims`` is
    ``(0,)`` (lam = 1, checked by the caller), with each row's window means made
    first in passes along the row; else :func:`dpp_window`'s
    weights relative to each window's largest.  The form is the length of a
    tuple, so that Numba compiles one of them (:mod:`downpool.numba_idioms`).
    ``rows`` is ``img`` as rows, ``taps_*`` the horizontal pass of the means and of
    the direct form (:meth:`PoolJob.column_taps`).
    """
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    n_cols = out.shape[1]
    means = np.empty(n_cols * channels)
    column = np.empty(width * channels)
    res = np.empty(channels)
    row_values = n_cols * channels if len(direct_dims) > 0 else 0
    values = np.empty(row_values)
    num = np.empty(row_values)
    den = np.empty(row_values)
    for i in range(i0, i1):
        if len(direct_dims) > 0:
            mean_row(rows, i, ys, yn, yw, taps_index, taps_weight, in_scale, column, means)
            _dpp_direct_row_taps(rows, in_scale, ys[i], yn[i], yw, i, taps_index, taps_weight,
                                 means, alpha, asym, values, num, den)
            for j in range(n_cols):
                for c in range(channels):
                    res[c] = num[j * channels + c] / den[j * channels + c]
                store_pixel(out, i, j, res, out_max, out_int)
        else:
            for j in range(n_cols):
                dpp_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j,
                           alpha, lam, asym, res)
                store_pixel(out, i, j, res, out_max, out_int)


class DppParams(NamedTuple):
    """The parameters :func:`dpp_blocks` takes."""

    in_scale: float
    out_max: float
    alpha: float
    lam: float


# The variants of dpp_blocks: relative to the window's largest weight (any
# lam; too rarely used to compile kernels with constant sizes for), and the
# direct forms of lam = 1.
SYM = 1
ASYM = 2
SYM_DIRECT = 3
ASYM_DIRECT = 4


@jit(inline="always")
def _dpp_direct_block(rows, y0, ny, x0, nx, channels, c, in_scale, alpha, asym):
    """dpp with lam = 1 as the SPEC writes it: weights ``alpha + sqrt((a - g)^2 + eps^2)``.

    The caller has checked that no weight times a value can overflow.
    """
    g = block_mean(rows, y0, ny, x0, nx, channels, c, in_scale)
    num = 0.0
    den = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = src[(x0 + t) * channels + c] * in_scale
            d = a - g
            if asym:
                # max(d, 0.0) as a select: Numba's ``max`` keeps the loop across
                # windows from vectorising.
                d = 0.0 if d < 0.0 else d
            w = alpha + math.sqrt(d * d + DPP_EPS2)
            num += w * a
            den += w
    return num / den


def _dpp_direct_row(variant_dims, rows, img, y0, ny, first, n_cols, block_h, block_w, channels, o,
                    params, scratch):
    """:func:`_dpp_direct_block` for the row's full windows from ``first`` on; returns the
    first window not made (the kernel makes the partial ones).

    For run-time block sizes, where the window loops are too short and
    strided to vectorise: every pass runs along the row's contiguous W*C
    values instead -- the column sums of the means, each window's mean
    spread back over its columns, the weights and their sums -- and the sums
    across each window are folded into float64 per window. 8- and 16-bit
    images work in float32 (:func:`row_float`), twice as many values per
    vector, and sum at most ``ROW_CHUNK`` rows so before each fold.
    The passes' rows are buffers of their own (:func:`row_buffer`); the
    windows' sums are rows 0 and 1 of ``scratch``. Compiled on its own
    (``_dpp_direct_row_jit``) and called by :func:`dpp_blocks`.
    """
    last = min(img.shape[1] // block_w, n_cols)
    if ny < block_h or first >= last:
        return first
    in_scale, out_max = params.in_scale, params.out_max
    asym = len(variant_dims) == ASYM_DIRECT
    scale = row_float(rows, in_scale)
    alpha = row_float(rows, params.alpha)
    eps2 = row_float(rows, DPP_EPS2)
    zero = row_float(rows, 0.0)
    n_windows = last - first
    # Views from 0: loops from 0, which LLVM can tell are not negative indices
    # (numba wraps those), vectorise.
    start = first * block_w * channels
    length = n_windows * block_w * channels
    column = row_buffer(rows, length)
    mean = row_buffer(rows, length)
    num = row_buffer(rows, length)
    den = row_buffer(rows, length)
    window_num = scratch[0, :n_windows * channels]
    window_den = scratch[1, :n_windows * channels]
    # The windows' means, their terms scaled first, so that float sums cannot
    # overflow.
    fill(window_num, 0.0)
    mean_scale = row_float(rows, in_scale / (block_h * block_w))
    for r0 in range(0, block_h, ROW_CHUNK):
        column_sums(rows, y0 + r0, min(ROW_CHUNK, block_h - r0), start, length, mean_scale,
                     column)
        fold_windows(column, n_windows, block_w, channels, window_num)
    for j in range(n_windows):
        for c in range(channels):
            g = row_float(rows, window_num[j * channels + c])
            for t in range(block_w):
                mean[(j * block_w + t) * channels + c] = g
    fill(window_num, 0.0)
    fill(window_den, 0.0)
    for r0 in range(0, block_h, ROW_CHUNK):
        fill(num, 0.0)
        fill(den, 0.0)
        for r in range(r0, min(r0 + ROW_CHUNK, block_h)):
            src = rows[y0 + r, start:start + length]
            for x in range(length):
                a = row_float(rows, src[x]) * scale
                d = a - mean[x]
                if asym:
                    d = max(d, zero)
                w = alpha + math.sqrt(d * d + eps2)
                num[x] += w * a
                den[x] += w
        fold_windows(num, n_windows, block_w, channels, window_num)
        fold_windows(den, n_windows, block_w, channels, window_den)
    for k in range(n_windows * channels):
        o[first * channels + k] = store(window_num[k] / window_den[k], out_max, o)
    return last


@jit(inline="always")
def _dpp_block(rows, y0, ny, x0, nx, channels, c, in_scale, alpha, lam, asym):
    """:func:`dpp_window` with equal coverages, for one channel.

    The weights divided by their largest, so that no exponent or value can
    overflow them.
    """
    g = block_mean(rows, y0, ny, x0, nx, channels, c, in_scale)
    big = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            d = src[(x0 + t) * channels + c] * in_scale - g
            if asym:
                d = max(d, 0.0)
            big = max(big, abs(d))
    if lam == 0.0 or big * big < DPP_EPS2 * 1e-30:
        return g
    half_lam = 0.5 * lam
    eps2, inv_big, inv_peak, share = _dpp_scaling_inlined(big, half_lam, alpha)
    num = 0.0
    den = 0.0
    # Weights divided by the pixel count, as normalised coverages are: sums of
    # values near float64's maximum stay finite.
    inv_n = 1.0 / (ny * nx)
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = src[(x0 + t) * channels + c] * in_scale
            d = (a - g) * inv_big
            if asym:
                d = max(d, 0.0)
            w = inv_n * (share + (1.0 - share) * power_inlined((d * d + eps2) * inv_peak, half_lam))
            num += w * a
            den += w
    return num / den


# The row passes for run-time sizes are compiled on their own and called, not
# inlined: Numba's typing of the kernel with their bodies inlined grows
# superlinearly, and lengthens their first call. Their sizes are
# run-time values anyway, so inlining bought no constants; a call per output
# row costs nothing measurable.
_dpp_direct_row_jit = jit(nogil=True, error_model="numpy")(_dpp_direct_row)


@jit(nogil=True, error_model="numpy")
def dpp_blocks(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
               params, j0, i0, i1):
    """dpp over blocks (:func:`downpool.blocks.run_blocks`), variant ``len(variant_dims)``:
    the direct forms over run-time blocks make a row's full windows in passes along it
    first (but in the edge kernel), the rest window by window."""
    block_h, block_w, channels, n_cols, i1, constant = block_layout(img, out_rows, kh_dims, kw_dims,
                                                                    c_dims, sizes, i1)
    variant = len(variant_dims)
    if i0 >= i1:
        return
    passes = not constant and len(edge_dims) == 0 and (variant == SYM_DIRECT
                                                       or variant == ASYM_DIRECT)
    scratch = np.empty((2, rows.shape[1] if passes else 0))
    in_scale, out_max, alpha = params.in_scale, params.out_max, params.alpha
    # Constants of the variant, which LLVM folds.
    direct = variant == SYM_DIRECT or variant == ASYM_DIRECT
    asym = variant == ASYM or variant == ASYM_DIRECT
    for i in range(i0, i1):
        o, y0, ny, first = block_row(out_rows, i, block_h, img.shape[0], constant, j0)
        if len(kh_dims) == 0 and len(edge_dims) == 0 and (variant == SYM_DIRECT
                                                          or variant == ASYM_DIRECT):
            first = _dpp_direct_row_jit(variant_dims, rows, img, y0, ny, first, n_cols, block_h,
                                        block_w, channels, o, params, scratch)
        for j in range(first, n_cols):
            x0, nx, base = block_column(j, block_w, img.shape[1], constant, channels)
            for c in range(channels):
                if direct:
                    v = _dpp_direct_block(rows, y0, ny, x0, nx, channels, c, in_scale, alpha, asym)
                else:
                    v = _dpp_block(rows, y0, ny, x0, nx, channels, c, in_scale, alpha, params.lam,
                                   asym)
                o[base + c] = store(v, out_max, o)


def pool(job: PoolJob, alpha: float, lam: float, variant: str) -> None:
    """dpp of ``job`` on the CPU."""
    if lam == 0.0:
        pool_avg(job)  # every weight is alpha + 1: the window's mean
        return
    # The default lam = 1 has weights alpha + sqrt((a - g)^2 + eps^2) as they
    # stand, where every w * a lies far inside float64; else the kernels divide
    # the weights by the window's largest, for any exponent.
    lo, hi = job.value_range
    magnitude = max(abs(lo), abs(hi), 1.0)
    span = hi - lo  # may be inf: a product, not a power, which would raise
    direct = lam == 1.0 and (math.log(max(alpha, 1.0)) + 0.5 * math.log(span * span + DPP_EPS2)
                             + math.log(magnitude) <= EXP_LIMIT)
    plan = block_plan(job)
    if plan is None:
        run_rows(dpp_kernel, job.out, *job.kernel_args(), float(alpha), float(lam),
                 variant == "asym", (0,) if direct else (), job.row_views()[0],
                 *job.column_taps())
        return
    if variant == "asym":
        form = ASYM_DIRECT if direct else ASYM
    else:
        form = SYM_DIRECT if direct else SYM
    run_blocks(plan, dpp_blocks, job.image, job.out,
               DppParams(float(job.in_scale), float(job.out_max), float(alpha), float(lam)), form,
               runtime_only=not direct)
