"""The CPU backend: ``pool_<method>(job, **params)`` for every registered method.

Each is the plan of the method's own module (``downpool.methods.<name>.pool``),
which picks among the method's kernels -- its window formula, its kernel for
any geometry, its block kernel (:mod:`downpool.blocks`), the separable passes
(:mod:`downpool.separable`) -- and the checks that choice relies on.  The
kernels are serial ``nogil`` functions over ranges of output rows, split
between threads by :func:`downpool.threads.run_rows`.

Input values are read in their own dtype and multiplied by ``in_scale`` (1/255,
1/65535 or 1), so integer images are never copied to float.  Arithmetic is
float64: it keeps the SPEC's 1e-5 accuracy for any window size and float
inputs of any range (dpp's and dpid's row passes over 8- and 16-bit images
work in float32, within the same accuracy).  The API looks the entry points
up by method name; :mod:`downpool.cuda` has the same ones.
"""

from __future__ import annotations

import importlib

from .methods import METHODS
from .value_range import float_range

__all__ = ["float_range", *(f"pool_{name}" for name in METHODS)]

for _name in METHODS:
    globals()[f"pool_{_name}"] = importlib.import_module(f".methods.{_name}", __package__).pool
del _name
