"""Numba CPU kernels, one per method.

Every kernel has the same shape: ``prange`` over output rows, a loop over
output columns, a per-window function that writes one pooled value per channel
into ``res``, and :func:`_store_pixel` that converts to the output dtype.  The
window functions take the window as ``(y0, ny, wy, x0, nx, wx)``: first row,
row count and normalised row coverages, likewise for columns (see
:mod:`downpool.geometry`).

Input values are read in their own dtype and multiplied by ``in_scale`` (1/255,
1/65535 or 1), so integer images are never copied to float.  Arithmetic is
float64: it keeps the SPEC's 1e-5 accuracy for any window size and float
inputs of any range.

The Python-level entry points are ``pool_<method>(job, **params)``; the API
looks them up by method name.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .core import PoolJob, smooth_guide

__all__ = [
    "pool_avg",
    "pool_max",
    "pool_lp",
    "pool_softpool",
    "pool_stochastic",
    "pool_dpp",
    "pool_dpid",
    "uniform_draw",
]

# eps^2 of the DPP reward functions (SPEC section 3), on [0, 1] values.
DPP_EPS2 = 1e-3


@njit(cache=True)
def _stored(v, out_max, out_int):
    """A working value as the output dtype stores it: integers scaled, rounded half up, clipped."""
    if out_int:
        return min(max(math.floor(v * out_max + 0.5), 0.0), out_max)
    return v


@njit(cache=True)
def _store_pixel(out, i, j, res, out_max, out_int):
    for c in range(res.shape[0]):
        out[i, j, c] = _stored(res[c], out_max, out_int)


# --- separable kernels -------------------------------------------------------
#
# avg, max, lp, softpool and stochastic's expectation are ratios of sums of
# per-pixel terms weighted by c = wy * wx, so each output row is made in two
# passes: a vertical pass that accumulates the window's rows into buffers
# along the contiguous W*C axis (which LLVM vectorises), then a horizontal
# pass over each window's columns.  What each mode accumulates:
#
#   SUM       num += w*v                      out = num * in_scale
#   TABLE     num += w*num_table[v]           out = num^(1/param)       (lp, integer input)
#   TABLES    num += w*num_table[v]           out = num / den           (softpool, integer input)
#             den += w*den_table[v]
#   SOFT      e = exp(param*(a - ref))        out = num / den           (softpool, float input
#             num += w*e*a; den += w*e                                   of bounded range)
#   SQUARES   num += w*a*a; den += w*a        out = ref * num / den, 0 where den = 0
#
# v is the stored value, a = v * in_scale the working value.

MODE_SUM = 0
MODE_TABLE = 1
MODE_TABLES = 2
MODE_SOFT = 3
MODE_SQUARES = 4


@njit(cache=True)
def _row_chunks(n_rows):
    """Split ``n_rows`` output rows into chunks for ``prange``: (number, rows per chunk).

    Enough chunks to balance any thread count up to 64, few enough that
    per-chunk set-up (buffer allocation) costs nothing.
    """
    n_chunks = min(n_rows, 256)
    chunk = (n_rows + n_chunks - 1) // n_chunks
    return (n_rows + chunk - 1) // chunk, chunk


@njit(cache=True)
def _accumulate_row(row, w, in_scale, mode, num_table, den_table, param, ref, num, den):
    """Add one input row's terms, weighted by ``w``, to ``num`` and ``den``.

    One loop per mode, with the branch outside the element loop, so that
    each loop vectorises.
    """
    n = row.shape[0]
    if mode == MODE_SUM:
        for x in range(n):
            num[x] += w * row[x]
    elif mode == MODE_TABLE:
        for x in range(n):
            num[x] += w * num_table[np.intp(row[x])]
    elif mode == MODE_TABLES:
        for x in range(n):
            # The cast lets the float specialisations compile; they never take this branch.
            v = np.intp(row[x])
            num[x] += w * num_table[v]
            den[x] += w * den_table[v]
    elif mode == MODE_SOFT:
        for x in range(n):
            a = row[x] * in_scale
            e = w * math.exp(param * (a - ref))
            num[x] += e * a
            den[x] += e
    else:
        for x in range(n):
            a = row[x] * in_scale
            num[x] += w * a * a
            den[x] += w * a


@njit(parallel=True, cache=True)
def separable_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int,
                     mode, num_table, den_table, param, ref):
    """Separable pooling: ``mode`` and its arguments as in the table above."""
    height, width, channels = img.shape
    rows = img.reshape(height, width * channels)
    out_rows = out.reshape(out.shape[0], out.shape[1] * channels)
    uses_den = mode != MODE_SUM and mode != MODE_TABLE
    n_chunks, chunk = _row_chunks(out.shape[0])
    for t in prange(n_chunks):
        # Row buffers are made once per chunk, not per output row: a buffer
        # above malloc's mmap threshold costs page faults each time.
        num = np.empty(width * channels)
        den = np.empty(width * channels if uses_den else 1)
        out_num = np.empty(out_rows.shape[1])
        out_den = np.empty(out_rows.shape[1] if uses_den else 1)
        for i in range(t * chunk, min((t + 1) * chunk, out.shape[0])):
            num[:] = 0.0
            den[:] = 0.0
            for r in range(yn[i]):
                _accumulate_row(rows[ys[i] + r], yw[i, r], in_scale, mode, num_table, den_table,
                                param, ref, num, den)
            _pool_columns(num, xs, xn, xw, channels, out_num)
            if uses_den:
                _pool_columns(den, xs, xn, xw, channels, out_den)
            _finish_row(out_num, out_den, in_scale, mode, param, ref, out_max, out_int,
                        out_rows[i])


@njit(cache=True)
def _pool_columns(row_sums, xs, xn, xw, channels, pooled):
    """Horizontal pass: ``pooled[j*C + c] = sum_s xw[j, s] * row_sums[(xs[j] + s)*C + c]``."""
    for j in range(xs.shape[0]):
        base = j * channels
        for c in range(channels):
            pooled[base + c] = 0.0
        for s in range(xn[j]):
            w = xw[j, s]
            src = (xs[j] + s) * channels
            for c in range(channels):
                pooled[base + c] += w * row_sums[src + c]


@njit(cache=True)
def _finish_row(num, den, in_scale, mode, param, ref, out_max, out_int, out_row):
    # One loop per mode, each simple enough to vectorise.
    n = out_row.shape[0]
    if mode == MODE_SUM:
        for k in range(n):
            out_row[k] = _stored(num[k] * in_scale, out_max, out_int)
    elif mode == MODE_TABLE:
        inv_p = 1.0 / param
        for k in range(n):
            out_row[k] = _stored(num[k] ** inv_p, out_max, out_int)
    elif mode == MODE_SQUARES:
        for k in range(n):
            out_row[k] = _stored(ref * num[k] / den[k] if den[k] > 0.0 else 0.0, out_max, out_int)
    else:
        for k in range(n):
            out_row[k] = _stored(num[k] / den[k], out_max, out_int)


@njit(parallel=True, cache=True)
def separable_max_kernel(img, in_scale, ys, yn, xs, xn, out, out_max, out_int):
    """Max pooling: the column-wise max of the window's rows, then the max along each window."""
    height, width, channels = img.shape
    rows = img.reshape(height, width * channels)
    n_chunks, chunk = _row_chunks(out.shape[0])
    for t in prange(n_chunks):
        top = np.empty(width * channels, dtype=img.dtype)
        for i in range(t * chunk, min((t + 1) * chunk, out.shape[0])):
            top[:] = rows[ys[i]]
            for r in range(1, yn[i]):
                row = rows[ys[i] + r]
                for x in range(top.shape[0]):
                    top[x] = max(top[x], row[x])
            for j in range(out.shape[1]):
                for c in range(channels):
                    m = top[xs[j] * channels + c]
                    for s in range(1, xn[j]):
                        m = max(m, top[(xs[j] + s) * channels + c])
                    out[i, j, c] = _stored(m * in_scale, out_max, out_int)


