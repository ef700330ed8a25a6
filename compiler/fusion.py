"""Fusion groups: which IR nodes run as one kernel in a fused module.

The fusion plan is an analysis of the graph: :func:`fusion_plan` computes it once per graph and option and
keeps it in ``Graph.analyses`` until a pass changes the graph; the summary, the diagram, the fused emitter
and ``--explain-fusion`` all read it from there. ``group_fusions`` (the computation) partitions the nodes
of a graph by the fusion kind of their op, derived from its kernel facet (:mod:`dlc.compiler.ops.kernel`):

- an **anchor** (``linear``, convolutions) absorbs the elementwise chain after it as its epilogue;
- an **elementwise** chain (bias, batchnorm, activations, residual add, sub/mul/abs, scaling,
  dropout, comparisons, ``where``, ``masked_fill``) becomes one kernel; bool values live inside it
  (never stored: a chain ending in bool results ends before them);
- a **row** op (``softmax``, ``log_softmax``, ``layernorm``) absorbs the elementwise producers
  before it and the consumers after it, which work on the same rows; a reducing row op (``sum``,
  ``mean``, ``max``, ``min``, ``logsumexp`` over trailing axes) absorbs its producers and ends the group;
- **recurrent** layers and **attention** are groups of one node with kernels of their own;
- an op without a kernel facet (pooling, reshapes, permutations, concatenation, embeddings) is opaque.

A group is a chain: each member after the first takes the previous member's output, and that
output has no other user, so no intermediate value is needed outside its group and nothing fuses
across a permutation or a reshape. One exception, for selections: an op with a bool operand (``where``,
``masked_fill``, the logical ops) also takes in the elementwise ops computing its other operands when it is
their only user (``where(x > 0, x, 0.1 * x)`` is one kernel). Groups never cross a block boundary (each
block is one class in the generated code) nor the boundary of a labelled group or repeat (an ``nn.Sequential``
whose forward the fused module generates, like a block's). A batchnorm may only open an elementwise chain or an
anchor's epilogue, because in training mode its batch statistics need its input materialised.

Each of these decisions that keeps an op out of a group is a :class:`~dlc.compiler.fusion_reasons.Refusal`, kept in
the plan (``refused``, ``skipped``) so that ``--explain-fusion`` says why each chain stays unfused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dlc.compiler.fusion_reasons import Refusal, crosses, explain_chains, label, shared_value, where
from dlc.compiler.ir import Graph, Node
from dlc.compiler.ops.kernel import Anchor, ChannelAffine, Elementwise, Recurrent, Row, reduces
from dlc.compiler.ops.recurrent import UNMERGED
from dlc.compiler.ops.registry import op_of
from dlc.compiler.ops.shapes import promote
from dlc.compiler.types import ITEMSIZE, TensorType, is_float


@dataclass
class FusionGroup:
    """One kernel's worth of IR nodes (by id, in order)."""

    id: int
    kind: str  # anchor | elementwise | row | recurrent | attention
    nodes: list[int]
    saved_bytes: int | None = None  # per sample; None when a dimension is symbolic
    saved_formula: str = ""  # the same as a formula over symbolic dimensions
    inputs: list[int] = field(default_factory=list)  # value ids from outside the group, in first-use order

    @property
    def last(self) -> int:
        return self.nodes[-1]


@dataclass
class FusionPlan:
    groups: list[FusionGroup]
    group_of: dict[int, FusionGroup]  # node id -> its group
    refused: dict[tuple[int, int], Refusal] = field(default_factory=dict)  # (producer, consumer) kept apart, why
    skipped: dict[int, Refusal] = field(default_factory=dict)  # nodes that open no group, why


def _fusion_kind(node: Node) -> str:
    return op_of(node.op).fusion


def _stats(node: Node) -> bool:
    """Batchnorm: a per-channel affine map from statistics of its input (see ChannelAffine)."""
    return isinstance(op_of(node.op).kernel, ChannelAffine)


