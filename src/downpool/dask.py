"""Downscaling Dask arrays chunk by chunk, and OME-Zarr pyramids (``pip install "downpool[dask]"``).

:func:`downscale` gives a lazy ``dask.array`` whose computed values are, bit
for bit, those of :func:`downpool.downscale` on the whole array, for any
input chunking.  The output is made in strips of output rows
(:meth:`downpool.api.Pooling.strips`), each from the input rows its windows
read: strips that share input rows (overlapping strides, area boxes that
straddle) each read them, dpid's strips carry the output row of halo its
guide smoothing needs, stochastic draws are keyed by the global output row.
Strips are cut in tiles of output columns (:meth:`downpool.api.Pooling.column_tiles`),
each from its input columns (and dpid's column of halo), keyed by the global
output index: a task joins the chunks of its tile, about ``max_bytes`` of input
(32 MiB by default), never a full-width band or the whole array.

:func:`pyramid` makes each level by ``kernel_size=2`` from the level above
(of each page, for a stack of pages) and can write them as an OME-NGFF 0.4
multiscale image (zarr format 2, :class:`NgffWriter`), the version every
NGFF reader (ome-zarr-py, napari-ome-zarr) reads.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .api import STRIP_BYTES, Pooling
from .core import check_dtype
from .methods import get_method

__all__ = ["downscale", "downscale_frames", "pyramid", "pyramid_levels", "write_ngff", "NgffWriter",
           "multiscales_metadata", "MissingExtraError", "NGFF_VERSION"]

#: The OME-NGFF version of what :func:`write_ngff` writes.
NGFF_VERSION = "0.4"


class MissingExtraError(ImportError):
    """Dask or zarr is not installed; the message names the extra that brings them."""


def _dask_array() -> Any:
    try:
        import dask.array as da
    except ImportError:
        raise MissingExtraError(
            'downpool.dask needs Dask: pip install "downpool[dask]"') from None
    return da


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise MissingExtraError(
            'writing OME-Zarr needs zarr: pip install "downpool[dask]"') from None
    return zarr


def downscale(array: Any, method: str = "softpool", *, kernel_size: Any = None,
              stride: Any = None, size: Any = None, scale: Any = None, device: str = "cpu",
              has_alpha: bool = False, linear: bool = False, max_bytes: int | None = None,
              time_kernel: int | None = None, time_stride: int | None = None,
              **params: Any) -> Any:
    """Downscale a Dask array lazily, with exactly :func:`downpool.downscale`'s result.

    Parameters
    ----------
    array : dask.array.Array or array_like, shape (H, W) or (H, W, C)
        Any chunking; the dtypes of :func:`downpool.downscale`.  With
        ``time_kernel``, frames (T, H, W) or (T, H, W, C): see
        :func:`downscale_frames`.
    method, kernel_size, stride, size, scale, has_alpha, linear, **params
        As for :func:`downpool.downscale`.
    time_kernel, time_stride : int, optional
        Pool frames in time as well (:func:`downscale_frames`).
    device : {"cpu", "auto", "cuda"}
        Where each task pools, on the worker that runs it (default the CPU).
    max_bytes : int, optional
        About how many bytes of input one task reads (default 32 MiB, a square
        tile); the output's chunks are the tiles.

    Returns
    -------
    dask.array.Array
        (out_h, out_w[, C]) with the input's dtype, chunked in tiles.

    Raises
    ------
    ValueError, TypeError
        As :func:`downpool.downscale` for the geometry, parameters, dtype and
        shape, at once; for NaN/inf or negative float values (``lp``,
        ``stochastic``), when the result is computed.
    MissingExtraError
        Without Dask.

    Examples
    --------
    >>> import dask.array as da, downpool.dask
    >>> x = da.ones((1000, 800, 3), dtype="uint8", chunks=256)
    >>> downpool.dask.downscale(x, "dpid", kernel_size=4).shape
    (250, 200, 3)
    """
    options = dict(kernel_size=kernel_size, stride=stride, size=size, scale=scale, device=device,
                   has_alpha=has_alpha, linear=linear, **params)
    if time_kernel is not None or time_stride is not None:
        return downscale_frames(array, method, time_kernel=time_kernel or 1,
                                time_stride=time_stride, max_bytes=max_bytes, **options)
    da = _dask_array()
    x = array if isinstance(array, da.Array) else da.asarray(array)
    spec = get_method(method)
    check_dtype(x.dtype, labels=spec.labels)
    if x.ndim not in (2, 3):
        raise ValueError(f"array must be 2-D (H, W) or 3-D (H, W, C), got shape {x.shape}")
    if 0 in x.shape or any(math.isnan(n) for n in x.shape):
        raise ValueError(f"array must have a known, non-empty shape, got {x.shape}")
    flat = x.ndim == 2
    if flat:
        x = x[:, :, None]
    # The plan: float values get their range when computed; (0, 1) stands in.
    plan = Pooling(method, x.shape, x.dtype, (0.0, 1.0), **options)
    extra = [x.min(), x.max()] if x.dtype.kind == "f" else []  # 0-d: every task gets them
    out = _tiled(plan, lambda rows, cols: x[rows, cols], extra, max_bytes, method=method,
                 options=options)
    return out[:, :, 0] if flat else out


def _tiled(plan: Pooling, read: Any, extra: list, max_bytes: int | None, frames: int = 1,
           **task: Any) -> Any:
    """``plan``'s output as a grid of tasks: strips of output rows cut into tiles of
    output columns, each pooled by :func:`_pool_tile` from ``read(rows, cols)`` (the
    slices of input rows, interleaved over ``frames`` frames, and columns it reads).

    Tiles are about as wide as tall, about ``max_bytes`` (default 32 MiB) of input: a
    task joins the chunks of its tile, never a full-width band of the array.
    """
    da = _dask_array()
    budget = STRIP_BYTES if max_bytes is None else max_bytes
    channels, dtype = plan.shape[2], plan.dtype
    side = max(1, math.isqrt(max(1, int(budget) // (channels * dtype.itemsize * frames))))
    tiles = plan.column_tiles(side)
    widest = max(tiles, key=lambda t: t[3] - t[2])
    grid = []
    for first, stop, in_start, in_end in plan.strips(
            budget, tile=(widest[1] - widest[0], widest[3] - widest[2])):
        row = []
        for c_first, c_stop, x_start, x_end in tiles:
            part = read(slice(in_start, in_end), slice(x_start, x_end)).rechunk(-1)
            row.append([da.map_blocks(
                _pool_tile, part, *extra, dtype=dtype,
                chunks=((stop - first,), (c_stop - c_first,), (channels,)),
                drop_axis=0 if part.ndim == 4 else [], meta=np.empty((0, 0, 0), dtype),
                shape=(plan.shape[0] // frames, *plan.shape[1:]),
                frames=frames, first=first, stop=stop, in_start=in_start,
                columns=(c_first, c_stop, x_start), token=f"downpool-{task['method']}",
                **task)])
        grid.append(row)  # np.block's nesting: rows, columns, channels
    return da.block(grid)


def _pool_tile(part: np.ndarray, *value_range: np.ndarray, shape: tuple[int, ...], method: str,
               frames: int, first: int, stop: int, in_start: int, columns: tuple[int, int, int],
               options: dict[str, Any], frame: int = 0) -> np.ndarray:
    """One task: output rows ``[first, stop)`` and columns ``columns[:2]`` from ``part``,
    the input rows from ``in_start`` on and columns from ``columns[2]`` on: of an image
    of ``shape``, or (``part`` of shape (n, rows, W, C)) of output frame ``frame`` of
    ``frames`` frames of ``shape``, interleaved as :mod:`downpool.frames` does."""
    pooling = Pooling(method, shape, part.dtype, _found_range(value_range), frames=frames,
                      **options)
    if part.ndim == 4:
        from .frames import stack_windows

        part = stack_windows([[np.ascontiguousarray(p) for p in part]])
    return pooling.pool_strip(np.ascontiguousarray(part), first, stop, in_start, frame,
                              columns=columns)


def downscale_frames(array: Any, method: str = "softpool", *, time_kernel: int = 1,
                     time_stride: int | None = None, max_bytes: int | None = None,
                     **options: Any) -> Any:
    """Downscale a Dask array of frames lazily, with :func:`downpool.downscale_frames`'s result.

    Parameters
    ----------
    array : dask.array.Array or array_like, shape (T, H, W) or (T, H, W, C)
        Frames first; any chunking.
    method, time_kernel, time_stride, **options
        As for :func:`downpool.downscale_frames` (``device`` defaults to the CPU).
    max_bytes : int, optional
        About how many bytes of input one task reads (default 32 MiB).

    Returns
    -------
    dask.array.Array
        (out_t, out_h, out_w[, C]): each task makes a tile of one output frame
        (as :func:`downscale` does) from those rows and columns of its time
        window's frames, so bit for bit what ``downscale_frames`` gives for any
        chunking.

    Examples
    --------
    >>> import dask.array as da, downpool.dask
    >>> clip = da.zeros((10, 480, 640, 3), dtype="uint8", chunks=(4, 240, 320, 3))
    >>> downpool.dask.downscale_frames(clip, "max", time_kernel=2, kernel_size=2).shape
    (5, 240, 320, 3)
    """
    from .frames import check_time_geometry, time_windows

    da = _dask_array()
    x = array if isinstance(array, da.Array) else da.asarray(array)
    check_dtype(x.dtype, labels=get_method(method).labels)
    if x.ndim not in (3, 4):
        raise ValueError(f"frames must be 3-D (T, H, W) or 4-D (T, H, W, C), got shape {x.shape}")
    if 0 in x.shape or any(math.isnan(n) for n in x.shape):
        raise ValueError(f"array must have a known, non-empty shape, got {x.shape}")
    kt, st = check_time_geometry(time_kernel, time_stride)
    flat = x.ndim == 3
    if flat:
        x = x[..., None]
    options.setdefault("device", "cpu")
    frame_shape = x.shape[1:]
    outputs = []
    for f, (a, b) in enumerate(time_windows(x.shape[0], kt, st)):
        n = b - a
        plan = Pooling(method, frame_shape, x.dtype, (0.0, 1.0), frames=n, **options)
        window = x[a:b]
        extra = [window.min(), window.max()] if x.dtype.kind == "f" else []
        # Interleaved rows [start, stop) are the window's frame rows start/n .. stop/n.
        outputs.append(_tiled(
            plan, lambda rows, cols, window=window, n=n:
            window[:, rows.start // n:rows.stop // n, cols], extra, max_bytes, frames=n,
            method=method, options=options, frame=f))
    out = da.stack(outputs)
    return out[..., 0] if flat else out


def _found_range(value_range: tuple[np.ndarray, ...]) -> tuple[float, float]:
    """A float array's (min, max), computed by Dask; (0, 1) for integers."""
    if not value_range:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("image contains NaN or infinite values")
    return lo, hi


