"""Where a checkout's ``downpool`` package is imported from, for the benchmarks that
time or compare several source trees side by side.

Since the src/ layout the package lives in ``TREE/src/downpool``; older commits
(a ``git worktree`` of one, say) have it at ``TREE/downpool``.
"""

from __future__ import annotations

from pathlib import Path

#: This checkout.
ROOT = Path(__file__).resolve().parents[1]


def import_path(tree: str | Path) -> str:
    """The folder to put first on ``sys.path`` so that ``import downpool`` reads ``tree``."""
    tree = Path(tree)
    return str(tree / "src") if (tree / "src" / "downpool").is_dir() else str(tree)
