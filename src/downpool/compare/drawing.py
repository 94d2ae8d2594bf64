"""The montage: a picture of what each method keeps of every image's most detailed region.

Each image is a block of cells, :data:`MONTAGE_COLUMNS` wide: the region of
the original with the most detail (:func:`detail_window`), then that region
of every method's and baseline's output, enlarged with nearest neighbour so
that its pixels show, each labelled with its SSIM and PSNR.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..api import downscale
from ..messages import one_line
from .report import best_marks, psnr_text
from .scores import ImageComparison

__all__ = ["MONTAGE_COLUMNS", "TILE_SIDE", "CROP_SIDE", "LABEL_HEIGHT", "GAP", "MontageCell",
           "detail_window", "montage_size", "montage_cells", "montage", "save_montage",
           "montage_format"]

# Montage layout, in pixels: every image gets a block of cells, MONTAGE_COLUMNS
# cells wide; a cell is a TILE_SIDE square over a LABEL_HEIGHT label, with GAP
# between cells and around the edge.  The size depends only on the number of
# images and tiles, not on their content (see `montage`).
#: Side of a cell's square picture, in pixels.
TILE_SIDE = 192
#: Output pixels per side of the cropped region shown per method.
CROP_SIDE = 24
#: Height of a cell's label, below its picture, in pixels.
LABEL_HEIGHT = 30
#: Pixels between cells and around the montage's edge.
GAP = 6
#: Cells per row of an image's block.
MONTAGE_COLUMNS = 5

_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_HIGHLIGHT = (170, 0, 0)


def detail_window(x: np.ndarray, comparison: ImageComparison,
                   crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left output pixel of the ``crop``-sized region with the most detail.

    Detail is the local variance of the grey image (mean of the channels)
    inside each output pixel's pooling window, ``avg(g^2) - avg(g)^2`` -- what
    averaging throws away and what the detail-preserving methods try to
    keep -- summed over the candidate region.

    Parameters
    ----------
    x : ndarray, shape (H, W) or (H, W, C)
        The original X of ``comparison``, floats in [0, 1].
    comparison : ImageComparison
        Gives the output size and the geometry the methods were given.
    crop : (int, int)
        The region's (height, width) in output pixels, at most the output's.

    Returns
    -------
    top, left : int
        The region's top-left corner, in output pixels; the first such
        region in row-major order where several have the most detail.
    """
    grey = x if x.ndim == 2 else x.mean(axis=2)
    out_h, out_w = comparison.scores[0].size
    # The pooling methods' own windows: avg with the geometry they were given.
    mean = downscale(grey, "avg", **comparison.geometry)
    variance = np.maximum(downscale(grey * grey, "avg", **comparison.geometry) - mean * mean, 0.0)
    ch, cw = crop
    table = np.zeros((out_h + 1, out_w + 1))
    table[1:, 1:] = variance.cumsum(axis=0).cumsum(axis=1)
    sums = table[ch:, cw:] - table[:-ch, cw:] - table[ch:, :-cw] + table[:-ch, :-cw]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def _to_rgb8(image: np.ndarray) -> Image.Image:
    """A [0, 1] float image as an 8-bit RGB Pillow image."""
    u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if u8.ndim == 3 and u8.shape[2] != 3:
        u8 = u8.mean(axis=2).astype(np.uint8)  # neither grey nor RGB: show the channel mean
    return Image.fromarray(u8).convert("RGB")


def _tile(image: np.ndarray, nearest: bool) -> Image.Image:
    """Fit a crop into the tile square: nearest-neighbour enlargement by an
    integer factor, so every output pixel shows as a sharp block."""
    picture = _to_rgb8(image)
    h, w = image.shape[:2]
    factor = TILE_SIDE / max(h, w)
    if factor >= 1:
        factor = math.floor(factor)
        return picture.resize((w * factor, h * factor), Image.Resampling.NEAREST)
    # Only the original crop of a large k is bigger than the tile: shrink it smoothly.
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return picture.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS)


