"""``dpid``: Detail-Preserving Image Downscaling (Weber et al. 2016; SPEC section 3).

Always area geometry.  The guide G is each output pixel's area mean, smoothed
by ``[1 2 1]^T [1 2 1]`` into Gs (:func:`smooth_row`, renormalised at the
borders); weights ``c d^lam``, d a pixel's colour distance to its window's Gs;
where every weight is 0 the output is Gs.

- :func:`dpid_window`, with the distances relative to the window's largest, so
  that no exponent or value can overflow or flush the weights: the CPU's
  fallback and :mod:`downpool.cuda`'s device function.
- The guide is made a row at a time: each call keeps the G rows i-1, i, i+1 in
  a ring of three rows, smooths them into Gs of row i and pools row i's
  windows against it, so nothing of the output's size is allocated (a whole
  float64 guide and its smoothing were 3-4x the output's bytes).
- lam = 0 is avg.  The default lam = 1 on integer and float32 images (no
  distance can overflow, nor its square flush to zero) has the weights
  ``|a - Gs|`` as they stand (the *direct* forms): in the general kernel
  across the row's windows (:func:`_dpid_direct_row_taps`), over constant
  blocks window by window with up to four channels in scalars, over RGB
  blocks of run-time size in passes along the row (:func:`_dpid_direct_row`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..blocks import block_column, block_layout, block_plan, block_row, run_blocks
from ..core import PoolJob
from ..numba_idioms import (ROW_CHUNK, block_mean, column_sums, fill, fold_windows, jit, known,
                            power, power_inlined, row_buffer, row_float, store, store_pixel)
from ..separable import gather_taps, mean_row
from ..threads import run_rows
from .avg import pool as pool_avg

__all__ = ["dpid_window", "smooth_row", "dpid_kernel", "DpidParams", "dpid_blocks", "pool"]

@jit
def _dpid_distance2(img, in_scale, y, x, guide, i, j, n_colour, inv_big):
    """Squared colour distance of pixel (y, x) to the guide, differences scaled by ``inv_big``."""
    acc = 0.0
    for c in range(n_colour):
        d = (img[y, x, c] * in_scale - guide[i, j, c]) * inv_big
        acc += d * d
    return acc


@jit
def dpid_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, guide, n_colour, lam, res):
    channels = res.shape[0]
    # Largest per-channel difference, to scale the distances into [0, 1]:
    # squares of large float values cannot overflow, and the powers below are
    # taken relative to the box's largest distance.
    big = 0.0
    for r in range(ny):
        for s in range(nx):
            for c in range(n_colour):
                big = max(big, abs(img[y0 + r, x0 + s, c] * in_scale - guide[i, j, c]))
    if big == 0.0 and lam != 0.0:  # every distance is zero: sum w = 0
        for c in range(channels):
            res[c] = guide[i, j, c]
        return
    inv_big = 1.0 / big if big > 0.0 else 0.0
    # (d / d_max)^lam = (d^2 / d_max^2)^(lam/2): squared distances need no sqrt,
    # and the 1/n_colour of the SPEC's distance cancels in the ratio.
    top2 = 0.0
    if lam != 0.0:
        for r in range(ny):
            for s in range(nx):
                top2 = max(top2, _dpid_distance2(img, in_scale, y0 + r, x0 + s, guide, i, j,
                                                 n_colour, inv_big))
    half_lam = 0.5 * lam
    inv_top2 = 1.0 / top2 if top2 > 0.0 else 0.0  # top2 > 0 whenever lam != 0 here
    for c in range(channels):
        res[c] = 0.0
    den = 0.0
    for r in range(ny):
        for s in range(nx):
            w = yw[i, r] * xw[j, s]
            if lam != 0.0:  # d^0 = 1, also for d = 0
                d2 = _dpid_distance2(img, in_scale, y0 + r, x0 + s, guide, i, j, n_colour, inv_big)
                w *= power(d2 * inv_top2, half_lam)
            den += w
            for c in range(channels):
                res[c] += w * img[y0 + r, x0 + s, c]
    for c in range(channels):
        res[c] = res[c] * in_scale / den


@jit(inline="always")
def _smooth_weight(k, n):
    """The [1 2 1] side weight of index ``k`` of ``n``, renormalised at the ends
    (1/4 2/4 1/4 inside, 2/3 1/3 at an end)."""
    return 1.0 / 3.0 if k == 0 or k == n - 1 else 0.25


@jit
def smooth_row(ring, i, n_rows, channels, vert, gs):
    """Gs of output row ``i`` from the G rows in ``ring`` (row g at ``ring[g % 3]``):
    G smoothed by ``[1 2 1]^T [1 2 1]``, neighbours outside the output left out and
    the rest renormalised (SPEC 3, dpid step 2).

    The kernel is separable and the neighbours that exist form a product set,
    so a vertical pass, then a horizontal one, each renormalised, is the 2-D
    definition.  The weights are normalised before summing: a convex
    combination, which cannot overflow even near float64's maximum.  Every
    CPU kernel makes Gs here (the general and block kernels give the same
    bits).
    """
    mid = ring[i % 3]
    up = ring[(i - 1) % 3]
    down = ring[(i + 1) % 3]
    side = _smooth_weight(i, n_rows)
    # One pass per case: the row's scratch does not fit in L1, so passes cost.
    # Loops, not slice assignments (downpool.numba_idioms).
    if n_rows == 1:
        for x in range(vert.shape[0]):
            vert[x] = mid[x]
    elif i == 0:
        for x in range(vert.shape[0]):
            vert[x] = (2.0 * side) * mid[x] + side * down[x]
    elif i == n_rows - 1:
        for x in range(vert.shape[0]):
            vert[x] = (2.0 * side) * mid[x] + side * up[x]
    else:
        for x in range(vert.shape[0]):
            vert[x] = ((2.0 * side) * mid[x] + side * up[x]) + side * down[x]
    n_cols = vert.shape[0] // channels
    if n_cols == 1:
        for x in range(vert.shape[0]):
            gs[x] = vert[x]
        return
    # The end columns, then the inner ones in one contiguous loop (vectorised).
    edge = 1.0 / 3.0
    last = (n_cols - 1) * channels
    for c in range(channels):
        gs[c] = (2.0 * edge) * vert[c] + edge * vert[c + channels]
        gs[last + c] = (2.0 * edge) * vert[last + c] + edge * vert[last + c - channels]
    for k in range(channels, last):
        gs[k] = (0.5 * vert[k] + 0.25 * vert[k - channels]) + 0.25 * vert[k + channels]


@jit(inline="always")
def _dpid_direct_row_taps(rows, in_scale, y0, ny, yw, i, taps_index, taps_weight, channels,
                          n_colour, gs, values, den, sums):
    """dpid with lam = 1 as the SPEC writes it, weights ``c |a - Gs|``, for every window
    of an output row: ``den[j]`` the sum of window j's weights, ``sums[j*C + c]`` of
    its weighted values.

    The caller has checked that no weight can overflow or vanish (as for the
    block kernel's direct form). The SPEC's 1/sqrt(C) cancels in the ratio. Up to
    four channels (a constant), kept in scalars.

    The windows' pixels come from the column taps (:meth:`PoolJob.column_taps`):
    for each row and column offset, the pixels are gathered into ``values``
    first, and the weights' arithmetic (a square root per pixel) then runs over
    contiguous values, across windows, which LLVM vectorises. Each window still sums its pixels row by row, column by
    column, with zeros past its count: the order, and the bits, of a window at a
    time.
    """
    m1 = 1.0 if n_colour > 1 else 0.0
    m2 = 1.0 if n_colour > 2 else 0.0
    m3 = 1.0 if n_colour > 3 else 0.0
    for j in range(den.shape[0]):
        den[j] = 0.0
    for k in range(sums.shape[0]):
        sums[k] = 0.0
    for r in range(ny):
        wr = yw[i, r]
        for t in range(taps_index.shape[0]):
            weight = taps_weight[t]
            gather_taps(rows[y0 + r], taps_index[t], in_scale, values)
            for j in range(den.shape[0]):
                base = j * channels
                a0 = values[base]
                a1 = values[base + 1] if channels > 1 else 0.0
                a2 = values[base + 2] if channels > 2 else 0.0
                a3 = values[base + 3] if channels > 3 else 0.0
                g0 = gs[base]
                g1 = gs[base + 1] if channels > 1 else 0.0
                g2 = gs[base + 2] if channels > 2 else 0.0
                g3 = gs[base + 3] if channels > 3 else 0.0
                d2 = (a0 - g0) * (a0 - g0) + m1 * ((a1 - g1) * (a1 - g1)) \
                    + m2 * ((a2 - g2) * (a2 - g2)) + m3 * ((a3 - g3) * (a3 - g3))
                w = wr * weight[base] * math.sqrt(d2)
                den[j] += w
                sums[base] += w * a0
                if channels > 1:
                    sums[base + 1] += w * a1
                if channels > 2:
                    sums[base + 2] += w * a2
                if channels > 3:
                    sums[base + 3] += w * a3


@jit(nogil=True, error_model="numpy")
def dpid_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, n_colour, lam,
                direct_dims, rows, taps_index, taps_weight, i0, i1):
    """dpid of output rows ``i0`` to ``i1``: the direct form where ``direct_dims`` is a
    tuple of one zero per channel (lam = 1 and at most four channels, checked by the
    caller), else (``()``) :func:`dpid_window`'s weights relative to
    each window's largest distance.

    The form is the length of a tuple, so that Numba prunes the other form
    before typing (as in :func:`dpid_blocks`) and compiles
    one window function, not both; the direct form's channel count is then a
    constant, and its tests of it fold away.
    ``rows`` is ``img`` as rows, ``taps_*`` the guide's horizontal pass
    (:meth:`PoolJob.column_taps`), which the direct form reads too.
    """
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    n_rows, n_cols = out.shape[0], out.shape[1]
    # Rows 0-2 the ring of G rows (row g at g % 3), 3 the vertical smoothing, 4 Gs.
    ring = np.empty((5, n_cols * channels))
    column = np.empty(width * channels)
    res = np.empty(channels)
    den = np.empty(n_cols if len(direct_dims) > 0 else 0)
    sums = np.empty(n_cols * channels if len(direct_dims) > 0 else 0)
    values = np.empty(n_cols * channels if len(direct_dims) > 0 else 0)
    for i in range(i0, i1):
        first = max(i0 - 1, 0) if i == i0 else i + 1
        for g in range(first, min(i + 2, n_rows)):
            mean_row(rows, g, ys, yn, yw, taps_index, taps_weight, in_scale, column,
                      ring[g % 3])
        smooth_row(ring, i, n_rows, channels, ring[3], ring[4])
        gs = ring[4]
        if len(direct_dims) > 0:
            _dpid_direct_row_taps(rows, in_scale, ys[i], yn[i], yw, i, taps_index, taps_weight,
                                  len(direct_dims), n_colour, gs, values, den, sums)
            for j in range(n_cols):
                # A window whose weights all are 0 has every pixel at Gs, its output.
                some = den[j] > 0.0
                inv = 1.0 / den[j] if some else 0.0
                for c in range(channels):
                    k = j * channels + c
                    res[c] = sums[k] * inv if some else gs[k]
                store_pixel(out, i, j, res, out_max, out_int)
        else:
            # dpid_window indexes the guide and the row coverages by output row:
            # this row's alone, as row 0.
            guide = gs.reshape((1, n_cols, channels))
            wy = yw[i:i + 1]
            for j in range(n_cols):
                dpid_window(img, in_scale, ys[i], yn[i], wy, 0, xs[j], xn[j], xw, j, guide,
                            n_colour, lam, res)
                store_pixel(out, i, j, res, out_max, out_int)


class DpidParams(NamedTuple):
    """The parameters :func:`dpid_blocks` takes."""

    in_scale: float
    out_max: float
    lam: float
    n_colour: int


# The variants of dpid_blocks: distances relative to the window's largest (any
# lam; too rarely used to compile kernels with constant sizes for), and the
# direct form of lam = 1.
RELATIVE = 1
DIRECT = 2


@jit(inline="always")
def _guide_row(rows, g, block_h, block_w, channels, height, width, in_scale, dest):
    """G of output row ``g``: the area mean of every channel, in working values."""
    y0 = g * block_h
    ny = min(block_h, height - y0)
    n_cols = dest.shape[0] // channels
    full = width // block_w
    edge = 0
    if ny == block_h:
        for j in range(full):
            for c in range(channels):
                dest[j * channels + c] = block_mean(rows, y0, block_h, j * block_w, block_w,
                                                    channels, c, in_scale)
        edge = full
    for j in range(edge, n_cols):
        nx = min(block_w, width - j * block_w)
        for c in range(channels):
            dest[j * channels + c] = block_mean(rows, y0, ny, j * block_w, nx, channels, c,
                                                in_scale)


@jit(inline="always")
def _guide_row_passes(rows, g, block_h, block_w, channels, height, width, in_scale, dest,
                      column):
    """:func:`_guide_row` for run-time block sizes: the full windows' sums made down
    the contiguous row first (``column``, the row's length), then across each window."""
    y0 = g * block_h
    ny = min(block_h, height - y0)
    full = width // block_w
    length = full * block_w * channels
    sums = column[:length]
    column_sums(rows, y0, ny, 0, length, in_scale / (ny * block_w), sums)
    for j in range(full):
        for c in range(channels):
            acc = 0.0
            for t in range(block_w):
                acc += sums[(j * block_w + t) * channels + c]
            dest[j * channels + c] = acc
    for j in range(full, dest.shape[0] // channels):
        nx = width - j * block_w
        for c in range(channels):
            dest[j * channels + c] = block_mean(rows, y0, ny, j * block_w, nx, channels, c,
                                                in_scale)


@jit(inline="always")
def _dpid_direct_block(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale, out_max,
                       o):
    """dpid with lam = 1 as the SPEC writes it, weights ``|a - Gs|``, into ``o[base:]``.

    The caller has checked that no weight can overflow, and that a window
    whose weights all vanish has every pixel at Gs.  For kernels with a
    constant channel count of at most four (:func:`_dpid_direct_block_any` for the
    others): the channels are kept in scalars rather than in ``acc``, and
    LLVM vectorises across windows.
    """
    # A channel's share of the distance: 0 for alpha, as a factor rather than
    # a branch.
    m1 = 1.0 if n_colour > 1 else 0.0
    m2 = 1.0 if n_colour > 2 else 0.0
    m3 = 1.0 if n_colour > 3 else 0.0
    g0 = gs[base]
    g1 = gs[base + 1] if channels > 1 else 0.0
    g2 = gs[base + 2] if channels > 2 else 0.0
    g3 = gs[base + 3] if channels > 3 else 0.0
    den = 0.0
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            px = (x0 + t) * channels
            a0 = src[px] * in_scale
            d2 = (a0 - g0) * (a0 - g0)
            a1 = src[px + 1] * in_scale if channels > 1 else 0.0
            a2 = src[px + 2] * in_scale if channels > 2 else 0.0
            a3 = src[px + 3] * in_scale if channels > 3 else 0.0
            d2 += m1 * ((a1 - g1) * (a1 - g1)) + m2 * ((a2 - g2) * (a2 - g2)) \
                + m3 * ((a3 - g3) * (a3 - g3))
            w = math.sqrt(d2)
            den += w
            s0 += w * a0
            s1 += w * a1
            s2 += w * a2
            s3 += w * a3
    # den is 0 where every distance is: the output is then Gs.
    some = den > 0.0
    inv = 1.0 / den if some else 0.0
    o[base] = store(s0 * inv if some else g0, out_max, o)
    if channels > 1:
        o[base + 1] = store(s1 * inv if some else g1, out_max, o)
    if channels > 2:
        o[base + 2] = store(s2 * inv if some else g2, out_max, o)
    if channels > 3:
        o[base + 3] = store(s3 * inv if some else g3, out_max, o)


def _dpid_direct_row(rows, img, y0, ny, first, n_cols, block_h, block_w, channels, o, gs, params,
                     scratch):
    """:func:`_dpid_direct_block` for an RGB row's full windows from ``first`` on;
    returns the first window not made.

    As :func:`downpool.methods.dpp._dpp_direct_row`: passes along the row's pixels, for run-time
    block sizes, in float32 on 8- and 16-bit images, folded into float64
    every ``ROW_CHUNK`` rows; the channel count is the literal 3, so that
    the per-pixel channel loops unroll.
    """
    last = min(img.shape[1] // block_w, n_cols)
    if ny < block_h or first >= last or channels != 3:
        return first
    in_scale, out_max, n_colour = params.in_scale, params.out_max, params.n_colour
    rgb = 3
    scale = row_float(rows, in_scale)
    # Alpha has no share in the distance.
    share1 = row_float(rows, 1.0 if n_colour > 1 else 0.0)
    share2 = row_float(rows, 1.0 if n_colour > 2 else 0.0)
    n_windows = last - first
    start = first * block_w * rgb
    n_pixels = n_windows * block_w
    length = n_pixels * rgb
    spread = row_buffer(rows, length)
    sums = row_buffer(rows, length)
    den = row_buffer(rows, n_pixels)
    square = row_buffer(rows, length)
    window_sums = scratch[0, :n_windows * rgb]
    window_den = scratch[1, :n_windows]
    for j in range(n_windows):
        for t in range(block_w):
            for c in range(rgb):
                spread[(j * block_w + t) * rgb + c] = row_float(rows, gs[(first + j) * rgb + c])
    fill(window_sums, 0.0)
    fill(window_den, 0.0)
    for r0 in range(0, block_h, ROW_CHUNK):
        fill(sums, 0.0)
        fill(den, 0.0)
        # Each row in three passes, so that the one with the square roots runs
        # along whole vectors: the squared differences of every value, then
        # each pixel's weight (spread over its channels in ``square``), then
        # the sums.
        for r in range(r0, min(r0 + ROW_CHUNK, block_h)):
            src = rows[y0 + r, start:start + length]
            for x in range(length):
                d = row_float(rows, src[x]) * scale - spread[x]
                square[x] = d * d
            for p in range(n_pixels):
                w = math.sqrt(square[p * rgb] + share1 * square[p * rgb + 1]
                              + share2 * square[p * rgb + 2])
                den[p] += w
                for c in range(rgb):
                    square[p * rgb + c] = w
            for x in range(length):
                sums[x] += square[x] * row_float(rows, src[x])
        fold_windows(sums, n_windows, block_w, rgb, window_sums)
        fold_windows(den, n_windows, block_w, 1, window_den)
    for j in range(n_windows):
        total = window_den[j]
        # total is 0 where every distance is: the output is then Gs.
        some = total > 0.0
        inv = in_scale / total if some else 0.0
        for c in range(rgb):
            base = (first + j) * rgb + c
            o[base] = store(window_sums[j * rgb + c] * inv if some else gs[base], out_max, o)
    return last


@jit(inline="always")
def _distance2(src, px, gs, base, n_colour, in_scale, inv_big):
    """The squared colour distance to Gs of the pixel whose values start at ``src[px]``,
    the differences scaled by ``inv_big`` (1: as they are, the same bits)."""
    d2 = 0.0
    for c in range(n_colour):
        d = (src[px + c] * in_scale - gs[base + c]) * inv_big
        d2 += d * d
    return d2


@jit(inline="always")
def _clear(acc, channels):
    """``acc[:channels] = 0``, without a view per window."""
    for c in range(channels):
        acc[c] = 0.0


@jit(inline="always")
def _add_pixel(acc, src, px, w, channels):
    """``acc[c] += w * src[px + c]`` for every channel."""
    for c in range(channels):
        acc[c] += w * src[px + c]


@jit(inline="always")
def _dpid_direct_block_any(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale,
                           out_max, o, acc):
    """:func:`_dpid_direct_block` for any channel count, summing in ``acc``."""
    den = 0.0
    _clear(acc, channels)
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            px = (x0 + t) * channels
            w = math.sqrt(_distance2(src, px, gs, base, n_colour, in_scale, 1.0))
            den += w
            _add_pixel(acc, src, px, w, channels)
    some = den > 0.0
    inv_den = in_scale / den if some else 0.0
    for c in range(channels):
        o[base + c] = store(acc[c] * inv_den if some else gs[base + c], out_max, o)


@jit(inline="always")
def _dpid_block(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale, lam, out_max,
                o, acc):
    """:func:`dpid_window` with equal coverages, stored into ``o[base:]``.

    Distances relative to the window's largest, so that no exponent or
    value can overflow or flush the weights.
    """
    big = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            for c in range(n_colour):
                big = max(big, abs(src[(x0 + t) * channels + c] * in_scale - gs[base + c]))
    if big == 0.0 and lam != 0.0:  # every distance is zero: sum w = 0, the output is Gs
        for c in range(channels):
            o[base + c] = store(gs[base + c], out_max, o)
        return
    inv_big = 1.0 / big if big > 0.0 else 0.0
    top2 = 0.0
    if lam != 0.0:
        for r in range(ny):
            src = rows[y0 + r]
            for t in range(nx):
                top2 = max(top2, _distance2(src, (x0 + t) * channels, gs, base, n_colour,
                                            in_scale, inv_big))
    half_lam = 0.5 * lam
    inv_top2 = 1.0 / top2 if top2 > 0.0 else 0.0
    den = 0.0
    inv_n = 1.0 / (ny * nx)
    _clear(acc, channels)
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            px = (x0 + t) * channels
            w = inv_n  # normalised like coverages: sums near float64's maximum stay finite
            if lam != 0.0:
                w *= power_inlined(_distance2(src, px, gs, base, n_colour, in_scale, inv_big)
                                   * inv_top2, half_lam)
            den += w
            _add_pixel(acc, src, px, w, channels)
    for c in range(channels):
        o[base + c] = store(acc[c] * in_scale / den, out_max, o)


@jit
def _dpid_guide(rows, i, i0, n_rows, kh_dims, kw_dims, c_dims, sizes, height, width, in_scale,
                scratch, column):
    """dpid: Gs of output row ``i`` into ``scratch[4]`` (a call's first row also makes
    the G rows before it).

    A function of its own, compiled for the kernel's dims: the block's
    constant sizes reach its loops, and the kernel's compiling stays short.
    With run-time sizes, the G rows are made in passes along the row, in
    ``column`` (the image row's length).
    """
    block_h = known(kh_dims, sizes[0])
    block_w = known(kw_dims, sizes[1])
    channels = known(c_dims, rows.shape[1] // width)
    first = max(i0 - 1, 0) if i == i0 else i + 1
    for g in range(first, min(i + 2, n_rows)):
        # A test of an argument tuple's length: pruned before typing (downpool.numba_idioms).
        if len(kh_dims) == 0:
            _guide_row_passes(rows, g, block_h, block_w, channels, height, width, in_scale,
                              scratch[g % 3], column)
        else:
            _guide_row(rows, g, block_h, block_w, channels, height, width, in_scale,
                       scratch[g % 3])
    smooth_row(scratch, i, n_rows, channels, scratch[3], scratch[4])


# Compiled on its own and called, not inlined, as dpp's row passes are
# (downpool.methods.dpp says why).
_dpid_direct_row_jit = jit(nogil=True, error_model="numpy")(_dpid_direct_row)


@jit(nogil=True, error_model="numpy")
def dpid_blocks(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
                params, j0, i0, i1):
    """dpid over blocks (:func:`downpool.blocks.run_blocks`), variant ``len(variant_dims)``;
    each row's Gs first (:func:`_dpid_guide`), then its windows: the direct form over
    run-time RGB blocks a row's full windows in passes along it (but in the edge
    kernel), the rest window by window."""
    block_h, block_w, channels, n_cols, i1, constant = block_layout(img, out_rows, kh_dims, kw_dims,
                                                                    c_dims, sizes, i1)
    variant = len(variant_dims)
    height, width = img.shape[0], img.shape[1]
    n_rows = out_rows.shape[0]
    if i0 >= i1:
        return
    # Rows 0-2 the ring of guide rows, 3 the vertical pass, 4 Gs, 5 a pixel.
    scratch = np.empty((6, out_rows.shape[1]))
    gs, acc = scratch[4], scratch[5]
    # For run-time sizes: the guide rows' column sums, and the direct form's
    # window sums.
    row_scratch = np.empty((3, 0 if constant else rows.shape[1]))
    in_scale, out_max, lam, n_colour = params.in_scale, params.out_max, params.lam, params.n_colour
    for i in range(i0, i1):
        _dpid_guide(rows, i, i0, n_rows, kh_dims, kw_dims, c_dims, sizes, height, width,
                    in_scale, scratch, row_scratch[2])
        o, y0, ny, first = block_row(out_rows, i, block_h, height, constant, j0)
        if len(kh_dims) == 0 and len(edge_dims) == 0 and variant == DIRECT:
            first = _dpid_direct_row_jit(rows, img, y0, ny, first, n_cols, block_h, block_w,
                                         channels, o, gs, params, row_scratch)
        for j in range(first, n_cols):
            x0, nx, base = block_column(j, block_w, width, constant, channels)
            if variant == RELATIVE:
                _dpid_block(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale, lam,
                            out_max, o, acc)
            elif len(c_dims) > 0 and len(c_dims) <= 4:  # channels in scalars
                _dpid_direct_block(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale,
                                   out_max, o)
            else:
                _dpid_direct_block_any(rows, y0, ny, x0, nx, channels, n_colour, gs, base,
                                       in_scale, out_max, o, acc)


def pool(job: PoolJob, lam: float) -> None:
    """dpid of ``job`` on the CPU."""
    if lam == 0.0:
        pool_avg(job)  # every weight is 1: the window's mean
        return
    # The default lam = 1 has weights |a - Gs| as they stand for integer and
    # float32 images: no distance can overflow in float64, nor be so small
    # that its square flushes to zero without being zero.  Else the kernels
    # divide the distances by the window's largest, for any exponent.
    direct = lam == 1.0 and job.image.dtype != np.float64
    plan = block_plan(job)
    if plan is not None:
        run_blocks(plan, dpid_blocks, job.image, job.out,
                   DpidParams(float(job.in_scale), float(job.out_max), float(lam),
                              int(job.n_colour)), DIRECT if direct else RELATIVE,
                   runtime_only=not direct)
        return
    # The general kernel's direct form keeps up to four channels in scalars.
    direct = direct and job.image.shape[2] <= 4
    run_rows(dpid_kernel, job.out, *job.kernel_args(), job.n_colour, float(lam),
             (0,) * job.image.shape[2] if direct else (), job.row_views()[0],
             *job.column_taps())
