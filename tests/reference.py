"""Independent float64 NumPy reference of the SPEC formulas (/work/shared/SPEC.md).

Written from the SPEC text alone, for the correctness tests: plain loops over
output pixels, clarity over speed.  Nothing here imports ``downpool``.

Everything works on *working values*: ``(H, W, C)`` float64 arrays, integer
images divided by their dtype's maximum (SPEC section 1).

Main entry point: :func:`reference_downscale`, which returns working values
(float64, shape ``(out_h, out_w, C)``) before quantisation; :func:`quantize`
turns them into the input's dtype the way the project documents it
(integers rounded half up and clipped).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

#: Luma weights of SPEC section 3 (stochastic pooling's value for RGB/RGBA).
LUMA = np.array([0.2126, 0.7152, 0.0722])
#: dpp's eps^2 (on [0, 1] values).
DPP_EPS2 = 1e-3

DEFAULTS = {
    "avg": {},
    "max": {},
    "lp": {"p": 2.0},
    "softpool": {"beta": 4.4},
    "stochastic": {"mode": "sample", "seed": 0},
    "dpp": {"alpha": 0.0, "lam": 1.0, "variant": "sym"},
    "dpid": {"lam": 1.0},
    "mode": {},
}


# ---------------------------------------------------------------- values --

def dtype_max(dtype) -> float:
    """Stored value of working value 1.0: 255, 65535, or 1 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


