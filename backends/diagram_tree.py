"""The block hierarchy a diagram draws, and which of its parts roll up.

A :class:`Cluster` is one block instance or labelled group; the root stands for the network. A *run* is two or
more consecutive sibling instances of one block with the same arguments, the same ops and the same tensor shapes,
each fed by the one before it (a ``Block * N`` repeat, a label pattern ``layer_{i}: Block * N``, or instances
written out one after another). Rolled, a run is drawn once and marked ``×N``: its first instance stands for the
others, whose nodes are *aliases* of the first's, and the edges between its instances are not drawn (they would
point back from the instance's end to its start and read like recurrence).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dlc.compiler.ir import Graph, Node, Scope

# Graphs with more drawn nodes than this collapse deeper blocks unless told otherwise.
AUTO_LIMIT = 150


@dataclass(eq=False)
class Cluster:
    """A block instance or labelled group being drawn."""

    scope: Scope | None
    depth: int
    items: list = field(default_factory=list)  # Node | Cluster, in order
    nodes: list[Node] = field(default_factory=list)  # every node inside, at any depth
    run: list[Cluster] = field(default_factory=list)  # the first of a run: every instance of it, this one first
    hidden: bool = False  # a later instance of a run, drawn as the first when rolled
    rolled: int = 0  # > 1 once drawn: a repeat drawn once, ×rolled


def tree(g: Graph) -> Cluster:
    """The clusters of ``g``, with its runs found (see the module docstring)."""
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
    _find_runs(root, g, g.users())
    return root


def _find_runs(c: Cluster, g: Graph, users: dict[int, list[Node]]) -> None:
    items = c.items
    i = 0
    while i < len(items):
        j = i + 1
        while j < len(items) and _follows(items[j - 1], items[j], items[i], g, users):
            j += 1
        if j - i >= 2:
            items[i].run = items[i:j]
            for later in items[i + 1:j]:
                later.hidden = True
        i = j
    for item in items:
        if isinstance(item, Cluster):
            _find_runs(item, g, users)


def _follows(prev: Node | Cluster, item: Node | Cluster, first: Node | Cluster, g: Graph,
             users: dict[int, list[Node]]) -> bool:
    """Whether ``item`` continues the run that ``prev`` ends (and ``first`` begins): the same block, arguments,
    ops and shapes, fed by ``prev``, taking nothing else that ``first`` does not take, while nothing outside
    ``prev`` and ``item`` reads what ``prev`` computes (a tap from inside a run could not be drawn rolled)."""
    if not (isinstance(prev, Cluster) and isinstance(item, Cluster) and isinstance(first, Cluster)):
        return False
    a, b = prev.scope, item.scope
    if a.kind != "block" or b.kind != "block" or a.call or b.call or (a.block, a.args) != (b.block, b.args):
        return False
    if [n.op for n in prev.nodes] != [n.op for n in item.nodes] or _types(prev, g) != _types(item, g):
        return False
    mine, theirs, head = g.call_of(b), g.call_of(a), g.call_of(first.scope)
    if len(mine.inputs) != len(head.inputs) or not set(mine.inputs) & set(theirs.outputs):
        return False
    if any(v not in theirs.outputs and v != h for v, h in zip(mine.inputs, head.inputs)):
        return False
    inside = {n.id for n in prev.nodes} | {n.id for n in item.nodes}
    return all(u.id in inside for n in prev.nodes for v in n.outputs for u in users.get(v, ()))


def _types(c: Cluster, g: Graph) -> list:
    """The types of what an instance receives and computes: two instances alike have the same."""
    return [g.types[v] for v in g.call_of(c.scope).inputs] + [g.types[v] for n in c.nodes for v in n.outputs]


def whole_repeat(c: Cluster) -> bool:
    """A labelled group that is one run (``Block * N``): rolled, the group is the one marked ``×N``."""
    first = c.items[0] if c.items else None
    return c.scope is not None and c.scope.kind == "seq" and isinstance(first, Cluster) \
        and len(first.run) == len(c.items)


def count(c: Cluster, depth: int | None, roll: bool) -> int:
    """Drawn nodes of a cluster under the given settings."""
    total = 0
    for item in c.items:
        if isinstance(item, Node):
            total += 1
        elif roll and item.hidden:
            continue
        elif depth is not None and item.depth > depth:
            total += 1
        else:
            total += count(item, depth, roll)
    return total


def _max_depth(c: Cluster) -> int:
    return max([c.depth] + [_max_depth(i) for i in c.items if isinstance(i, Cluster)])


def choose_view(g: Graph, depth: int | None, roll: bool = True) -> tuple[int | None, bool]:
    """The depth and rolling to draw with: as asked, or (depth not asked) whatever keeps the picture readable."""
    return view(tree(g), depth, roll)


def view(root: Cluster, depth: int | None, roll: bool | None) -> tuple[int | None, bool]:
    """See :func:`choose_view`; ``roll=None`` is the default, rolling."""
    roll = True if roll is None else roll
    if depth is None and count(root, None, roll) > AUTO_LIMIT:
        depth = next((d for d in range(_max_depth(root), -1, -1) if count(root, d, roll) <= AUTO_LIMIT), 0)
    return depth, roll
