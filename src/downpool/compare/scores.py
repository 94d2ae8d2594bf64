"""Score what each downscaling method keeps of an image: SSIM and PSNR.

This is the array-level logic behind ``downpool compare``; the tables are
:mod:`downpool.compare.report`'s, the montage :mod:`downpool.compare.drawing`'s
and the memory estimate :mod:`downpool.compare.memory`'s.

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

Pillow's float resizes work on mode ``"F"`` images, one channel at a time, so
no 8-bit quantisation happens anywhere in the protocol.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from ..api import downscale
from ..geometry import plan_windows
from ..methods import METHODS, MethodSpec, resolve_params

__all__ = [
    "UPSAMPLE_FILTERS", "AGAINST", "BASELINES", "SSIM_WINDOW", "WHOLE_IMAGE_VALUES",
    "STRIP_VALUES", "BAND_VALUES", "Score", "ImageComparison", "to_unit_float", "resize_float",
    "ssim_psnr", "strip_threads", "strip_sums", "best_of_two", "parse_methods", "compare_image",
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
    rows = max(1, BAND_VALUES // (arr[0].size or 1))
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
BAND_VALUES = 1 << 20


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
    ndarray of float64
        Shape ``size``, plus the channel axis when ``image`` has one.
    """
    height, width = size
    planes = image[:, :, np.newaxis] if image.ndim == 2 else image
    out = np.empty((height, width, planes.shape[2]), dtype=np.float64)
    for c in range(planes.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(planes[:, :, c], dtype=np.float32))
        out[:, :, c] = np.asarray(plane.resize((width, height), resample, box=box))
    return out[:, :, 0] if image.ndim == 2 else out


def ssim_psnr(truth: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """SSIM and PSNR from scikit-image, on [0, 1] data, of two whole images.

    Parameters
    ----------
    truth : ndarray, shape (H, W) or (H, W, C)
        What ``test`` is compared with (X, or the reference), in [0, 1].
    test : ndarray
        The image scored, of ``truth``'s shape.

    Returns
    -------
    ssim : float
        ``structural_similarity(data_range=1)``, with ``channel_axis=-1``
        for a colour image.
    psnr : float
        ``peak_signal_noise_ratio(data_range=1)`` in dB; ``inf`` for an
        exact match.
    """
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


def strip_threads() -> int:
    """Threads that score strips at once: the CPUs this process may run on.

    Returns
    -------
    int
        At least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def strip_sums(truth: np.ndarray, test: np.ndarray, rows: tuple[int, int]) -> tuple[float, int, float]:
    """What one strip of rows adds to the SSIM mean and to the squared error.

    The strip is read with the ``(SSIM_WINDOW - 1) // 2`` rows on either side
    that SSIM's window reads, so that its SSIM values are those of a
    whole-image call.

    Parameters
    ----------
    truth, test : ndarray, shape (H, W)
        One channel of the two images compared, in [0, 1].
    rows : (int, int)
        The strip's first row and the row past its last.

    Returns
    -------
    ssim_sum : float
        Sum of the SSIM map over the strip's rows that a whole image's mean
        counts (all but the window's half-width at each edge).
    count : int
        How many SSIM values that sum adds.
    squared : float
        Sum of the squared errors over the strip's rows.
    """
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
    with ThreadPoolExecutor(max_workers=strip_threads()) as threads:
        for c, plane in enumerate(planes):
            channel = truth if truth.ndim == 2 else truth[:, :, c]
            parts = list(threads.map(lambda rows: strip_sums(channel, plane, rows), strips))
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


def best_of_two(call: Any) -> tuple[Any, float]:
    """``call()``'s result and the shorter wall time of two calls.

    The first call compiles whatever Numba kernels the call takes, on the
    very path the input takes, so compilation is never counted.

    Parameters
    ----------
    call : callable
        Called twice, without arguments.

    Returns
    -------
    result : object
        What the second call returned.
    seconds : float
        The shorter of the two calls' wall times (``time.perf_counter``).
    """
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

    Parameters
    ----------
    methods : str or iterable of str
        ``"all"``, names separated by commas, or a sequence of names.

    Returns
    -------
    list of str
        Names from ``downpool.METHODS``.

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
            return ssim_psnr(reference, y)
        resample = UPSAMPLE_FILTERS[upsample]
        if x.size > WHOLE_IMAGE_VALUES:
            return _ssim_psnr_in_strips(x, _planes_upsampled(y, (height, width), resample, box))
        return ssim_psnr(x, resize_float(y, (height, width), resample, box=box))

    outputs: dict[str, np.ndarray] = {}
    scores: list[Score] = []
    for spec, value in zip(specs, values):
        y, seconds = best_of_two(lambda: downscale(x, spec.name, **geometry, **value))
        box = full_box if (scale is not None or spec.area_only) else pooled_box
        label = Score(name, spec.name, dict(value), out_size, 0.0, 0.0, 0.0).label
        ssim, psnr = score(label, y, box)
        scores.append(Score(name, spec.name, dict(value), out_size, ssim, psnr, seconds))
    for baseline, resample in BASELINES.items():
        y, seconds = best_of_two(lambda: resize_float(x, out_size, resample))
        ssim, psnr = score(baseline, y, full_box)
        is_reference = against == "reference" and baseline == "pillow-lanczos"
        scores.append(Score(name, baseline, {}, out_size, ssim, psnr, seconds,
                            baseline=True, reference=is_reference))
    return ImageComparison(name, x.shape, scores, x if keep_outputs else None, outputs, footprint,
                           geometry)
