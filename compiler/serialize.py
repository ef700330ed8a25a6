"""IR <-> YAML. ``load_yaml(dump_yaml(g))`` gives back an equal graph."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from dlc.compiler.ir import BlockCall, FoldedNorm, Graph, Node, Scope
from dlc.compiler.types import StateType, TensorType, Type
from dlc.diagnostics import Span


class _Tables:
    """The file and scope tables of a dump: each file name and each scope written once, referred to by index."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.scopes: list[dict[str, Any]] = []
        self._file_ids: dict[str, int] = {}
        self._scope_ids: dict[tuple[int | None, int], int] = {}  # (parent id, id() of the Scope) -> index
        self._chains: dict[int, int | None] = {}  # id() of a node's scope tuple -> index of its innermost scope

    def span(self, s: Span) -> list:
        index = self._file_ids.get(s.file)
        if index is None:
            index = self._file_ids[s.file] = len(self.files)
            self.files.append(s.file)
        return [index, s.line, s.col, s.end_line, s.end_col]

    def scope(self, chain: tuple[Scope, ...]) -> int | None:
        """The index of the innermost scope of ``chain``, adding the scopes not yet in the table.

        Nodes of one block instance share their scope tuple, so each tuple is walked once; the keys use the
        objects' identity (their args may hold unhashable lists), and the graph keeps them alive meanwhile.
        """
        if id(chain) in self._chains:
            return self._chains[id(chain)]
        parent: int | None = None
        for s in chain:
            key = (parent, id(s))
            index = self._scope_ids.get(key)
            if index is None:
                index = self._scope_ids[key] = len(self.scopes)
                self.scopes.append({"parent": parent, "name": s.name, "path": s.path, "kind": s.kind,
                                    "block": s.block, "args": [[k, v] for k, v in s.args], "call": s.call,
                                    "span": self.span(s.span)})
            parent = index
        self._chains[id(chain)] = parent
        return parent


def _type(t: Type) -> dict:
    if isinstance(t, TensorType):
        return {"tensor": list(t.shape), "dtype": t.dtype, "layout": t.layout}
    return {"state": t.cell, "layers": t.layers, "directions": t.directions, "hidden": t.hidden}


def _untype(d: dict) -> Type:
    if "tensor" in d:
        return TensorType(tuple(d["tensor"]), d["dtype"], d["layout"])
    return StateType(d["state"], d["layers"], d["directions"], d["hidden"])


def _node(n: Node, t: _Tables) -> dict[str, Any]:
    """One node as plain data; what the inference passes decided (``fold``, ``in_place``) only where set."""
    d = {"id": n.id, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs), "attrs": dict(n.attrs),
         "types": [_type(ty) for ty in n.types], "span": t.span(n.span), "scope": t.scope(n.scope), "name": n.name,
         "hint": n.hint}
    if n.fold is not None:
        d["fold"] = {"op": n.fold.op, "name": n.fold.name, "attrs": dict(n.fold.attrs)}
    if n.in_place:
        d["in_place"] = True
    return d


def _call_key(path: str, call: int) -> str:
    """A block call's key in the YAML form: ``path#call``."""
    return f"{path}#{call}"


def _call_of_key(key: str) -> tuple[str, int]:
    path, _, call = key.rpartition("#")  # the call is a number: the last '#' ends the path
    return path, int(call)


def to_dict(g: Graph) -> dict[str, Any]:
    """The graph as plain data. Source files and scopes (block instances, groups) are listed once, in
    ``files`` and ``scopes``; spans name their file by index and nodes their innermost scope by index (a
    scope names its parent the same way), so the size is linear in the graph however deep blocks nest."""
    t = _Tables()
    head = {"network": g.name, "file": g.file, "span": t.span(g.span), "params": dict(g.params),
            "inputs": [{"name": n, "value": v} for n, v in g.inputs],
            "outputs": [{"name": n, "value": v, **({"training": True} if n in g.training_outputs else {})}
                        for n, v in g.outputs]}
    nodes = [_node(n, t) for n in g.nodes]
    blocks = {name: t.span(span) for name, span in g.blocks.items()}
    return {
        **head,
        "files": t.files,
        "scopes": t.scopes,
        "nodes": nodes,
        "blocks": blocks,
        "calls": {_call_key(path, call): {"inputs": list(c.inputs), "outputs": list(c.outputs),
                                          "names": list(c.input_names), "hint": c.hint,
                                          **({"bound": [list(b) for b in c.bound]} if c.bound else {}),
                                          **({"checkpoint": True} if (path, call) in g.checkpointed else {})}
                  for (path, call), c in g.calls.items()},
    }


