"""The generated classes as data: statements (:class:`Line`), classes (:class:`ClassDef`), the block instances
that become them (:class:`Instance`) and their constructor calls (:class:`ChildCall`), built by the emitter and
printed at the end.

A statement is a :class:`~dlc.compiler.ops.pytorch.Filled` template with its hole values (numbers, variables as
``Var``, nested calls), so class sharing (backends/torch/sharing.py) compares structure, never text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlc.backends.torch.initialise import module_path
from dlc.compiler.ir import Graph, Node, Scope
from dlc.compiler.ops.pytorch import Ctx, Filled, Var, assign, safe_text
from dlc.compiler.ops.registry import op_of
from dlc.diagnostics import Span


@dataclass(frozen=True)
class ChildCall:
    """The constructor call of block instance ``iid`` inside another class's constructor, a hole value until
    the instance has its class (sharing replaces it by the call, a :class:`Filled`)."""

    iid: int


# A statement, or the value a constructor statement assigns: a template with its values, or fixed code (a ``str``,
# holding no number: the fused backend's kernel calls, the arguments kept as attributes).
Code = Filled | ChildCall | str


@dataclass
class Line:
    """One statement of a generated method (laid out when printed) and its comment.

    With ``attr`` the statement is ``self.<attr> = <code>``: ``code`` is the constructor call, whose holes name
    the constructor arguments a varying number is named after.
    """

    code: Code
    comment: str | None = None
    attr: str | None = None
    indent: int = 0  # levels below the method body (the statements under `if self.training:`)

    def text(self) -> str:
        """The statement on one line (its block instances' calls must be known)."""
        assert not isinstance(self.code, ChildCall), "an unresolved block instance call"
        value = self.code.text() if isinstance(self.code, Filled) else self.code
        return value if self.attr is None else f"self.{self.attr} = {value}"


@dataclass
class ClassDef:
    """One generated ``nn.Module`` class: ``__init__`` statements, ``forward`` arguments and statements.

    A labelled group with fused members is an ``nn.Sequential`` subclass (``base``) whose ``__init__`` is one
    ``super().__init__(...)`` statement building the children, so their names and the state_dict stay
    nn.Sequential's.
    """

    name: str
    doc: str
    init: list[Line]
    args: list[str]
    body: list[Line]
    params: list[str] = field(default_factory=list)  # constructor arguments
    attrs: set[str] = field(default_factory=set)  # the module attributes __init__ assigns (spec names)
    base: str = "nn.Module"


@dataclass
class Instance:
    """One block instance waiting to be given a class."""

    iid: int
    scope: Scope
    cls: ClassDef
    input_types: list
    input_names: list[str]
    span: Span
    bound: tuple[tuple[str, Any], ...] = ()  # the numbers its body binds to names (`hidden = channels(x) * t`)


def location(span_file: str, line: int) -> str:
    """The ``file.dln:LINE`` comment of a statement."""
    return f"{safe_text(Path(span_file).name)}:{line}"


def result_hints(hint: str | None, n: int) -> list[str]:
    """Variable names for ``n`` results: ``a,b`` (from ``a, b = ...``) names each one."""
    parts = (hint or "y").split(",")
    if len(parts) == n:
        return parts
    return [parts[0]] + [f"{parts[0]}_{i}" for i in range(1, n)]


def folded_call(node: Node, x: str, helper: str = "folded_batchnorm") -> str:
    """The call running ``node`` with the batchnorm folded into it (``helper``, a runtime function the caller
    records as used: ``folded_batchnorm``, or ``folded_without_bias`` for a fused epilogue) on ``x``."""
    assert node.fold is not None and node.name is not None
    return f"{helper}({module_path(node.name)}, {module_path(node.fold.name)}, {x})"


def node_statements(g: Graph, node: Node, args: list[str], mod: str | None, outs: list[str], ctx: Ctx,
                    used: set[str]) -> list[Filled]:
    """The plain module's statements computing ``node`` from ``args`` into ``outs``: its op's PyTorch facet, or,
    for a layer with a folded batchnorm, ``folded_batchnorm`` (recorded in ``used``). The module emitter and the
    fused emitter's fallback branch both write nodes this way."""
    if node.fold is not None:
        used.add("folded_batchnorm")
        return [assign(outs[:1], Var(folded_call(node, args[0])))]
    ins = [g.types[v] for v in node.inputs]
    return op_of(node.op).torch.forward(node.attrs, ins, list(node.types), args, mod, outs, ctx, node.in_place)