@njit(cache=True)
def _window_max(img, in_scale, y0, ny, x0, nx, c):
    m = -np.inf
    for r in range(ny):
        for s in range(nx):
            m = max(m, img[y0 + r, x0 + s, c] * in_scale)
    return m


@njit(cache=True)
def _window_mean(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, c):
    acc = 0.0
    for r in range(ny):
        for s in range(nx):
            acc += yw[i, r] * xw[j, s] * img[y0 + r, x0 + s, c]
    return acc * in_scale


@njit(cache=True)
def _power(x, e):
    """``x ** e`` with the common exponents made cheap (dpp and dpid's default lam=1)."""
    if e == 0.5:
        return math.sqrt(x)
    if e == 1.0:
        return x
    if e == 2.0:
        return x * x
    return x ** e


# --- lp --------------------------------------------------------------------


@njit(cache=True)
def _lp_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, p, res):
    for c in range(res.shape[0]):
        m = _window_max(img, in_scale, y0, ny, x0, nx, c)
        if m <= 0.0:  # all zero (negative input is rejected before)
            res[c] = 0.0
            continue
        acc = 0.0
        for r in range(ny):
            for s in range(nx):
                acc += yw[i, r] * xw[j, s] * (img[y0 + r, x0 + s, c] * in_scale / m) ** p
        res[c] = m * acc ** (1.0 / p)


@njit(parallel=True, cache=True)
def lp_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, p):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            _lp_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j, p, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- softpool --------------------------------------------------------------


