"""IR -> Graphviz DOT, and rendering through the ``dot`` program.

The drawing follows the IR's block hierarchy: one cluster per block instance or labelled group,
labelled ``name: Block(args)`` and nested as deep as the spec nests. Nodes show the op with its key
attributes and its parameter count; edges carry tensor shapes (symbolic dimensions by name);
inputs and outputs have shapes of their own. Below ``depth`` a block instance collapses into one
node with its input and output shapes and total parameters; ``roll`` draws a repeat once, marked
``×N``. Merges are nodes labelled with their kind, a bidirectional layer is drawn as its two
directions joining at its merge, shared instances are marked and linked by a dashed line (their
parameters counted once), and fusion groups are shaded. The DOT text is built directly, so it is
deterministic and every label is escaped here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from dlc.compiler.fusion import fusion_plan
from dlc.compiler.ir import Graph, Node, Scope, format_value
from dlc.compiler.ops.registry import op_of
from dlc.compiler.passes import count_params, tied_to
from dlc.compiler.types import TensorType
from dlc.diagnostics import display
from dlc.files import create_new, replacing, write_output
from dlc.limits import limit

FAMILY_COLOURS = {
    "conv": "#cfe2f3", "linear": "#c9daf8", "pool": "#d9ead3", "norm": "#fff2cc", "activation": "#f4cccc",
    "merge": "#d9d2e9", "shape": "#eeeeee", "recurrent": "#d0e0e3", "attention": "#b4dcd6",
    "embedding": "#fce5cd", "regularization": "#f3f3f3", "arith": "#e6def0", "wrapper": "#e0e0f0",
    "block": "#ffffff", "io": "#ffffff",
    "param": "#e8f4e0", "external": "#f6e3d3", "index": "#eeeeee", "reduce": "#e6def0", "compare": "#ead1dc",
    "random": "#fdf3e7", "fill": "#f3f3f3", "position": "#fce5cd",
}
FUSION_FILL = "#fff4c2"
# Graphs with more drawn nodes than this collapse deeper blocks (and roll repeats) unless told otherwise.
AUTO_LIMIT = 150


def escape(text: str) -> str:
    """Escape text for a double-quoted DOT string (any name renders, none can end the string)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")


def _shape(t) -> str:
    if isinstance(t, TensorType):
        return "[" + ", ".join(str(d) for d in t.shape) + "]"
    return str(t)


def describe(node: Node) -> str:
    """The op with its key attributes: ``conv2d 3×3 /2, 128`` (the op's diagram label)."""
    return op_of(node.op).describe(node.attrs)


@dataclass
class Cluster:
    """A block instance or labelled group being drawn."""

    scope: Scope | None
    depth: int
    items: list = field(default_factory=list)  # Node | Cluster, in order
    nodes: list[Node] = field(default_factory=list)  # every node inside, at any depth
    rolled: int = 0  # > 1: a repeat drawn once, ×rolled


def _tree(g: Graph) -> Cluster:
    root = Cluster(None, 0)
    index: dict[tuple, Cluster] = {}
    for node in g.nodes:
        parent = root
        root.nodes.append(node)
        for depth, scope in enumerate(node.scope, start=1):
            key = tuple((s.path, s.call) for s in node.scope[:depth])
            child = index.get(key)
            if child is None:
                child = index[key] = Cluster(scope, depth)
                parent.items.append(child)
            child.nodes.append(node)
            parent = child
        parent.items.append(node)
    return root


def _repeat(c: Cluster) -> bool:
    """A labelled group of two or more instances of one block with the same arguments and the same ops
    (``Block(..) * N``); the same arguments may still build other ops (a shortcut only where the input's
    channels equal the output's), and rolling pairs the instances' nodes one to one."""
    kids = c.items
    return (c.scope is not None and c.scope.kind == "seq" and len(kids) >= 2 and all(isinstance(k, Cluster)
            and k.scope.kind == "block" and (k.scope.block, k.scope.args) == (kids[0].scope.block, kids[0].scope.args)
            and [n.op for n in k.nodes] == [n.op for n in kids[0].nodes] for k in kids))


def _count(c: Cluster, depth: int | None, roll: bool) -> int:
    """Drawn nodes of a cluster under the given settings."""
    total = 0
    items = c.items[:1] if roll and _repeat(c) else c.items
    for item in items:
        if isinstance(item, Node):
            total += 1
        elif depth is not None and item.depth > depth:
            total += 1
        else:
            total += _count(item, depth, roll)
    return total


