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
]

# eps^2 of the DPP reward functions (SPEC section 3), on [0, 1] values.
DPP_EPS2 = 1e-3


@njit(cache=True)
def _store_pixel(out, i, j, res, out_max, out_int):
    """Write ``res`` to ``out[i, j]``: scaled, rounded half up and clipped for integers."""
    for c in range(res.shape[0]):
        v = res[c]
        if out_int:
            v = math.floor(v * out_max + 0.5)
            v = min(max(v, 0.0), out_max)
        out[i, j, c] = v


@njit(cache=True)
def _window_max(img, in_scale, y0, ny, x0, nx, c):
    m = -np.inf
    for r in range(ny):
        for s in range(nx):
            m = max(m, img[y0 + r, x0 + s, c] * in_scale)
    return m


@njit(cache=True)
def _window_mean(img, in_scale, y0, ny, wy, x0, nx, wx, c):
    acc = 0.0
    for r in range(ny):
        for s in range(nx):
            acc += wy[r] * wx[s] * img[y0 + r, x0 + s, c]
    return acc * in_scale


# --- avg -------------------------------------------------------------------


@njit(cache=True)
def _avg_window(img, in_scale, y0, ny, wy, x0, nx, wx, res):
    for c in range(res.shape[0]):
        res[c] = _window_mean(img, in_scale, y0, ny, wy, x0, nx, wx, c)


@njit(parallel=True, cache=True)
def avg_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            _avg_window(img, in_scale, ys[i], yn[i], yw[i], xs[j], xn[j], xw[j], res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- max -------------------------------------------------------------------


@njit(parallel=True, cache=True)
def max_kernel(img, in_scale, ys, yn, xs, xn, out, out_max, out_int):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            for c in range(res.shape[0]):
                res[c] = _window_max(img, in_scale, ys[i], yn[i], xs[j], xn[j], c)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- lp --------------------------------------------------------------------


@njit(cache=True)
def _lp_window(img, in_scale, y0, ny, wy, x0, nx, wx, p, res):
    for c in range(res.shape[0]):
        m = _window_max(img, in_scale, y0, ny, x0, nx, c)
        if m <= 0.0:  # all zero (negative input is rejected before)
            res[c] = 0.0
            continue
        acc = 0.0
        for r in range(ny):
            for s in range(nx):
                acc += wy[r] * wx[s] * (img[y0 + r, x0 + s, c] * in_scale / m) ** p
        res[c] = m * acc ** (1.0 / p)


@njit(parallel=True, cache=True)
def lp_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, p):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            _lp_window(img, in_scale, ys[i], yn[i], yw[i], xs[j], xn[j], xw[j], p, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- softpool --------------------------------------------------------------


@njit(cache=True)
def _softpool_window(img, in_scale, y0, ny, wy, x0, nx, wx, beta, res):
    for c in range(res.shape[0]):
        # Subtracting the maximum keeps every exponent <= 0: no overflow for
        # any beta or value range, and the largest pixel always has weight 1.
        m = _window_max(img, in_scale, y0, ny, x0, nx, c)
        num = 0.0
        den = 0.0
        for r in range(ny):
            for s in range(nx):
                a = img[y0 + r, x0 + s, c] * in_scale
                w = wy[r] * wx[s] * math.exp(beta * (a - m))
                num += w * a
                den += w
        res[c] = num / den


@njit(parallel=True, cache=True)
def softpool_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, beta):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            _softpool_window(img, in_scale, ys[i], yn[i], yw[i], xs[j], xn[j], xw[j], beta, res)
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
def _sample_window(img, in_scale, y0, ny, wy, x0, nx, wx, u, value_mode, n_colour, res):
    total = 0.0
    for r in range(ny):
        for s in range(nx):
            total += wy[r] * wx[s] * _selection_value(img, y0 + r, x0 + s, value_mode, n_colour)
    uniform = total <= 0.0  # all weights zero: draw by coverage alone
    target = u * (1.0 if uniform else total)
    cum = 0.0
    pick_y = -1
    pick_x = -1
    for r in range(ny):
        for s in range(nx):
            w = wy[r] * wx[s]
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


@njit(cache=True)
def _expectation_window(img, in_scale, y0, ny, wy, x0, nx, wx, res):
    for c in range(res.shape[0]):
        num = 0.0
        den = 0.0
        for r in range(ny):
            for s in range(nx):
                a = img[y0 + r, x0 + s, c] * in_scale
                w = wy[r] * wx[s] * a
                num += w * a
                den += w
        res[c] = num / den if den > 0.0 else 0.0


