"""Why fusible ops stay in separate kernels: the reasons the fusion plan records, and the unfused chains.

:func:`~dlc.compiler.fusion.group_fusions` decides, for each group, where it ends; each decision that keeps the
next op out is a :class:`Refusal`, recorded in the plan on the producer -> consumer link it refused (or on a node
that opens no group at all). :func:`unfused_chains` reads those records back: every link between two fusible
ops (an anchor, elementwise or row op feeding an elementwise or row op) that no group holds is part of exactly
one unfused chain, which carries the plan's own reason. A convolution or linear layer is no link's consumer:
it opens its group (kernels take in an epilogue, never a prologue), so the op before it always ends another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dlc.compiler.ir import Graph, Node
from dlc.compiler.ops.registry import op_of

if TYPE_CHECKING:
    from dlc.compiler.fusion import FusionPlan

# fusion kinds whose ops chain into one kernel; recurrent layers and attention are kernels of their own
CHAINING = ("anchor", "elementwise", "row")
JOINING = ("elementwise", "row")  # the kinds that can join a group after its first op


@dataclass(frozen=True)
class Refusal:
    """One decision of the fusion plan that keeps an op out of a group: ``rule`` names the rule (stable, for
    tests and tables), ``text`` says what it found in this graph."""

    rule: str
    text: str


@dataclass
class UnfusedChain:
    """Fusible ops linked producer -> consumer that run in different kernels (or none), for one reason."""

    nodes: list[int]
    reason: Refusal | None  # None would be a link the plan refused without saying why: a bug (tests check)
    readers: list[int] = field(default_factory=list)  # more consumers of nodes[0], kept out for the same reason


def label(n: Node) -> str:
    """A node as ``dlc summary`` names it: its module path, or ``scope.(op)`` for a function call."""
    if n.module_path is not None:
        return n.module_path
    return (n.scope_path + "." if n.scope_path else "") + f"({n.op})"


def shared_value(group: list[Node], readers: list[Node]) -> Refusal:
    """The group's last value has other readers than the next op: they need it materialised."""
    distinct = list({n.id: n for n in readers}.values())  # x * x reads x twice, as one op
    names = ", ".join(label(n) for n in distinct)
    return Refusal("shared", f"the output of {label(group[-1])} is read by {len(distinct)} ops ({names})")


def crosses(first: Node, u: Node) -> Refusal:
    """``u`` is in another block instance or labelled group than the group's first op."""
    here, there = first.scope_path or "the network", u.scope_path or "the network"
    return Refusal("scope", f"crosses the boundary between {here} and {there} (each block and labelled group is "
                   "its own forward)")


def unfused_chains(g: Graph, plan: FusionPlan) -> list[UnfusedChain]:
    """Every chain of two or more fusible ops that no one group holds, each with the plan's reason."""
    producer = g.producer()
    links: list[tuple[int, int, Refusal | None]] = []
    for u in g.nodes:
        if op_of(u.op).fusion not in JOINING:
            continue
        for v in dict.fromkeys(u.inputs):
            p = producer.get(v)
            if p is None or op_of(p.op).fusion not in CHAINING:
                continue
            grp = plan.group_of.get(p.id)
            if grp is not None and grp is plan.group_of.get(u.id):
                continue
            reason = plan.refused.get((p.id, u.id)) or plan.skipped.get(p.id) or plan.skipped.get(u.id)
            links.append((p.id, u.id, reason))
    outgoing: dict[int, list[int]] = {}
    incoming: dict[int, list[int]] = {}
    for k, (p, u, _) in enumerate(links):
        outgoing.setdefault(p, []).append(k)
        incoming.setdefault(u, []).append(k)

    def successor(k: int) -> int | None:
        """The link continuing link ``k``'s chain: through a node with one link in and one out, same rule."""
        mid = links[k][1]
        after = outgoing.get(mid, [])
        if len(incoming[mid]) == 1 and len(after) == 1 and rule(links[after[0]][2]) == rule(links[k][2]):
            return after[0]
        return None

    continued = {s for s in map(successor, range(len(links))) if s is not None}
    chains = []
    for k in range(len(links)):
        if k in continued:
            continue
        nodes = [links[k][0], links[k][1]]
        nxt = successor(k)
        while nxt is not None:
            nodes.append(links[nxt][1])
            nxt = successor(nxt)
        chains.append(UnfusedChain(nodes, links[k][2]))
    return _fan_out(chains)


def _fan_out(chains: list[UnfusedChain]) -> list[UnfusedChain]:
    """One chain for the links from one producer to several consumers refused for one reason (a value read by
    five ops is one finding, not five)."""
    out: list[UnfusedChain] = []
    first: dict[tuple[int, Refusal | None], UnfusedChain] = {}
    for chain in chains:
        key = (chain.nodes[0], chain.reason)
        if len(chain.nodes) == 2 and key in first:
            first[key].readers.append(chain.nodes[1])
            continue
        if len(chain.nodes) == 2:
            first[key] = chain
        out.append(chain)
    return out


def rule(reason: Refusal | None) -> str | None:
    """The rule of a reason, which decides whether two links make one chain (their texts name their own ops)."""
    return reason.rule if reason is not None else None


def where(g: Graph, ids: list[int]) -> str:
    """``file.dln:7`` or ``file.dln:7-11``: the spec lines of ``ids`` (in the first one's file)."""
    spec_lines = sorted({g.nodes[i].span.line for i in ids})
    span = str(spec_lines[0]) if len(spec_lines) == 1 else f"{spec_lines[0]}-{spec_lines[-1]}"
    return f"{Path(g.nodes[ids[0]].span.file).name}:{span}"


def explain_chains(g: Graph, plan: FusionPlan) -> list[str]:
    """The ``--explain-fusion`` lines for the unfused chains: one per chain, with its reason, then a count."""
    chains = unfused_chains(g, plan)
    lines = [f"{g.name}: {len(chains)} unfused chains (fusible ops linked producer -> consumer, not in one kernel)"]
    for chain in chains:
        ops = " -> ".join(label(g.nodes[i]) for i in chain.nodes)
        if chain.readers:
            ops = f"{label(g.nodes[chain.nodes[0]])} -> " + " | ".join(label(g.nodes[i]) for i in chain.nodes[1:2]
                                                                        + chain.readers)
        why = chain.reason.text if chain.reason is not None else "no reason recorded (a bug in dlc)"
        lines.append(f"  {ops}  ({where(g, chain.nodes + chain.readers)}): {why}")
    lines.append(f"{g.name}: {len(plan.groups)} chains fused, {len(chains)} unfused chains")
    return lines
