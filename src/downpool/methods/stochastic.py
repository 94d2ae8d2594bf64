"""``stochastic``: stochastic pooling (Zeiler & Fergus 2013; SPEC section 3).

``mode="sample"`` draws one pixel per window with probability proportional to
its coverage times its selection value (the value, luma of RGB(A), or the mean
of the colour channels) and copies all its channels; ``mode="expectation"`` is
the deterministic ``sum c a^2 / sum c a`` per channel.

- Draws: SplitMix64 of ``(seed, output pixel index)`` (:func:`uniform_draw`),
  so that the result does not depend on threads, strips or device.
- :func:`sample_window` and :func:`expectation_window`: the formulas, which
  :mod:`downpool.cuda` compiles.  Every kernel picks, step for step, the pixel
  :func:`sample_window` picks for the same draw.
- :func:`stochastic_sample_kernel` for any geometry, with each output row's
  selection values made once (:func:`_weighted_pick`); over blocks,
  :func:`stochastic_blocks`: the picks made in passes that vectorise
  (:func:`_sample_row`), and the expectation over constant blocks.
- The expectation otherwise takes the separable passes (:mod:`downpool.separable`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..blocks import block_column, block_layout, block_plan, block_row, run_blocks
from ..core import PoolJob
from ..numba_idioms import inlined, jit, store, store_pixel, stored
from ..separable import MODE_SQUARES, run_separable
from ..threads import run_rows

__all__ = ["expectation_window", "uniform_draw", "draw_base", "uniform_draw_after",
           "selection_value", "sample_window", "stochastic_sample_kernel", "sample_kernel_form",
           "SAMPLE_VALUES", "StochasticParams", "stochastic_blocks", "job_draws", "pool"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


_MIX1 = np.uint64(0xBF58476D1CE4E5B9)


_MIX2 = np.uint64(0x94D049BB133111EB)


@jit
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


@jit
def _splitmix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@jit
def uniform_draw(seed, index):
    """A uniform number in [0, 1) that depends only on ``(seed, index)``.

    SplitMix64 (Steele, Lea & Flood 2014) of the seed's own hash plus the
    index times the golden-ratio increment: a counter-based generator, so
    the draw for an output pixel does not depend on which thread makes it.
    """
    return uniform_draw_after(draw_base(seed, 0), index)


@jit
def draw_base(seed, first_index):
    """What :func:`uniform_draw_after` takes for the draws of ``seed`` from index ``first_index`` on.

    ``uniform_draw_after(draw_base(seed, f), n) == uniform_draw(seed, f + n)``
    (integer arithmetic modulo 2^64): a strip of output rows draws with the
    indices of its own rows, and its pixels get the draws of the whole image.
    """
    return _splitmix64(np.uint64(seed)) + np.uint64(first_index) * _GOLDEN


@jit
def uniform_draw_after(base, index):
    """Draw ``index`` after a :func:`draw_base`."""
    z = base + (np.uint64(index) + np.uint64(1)) * _GOLDEN
    return np.float64(_splitmix64(z) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@jit
def selection_value(img, y, x, value_mode, n_colour):
    """``v`` of SPEC's stochastic pooling: luma of RGB(A) or the mean of the colour channels."""
    if value_mode == 1:
        return 0.2126 * img[y, x, 0] + 0.7152 * img[y, x, 1] + 0.0722 * img[y, x, 2]
    acc = 0.0
    for c in range(n_colour):
        acc += img[y, x, c]
    return acc / n_colour


@jit(inline="always")
def _weighted_pick(img, y0, ny, yw, i, x0, nx, xw, j, u, value_mode, n_colour, values,
                   buffered_dims):
    """``(r, x)`` of the pixel drawn from window ``(i, j)`` by the draw ``u``: row ``r`` of
    the window, column ``x`` of the image; every kernel and device picks with it.

    A pixel's weight is its coverage times its selection value, read from
    ``values[r, x]`` (an output row's, made once) where ``buffered_dims`` is
    ``(0,)``, else computed twice per pixel (``values`` unused).  The pick is the
    first pixel whose running sum of weights passes ``u`` times their total, or,
    where rounding leaves every sum short, the last pixel with weight.
    """
    total = 0.0
    for r in range(ny):
        for s in range(nx):
            v = (values[r, x0 + s] if len(buffered_dims) > 0
                 else selection_value(img, y0 + r, x0 + s, value_mode, n_colour))
            total += yw[i, r] * xw[j, s] * v
    uniform = total <= 0.0  # all weights zero: draw by coverage alone
    target = u * (1.0 if uniform else total)
    cum = 0.0
    pick_r = -1
    pick_x = -1
    for r in range(ny):
        for s in range(nx):
            w = yw[i, r] * xw[j, s]
            if not uniform:
                w *= (values[r, x0 + s] if len(buffered_dims) > 0
                      else selection_value(img, y0 + r, x0 + s, value_mode, n_colour))
            if w > 0.0:
                pick_r = r
                pick_x = x0 + s
                cum += w
                if cum > target:
                    return pick_r, pick_x
    return pick_r, pick_x