@njit(parallel=True, cache=True)
def stochastic_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int,
                      sample, seed, value_mode, n_colour):
    width = out.shape[1]
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(width):
            if sample:
                u = uniform_draw(seed, i * width + j)
                _sample_window(img, in_scale, ys[i], yn[i], yw[i], xs[j], xn[j], xw[j],
                               u, value_mode, n_colour, res)
            else:
                _expectation_window(img, in_scale, ys[i], yn[i], yw[i], xs[j], xn[j], xw[j], res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- dpp -------------------------------------------------------------------


@njit(cache=True)
def _dpp_window(img, in_scale, y0, ny, wy, x0, nx, wx, alpha, lam, asym, res):
    half_lam = 0.5 * lam
    for c in range(res.shape[0]):
        g = _window_mean(img, in_scale, y0, ny, wy, x0, nx, wx, c)
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
                rel = ((d * d + eps2) / peak) ** half_lam
                w = wy[r] * wx[s] * (t + (1.0 - t) * rel)
                num += w * a
                den += w
        res[c] = num / den


@njit(parallel=True, cache=True)
def dpp_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, alpha, lam, asym):
    for i in prange(out.shape[0]):
        res = np.empty(img.shape[2])
        for j in range(out.shape[1]):
            _dpp_window(img, in_scale, ys[i], yn[i], yw[i], xs[j], xn[j], xw[j],
                        alpha, lam, asym, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- dpid ------------------------------------------------------------------


@njit(cache=True)
def _dpid_distance(img, in_scale, y, x, guide, n_colour, inv_big):
    acc = 0.0
    for c in range(n_colour):
        d = (img[y, x, c] * in_scale - guide[c]) * inv_big
        acc += d * d
    return math.sqrt(acc / n_colour)


@njit(cache=True)
def _dpid_window(img, in_scale, y0, ny, wy, x0, nx, wx, guide, n_colour, lam, res):
    channels = res.shape[0]
    # Largest per-channel difference, to scale the distances into [0, 1]:
    # squares of large float values cannot overflow, and the powers below are
    # taken relative to the box's largest distance.
    big = 0.0
    for r in range(ny):
        for s in range(nx):
            for c in range(n_colour):
                big = max(big, abs(img[y0 + r, x0 + s, c] * in_scale - guide[c]))
    if big == 0.0 and lam != 0.0:  # every distance is zero: sum w = 0
        for c in range(channels):
            res[c] = guide[c]
        return
    inv_big = 1.0 / big if big > 0.0 else 0.0
    top = 0.0
    if lam != 0.0:
        for r in range(ny):
            for s in range(nx):
                top = max(top, _dpid_distance(img, in_scale, y0 + r, x0 + s, guide, n_colour, inv_big))
    for c in range(channels):
        res[c] = 0.0
    den = 0.0
    for r in range(ny):
        for s in range(nx):
            w = wy[r] * wx[s]
            if lam != 0.0:  # d^0 = 1, also for d = 0
                d = _dpid_distance(img, in_scale, y0 + r, x0 + s, guide, n_colour, inv_big)
                w *= (d / top) ** lam
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
            _dpid_window(img, in_scale, ys[i], yn[i], yw[i], xs[j], xn[j], xw[j],
                         guide[i, j], n_colour, lam, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- entry points ----------------------------------------------------------


def pool_avg(job: PoolJob) -> None:
    avg_kernel(*job.kernel_args())


def pool_max(job: PoolJob) -> None:
    gy, gx = job.rows, job.cols
    max_kernel(job.image, job.in_scale, gy.start, gy.count, gx.start, gx.count,
               job.out, job.out_max, job.out_int)


def pool_lp(job: PoolJob, p: float) -> None:
    lp_kernel(*job.kernel_args(), float(p))


def pool_softpool(job: PoolJob, beta: float) -> None:
    softpool_kernel(*job.kernel_args(), float(beta))


def pool_stochastic(job: PoolJob, mode: str, seed: int) -> None:
    stochastic_kernel(*job.kernel_args(), mode == "sample", np.uint64(seed),
                      job.value_mode, job.n_colour)


def pool_dpp(job: PoolJob, alpha: float, lam: float, variant: str) -> None:
    dpp_kernel(*job.kernel_args(), float(alpha), float(lam), variant == "asym")


def pool_dpid(job: PoolJob, lam: float) -> None:
    # Guide: the area average of every channel, then the 3x3 binomial smoothing.
    area = job.with_output(np.empty(job.out.shape, dtype=np.float64))
    pool_avg(area)
    guide = smooth_guide(area.out)
    dpid_kernel(*job.kernel_args(), guide, job.n_colour, float(lam))