def _mask(node: Node) -> bool:
    """Dropout: a random keep mask (see Mask)."""
    kernel = op_of(node.op).kernel
    return isinstance(kernel, Elementwise) and kernel.mask is not None


def _weight_shape(g: Graph, node: Node) -> tuple[int, ...] | None:
    """The shape of an elementwise op's module weight as its kernel reads it (prelu's slopes), if it takes one."""
    kernel = op_of(node.op).kernel
    if not isinstance(kernel, Elementwise) or kernel.weight is None:
        return None
    t = g.types[node.inputs[0]]
    assert isinstance(t, TensorType)
    return kernel.weight(node.attrs, t)


def _always(node: Node) -> bool:
    kernel = op_of(node.op).kernel
    assert isinstance(kernel, Elementwise) and kernel.mask is not None
    return kernel.mask.always(node.attrs)


def _matmul(node: Node) -> bool:
    """An anchor whose product the kernel computes (linear); a convolution runs in PyTorch."""
    kernel = op_of(node.op).kernel
    return isinstance(kernel, Anchor) and kernel.matmul


def _float_tensor(t) -> bool:
    return isinstance(t, TensorType) and is_float(t.dtype)


def _bool_tensor(t) -> bool:
    return isinstance(t, TensorType) and t.dtype == "bool"


def _kernel_value(t) -> bool:
    """A value an elementwise kernel computes with: float, or bool (int1; integer tensors stay in PyTorch, where
    float32 would round them)."""
    return _float_tensor(t) or _bool_tensor(t)


def _reduces(node: Node) -> bool:
    return reduces(op_of(node.op).kernel)


def _dtype_follows(g: Graph, node: Node) -> bool:
    """An elementwise op whose result a kernel can type: a bool, or the promotion of its non-bool tensor operands,
    as the runtime computes it (``where(c, 1.0, 0.0)`` has none: PyTorch makes it the default dtype)."""
    out = g.types[node.outputs[0]]
    assert isinstance(out, TensorType)
    if out.dtype == "bool":
        return True
    values = [t.dtype for t in (g.types[i] for i in node.inputs) if isinstance(t, TensorType) and t.dtype != "bool"]
    return bool(values) and promote(values) == out.dtype


def _has_bool(g: Graph, node: Node) -> bool:
    return any(_bool_tensor(g.types[v]) for v in list(node.inputs) + list(node.outputs))


def _row_ok(g: Graph, node: Node) -> bool:
    """Row kernels work on the trailing axes their op names (softmax: the last; layernorm: the last ``dims``),
    of known size."""
    t = g.types[node.inputs[0]]
    if not _float_tensor(t) or t.rank == 0:
        return False
    kernel = op_of(node.op).kernel
    assert isinstance(kernel, Row)
    axes = kernel.axes(node.attrs, t.rank)
    return axes is not None and all(isinstance(d, int) for d in t.shape[-axes:])


def _row_shapes(g: Graph, row: Node) -> tuple[tuple, tuple]:
    """The shapes a row kernel's inputs may have: the rows' own, and one value per row (the row axes of size 1, as
    ``mean(dim=-1, keepdim=true)`` gives)."""
    t = g.types[row.inputs[0]]
    kernel = op_of(row.op).kernel
    assert isinstance(t, TensorType) and isinstance(kernel, Row)
    axes = kernel.axes(row.attrs, t.rank)
    assert axes is not None
    return t.shape, t.shape[:t.rank - axes] + (1,) * axes