@jit
def sample_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, u, value_mode, n_colour, res):
    """Stochastic sample of window ``(i, j)``: every channel of the drawn pixel, in ``res``."""
    r, x = _weighted_pick(img, y0, ny, yw, i, x0, nx, xw, j, u, value_mode, n_colour, yw, ())
    for c in range(res.shape[0]):
        res[c] = img[y0 + r, x, c] * in_scale


# The selection value, compiled again to be inlined into the passes below.
_selection_value = inlined(selection_value)


@jit(nogil=True)
def stochastic_sample_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int,
                             draws, draw_row, value_mode, n_colour, buffered_dims, i0, i1):
    """Stochastic sample of output rows ``i0`` to ``i1``, copying every channel of the
    pixel drawn from each window; ``draws`` is the job's :func:`draw_base` and
    ``draw_row`` the whole image's output width (:attr:`PoolJob.draw_row`).

    Where ``buffered_dims`` is ``(0,)``, the selection values of each output
    row's window rows are made first, in a pass along them, and each window
    picks from them (:func:`_weighted_pick`).  Where it is ``()`` (windows so tall
    that their rows' values would take more than :data:`SAMPLE_VALUES`
    float64s: thumbnails a few pixels high of a large image), each window
    computes its values as it goes, in :func:`sample_window`,
    which picks the same pixels.  The form is the length of a tuple, so that
    Numba compiles one of them (:mod:`downpool.numba_idioms`).
    """
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    n_cols = out.shape[1]
    values = np.empty((yw.shape[1] if len(buffered_dims) > 0 else 0, width))
    res = np.empty(channels)
    for i in range(i0, i1):
        y0 = ys[i]
        ny = yn[i]
        if len(buffered_dims) == 0:
            for j in range(n_cols):
                sample_window(img, in_scale, y0, ny, yw, i, xs[j], xn[j], xw, j,
                              uniform_draw_after(draws, i * draw_row + j), value_mode, n_colour,
                              res)
                store_pixel(out, i, j, res, out_max, out_int)
            continue
        for r in range(ny):
            for x in range(width):
                values[r, x] = _selection_value(img, y0 + r, x, value_mode, n_colour)
        for j in range(n_cols):
            r, x = _weighted_pick(img, y0, ny, yw, i, xs[j], xn[j], xw, j,
                                  uniform_draw_after(draws, i * draw_row + j), value_mode,
                                  n_colour, values, (0,))
            for c in range(channels):
                out[i, j, c] = stored(img[y0 + r, x, c] * in_scale, out_max, out_int)


#: Most selection values (float64) a thread of the general stochastic sample
#: kernel keeps, 8 MB: jobs with taller windows compute them as they go.
SAMPLE_VALUES = 1 << 20


def sample_kernel_form(job: PoolJob, max_values: int | None = None) -> tuple:
    """``buffered_dims`` of :func:`stochastic_sample_kernel` for ``job``: ``(0,)`` where a
    thread's selection values of one output row's windows take at most ``max_values``
    float64s (default :data:`SAMPLE_VALUES`)."""
    limit = SAMPLE_VALUES if max_values is None else max_values
    return (0,) if job.rows.weight.shape[1] * job.image.shape[1] <= limit else ()


class StochasticParams(NamedTuple):
    """The parameters :func:`stochastic_blocks` takes: the expectation's ``unit`` (the
    image's largest value; ``in_scale`` is then divided by it), and the sample's
    selection value, draws (and the whole image's output width, ``draw_row``) and coverages."""

    in_scale: float
    out_max: float
    unit: float
    n_colour: int
    value_mode: int
    draws: np.uint64
    draw_row: int
    yw: np.ndarray
    xw: np.ndarray