@njit(cache=True)
def _softpool_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, beta, res):
    for c in range(res.shape[0]):
        # Subtracting the maximum keeps every exponent <= 0: no overflow for
        # any beta or value range, and the largest pixel always has weight 1.
        m = _window_max(img, in_scale, y0, ny, x0, nx, c)
        num = 0.0
        den = 0.0
        for r in range(ny):
            for s in range(nx):
                a = img[y0 + r, x0 + s, c] * in_scale
                w = yw[i, r] * xw[j, s] * math.exp(beta * (a - m))
                num += w * a
                den += w
        res[c] = num / den


@njit(parallel=True, cache=True)
def softpool_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, beta):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            _softpool_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j, beta, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- stochastic ------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def _splitmix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def uniform_draw(seed, index):
    """A uniform number in [0, 1) that depends only on ``(seed, index)``.

    SplitMix64 (Steele, Lea & Flood 2014) of the seed's own hash plus the
    index times the golden-ratio increment: a counter-based generator, so
    the draw for an output pixel does not depend on which thread makes it.
    """
    z = _splitmix64(np.uint64(seed)) + (np.uint64(index) + np.uint64(1)) * _GOLDEN
    return np.float64(_splitmix64(z) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _selection_value(img, y, x, value_mode, n_colour):
    """``v`` of SPEC's stochastic pooling: luma of RGB(A) or the mean of the colour channels."""
    if value_mode == 1:
        return 0.2126 * img[y, x, 0] + 0.7152 * img[y, x, 1] + 0.0722 * img[y, x, 2]
    acc = 0.0
    for c in range(n_colour):
        acc += img[y, x, c]
    return acc / n_colour


@njit(cache=True)
def _sample_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, u, value_mode, n_colour, res):
    total = 0.0
    for r in range(ny):
        for s in range(nx):
            total += yw[i, r] * xw[j, s] * _selection_value(img, y0 + r, x0 + s, value_mode, n_colour)
    uniform = total <= 0.0  # all weights zero: draw by coverage alone
    target = u * (1.0 if uniform else total)
    cum = 0.0
    pick_y = -1
    pick_x = -1
    for r in range(ny):
        for s in range(nx):
            w = yw[i, r] * xw[j, s]
            if not uniform:
                w *= _selection_value(img, y0 + r, x0 + s, value_mode, n_colour)
            if w > 0.0:
                # The last pixel with weight is the fallback if rounding
                # leaves ``cum`` just short of ``target`` at the end.
                pick_y = y0 + r
                pick_x = x0 + s
                cum += w
                if cum > target:
                    break
        if cum > target:
            break
    for c in range(res.shape[0]):
        res[c] = img[pick_y, pick_x, c] * in_scale


@njit(parallel=True, cache=True)
def stochastic_sample_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int,
                             seed, value_mode, n_colour):
    width = out.shape[1]
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(width):
            u = uniform_draw(seed, i * width + j)
            _sample_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j,
                           u, value_mode, n_colour, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- dpp -------------------------------------------------------------------


@njit(cache=True)
def _dpp_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, alpha, lam, asym, res):
    half_lam = 0.5 * lam
    for c in range(res.shape[0]):
        g = _window_mean(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, c)
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
        # Scale differences by 1/big so that squares of large float values
        # cannot overflow; eps^2 is scaled alike (it may underflow to 0, harmlessly).
        eps2 = DPP_EPS2 / (big * big)
        peak = 1.0 + eps2  # the largest scaled reward argument
        # The bias as a share of the largest weight: alpha / (alpha + rho_max),
        # rho_max = (big^2 * peak)^(lam/2), in logs so that it cannot overflow.
        if alpha > 0.0:
            log_rho_max = half_lam * (2.0 * math.log(big) + math.log(peak))
            t = 1.0 / (1.0 + math.exp(log_rho_max - math.log(alpha)))
        else:
            t = 0.0
        num = 0.0
        den = 0.0
        for r in range(ny):
            for s in range(nx):
                a = img[y0 + r, x0 + s, c] * in_scale
                d = (a - g) / big
                if asym:
                    d = max(d, 0.0)
                rel = _power((d * d + eps2) / peak, half_lam)
                w = yw[i, r] * xw[j, s] * (t + (1.0 - t) * rel)
                num += w * a
                den += w
        res[c] = num / den


@njit(parallel=True, cache=True)
def dpp_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, alpha, lam, asym):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            _dpp_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j,
                        alpha, lam, asym, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- dpid ------------------------------------------------------------------


@njit(cache=True)
def _dpid_distance2(img, in_scale, y, x, guide, i, j, n_colour, inv_big):
    """Squared colour distance of pixel (y, x) to the guide, differences scaled by ``inv_big``."""
    acc = 0.0
    for c in range(n_colour):
        d = (img[y, x, c] * in_scale - guide[i, j, c]) * inv_big
        acc += d * d
    return acc