def _max_depth(c: Cluster) -> int:
    return max([c.depth] + [_max_depth(i) for i in c.items if isinstance(i, Cluster)])


def choose_view(g: Graph, depth: int | None, roll: bool | None) -> tuple[int | None, bool]:
    """The depth and rolling to draw with: as asked, or (when not asked) whatever keeps the picture readable."""
    return _view(_tree(g), depth, roll)


def _view(root: Cluster, depth: int | None, roll: bool | None) -> tuple[int | None, bool]:
    if roll is None:
        roll = depth is None and _count(root, None, False) > AUTO_LIMIT
    if depth is None and _count(root, None, roll) > AUTO_LIMIT:
        depth = next((d for d in range(_max_depth(root), -1, -1) if _count(root, d, roll) <= AUTO_LIMIT), 0)
    return depth, roll


class Drawing:
    def __init__(self, g: Graph, depth: int | None = None, roll: bool | None = None, fusion: bool = True,
                 rankdir: str = "TB") -> None:
        self.g = g
        self.tree = _tree(g)
        self.depth, self.roll = _view(self.tree, depth, roll)
        self.fusion = fusion
        self.rankdir = rankdir
        self.params = count_params(g)
        self.producer = g.producer()
        self.rep: dict[int, str] = {}  # node id -> the DOT node that stands for it
        self.entry: dict[int, str] = {}  # node id -> where its incoming edges end, when not at rep
        self.alias: dict[int, int] = {}  # node of a rolled-up repeat -> its counterpart in the drawn instance
        self.lines: list[str] = []
        self.families: set[str] = set()
        self.seen_paths: dict[str, str] = {}  # module path -> the DOT node of its first use
        self.shared_links: list[tuple[str, str]] = []
        self.tied_links: list[tuple[str, str]] = []  # (module path of the tied layer, node sharing its weight)
        self.first_use: dict[str, str] = {}  # shared block instance path -> its first drawn node
        plan = fusion_plan(g) if fusion else None
        self.group_of = plan.group_of if plan else {}

    # ---- labels --------------------------------------------------------------------------------

    def _cluster_label(self, c: Cluster) -> str:
        s = c.scope
        assert s is not None
        name = s.name if not s.name.isdigit() else ".".join(s.path.split(".")[-2:])  # a repeat's child: group.k
        if s.kind == "block":
            args = ", ".join(f"{k}={format_value(v)}" for k, v in s.args)
            text = f"{name}: {s.block}({args})"
        else:
            text = name
        if c.rolled > 1:
            text += f"  ×{c.rolled}"
        if s.call > 0:
            text += "  (shared: another use)"
        return text

    def _params_text(self, node: Node) -> str:
        path = node.module_path
        tied = f"\nweight tied to {tied_to(node)}" if tied_to(node) is not None else ""
        if path is None or not self.params.get(path):
            return tied
        if path in self.seen_paths:
            return "\nshared"
        return f"\n{self.params[path]:,} params" + tied

    # ---- statements ---------------------------------------------------------------------------

    def _node(self, node: Node, indent: str) -> None:
        nid = f"n{node.id}"
        self.rep[node.id] = nid
        op = op_of(node.op)
        if op.draw == "input":
            t = self.g.types[node.outputs[0]]
            dtype = f" {t.dtype}" if isinstance(t, TensorType) and t.dtype != "float32" else ""
            label = f"{op.describe(node.attrs)}\n{_shape(t)}{dtype}"
            self.lines.append(f'{indent}{nid} [label="{escape(label)}", shape=invhouse, fillcolor="#ffffff"];')
            return
        self.families.add(op.family)
        colour = FAMILY_COLOURS.get(op.family, "#ffffff")
        if op.draw == "directions":
            self._bidirectional(node, indent, colour)
            return
        if op.draw == "merge":
            label = op.describe(node.attrs)
            self.lines.append(f'{indent}{nid} [label="{escape(label)}", shape=ellipse, fillcolor="{colour}"];')
            return
        title = describe(node)
        if node.name and not node.name.isdigit() and node.name != node.op:
            title = f"{node.name}: {title}"
        label = title + self._params_text(node)
        self.lines.append(f'{indent}{nid} [label="{escape(label)}", fillcolor="{colour}"];')
        self._note_shared(node, nid)
        if tied_to(node) is not None:
            self.tied_links.append((tied_to(node), nid))

    def _note_shared(self, node: Node, nid: str) -> None:
        path = node.module_path
        if path is None or not op_of(node.op).stateful:
            return
        if any(s.call > 0 for s in node.scope):
            self.seen_paths.setdefault(path, nid)
            return  # a use of a shared block instance: one link joins the two instances
        if path in self.seen_paths:
            self.shared_links.append((self.seen_paths[path], nid))
        else:
            self.seen_paths[path] = nid

    def _bidirectional(self, node: Node, indent: str, colour: str) -> None:
        """Two directions joining at the merge: a cluster of forward, backward and merge nodes.

        The op's label is its wrapped layer's; ``attrs["merge"]`` is how the directions join.
        """
        inner = describe(node)
        nid = f"n{node.id}"
        name = f"{node.name}: " if node.name and not node.name.isdigit() else ""
        label = f"{name}bidirectional" + self._params_text(node)
        self.lines.append(f'{indent}subgraph "cluster_bi{node.id}" {{')
        self.lines.append(f'{indent}  label="{escape(label)}"; style="rounded,filled"; fillcolor="#f4fafa"; '
                          f'color="#7fa9ad";')
        self.lines.append(f'{indent}  {nid}_in [label="", shape=point];')
        for d in ("forward", "backward"):
            self.lines.append(f'{indent}  {nid}_{d} [label="{escape(d + " " + inner)}", '
                              f'fillcolor="{colour}"];')
            self.lines.append(f'{indent}  {nid}_in -> {nid}_{d} [arrowhead=none];')
            self.lines.append(f'{indent}  {nid}_{d} -> {nid};')
        self.lines.append(f'{indent}  {nid} [label="{escape(node.attrs["merge"])}", shape=ellipse, '
                          f'fillcolor="{FAMILY_COLOURS["merge"]}"];')
        self.families.add("merge")
        self.lines.append(f"{indent}}}")
        self.rep[node.id] = nid
        self.entry[node.id] = f"{nid}_in"
        self._note_shared(node, nid)

    def _collapsed(self, c: Cluster, indent: str) -> None:
        """A block instance below the drawn depth: one node with its shapes and total parameters."""
        s = c.scope
        assert s is not None
        nid = f"c{c.nodes[0].id}"
        site = self.g.call_of(s)
        paths = {n.module_path for n in c.nodes if n.module_path}
        total = sum(self.params.get(p, 0) for p in paths if p not in self.seen_paths)
        io = " → ".join(", ".join(_shape(self.g.types[v]) for v in values) for values in (site.inputs, site.outputs))
        label = self._cluster_label(c) + f"\n{io}" + (f"\n{total:,} params" if total else "")
        kernels = {self.group_of[n.id].id for n in c.nodes if n.id in self.group_of}
        if kernels:  # its fusion groups are inside the box: say how many
            label += f"\n{len(kernels)} fused kernel" + ("s" if len(kernels) > 1 else "")
        shared = s.call > 0
        for p in paths:
            self.seen_paths.setdefault(p, nid)
        style = "rounded,filled,bold" + (",dashed" if shared else "")
        self.lines.append(f'{indent}{nid} [label="{escape(label)}", style="{style}", fillcolor="#ffffff"];')
        self.families.add("block")
        for n in c.nodes:
            self.rep[n.id] = nid
        self._link_instance(c)

    def _cluster(self, c: Cluster, indent: str) -> None:
        if self.depth is not None and c.depth > self.depth:
            self._collapsed(c, indent)
            return
        items = c.items
        if self.roll and _repeat(c):
            c.rolled = len(items)
            first: Cluster = items[0]
            for other in items[1:]:
                for mine, theirs in zip(first.nodes, other.nodes):
                    self.alias[theirs.id] = mine.id
            items = items[:1]
        self.lines.append(f'{indent}subgraph "cluster_{escape(c.scope.path)}#{c.scope.call}" {{')
        dashed = ",dashed" if c.scope.call > 0 else ""
        self.lines.append(f'{indent}  label="{escape(self._cluster_label(c))}"; style="rounded{dashed}"; '
                          f'color="#666666";')
        self._items(items, indent + "  ")
        self.lines.append(f"{indent}}}")
        self._link_instance(c)

    def _link_instance(self, c: Cluster) -> None:
        """A dashed line from the first use of a shared block instance to each later use."""
        s = c.scope
        assert s is not None
        here = self.rep.get(c.nodes[0].id)
        if s.call == 0:
            self.first_use.setdefault(s.path, here)
        elif s.path in self.first_use and here is not None:
            self.shared_links.append((self.first_use[s.path], here))

    def _items(self, items: list, indent: str) -> None:
        groups: dict[int, list[Node]] = {}
        for item in items:
            if isinstance(item, Node) and item.id in self.group_of:
                groups.setdefault(self.group_of[item.id].id, []).append(item)
        done: set[int] = set()
        for item in items:
            if isinstance(item, Cluster):
                self._cluster(item, indent)
            elif item.id in self.group_of:
                gid = self.group_of[item.id].id
                if gid in done:
                    continue
                done.add(gid)
                self.families.add("fused")
                self.lines.append(f'{indent}subgraph "cluster_fused{gid}" {{')
                self.lines.append(f'{indent}  label="kernel #{gid}"; style="filled,rounded"; '
                                  f'fillcolor="{FUSION_FILL}"; color="#e0c060"; fontsize=9;')
                for n in groups[gid]:
                    self._node(n, indent + "  ")
                self.lines.append(f"{indent}}}")
            else:
                self._node(item, indent)

    # ---- the whole picture -----------------------------------------------------------------------------

    def dot(self) -> str:
        g = self.g
        self.lines = [
            f'digraph "{escape(g.name)}" {{',
            f"  rankdir={self.rankdir};",
            '  graph [fontname="Helvetica", fontsize=11, labeljust=l, newrank=true];',
            '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
            '  edge [fontname="Helvetica", fontsize=8, color="#555555"];',
        ]
        self._items(self.tree.items, "  ")
        edges: set[tuple[str, str, str]] = set()
        ordered: list[tuple[str, str, str]] = []
        for node in g.nodes:
            dst_id = self.alias.get(node.id, node.id)
            for v in node.inputs:
                src_id = self.alias.get(self.producer[v].id, self.producer[v].id)
                src, dst = self.rep[src_id], self.rep[dst_id]
                dst = self.entry.get(dst_id, dst) if src != dst else dst
                if src == dst or (node.id in self.alias and self.producer[v].id in self.alias):
                    continue
                edge = (src, dst, _shape(g.types[v]))
                if edge not in edges:
                    edges.add(edge)
                    ordered.append(edge)
        for src, dst, label in ordered:
            self.lines.append(f'  {src} -> {dst} [label="{escape(label)}"];')
        for name, v in g.outputs:
            src = self.rep[self.alias.get(self.producer[v].id, self.producer[v].id)]
            out = f'"out:{escape(name)}"'
            what = f"output {name} (training only)" if name in g.training_outputs else f"output {name}"
            self.lines.append(f'  {out} [label="{escape(what)}\\n{escape(_shape(g.types[v]))}", '
                              f'shape=house, fillcolor="#ffffff"];')
            self.lines.append(f"  {src} -> {out};")
        for a, b in self.shared_links:
            self.lines.append(f'  {a} -> {b} [style=dashed, arrowhead=none, constraint=false, color="#999999", '
                              f'label="shared"];')
        for path, b in self.tied_links:
            if path in self.seen_paths:  # not drawn when collapsed into its block: the label says it anyway
                self.lines.append(f'  {self.seen_paths[path]} -> {b} [style=dashed, arrowhead=none, '
                                  f'constraint=false, color="#999999", label="tied weight"];')
        self._legend()
        self.lines.append("}")
        return "\n".join(self.lines) + "\n"

    def _legend(self) -> None:
        families = sorted(f for f in self.families if f in FAMILY_COLOURS)
        self.lines.append('  subgraph "cluster_legend" {')
        self.lines.append('    label="legend"; style="rounded"; color="#bbbbbb"; fontsize=9;')
        for f in families:
            style = "rounded,filled,bold" if f == "block" else "rounded,filled"
            label = "collapsed block" if f == "block" else f
            self.lines.append(f'    "legend:{f}" [label="{label}", fillcolor="{FAMILY_COLOURS[f]}", style="{style}", '
                              f'fontsize=8];')
        if "fused" in self.families:
            self.lines.append(f'    "legend:fused" [label="fused kernel", fillcolor="{FUSION_FILL}", fontsize=8];')
        self.lines.append("  }")