def to_work(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` image -> ``(H, W, C)`` float64 working values."""
    a = np.asarray(image)
    w = a.astype(np.float64) / dtype_max(a.dtype)
    return w if w.ndim == 3 else w[:, :, None]


def quantize(work: np.ndarray, dtype, ndim: int = 3) -> np.ndarray:
    """Working values -> ``dtype``: integers are ``floor(v*max + 0.5)`` clipped."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        top = dtype_max(dtype)
        out = np.clip(np.floor(work * top + 0.5), 0, top).astype(dtype)
    else:
        out = work.astype(dtype)
    return out if ndim == 3 else out[:, :, 0]


def srgb_decode(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded -> linear light (IEC 61966-2-1)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4)


def srgb_encode(y: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB-encoded."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.maximum(y, 0.0031308) ** (1 / 2.4) - 0.055)


# -------------------------------------------------------------- geometry --

class Axis:
    """Windows of one axis: ``idx[i]`` input indices and ``cov[i]`` their coverages
    (floats; ``exact[i]`` the same as Fractions)."""

    def __init__(self, idx, cov, exact):
        self.idx = idx
        self.cov = cov
        self.exact = exact

    def __len__(self):
        return len(self.idx)


def pooling_axis(n: int, k: int, s: int) -> Axis:
    """SPEC 2, integer pooling: ``ceil((n-k)/s)+1`` windows (1 if n < k), partial at the end.

    With s > k that count can include a last window starting at or past n,
    which holds no pixel; such empty windows are dropped (the project's
    documented decision, as PyTorch's ceil_mode), i.e. at most ceil(n/s).
    """
    n_out = math.ceil((n - k) / s) + 1 if n >= k else 1
    n_out = min(n_out, math.ceil(n / s))
    idx, cov = [], []
    for i in range(n_out):
        q = np.arange(i * s, min(i * s + k, n))
        assert q.size > 0
        idx.append(q)
        cov.append(np.ones(q.size))
    return Axis(idx, cov, [[Fraction(1)] * len(q) for q in idx])


def area_axis(n: int, n_out: int) -> Axis:
    """SPEC 2, arbitrary size: window i is the box ``[i*n/n_out, (i+1)*n/n_out)``.

    The coverage of input pixel q is the length of ``[q, q+1)`` inside the box,
    computed with exact fractions; pixels with zero overlap are left out.
    """
    idx, cov, exact = [], [], []
    for i in range(n_out):
        lo, hi = Fraction(i * n, n_out), Fraction((i + 1) * n, n_out)
        qs, cs = [], []
        for q in range(math.floor(lo), math.ceil(hi)):
            overlap = min(hi, Fraction(q + 1)) - max(lo, Fraction(q))
            if overlap > 0:
                qs.append(q)
                cs.append(overlap)
        idx.append(np.array(qs))
        cov.append(np.array([float(c) for c in cs]))
        exact.append(cs)
    return Axis(idx, cov, exact)


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def plan(method: str, shape, kernel_size=None, stride=None, size=None, scale=None):
    """The row and column windows for :func:`reference_downscale`'s geometry arguments."""
    h, w = shape
    if size is None and scale is None:
        kh, kw = _pair(2 if kernel_size is None else kernel_size)
        if method == "dpid":  # dpid always uses the area geometry
            size = (math.ceil(h / kh), math.ceil(w / kw))
        else:
            sh, sw = (kh, kw) if stride is None else _pair(stride)
            return pooling_axis(h, kh, sh), pooling_axis(w, kw, sw)
    elif scale is not None:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    oh, ow = _pair(size)
    assert oh <= h and ow <= w
    return area_axis(h, oh), area_axis(w, ow)


def window(work: np.ndarray, rows: Axis, cols: Axis, i: int, j: int):
    """Pixel values ``(n, C)``, coverages ``(n,)`` and ``(row, col)`` indices ``(n, 2)``."""
    ri, ci = rows.idx[i], cols.idx[j]
    a = work[ri[:, None], ci[None, :], :].reshape(-1, work.shape[2])
    c = np.outer(rows.cov[i], cols.cov[j]).ravel()
    pos = np.stack(np.meshgrid(ri, ci, indexing="ij"), axis=-1).reshape(-1, 2)
    return a, c, pos


# --------------------------------------------------------------- methods --
# Each takes a (n, C) window ``a`` and coverages ``c`` (n,) and returns (C,).

def pool_avg(a, c):
    return ((c / c.sum())[:, None] * a).sum(0)  # normalised weights: no overflow near 1e308


def pool_max(a, c):
    return a[c > 0].max(0)


def pool_lp(a, c, p):
    """``(sum c a^p / sum c)^(1/p)``, relative to the window maximum m."""
    m = a.max(0)
    safe = np.where(m > 0, m, 1.0)
    mean = ((c / c.sum())[:, None] * (a / safe) ** p).sum(0)
    return np.where(m > 0, m * mean ** (1.0 / p), 0.0)


def pool_softpool(a, c, beta):
    """``sum c e^(beta a) a / sum c e^(beta a)``, with the window max subtracted."""
    m = a.max(0)
    with np.errstate(over="ignore"):  # beta*(a - m) = -inf for huge ranges: weight 0, correctly
        w = c[:, None] * np.exp(beta * (a - m))
    return (w / w.sum(0) * a).sum(0)


def pool_stochastic_expectation(a, c):
    """``sum c a^2 / sum c a`` per channel, 0 where ``sum c a`` is 0.

    Homogeneous of degree 1, so computed on ``a / max a`` (no overflow or
    underflow of ``a^2`` for float64 values near 1e+-300).
    """
    m = a.max(0)
    safe = np.where(m > 0, m, 1.0)
    u = a / safe
    den = (c[:, None] * u).sum(0)
    num = (c[:, None] * u * u).sum(0)
    return np.where(den > 0, m * (num / np.where(den > 0, den, 1.0)), 0.0)


def pool_dpp(a, c, alpha, lam, variant):
    """Lite-DPP: ``w = c (alpha + rho(a - g))``, g the coverage-weighted window mean.

    The weights are computed in the log domain and divided by the largest one,
    so that any lam works in float64 (the weights' common factor cancels).
    """
    g = pool_avg(a, c)
    x = a - g
    if variant == "asym":
        x = np.maximum(x, 0.0)
    with np.errstate(divide="ignore"):  # log(0) = -inf is fine: logaddexp with log(eps^2)
        log_x2 = 2.0 * np.log(np.abs(x))  # x*x itself would overflow for |x| > 1e154
    log_rho = 0.5 * lam * np.logaddexp(log_x2, math.log(DPP_EPS2))
    log_w = np.logaddexp(math.log(alpha) if alpha > 0 else -np.inf, log_rho)
    w = c[:, None] * np.exp(log_w - log_w.max(0))
    return (w / w.sum(0) * a).sum(0)  # normalised weights: no overflow near 1e308


def stochastic_value(a: np.ndarray, channels: int, has_alpha: bool) -> np.ndarray:
    """Stochastic pooling's pixel value v (SPEC 3): luma for RGB/RGBA, else channel mean.

    ``a`` is ``(n, C)``.  RGB/RGBA means 3 or 4 channels of which at least 3
    are colour: luma of channels 0-2 (a plain 4-channel array is RGBA with
    its alpha ignored).  Otherwise the mean of the colour channels (all
    channels, or all but alpha with has_alpha).
    """
    n_colour = channels - 1 if has_alpha else channels
    if channels in (3, 4) and n_colour >= 3:
        return a[:, :3] @ LUMA
    return a[:, :n_colour].mean(1)


def stochastic_probabilities(a, c, channels, has_alpha=False):
    """Probability of each window pixel in sample mode: ``c v / sum c v``, uniform by c if 0."""
    v = stochastic_value(a, channels, has_alpha)
    w = c * v
    if w.sum() > 0:
        return w / w.sum()
    return c / c.sum()


def smooth_guide(g: np.ndarray) -> np.ndarray:
    """3x3 ``[1 2 1]^T [1 2 1]`` smoothing; outside neighbours left out, weights renormalised."""
    oh, ow, _ = g.shape
    k = {-1: 1.0, 0: 2.0, 1: 1.0}
    gs = np.zeros_like(g)
    for i in range(oh):
        for j in range(ow):
            taps = [(k[di] * k[dj], i + di, j + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                    if 0 <= i + di < oh and 0 <= j + dj < ow]
            den = sum(t[0] for t in taps)
            # normalised weights first: no overflow for values near the float64 maximum
            gs[i, j] = sum((wt / den) * g[y, x] for wt, y, x in taps)
    return gs


def pool_dpid(window_of, oh, ow, ch, lam, n_colour):
    """DPID (SPEC 3): distance to the smoothed guide over the colour channels, shared weights.

    ``window_of(i, j)`` gives output pixel (i, j)'s window: values (n, C) and coverages (n,).
    """
    guide = np.zeros((oh, ow, ch))
    for i in range(oh):
        for j in range(ow):
            a, c = window_of(i, j)
            guide[i, j] = pool_avg(a, c)
    gs = smooth_guide(guide)
    out = np.zeros((oh, ow, ch))
    for i in range(oh):
        for j in range(ow):
            a, c = window_of(i, j)
            diff = a[:, :n_colour] - gs[i, j, :n_colour]
            # d relative to the largest |difference| (only ratios of d matter), so that
            # squares neither overflow nor underflow for float64 values near 1e+-300
            big = np.abs(diff).max()
            diff = diff / big if big > 0 else diff
            d = np.sqrt((diff * diff).sum(1) / n_colour)
            if lam == 0:
                w = c.copy()  # d^0 = 1, also for d = 0
            else:
                dmax = d.max()
                w = c * (d / dmax) ** lam if dmax > 0 else np.zeros_like(c)
            if w.sum() > 0:
                out[i, j] = (w[:, None] / w.sum() * a).sum(0)
            else:
                out[i, j] = gs[i, j]
    return out


def pool_window(method: str, a, c, params) -> np.ndarray:
    """One output pixel of a per-channel method."""
    if method == "avg":
        return pool_avg(a, c)
    if method == "max":
        return pool_max(a, c)
    if method == "lp":
        return pool_lp(a, c, params["p"])
    if method == "softpool":
        return pool_softpool(a, c, params["beta"])
    if method == "stochastic":
        if params["mode"] != "expectation":
            raise ValueError("stochastic sample mode has no formula to compare with")
        return pool_stochastic_expectation(a, c)
    if method == "dpp":
        return pool_dpp(a, c, params["alpha"], params["lam"], params["variant"])
    raise ValueError(method)


def mode_downscale(image, *, kernel_size=None, stride=None, size=None, scale=None) -> np.ndarray:
    """SPEC 3's ``mode``, in the image's own dtype and shape: per channel, the value whose
    pixels' total coverage (exact fractions) is the largest, the smallest on a tie.

    Values are compared as stored (no working values): the result is always one
    of the window's values.  (:func:`mode_downscale_frames` of one frame.)
    """
    a = np.asarray(image)
    return mode_downscale_frames(a[None], kernel_size=kernel_size, stride=stride, size=size,
                                 scale=scale)[0]


def pool_work(method, work, rows, cols, params, n_colour):
    """Pool working values ``(H, W, C)`` -> ``(out_h, out_w, C)``."""
    return pool_windows(method, lambda i, j: window(work, rows, cols, i, j)[:2], len(rows),
                        len(cols), work.shape[2], params, n_colour)


def pool_windows(method, window_of, oh, ow, ch, params, n_colour):
    """``(oh, ow, C)`` output pixels, pixel (i, j) pooling the window ``window_of(i, j)``."""
    if method == "dpid":
        return pool_dpid(window_of, oh, ow, ch, params["lam"], n_colour)
    out = np.zeros((oh, ow, ch))
    for i in range(oh):
        for j in range(ow):
            a, c = window_of(i, j)
            out[i, j] = pool_window(method, a, c, params)
    return out


def reference_downscale(image, method="softpool", *, kernel_size=None, stride=None, size=None,
                        scale=None, has_alpha=False, linear=False, **params) -> np.ndarray:
    """Float64 working-value result ``(out_h, out_w, C)`` of the SPEC formulas.

    Steps: working values; sRGB decode of the colour channels if ``linear``;
    premultiply colour by alpha if ``has_alpha``; pool; divide colour by the
    pooled alpha (0 where it is 0); sRGB encode.
    """
    p = dict(DEFAULTS[method])
    p.update(params)
    work = to_work(image).copy()
    n_colour = work.shape[2] - 1 if has_alpha else work.shape[2]
    rows, cols = plan(method, work.shape[:2], kernel_size, stride, size, scale)
    work = _to_pooled(work, n_colour, has_alpha, linear)
    out = pool_work(method, work, rows, cols, p, n_colour)
    return _from_pooled(out, n_colour, has_alpha, linear)


def _to_pooled(work, n_colour, has_alpha, linear):
    """Working values as pooled: linear light, premultiplied (any leading axes)."""
    if linear:
        work[..., :n_colour] = srgb_decode(work[..., :n_colour])
    if has_alpha:
        work[..., :-1] *= work[..., -1:]
    return work


def _from_pooled(out, n_colour, has_alpha, linear):
    if has_alpha:
        alpha = out[..., -1:]
        out[..., :-1] = np.where(alpha > 0, out[..., :-1] / np.where(alpha > 0, alpha, 1.0), 0.0)
    if linear:
        out[..., :n_colour] = srgb_encode(out[..., :n_colour])
    return out


# ------------------------------------------------------- frames (SPEC 6) --

def time_windows(n_frames: int, kt: int, st: int) -> list[range]:
    """SPEC 6: ``ceil((T-kt)/st)+1`` windows (1 if T < kt), output frame f reads
    ``[f*st, min(f*st+kt, T))``; as in space, a window starting past the last
    frame (st > kt) is dropped."""
    n_out = math.ceil((n_frames - kt) / st) + 1 if n_frames >= kt else 1
    n_out = min(n_out, math.ceil(n_frames / st))
    return [range(f * st, min(f * st + kt, n_frames)) for f in range(n_out)]


def frames_to_work(frames) -> np.ndarray:
    """``(T, H, W)`` or ``(T, H, W, C)`` -> ``(T, H, W, C)`` float64 working values."""
    a = np.asarray(frames)
    w = a.astype(np.float64) / dtype_max(a.dtype)
    return w if w.ndim == 4 else w[..., None]


def window3(work, times, rows, cols, i, j):
    """The 3-D window (frames ``times`` x spatial window (i, j)): values (n, C), coverages (n,),
    every pixel with its spatial position's coverage."""
    parts = [window(work[t], rows, cols, i, j)[:2] for t in times]
    return np.concatenate([a for a, _ in parts]), np.concatenate([c for _, c in parts])


def reference_downscale_frames(frames, method="softpool", *, time_kernel=1, time_stride=None,
                               kernel_size=None, stride=None, size=None, scale=None,
                               has_alpha=False, linear=False, **params) -> np.ndarray:
    """Float64 working values ``(out_t, out_h, out_w, C)`` of SPEC section 6: each output
    pixel pools its 3-D window with the section 3 formula; dpid's guide is smoothed within
    each output frame."""
    p = dict(DEFAULTS[method])
    p.update(params)
    work = frames_to_work(frames).copy()
    ch = work.shape[3]
    n_colour = ch - 1 if has_alpha else ch
    rows, cols = plan(method, work.shape[1:3], kernel_size, stride, size, scale)
    work = _to_pooled(work, n_colour, has_alpha, linear)
    out = np.stack([
        pool_windows(method, lambda i, j, times=times: window3(work, times, rows, cols, i, j),
                     len(rows), len(cols), ch, p, n_colour)
        for times in time_windows(work.shape[0], time_kernel, time_stride or time_kernel)])
    return _from_pooled(out, n_colour, has_alpha, linear)


def mode_downscale_frames(frames, *, time_kernel=1, time_stride=None, kernel_size=None,
                          stride=None, size=None, scale=None) -> np.ndarray:
    """SPEC 6's ``mode``: :func:`mode_downscale`'s rule over each 3-D window, exact coverages."""
    a = np.asarray(frames)
    seq = a if a.ndim == 4 else a[..., None]
    rows, cols = plan("mode", seq.shape[1:3], kernel_size, stride, size, scale)
    windows = time_windows(seq.shape[0], time_kernel, time_stride or time_kernel)
    out = np.zeros((len(windows), len(rows), len(cols), seq.shape[3]), dtype=seq.dtype)
    for f, times in enumerate(windows):
        for i in range(len(rows)):
            for j in range(len(cols)):
                for ch in range(seq.shape[3]):
                    totals = {}
                    for t in times:
                        for r, cy in zip(rows.idx[i], rows.exact[i]):
                            for q, cx in zip(cols.idx[j], cols.exact[j]):
                                v = seq[t, r, q, ch].item()
                                totals[v] = totals.get(v, 0) + cy * cx
                    best = max(totals.values())
                    out[f, i, j, ch] = min(v for v, t in totals.items() if t == best)
    return out if a.ndim == 4 else out[..., 0]


def window_ranges(image, method="avg", *, kernel_size=None, stride=None, size=None, scale=None):
    """Per output pixel and channel, the min and max of the window's pixels (working values)."""
    work = to_work(image)
    rows, cols = plan(method, work.shape[:2], kernel_size, stride, size, scale)
    lo = np.zeros((len(rows), len(cols), work.shape[2]))
    hi = np.zeros_like(lo)
    for i in range(len(rows)):
        for j in range(len(cols)):
            a, c, _ = window(work, rows, cols, i, j)
            lo[i, j] = a.min(0)
            hi[i, j] = a.max(0)
    return lo, hi


# ------------------------------------------------------------ comparison --

#: SPEC 1: float results keep 1e-5 relative accuracy against float64.  On data
#: of scale s (the largest |value| of the input; 1 for [0, 1] data) the
#: absolute part is 1e-5 * s.
FLOAT_TOL = 1e-5
#: Integer results: within 1 unit of the rounded float64 result (half-way
#: cases may round either way under float32 arithmetic).
INT_TOL_UNITS = 1


def assert_matches(out: np.ndarray, ref_work: np.ndarray, dtype, *, data_scale: float = 1.0,
                   tol: float = FLOAT_TOL, what: str = "") -> None:
    """Compare a kernel result (input dtype) with reference working values.

    Float dtypes: ``|out - ref| <= tol * (data_scale + |ref|)``; ``data_scale``
    is the magnitude of the input values (1 for [0, 1] data).
    Integer dtypes: ``|out - round_half_up(ref * max)| <= 1`` unit.
    Also checks that there is no NaN or inf.
    """
    dtype = np.dtype(dtype)
    assert out.dtype == dtype, f"{what}: dtype {out.dtype} != {dtype}"
    ref = ref_work if out.ndim == 3 else ref_work[:, :, 0]
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert np.all(np.isfinite(ref)), f"{what}: the reference itself is not finite"
    if dtype.kind == "u":
        expected = quantize(ref_work, dtype, out.ndim).astype(np.int64)
        diff = np.abs(out.astype(np.int64) - expected)
        # and rounded to *nearest*: within 0.5 unit (plus the 1e-5 accuracy) of the
        # clipped exact value, which a truncating or biased rounding would miss on uint8
        top = dtype_max(dtype)
        exact = np.clip(ref * top, 0, top)
        off = np.abs(out.astype(np.float64) - exact)
        bad = (diff > INT_TOL_UNITS) | (off > 0.5 + tol * top)
        detail = f"max diff {diff.max()} units, {off.max():.4f} from the exact value"
    else:
        got = out.astype(np.float64)
        assert np.all(np.isfinite(got)), f"{what}: NaN or inf in the output"
        diff = np.abs(got - ref)
        bad = diff > tol * data_scale + tol * np.abs(ref)
        detail = f"max abs diff {diff.max():.3g}"
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values off ({detail}); first at {first}: "
            f"kernel {out[first]!r}, reference {ref[first]!r}"
        )
