"""Compile-time values the elaborator computes with.

Numbers, booleans, strings and lists are plain Python values. The rest are here:
tensors (IR values), symbols (bare names such as `global`), layers (an op or block
with bound arguments, not yet applied) and instances (a layer bound to a name,
whose applications share one set of parameters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlc.compiler.types import StateType, TensorType, Type
from dlc.diagnostics import Span
from dlc.grammar import ast
from dlc.grammar.build import describe_int

if TYPE_CHECKING:  # argument kinds (which the registry imports) read these values: no import of the registry
    from dlc.compiler.ops.registry import OpDef


@dataclass(frozen=True)
class Tensor:
    vid: int
    type: Type

    @property
    def is_state(self) -> bool:
        return isinstance(self.type, StateType)


@dataclass(frozen=True)
class Symbol:
    name: str
    span: Span


@dataclass(frozen=True)
class SymSize:
    """A size computed at compile time from a symbolic dimension, as the formula the types write (``T-1``,
    ``T*2``): a slice bound, or a size in an external layer's shape rule."""

    formula: str

    @property
    def names(self) -> set[str]:
        """The symbolic dimensions the formula reads (``ceil`` is a function of ceil-mode pooling's formulas)."""
        return {n for n in re.findall(r"[A-Za-z_]\w*", self.formula) if n != "ceil"}


@dataclass(frozen=True)
class Init:
    """An initialiser written as a call (``normal(std=0.02)``), in its IR form (see ``ops/initialisers.py``)."""

    spec: tuple[tuple[str, Any], ...]  # ("init", name), then the arguments given

    def ir(self) -> dict[str, Any]:
        """The plain dict the IR keeps."""
        return dict(self.spec)


@dataclass
class Layer:
    """An op or a block with (some) arguments bound."""

    op: OpDef | None
    block: ast.BlockDef | None
    config: dict[str, tuple[Any, Span]]  # attribute / parameter name -> (value, span of the argument)
    positional: list[tuple[Any, Span]]  # positional config values not yet matched
    tensors: dict[str, Tensor]  # tensor inputs bound by keyword
    pos_tensors: list[Tensor]  # tensor inputs bound by position
    span: Span
    tensor_spans: dict[str, Span] = field(default_factory=dict)  # where each keyword tensor was written

    @property
    def name(self) -> str:
        return self.op.name if self.op else self.block.name  # type: ignore[union-attr]

    @property
    def has_tensors(self) -> bool:
        return bool(self.tensors or self.pos_tensors)


@dataclass
class Instance:
    """A layer bound to a name: every application shares its parameters."""

    name: str
    layer: Layer
    container: Any  # the Container that owns the module attribute
    span: Span
    input_types: list[Type] | None = None


def describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, Tensor):
        return f"a tensor {v.type}" if isinstance(v.type, TensorType) else f"a {v.type}"
    if isinstance(v, bool):
        return f"the boolean {'true' if v else 'false'}"
    if isinstance(v, int):
        return describe_int(v)
    if isinstance(v, float):
        return f"the number {v}"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, Symbol):
        return f"the name `{v.name}`"
    if isinstance(v, SymSize):
        return f"the symbolic size `{v.formula}`"
    if isinstance(v, Layer):
        return f"the layer `{v.name}`"
    if isinstance(v, Instance):
        return f"the instance `{v.name}`"
    if isinstance(v, Init):
        return f"the initialiser `{v.spec[0][1]}`"
    if isinstance(v, tuple):
        return f"a tuple of {len(v)} values"
    return type(v).__name__