def from_dict(d: dict[str, Any]) -> Graph:
    """The graph of :func:`to_dict`'s data (nodes of one scope share one scope tuple again)."""
    files = d["files"]

    def span(s: list) -> Span:
        return Span(files[s[0]], *s[1:])

    chains: list[tuple[Scope, ...]] = []
    for s in d["scopes"]:  # a parent comes before its children
        scope = Scope(s["name"], s["path"], s["kind"], s["block"], tuple((k, v) for k, v in s["args"]), s["call"],
                      span(s["span"]))
        chains.append((chains[s["parent"]] if s["parent"] is not None else ()) + (scope,))
    g = Graph(d["network"], d["file"], span(d["span"]), dict(d["params"]))
    g.inputs = [(x["name"], x["value"]) for x in d["inputs"]]
    g.outputs = [(x["name"], x["value"]) for x in d["outputs"]]
    g.training_outputs = {x["name"] for x in d["outputs"] if x.get("training")}
    for n in d["nodes"]:
        scope_chain = chains[n["scope"]] if n["scope"] is not None else ()
        fold = n.get("fold")
        node = Node(n["id"], n["op"], tuple(n["inputs"]), tuple(n["outputs"]), dict(n["attrs"]),
                    tuple(_untype(t) for t in n["types"]), span(n["span"]), scope_chain, n["name"], n["hint"],
                    FoldedNorm(fold["op"], fold["name"], dict(fold["attrs"])) if fold else None,
                    bool(n.get("in_place", False)))
        g.nodes.append(node)
        for v, t in zip(node.outputs, node.types):
            g.types[v] = t
    g.calls = {_call_of_key(k): BlockCall(tuple(c["inputs"]), tuple(c["outputs"]), tuple(c["names"]), c["hint"],
                                          tuple((n, v) for n, v in c.get("bound", ())))
               for k, c in d["calls"].items()}
    g.checkpointed = {_call_of_key(k) for k, c in d["calls"].items() if c.get("checkpoint")}
    g.blocks = {name: span(s) for name, s in d["blocks"].items()}
    return g


# libyaml's C parser when PyYAML was built with it (several times faster)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Strings written without quotes: names and dotted paths that YAML cannot read as anything else.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "nan", "inf"}


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):  # the compiler refuses them; written as YAML would
            return ".nan" if v != v else ("-.inf" if v < 0 else ".inf")
        text = repr(v)  # YAML 1.1 reads a float only with a dot, and an exponent only with a sign
        mantissa, e, exponent = text.partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        if e and exponent[0] not in "+-":
            exponent = "+" + exponent
        return mantissa + (f"e{exponent}" if e else "")
    if isinstance(v, str):
        if _PLAIN.match(v) and v.lower() not in _YAML_WORDS:
            return v
        # JSON's escapes are YAML's double-quoted ones; ensure_ascii also escapes control characters and the
        # lone surrogates a file name that is not UTF-8 decodes to (PyYAML's loader reads "\udcxx" back)
        return json.dumps(v, ensure_ascii=True)
    raise TypeError(f"no YAML form for {type(v).__name__}")


def _flow(v: Any) -> str:
    """``v`` on one line: YAML flow style."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {_flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_flow(x) for x in v) + "]"
    return _scalar(v)


def dump_yaml(g: Graph) -> str:
    """The graph as YAML (``dlc ir``): a key per line at the top, one line per scope, node and call.

    Written directly rather than through PyYAML's representer, which took a quarter of a millisecond per node
    (13 s for a network of 48,000 layers); names and paths with control characters come out escaped.
    """
    out: list[str] = []
    for key, value in to_dict(g).items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out.append(f"{key}:")
            out.extend(f"- {_flow(item)}" for item in value)
        elif isinstance(value, dict) and key in ("calls", "blocks") and value:
            out.append(f"{key}:")
            out.extend(f"  {_scalar(k)}: {_flow(item)}" for k, item in value.items())
        else:
            out.append(f"{key}: {_flow(value)}")
    return "\n".join(out) + "\n"


def load_yaml(text: str) -> Graph:
    """The graph of a :func:`dump_yaml` text."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:  # libyaml refuses the "\uDCxx" escapes dump_yaml may write; PyYAML's parser reads them
        data = yaml.load(text, Loader=yaml.SafeLoader)
    return from_dict(data)