def pyramid_levels(shape: Sequence[int], levels: int | None = None,
                   min_size: int | None = None, chunks: int = 512) -> list[tuple[int, int]]:
    """(H, W) of each level: level 0 is ``shape``, each next one ``ceil(n / 2)`` per axis.

    ``levels`` counts them, level 0 included; else they go on until the
    smaller side is at most ``min_size`` (default ``chunks``: the top level
    fits in one chunk), and never below one pixel.
    """
    if levels is not None and min_size is not None:
        raise ValueError("give at most one of levels and min_size")
    if levels is not None and levels < 1:
        raise ValueError(f"levels must be at least 1, got {levels}")
    if min_size is not None and min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    h, w = int(shape[0]), int(shape[1])
    sizes = [(h, w)]
    stop_at = chunks if min_size is None else min_size
    while True:
        if levels is not None and len(sizes) == levels:
            break
        if levels is None and min(sizes[-1]) <= stop_at:
            break
        if sizes[-1] == (1, 1):
            break
        h, w = sizes[-1]
        sizes.append((-(-h // 2), -(-w // 2)))
    return sizes


def pyramid(array: Any, method: str = "avg", *, levels: int | None = None,
            min_size: int | None = None, chunks: int = 512, has_alpha: bool = False,
            linear: bool = False, store: Any = None, name: str | None = None,
            stack: bool = False, **params: Any) -> list[Any]:
    """The levels of an image pyramid, each ``kernel_size=2`` of the one above.

    Parameters
    ----------
    array : dask.array.Array or array_like, shape (H, W) or (H, W, C)
        Level 0; with ``stack``, (Z, H, W) or (Z, H, W, C): pages, each
        pooled on its own (z is not pooled).
    method, has_alpha, linear, **params
        As for :func:`downscale`.  ``mode`` makes a label pyramid.
    levels, min_size, chunks
        How many levels (:func:`pyramid_levels`); ``chunks`` is also the
        side of the stored chunks.
    store : str, path or zarr store, optional
        Where to write the pyramid as OME-NGFF (:class:`NgffWriter`); each
        level is then written before the next is made from what was written,
        so that no level is computed twice.
    name : str, optional
        The multiscale image's name in the metadata.

    Returns
    -------
    list of dask.array.Array
        Level 0 first; read back from the store where one was given.
    """
    da = _dask_array()
    x = array if isinstance(array, da.Array) else da.asarray(array)
    sizes = pyramid_levels(x.shape[1:] if stack else x.shape, levels, min_size, chunks)
    options = dict(has_alpha=has_alpha, linear=linear, **params)

    def halve(level: Any) -> Any:
        if not stack:
            return downscale(level, method, kernel_size=2, **options)
        return da.stack([downscale(level[z], method, kernel_size=2, **options)
                         for z in range(level.shape[0])])

    if store is None:
        made = [x]
        for _ in sizes[1:]:
            made.append(halve(made[-1]))
        return made
    writer = NgffWriter(store, x.shape, x.dtype, len(sizes), chunks, method, name, options,
                        stack=stack)
    made = [writer.write(0, x)]
    for level in range(1, len(sizes)):
        made.append(writer.write(level, halve(made[-1])))
    return made


class NgffWriter:
    """An OME-NGFF 0.4 multiscale image in a zarr (format 2) group, written level by level.

    Levels are (H, W[, C]), or with ``stack`` (Z, H, W[, C]); they are stored
    in NGFF's axis order, channel first: (C, [Z,] Y, X), in chunks of
    ``chunks`` x ``chunks`` pixels (one page, every channel; a level's own side
    where it is smaller).  The group's
    ``multiscales`` metadata lists every level from the start; each level's
    scale is ``2 ** level`` in y and x and its translation puts its pixel
    centres at the centres of the windows it pooled.
    """

    def __init__(self, store: Any, shape: Sequence[int], dtype: Any, count: int, chunks: int,
                 method: str, name: str | None, options: dict[str, Any],
                 stack: bool = False) -> None:
        zarr = _zarr()
        planes = len(shape) - (1 if stack else 0)
        if planes not in (2, 3):
            raise ValueError(f"levels must be {'(Z, ' if stack else '('}H, W) or "
                             f"{'(Z, ' if stack else '('}H, W, C), got shape {tuple(shape)}")
        self.channels = shape[-1] if planes == 3 else None
        self.stack = stack
        self.chunks = int(chunks)
        self.dtype = np.dtype(dtype)
        self.group = zarr.open_group(store, mode="w", zarr_format=2)
        self.group.attrs.update(multiscales_metadata(count, self.channels, method, name,
                                                     options, stack=stack))

    def _stored(self, x: Any) -> Any:
        """``x`` in the stored axis order: the channel axis first."""
        if self.channels is None:
            return x
        return x.transpose(x.ndim - 1, *range(x.ndim - 1))

    def _create(self, level: int, shape: Sequence[int]) -> tuple[Any, tuple[int, ...]]:
        """The zarr array of dataset ``level`` for a level of ``shape``, and its chunks (at
        most ``chunks`` on a side, and never larger than the level: zarr makes whole chunks)."""
        plane = tuple(shape[1:3] if self.stack else shape[:2])
        chunk_shape = (*((1,) if self.stack else ()), *(min(self.chunks, int(n)) for n in plane))
        stored = tuple(shape)
        if self.channels is not None:
            chunk_shape = (self.channels, *chunk_shape)
            stored = (stored[-1], *stored[:-1])
        target = self.group.create_array(str(level), shape=stored, chunks=chunk_shape,
                                         dtype=self.dtype,
                                         chunk_key_encoding={"name": "v2", "separator": "/"},
                                         fill_value=0, overwrite=True)
        return target, chunk_shape

    def _read_back(self, target: Any) -> Any:
        back = _dask_array().from_zarr(target)
        return back if self.channels is None else back.transpose(*range(1, back.ndim), 0)

    def write(self, level: int, array: Any) -> Any:
        """Store ``array`` as dataset ``level``; return it read back, in its own axis order."""
        da = _dask_array()
        x = array if isinstance(array, da.Array) else da.asarray(array)
        target, chunk_shape = self._create(level, x.shape)
        # Whole chunks per task: no two tasks write into one chunk, so no lock.
        da.store(self._stored(x).rechunk(chunk_shape), target, lock=False)
        return self._read_back(target)

    def write_rows(self, level: int, shape: Sequence[int], bands: Any) -> Any:
        """Store dataset ``level`` of (H, W[, C]) ``shape`` from ``bands`` of rows, in order
        (as a file decodes), holding at most one row of chunks; return it read back."""
        if self.stack:
            raise ValueError("a stack is written whole levels at a time")
        target, _ = self._create(level, shape)
        self._store_bands(target, (), shape, bands)
        return self._read_back(target)

    def write_pages(self, level: int, shape: Sequence[int], pages: Any) -> Any:
        """Store dataset ``level`` of a stack, (Z, H, W[, C]) ``shape``, from ``pages``: for
        each page in turn, its bands of rows (as :meth:`write_rows` takes them), so that
        one row of chunks is held; return it read back."""
        if not self.stack:
            raise ValueError("pages make a stack")
        target, _ = self._create(level, shape)
        count = 0
        for z, bands in enumerate(pages):
            if z >= shape[0]:
                raise ValueError(f"more pages than the {shape[0]} of the stack")
            self._store_bands(target, (z,), shape[1:], bands)
            count += 1
        if count != shape[0]:
            raise OSError(f"the stack has {shape[0]} pages and only {count} came")
        return self._read_back(target)

    def _store_bands(self, target: Any, index: tuple, shape: Sequence[int], bands: Any) -> None:
        """Store the (H, W[, C]) plane ``target[..., *index, :, :]`` from bands of rows."""
        height = int(shape[0])
        pending: list[np.ndarray] = []
        held = top = 0
        for band in bands:
            band = band.reshape(band.shape[0], *shape[1:])
            while band.shape[0]:
                take = min(band.shape[0], self.chunks - held)
                pending.append(np.array(band[:take]))  # the band's buffer may be reused
                held += take
                band = band[take:]
                if held == self.chunks or top + held == height:
                    target[(Ellipsis, *index, slice(top, top + held), slice(None))] = (
                        self._stored(np.concatenate(pending)))
                    top, held, pending = top + held, 0, []
        if top != height:
            raise OSError(f"the image has {height} rows and only {top} came")


def multiscales_metadata(count: int, channels: int | None, method: str,
                         name: str | None = None, options: dict[str, Any] | None = None,
                         stack: bool = False) -> dict[str, Any]:
    """The group attributes of an OME-NGFF 0.4 multiscale image of ``count`` levels."""
    from . import __version__

    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    lead: list[float] = []
    if stack:
        axes.insert(0, {"name": "z", "type": "space"})
        lead.append(1.0)
    if channels is not None:
        axes.insert(0, {"name": "c", "type": "channel"})
        lead.append(1.0)
    datasets = []
    for level in range(count):
        factor = float(2 ** level)
        offset = (factor - 1) / 2  # a window of 2^l pixels is centred here
        transforms = [{"type": "scale", "scale": [*lead, factor, factor]}]
        if level:
            transforms.append({"type": "translation",
                               "translation": [*(0.0 for _ in lead), offset, offset]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    kwargs = {key: value for key, value in (options or {}).items()
              if isinstance(value, (bool, int, float, str))}
    return {"multiscales": [{
        "version": NGFF_VERSION,
        "name": name or "image",
        "axes": axes,
        "datasets": datasets,
        "type": method,
        "metadata": {"method": "downpool.dask.pyramid", "version": __version__,
                     "kwargs": {"method": method, "kernel_size": 2, **kwargs}},
    }]}


def write_ngff(store: Any, levels: Sequence[Any], *, chunks: int = 512, method: str = "avg",
               name: str | None = None, stack: bool = False) -> list[Any]:
    """Write ``levels`` (arrays, each half the one before) as OME-NGFF 0.4 (:class:`NgffWriter`);
    return them read back from the store."""
    da = _dask_array()
    first = levels[0] if isinstance(levels[0], da.Array) else da.asarray(levels[0])
    writer = NgffWriter(store, first.shape, first.dtype, len(levels), chunks, method, name, {},
                        stack=stack)
    return [writer.write(i, level) for i, level in enumerate(levels)]
