"""Per-window and per-pixel math shared by every device.

Plain ``@njit`` functions with no parallelism and no allocation: the CPU
kernels in :mod:`downpool.cpu` call them from their loops over output rows, and
Numba can compile the same functions as CUDA device functions, so the CPU and
GPU paths share one source for every formula of SPEC section 3.

A window is given as ``(y0, ny, yw, i, x0, nx, xw, j)``: its first row, row
count, the 2-D row-coverage array and the output row ``i`` indexing it, and
likewise for columns (see :mod:`downpool.geometry`; coverages are normalised
per window).  Input values are stored values times ``in_scale``.  Window
functions write one pooled working value per channel into ``res``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "DPP_EPS2",
    "stored",
    "power",
    "window_max",
    "window_mean",
    "lp_window",
    "softpool_window",
    "expectation_window",
    "uniform_draw",
    "draw_base",
    "uniform_draw_after",
    "selection_value",
    "sample_window",
    "dpp_scaling",
    "dpp_window",
    "dpid_window",
]

# eps^2 of the DPP reward functions (SPEC section 3), on [0, 1] values.
DPP_EPS2 = 1e-3

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def stored(v, out_max, out_int):
    """A working value as the output dtype stores it: integers scaled, rounded half up, clipped."""
    if out_int:
        return min(max(math.floor(v * out_max + 0.5), 0.0), out_max)
    return v


@njit(cache=True)
def power(x, e):
    """``x ** e`` with the common exponents made cheap (dpp and dpid's default lam=1)."""
    if e == 0.5:
        return math.sqrt(x)
    if e == 1.0:
        return x
    if e == 2.0:
        return x * x
    return x ** e


@njit(cache=True)
def window_max(img, in_scale, y0, ny, x0, nx, c):
    m = -np.inf
    for r in range(ny):
        for s in range(nx):
            m = max(m, img[y0 + r, x0 + s, c] * in_scale)
    return m


@njit(cache=True)
def window_mean(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, c):
    acc = 0.0
    for r in range(ny):
        for s in range(nx):
            acc += yw[i, r] * xw[j, s] * img[y0 + r, x0 + s, c]
    return acc * in_scale


@njit(cache=True)
def lp_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, p, res):
    for c in range(res.shape[0]):
        m = window_max(img, in_scale, y0, ny, x0, nx, c)
        if m <= 0.0:  # all zero (negative input is rejected before)
            res[c] = 0.0
            continue
        acc = 0.0
        for r in range(ny):
            for s in range(nx):
                acc += yw[i, r] * xw[j, s] * (img[y0 + r, x0 + s, c] * in_scale / m) ** p
        res[c] = m * acc ** (1.0 / p)


@njit(cache=True)
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


@njit(cache=True)
def expectation_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, unit, res):
    """Stochastic pooling's expectation ``sum c a^2 / sum c a`` per channel (0 where the sum is 0).

    The formula is homogeneous of degree 1: values are pooled divided by
    ``unit`` (the image's largest value), whose squares cannot overflow, and
    the result is multiplied back, as the CPU's separable path does.
    """
    scale = in_scale / unit
    for c in range(res.shape[0]):
        num = 0.0
        den = 0.0
        for r in range(ny):
            for s in range(nx):
                a = img[y0 + r, x0 + s, c] * scale
                w = yw[i, r] * xw[j, s]
                num += w * a * a
                den += w * a
        res[c] = unit * num / den if den > 0.0 else 0.0


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
    return uniform_draw_after(draw_base(seed, 0), index)


@njit(cache=True)
def draw_base(seed, first_index):
    """What :func:`uniform_draw_after` takes for the draws of ``seed`` from index ``first_index`` on.

    ``uniform_draw_after(draw_base(seed, f), n) == uniform_draw(seed, f + n)``
    (integer arithmetic modulo 2^64): a strip of output rows draws with the
    indices of its own rows, and its pixels get the draws of the whole image.
    """
    return _splitmix64(np.uint64(seed)) + np.uint64(first_index) * _GOLDEN


@njit(cache=True)
def uniform_draw_after(base, index):
    """Draw ``index`` after a :func:`draw_base`."""
    z = base + (np.uint64(index) + np.uint64(1)) * _GOLDEN
    return np.float64(_splitmix64(z) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def selection_value(img, y, x, value_mode, n_colour):
    """``v`` of SPEC's stochastic pooling: luma of RGB(A) or the mean of the colour channels."""
    if value_mode == 1:
        return 0.2126 * img[y, x, 0] + 0.7152 * img[y, x, 1] + 0.0722 * img[y, x, 2]
    acc = 0.0
    for c in range(n_colour):
        acc += img[y, x, c]
    return acc / n_colour


@njit(cache=True)
def sample_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, u, value_mode, n_colour, res):
    total = 0.0
    for r in range(ny):
        for s in range(nx):
            total += yw[i, r] * xw[j, s] * selection_value(img, y0 + r, x0 + s, value_mode, n_colour)
    uniform = total <= 0.0  # all weights zero: draw by coverage alone
    target = u * (1.0 if uniform else total)
    cum = 0.0
    pick_y = -1
    pick_x = -1
    for r in range(ny):
        for s in range(nx):
            w = yw[i, r] * xw[j, s]
            if not uniform:
                w *= selection_value(img, y0 + r, x0 + s, value_mode, n_colour)
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


@njit(cache=True)
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


@njit(cache=True)
def _dpid_distance2(img, in_scale, y, x, guide, i, j, n_colour, inv_big):
    """Squared colour distance of pixel (y, x) to the guide, differences scaled by ``inv_big``."""
    acc = 0.0
    for c in range(n_colour):
        d = (img[y, x, c] * in_scale - guide[i, j, c]) * inv_big
        acc += d * d
    return acc


@njit(cache=True)
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
