"""The memory that comparing one image takes, estimated from its file's header.

:func:`memory_needed` estimates, before the pixels are decoded, the memory
that decoding a file and :func:`downpool.compare.compare_image` on it take,
so that ``downpool compare`` can refuse an image before decoding it
(``--max-memory``).
"""

from __future__ import annotations

from typing import Any, Iterable

from ..geometry import output_size
from .scores import (BASELINES, SSIM_WINDOW, STRIP_VALUES, WHOLE_IMAGE_VALUES, parse_methods,
                     strip_threads)

__all__ = ["memory_needed"]

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

    Returns
    -------
    int
        The estimate in bytes: the peak of decoding and of comparing, each
        with the decoded pixels held, raised by a margin.

    Raises
    ------
    ValueError
        For an unknown method, as :func:`parse_methods` says.

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
      and each strip thread's SSIM working values, ``_SSIM_STRIP_BYTES`` (128) per
      value of a strip; up to ``WHOLE_IMAGE_VALUES`` values, scored whole:
      the upsampled Y, ``8 v``, and SSIM's working values,
      ``_SSIM_PLANE_BYTES`` (112 grey, 160 colour) per pixel);
    - against the reference: the reference, ``8 o``, and scoring at Y's size;
    - with ``keep_outputs``: every Y (``8 r o``) and the montage's grey
      copies of X (``16 n``).

    The sum is raised by ``_MEMORY_MARGIN`` (30 %) for what it does not follow.
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
        threads = min(strip_threads(), -(-compared_pixels // (step * compared_width)))
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

