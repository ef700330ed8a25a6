"""IR <-> YAML. ``load_yaml(dump_yaml(g))`` gives back an equal graph."""

from __future__ import annotations

from typing import Any

import yaml

from dlc.compiler.ir import Graph, Node, Scope
from dlc.compiler.types import StateType, TensorType, Type
from dlc.diagnostics import Span


def _span(s: Span) -> list:
    return [s.file, s.line, s.col, s.end_line, s.end_col]


def _type(t: Type) -> dict:
    if isinstance(t, TensorType):
        return {"tensor": list(t.shape), "dtype": t.dtype, "layout": t.layout}
    return {"state": t.cell, "layers": t.layers, "directions": t.directions, "hidden": t.hidden}


def _untype(d: dict) -> Type:
    if "tensor" in d:
        return TensorType(tuple(d["tensor"]), d["dtype"], d["layout"])
    return StateType(d["state"], d["layers"], d["directions"], d["hidden"])


def to_dict(g: Graph) -> dict[str, Any]:
    return {
        "network": g.name,
        "file": g.file,
        "span": _span(g.span),
        "params": dict(g.params),
        "inputs": [{"name": n, "value": v} for n, v in g.inputs],
        "outputs": [{"name": n, "value": v} for n, v in g.outputs],
        "nodes": [
            {
                "id": n.id,
                "op": n.op,
                "inputs": list(n.inputs),
                "outputs": list(n.outputs),
                "attrs": dict(n.attrs),
                "types": [_type(t) for t in n.types],
                "span": _span(n.span),
                "scope": [
                    {"name": s.name, "path": s.path, "kind": s.kind, "block": s.block,
                     "args": [[k, v] for k, v in s.args], "call": s.call, "span": _span(s.span)}
                    for s in n.scope
                ],
                "name": n.name,
                "hint": n.hint,
            }
            for n in g.nodes
        ],
        "blocks": {name: _span(span) for name, span in g.blocks.items()},
        "calls": {k: {"inputs": list(i), "outputs": list(o), "names": list(n), "hint": h}
                  for k, (i, o, n, h) in g.calls.items()},
    }


def from_dict(d: dict[str, Any]) -> Graph:
    g = Graph(d["network"], d["file"], Span(*d["span"]), dict(d["params"]))
    g.inputs = [(x["name"], x["value"]) for x in d["inputs"]]
    g.outputs = [(x["name"], x["value"]) for x in d["outputs"]]
    for n in d["nodes"]:
        scope = tuple(
            Scope(s["name"], s["path"], s["kind"], s["block"], tuple((k, v) for k, v in s["args"]), s["call"],
                  Span(*s["span"]))
            for s in n["scope"]
        )
        node = Node(n["id"], n["op"], tuple(n["inputs"]), tuple(n["outputs"]), dict(n["attrs"]),
                    tuple(_untype(t) for t in n["types"]), Span(*n["span"]), scope, n["name"], n["hint"])
        g.nodes.append(node)
        for v, t in zip(node.outputs, node.types):
            g.types[v] = t
    g.calls = {k: (tuple(c["inputs"]), tuple(c["outputs"]), tuple(c["names"]), c["hint"])
               for k, c in d["calls"].items()}
    g.blocks = {name: Span(*span) for name, span in d["blocks"].items()}
    return g


# libyaml's C emitter and parser when PyYAML was built with them (several times faster)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dump_yaml(g: Graph) -> str:
    return yaml.dump(to_dict(g), Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=120)


def load_yaml(text: str) -> Graph:
    return from_dict(yaml.load(text, Loader=_Loader))