def _can_extend(g: Graph, group: list[Node], head_kind: str, has_row: bool, u: Node, users: dict[int, list[Node]],
                v: int, returned: set[int]) -> str | Refusal:
    """How ``u`` joins a group whose last output is ``v``: ``"ew"``, ``"row"``, or why it does not."""
    if len(users.get(v, [])) != 1:
        return shared_value(group, users[v])  # v is needed outside the group
    if v in returned:
        owner = group[-1].scope_path or "the network"
        return Refusal("returned", f"the output of {label(group[-1])} is returned by {owner} (its block, labelled "
                       "group or network)")
    if u.scope != group[0].scope:
        return crosses(group[0], u)
    if any(_reduces(n) for n in group):
        # after a reduction the values are per row, not per element: the kernel ends there
        return Refusal("reduced", "nothing after a reduction joins its kernel (one value per row)")
    if not all(_kernel_value(t) for t in u.types) or len(u.outputs) != 1:
        return Refusal("dtype", f"{label(u)} gives an integer tensor (or several results), which kernels never do")
    tv = g.types[v]
    kind = _fusion_kind(u)
    if kind == "elementwise":
        if _stats(u) and not (head_kind == "anchor" and len(group) == 1):
            # its batch statistics need its input materialised: only right after an anchor
            return Refusal("statistics", f"{label(u)} computes batch statistics of its input, so it opens a chain "
                           "or follows a convolution directly")
        if _mask(u) and any(_mask(n) and _always(n) != _always(u) for n in group):
            return Refusal("dropout", "dropouts with different always= never share a kernel (one on/off switch)")
        if u.types[0].shape != tv.shape:
            # the chain value must not be broadcast up to a larger shape
            return Refusal("broadcast", f"{label(u)} broadcasts the chain's value up to a larger shape")
        if not all(_kernel_value(g.types[i]) for i in u.inputs):
            return Refusal("dtype", f"{label(u)} reads an integer tensor, which kernels never load")
        if _has_bool(g, u) and not _dtype_follows(g, u):
            return Refusal("dtype", f"no tensor operand of {label(u)} determines its result's dtype")
        if u.inputs.count(v) != 1:
            # the chain value used twice by one op (x * x): keep it simple, end the group
            return Refusal("shared", f"{label(u)} reads the chain's value twice")
        if head_kind == "row" or has_row:
            if _weight_shape(g, u) is not None:
                # a weight broadcast per channel is neither a row nor one value per row
                return Refusal("row-input", f"the per-channel weight of {label(u)} does not broadcast over a row")
            # row kernels load extra inputs row by row: the row tensor's full shape, or one value per row
            row = next(n for n in group if _fusion_kind(n) == "row")
            if any(g.types[i].shape not in _row_shapes(g, row) for i in u.inputs if i != v):
                return Refusal("row-input", f"{label(u)} reads an input that is neither a whole row nor one value "
                               "per row")
        if head_kind == "anchor" and _matmul(group[0]):
            if _stats(u):
                # the matmul result is never materialised for batch statistics
                return Refusal("statistics", f"{label(u)} needs the matmul's result materialised for its "
                               "batch statistics")
            # the matmul epilogue sees [rows, units] tiles: extra inputs are full or per-unit vectors
            units = tv.shape[-1]
            for i in u.inputs:
                if i != v and g.types[i].shape not in (tv.shape, (units,)):
                    return Refusal("epilogue-input", f"{label(u)} reads an input that is neither the matmul's "
                                   "shape nor one value per unit")
            if _weight_shape(g, u) not in (None, (1,), (units,)):
                # a weight per channel of another axis than the units'
                return Refusal("epilogue-input", f"the slopes of {label(u)} are per channel of another axis "
                               "than the linear layer's units")
        return "ew"
    if kind == "row" and head_kind == "elementwise" and not has_row and _row_ok(g, u):
        # a row op absorbs its elementwise producers when they work on whole rows (or one value per row)
        if any(g.types[i].shape not in _row_shapes(g, u) for n in group for i in n.inputs):
            return Refusal("row-input", f"an op before {label(u)} reads an input that is neither a whole row nor "
                           "one value per row")
        bad = [n for n in group if _stats(n) or _weight_shape(g, n) is not None]
        if bad:
            return Refusal("row-input", f"{label(bad[0])} before the row op {label(u)} is a batchnorm or prelu"
                           ", which row kernels do not run")
        return "row"
    if kind == "row" and not _row_ok(g, u):
        return Refusal("row-axes", f"the rows of {label(u)} are not trailing axes of known size")
    if kind == "row" and head_kind == "anchor":
        return Refusal("row-epilogue", f"the row op {label(u)} does not join the epilogue of {label(group[0])}")
    if kind == "row":
        return Refusal("one-row", f"{label(u)} would be a second row op in one kernel")
    return Refusal("opens", f"{label(u)} opens a kernel of its own (kernels take epilogues, not prologues)")


