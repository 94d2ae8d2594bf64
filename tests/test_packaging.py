"""What a user installs: the wheel holds every file of ``src/downpool`` and builds without
a warning, and the suite runs against the installed package, not the checkout.

The wheel is built the way ``pip install .`` builds it (pip, in an isolated
environment), from a copy of the build's inputs that ``pyproject.toml`` names.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import downpool

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "downpool"
#: What Python and Numba write beside a module at run time: not part of the package.
RUN_TIME = re.compile(r"(^|/)__pycache__/|\.py[cod]$|\.nb[ic]$")

needs_checkout = pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file() or not SOURCE.is_dir(),
                                    reason="the source tree is not beside these tests")


def source_files() -> set[str]:
    """Every file of the package in the checkout, as ``downpool/...`` paths."""
    found = {p.relative_to(SOURCE.parent).as_posix() for p in SOURCE.rglob("*") if p.is_file()}
    return {name for name in found if not RUN_TIME.search(name)}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """(the wheel, pip's verbose build log), from a copy of pyproject's inputs."""
    tomllib = pytest.importorskip("tomllib")
    if not (ROOT / "pyproject.toml").is_file() or not SOURCE.is_dir():
        pytest.skip("the source tree is not beside these tests")
    tmp = tmp_path_factory.mktemp("wheel")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name in ["pyproject.toml", project["readme"], *project.get("license-files", [])]:
        shutil.copy2(ROOT / name, tmp / name)
    shutil.copytree(SOURCE, tmp / "src" / "downpool",
                    ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.nb[ic]"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps",
                             "--disable-pip-version-check", "--wheel-dir", str(tmp / "dist"),
                             str(tmp)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [wheel] = (tmp / "dist").glob("downpool-*.whl")
    return wheel, result.stdout + result.stderr


@needs_checkout
def test_the_wheel_holds_every_file_of_the_source_tree(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    packaged = {n for n in names if n.startswith("downpool/")}
    assert packaged == source_files(), (
        f"left out of the wheel: {sorted(source_files() - packaged)}; "
        f"in the wheel only: {sorted(packaged - source_files())}")
    assert names - packaged == {n for n in names if ".dist-info/" in n}
    assert "downpool/methods/softpool.py" in packaged  # a subpackage's module, as listed above


@needs_checkout
def test_the_wheel_states_its_licence_and_command(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        info = next(n.split("/")[0] for n in archive.namelist() if ".dist-info/" in n)
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        licence = archive.read(f"{info}/licenses/LICENSE").decode()
    assert "License-Expression: BSD-3-Clause" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert licence == (ROOT / "LICENSE").read_text() and "BSD 3-Clause License" in licence
    assert "downpool = downpool.console:main" in entry_points


@needs_checkout
def test_the_build_prints_no_warning(built):
    """No deprecation (setuptools' licence table stops building after 2027-02-18) or
    other warning class in the build backend's output."""
    _, log = built
    warnings = [line for line in log.splitlines() if re.search(r"[A-Za-z]Warning\b", line)]
    assert warnings == []


def test_the_suite_imports_the_installed_package():
    """Not editable (as in CI, which sets DOWNPOOL_TEST_WHEEL): downpool comes from
    site-packages and holds every file of the checkout's src/downpool.  Editable: the
    checkout's src/downpool, the user's choice."""
    distribution = importlib.metadata.distribution("downpool")
    direct_url = json.loads(distribution.read_text("direct_url.json") or "{}")
    editable = direct_url.get("dir_info", {}).get("editable", False)
    if os.environ.get("DOWNPOOL_TEST_WHEEL"):
        assert not editable, "DOWNPOOL_TEST_WHEEL is set, but downpool is installed editable"
    package = Path(downpool.__file__).resolve().parent
    if editable:
        assert package == SOURCE.resolve()
        return
    assert package.is_relative_to(Path(sysconfig.get_paths()["purelib"]).resolve())
    assert not package.is_relative_to(ROOT)
    if SOURCE.is_dir():
        installed = {f.as_posix() for f in distribution.files if f.parts[0] == "downpool"}
        installed = {name for name in installed if not RUN_TIME.search(name)}
        assert installed == source_files(), (
            "the installed downpool is not this checkout's: pip install . again "
            f"(not installed: {sorted(source_files() - installed)}, "
            f"installed only: {sorted(installed - source_files())})")
