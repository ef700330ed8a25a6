"""IR -> Graphviz DOT, and rendering through the ``dot`` program.

The drawing follows the IR's block hierarchy: one cluster per block instance or labelled group,
labelled ``name: Block(args)`` and nested as deep as the spec nests. Nodes show the op with its key
attributes and its parameter count; edges carry tensor shapes (symbolic dimensions by name);
inputs and outputs have shapes of their own. Below ``depth`` a block instance collapses into one
node with its input and output shapes and total parameters. Runs of identical block instances
(:mod:`dlc.backends.diagram_tree`) are drawn once, marked ``×N``, unless ``roll=False``. Merges are
nodes labelled with their kind, a bidirectional layer is drawn as its two directions joining at its
merge, shared instances are marked and linked by a dashed line (their parameters counted once), and
with ``fusion=True`` fusion groups are shaded. ``style`` picks the looks (:mod:`dlc.backends.diagram_style`),
``width`` (inches) scales the drawing to that width, and ``rankdir="LR"`` wraps a long network into rows
(:mod:`dlc.backends.diagram_wrap`). The DOT text is built directly, so it is deterministic and every label
is escaped here.
"""

from __future__ import annotations

from pathlib import Path

from dlc.backends.diagram_output import FORMATS, DotFailed, draw_file, draw_svg
from dlc.backends.diagram_style import FAMILY_COLOURS, FUSION_FILL, STYLES
from dlc.backends.diagram_wrap import rows
from dlc.backends.diagram_tree import AUTO_LIMIT, Cluster, choose_view, tree, view, whole_repeat
from dlc.compiler.fusion import fusion_plan
from dlc.compiler.ir import Graph, Node, format_value
from dlc.compiler.ops.registry import op_of
from dlc.compiler.passes import count_params, tied_to
from dlc.compiler.types import TensorType

__all__ = ["AUTO_LIMIT", "FAMILY_COLOURS", "FORMATS", "FUSION_FILL", "DotFailed", "choose_view", "render_file",
           "render_svg", "to_dot"]


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


