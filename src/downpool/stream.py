"""Downscale an image that arrives a band of rows at a time, in bounded memory.

A decoder that hands out rows in order (libvips with sequential access, a
TIFF strip reader, a network stream) feeds them to a :class:`RowDownscaler`,
which pools each strip of output rows (:mod:`downpool.strips`) as soon as the
input rows it reads have arrived, and keeps only the rows a later strip still
reads.  The output is :func:`downpool.downscale`'s on the whole image, bit for
bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import api
from .core import check_dtype, float_range
from .methods import get_method

__all__ = ["RowDownscaler"]


class RowDownscaler:
    """Pool an image of ``shape`` fed as consecutive bands of rows.

    Parameters
    ----------
    shape : (H, W) or (H, W, C)
        The whole image's shape.
    dtype : uint8, uint16, float32 or float64
        The rows' dtype; every band must have it.
    method : str
        As for :func:`downpool.downscale`, and so are ``kernel_size``,
        ``stride``, ``size``, ``scale``, ``device``, ``has_alpha``, ``linear``
        and the method's parameters.
    value_range : (float, float), optional
        For float images, required: bounds of every value of the image (its
        minimum and maximum give ``downscale``'s result bit for bit; wider
        bounds a result within the SPEC's accuracy).  The kernels' exact fast
        paths are chosen from it before any row arrives.  A band with a value
        outside it is a ``ValueError``.  Integer images are bounded by their
        dtype.
    max_bytes : int, optional
        Working memory of one strip (default :data:`downpool.api.STRIP_BYTES`):
        the rows kept between bands and the strip's scratch are about this
        much, or one output row's windows where those take more.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(48, dtype=np.uint8).reshape(6, 8)
    >>> pooler = RowDownscaler(image.shape, image.dtype, "max", kernel_size=2)
    >>> parts = [pooler.feed(image[:3]), pooler.feed(image[3:])]
    >>> pooler.close()
    >>> np.concatenate(parts)
    array([[ 9, 11, 13, 15],
           [25, 27, 29, 31],
           [41, 43, 45, 47]], dtype=uint8)
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, method: str = "softpool", *,
                 value_range: tuple[float, float] | None = None, max_bytes: int | None = None,
                 **options: Any) -> None:
        dtype = np.dtype(dtype)
        check_dtype(dtype, labels=get_method(method).labels)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"shape must be (H, W) or (H, W, C) of positive sizes, got {shape}")
        if dtype.kind == "f":
            if value_range is None:
                raise ValueError("float rows need value_range: the image's minimum and maximum")
            lo, hi = (float(v) for v in value_range)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"value_range must be finite (lo, hi) with lo <= hi, got "
                                 f"{value_range}")
            value_range = (lo, hi)
        else:
            value_range = (0.0, 1.0)
        self._flat = len(shape) == 2
        full = (*shape, 1) if self._flat else tuple(shape)
        self._pooling = api.Pooling(method, full, dtype, value_range, **options)
        self._strips = self._pooling.strips(api.STRIP_BYTES if max_bytes is None else max_bytes)
        self._float_range = value_range if dtype.kind == "f" else None
        self._next = 0           # the next strip to make
        self._kept: list[tuple[int, np.ndarray]] = []  # (first input row, rows), in order
        self._received = 0

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The whole output's shape."""
        shape = self._pooling.out_shape
        return shape[:2] if self._flat else shape

    @property
    def rows_out(self) -> int:
        """Output rows made so far."""
        return self._strips[self._next - 1][1] if self._next else 0

    def feed(self, rows: Any) -> np.ndarray:
        """Take the next band of input rows; return the output rows it completes.

        ``rows`` has the image's width, channels and dtype, and may be any
        number of rows (0 too) up to the rows left.  The result has shape
        ``(n, out_w[, C])`` with ``n`` from 0 up; the results of all calls,
        in order, are the whole output.  ``rows`` is not kept: the caller may
        reuse its buffer.
        """
        band = np.asarray(rows)
        height, width, channels = self._pooling.shape
        want = (width,) if self._flat else (width, channels)
        if band.ndim != len(want) + 1 or band.shape[1:] != want:
            raise ValueError(f"rows must have shape (n, {', '.join(map(str, want))}), "
                             f"got {band.shape}")
        if band.dtype != self._pooling.dtype:
            raise TypeError(f"rows must be {self._pooling.dtype}, got {band.dtype}")
        if self._received + band.shape[0] > height:
            raise ValueError(f"the image has {height} rows; {self._received} came before "
                             f"these {band.shape[0]}")
        if self._float_range is not None and band.size:
            found = float_range(band)
            lo, hi = self._float_range
            if found is None:
                raise ValueError("rows contain NaN or infinite values")
            if found[0] < lo or found[1] > hi:
                raise ValueError(f"rows hold values in [{found[0]!r}, {found[1]!r}], outside "
                                 f"value_range ({lo!r}, {hi!r})")
        if band.shape[0]:
            band = band.reshape(band.shape[0], width, channels)
            self._kept.append((self._received, band))
            self._received += band.shape[0]
        made = []
        while self._next < len(self._strips) and self._strips[self._next][3] <= self._received:
            first, stop, in_start, in_end = self._strips[self._next]
            made.append(self._pooling.pool_strip(self._rows(in_start, in_end), first, stop,
                                                 in_start))
            self._next += 1
            self._drop_rows_before(self._strips[self._next][2] if self._next < len(self._strips)
                                   else height)
        # What is kept of this band is copied: the caller may reuse its buffer.
        if self._kept and np.may_share_memory(self._kept[-1][1], band):
            start, last = self._kept[-1]
            self._kept[-1] = (start, last.copy())
        out_w = self._pooling.out_shape[1]
        out = (np.concatenate(made) if made
               else np.empty((0, out_w, channels), dtype=self._pooling.dtype))
        return out[:, :, 0] if self._flat else out

    def close(self) -> None:
        """Check that every row came; a ``ValueError`` says how many are missing."""
        height = self._pooling.shape[0]
        if self._received < height:
            raise ValueError(f"the image has {height} rows and only {self._received} came")

    def _rows(self, start: int, end: int) -> np.ndarray:
        """Input rows ``[start, end)`` from what is kept (a view where one band holds them)."""
        parts = [rows[max(start - first, 0):end - first] for first, rows in self._kept
                 if first < end and first + rows.shape[0] > start]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _drop_rows_before(self, row: int) -> None:
        kept = []
        for first, rows in self._kept:
            if first + rows.shape[0] <= row:
                continue
            if first < row:
                rows, first = rows[row - first:], row
            kept.append((first, rows))
        self._kept = kept
