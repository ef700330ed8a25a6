"""The generated classes as data: statements (:class:`Line`), classes (:class:`ClassDef`) and the block
instances that become them (:class:`Instance`), built by the emitter and printed at the end.

Class sharing (backends/torch/sharing.py) still compares their statement text with the numbers cut out; the
next step gives statements their structure (the op facets' holes), so that sharing compares that instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dlc.compiler.ops.pytorch import safe_text
from dlc.compiler.ir import Scope
from dlc.diagnostics import Span


@dataclass
class Line:
    """One statement of a generated method, written on one line (laid out when printed), and its comment."""

    code: str
    comment: str | None = None


@dataclass
class ClassDef:
    """One generated ``nn.Module`` class: ``__init__`` statements, ``forward`` arguments and statements."""

    name: str
    doc: str
    init: list[Line]
    args: list[str]
    body: list[Line]
    params: list[str] = field(default_factory=list)  # constructor arguments
    attrs: set[str] = field(default_factory=set)  # the module attributes __init__ assigns (spec names)


@dataclass
class Instance:
    """One block instance waiting to be given a class."""

    iid: int
    scope: Scope
    cls: ClassDef
    input_types: list
    input_names: list[str]
    span: Span


def location(span_file: str, line: int) -> str:
    """The ``file.dln:LINE`` comment of a statement."""
    return f"{safe_text(Path(span_file).name)}:{line}"


def result_hints(hint: str | None, n: int) -> list[str]:
    """Variable names for ``n`` results: ``a,b`` (from ``a, b = ...``) names each one."""
    parts = (hint or "y").split(",")
    if len(parts) == n:
        return parts
    return [parts[0]] + [f"{parts[0]}_{i}" for i in range(1, n)]