def _side_branches(g: Graph, group: list[Node], u: Node, users: dict[int, list[Node]], producers: dict[int, Node],
                   returned: set[int], taken: set[int], has_row: bool) -> list[Node]:
    """The elementwise ops computing ``u``'s operands other than the chain's value, and theirs in turn, that can
    join ``u``'s group before it (in an order that computes each before its use): those only ``u`` (or such an
    op) reads, of ``u``'s full shape, of the group's scope and not yet in a group. ``u`` is a selection (an op
    with a bool operand), whose operands are typically computed side by side: ``where(x > 0, x, 0.1 * x)``."""
    shape = g.types[u.outputs[0]].shape
    budget = MAX_GROUP_OPS - len(group) - 1
    inside = {n.id for n in group}
    pulled: list[Node] = []

    def joins(p: Node | None, reader: Node) -> bool:
        if p is None or p.id in taken or p.id in inside or len(p.outputs) != 1 or p.scope != group[0].scope:
            return False
        out = p.outputs[0]
        if [n.id for n in users.get(out, [])] != [reader.id] or out in returned or g.types[out].shape != shape:
            return False
        if _fusion_kind(p) != "elementwise" or _stats(p) or _mask(p) or "keyword_inputs" in p.attrs:
            return False
        if not all(_kernel_value(g.types[i]) for i in p.inputs) or not _kernel_value(g.types[out]):
            return False
        if has_row and (any(g.types[i].shape != shape for i in p.inputs) or _weight_shape(g, p) is not None):
            return False  # a row kernel loads its extra inputs row by row, at full size
        return not _has_bool(g, p) or _dtype_follows(g, p)

    def pull(reader: Node) -> None:
        for i in reader.inputs:
            p = producers.get(i)
            if len(pulled) < budget and joins(p, reader):
                inside.add(p.id)
                pull(p)  # its own operands first
                pulled.append(p)

    pull(u)
    return pulled


def _saved(g: Graph, group: list[Node]) -> tuple[int | None, str]:
    """Bytes per sample an unfused run writes and reads back for the group's intermediate values."""
    total = 0
    terms: list[str] = []
    for n in group[:-1]:
        if _fusion_kind(n) == "anchor" and not _matmul(n):
            continue  # the convolution's result is materialised: its epilogue kernel reads it
        t = g.types[n.outputs[0]]
        assert isinstance(t, TensorType)
        size = ITEMSIZE[t.dtype]
        if all(isinstance(d, int) for d in t.shape):
            total += 2 * size * math.prod(t.shape)
        else:
            terms.append("*".join(str(d) if isinstance(d, int) or d.isidentifier() else f"({d})"
                                  for d in t.shape) + f"*{2 * size}")
    if terms:
        if total:
            terms.append(str(total))
        return None, _formula(terms)
    return total, str(total)


# Ops in one kernel: a longer chain is cut into several. The kernel's source, the Triton compiler's work and the
# registers it needs grow with the chain (a spec of 80 bytes once made one 24,000-op kernel of 10 MB); past a few
# dozen ops, one more launch costs nothing next to the chain's own work.
MAX_GROUP_OPS = 64


