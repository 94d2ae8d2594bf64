"""downpool: downscale images with the pooling methods of the deep-learning literature.

>>> import downpool
>>> out = downpool.downscale(image, "softpool", kernel_size=2)   # doctest: +SKIP

Importing downpool imports nothing else: NumPy and the method registry load
on first use of ``downscale`` or ``METHODS``, and the kernels are compiled
(or loaded from Numba's cache) on the first call of each method.  The
command's start-up, and Ctrl-C during it, depend on that.
"""

from __future__ import annotations

import importlib

__all__ = ["downscale", "downscale_frames", "FrameDownscaler", "RowDownscaler", "METHODS", "MethodSpec", "Param", "DeviceUnavailableError", "__version__"]
__version__ = "0.1.0"

# Public names and the module that defines each, imported on first access.
_LAZY = {"downscale": "api", "downscale_frames": "frames", "FrameDownscaler": "frames",
         "RowDownscaler": "stream", "DeviceUnavailableError": "api", "METHODS": "methods",
         "MethodSpec": "methods", "Param": "methods"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