def to_dot(g: Graph, depth: int | None = None, roll: bool | None = None, fusion: bool = True,
           rankdir: str = "TB") -> str:
    """The DOT text of a diagram of ``g`` (see the module docstring for the options)."""
    return Drawing(g, depth, roll, fusion, rankdir).dot()


class DotFailed(Exception):
    """Graphviz's ``dot`` failed, crashed or ran out of time; the message says where the DOT text is."""


def render_file(g: Graph, out: Path, **options) -> str | None:
    """Write ``out`` (.dot, .svg, .png or .pdf); returns a message for the user, if any.

    Every file is written atomically (a temporary file renamed into place), so a failed or interrupted
    drawing leaves an existing ``out`` as it was. ``dot`` runs at most ``DOT_SECONDS`` (:mod:`dlc.limits`);
    when it fails, or is not installed, the DOT text is saved in a new file beside ``out`` (see
    :func:`_save_dot_text`) and :class:`DotFailed` (or the message) says where.
    """
    dot_text = to_dot(g, **options)
    fmt = out.suffix.lower().lstrip(".")
    if fmt == "dot":
        write_output(out, dot_text.encode("utf-8"))
        return None
    exe = shutil.which("dot")
    if exe is None:
        return (f"Graphviz's `dot` program is not installed, so {display(out.name)} was not drawn. "
                f"{_save_dot_text(out, dot_text)}. Install it (Debian/Ubuntu: `apt-get install graphviz`, macOS: "
                f"`brew install graphviz`) and rerun.")
    timeout = limit("DOT_SECONDS")  # read first: a bad value is an error before dot starts
    with replacing(out) as (_fd, tmp):
        problem = _run_dot(exe, fmt, tmp, dot_text, timeout)
        if problem is not None:
            raise DotFailed(f"Graphviz's dot could not draw {display(out.name)}: {problem}. "
                            f"{_save_dot_text(out, dot_text)}; a smaller drawing (--depth N, --roll) may work.")
    return None


