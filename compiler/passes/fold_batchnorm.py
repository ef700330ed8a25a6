"""Batchnorm folding (``optimize="inference"``): each batchnorm right after a conv/linear layer folds into it."""

from __future__ import annotations

from dataclasses import replace

from dlc.compiler.ir import FoldedNorm, Graph, Node
from dlc.compiler.ops.registry import op_of


def _pairs(g: Graph) -> list[tuple[Node, Node]]:
    """(layer, batchnorm) pairs that may fold: the batchnorm is the layer's only user, in the same scope, and
    normalises the layer's output channels."""
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
    return pairs


def fold_batchnorm(g: Graph) -> bool:
    """Fold each batchnorm into the conv/linear layer before it.

    The batchnorm node goes; the layer before it gets ``Node.fold`` (a :class:`FoldedNorm` naming the
    batchnorm's op, module and attributes). The generated module keeps both modules (so state_dicts still load)
    and in eval mode runs one convolution with the folded weights; in training mode it runs both as before.
    Inside a labelled group or repeat the pair are consecutive children of one ``nn.Sequential``, which becomes
    a ``FoldingSequential`` (same children, same state_dict).
    """
    pairs = _pairs(g)
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
        assert bn.name is not None
        prev.fold = FoldedNorm(bn.op, bn.name, dict(bn.attrs))
        drop[bn.outputs[0]] = prev.outputs[0]
    if not drop:
        return False

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
    g.calls = {k: replace(c, inputs=tuple(sub(v) for v in c.inputs), outputs=tuple(sub(v) for v in c.outputs))
               for k, c in g.calls.items()}
    return True