def montage_size(n_images: int, n_tiles: int) -> tuple[int, int]:
    """(width, height) of the montage of ``n_images`` images with ``n_tiles`` cells each.

    ``columns = min(n_tiles, MONTAGE_COLUMNS)``, ``rows = ceil(n_tiles / columns)``
    per image; ``width = columns * (TILE_SIDE + GAP) + GAP`` and
    ``height = n_images * rows * (TILE_SIDE + LABEL_HEIGHT + GAP) + GAP``.

    Parameters
    ----------
    n_images : int
        Images in the montage.
    n_tiles : int
        Cells per image, at least 1: the original crop, one per method and
        one per baseline.

    Returns
    -------
    (int, int)
        The montage's width and height, in pixels.
    """
    columns = min(n_tiles, MONTAGE_COLUMNS)
    rows = -(-n_tiles // columns)
    return (columns * (TILE_SIDE + GAP) + GAP,
            n_images * rows * (TILE_SIDE + LABEL_HEIGHT + GAP) + GAP)


#: One montage cell: its picture and its label lines, each line a list of
#: ``(text, is_best)`` pieces (a best value is drawn in red).
MontageCell = tuple[Image.Image, list[list[tuple[str, bool]]]]


def montage_cells(comparison: ImageComparison) -> list[MontageCell]:
    """The cells of one image's montage block: the original crop, then one per score.

    The region with the most detail (see :func:`detail_window`; ``CROP_SIDE``
    output pixels a side, or the whole output if smaller) is cut from X and
    from every output, and each crop is enlarged with nearest neighbour so
    its pixels show; labels give the method, its parameters and its
    SSIM/PSNR.  Needs a comparison made with ``keep_outputs=True``; the cells
    are small, so a caller going through many images can keep these and drop
    the comparison.

    Parameters
    ----------
    comparison : ImageComparison
        Made with ``keep_outputs=True``.

    Returns
    -------
    list of MontageCell
        The original's crop, then one cell per score, in table order.

    Raises
    ------
    ValueError
        The comparison kept no outputs.
    """
    x = comparison.original
    if x is None:
        raise ValueError("a montage needs a comparison made with keep_outputs=True")
    out_h, out_w = comparison.scores[0].size
    crop = (min(CROP_SIDE, out_h), min(CROP_SIDE, out_w))
    top, left = detail_window(x, comparison, crop)
    fy, fx = comparison.footprint
    y0, x0 = round(top * fy), round(left * fx)
    y1 = min(x.shape[0], round((top + crop[0]) * fy))
    x1 = min(x.shape[1], round((left + crop[1]) * fx))
    cells: list[MontageCell] = [(
        _tile(x[y0:y1, x0:x1], nearest=False),
        [[(f"original: {one_line(os.path.basename(comparison.image))}", False)],
         [(f"{x1 - x0}x{y1 - y0} px at ({x0}, {y0})", False)]],
    )]
    for s, mark in zip(comparison.scores, best_marks(comparison.scores)):
        y = comparison.outputs[s.label][top:top + crop[0], left:left + crop[1]]
        suffix = " (reference)" if s.reference else ""
        cells.append((_tile(y, nearest=True),
                      [[(s.label + suffix, False)],
                       [(f"SSIM {s.ssim:.4f}", mark["ssim"]),
                        (f"PSNR {psnr_text(s.psnr)}", mark["psnr"])]]))
    return cells


def montage(images: Sequence[ImageComparison | list[MontageCell]]) -> Image.Image:
    """The picture to look at before choosing: what each method keeps of the detail.

    Parameters
    ----------
    images : sequence of ImageComparison or of lists of cells
        Comparisons made with ``keep_outputs=True``, or their
        :func:`montage_cells`; all with the same methods.

    Returns
    -------
    PIL.Image.Image
        An RGB image of :func:`montage_size`: each image is a block of cells
        ``MONTAGE_COLUMNS`` wide, the original crop first, then each method
        and baseline in table order.

    Raises
    ------
    ValueError
        For no image, images compared with different numbers of methods, or
        a comparison that kept no outputs.
    """
    blocks = [montage_cells(item) if isinstance(item, ImageComparison) else item
              for item in images]
    if not blocks:
        raise ValueError("a montage needs at least one image")
    n_tiles = len(blocks[0])
    if any(len(cells) != n_tiles for cells in blocks):
        raise ValueError("every image of a montage needs the same methods")
    width, height = montage_size(len(blocks), n_tiles)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    columns = min(n_tiles, MONTAGE_COLUMNS)
    block_height = -(-n_tiles // columns) * (TILE_SIDE + LABEL_HEIGHT + GAP)
    for index, cells in enumerate(blocks):
        for i, (picture, lines) in enumerate(cells):
            row, col = divmod(i, columns)
            cx = GAP + col * (TILE_SIDE + GAP)
            cy = GAP + index * block_height + row * (TILE_SIDE + LABEL_HEIGHT + GAP)
            canvas.paste(picture, (cx, cy))
            for j, pieces in enumerate(lines):
                for k, (text, best) in enumerate(pieces):
                    draw.text((cx + k * TILE_SIDE // 2, cy + TILE_SIDE + 2 + 13 * j), text,
                              fill=_HIGHLIGHT if best else _TEXT, font=font)
    return canvas


def save_montage(picture: Image.Image, path: str | os.PathLike, replace: bool = True) -> None:
    """Write ``picture`` at ``path`` atomically, in the format its extension names.

    ``.png``, ``.jpg``/``.jpeg`` (quality 95), ``.webp``, ``.tif``/``.tiff``,
    ``.bmp`` or ``.gif``; a name without an extension gets PNG.  Written through
    :func:`downpool.io.write_image` (a temporary file renamed into place).

    Parameters
    ----------
    picture : PIL.Image.Image
        The montage (any mode; written as RGB).
    path : str or os.PathLike
        Where to write it.
    replace : bool
        Replace an existing file at ``path``; if False and one exists (even
        one that appeared meanwhile), ``FileExistsError`` is raised and
        nothing is replaced.

    Raises
    ------
    ValueError
        For an extension that is not an image format's.
    FileExistsError
        ``path`` exists and ``replace`` is False.
    """
    from ..io import write_image

    fmt = montage_format(path)
    write_image(path, np.asarray(picture.convert("RGB")), format=fmt,
                quality=95 if fmt == "JPEG" else None, replace=replace)


def montage_format(path: str | os.PathLike) -> str:
    """The format a montage file name asks for (see :func:`save_montage`).

    Parameters
    ----------
    path : str or os.PathLike
        The montage's file name.

    Returns
    -------
    str
        A format name of ``downpool.io`` (``"PNG"``, ``"JPEG"``...); PNG for
        a name without an extension.

    Raises
    ------
    ValueError
        For an extension that is not an image format's, naming those that are.
    """
    from ..io import FORMAT_EXTENSIONS, format_for_extension

    fmt = format_for_extension(path)
    if fmt is not None:
        return fmt
    if os.path.splitext(os.fspath(path))[1]:
        raise ValueError(f"{os.fspath(path)}: the montage's extension names no image format; use "
                         + ", ".join(sorted(set(FORMAT_EXTENSIONS.values()))))
    return "PNG"

