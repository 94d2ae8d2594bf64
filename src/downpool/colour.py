"""Colour steps around pooling: the sRGB transfer function and premultiplied alpha.

SPEC section 4: with ``linear=True`` the colour channels are decoded from sRGB
to linear light before pooling and encoded back after; images with alpha are
pooled premultiplied.  These work on float working values ([0, 1] for
integer images) and never touch the alpha channel's own values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["srgb_to_linear", "linear_to_srgb", "premultiply", "unpremultiply"]


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Decode sRGB-encoded values to linear light (IEC 61966-2-1), in place."""
    low = x <= 0.04045
    lin = np.where(low, x / 12.92, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4)
    x[...] = lin
    return x


def linear_to_srgb(y: np.ndarray) -> np.ndarray:
    """Encode linear-light values with the sRGB transfer function, in place."""
    low = y <= 0.0031308
    enc = np.where(low, y * 12.92, 1.055 * np.maximum(y, 0.0031308) ** (1 / 2.4) - 0.055)
    y[...] = enc
    return y


def premultiply(work: np.ndarray) -> np.ndarray:
    """Multiply the colour channels of ``(H, W, C)`` working values by the last (alpha), in place."""
    work[..., :-1] *= work[..., -1:]
    return work


def unpremultiply(work: np.ndarray) -> np.ndarray:
    """Divide the colour channels by the pooled alpha, in place; 0 where alpha is 0."""
    alpha = work[..., -1:]
    safe = np.where(alpha > 0, alpha, 1.0)
    work[..., :-1] = np.where(alpha > 0, work[..., :-1] / safe, 0.0)
    return work