def group_fusions(g: Graph, recurrent: bool = False) -> FusionPlan:
    """Partition ``g``'s nodes into fusion groups; ``recurrent=False`` leaves LSTM/GRU layers to nn.LSTM / nn.GRU
    (cuDNN). Read the plan through :func:`fusion_plan`, which computes it once."""
    users = g.users()
    producers = g.producer()
    returned = {v for call in g.calls.values() for v in call.outputs} | {v for _, v in g.outputs}
    groups: list[FusionGroup] = []
    taken: set[int] = set()
    refused: dict[tuple[int, int], Refusal] = {}
    skipped: dict[int, Refusal] = {}
    for node in g.nodes:
        if node.id in taken:
            continue
        kind = _fusion_kind(node)
        if "keyword_inputs" in node.attrs:
            skipped[node.id] = Refusal("keywords", f"{label(node)} takes keyword tensor inputs (masks, lengths)")
            continue  # attention with masks, a recurrent layer with lengths: the kernels have no such mode
        if kind == "recurrent":
            cell = op_of(node.attrs["layer"]["op"]) if op_of(node.op).wraps else op_of(node.op)
            # dlc's gate kernels run this cell, merging the directions into one output (merge=none gives two)
            if recurrent and isinstance(cell.kernel, Recurrent) and node.attrs.get("merge") != UNMERGED:
                groups.append(FusionGroup(len(groups), "recurrent", [node.id]))
                taken.add(node.id)
            continue
        if kind == "attention":
            groups.append(FusionGroup(len(groups), "attention", [node.id]))
            taken.add(node.id)
            continue
        if kind not in ("anchor", "elementwise", "row"):
            continue
        if not all(_kernel_value(t) for t in node.types):
            skipped[node.id] = Refusal("dtype", f"{label(node)} gives an integer tensor, which kernels never do")
            continue
        if kind == "row" and not _row_ok(g, node):
            skipped[node.id] = Refusal("row-axes", f"the rows of {label(node)} are not trailing axes of known size")
            continue
        if kind == "elementwise" and not (all(_kernel_value(g.types[i]) for i in node.inputs)
                                          and (not _has_bool(g, node) or _dtype_follows(g, node))):
            skipped[node.id] = Refusal("dtype", f"{label(node)} reads an integer tensor, or none of its tensor "
                                       "operands determines its result's dtype")
            continue
        if kind != "elementwise" and not all(_float_tensor(t) for t in node.types):
            skipped[node.id] = Refusal("dtype", f"{label(node)} works on a bool tensor")
            continue
        members = [node]
        starts = [0]  # where each chain member's extension (the member and the side branches it took in) begins
        has_row = kind == "row"
        while len(members) < MAX_GROUP_OPS:
            v = members[-1].outputs[0]
            nxt = users.get(v, [])
            if not nxt:
                break
            how = _can_extend(g, members, kind, has_row, nxt[0], users, v, returned)
            if isinstance(how, str) and nxt[0].id in taken:
                owner = next(grp.id for grp in groups if nxt[0].id in grp.nodes)
                how = Refusal("taken", f"{label(nxt[0])} already runs in kernel #{owner}, which follows the chain of "
                              "another of its operands")
            if isinstance(how, Refusal):
                refused.update(((members[-1].id, n.id), how) for n in nxt)
                break
            has_row = has_row or how == "row"
            starts.append(len(members))
            if how == "ew" and kind != "anchor" and _has_bool(g, nxt[0]):
                members += _side_branches(g, members, nxt[0], users, producers, returned, taken, has_row)
            members.append(nxt[0])
        else:
            why = Refusal("long", f"the kernel has {MAX_GROUP_OPS} ops already: a longer chain is cut")
            refused.update(((members[-1].id, n.id), why) for n in users.get(members[-1].outputs[0], []))
        while members and _bool_tensor(g.types[members[-1].outputs[0]]):
            # bool results stay inside kernels: a chain that ends in them ends before them (and their side branches)
            tail = starts.pop()
            skipped.update((n.id, Refusal("bool", f"{label(n)} gives a bool tensor, which kernels never store"))
                           for n in members[tail:])
            del members[tail:]
        if not members:
            continue
        if kind == "elementwise" and has_row:
            kind = "row"
        if len(members) == 1 and (kind != "row" or _reduces(node)):
            continue  # a lone layer (or reduction) runs as PyTorch would run it: no kernel of ours is faster
        if (kind == "anchor" and not _matmul(node) and len(members) == 2 and not node.attrs.get("bias")
                and node.fold is None and not _stats(members[1])):
            refused[(node.id, members[1].id)] = Refusal("lone-epilogue", f"{label(node)} has no bias: a "
                                                        "kernel after it would run one op alone, left to PyTorch")
            continue  # a convolution and one op after it: the kernel would be that op alone (a folded one has a bias)
        ids = [n.id for n in members]
        produced = {n.outputs[0] for n in members}
        inputs: list[int] = []
        for n in members:
            for i in n.inputs:
                if i not in produced and i not in inputs:
                    inputs.append(i)
        saved, formula = _saved(g, members)
        groups.append(FusionGroup(len(groups), kind, ids, saved, formula, inputs))
        taken.update(ids)
    group_of = {nid: grp for grp in groups for nid in grp.nodes}
    return FusionPlan(groups, group_of, refused, skipped)


