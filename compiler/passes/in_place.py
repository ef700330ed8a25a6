"""In-place results (``optimize="inference"``): ops that may overwrite their first input do, where it is safe."""

from __future__ import annotations

from dlc.compiler.ir import Graph
from dlc.compiler.ops.registry import op_of


def compute_in_place(g: Graph) -> bool:
    """Let ops that may work in place (relu, add) overwrite their first input where nothing else reads it.

    Sets ``Node.in_place`` where the op allows it (``OpDef.in_place``). Only values made by ops whose gradient
    does not need their result (``OpDef.overwritable``) qualify, so training still works (autograd checks this
    and would raise, never compute wrongly).
    """
    producer = g.producer()
    users = g.users()
    outputs = {v for _, v in g.outputs}
    changed = False
    for node in g.nodes:
        if not op_of(node.op).in_place or not node.inputs or node.in_place:
            continue
        v = node.inputs[0]
        prev = producer.get(v)
        if (prev is None or not op_of(prev.op).overwritable or len(users.get(v, [])) != 1 or v in outputs
                or node.inputs.count(v) != 1 or g.types[v] != node.types[0] or prev.scope != node.scope):
            continue  # prev.scope == node.scope: never overwrite a block's argument (a shared block's caller)
        node.in_place = True
        changed = True
    return changed
