"""A Griffe extension that shows mkdocstrings downpool's public API as users import it.

mkdocs.yml loads it (``extensions: [docs/griffe_downpool.py:PublicApi]``).  Griffe
reads the source without importing it, so this extension adds what only running
the code would show, and makes ``mkdocs build --strict`` fail when a public object
has no docstring:

- ``downpool/__init__.py`` imports its public names on first use, from the
  ``_LAZY`` table: each becomes an alias, so ``::: downpool`` documents
  ``downpool.downscale`` under that name, wherever its module is.
- An attribute documented by ``#:`` comment lines above it (the project's
  convention, as in Sphinx) gets them as its docstring.
- Sphinx roles (``:func:`x```) are shown as code: mkdocstrings does not read them.
- A name in ``__all__`` of ``downpool`` or ``downpool.dask`` without a docstring,
  or a public method or property of such a class without one, is a warning,
  which ``--strict`` makes an error.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

logger = griffe.get_logger("griffe_downpool")

#: The modules whose ``__all__`` is the public API that the docs render.
PUBLIC_MODULES = ("downpool", "downpool.dask", "downpool.compare")

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _as_code(match: re.Match) -> str:
    """A Sphinx role as inline code; ``~`` keeps the last part of the name, as Sphinx does."""
    short, name = match.groups()
    return f"``{name.rsplit('.', 1)[-1] if short else name}``"


def _lazy_names(module: griffe.Module) -> dict[str, str]:
    """``_LAZY`` of downpool/__init__.py: public name -> the submodule defining it."""
    tree = ast.parse(module.filepath.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
            return ast.literal_eval(node.value)
    return {}


def _comment_docstring(attribute: griffe.Attribute) -> str | None:
    """The ``#:`` lines right above an attribute's first line, as text."""
    if attribute.lineno is None or attribute.filepath is None:
        return None
    lines = attribute.filepath.read_text(encoding="utf-8").splitlines()
    found = []
    at = attribute.lineno - 2
    while at >= 0 and lines[at].strip().startswith("#:"):
        found.insert(0, lines[at].strip()[2:].strip())
        at -= 1
    return " ".join(found) or None


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class PublicApi(griffe.Extension):
    """See the module's docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "downpool":
            return
        for name, module in _lazy_names(pkg).items():
            if name not in pkg.members:
                pkg.set_member(name, griffe.Alias(name, f"downpool.{module}.{name}", parent=pkg))
        for obj in _walk(pkg):
            if obj.is_attribute and obj.docstring is None:
                text = _comment_docstring(obj)
                if text is not None:
                    parent = obj.parent.docstring if obj.parent is not None else None
                    obj.docstring = griffe.Docstring(
                        text,
                        lineno=obj.lineno,
                        parent=obj,
                        parser=parent.parser if parent else None,
                        parser_options=parent.parser_options if parent else None,
                    )
            if obj.docstring is not None:
                obj.docstring.value = _ROLE.sub(_as_code, obj.docstring.value)
        for path in PUBLIC_MODULES:
            self._check_documented(pkg.modules_collection[path])

    def _check_documented(self, module: griffe.Module) -> None:
        for name in map(str, module.exports or ()):
            if name.startswith("__"):
                continue
            obj = module.members.get(name)
            if obj is None:
                logger.warning("%s.%s is in __all__ but not defined", module.path, name)
                continue
            try:
                target = obj.final_target if obj.is_alias else obj
            except griffe.AliasResolutionError:
                logger.warning("%s.%s: %s is not found", module.path, name, obj.target_path)
                continue
            if not target.docstring:
                logger.warning("%s.%s has no docstring", module.path, name)
            if target.is_class:
                for member in target.members.values():
                    if (
                        not member.name.startswith("_")
                        and not member.is_alias
                        and (member.is_function or "property" in member.labels)
                        and not member.docstring
                    ):
                        logger.warning("%s.%s.%s has no docstring", module.path, name, member.name)
