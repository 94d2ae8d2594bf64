"""Windows that tile the image: the block plan of a job, the driver that runs a method's
block kernel over it, and the per-row and per-window steps every block kernel shares.

When the windows of both axes are consecutive blocks (integer pooling with a
stride equal to the kernel, or a ``size``/``scale`` that divides the image's
size), every pixel of a window has the same coverage, so the coverages drop
out of every formula.  Each method has a block kernel of its own in its module
(``downpool.methods.<name>``), with the signature :func:`run_blocks` calls.

The commonest block (:data:`CONSTANT_BLOCKS`, halving) of the commonest
images (:data:`CONSTANT_CHANNELS`, :data:`CONSTANT_DTYPES`) is compiled with
its sizes as *compile-time constants* (:func:`downpool.numba_idioms.known`):
LLVM then unrolls the window loops and vectorises across windows.  Every
other block and channel count shares one kernel with run-time values (empty
tuples); the partial windows at the bottom and right edges of a constant
kernel's image get a run-time kernel that makes them one by one, so that the
kernels to compile stay few: each costs compiling on first use.

Integer images keep integer arithmetic where the result allows it (the sums
of avg and of every window mean, max), and a block kernel writes stored values
straight into ``out``: nothing of the image's size is allocated.
"""

from __future__ import annotations

import numpy as np

from .core import PoolJob, as_rows
from .geometry import block_length
from .numba_idioms import jit, known
from .threads import run_rows

__all__ = ["CONSTANT_BLOCKS", "CONSTANT_CHANNELS", "CONSTANT_DTYPES", "BlockPlan", "block_plan",
           "constant_plan", "run_blocks", "block_layout", "block_row", "block_column"]

#: Square block sides compiled as constants; other blocks use run-time sizes.
CONSTANT_BLOCKS = (2,)


#: Channel counts compiled as constants (grey, RGB) with a constant block.
CONSTANT_CHANNELS = (1, 3)


#: Image dtypes compiled with constant sizes (float64 is rare in image files).
CONSTANT_DTYPES = ("uint8", "uint16", "float32")


class BlockPlan(tuple):
    """``(dims, sizes)``: the compile-time and run-time block geometry of a job.

    ``dims`` is ``(kh_dims, kw_dims, c_dims)``, tuples whose lengths are the
    constants compiled in (empty: the run-time value is used); ``sizes`` is
    ``(block_h, block_w)``.
    """

    __slots__ = ()

    @property
    def constant(self) -> bool:
        """Whether the block sizes are compiled in (then the kernel unrolls and vectorises)."""
        return len(self[0][0]) > 0


def block_plan(job: PoolJob) -> BlockPlan | None:
    """The block geometry of ``job`` for a block kernel, or None where it does not apply.

    None where the windows are not consecutive blocks on both axes, or an
    integer image is not written to its own dtype (the kernels keep integer
    sums and stored values there).
    """
    if job.image.dtype.kind == "u" and not (job.out_int and job.out.dtype == job.image.dtype):
        return None
    kh = block_length(job.rows) if job.block_rows is None else (job.block_rows or None)
    kw = block_length(job.cols) if job.block_cols is None else (job.block_cols or None)
    if kh is None or kw is None:
        return None
    constant = (kh == kw and kh in CONSTANT_BLOCKS and job.image.shape[2] in CONSTANT_CHANNELS
                and job.image.dtype.name in CONSTANT_DTYPES)
    channels = job.image.shape[2]
    if not constant:
        return BlockPlan((((), (), ()), (kh, kw)))  # every size at run time
    dims = ((0,) * kh, (0,) * kw, (0,) * channels)
    return BlockPlan((dims, (kh, kw)))


def constant_plan(job: PoolJob) -> BlockPlan | None:
    """The job's block plan where its sizes are compiled in, else None.

    Methods with a separable path take the block kernels only then: with
    run-time sizes the block kernel's window loops do not vectorise, and
    the separable passes, along the contiguous W*C axis, are faster.
    """
    plan = block_plan(job)
    return plan if plan is not None and plan.constant else None


