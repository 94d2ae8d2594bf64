"""The README stays one page, its links lead to files and headings that exist, and the
site's Getting started shows its set-up commands as they are.

The documentation site's own links, anchors and docstrings are checked by
``mkdocs build --strict`` (CI runs it); MkDocs does not read the README, which
links into ``docs/`` by file, so it is checked here.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: A README of one page: about the length of the model projects' (scikit-image's is 34 lines).
MAX_README_LINES = 150

_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"[`*]", "", text)  # code and emphasis marks (the headings use no _emphasis_)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(markdown: Path) -> set[str]:
    text = _FENCE.sub("", markdown.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def _local_links(markdown: Path) -> list[str]:
    text = _FENCE.sub("", markdown.read_text(encoding="utf-8"))
    # Not http:, https:, mailto: ...: those lead outside the checkout.
    return [link for link in _LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", link)]


def test_the_readme_is_one_page():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move the detail to a page of "
        "docs/ and link to it"
    )


def test_the_readme_links_lead_somewhere():
    links = _local_links(README)
    assert any(link.startswith("docs/") for link in links)  # the parser found the links
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (README.parent / path).resolve() if path else README
        if not target.exists():
            broken.append(f"{link}: no file {path}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading with the anchor #{anchor} in {path or 'README.md'}")
    assert not broken, "README.md links to:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("Results on `sample_images/`", "results-on-sample_images"),
        (
            "Batches on a Dask cluster: `downpool shrink --scheduler`",
            "batches-on-a-dask-cluster-downpool-shrink-scheduler",
        ),
        ("What each method keeps (k = 4)", "what-each-method-keeps-k-4"),
        ("Dask arrays: `downpool.dask`", "dask-arrays-downpooldask"),
    ],
)
def test_anchors_are_made_as_mkdocs_makes_them(heading, anchor):
    # Anchors MkDocs accepted in the strict build of docs/ (links in docs/*.md).
    assert _slug(heading) == anchor


def _first_bash_block(text: str) -> str:
    block = re.search(r"^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert block is not None
    return block.group(1)


def test_getting_started_shows_the_readmes_set_up_commands():
    readme = README.read_text(encoding="utf-8")
    setup = readme[readme.index("## Set-up in two commands") :]
    page = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert _first_bash_block(page) == _first_bash_block(setup)
