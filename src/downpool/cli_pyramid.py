"""``downpool pyramid``: an image file or a zarr array to an OME-Zarr multiscale pyramid.

Level 0 of an image file is written as libvips (or Pillow) decodes it, a band
of rows at a time (:func:`downpool.io.open_image`), so that a gigapixel TIFF
never sits in memory; each further level is ``kernel_size=2`` of the level
written before it, computed by Dask chunk by chunk (:mod:`downpool.dask`).
The zarr folder is made under a temporary name beside the output and renamed
when every level is written.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

from .cli import command_params, method_choice, method_param_options
from .methods import get_method

EXIT_FAILED = 1


def _fail(message: str) -> None:
    click.echo(f"downpool: error: {message}", err=True)
    sys.exit(EXIT_FAILED)


def _is_zarr_array(path: Path) -> bool:
    return path.is_dir() and ((path / ".zarray").is_file() or (path / "zarr.json").is_file())


@click.command("pyramid", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", metavar="INPUT")
@click.option("-o", "--output", "out", required=True, metavar="OUT.zarr",
              help="The OME-Zarr (NGFF 0.4) folder to write.")
@click.option("-m", "--method", type=method_choice(), default="avg", show_default=True,
              help="Pooling method of each level (mode: a label pyramid).")
@click.option("--levels", type=click.IntRange(min=1),
              help="Levels to write, level 0 (full size) included.")
@click.option("--min-size", "min_size", type=click.IntRange(min=1), metavar="PX",
              help="Halve until the smaller side is at most PX.  [default: --chunks]")
@click.option("--chunks", type=click.IntRange(min=16), default=512, show_default=True,
              help="Side of the stored chunks.")
@method_param_options
@click.option("--linear", is_flag=True, help="Pool in linear light (decode sRGB, pool, encode).")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.option("--max-pixels", type=click.IntRange(min=0), default=0, show_default=True,
              help="Refuse image files with more pixels than this (0: no limit).")
def pyramid(source: str, out: str, method: str, levels: int | None, min_size: int | None,
            chunks: int, linear: bool, overwrite: bool, max_pixels: int, **kwargs: Any) -> None:
    """Write an image pyramid as OME-Zarr (NGFF 0.4) for napari and ome-zarr-py.

    \b
    INPUT is an image file (PNG, JPEG, TIFF, WebP ...; read a band of rows
    at a time where libvips can), a zarr array of (H, W) or (H, W, C), or a
    folder of TIFF pages (a stack, in name order: axes z, y, x, each page
    pooled on its own).  Each level halves the one above with the chosen
    method (-k 2).

    \b
    downpool pyramid slide.tif -o slide.zarr --method dpid
    downpool pyramid labels.png -o labels.zarr --method mode --levels 4
    """
    spec, params = command_params(method, kwargs)
    if levels is not None and min_size is not None:
        raise click.UsageError("give one of --levels and --min-size")
    if spec.labels and linear:
        raise click.UsageError(f"--linear does not apply to {method}: it pools labels")
    try:
        from . import dask as dd

        dd._dask_array()
        dd._zarr()
    except ImportError as exc:
        _fail(str(exc))
    target = Path(out)
    if target.exists() and not overwrite:
        _fail(f"output {out} exists (use --overwrite to replace it)")
    source_path = Path(source)
    if not source_path.exists():
        _fail(f"{source}: no such file or folder")
    if target.resolve() == source_path.resolve():
        _fail(f"{out} is the input; choose another output")
    started = time.perf_counter()
    temporary = target.with_name(f".{target.name}.{os.getpid()}.downpool-tmp")
    try:
        made = _write(source_path, temporary, method, levels, min_size, chunks, linear,
                      max_pixels, params)
        _put_in_place(temporary, target)
    except (OSError, ValueError, TypeError) as exc:
        _fail(f"{source}: {' '.join(str(exc).split()) or type(exc).__name__}")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    sizes = ", ".join(f"{shape[1]}x{shape[0]}" for shape in made)
    click.echo(f"downpool: wrote {out}: {len(made)} levels ({sizes}) in "
               f"{time.perf_counter() - started:.1f} s", err=True)


def _write(source: Path, store: Path, method: str, levels: int | None, min_size: int | None,
           chunks: int, linear: bool, max_pixels: int, params: dict[str, Any]) -> list[tuple]:
    import dask.array as da

    from . import dask as dd

    labels = get_method(method).labels
    if _is_zarr_array(source):
        array = da.from_zarr(str(source))
        made = dd.pyramid(array, method, levels=levels, min_size=min_size, chunks=chunks,
                          linear=linear, store=str(store), name=source.stem, **params)
        return [level.shape for level in made]
    if source.is_dir():
        array, has_alpha = _stack(source)
        made = dd.pyramid(array, method, levels=levels, min_size=min_size, chunks=chunks,
                          has_alpha=has_alpha and not labels, linear=linear, store=str(store),
                          name=source.name, stack=True, **params)
        return [level.shape[1:] for level in made]
    from .io import open_image

    with open_image(source, max_pixels=max_pixels or None) as image:
        if image.shape is None:  # decoded whole by Pillow: its shape comes with the pixels
            loaded = image.read()
            pixels, has_alpha = loaded.pixels, loaded.has_alpha
            shape, dtype, rows = pixels.shape, pixels.dtype, iter([pixels])
        else:
            shape, dtype, has_alpha = image.shape, image.dtype, image.has_alpha
            row_bytes = max(1, int(dtype.itemsize * (shape[1] * (shape[2] if len(shape) == 3
                                                                 else 1))))
            rows = image.bands(max(1, (8 << 20) // row_bytes))
        sizes = dd.pyramid_levels(shape, levels, min_size, chunks)
        options = dict(has_alpha=has_alpha and not labels, linear=linear, **params)
        writer = dd.NgffWriter(str(store), shape, dtype, len(sizes), chunks, method,
                               source.stem, options)
        level = writer.write_rows(0, shape, rows)
    made = [level]
    for _ in sizes[1:]:
        made.append(writer.write(len(made), dd.downscale(made[-1], method, kernel_size=2,
                                                         **options)))
    return [level.shape for level in made]


#: The files of a folder that make a stack of pages.
STACK_EXTENSIONS = (".tif", ".tiff")


def _stack(folder: Path) -> tuple[Any, bool]:
    """The folder's TIFF files, in name order, as a lazy (Z, H, W[, C]) array: each page is
    read when its tasks run.  Every page must have the first one's shape and dtype."""
    import dask
    import dask.array as da
    import numpy as np

    from .io import open_image

    pages = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in STACK_EXTENSIONS and not p.name.startswith("."))
    if not pages:
        raise ValueError("is a folder with no TIFF pages (.tif, .tiff) to stack")
    shape = dtype = None
    has_alpha = False
    for page in pages:
        with open_image(page, max_pixels=None) as image:
            header = image.header
            found = ((header.height, header.width)
                     + ((header.channels,) if header.channels > 1 else ()),
                     np.dtype(np.uint16 if header.bytes_per_sample == 2 else np.uint8))
        if shape is None:
            (shape, dtype), has_alpha = found, header.has_alpha
        elif found != (shape, dtype):
            raise ValueError(f"page {page.name} is {found[0]} {found[1]}, the first page "
                             f"{pages[0].name} {shape} {dtype}: a stack's pages must agree")
    read = dask.delayed(_read_page, pure=True)
    return (da.stack([da.from_delayed(read(str(page), shape, dtype), shape, dtype)
                      for page in pages]), has_alpha)


def _read_page(path: str, shape: tuple[int, ...], dtype: Any) -> Any:
    from .io import read_image

    pixels = read_image(path, max_pixels=None).pixels
    if pixels.shape != shape or pixels.dtype != dtype:
        raise ValueError(f"page {Path(path).name} decodes as {pixels.shape} {pixels.dtype}, "
                         f"not {shape} {dtype}")
    return pixels


def _put_in_place(temporary: Path, target: Path) -> None:
    """Rename the finished folder to ``target``, an old one (--overwrite) removed after."""
    old = None
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise OSError(f"{target} exists and is not a folder; not replaced")
        old = target.with_name(f".{target.name}.{os.getpid()}.downpool-old")
        os.replace(target, old)
    os.replace(temporary, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
