"""Creating IR nodes: the one place a node is added to the graph.

A node's types come from its op's shape rule at once (after its arguments' kinds have checked what needs the
input types), so a shape error is reported at the spec line that caused it, with the chain of block instances.
Sizes and parameter counts are bounded here, and so is the number of nodes.
"""

from __future__ import annotations

from typing import Any

from dlc.compiler.context import TEXT_PER_STEP, Context, Frame, short_chain
from dlc.compiler.ir import Node
from dlc.compiler.naming import Container
from dlc.compiler.ops.param import LAYER_PARAM_ARGS, check_param_args, weight_shape
from dlc.compiler.ops.registry import REQUIRED, OpDef, ShapeError, get, op_of
from dlc.compiler.types import MAX_ELEMENTS, TensorType, Type, size_problem
from dlc.compiler.values import Tensor
from dlc.diagnostics import DlcError, Span


class Nodes:
    """Adds nodes to the graph of ``ctx``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def emit(self, op: str, inputs: list[Tensor], attrs: dict[str, Any], span: Span, frame: Frame) -> Tensor:
        """A node of an op the language writes with syntax of its own (`x * 2`, `a + b`); its one result."""
        opdef = get(op)
        assert opdef is not None
        full = {a.name: a.default for a in opdef.attrs if a.default is not REQUIRED}
        full.update(attrs)
        node = self.node(op, inputs, full, None, span, frame.container, None, frame.hint, frame)
        return Tensor(node.outputs[0], node.types[0])

    def node(self, op: str, inputs: list[Tensor], attrs: dict[str, Any], types: tuple[Type, ...] | None,
             span: Span, container: Container, name: str | None, hint: str | None,
             frame: Frame | None = None, attr_spans: dict[str, Span] | None = None) -> Node:
        """Add a node of ``op``; its ``types`` are inferred unless given. ``name`` is its module attribute,
        ``hint`` the spec's name for its value, ``attr_spans`` where each argument was written."""
        g = self.ctx.g
        opdef = op_of(op)
        if types is None:
            try:
                _check_kinds(opdef, attrs, inputs)
                if any(k in attrs for k in LAYER_PARAM_ARGS):
                    check_param_args(opdef, attrs, [t.type for t in inputs], self._tied(attrs.get("tie"), container),
                                     container.kind == "seq")
                types = tuple(opdef.infer(attrs, [t.type for t in inputs]))
            except ShapeError as exc:
                # underline the argument the problem is about when the spec wrote it
                where = (attr_spans or {}).get(exc.attr, span) if exc.attr else span
                chain = container.chain + ((name,) if name else ())
                raise DlcError(exc.code, exc.message, where, hint=exc.hint,
                               chain=chain if len(chain) > 1 else ()) from None
        if len(g.nodes) >= self.ctx.max_nodes:
            raise short_chain(DlcError(
                "too-large", f"the network has more than {self.ctx.max_nodes:,} layers", span,
                chain=container.chain if len(container.chain) > 1 else (),
                hint="check repeat counts (`* n`) and recursive blocks; if the network really is that large, "
                     "raise the limit with the environment variable DLC_MAX_NODES"))
        if container.scope:  # every command writes a layer's module path: a long one costs steps to match
            self.ctx.step(span, frame, cost=len(container.scope[-1].path) // TEXT_PER_STEP)
        for t in types:
            problem = size_problem(t)
            if problem is not None:
                raise too_large(problem, span, container, name)
        if opdef.stateful and name is not None:
            count = opdef.count_params(attrs, [t.type for t in inputs])
            if count > MAX_ELEMENTS:
                raise too_large(f"`{op}` would have more than {MAX_ELEMENTS} parameters", span, container, name)
        first = next(reversed(g.types)) + 1 if g.types else 0  # values are numbered in order: O(1), not max()
        outs = tuple(range(first, first + len(types)))
        node = Node(len(g.nodes), op, tuple(t.vid for t in inputs), outs, attrs, types, span, container.scope, name,
                    hint)
        for v, t in zip(outs, types):
            g.types[v] = t
        g.nodes.append(node)
        return node

    def _tied(self, name: str | None, container: Container) -> tuple[str, TensorType] | None:
        """The op and weight of the layer ``name`` of ``container`` that ``tie=name`` shares, if there is one."""
        if name is None:
            return None
        for n in reversed(self.ctx.g.nodes):
            if n.name == name and n.scope == container.scope:
                return _weight_of(n, self.ctx.g.types) or (n.op, TensorType(()))
        return None


def _weight_of(node: Node, types: dict[int, Type]) -> tuple[str, TensorType] | None:
    shape = weight_shape(node.op, node.attrs, [types[v] for v in node.inputs])
    return (node.op, TensorType(tuple(shape))) if shape is not None else None


def _check_kinds(op: OpDef, attrs: dict[str, Any], inputs: list[Tensor]) -> None:
    """What each argument's kind checks against the others and the input types, as the shape rule reports."""
    types = [t.type for t in inputs]
    for a in op.attrs:
        problem = a.kind.check(attrs[a.name], op.name, a.name, attrs, types)
        if problem is not None:
            raise ShapeError(problem, attr=a.name, code="bad-argument")


def too_large(problem: str, span: Span, container: Container, name: str | None) -> DlcError:
    """error[too-large] for a size or parameter count past 64 bits, at the layer ``name`` of ``container``."""
    chain = container.chain + ((name,) if name else ())
    return short_chain(DlcError("too-large", problem, span, chain=chain if len(chain) > 1 else (),
                                hint="sizes and parameter counts must fit in 64 bits"))