def run_blocks(plan: BlockPlan, kernel, image: np.ndarray, out: np.ndarray, params,
               variant: int = 0, runtime_only: bool = False, full_kernel=None) -> None:
    """Run a method's block ``kernel`` over a job's blocks, on every thread.

    ``kernel(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
    params, j0, i0, i1)`` makes output rows ``i0`` to ``i1``; ``rows`` and ``out_rows``
    are the image and the output as rows (:func:`downpool.core.as_rows`), ``kh_dims``,
    ``kw_dims``, ``c_dims`` and ``sizes`` the plan's, ``variant_dims`` ``variant``
    zeros (the method's variant, a constant that prunes the others), and
    ``params`` the method's parameter record (a NamedTuple, which Numba caches
    kernels for).  With constant sizes a kernel makes the full blocks only
    (and ignores ``j0``): unrolled, and for some methods vectorised across
    windows.  With run-time sizes it makes every window of the rows, from
    column ``j0`` on in rows of full height; this driver runs it after the
    constant kernel for the partial windows at the right and bottom edges,
    with ``edge_dims`` ``(0,)``: thin strips, which kernels with passes along
    the row make window by window (compiling no passes they would not use).
    Otherwise ``edge_dims`` is empty.

    ``runtime_only``: the run-time sizes even where the plan has constant ones
    (variants too rarely used to compile kernels with constant sizes for).
    ``full_kernel(img, rows, out_rows, kh_dims, kw_dims, c_dims, params, i0, i1)``:
    another kernel for a constant plan's full blocks.
    """
    dims, sizes = plan
    arrays = (image, as_rows(image), as_rows(out))
    variant_dims = (0,) * variant
    if runtime_only:
        dims = ((), (), ())
    if full_kernel is not None and len(dims[0]) > 0:
        run_rows(full_kernel, out, *arrays, *dims, params)
    else:
        run_rows(kernel, out, *arrays, *dims, (), sizes, variant_dims, params, 0)
    if len(dims[0]) == 0:
        return
    full_rows, full_cols = image.shape[0] // sizes[0], image.shape[1] // sizes[1]
    # Thin strips, not worth splitting between threads: the last column of
    # every row (and all of a partial last row), or the partial last row alone.
    edge = ((), (), (), (0,))  # run-time sizes, windows one by one
    if full_cols < out.shape[1]:
        kernel(*arrays, *edge, sizes, variant_dims, params, full_cols, 0, out.shape[0])
    elif full_rows < out.shape[0]:
        kernel(*arrays, *edge, sizes, variant_dims, params, 0, full_rows, out.shape[0])


@jit(inline="always")
def block_layout(img, out_rows, kh_dims, kw_dims, c_dims, sizes, i1):
    """``(block_h, block_w, channels, n_cols, i1, constant)`` of a block kernel's call: the
    constant sizes where the dims give them, a constant kernel's rows and columns of
    full blocks alone, and whether the sizes are constants."""
    block_h = known(kh_dims, sizes[0])
    block_w = known(kw_dims, sizes[1])
    channels = known(c_dims, img.shape[2])
    if len(kh_dims) > 0:
        return (block_h, block_w, channels, img.shape[1] // block_w,
                min(i1, img.shape[0] // block_h), True)
    return block_h, block_w, channels, out_rows.shape[1] // channels, i1, False


@jit(inline="always")
def block_row(out_rows, i, block_h, height, constant, j0):
    """``(o, y0, ny, first)`` of output row ``i``: the row of ``out_rows``, its first
    input row and row count (a constant kernel's stay constants), and its first window
    to make (``j0`` in rows of full height, else 0)."""
    y0 = i * block_h
    ny = block_h if constant else min(block_h, height - y0)
    first = 0 if constant or ny < block_h else j0
    return out_rows[i], y0, ny, first


@jit(inline="always")
def block_column(j, block_w, width, constant, channels):
    """``(x0, nx, base)`` of window ``j``: its first input column and column count, and
    the index of its first value in the output row."""
    x0 = j * block_w
    return x0, (block_w if constant else min(block_w, width - x0)), j * channels