def fusion_plan(g: Graph, recurrent: bool = False) -> FusionPlan:
    """The fusion groups of ``g`` (see :func:`group_fusions`), computed once per graph and ``recurrent`` and
    shared by every reader: read it, never change it."""
    return g.analyses.get(("fusion plan", recurrent), lambda: group_fusions(g, recurrent=recurrent))


def describe_group(g: Graph, grp: FusionGroup) -> str:
    """``conv1 conv2d -> bn1 batchnorm -> relu`` for explanations and diagrams."""
    parts = []
    for nid in grp.nodes:
        n = g.nodes[nid]
        parts.append(f"{n.name} {n.op}" if n.name else n.op)
    return " -> ".join(parts)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _formula(terms: list[str]) -> str:
    counts: dict[str, int] = {}
    for t in terms:
        counts[t] = counts.get(t, 0) + 1
    return " + ".join(t if n == 1 else f"{n}*{t}" for t, n in counts.items())


def explain(g: Graph, recurrent: bool = False) -> str:
    """``dlc compile --explain-fusion``: every group with its ops, spec lines and the traffic it saves, then every
    unfused chain with the reason the plan kept it apart (:mod:`dlc.compiler.fusion_reasons`).

    The bytes are those the forward pass does not write and read back, per sample.
    """
    plan = fusion_plan(g, recurrent=recurrent)
    lines = [f"{g.name}: {len(plan.groups)} fusion groups"]
    total = 0
    symbolic = False
    for grp in plan.groups:
        first = g.nodes[grp.nodes[0]]
        if grp.kind in ("recurrent", "attention"):
            saved = {"recurrent": "gate math of each step in one kernel",
                     "attention": "scaled_dot_product_attention"}[grp.kind]
        elif grp.saved_bytes is not None:
            saved = f"saves {_human(grp.saved_bytes)} per sample"
            total += grp.saved_bytes
        else:
            saved = f"saves {grp.saved_formula} bytes per sample"
            symbolic = True
        scope = first.scope_path or g.name
        lines.append(f"  #{grp.id:<3} {grp.kind:<11} {scope}: {describe_group(g, grp)}"
                     f"  ({where(g, grp.nodes)}; {saved})")
    more = " (plus the groups with symbolic sizes)" if symbolic else ""
    lines.append(f"memory traffic saved in the forward pass: {_human(total)} per sample{more}")
    lines += explain_chains(g, plan)
    return "\n".join(lines) + "\n"
