"""Parameter counts: the analysis ``dlc check``, ``dlc summary``, the diagram and the generated module show."""

from __future__ import annotations

from dlc.compiler.ir import Graph, Node
from dlc.compiler.ops.param import tied_params
from dlc.compiler.ops.registry import op_of


def count_params(g: Graph) -> dict[str, int]:
    """Trainable parameters per module path; a shared instance is counted once."""
    out: dict[str, int] = {}
    for node in g.nodes:
        path = node.module_path
        if path is None or path in out:
            continue
        ins = [g.types[v] for v in node.inputs]
        # a tied weight (`tie=embed`) is the other layer's: counted once, there, as parameters() yields it once
        out[path] = op_of(node.op).count_params(node.attrs, ins) - tied_params(node.op, node.attrs, ins)
    return out


def total_params(g: Graph) -> int:
    """Trainable parameters of the whole network."""
    return sum(count_params(g).values())


def tied_to(node: Node) -> str | None:
    """The module path of the layer whose weight ``node``'s layer shares (``tie=``), if it shares one.

    The IR keeps the tied layer's path relative to the body (network or block instance) the layer is written in:
    that body is the innermost block scope, labelled groups included in the path."""
    tie = node.attrs.get("tie")
    if tie is None and op_of(node.op).wraps:
        tie = node.attrs["layer"].get("tie")
    if tie is None:
        return None
    body = next((s.path for s in reversed(node.scope) if s.kind == "block"), "")
    return f"{body}.{tie}" if body else tie