class Drawing:
    """The DOT text of one diagram, built statement by statement (:func:`to_dot` for its options)."""

    def __init__(self, g: Graph, depth: int | None = None, roll: bool | None = True, fusion: bool = False,
                 rankdir: str = "TB", style: str = "default", shapes: bool = True,
                 width: float | None = None) -> None:
        self.g = g
        self.tree = tree(g)
        self.depth, self.roll = view(self.tree, depth, roll)
        self.fusion = fusion
        self.rankdir = rankdir
        self.style = STYLES[style]
        self.shapes = shapes
        self.width = width
        # node id -> {run (its first node's id): which instance of it the node is in}, for every run when rolled
        self.runs: dict[int, dict[int, int]] = {}
        self.inputs: set[str] = set()  # the DOT nodes of the network's inputs
        self.flow: list[tuple[str, str]] = []  # the edges drawn, for wrapping
        self.part_lines: list[int] = []  # where the statements of each top-level part begin in self.lines
        if self.roll:
            self._note_runs(self.tree)
        self.params = count_params(g)
        self.producer = g.producer()
        self.rep: dict[int, str] = {}  # node id -> the DOT node that stands for it
        self.entry: dict[int, str] = {}  # node id -> where its incoming edges end, when not at rep
        self.alias: dict[int, int] = {}  # node of a rolled-up instance -> its counterpart in the drawn one
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
        name = _instance_name(c)
        if c.rolled > 1 and c.run:  # a run inside a group or block: its first and last instance
            name += f" … {_instance_name(c.run[-1])}"
        if s.kind == "block":
            args = ", ".join(f"{k}={format_value(v)}" for k, v in s.args)
            text = f"{name}: {s.block}({args})" if self.style.details else f"{s.block}({args})"
        else:
            text = name
        if c.rolled > 1:
            text += f"  ×{c.rolled}"
        if s.call > 0:
            text += "  (shared: another use)"
        return text

    def _params_text(self, node: Node) -> str:
        path = node.module_path
        if not self.style.details:
            return ""
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
            label = f"{op.describe(node.attrs)}\n{_shape(t)}{dtype}" if self.shapes else op.describe(node.attrs)
            self.lines.append(f'{indent}{nid} [label="{escape(label)}", shape=invhouse, fillcolor="#ffffff"];')
            self.inputs.add(nid)
            return
        self.families.add(op.family)
        colour = self.style.colours.get(op.family, "#ffffff")
        if op.draw == "directions":
            self._bidirectional(node, indent, colour)
            return
        if op.draw == "merge":
            label = op.describe(node.attrs)
            self.lines.append(f'{indent}{nid} [label="{escape(label)}", shape=ellipse, fillcolor="{colour}"];')
            return
        title = describe(node)
        if self.style.details and node.name and not node.name.isdigit() and node.name != node.op:
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
        name = f"{node.name}: " if self.style.details and node.name and not node.name.isdigit() else ""
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
                          f'fillcolor="{self.style.colours["merge"]}"];')
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
        label = self._cluster_label(c) + (f"\n{io}" if self.shapes else "")
        label += f"\n{total:,} params" if total and self.style.details else ""
        kernels = {self.group_of[n.id].id for n in c.nodes if n.id in self.group_of}
        if kernels and self.style.details:  # its fusion groups are inside the box: say how many
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
        whole = self.roll and whole_repeat(c)
        if whole:
            c.rolled = len(c.items)
        self.lines.append(f'{indent}subgraph "cluster_{escape(c.scope.path)}#{c.scope.call}" {{')
        dashed = ",dashed" if c.scope.call > 0 else ""
        self.lines.append(f'{indent}  label="{escape(self._cluster_label(c))}"; style="rounded{dashed}"; '
                          f'color="{self.style.cluster}";')
        self._items(c.items, indent + "  ", whole)
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

    def _roll(self, first: Cluster, marked: bool) -> None:
        """Draw the run ``first`` begins as ``first``: the other instances' nodes alias its nodes, and every node
        of the run is noted as in it (edges between its instances are not drawn). ``marked``: ``first`` says
        ``×N`` (not when the group around it, a whole repeat, does)."""
        if marked:
            first.rolled = len(first.run)
        for other in first.run[1:]:
            for mine, theirs in zip(first.nodes, other.nodes):
                self.alias[theirs.id] = mine.id

    def _note_runs(self, c: Cluster) -> None:
        """Note which instance of which run each node is in (:attr:`runs`), hidden instances' runs included."""
        for item in c.items:
            if isinstance(item, Cluster):
                for k, instance in enumerate(item.run):
                    for n in instance.nodes:
                        self.runs.setdefault(n.id, {})[item.nodes[0].id] = k
                self._note_runs(item)

    def _across_instances(self, a: int, b: int) -> bool:
        """Whether nodes ``a`` and ``b`` are in different instances of one run: rolled, that edge is not drawn."""
        mine, theirs = self.runs.get(a, {}), self.runs.get(b, {})
        return any(theirs.get(run, k) != k for run, k in mine.items())

    def _drawn(self, node_id: int) -> int:
        """The node drawn for ``node_id``: itself, or its counterpart in the first instance of its runs."""
        while node_id in self.alias:
            node_id = self.alias[node_id]
        return node_id

    def _items(self, items: list, indent: str, whole: bool = False) -> None:
        """Draw ``items``; ``whole``: they are one rolled run, marked on the group around them."""
        if self.roll:
            items = [i for i in items if not (isinstance(i, Cluster) and i.hidden)]
            for item in items:
                if isinstance(item, Cluster) and item.run:
                    self._roll(item, not whole)
        groups: dict[int, list[Node]] = {}
        for item in items:
            if isinstance(item, Node) and item.id in self.group_of:
                groups.setdefault(self.group_of[item.id].id, []).append(item)
        done: set[int] = set()
        for item in items:
            if indent == "  ":  # the network's own items: where each starts, for wrapping into rows
                self.part_lines.append(len(self.lines))
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
                                  f'fillcolor="{self.style.fusion_fill}"; color="#e0c060"; fontsize=9;')
                for n in groups[gid]:
                    self._node(n, indent + "  ")
                self.lines.append(f"{indent}}}")
            else:
                self._node(item, indent)

    # ---- the whole picture -----------------------------------------------------------------------------

    def dot(self) -> str:
        """The whole DOT text."""
        g, font = self.g, self.style.font
        # a width in inches: scaled up or down to exactly that width (dot's `size` with `!`), height following
        size = f', size="{self.width:g},10000!"' if self.width is not None else ""
        self.lines = [
            f'digraph "{escape(g.name)}" {{',
            f"  rankdir={self.rankdir};",
            f'  graph [fontname="{font}", fontsize=11, labeljust=l, newrank=true{size}];',
            f'  node [shape=box, style="rounded,filled", fontname="{font}", fontsize=10];',
            f'  edge [fontname="{font}", fontsize=8, color="{self.style.edge}"];',
        ]
        self._items(self.tree.items, "  ")
        self.parts_end = len(self.lines)
        edges: set[tuple[str, str, str]] = set()
        ordered: list[tuple[str, str, str]] = []
        for node in g.nodes:
            dst_id = self._drawn(node.id)
            for v in node.inputs:
                src_id = self._drawn(self.producer[v].id)
                src, dst = self.rep[src_id], self.rep[dst_id]
                dst = self.entry.get(dst_id, dst) if src != dst else dst
                if src == dst or self._across_instances(self.producer[v].id, node.id):
                    continue
                edge = (src, dst, _shape(g.types[v]))
                if edge not in edges:
                    edges.add(edge)
                    ordered.append(edge)
        self.flow = flow = [(src, dst) for src, dst, _ in ordered]
        outputs = [(self.rep[self._drawn(self.producer[v].id)], f'"out:{escape(name)}"') for name, v in g.outputs]
        row_of = rows(self._parts(), flow + outputs) if self.rankdir == "LR" else {}
        for part in self._parts() if row_of else ():  # an input goes in the row of its first reader
            if all(name in self.inputs for name in part):
                readers = [row_of.get(dst, 0) for src, dst in flow if src in part]
                row_of.update(dict.fromkeys(part, min(readers, default=0)))
        for src, dst, label in ordered:
            attrs = [f'label="{escape(label)}"'] if self.shapes else []
            if row_of.get(src, 0) != row_of.get(dst, 0):
                attrs.append("constraint=false")  # from one row to the next: it does not stretch the row
            self.lines.append(f"  {src} -> {dst} [{', '.join(attrs)}];" if attrs else f"  {src} -> {dst};")
        if row_of:
            self._row_clusters(row_of)
        for (src, out), (name, v) in zip(outputs, g.outputs):
            what = f"output {name} (training only)" if name in g.training_outputs else f"output {name}"
            shape = f"\\n{escape(_shape(g.types[v]))}" if self.shapes else ""
            self.lines.append(f'  {out} [label="{escape(what)}{shape}", shape=house, fillcolor="#ffffff"];')
            self.lines.append(f"  {src} -> {out};")
        for a, b in self.shared_links:
            self.lines.append(f'  {a} -> {b} [style=dashed, arrowhead=none, constraint=false, color="#999999", '
                              f'label="shared"];')
        for path, b in self.tied_links:
            if path in self.seen_paths:  # not drawn when collapsed into its block: the label says it anyway
                self.lines.append(f'  {self.seen_paths[path]} -> {b} [style=dashed, arrowhead=none, '
                                  f'constraint=false, color="#999999", label="tied weight"];')
        if self.style.legend:
            self._legend()
        self.lines.append("}")
        return "\n".join(self.lines) + "\n"

    def _parts(self) -> list[list[str]]:
        """The DOT nodes of each top-level part drawn (an input, a layer, a block instance), in order."""
        parts = []
        for item in self.tree.items:
            if isinstance(item, Cluster) and self.roll and item.hidden:
                continue
            nodes = item.nodes if isinstance(item, Cluster) else [item]
            drawn = [self.entry.get(n.id, self.rep[self._drawn(n.id)]) for n in nodes]
            drawn += [self.rep[self._drawn(n.id)] for n in nodes]
            parts.append(list(dict.fromkeys(drawn)))  # in the order drawn, the first node first
        return parts

    def _row_clusters(self, row_of: dict[str, int]) -> None:
        """Put each row of a wrapped diagram in an invisible cluster (dot never overlaps clusters).

        The rows are written in order and their first nodes put in one rank: the rows start at the left, one
        under the other (where a side branch pulls a row up, as the auxiliary head of Inception v3
        do, dot may stack two rows the other way round).
        """
        parts = self._parts()
        row = [row_of.get(part[0], 0) for part in parts]
        bounds = self.part_lines + [self.parts_end]
        blocks = [self.lines[bounds[k]:bounds[k + 1]] for k in range(len(parts))]
        body: list[str] = []
        firsts = []
        for r in sorted(set(row)):
            body.append(f'  subgraph "cluster_row{r}" {{ style=invis; label="";')
            mine = [k for k in range(len(parts)) if row[k] == r]
            body += [line for k in mine for line in blocks[k]]
            body.append("  }")
            firsts.append(parts[mine[0]][0])
        self.lines[bounds[0]:bounds[-1]] = body
        self.lines.append(f"  {{rank=same; {'; '.join(firsts)};}}")

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


