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
from dlc.compiler.ops.param import LAYER_PARAM_ARGS, check_param_args, step_layer, weight_shape
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
                layer_op, layer_attrs, layer_ins = step_layer(op, attrs, [t.type for t in inputs])
                if any(k in layer_attrs for k in LAYER_PARAM_ARGS):
                    tied = self._tied(layer_attrs.get("tie"), container)
                    check_param_args(op_of(layer_op), layer_attrs, layer_ins, tied and tied[:2])
                    if tied is not None:  # the IR keeps the module path of the tied layer, relative to its class
                        if layer_attrs is attrs:
                            attrs["tie"] = tied[2]
                        else:
                            attrs["layer"] = {**attrs["layer"], "tie": tied[2]}
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

    def _tied(self, name: str | None, container: Container) -> tuple[str, TensorType, str] | None:
        """The op and weight of the layer ``name`` that ``tie=name`` shares, if one comes before, and its module
        path from the network or block instance that holds ``container``: the layer is of that body, directly or
        inside its labelled groups (whose modules the body's ``__init__`` reaches), not inside a block instance."""
        if name is None:
            return None
        cls = max((i + 1 for i, s in enumerate(container.scope) if s.kind == "block"), default=0)
        found = []
        for n in self.ctx.g.nodes:
            if n.name == name and n.scope[:cls] == container.scope[:cls] and len(n.scope) >= cls \
                    and all(s.kind == "seq" for s in n.scope[cls:]):
                found.append(n)
        paths = {".".join([s.name for s in n.scope[cls:]] + [name]) for n in found}
        if len(paths) > 1:
            raise ShapeError(f"`tie={name}`: several layers are called `{name}` ({', '.join(sorted(paths))})",
                             attr="tie", code="bad-argument", hint="give the layer to share a name of its own")
        if not found:
            elsewhere = [n for n in self.ctx.g.nodes if n.name == name]
            if elsewhere:
                other = elsewhere[-1]
                where = f"{other.scope[-1].path}.{name}" if other.scope else name
                body = f"block `{container.scope[cls - 1].block}`" if cls else "the network"
                raise ShapeError(f"`tie={name}`: the layer `{where}` is not one of {body}: `tie` shares the weight "
                                 "of a layer of the same network or block, directly or inside its labelled groups",
                                 attr="tie", code="unknown-name", hint="tie layers of one body, e.g. a block that "
                                 "holds both the embedding and the head")
            return None
        n = found[-1]
        op, weight = _weight_of(n, self.ctx.g.types) or (n.op, TensorType(()))
        return op, weight, paths.pop()


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