def render_svg(g: Graph, **options) -> str:
    """The diagram of ``g`` as SVG text (for Jupyter), drawn by ``dot`` within ``DOT_SECONDS`` like
    :func:`render_file`; :class:`DotFailed` says why it could not be drawn."""
    dot_text = to_dot(g, **options)
    exe = shutil.which("dot")
    if exe is None:
        raise DotFailed("Graphviz's `dot` program is not installed, so the diagram was not drawn. Install it "
                        "(Debian/Ubuntu: `apt-get install graphviz`, macOS: `brew install graphviz`).")
    timeout = limit("DOT_SECONDS")
    with tempfile.TemporaryDirectory(prefix="dlc-svg-") as folder:
        target = Path(folder) / "diagram.svg"
        problem = _run_dot(exe, "svg", target, dot_text, timeout)
        if problem is not None:
            raise DotFailed(f"Graphviz's dot could not draw the diagram: {problem}; a smaller drawing "
                            "(depth=N, roll=True) may work.")
        return target.read_text(encoding="utf-8")


def _save_dot_text(out: Path, dot_text: str) -> str:
    """Save the DOT text of a drawing that was not drawn; returns a sentence saying where (or why not).

    The user did not name this file, so it must not replace one: it is ``out`` with the suffix ``.dot`` if no
    such file exists, else the first free ``NAME.dlc-N.dot``, created exclusively (never an existing file, so
    never an input of the command, and never through a symlink).
    """
    first = out.with_suffix(".dot")
    try:
        saved = create_new(_dot_names(out), dot_text.encode("utf-8"))
    except OSError as exc:
        return f"The DOT text could not be saved beside it ({display(exc.strerror or exc)})"
    if saved is None:
        return f"The DOT text was not saved: {display(first)} and its numbered variants exist"
    if saved != first:
        return f"The DOT text is in {display(saved)} ({display(first.name)} exists and is left as it was)"
    return f"The DOT text is in {display(saved)}"


def _dot_names(out: Path) -> Iterator[Path]:
    """``out.dot``, then ``out.dlc-1.dot`` ... ``out.dlc-99.dot``: where :func:`_save_dot_text` may save."""
    yield out.with_suffix(".dot")
    for n in range(1, 100):
        yield out.with_suffix(f".dlc-{n}.dot")


def _run_dot(exe: str, fmt: str, target: Path, dot_text: str, timeout: int) -> str | None:
    """Run ``dot`` writing ``target``, for at most ``timeout`` seconds; None when it succeeds, otherwise what
    went wrong."""
    # its own session, so that on a timeout the whole process group (dot and anything it started) is killed
    proc = subprocess.Popen([exe, f"-T{fmt}", "-o", str(target)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(dot_text.encode("utf-8"), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return f"it ran longer than {timeout} seconds and was stopped (raise the limit with DLC_DOT_SECONDS)"
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        what = f"it was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        what = f"it exited with status {proc.returncode}"
    lines = err.decode("utf-8", errors="replace").strip().splitlines()
    if lines:  # its last words, escaped and cut: a crash can print anything
        what += ": " + display(" / ".join(lines[-3:]), 300)
    return what


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
