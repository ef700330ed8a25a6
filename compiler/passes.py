"""Passes over the IR: plain functions named by verb, run from one list.

Each pass takes a :class:`Graph` and returns it (possibly changed); ``PIPELINE`` is
the list ``dlc`` runs. ``verify`` is cheap and runs after every pass in tests.
"""

from __future__ import annotations

from typing import Callable

from dlc.compiler.ir import Graph, Node
from dlc.compiler.ops.pytorch import INPLACE
from dlc.compiler.ops.registry import ShapeError, op_of, registered


class VerifyError(AssertionError):
    """The IR broke an invariant: a compiler bug, never a spec error."""


def infer_shapes(g: Graph) -> Graph:
    """Recompute every node's output types from its op's shape rule."""
    for node in g.nodes:
        op = op_of(node.op)
        if op.declared:
            continue  # its type is its declaration's
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
        path = node.module_path
        if path is not None and op_of(node.op).stateful:
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
        path = node.module_path
        if path is None or path in out:
            continue
        out[path] = op_of(node.op).count_params(node.attrs, [g.types[v] for v in node.inputs])
    return out


def total_params(g: Graph) -> int:
    return sum(count_params(g).values())


PIPELINE: list[Callable[[Graph], Graph]] = [verify, infer_shapes, verify]


OPTIMIZATIONS = (None, "inference")


def fold_batchnorm(g: Graph) -> Graph:
    """Fold each batchnorm into the conv/linear before it (inference).

    The batchnorm node goes; the layer before it gains ``attrs["fold"]`` naming the batchnorm and
    its settings. The generated module keeps both modules (so state_dicts still load) and in eval
    mode runs one convolution with the folded weights; in training mode it runs both as before.
    Inside a labelled group or repeat the pair are consecutive children of one ``nn.Sequential``,
    which becomes a ``FoldingSequential`` (same children, same state_dict).
    """
    producer = g.producer()
    users = g.users()
    outputs = {v for _, v in g.outputs}
    pairs: list[tuple[Node, Node]] = []
    for node in g.nodes:
        if not op_of(node.op).folds or node.name is None:
            continue
        prev = producer.get(node.inputs[0])
        if (prev is None or op_of(prev.op).fold_axis is None or len(users[prev.outputs[0]]) != 1
                or prev.scope != node.scope or prev.outputs[0] in outputs):
            continue
        if op_of(prev.op).fold_axis % g.types[prev.outputs[0]].rank != 0:
            continue  # the batchnorm's channels (axis 0) are not the layer's output channels (a linear layer's last)
        pairs.append((prev, node))
    # A layer applied more than once (a shared instance) folds only if every application has the same batchnorm.
    by_path: dict[str | None, list[Node]] = {}
    for n in g.nodes:
        by_path.setdefault(n.module_path, []).append(n)
    following = {prev.id: bn for prev, bn in pairs}
    folds: dict[str | None, bool] = {}  # per module path, decided once: a shared layer may have very many uses
    drop: dict[int, int] = {}  # batchnorm output -> the folded layer's output
    for prev, bn in pairs:
        path = prev.module_path
        if path not in folds:
            folds[path] = all(u.id in following and following[u.id].module_path == bn.module_path
                              for u in by_path[path])
        if not folds[path]:
            continue
        prev.attrs = {**prev.attrs, "fold": {"name": bn.name, "eps": bn.attrs["eps"],
                                              "momentum": bn.attrs["momentum"], "affine": bn.attrs["affine"]}}
        drop[bn.outputs[0]] = prev.outputs[0]
    if not drop:
        return g

    def sub(v: int) -> int:
        return drop.get(v, v)

    kept = [n for n in g.nodes if not (n.outputs and n.outputs[0] in drop)]  # the folded batchnorms
    for i, n in enumerate(kept):
        n.id = i
        n.inputs = tuple(sub(v) for v in n.inputs)
    g.nodes = kept
    for v in drop:
        del g.types[v]
    g.outputs = [(name, sub(v)) for name, v in g.outputs]
    # a block call or labelled group may receive the batchnorm's output as well as return it
    g.calls = {k: (tuple(sub(v) for v in ins), tuple(sub(v) for v in outs), names, hint)
               for k, (ins, outs, names, hint) in g.calls.items()}
    return g


def compute_in_place(g: Graph) -> Graph:
    """Let ops that may work in place (``OpDef.in_place``: relu, add) overwrite their first input where nothing
    else reads it (inference).

    Only values made by ops whose gradient does not need their result (``OpDef.overwritable``) qualify, so
    training still works (autograd checks this and would raise, never compute wrongly).
    """
    producer = g.producer()
    users = g.users()
    outputs = {v for _, v in g.outputs}
    for node in g.nodes:
        if not op_of(node.op).in_place or not node.inputs:
            continue
        v = node.inputs[0]
        prev = producer.get(v)
        if (prev is None or not op_of(prev.op).overwritable or len(users.get(v, [])) != 1 or v in outputs
                or node.inputs.count(v) != 1 or g.types[v] != node.types[0] or prev.scope != node.scope):
            continue  # prev.scope == node.scope: never overwrite a block's argument (a shared block's caller)
        node.attrs = {**node.attrs, INPLACE: True}
    return g


def optimize_graph(g: Graph, level: str | None) -> Graph:
    """The rewrites of an optimisation level (``None``: none; ``"inference"``: :func:`fold_batchnorm`,
    then :func:`compute_in_place`; the emitter adds channels-last memory order)."""
    if level not in OPTIMIZATIONS:
        raise ValueError(f"unknown optimisation level {level!r}; expected one of {OPTIMIZATIONS}")
    if level == "inference":
        g = verify(compute_in_place(fold_batchnorm(g)))
    return g


def run_passes(g: Graph, passes: list[Callable[[Graph], Graph]] | None = None) -> Graph:
    for p in passes or PIPELINE:
        g = p(g)
    return g