# The variants of stochastic_blocks.
SAMPLE = 1
EXPECTATION = 2


@jit(inline="always")
def _expectation_block(rows, y0, ny, x0, nx, channels, c, scale, unit):
    """sum a^2 / sum a (0 where the sum is 0), values pooled as ``v * scale`` times ``unit``."""
    num = den = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = src[(x0 + t) * channels + c] * scale
            num += a * a
            den += a
    return unit * (num / den) if den > 0.0 else 0.0  # num / den <= 1: no overflow


@jit(inline="always")
def _uniform_pick(u, weight, n):
    """The pick of a window whose pixels all have selection value 0 and coverage ``weight``:
    :func:`_weighted_pick`'s draw by coverage alone (target ``u * 1.0``), counted as
    :func:`_sample_row` counts."""
    cum = 0.0
    below = 0
    last = 0
    for q in range(n):
        cum += weight
        below += cum <= u
        last = q if weight > 0.0 else last
    return below if below < n else last


@jit(inline="always")
def _sample_row(rows, img, i, y0, ny, first, n_cols, block_h, block_w, channels, o, params,
                scratch):
    """Stochastic sample of the row's full windows from ``first`` on; returns the
    first window not made (the kernel makes the partial ones).

    The same picks as :func:`_weighted_pick`, made in passes that LLVM can
    vectorise: the selection values of the block's rows, the draws, the
    picks (counted, without the early exit on a random draw that is
    mispredicted about every other window), then the copy of the picked
    pixels. ``scratch`` has
    ``block_h + 1`` rows of at least the image's width.
    """
    n_colour, value_mode, draw_from, yw, xw = (params.n_colour, params.value_mode, params.draws,
                                               params.yw, params.xw)
    end = min(img.shape[1] // block_w, n_cols)
    if ny < block_h or first >= end:
        return first
    n_windows = end - first
    width = n_windows * block_w
    start = first * block_w * channels
    draws = scratch[block_h, :n_windows]
    # Integers, which the copy below indexes with as they are; a buffer of its own
    # (a view of a scratch row as integers added 1.4 s to the first call).
    picks = np.empty(n_windows, np.int64)
    row_length = params.draw_row
    for r in range(block_h):
        # selection_value, from the contiguous row (views from 0: see the module).
        src = rows[y0 + r, start:start + width * channels]
        values = scratch[r, :width]
        if value_mode == 1:
            for x in range(width):
                px = x * channels
                values[x] = 0.2126 * src[px] + 0.7152 * src[px + 1] + 0.0722 * src[px + 2]
        else:
            for x in range(width):
                total = 0.0
                for c in range(n_colour):
                    total += src[x * channels + c]
                values[x] = total / n_colour
    for j in range(n_windows):
        draws[j] = uniform_draw_after(draw_from, i * row_length + first + j)
    # Every full block has the same coverages (geometry.block_length), so the
    # column weight is read once: read per window from the (n, k) weight
    # array, a load of stride k keeps LLVM from vectorising this loop.
    weight = yw[i, 0] * xw[first, 0]
    n = block_h * block_w
    for j in range(n_windows):
        x0 = j * block_w
        total = 0.0
        for r in range(block_h):
            for s in range(block_w):
                total += weight * scratch[r, x0 + s]
        target = draws[j] * total
        # The general kernel picks the first pixel with weight whose running
        # sum passes the target. Weights are >= 0, so the running sum never
        # falls and the first sum past the target is one that a pixel with
        # weight raised: the pick is the number of sums not past it. If
        # rounding leaves every sum short, the last pixel with weight.
        cum = 0.0
        below = 0
        last = 0
        for r in range(block_h):
            for s in range(block_w):
                w = weight * scratch[r, x0 + s]
                cum += w
                below += cum <= target
                last = r * block_w + s if w > 0.0 else last
        # All weights zero: drawn by coverage alone, in the copy below. Rare, so
        # not made here, where every window would pay for both forms (the loop
        # is vectorised across windows).
        picks[j] = -1 if total <= 0.0 else (below if below < n else last)
    for j in range(n_windows):
        k = picks[j]
        if k < 0:
            k = _uniform_pick(draws[j], weight, n)
        src = rows[y0 + k // block_w]
        x = (first + j) * block_w + k % block_w
        for c in range(channels):
            o[(first + j) * channels + c] = src[x * channels + c]
    return end


@jit(inline="always")
def _sample_into(img, i, y0, ny, x0, nx, j, channels, o, base, params):
    """Stochastic sample of one window: the drawn pixel's stored values, copied as for max."""
    n_colour, value_mode, draw_from, yw, xw = (params.n_colour, params.value_mode, params.draws,
                                               params.yw, params.xw)
    # The window's coverages are all equal (a block): the general pick's weights.
    r, x = _weighted_pick(img, y0, ny, yw, i, x0, nx, xw, j,
                          uniform_draw_after(draw_from, i * params.draw_row + j),
                          value_mode, n_colour, yw, ())
    y = y0 + r
    for c in range(channels):
        o[base + c] = img[y, x, c]


@jit(nogil=True, error_model="numpy")
def stochastic_blocks(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
                      params, j0, i0, i1):
    """stochastic pooling over blocks (:func:`downpool.blocks.run_blocks`), variant
    ``len(variant_dims)``: :data:`SAMPLE` (the full windows in passes, but in the edge
    kernel; the rest window by window) or :data:`EXPECTATION`."""
    block_h, block_w, channels, n_cols, i1, constant = block_layout(img, out_rows, kh_dims, kw_dims,
                                                                    c_dims, sizes, i1)
    variant = len(variant_dims)
    if i0 >= i1:
        return
    sampled = variant == SAMPLE and len(edge_dims) == 0
    scratch = np.empty((block_h + 1 if sampled else 0, img.shape[1] if sampled else 0))
    for i in range(i0, i1):
        o, y0, ny, first = block_row(out_rows, i, block_h, img.shape[0], constant, j0)
        if variant == SAMPLE:
            if len(edge_dims) == 0:
                first = _sample_row(rows, img, i, y0, ny, first, n_cols, block_h, block_w,
                                    channels, o, params, scratch)
            if len(kh_dims) == 0:  # constant kernels make every window in passes
                for j in range(first, n_cols):
                    x0, nx, base = block_column(j, block_w, img.shape[1], constant, channels)
                    _sample_into(img, i, y0, ny, x0, nx, j, channels, o, base, params)
            continue
        for j in range(first, n_cols):
            x0, nx, base = block_column(j, block_w, img.shape[1], constant, channels)
            for c in range(channels):
                o[base + c] = store(_expectation_block(rows, y0, ny, x0, nx, channels, c,
                                                       params.in_scale, params.unit),
                                    params.out_max, o)


def job_draws(job: PoolJob, seed: int) -> np.uint64:
    """The stochastic draws of ``job``'s output: those from ``job.first_index`` on."""
    # Numba returns a uint64 to Python as an int: typed again as one here.
    return np.uint64(draw_base(np.uint64(seed), job.first_index))


def pool(job: PoolJob, mode: str, seed: int) -> None:
    """stochastic pooling of ``job`` on the CPU."""
    plan = block_plan(job)
    if mode == "sample":
        draws = job_draws(job, seed)
        if plan is not None:
            run_blocks(plan, stochastic_blocks, job.image, job.out,
                       StochasticParams(float(job.in_scale), float(job.out_max), 0.0,
                                        int(job.n_colour), int(job.value_mode), draws,
                                        int(job.draw_row), job.rows.weight, job.cols.weight),
                       SAMPLE)
        else:
            run_rows(stochastic_sample_kernel, job.out, *job.kernel_args(), draws, job.draw_row,
                     job.value_mode, job.n_colour, sample_kernel_form(job))
        return
    # sum c a^2 / sum c a is homogeneous of degree 1: pool a / hi, which cannot
    # overflow when squared, and multiply back.
    top = job.value_range[1]
    unit = top if top > 0.0 else 1.0
    if plan is not None and plan.constant:
        run_blocks(plan, stochastic_blocks, job.image, job.out,
                   StochasticParams(float(job.in_scale / unit), float(job.out_max), float(unit),
                                    int(job.n_colour), int(job.value_mode), job_draws(job, 0),
                                    int(job.draw_row), job.rows.weight, job.cols.weight),
                   EXPECTATION)
    else:
        run_separable(job, MODE_SQUARES, ref=unit, in_scale=job.in_scale / unit)
