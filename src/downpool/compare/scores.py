"""Measure what each downscaling method keeps of an image: SSIM and PSNR.

This is the array-level logic behind ``downpool compare``.

Protocol
--------
1. The image X is taken as floats in [0, 1] (``uint8 / 255``, ``uint16 / 65535``;
   float input must already lie in [0, 1]); an alpha channel is composited on
   white first.  X is held at float32 precision -- the precision of downpool's
   kernels and of Pillow's float images -- in a float64 array, so that a
   method that reproduces X exactly scores PSNR ``inf``.
2. Each method downscales X to Y (``kernel_size`` k: every method gives
   ``ceil(H/k) x ceil(W/k)``; ``scale`` F: ``max(1, round(n*F))`` per axis).
   Two baselines are added to every comparison: Pillow's ``BOX`` and
   ``LANCZOS`` resizes of X to the same size (``pillow-box``,
   ``pillow-lanczos``).
3. ``against="original"`` (default): Y is upsampled back to X's size with a
   Pillow filter (default bicubic) on float data and compared with X.  The
   upsampling is aligned with the pooling grid: with an integer kernel each
   output pixel stands for a k x k block starting at the top-left corner, so
   X corresponds to the region ``(0, 0, W/k, H/k)`` of Y (Pillow's ``box``);
   area-geometry outputs (``dpid``, ``scale``, the baselines) cover X exactly.
   ``against="reference"``: Y is compared with a Lanczos-antialiased
   downscale of X to Y's size (Pillow's ``LANCZOS`` on float data) -- which is
   the ``pillow-lanczos`` baseline itself, so that row is marked as the
   reference and scores SSIM 1 / PSNR inf by construction.
4. SSIM is ``skimage.metrics.structural_similarity(data_range=1)`` (with
   ``channel_axis=-1`` for colour), PSNR is
   ``skimage.metrics.peak_signal_noise_ratio(data_range=1)``; both in float64.
   SSIM's 7x7 window needs at least 7 pixels per side at the compared size.
   An exact match scores PSNR ``inf``: a uniform image, which every method
   and baseline keeps exactly, scores SSIM 1 and PSNR ``inf``, whole or in
   strips.  A large comparison (more than :data:`WHOLE_IMAGE_VALUES` values,
   with the original or with the reference) is
   scored one channel and one strip of rows at a time, the strips spread
   over threads: each strip gets the 3 rows on either side that SSIM's
   window reads, so every SSIM value of the map is the one a whole-image
   call gives, and only the order in which the mean adds them differs
   (results agree to about 1e-15).  Memory then stays near X's own size.
5. ``seconds`` is the wall time of the faster of two downscale calls on X
   (or Pillow resizes): the first compiles the method's kernels, on the very
   path the image takes, so Numba's compilation is never counted.

:func:`memory_needed` estimates, from a file's header, the memory that
decoding it and comparing it take, so that ``downpool compare`` can refuse
an image before decoding it (``--max-memory``).

Pillow's float resizes work on mode ``"F"`` images, one channel at a time, so
no 8-bit quantisation happens anywhere in the protocol.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from ..api import downscale
from ..geometry import output_size, plan_windows
from ..messages import one_line
from ..methods import METHODS, MethodSpec, resolve_params

__all__ = [
    "UPSAMPLE_FILTERS", "AGAINST", "BASELINES", "Score", "ImageComparison",
    "to_unit_float", "resize_float", "parse_methods", "compare_image", "mean_scores",
    "best_marks", "format_table", "format_csv", "format_json", "montage_cells", "montage",
    "montage_size", "save_montage", "montage_format", "memory_needed",
]

#: ``upsample`` names and the Pillow filters they mean.
UPSAMPLE_FILTERS: Mapping[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

#: What Y is compared with: X itself (after upsampling Y) or a Lanczos downscale of X.
AGAINST = ("original", "reference")

#: Names of the two resampler baselines and the Pillow filters behind them.
BASELINES: Mapping[str, Image.Resampling] = {
    "pillow-box": Image.Resampling.BOX,
    "pillow-lanczos": Image.Resampling.LANCZOS,
}

#: SSIM's default (uniform) window side in scikit-image.
SSIM_WINDOW = 7

# Montage layout, in pixels: every image gets a block of cells, MONTAGE_COLUMNS
# cells wide; a cell is a TILE_SIDE square over a LABEL_HEIGHT label, with GAP
# between cells and around the edge.  The size depends only on the number of
# images and tiles, not on their content (see `montage`).
TILE_SIDE = 192
CROP_SIDE = 24  # output pixels per side of the cropped region shown per method
LABEL_HEIGHT = 30
GAP = 6
MONTAGE_COLUMNS = 5

_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_HIGHLIGHT = (170, 0, 0)


@dataclass(frozen=True)
class Score:
    """The result of one method (or baseline) on one image.

    Attributes
    ----------
    image : str
        Name of the image (its path on the command line).
    method : str
        A name from ``downpool.METHODS``, or ``"pillow-box"`` / ``"pillow-lanczos"``.
    params : dict
        The method's parameters, defaults filled in; empty for baselines.
    size : (int, int)
        Output (height, width).
    ssim : float
        Structural similarity, at most 1.
    psnr : float
        Peak signal-to-noise ratio in dB; ``inf`` for an exact match.
    seconds : float
        Wall time of the downscale (or Pillow resize) alone.
    baseline : bool
        A Pillow resampler rather than a downpool method.
    reference : bool
        This row *is* the reference it is compared with (``pillow-lanczos``
        under ``against="reference"``): its scores are trivial and it is
        never marked best.
    """

    image: str
    method: str
    params: dict
    size: tuple[int, int]
    ssim: float
    psnr: float
    seconds: float
    baseline: bool = False
    reference: bool = False

    @property
    def params_text(self) -> str:
        """The parameters as ``name=value`` words (``"beta=4.4"``)."""
        return " ".join(f"{k}={v}" for k, v in self.params.items())

    @property
    def label(self) -> str:
        """Method and parameters in one string: identifies a row across images."""
        return f"{self.method} {self.params_text}".strip()


@dataclass
class ImageComparison:
    """Every method's score on one image, with what the montage needs.

    Attributes
    ----------
    image : str
        Name of the image.
    shape : tuple of int
        Shape of X (``(H, W)`` or ``(H, W, C)``) after alpha compositing.
    scores : list of Score
        Methods in the order asked for, then the baselines.
    original : ndarray or None
        X (float64 in [0, 1]); kept only with ``keep_outputs=True``.
    outputs : dict of str to ndarray
        Y per row label; filled only with ``keep_outputs=True``.
    footprint : (float, float)
        Input pixels per output pixel along (rows, columns) for the pooling
        methods: k for an integer kernel, ``H / out_h`` for a scale.
    geometry : dict
        What every method was given: ``{"kernel_size": k}`` or ``{"scale": F}``.
    """

    image: str
    shape: tuple
    scores: list[Score]
    original: np.ndarray | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    footprint: tuple[float, float] = (1.0, 1.0)
    geometry: dict = field(default_factory=dict)


# --- images as floats --------------------------------------------------------


def to_unit_float(pixels: Any, has_alpha: bool = False) -> np.ndarray:
    """Return X: ``pixels`` as float64 values in [0, 1], alpha composited on white.

    Parameters
    ----------
    pixels : ndarray, shape (H, W) or (H, W, C)
        uint8, uint16, float32 or float64; float values must lie in [0, 1].
    has_alpha : bool
        The last channel is alpha (straight, not premultiplied): the colour
        is composited on white, ``c * a + (1 - a)``, and alpha dropped.

    Returns
    -------
    ndarray of float64, shape (H, W) or (H, W, C')
        One remaining channel is returned as a 2-D array.  Values are rounded
        to float32 precision (see the module's protocol).

    Raises
    ------
    TypeError
        For another dtype.
    ValueError
        For a shape that is not an image, or float values outside [0, 1].
    """
    arr = np.asarray(pixels)
    integer = arr.dtype.kind == "u" and arr.dtype.itemsize in (1, 2)
    if not integer and arr.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"image dtype {arr.dtype} is not supported: use uint8, uint16, float32 or float64"
        )
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise ValueError(f"image must be a non-empty (H, W) or (H, W, C) array, got shape {arr.shape}")
    if has_alpha and (arr.ndim != 3 or arr.shape[2] < 2):
        raise ValueError(f"has_alpha needs at least 2 channels, got shape {arr.shape}")
    channels = 1 if arr.ndim == 2 else arr.shape[2] - has_alpha
    height, width = arr.shape[:2]
    out = np.empty((height, width) if channels == 1 else (height, width, channels), np.float64)
    # A band of rows at a time: the float64 working values (and the alpha
    # compositing's) never take more than a band, whatever the image's size.
    rows = max(1, _BAND_VALUES // (arr[0].size or 1))
    for top in range(0, height, rows):
        band = arr[top:top + rows]
        if integer:
            x = np.divide(band, np.iinfo(arr.dtype).max, dtype=np.float64)
        else:
            x = band.astype(np.float64)
            if not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
                raise ValueError("compare needs float images with values in [0, 1] (no NaN or inf)")
        if has_alpha:
            alpha = x[:, :, -1:]
            x = x[:, :, :-1] * alpha + (1.0 - alpha)
        if x.ndim == 3 and channels == 1:
            x = x[:, :, 0]
        out[top:top + rows] = x.astype(np.float32)  # float32 precision, held as float64
    return out


#: Values of the input converted at a time by :func:`to_unit_float`.
_BAND_VALUES = 1 << 20


def resize_float(image: np.ndarray, size: tuple[int, int], resample: Image.Resampling,
                 box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Resize a float image with Pillow, channel by channel in mode ``"F"``.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Float values (computed in float32, as Pillow's ``"F"`` mode does).
    size : (int, int)
        Output (height, width) -- NumPy order, not Pillow's.
    resample : PIL.Image.Resampling
        The filter.
    box : (float, float, float, float), optional
        Source region ``(left, top, right, bottom)`` in input pixels, as in
        :meth:`PIL.Image.Image.resize`; default the whole image.

    Returns
    -------
    ndarray of float64 with shape ``size`` (plus the channel axis).
    """
    height, width = size
    planes = image[:, :, np.newaxis] if image.ndim == 2 else image
    out = np.empty((height, width, planes.shape[2]), dtype=np.float64)
    for c in range(planes.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(planes[:, :, c], dtype=np.float32))
        out[:, :, c] = np.asarray(plane.resize((width, height), resample, box=box))
    return out[:, :, 0] if image.ndim == 2 else out


def _ssim_psnr(truth: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """SSIM and PSNR from scikit-image, on [0, 1] data, of two whole images."""
    channel_axis = -1 if truth.ndim == 3 else None
    ssim = structural_similarity(truth, test, data_range=1, channel_axis=channel_axis)
    # An exact match divides by a zero error: PSNR is inf, which is the answer.
    with np.errstate(divide="ignore"):
        psnr = peak_signal_noise_ratio(truth, test, data_range=1)
    return float(ssim), float(psnr)


#: Comparisons of more values than this are scored in strips (module docstring, 4).
WHOLE_IMAGE_VALUES = 1 << 22
#: Values per SSIM strip (rows of the image's width, at least 16 rows).
STRIP_VALUES = 1 << 18


def _strip_threads() -> int:
    """Threads that score strips at once: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _strip_sums(truth: np.ndarray, test: np.ndarray, rows: tuple[int, int]) -> tuple[float, int, float]:
    """(sum of SSIM over the strip's share of the map, their count, sum of squared errors)."""
    pad = (SSIM_WINDOW - 1) // 2
    height, width = truth.shape
    r0, r1 = rows
    a0, a1 = max(0, r0 - pad), min(height, r1 + pad)
    a = np.ascontiguousarray(truth[a0:a1], dtype=np.float64)
    b = np.ascontiguousarray(test[a0:a1], dtype=np.float64)
    # The rows whose SSIM the whole image's mean counts: all but `pad` at each edge.
    s0, s1 = max(r0, pad), min(r1, height - pad)
    ssim_sum, count = 0.0, 0
    if s1 > s0:
        _, ssim_map = structural_similarity(a, b, data_range=1, full=True)
        inside = ssim_map[s0 - a0:s1 - a0, pad:width - pad]
        ssim_sum, count = float(inside.sum(dtype=np.float64)), inside.size
    rows_own = slice(r0 - a0, r1 - a0)
    squared = float(mean_squared_error(a[rows_own], b[rows_own])) * (r1 - r0) * width
    return ssim_sum, count, squared


def _ssim_psnr_in_strips(truth: np.ndarray, planes: Iterable[np.ndarray]) -> tuple[float, float]:
    """SSIM and PSNR of ``truth`` against an image given as its channel planes, in strips."""
    from concurrent.futures import ThreadPoolExecutor

    height, width = truth.shape[:2]
    step = max(16, STRIP_VALUES // width)
    strips = [(r, min(height, r + step)) for r in range(0, height, step)]
    ssims, squared = [], 0.0
    with ThreadPoolExecutor(max_workers=_strip_threads()) as threads:
        for c, plane in enumerate(planes):
            channel = truth if truth.ndim == 2 else truth[:, :, c]
            parts = list(threads.map(lambda rows: _strip_sums(channel, plane, rows), strips))
            ssims.append(sum(p[0] for p in parts) / sum(p[1] for p in parts))
            squared += sum(p[2] for p in parts)
    mse = squared / truth.size
    # skimage's peak_signal_noise_ratio, data_range 1; an exact match (a
    # uniform image) has no error: PSNR inf, as a whole-image call gives.
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    return float(np.mean(ssims)), float(psnr)


def _planes_upsampled(y: np.ndarray, size: tuple[int, int], resample: Image.Resampling,
                      box: tuple[float, float, float, float]) -> Iterator[np.ndarray]:
    """:func:`resize_float` of ``y`` one channel at a time, as float32 planes."""
    height, width = size
    planes = y[:, :, np.newaxis] if y.ndim == 2 else y
    for c in range(planes.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(planes[:, :, c], dtype=np.float32))
        yield np.asarray(plane.resize((width, height), resample, box=box))


def _best_of_two(call: Any) -> tuple[Any, float]:
    """``call()``'s result and the shorter wall time of two calls."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return result, min(times)


# --- methods -----------------------------------------------------------------


def parse_methods(methods: str | Iterable[str]) -> list[str]:
    """Turn ``"all"``, ``"avg,softpool"`` or a list of names into method names.

    Order is kept and repeats are dropped.

    Raises
    ------
    ValueError
        For an empty list or a name that is not in ``downpool.METHODS``,
        naming the allowed methods.
    """
    if isinstance(methods, str):
        if methods.strip() == "all":
            return list(METHODS)
        names = [m.strip() for m in methods.split(",")]
    else:
        names = [str(m) for m in methods]
    allowed = ", ".join(METHODS)
    if not names or any(not n for n in names):
        raise ValueError(f"no method named in {methods!r}: give 'all' or a comma-separated list of {allowed}")
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}: choose 'all' or from {allowed}")
    return list(dict.fromkeys(names))


def _resolved(specs: Sequence[MethodSpec], params: Mapping[str, Any]) -> list[dict]:
    """Each method's parameters: the given ones it takes, validated, plus defaults."""
    for name in params:
        if not any(name in spec.params for spec in specs):
            raise ValueError(
                f"parameter {name!r} is not a parameter of any chosen method "
                f"({', '.join(s.name for s in specs)})"
            )
    return [resolve_params(spec, {k: v for k, v in params.items() if k in spec.params})
            for spec in specs]


def compare_image(
    image: Any,
    methods: str | Iterable[str] = "all",
    *,
    kernel_size: int | None = None,
    scale: float | None = None,
    upsample: str = "bicubic",
    against: str = "original",
    has_alpha: bool = False,
    name: str = "image",
    params: Mapping[str, Any] | None = None,
    keep_outputs: bool = False,
) -> ImageComparison:
    """Downscale one image with each method and score what it keeps.

    See the module docstring for the protocol.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        uint8, uint16, or float32/float64 in [0, 1].
    methods : "all", str or iterable of str
        Method names (``"avg,softpool"`` or a list), or ``"all"``.  The two
        Pillow baselines are always added.
    kernel_size : int, optional
        Integer pooling window k (default 2 when ``scale`` is not given);
        ``dpid`` gets the same k, meaning size ``(ceil(H/k), ceil(W/k))``.
    scale : float, optional
        In (0, 1]: passed to every method instead of ``kernel_size``.
    upsample : {"nearest", "bilinear", "bicubic", "lanczos"}
        Pillow filter that takes Y back to X's size (``against="original"``).
    against : {"original", "reference"}
        Compare the upsampled Y with X, or Y with Pillow's Lanczos downscale of X.
    has_alpha : bool
        The last channel is alpha; it is composited on white.
    name : str
        Name of the image in the scores.
    params : mapping, optional
        Method parameters (``{"beta": 8.0}``), each given to every chosen
        method that has it; the others keep their defaults.
    keep_outputs : bool
        Keep X and every Y in the result (for :func:`montage`).

    Returns
    -------
    ImageComparison

    Raises
    ------
    ValueError
        For an unknown method, parameter or filter, a value out of range,
        bad geometry, or an image too small for SSIM's 7x7 window at the
        compared size.
    TypeError
        For an unsupported dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from downpool.compare import compare_image
    >>> img = np.random.default_rng(0).random((32, 32, 3))
    >>> result = compare_image(img, "avg,softpool", kernel_size=2)
    >>> [s.method for s in result.scores]
    ['avg', 'softpool', 'pillow-box', 'pillow-lanczos']
    """
    names = parse_methods(methods)
    specs = [METHODS[n] for n in names]
    values = _resolved(specs, params or {})
    if upsample not in UPSAMPLE_FILTERS:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_FILTERS)}, got {upsample!r}")
    if against not in AGAINST:
        raise ValueError(f"against must be one of {', '.join(AGAINST)}, got {against!r}")
    if kernel_size is not None and scale is not None:
        raise ValueError("give at most one of kernel_size and scale")
    x = to_unit_float(image, has_alpha)
    height, width = x.shape[:2]
    geometry = {"scale": scale} if scale is not None else {"kernel_size": kernel_size or 2}
    rows, cols = plan_windows("compare", False, (height, width), **geometry)
    out_size = (rows.size, cols.size)
    compared = (height, width) if against == "original" else out_size
    if min(compared) < SSIM_WINDOW:
        where = "the image" if against == "original" else f"the {out_size[0]}x{out_size[1]} output"
        raise ValueError(
            f"{height}x{width} image: {where} is too small to compare; SSIM's "
            f"{SSIM_WINDOW}x{SSIM_WINDOW} window needs at least {SSIM_WINDOW} pixels per side"
        )
    if scale is None:
        k = geometry["kernel_size"]
        footprint = (float(k), float(k))
    else:
        footprint = (height / out_size[0], width / out_size[1])

    # Y's region that corresponds to X, for Pillow's `box`: pooling with an
    # integer kernel puts output pixel j over input [j*k, j*k + k), so X ends
    # at W/k output pixels (a partial last window); area geometry covers X exactly.
    full_box = (0.0, 0.0, float(out_size[1]), float(out_size[0]))
    pooled_box = (0.0, 0.0, width / footprint[1], height / footprint[0])
    reference = (resize_float(x, out_size, Image.Resampling.LANCZOS)
                 if against == "reference" else None)

    def score(label: str, y: np.ndarray, box: tuple) -> tuple[float, float]:
        if y.shape[:2] != out_size:  # every method must agree on the size
            raise AssertionError(f"{label}: output {y.shape[:2]} differs from {out_size}")
        if keep_outputs:
            outputs[label] = y
        if reference is not None:
            if reference.size > WHOLE_IMAGE_VALUES:
                planes = (y,) if y.ndim == 2 else (y[:, :, c] for c in range(y.shape[2]))
                return _ssim_psnr_in_strips(reference, planes)
            return _ssim_psnr(reference, y)
        resample = UPSAMPLE_FILTERS[upsample]
        if x.size > WHOLE_IMAGE_VALUES:
            return _ssim_psnr_in_strips(x, _planes_upsampled(y, (height, width), resample, box))
        return _ssim_psnr(x, resize_float(y, (height, width), resample, box=box))

    outputs: dict[str, np.ndarray] = {}
    scores: list[Score] = []
    for spec, value in zip(specs, values):
        y, seconds = _best_of_two(lambda: downscale(x, spec.name, **geometry, **value))
        box = full_box if (scale is not None or spec.area_only) else pooled_box
        label = Score(name, spec.name, dict(value), out_size, 0.0, 0.0, 0.0).label
        ssim, psnr = score(label, y, box)
        scores.append(Score(name, spec.name, dict(value), out_size, ssim, psnr, seconds))
    for baseline, resample in BASELINES.items():
        y, seconds = _best_of_two(lambda: resize_float(x, out_size, resample))
        ssim, psnr = score(baseline, y, full_box)
        is_reference = against == "reference" and baseline == "pillow-lanczos"
        scores.append(Score(name, baseline, {}, out_size, ssim, psnr, seconds,
                            baseline=True, reference=is_reference))
    return ImageComparison(name, x.shape, scores, x if keep_outputs else None, outputs, footprint,
                           geometry)


# --- memory ------------------------------------------------------------------

#: Bytes per pixel of one channel plane that a whole-image SSIM call
#: (scikit-image, float64) holds at its peak, for one channel and with
#: ``channel_axis`` (measured with tracemalloc: 112 and 160).
_SSIM_PLANE_BYTES = {False: 112, True: 160}
#: What one thread scoring a strip holds, per value of the strip it reads (112 measured).
_SSIM_STRIP_BYTES = 128
#: Bytes per value of X: its float64 values, and 6 more that colour images
#: took beyond the other terms (the per-channel float copies, which the
#: allocator keeps after they are freed).
_X_BYTES = 14
#: The terms' sum is raised by this share for what they do not follow
#: (Numba's, Pillow's and libvips' own buffers, the allocator's slack).  The
#: peak resident memory of `downpool compare` (less that of a 64x64 image)
#: measured on 1 to 64 megapixel images -- grey, RGB, RGBA, 16-bit; k 2 and
#: 8, scale 0.9, --montage, --against reference -- was 0.60 to 0.77 of the
#: estimate (64 MP RGB: 3.5 GiB of 5.3 GiB).
_MEMORY_MARGIN = 1.3


def memory_needed(header: Any, methods: str | Iterable[str] = "all", *,
                  kernel_size: int | None = None, scale: float | None = None,
                  upsample: str = "bicubic", against: str = "original",
                  keep_outputs: bool = False) -> int:
    """Bytes that decoding one image and :func:`compare_image` on it take, from above.

    Parameters
    ----------
    header : downpool.io.ImageHeader
        What the file's header says (size, channels, bytes per sample,
        alpha, the decoder's own buffer), known before its pixels are decoded.
    methods, kernel_size, scale, upsample, against, keep_outputs
        As for :func:`compare_image`.

    Notes
    -----
    The terms, for an image of n pixels whose X has v values (its channels
    after alpha compositing), each output Y o values, r rows (the methods and
    the two baselines):

    - the decoded pixels, held throughout, and the decoder's buffer while
      reading;
    - X, ``8 v`` (float64), held throughout;
    - then the largest of: downscaling (two Ys, the faster of two calls, and
      the method's own working values: ``32 o``); a baseline's resize (Y and
      Pillow's float32 planes: ``8 o + 16 n``); scoring against the original
      (Y, the upsampled float32 planes with Pillow's copies, ``8 o + 16 n``,
      and each strip thread's SSIM working values, ``_SSIM_STRIP_BYTES`` per
      value of a strip; up to ``WHOLE_IMAGE_VALUES`` values, scored whole:
      the upsampled Y, ``8 v``, and SSIM's working values,
      ``_SSIM_PLANE_BYTES`` per pixel);
    - against the reference: the reference, ``8 o``, and scoring at Y's size;
    - with ``keep_outputs``: every Y (``8 r o``) and the montage's grey
      copies of X (``16 n``).

    The sum is raised by ``_MEMORY_MARGIN`` for what it does not follow.
    """
    rows_count = len(parse_methods(methods)) + len(BASELINES)
    height, width = header.height, header.width
    pixels = height * width
    channels = max(1, header.channels - bool(header.has_alpha))
    geometry = {"scale": scale} if scale is not None else {"kernel_size": kernel_size or 2}
    out_h, out_w = output_size((height, width), method="compare", **geometry)
    values, out_values = pixels * channels, out_h * out_w * channels
    held = pixels * header.channels * header.bytes_per_sample

    def scoring(compared_pixels: int, compared_width: int) -> int:
        if compared_pixels * channels <= WHOLE_IMAGE_VALUES:
            return (8 * compared_pixels * channels + 8 * compared_pixels
                    + _SSIM_PLANE_BYTES[channels > 1] * compared_pixels)
        step = max(16, STRIP_VALUES // compared_width)
        strip = (step + SSIM_WINDOW - 1) * compared_width
        threads = min(_strip_threads(), -(-compared_pixels // (step * compared_width)))
        return 16 * compared_pixels + threads * _SSIM_STRIP_BYTES * strip

    if against == "original":
        score = scoring(pixels, width)
    else:
        score = 8 * out_values + scoring(out_h * out_w, out_w)
    working = _X_BYTES * values + max(32 * out_values, 8 * out_values + 16 * pixels,
                               8 * out_values + score)
    if against != "original":
        working += 8 * out_values  # the reference, held throughout
    if keep_outputs:
        working += 8 * rows_count * out_values + 16 * pixels
    need = max(header.decoded_bytes + held, held + working)
    return int(_MEMORY_MARGIN * need)


# --- tables ------------------------------------------------------------------


def mean_scores(comparisons: Sequence[ImageComparison]) -> list[Score]:
    """One row per method: SSIM, PSNR and seconds averaged over the images.

    Rows are matched by :attr:`Score.label`; a PSNR of ``inf`` on any image
    makes the mean ``inf``.  The ``image`` field says how many images were
    averaged, and ``size`` is that of the first image.
    """
    groups: dict[str, list[Score]] = {}
    for comparison in comparisons:
        for s in comparison.scores:
            groups.setdefault(s.label, []).append(s)
    means = []
    for rows in groups.values():
        first = rows[0]
        means.append(Score(
            f"mean of {len(rows)} images", first.method, first.params, first.size,
            float(np.mean([r.ssim for r in rows])), float(np.mean([r.psnr for r in rows])),
            float(np.mean([r.seconds for r in rows])), first.baseline, first.reference,
        ))
    return means


#: Decimals shown for each column, in tables and on the montage.
DECIMALS = {"ssim": 4, "psnr": 2, "seconds": 4}


def best_marks(scores: Sequence[Score]) -> list[dict[str, bool]]:
    """Which values are the best of their column: highest SSIM and PSNR, lowest seconds.

    Values are compared as they are shown (rounded to ``DECIMALS``), so that
    two values that print alike are both marked or neither.  The reference
    row (``Score.reference``) is never best.
    """
    def shown(s: Score, column: str) -> float:
        value = getattr(s, column)
        return value if math.isinf(value) else round(value, DECIMALS[column])

    eligible = [s for s in scores if not s.reference]
    best = {
        "ssim": max((shown(s, "ssim") for s in eligible), default=None),
        "psnr": max((shown(s, "psnr") for s in eligible), default=None),
        "seconds": min((shown(s, "seconds") for s in eligible), default=None),
    }
    return [{column: (not s.reference and shown(s, column) == best[column]) for column in best}
            for s in scores]


def _describe(comparisons: Sequence[ImageComparison], kernel_size: int | None,
              scale: float | None, upsample: str, against: str) -> str:
    """One line saying what was compared, and how."""
    geometry = f"scale {scale}" if scale is not None else f"k={kernel_size or 2}"
    if against == "original":
        how = f"upsampled back ({upsample}) and compared with the original"
    else:
        how = "compared with Pillow's LANCZOS downscale (the reference)"
    if len(comparisons) == 1:
        c = comparisons[0]
        (h, w), (oh, ow) = c.shape[:2], c.scores[0].size
        what = f"{one_line(c.image)}: {h}x{w} -> {oh}x{ow}"
    else:
        what = f"mean over {len(comparisons)} images"
    return f"{what}, {geometry}, {how}"


def _psnr_text(psnr: float) -> str:
    return "inf" if math.isinf(psnr) else f"{psnr:.2f}"


def format_table(comparisons: Sequence[ImageComparison], *, markdown: bool = False,
                 kernel_size: int | None = None, scale: float | None = None,
                 upsample: str = "bicubic", against: str = "original") -> str:
    """The human-readable table: per method SSIM, PSNR and seconds, best values marked.

    One image gives its own rows; several give the mean over the images
    (:func:`mean_scores`).  The geometry and protocol arguments only go into
    the heading.  Plain text marks the best value of a column with ``*``,
    markdown makes it bold.
    """
    rows = comparisons[0].scores if len(comparisons) == 1 else mean_scores(comparisons)
    marks = best_marks(rows)
    heading = _describe(comparisons, kernel_size, scale, upsample, against)
    table = []
    for s, mark in zip(rows, marks):
        kind = "reference" if s.reference else ("baseline" if s.baseline else "")
        cells = [s.method, s.params_text, f"{s.ssim:.4f}", _psnr_text(s.psnr), f"{s.seconds:.4f}"]
        for i, col in ((2, "ssim"), (3, "psnr"), (4, "seconds")):
            if mark[col]:
                cells[i] = f"**{cells[i]}**" if markdown else cells[i] + "*"
        table.append(cells + [kind])
    header = ["method", "parameters", "SSIM", "PSNR (dB)", "seconds", ""]
    if markdown:
        lines = [f"*{heading}*", "", "| " + " | ".join(header[:-1]) + " |",
                 "|---|---|--:|--:|--:|"]
        for cells in table:
            method = cells[0] + (f" ({cells[5]})" if cells[5] else "")
            params = f"`{cells[1]}`" if cells[1] else ""
            lines.append(f"| {method} | {params} | " + " | ".join(cells[2:5]) + " |")
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    aligned = []
    for cells in [header, *table]:
        parts = [cells[i].ljust(widths[i]) if i < 2 else cells[i].rjust(widths[i] + 1)
                 for i in range(5)]
        aligned.append("  ".join(parts) + ("  " + cells[5] if cells[5] else ""))
    return "\n".join([heading, *aligned, "* best in its column"]) + "\n"


def _row_dicts(comparisons: Sequence[ImageComparison]) -> list[dict]:
    return [
        {"image": s.image, "method": s.method, "parameters": dict(s.params),
         "height": s.size[0], "width": s.size[1], "ssim": s.ssim, "psnr": s.psnr,
         "seconds": s.seconds, "baseline": s.baseline, "reference": s.reference}
        for c in comparisons for s in c.scores
    ]


def format_csv(comparisons: Sequence[ImageComparison]) -> str:
    """Per-image rows as CSV.

    Columns: ``image, method, parameters, height, width, ssim, psnr, seconds,
    baseline, reference``; ``parameters`` is ``name=value`` words separated by
    spaces, PSNR of an exact match is ``inf``, booleans are ``true``/``false``.
    """
    buffer = io.StringIO()
    rows = _row_dicts(comparisons)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "method", "parameters", "height", "width", "ssim", "psnr",
                     "seconds", "baseline", "reference"])
    for r in rows:
        params = " ".join(f"{k}={v}" for k, v in r["parameters"].items())
        writer.writerow([r["image"], r["method"], params, r["height"], r["width"],
                         repr(r["ssim"]), "inf" if math.isinf(r["psnr"]) else repr(r["psnr"]),
                         repr(r["seconds"]), str(r["baseline"]).lower(),
                         str(r["reference"]).lower()])
    return buffer.getvalue()


def format_json(comparisons: Sequence[ImageComparison], *, kernel_size: int | None = None,
                scale: float | None = None, upsample: str = "bicubic",
                against: str = "original", failed: Sequence[tuple[str, str]] = ()) -> str:
    """Per-image rows and the protocol as a JSON document.

    Schema::

        {"against": "original" | "reference",
         "upsample": filter name, or null under "reference",
         "kernel_size": int or null, "scale": float or null,
         "rows": [{"image": str, "method": str, "parameters": {name: value},
                   "height": int, "width": int, "ssim": float,
                   "psnr": float or null (null: exact match, PSNR inf),
                   "seconds": float, "baseline": bool, "reference": bool}],
         "failed": [{"image": str, "error": str}]}
    """
    rows = _row_dicts(comparisons)
    for r in rows:
        if math.isinf(r["psnr"]):
            r["psnr"] = None  # JSON has no infinity
    document = {
        "against": against,
        "upsample": upsample if against == "original" else None,
        "kernel_size": None if scale is not None else (kernel_size or 2),
        "scale": scale,
        "rows": rows,
        "failed": [{"image": image, "error": error} for image, error in failed],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


# --- montage -----------------------------------------------------------------


def _detail_window(x: np.ndarray, comparison: ImageComparison,
                   crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left output pixel of the ``crop``-sized region with the most detail.

    Detail is the local variance of the grey image (mean of the channels)
    inside each output pixel's pooling window, ``avg(g^2) - avg(g)^2`` -- what
    averaging throws away and what the detail-preserving methods try to
    keep -- summed over the candidate region.
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

    The region with the most detail (see ``_detail_window``; ``CROP_SIDE``
    output pixels a side, or the whole output if smaller) is cut from X and
    from every output, and each crop is enlarged with nearest neighbour so
    its pixels show; labels give the method, its parameters and its
    SSIM/PSNR.  Needs a comparison made with ``keep_outputs=True``; the cells
    are small, so a caller going through many images can keep these and drop
    the comparison.
    """
    x = comparison.original
    if x is None:
        raise ValueError("a montage needs a comparison made with keep_outputs=True")
    out_h, out_w = comparison.scores[0].size
    crop = (min(CROP_SIDE, out_h), min(CROP_SIDE, out_w))
    top, left = _detail_window(x, comparison, crop)
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
                        (f"PSNR {_psnr_text(s.psnr)}", mark["psnr"])]]))
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
    """The format a montage file name asks for (see :func:`save_montage`)."""
    from ..io import FORMAT_EXTENSIONS, format_for_extension

    fmt = format_for_extension(path)
    if fmt is not None:
        return fmt
    if os.path.splitext(os.fspath(path))[1]:
        raise ValueError(f"{os.fspath(path)}: the montage's extension names no image format; use "
                         + ", ".join(sorted(set(FORMAT_EXTENSIONS.values()))))
    return "PNG"
