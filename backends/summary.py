"""``dlc summary``: a table of layers, output shapes and parameter counts (like Keras' ``summary``)."""

from __future__ import annotations

from dlc.compiler.ir import Graph, format_value
from dlc.compiler.passes import count_params
from dlc.compiler.types import batched_str


def summarize(g: Graph) -> str:
    """Every node with its module path, op, output shape(s) and parameters (shared ones counted once)."""
    params = count_params(g)
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for node in g.nodes:
        path = node.module_path
        if node.op == "input":
            name = node.attrs["name"]
            op = "input"
        else:
            name = path or (node.scope_path + "." if node.scope_path else "") + f"({node.op})"
            op = node.op
            if node.op in ("bidirectional", "timedistributed"):
                op = f"{node.op}({node.attrs['layer']['op']})"
        shapes = ", ".join(batched_str(t) for t in node.types)
        if path is not None and path in seen:
            count = "shared"
        elif path is not None:
            seen.add(path)
            count = f"{params.get(path, 0):,}"
        else:
            count = "0"
        rows.append((name, op, shapes, count))
    header = ("layer", "op", "output shape", "params")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]

    def fmt(r: tuple[str, ...]) -> str:
        return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"

    rule = "-" * len(fmt(header))
    total = sum(params.values())
    title = f"{g.name}" + (f" ({format_value(g.params)[1:-1]})" if g.params else "")
    lines = [title, rule, fmt(header), rule] + [fmt(r) for r in rows] + [rule]
    lines.append(f"total parameters: {total:,}")
    lines.append("inputs:  " + ", ".join(f"{n} {batched_str(g.types[v])}" for n, v in g.inputs))
    lines.append("outputs: " + ", ".join(f"{n} {batched_str(g.types[v])}" for n, v in g.outputs))
    return "\n".join(lines) + "\n"