def _instance_name(c: Cluster) -> str:
    """A cluster's name as drawn: a repeat's numbered child by its last two path parts (``layer1.0``)."""
    name = c.scope.name
    return name if not name.isdigit() else ".".join(c.scope.path.split(".")[-2:])


def to_dot(g: Graph, depth: int | None = None, roll: bool | None = True, fusion: bool = False,
           rankdir: str = "TB", style: str = "default", shapes: bool = True, width: float | None = None) -> str:
    """The DOT text of a diagram of ``g``: blocks nested deeper than ``depth`` collapsed (None: all drawn, or what
    keeps a large network readable), runs of identical instances rolled (``roll``), fusion groups shaded
    (``fusion``), ``rankdir`` "TB" or "LR", ``style`` "default" or "paper", tensor shapes on edges (``shapes``),
    scaled to ``width`` inches."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    if rankdir not in ("TB", "LR"):
        raise ValueError(f"rankdir must be TB or LR, not {rankdir!r}")
    return Drawing(g, depth, roll, fusion, rankdir, style, shapes, width).dot()


def render_file(g: Graph, out: Path, **options) -> str | None:
    """Draw ``g`` (options of :func:`to_dot`) into ``out``, one of :data:`FORMATS` by its suffix; returns a message
    for the user, if any (:func:`dlc.backends.diagram_output.draw_file`)."""
    return draw_file(to_dot(g, **options), out, options.get("width"))


def render_svg(g: Graph, **options) -> str:
    """The diagram of ``g`` (options of :func:`to_dot`) as SVG text, drawn within ``DOT_SECONDS``."""
    return draw_svg(to_dot(g, **options))
