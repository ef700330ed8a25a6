"""``dlc diff``: what changes between two specs, or two parameter settings of one.

Layers are matched by module path (the names their parameters have in the state_dict); for each, the op, its
attributes, its output shape and its parameter count are compared. Network inputs and outputs are matched by
name. Ops without a module of their own (``relu``, ``x + y``) have no name to match by: they are compared only
through the shapes of the layers around them, and counted. External layers' parameters are counted only by
their class, which needs torch; this command does not import it, so they count as unknown.

Exit status, as ``diff``'s: 0 the networks are the same, 1 they differ, 2 trouble (a spec with a mistake prints
its diagnostic; a bad command line prints the usage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dlc.compiler.ir import Graph, format_value
from dlc.compiler.ops.registry import op_of
from dlc.compiler.passes import count_params
from dlc.compiler.types import batched_str
from dlc.diagnostics import DlcError, display, render
from dlc.pipeline import build_graph


@dataclass(frozen=True)
class Entry:
    """One layer (or network input or output) as the diff sees it."""

    kind: str  # "layer", "input" or "output"
    name: str  # the module path, or the input's or output's name
    op: str
    attrs: dict[str, str]
    shape: str
    params: int | None

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON object."""
        return {"kind": self.kind, "name": self.name, "op": self.op, "attrs": self.attrs, "shape": self.shape,
                "params": self.params}


@dataclass(frozen=True)
class Side:
    """One of the two networks compared."""

    file: str
    graph: Graph
    entries: dict[tuple[str, str], Entry]
    total: int
    unnamed: int  # ops without a module path

    def title(self) -> str:
        """``file (Network, param=value, ...)``."""
        params = ", ".join(f"{k}={format_value(v)}" for k, v in self.graph.params.items())
        return f"{display(self.file)} ({self.graph.name}{', ' + params if params else ''})"


def side(path: str, overrides: dict[str, Any], network: str | None) -> Side:
    """Compile ``path`` with ``overrides`` and index its layers, inputs and outputs."""
    g = build_graph(Path(path), overrides, network)
    params = dict(count_params(g))
    entries: dict[tuple[str, str], Entry] = {}
    unnamed = 0
    for node in g.nodes:
        shape = ", ".join(batched_str(t) for t in node.types)
        attrs = {k: format_value(v) for k, v in node.attrs.items()}
        if op_of(node.op).declared and node.module_path is None:  # a network input, by its declared name
            name = str(node.attrs["name"])
            entries[("input", name)] = Entry("input", name, node.op, {}, shape, 0)
        elif node.module_path is None:
            unnamed += 1
        elif ("layer", node.module_path) not in entries:  # a shared layer: its first use
            module = node.module_path
            entries[("layer", module)] = Entry("layer", module, node.op, attrs, shape, params.get(module, 0))
    for name, value in g.outputs:
        entries[("output", name)] = Entry("output", name, "output", {}, batched_str(g.types[value]), 0)
    return Side(path, g, entries, sum(n for n in params.values() if n is not None), unnamed)


def compare(a: Side, b: Side) -> dict[str, Any]:
    """The differences as a JSON-ready mapping: ``added``, ``removed``, ``changed`` (each field before and
    after; attributes one by one), and both sides' totals."""
    added = [e.as_json() for key, e in b.entries.items() if key not in a.entries]
    removed = [e.as_json() for key, e in a.entries.items() if key not in b.entries]
    changed = []
    for key, old in a.entries.items():
        new = b.entries.get(key)
        if new is None or new == old:
            continue
        fields: dict[str, Any] = {f: [getattr(old, f), getattr(new, f)] for f in ("op", "shape", "params")
                                  if getattr(old, f) != getattr(new, f)}
        attrs = {k: [old.attrs.get(k), new.attrs.get(k)] for k in {**old.attrs, **new.attrs}
                 if old.attrs.get(k) != new.attrs.get(k)}
        if attrs:
            fields["attrs"] = attrs
        changed.append({"kind": old.kind, "name": old.name, "op": new.op, "changes": fields})
    same = not (added or removed or changed) and a.unnamed == b.unnamed
    return {"same": same, "a": _summary(a), "b": _summary(b), "added": added, "removed": removed,
            "changed": changed, "unchanged": sum(1 for k, e in a.entries.items() if b.entries.get(k) == e)}


def _summary(s: Side) -> dict[str, Any]:
    return {"file": s.file, "network": s.graph.name, "params": dict(s.graph.params), "total_params": s.total,
            "layers": sum(1 for kind, _ in s.entries if kind == "layer"), "unnamed_ops": s.unnamed}


def as_text(d: dict[str, Any], a: Side, b: Side) -> str:
    """The differences for a reader: one line per layer added (+), removed (-) or changed (~), then totals."""
    lines = [f"--- {a.title()}", f"+++ {b.title()}"]
    for sign, entries in (("-", d["removed"]), ("+", d["added"])):
        for e in entries:
            attrs = ", ".join(f"{k}={v}" for k, v in e["attrs"].items())
            params = "" if e["kind"] != "layer" else f"  {_count(e['params'])} params"
            op = f"{e['op']}({attrs})" if e["kind"] == "layer" else e["op"]
            lines.append(f"{sign} {_label(e)}  {op}  {e['shape']}{params}")
    for c in d["changed"]:
        parts = [f"{k}: {v[0]} -> {v[1]}" for k, v in c["changes"].get("attrs", {}).items()]
        for f in ("op", "shape", "params"):
            if f in c["changes"]:
                old, new = c["changes"][f]
                parts.append(f"{f} {_count(old)} -> {_count(new)}" if f == "params" else f"{f} {old} -> {new}")
        lines.append(f"~ {_label(c)}  {c['op']}: " + "; ".join(parts))
    ta, tb = d["a"]["total_params"], d["b"]["total_params"]
    lines.append(f"parameters: {ta:,} -> {tb:,} ({tb - ta:+,})" if ta != tb else f"parameters: {ta:,} (same)")
    lines.append(f"layers, inputs and outputs: {len(d['added'])} added, {len(d['removed'])} removed, "
                 f"{len(d['changed'])} changed, {d['unchanged']} unchanged")
    if d["a"]["unnamed_ops"] != d["b"]["unnamed_ops"]:
        lines.append(f"unnamed ops (relu, +, ...): {d['a']['unnamed_ops']} -> {d['b']['unnamed_ops']}")
    if d["same"]:
        lines.append("the networks are the same")
    return "\n".join(lines) + "\n"


def _label(e: dict[str, Any]) -> str:
    return e["name"] if e["kind"] == "layer" else f"{e['kind']} {e['name']}"


def _count(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def diff_command(a: str, b: str, overrides: tuple[dict[str, Any], dict[str, Any]], network: str | None, fmt: str,
                 out: Callable[[str], None], report: Callable[[str], None]) -> int:
    """``dlc diff``: print the differences of spec ``a`` and spec ``b`` (each with its overrides) as ``fmt``
    ("text" or "json"); returns 0 if the networks are the same, 1 if they differ, 2 if a spec has a mistake."""
    try:
        sa = side(a, overrides[0], network)
        sb = side(b, overrides[1], network)
    except DlcError as err:
        report(render(err))
        return 2
    d = compare(sa, sb)
    out(json.dumps(d, indent=2, default=str) + "\n" if fmt == "json" else as_text(d, sa, sb))
    return 0 if d["same"] else 1
