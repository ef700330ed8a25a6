"""Passes over the IR: plain functions named by verb, run from one list.

Each pass takes a :class:`Graph` and returns it (possibly changed); ``PIPELINE`` is
the list ``dlc`` runs. ``verify`` is cheap and runs after every pass in tests.
"""

from __future__ import annotations

from typing import Callable

from dlc.compiler.ir import Graph, Node
from dlc.compiler.ops.registry import ShapeError, get


class VerifyError(AssertionError):
    """The IR broke an invariant: a compiler bug, never a spec error."""


def infer_shapes(g: Graph) -> Graph:
    """Recompute every node's output types from its op's shape rule."""
    for node in g.nodes:
        if node.op == "input":
            continue
        op = get(node.op)
        assert op is not None, node.op
        try:
            node.types = tuple(op.infer(node.attrs, [g.types[v] for v in node.inputs]))
        except ShapeError as exc:
            raise VerifyError(f"node %{node.outputs[0]} ({node.op}) no longer type-checks: {exc.message}") from None
        for v, t in zip(node.outputs, node.types):
            g.types[v] = t
    return g


def verify(g: Graph) -> Graph:
    """Check the IR's invariants: single assignment, defined before use, known ops, consistent types."""
    defined: set[int] = set()
    modules: dict[str, Node] = {}
    for i, node in enumerate(g.nodes):
        if node.id != i:
            raise VerifyError(f"node {i} has id {node.id}")
        if node.op != "input" and get(node.op) is None:
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
        path = node.module_path
        if path is not None and get(node.op) is not None and get(node.op).stateful:
            other = modules.get(path)
            if other is not None and (other.op != node.op or other.attrs != node.attrs):
                raise VerifyError(f"module {path} is used by two different layers")
            modules[path] = node
    for name, v in g.outputs:
        if v not in defined:
            raise VerifyError(f"output {name} is undefined")
    return g


def count_params(g: Graph) -> dict[str, int]:
    """Trainable parameters per module path; a shared instance is counted once."""
    out: dict[str, int] = {}
    for node in g.nodes:
        if node.op == "input":
            continue
        op = get(node.op)
        assert op is not None
        path = node.module_path
        if path is None or path in out:
            continue
        out[path] = op.count_params(node.attrs, [g.types[v] for v in node.inputs])
    return out


def total_params(g: Graph) -> int:
    return sum(count_params(g).values())


PIPELINE: list[Callable[[Graph], Graph]] = [verify, infer_shapes, verify]


OPTIMIZATIONS = (None, "inference")


def optimize_graph(g: Graph, level: str | None) -> Graph:
    """The rewrites of an optimisation level (``None``: none)."""
    if level not in OPTIMIZATIONS:
        raise ValueError(f"unknown optimisation level {level!r}; expected one of {OPTIMIZATIONS}")
    return g


def run_passes(g: Graph, passes: list[Callable[[Graph], Graph]] | None = None) -> Graph:
    for p in passes or PIPELINE:
        g = p(g)
    return g
