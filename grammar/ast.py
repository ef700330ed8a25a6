"""The .dln abstract syntax tree: frozen dataclasses, every node with a source span.

Nothing after :mod:`dlc.grammar.build` touches Lark trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from dlc.diagnostics import Span


# ---- expressions -------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: int | float
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class TupleExpr:
    """Several values in parentheses, `(x, skip)`: the tensors a pipeline carries into a block's inputs."""

    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class Arg:
    """A call argument; ``name`` is set for keyword arguments."""

    name: str | None
    value: "Expr"
    span: Span


@dataclass(frozen=True)
class Call:
    func: "Expr"
    args: tuple[Arg, ...]
    span: Span


@dataclass(frozen=True)
class Slice:
    """A slice in a subscript, ``start:stop:step``; a missing part is None."""

    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"
    span: Span


@dataclass(frozen=True)
class EllipsisItem:
    """``...`` in a subscript: every axis not indexed otherwise."""

    span: Span


@dataclass(frozen=True)
class Subscript:
    """Indexing and slicing: ``x[0, 1:, ...]``; each item an expression (an index), a slice or ``...``."""

    value: "Expr"
    items: tuple["Expr | Slice | EllipsisItem", ...]
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / // %
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Compare:
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class BoolOp:
    op: str  # and / or
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Cond:
    test: "Expr"
    then: "Expr"
    orelse: "Expr"
    span: Span


@dataclass(frozen=True)
class StageName:
    """A stage naming a layer, block or instance with no arguments: ``-> relu``."""

    name: str
    span: Span


@dataclass(frozen=True)
class StageCall:
    """A stage calling a layer or block: ``-> conv2d(64, k=3)``."""

    name: str
    name_span: Span
    args: tuple[Arg, ...]
    span: Span


@dataclass(frozen=True)
class StageGroup:
    """A parenthesised sub-pipeline: ``-> (conv2d(64, k=1) -> batchnorm)``."""

    stages: tuple["Stage", ...]
    span: Span


StageCore = Union[StageName, StageCall, StageGroup]


@dataclass(frozen=True)
class Stage:
    label: str | None
    label_span: Span | None
    core: StageCore
    repeat: "Expr | None"
    span: Span
    checkpoint: Span | None = None  # where `checkpoint` marks the stage for recomputation in backward


@dataclass(frozen=True)
class Pipe:
    head: "Expr"
    stages: tuple[Stage, ...]
    span: Span


Expr = Union[Number, String, Bool, Name, ListExpr, TupleExpr, Call, Subscript, BinOp, Compare, BoolOp, Not, Neg,
             Cond, Pipe]


# ---- statements and definitions -------------------------------------------------------


@dataclass(frozen=True)
class Input:
    name: str
    shape: tuple[Expr, ...] | None
    dtype: str | None
    span: Span


@dataclass(frozen=True)
class Output:
    targets: tuple[str, ...]
    value: Expr | None
    span: Span
    training: bool = False  # `output aux = ... if training`: an output of training mode only


@dataclass(frozen=True)
class Return:
    values: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Assign:
    targets: tuple[str, ...]
    value: Expr
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    """A learnable tensor: ``param NAME: [shape] dtype = initialiser``."""

    name: str
    shape: tuple[Expr, ...]
    dtype: str | None
    init: Expr | None
    span: Span


Stmt = Union[Input, Output, Return, Assign, ParamDecl]


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class BlockDef:
    """A ``block`` or (with ``is_network``) a ``network`` definition."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    is_network: bool
    span: Span
    name_span: Span


@dataclass(frozen=True)
class ExternEntry:
    """One entry of an external layer's body: ``shape = [x[0], 8]`` or ``dtype = int64``."""

    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class ExternDef:
    """``extern NAME(params) = "dotted.path.Class" { entries }``: a PyTorch layer the spec declares and calls like
    a block (its parameters are bound as a block's are; it has no body of statements)."""

    name: str
    params: tuple[Param, ...]
    path: str
    path_span: Span
    entries: tuple[ExternEntry, ...]
    span: Span
    name_span: Span
    body: tuple[Stmt, ...] = ()  # what a block's checks read: an external layer has no statements
    is_network: bool = False


@dataclass(frozen=True)
class Import:
    path: str
    span: Span


@dataclass(frozen=True)
class Module:
    file: str
    imports: tuple[Import, ...]
    defs: tuple[BlockDef | ExternDef, ...]
