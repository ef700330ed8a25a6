"""Helper code that generated modules carry with them (layers with no torch.nn class, Keras recurrent forms,
batchnorm folding).

Each file here is a real module, importable and tested on its own. Its part after the line
``# ---- embedded below ----`` (the marker of the fused runtime too, see :mod:`dlc.backends.triton.runtime`)
is a list of top-level classes and functions. The emitter records the names its code uses
(:func:`names_read`), and :func:`embed` writes the definitions of those names, and of the names they use in
turn, each once, in the order of ``MODULES`` and then of the files: a generated module imports nothing from dlc.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dlc.backends.triton.runtime import MARKER

MODULES = ("layers", "recurrent", "folding")


@dataclass(frozen=True)
class Definition:
    """One top-level class or function of a runtime module, as the generated file embeds it."""

    name: str
    text: str
    uses: frozenset[str]  # the global names its code reads (imports, other definitions)


def names_read(code: str, mode: str = "exec") -> set[str]:
    """The names ``code`` (statements, or with ``mode="eval"`` an expression) reads: what it needs defined."""
    return {
        n.id for n in ast.walk(ast.parse(code, mode=mode)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }


def _definitions_of(module: str) -> list[Definition]:
    text = (Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8")
    _, sep, body = text.partition(MARKER + "\n")
    assert sep, f"runtime/{module}.py has no embed marker"
    lines = body.splitlines()
    found = []
    for stmt in ast.parse(body).body:
        assert isinstance(stmt, (ast.ClassDef, ast.FunctionDef)), f"runtime/{module}.py: only classes and functions"
        start = min([stmt.lineno] + [d.lineno for d in stmt.decorator_list]) - 1
        while start > 0 and lines[start - 1].startswith("#"):  # the comment right above belongs to it
            start -= 1
        uses = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        found.append(Definition(stmt.name, "\n".join(lines[start : stmt.end_lineno]), frozenset(uses - {stmt.name})))
    return found


@functools.cache
def definitions() -> dict[str, Definition]:
    """Every embeddable definition by name, in embedding order."""
    return {d.name: d for module in MODULES for d in _definitions_of(module)}


def closure(names: Iterable[str]) -> list[Definition]:
    """The definitions of those of ``names`` the runtime defines and of everything they use, in embedding order."""
    defs = definitions()
    todo = [n for n in names if n in defs]
    chosen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo.extend(n for n in defs[name].uses if n in defs)
    return [d for name, d in defs.items() if name in chosen]
