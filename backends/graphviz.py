"""IR -> Graphviz DOT, and rendering through the ``dot`` program.

One node per IR node, one cluster per block instance or labelled group, edges
labelled with tensor shapes. The DOT text is built directly (not through the
graphviz package's builder) so output is deterministic and escaping is ours.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dlc.compiler.ir import Graph, Node, Scope
from dlc.compiler.ops.registry import get
from dlc.compiler.passes import count_params
from dlc.compiler.types import TensorType

FAMILY_COLOURS = {
    "conv": "#dbe9f6", "linear": "#dbe9f6", "pool": "#e6f2e1", "norm": "#fdf1d8", "activation": "#fbe3e1",
    "merge": "#eadff2", "shape": "#eeeeee", "recurrent": "#d9f0ee", "attention": "#d9f0ee",
    "embedding": "#f6e8d8", "regularization": "#f0f0f0", "arith": "#eadff2", "wrapper": "#e0e0f0",
}


def escape(text: str) -> str:
    """Escape text for a double-quoted DOT string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _shape(t) -> str:
    if isinstance(t, TensorType):
        return "[" + ", ".join(str(d) for d in t.shape) + "]"
    return str(t)


def _label(node: Node, params: dict[str, int]) -> str:
    if node.op == "input":
        return f"input {node.attrs['name']}"
    parts = [node.name + ": " + node.op if node.name and not node.name.isdigit() else node.op]
    path = node.module_path
    if path and params.get(path):
        parts.append(f"{params[path]:,} params")
    return "\n".join(parts)


def to_dot(g: Graph) -> str:
    params = count_params(g)
    lines = [f'digraph "{escape(g.name)}" {{', "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8];']
    outputs = {v: n for n, v in g.outputs}

    def node_stmt(node: Node, indent: str) -> str:
        op = get(node.op)
        colour = FAMILY_COLOURS.get(op.family, "#ffffff") if op else "#ffffff"
        shape = ', shape=oval' if node.op == "input" else ""
        return f'{indent}n{node.id} [label="{escape(_label(node, params))}", fillcolor="{colour}"{shape}];'

    # nest clusters by scope
    def emit(nodes: list[Node], depth: int, indent: str) -> None:
        i = 0
        while i < len(nodes):
            node = nodes[i]
            if len(node.scope) <= depth:
                lines.append(node_stmt(node, indent))
                i += 1
                continue
            scope: Scope = node.scope[depth]
            j = i
            while j < len(nodes) and len(nodes[j].scope) > depth and nodes[j].scope[depth] == scope:
                j += 1
            title = f"{scope.path} ({scope.block})" if scope.block else scope.path
            lines.append(f'{indent}subgraph "cluster_{escape(scope.path)}#{scope.call}" {{')
            lines.append(f'{indent}  label="{escape(title)}"; style="rounded"; color="#888888"; fontname="Helvetica";')
            emit(nodes[i:j], depth + 1, indent + "  ")
            lines.append(f"{indent}}}")
            i = j

    emit(g.nodes, 0, "  ")
    producer = g.producer()
    for node in g.nodes:
        for v in node.inputs:
            src = producer[v]
            lines.append(f'  n{src.id} -> n{node.id} [label="{escape(_shape(g.types[v]))}"];')
    for v, name in outputs.items():
        src = producer[v]
        lines.append(f'  out_{escape(name)} [label="output {escape(name)}\\n{escape(_shape(g.types[v]))}", '
                     f'shape=oval, style=filled, fillcolor="#ffffff"];')
        lines.append(f"  n{src.id} -> out_{escape(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_file(g: Graph, out: Path) -> str | None:
    """Write ``out`` (.dot, .svg, .png or .pdf); returns a message for the user, if any."""
    dot_text = to_dot(g)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lower().lstrip(".")
    if fmt == "dot":
        out.write_text(dot_text, encoding="utf-8")
        return None
    exe = shutil.which("dot")
    if exe is None:
        fallback = out.with_suffix(".dot")
        fallback.write_text(dot_text, encoding="utf-8")
        return (f"Graphviz's `dot` program is not installed, so {out.name} was not drawn; wrote {fallback} instead. "
                f"Install it (Debian/Ubuntu: `apt-get install graphviz`, macOS: `brew install graphviz`) and rerun.")
    result = subprocess.run([exe, f"-T{fmt}", "-o", str(out)], input=dot_text.encode("utf-8"),
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dot failed: {result.stderr.decode(errors='replace')}")
    return None
