"""The IR: an ordered list of single-assignment nodes.

Each node names its op, input and output value ids, attributes, output types, the
source span it came from, and the chain of block / group instances (``scope``)
it lives in. The scope keeps the block hierarchy for the backends: one class per
block in the generated code, one cluster per block instance in diagrams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, TypeVar

from dlc.compiler.types import Type
from dlc.diagnostics import Diagnostic, Span, display

T = TypeVar("T")


@dataclass(frozen=True)
class Scope:
    """One level of the instance hierarchy.

    ``kind`` is ``"block"`` (an instance of a block) or ``"seq"`` (a labelled group or
    repeat, emitted as ``nn.Sequential``). ``path`` is the dotted module path from the
    network (``"layer2.0"``); ``call`` tells apart applications of a shared instance.
    """

    name: str
    path: str
    kind: str
    block: str | None
    args: tuple[tuple[str, Any], ...]
    call: int
    span: Span


@dataclass(frozen=True)
class FoldedNorm:
    """A normalisation layer folded into the layer before it by the inference passes.

    Its node is gone from the graph; what the backends still need of it is here: its op (whose definition gives
    the module's constructor), its module attribute name (the module stays, so state_dicts load as before) and
    its attributes. Its input and output types are the folding layer's output type.
    """

    op: str
    name: str
    attrs: Mapping[str, Any]


@dataclass(frozen=True)
class BlockCall:
    """One application of a block instance or labelled group: the value ids it receives (named ``input_names``
    inside it) and returns, and the name its result was assigned to (a hint for generated code)."""

    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    input_names: tuple[str, ...]
    hint: str | None
    # the numbers a block's body binds to names (`hidden = channels(x) * t`): generated code is named after them
    bound: tuple[tuple[str, Any], ...] = ()


# A block call's key: the instance's module path and which application of it (a shared instance has several).
CallKey = tuple[str, int]


def call_key(scope: Scope) -> CallKey:
    """The key of ``scope``'s application in :attr:`Graph.calls`."""
    return (scope.path, scope.call)


@dataclass
class Node:
    """One op application. ``fold`` and ``in_place`` are what the inference passes decided for it."""

    id: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    attrs: dict[str, Any]
    types: tuple[Type, ...]
    span: Span
    scope: tuple[Scope, ...] = ()
    name: str | None = None  # module attribute name inside the innermost scope
    hint: str | None = None  # preferred variable name for the output in generated code
    fold: FoldedNorm | None = None  # the normalisation folded into this layer (inference)
    in_place: bool = False  # overwrites its first input (inference; the op's definition allows it)

    @property
    def module_path(self) -> str | None:
        if self.name is None:
            return None
        return ".".join([s.name for s in self.scope] + [self.name])

    @property
    def scope_path(self) -> str:
        return self.scope[-1].path if self.scope else ""


class Analyses:
    """Results computed from a graph (the fusion plan), each once, kept until a pass changes the graph.

    A key names the analysis and its options; the pass manager calls :meth:`invalidate` after a pass that
    changed the graph, and so must anything else that changes it after an analysis was read.
    """

    def __init__(self) -> None:
        self._results: dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The result for ``key``, from ``compute()`` the first time it is asked for."""
        if key not in self._results:
            self._results[key] = compute()
        return self._results[key]

    def invalidate(self) -> None:
        """Forget every result: the graph changed."""
        self._results.clear()

    def __deepcopy__(self, memo: dict) -> Analyses:
        return Analyses()  # a copy of a graph is changed on its own: it computes its own results


@dataclass
class Graph:
    """A whole network, elaborated and lowered."""

    name: str
    file: str
    span: Span
    params: dict[str, Any]
    nodes: list[Node] = field(default_factory=list)
    types: dict[int, Type] = field(default_factory=dict)  # value id -> type
    inputs: list[tuple[str, int]] = field(default_factory=list)
    outputs: list[tuple[str, int]] = field(default_factory=list)
    # The outputs computed and returned in training mode only (`output aux = ... if training`), by name.
    training_outputs: set[str] = field(default_factory=set)
    # Each application of a block or labelled group (read it with call_of).
    calls: dict[CallKey, BlockCall] = field(default_factory=dict)
    # Where each block used by the network is defined (the span of its name).
    blocks: dict[str, Span] = field(default_factory=dict)
    # The applications of blocks and groups marked `checkpoint`: recomputed in backward (training mode).
    checkpointed: set[CallKey] = field(default_factory=set)
    analyses: Analyses = field(default_factory=Analyses, compare=False, repr=False)
    # What the lint found in the spec (dlc/compiler/lint.py), before dead code was removed.
    warnings: list[Diagnostic] = field(default_factory=list, compare=False, repr=False)

    def call_of(self, scope: Scope) -> BlockCall:
        """The inputs and outputs of the application ``scope`` stands for (every block or group scope has one)."""
        return self.calls[call_key(scope)]

    def add_call(self, scope: Scope, call: BlockCall) -> None:
        """Record the application ``scope`` stands for (elaboration does, once per application)."""
        self.calls[call_key(scope)] = call

    def producer(self) -> dict[int, Node]:
        return {v: n for n in self.nodes for v in n.outputs}

    def users(self) -> dict[int, list[Node]]:
        out: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out


def format_value(v: Any) -> str:
    """Attribute values printed the way the spec would write them."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={format_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float):
        return repr(v)
    if v is None:
        return "none"
    return str(v)


def print_graph(g: Graph) -> str:
    """A deterministic text form of the IR, for debugging and golden tests."""
    lines = [f"network {g.name}" + (f"({format_value(g.params)[1:-1]})" if g.params else "") + " {"]
    for node in g.nodes:
        outs = ", ".join(f"%{v}" for v in node.outputs)
        ins = ", ".join(f"%{v}" for v in node.inputs)
        attrs = ", ".join(f"{k}={format_value(v)}" for k, v in node.attrs.items())
        types = ", ".join(str(t) for t in node.types)
        where = node.module_path or node.scope_path
        line = f"  {outs} = {node.op}({ins})"
        if attrs:
            line += f" {{{attrs}}}"
        if node.fold is not None:
            line += f" [folds {node.fold.name} = {node.fold.op}{format_value(dict(node.fold.attrs))}]"
        if node.in_place:
            line += " [in place]"
        line += f" : {types}"
        if where:
            line += f"  @{where}"
        line += f"  # {display(Path(node.span.file).name)}:{node.span.line}"
        lines.append(line)
    if g.checkpointed:  # the block and group applications recomputed in backward, as `path` or `path#call`
        marked = sorted(path + (f"#{call}" if call else "") for path, call in g.checkpointed)
        lines.append(f"  checkpoint {', '.join(marked)}")
    outs = ", ".join(f"{name}=%{v}" + (" [training]" if name in g.training_outputs else "") for name, v in g.outputs)
    lines.append(f"  return {outs}")
    lines.append("}")
    return "\n".join(lines) + "\n"