@njit(cache=True)
def _dpid_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, guide, n_colour, lam, res):
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
    for c in range(channels):
        res[c] = 0.0
    den = 0.0
    for r in range(ny):
        for s in range(nx):
            w = yw[i, r] * xw[j, s]
            if lam != 0.0:  # d^0 = 1, also for d = 0
                d2 = _dpid_distance2(img, in_scale, y0 + r, x0 + s, guide, i, j, n_colour, inv_big)
                w *= _power(d2 / top2, half_lam)
            den += w
            for c in range(channels):
                res[c] += w * img[y0 + r, x0 + s, c]
    for c in range(channels):
        res[c] = res[c] * in_scale / den


@njit(parallel=True, cache=True)
def dpid_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, guide, n_colour, lam):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            _dpid_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j,
                         guide, n_colour, lam, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- entry points ----------------------------------------------------------

_NO_TABLE = np.zeros(1)

# Largest exponent magnitude the separable paths allow: e^600 and e^-600 are
# well inside float64, so no window's weights can all underflow or overflow.
_EXP_LIMIT = 600.0


def _separable(job: PoolJob, mode: int, num_table=_NO_TABLE, den_table=_NO_TABLE,
               param: float = 0.0, ref: float = 0.0, in_scale: float | None = None) -> None:
    args = list(job.kernel_args())
    if in_scale is not None:
        args[1] = in_scale
    separable_kernel(*args, mode, num_table, den_table, float(param), float(ref))


def _working_values(job: PoolJob) -> np.ndarray | None:
    """``a`` for every stored value of an integer input (its lookup table), else None."""
    if job.image.dtype.kind != "u":
        return None
    return np.arange(np.iinfo(job.image.dtype).max + 1, dtype=np.float64) * job.in_scale


def pool_avg(job: PoolJob) -> None:
    _separable(job, MODE_SUM)


def pool_max(job: PoolJob) -> None:
    gy, gx = job.rows, job.cols
    separable_max_kernel(job.image, job.in_scale, gy.start, gy.count, gx.start, gx.count,
                         job.out, job.out_max, job.out_int)


def pool_lp(job: PoolJob, p: float) -> None:
    values = _working_values(job)
    # Integer input: a table of a^p.  The smallest non-zero a^p, (1/max)^p,
    # must stay well inside the normal float64 range (e^-708), else windows
    # of small values lose precision or come out 0.
    if values is not None and p * math.log(values.shape[0] - 1) < _EXP_LIMIT:
        _separable(job, MODE_TABLE, values ** p, param=p)
    else:  # relative to each window's maximum, exact for any p
        lp_kernel(*job.kernel_args(), float(p))


def pool_softpool(job: PoolJob, beta: float) -> None:
    lo, hi = job.value_range
    if beta == 0.0:
        _separable(job, MODE_SUM)  # e^0 = 1: exactly avg, for any range
        return
    # With the exponent centred on the image's mid value, every e^(beta*(a - ref))
    # lies within e^+-(beta * (hi - lo) / 2); one separable pass is exact when
    # that and the terms e * a stay far inside float64 (below e^600).
    # Otherwise each window subtracts its own maximum.
    ref = 0.5 * (lo + hi)
    magnitude = max(abs(lo), abs(hi), 1.0)
    if not beta * (0.5 * hi - 0.5 * lo) + math.log(magnitude) <= _EXP_LIMIT:
        softpool_kernel(*job.kernel_args(), float(beta))
        return
    values = _working_values(job)
    if values is None:
        _separable(job, MODE_SOFT, param=beta, ref=ref)
    else:
        weights = np.exp(beta * (values - ref))
        _separable(job, MODE_TABLES, weights * values, weights)


def pool_stochastic(job: PoolJob, mode: str, seed: int) -> None:
    if mode == "sample":
        stochastic_sample_kernel(*job.kernel_args(), np.uint64(seed), job.value_mode, job.n_colour)
        return
    # sum c a^2 / sum c a is homogeneous of degree 1: pool a / hi, which cannot
    # overflow when squared, and multiply back.
    top = job.value_range[1]
    unit = top if top > 0.0 else 1.0
    _separable(job, MODE_SQUARES, ref=unit, in_scale=job.in_scale / unit)


def pool_dpp(job: PoolJob, alpha: float, lam: float, variant: str) -> None:
    dpp_kernel(*job.kernel_args(), float(alpha), float(lam), variant == "asym")


def pool_dpid(job: PoolJob, lam: float) -> None:
    # Guide: the area average of every channel, then the 3x3 binomial smoothing.
    area = job.with_output(np.empty(job.out.shape, dtype=np.float64))
    pool_avg(area)
    guide = smooth_guide(area.out)
    dpid_kernel(*job.kernel_args(), guide, job.n_colour, float(lam))
