"""The IR's invariants (:func:`verify`) and shape inference (:func:`infer_shapes`).

``verify`` is cheap and linear: the pass manager runs it on the elaborated IR, after the last pass, and after
every pass when asked to (``DLC_VERIFY_PASSES=1``, which the tests set).
"""

from __future__ import annotations

from dlc.compiler.ir import Graph, Node
from dlc.compiler.ops.registry import ShapeError, op_of, registered


class VerifyError(AssertionError):
    """The IR broke an invariant: a compiler bug, never a spec error."""


def infer_shapes(g: Graph) -> bool:
    """Recompute every node's output types from its op's shape rule."""
    changed = False
    for node in g.nodes:
        op = op_of(node.op)
        if op.declared:
            continue  # its type is its declaration's
        try:
            types = tuple(op.infer(node.attrs, [g.types[v] for v in node.inputs]))
        except ShapeError as exc:
            raise VerifyError(f"node %{node.outputs[0]} ({node.op}) no longer type-checks: {exc.message}") from None
        if types != node.types:
            changed = True
            node.types = types
        for v, t in zip(node.outputs, node.types, strict=True):
            g.types[v] = t
    return changed


def _check_decisions(node: Node) -> None:
    """What a pass decided for ``node`` is what its op allows."""
    op = op_of(node.op)
    if node.in_place and not op.in_place:
        raise VerifyError(f"node {node.id} ({node.op}) works in place, which its op does not allow")
    if node.fold is not None:
        if op.fold_axis is None or node.name is None:
            raise VerifyError(f"node {node.id} ({node.op}) has a folded {node.fold.op}, but it cannot fold one")
        if node.fold.op not in registered() or not op_of(node.fold.op).folds:
            raise VerifyError(f"node {node.id} ({node.op}) folds {node.fold.op}, which does not fold")


def verify(g: Graph) -> Graph:
    """Check the IR's invariants: single assignment, defined before use, known ops, consistent types, pass
    decisions the ops allow, and block calls that name values of the graph."""
    defined: set[int] = set()
    modules: dict[str, Node] = {}
    for i, node in enumerate(g.nodes):
        if node.id != i:
            raise VerifyError(f"node {i} has id {node.id}")
        if node.op not in registered():
            raise VerifyError(f"unknown op {node.op}")
        for v in node.inputs:
            if v not in defined:
                raise VerifyError(f"node {i} ({node.op}) uses %{v} before it is defined")
        for v, t in zip(node.outputs, node.types):
            if v in defined:
                raise VerifyError(f"%{v} assigned twice")
            if g.types.get(v) != t:
                raise VerifyError(f"%{v}: node type {t} differs from value table {g.types.get(v)}")
            defined.add(v)
        _check_decisions(node)
        path = node.module_path
        if path is not None and op_of(node.op).stateful:
            other = modules.get(path)
            if other is not None and (other.op != node.op or other.attrs != node.attrs):
                raise VerifyError(f"module {path} is used by two different layers")
            modules[path] = node
    for name, v in g.outputs:
        if v not in defined:
            raise VerifyError(f"output {name} is undefined")
    for (path, call), site in g.calls.items():
        for v in site.inputs + site.outputs:
            if v not in defined:
                raise VerifyError(f"the call {path}#{call} names %{v}, which is undefined")
    return g
