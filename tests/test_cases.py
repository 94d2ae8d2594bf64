"""Every registered method is tested: a case in tests/cases.py, a reference, and an
entry point in every backend.  A method added to the registry alone fails here,
with what is missing named."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import downpool
import reference
from cases import CASES, REFERENCE_CASES
from downpool import cpu

CUDA_SOURCE = Path(downpool.__file__).with_name("cuda.py")


def _cuda_entry_points() -> set[str]:
    """The ``pool_*`` functions of downpool/cuda.py, read from its source (numba-cuda may
    not be installed)."""
    tree = ast.parse(CUDA_SOURCE.read_text())
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("pool_")}


@pytest.mark.parametrize("method", list(downpool.METHODS))
def test_every_method_has_cases_a_reference_and_backends(method):
    spec = downpool.METHODS[method]
    missing = []
    if not any(c.method == method for c in CASES):
        missing.append("a case in tests/cases.py")
    if not any(c.method == method for c in REFERENCE_CASES):
        missing.append("a case that a reference checks (tests/cases.py, check 'formula' or 'exact')")
    if method not in reference.DEFAULTS:
        missing.append("its defaults in tests/reference.py DEFAULTS")
    elif reference.DEFAULTS[method] != spec.defaults:
        missing.append(f"the registry's defaults {spec.defaults} in tests/reference.py DEFAULTS "
                       f"(it has {reference.DEFAULTS[method]})")
    cases = [c for c in CASES if c.method == method]
    if spec.labels and not all(c.check == "exact" for c in cases):
        missing.append("check 'exact' on its cases (a label method)")
    if not hasattr(cpu, f"pool_{method}"):
        missing.append(f"downpool.cpu.pool_{method}")
    if f"pool_{method}" not in _cuda_entry_points():
        missing.append(f"downpool.cuda.pool_{method}")
    assert not missing, f"{method} lacks: " + "; ".join(missing)


def test_every_case_is_valid():
    """Names and parameters the registry accepts, each case once."""
    from downpool.methods import get_method, resolve_params

    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        resolve_params(get_method(case.method), case.params)
        assert case.check in ("formula", "exact", "statistical")


def test_cpu_entry_points_take_the_registry_parameters():
    for method, spec in downpool.METHODS.items():
        names = list(inspect.signature(getattr(cpu, f"pool_{method}")).parameters)
        assert names == ["job", *spec.params], method
