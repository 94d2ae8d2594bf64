"""The tests' shared modules: ``cases`` (the method cases), ``reference`` (the SPEC's
formulas in float64 NumPy) and ``cli_helpers`` import from this folder, which pytest
puts on ``sys.path`` (its default "prepend" import mode) and which is put there here
too, for ``python -m pytest`` from elsewhere and for the benchmarks' imports."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
