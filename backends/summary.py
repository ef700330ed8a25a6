"""``dlc summary``: every layer with its input and output shapes, parameters, MACs and activation memory.

The rows and totals are computed here from the IR, without torch (:func:`summary_of`); the formats (table, csv,
json, markdown) are written by :mod:`dlc.backends.summary_format`. docs/summary.md defines every column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dlc.compiler.cost import Poly, evaluate_formula
from dlc.compiler.external import external_params
from dlc.compiler.fusion import fusion_plan
from dlc.compiler.ir import Graph
from dlc.compiler.ops.registry import op_of
from dlc.compiler.ops.wrapper import folds_time
from dlc.compiler.passes import count_params, tied_to
from dlc.compiler.types import ITEMSIZE, Dim, TensorType, Type, is_float
from dlc.diagnostics import DlcError

# bytes per element of each dtype; a float output is counted at the summary's --dtype


@dataclass
class Row:
    """One node of the graph: a layer, a merge or a network input."""

    layer: str  # the module path (state_dict prefix), an input's name, or scope.(op) for a node without module
    op: str
    inputs: list[tuple[str, tuple[Dim, ...], str]]  # (batch, batch-less shape, dtype) of each input
    outputs: list[tuple[str, tuple[Dim, ...], str]]
    params: int | None  # None: unknown (an external layer not constructed)
    buffers: int
    shared: bool  # a module already listed (its parameters are counted there)
    tied_to: str | None
    macs: Poly | None  # at the summary's batch; None: unknown
    activation_bytes: Poly  # the outputs' bytes at the summary's batch
    fused: int | None  # the fusion group's number
    is_input: bool = False  # a network input (its bytes are the input memory, not activations)


@dataclass
class Summary:
    """A network's rows and totals at one batch size and dtype."""

    graph: Graph
    batch: int
    dtype: str
    sizes: Mapping[str, int]
    rows: list[Row] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # layers whose parameters and MACs are unknown
    groups: int = 0  # fusion groups

    @property
    def params(self) -> int:
        """Parameters (trainable; dlc makes no frozen ones), shared ones once."""
        return sum(r.params or 0 for r in self.rows if not r.shared)

    @property
    def buffers(self) -> int:
        """Buffer elements (batchnorm's running statistics), shared ones once."""
        return sum(r.buffers for r in self.rows if not r.shared)

    @property
    def macs(self) -> Poly:
        """The known MACs of one forward pass at the batch size."""
        return sum((r.macs for r in self.rows if r.macs is not None), Poly())

    @property
    def activation_bytes(self) -> Poly:
        """The bytes of every layer's outputs (the network's inputs not counted) at the batch size."""
        return sum((r.activation_bytes for r in self.rows if not r.is_input), Poly())

    @property
    def input_bytes(self) -> Poly:
        """The bytes of the network's inputs at the batch size."""
        return sum((r.activation_bytes for r in self.rows if r.is_input), Poly())

    @property
    def param_bytes(self) -> int:
        """The parameters' bytes at the dtype."""
        return self.params * ITEMSIZE[self.dtype]

    def dim(self, d: Dim) -> Dim:
        """A dimension with the given sizes put in."""
        if isinstance(d, str):
            value = evaluate_formula(d, self.sizes)
            return value if value is not None else d
        return d


def summary_of(g: Graph, batch: int = 1, dtype: str = "float32", sizes: Mapping[str, int] | None = None,
               count_external: bool = False) -> Summary:
    """The summary's rows and totals.

    ``sizes`` gives numbers to symbolic sizes (``T``) of the network; a name that is none of them is a
    DlcError. An external layer's parameters are known only to its class: with ``count_external`` its module is
    imported (with torch) and the class constructed to count them; where that is not done or fails, they are
    unknown, and so are its MACs.
    """
    sizes = dict(sizes or {})
    _check_sizes(g, sizes)
    params: dict[str, int | None] = dict(count_params(g))
    external = external_params(g) if count_external else {}
    params.update({n.module_path: external.get(n.module_path) for n in g.nodes  # type: ignore[misc]
                   if n.module_path is not None and op_of(n.op).torch.imports is not None})
    plan = fusion_plan(g)
    out = Summary(g, batch, dtype, sizes, groups=len(plan.groups))
    seen: set[str] = set()
    batches = _batches(g)
    for node in g.nodes:
        path = node.module_path
        opdef = op_of(node.op)
        op = f"{node.op}({node.attrs['layer']['op']})" if opdef.wraps else node.op
        if opdef.torch.imports is not None:  # an external layer, by its class
            op = f"{node.op}({opdef.describe(node.attrs)})"
        if opdef.declared and path is None:
            name = node.attrs["name"]  # a network input, by its declared name
        else:
            name = path or (node.scope_path + "." if node.scope_path else "") + f"({node.op})"
        shared = path is not None and path in seen
        count: int | None = 0
        if path is not None and not shared:
            seen.add(path)
            count = params.get(path, 0)
        ins = [g.types[v] for v in node.inputs]
        outs = tuple(g.types[v] for v in node.outputs)
        batch_of, factor = batches.get(node.outputs[0], ("B", Poly.of(1))) if node.outputs else ("B", Poly.of(1))
        per_item = opdef.cost(node.attrs, ins, outs) if opdef.cost is not None else None
        if per_item is None or count is None:
            out.unknown.append(name)
        scale = factor * batch
        grp = plan.group_of.get(node.id)
        out.rows.append(Row(
            name, op, [(batches.get(v, ("B",))[0], _shape(t), _dtype(t)) for v, t in zip(node.inputs, ins)],
            [(batch_of, _shape(t), _dtype(t)) for t in outs], count,
            0 if shared else opdef.count_buffers(node.attrs, ins), shared, tied_to(node),
            None if per_item is None else (per_item * scale).evaluate(sizes),
            sum((_bytes(t, dtype) * scale for t in outs), Poly()).evaluate(sizes),
            grp.id if grp is not None else None, opdef.declared))
    return out


def summarize(g: Graph, count_external: bool = False, batch: int = 1, dtype: str = "float32",
              sizes: Mapping[str, int] | None = None, fmt: str = "table") -> str:
    """The summary as text in format ``fmt``: ``table`` (default), ``csv``, ``json`` or ``markdown``."""
    from dlc.backends.summary_format import FORMATS

    return FORMATS[fmt](summary_of(g, batch, dtype, sizes, count_external))


def declared_params(spec: str | Path, network: str | None) -> set[str] | None:
    """The names of the parameters of the network a spec's file defines (None where the file is none: the
    compiler reports that), to tell them from symbolic sizes given the same way (``--set T=128``)."""
    from dlc.compiler.program import load_program, pick_network

    if not Path(spec).is_file():
        return None
    return {p.name for p in pick_network(load_program(spec), network).params}


def split_sizes(spec: str, network: str | None, items: list[str]) -> tuple[list[str], dict[str, object]]:
    """The ``--set`` items of the network's parameters, and the values of the others, which name symbolic sizes
    (``T=128``; :func:`summary_of` checks that they do). Malformed items stay, for ``--set``'s own message."""
    declared = declared_params(spec, network)
    if declared is None:
        return items, {}
    params, sizes = [], {}
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if sep and name.isidentifier() and name not in declared:
            sizes[name] = int(value) if value.isdigit() else value  # anything else: summary_of says what is wrong
        else:
            params.append(item)
    return params, sizes


def symbolic_sizes(g: Graph) -> set[str]:
    """The names of the symbolic sizes in the network's types (``T`` of ``input x: [T, 64]``)."""
    return {name for t in g.types.values() if isinstance(t, TensorType) for d in t.shape if isinstance(d, str)
            for name in Poly.dim(d).variables()}


def _check_sizes(g: Graph, sizes: Mapping[str, int]) -> None:
    known = symbolic_sizes(g)
    for name, value in sizes.items():
        if name not in known:
            params = sorted(g.params)
            raise DlcError("unknown-param", f"network `{g.name}` has no parameter or symbolic size `{name}`", g.span,
                           hint=(f"its symbolic sizes are {', '.join(sorted(known))}" if known else
                                 "its shapes have no symbolic size")
                           + (f"; its parameters are {', '.join(params)}" if params else ""))
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DlcError("bad-argument", f"the symbolic size `{name}` must be a positive integer, got {value!r}",
                           g.span)


def _shape(t: Type) -> tuple[Dim, ...]:
    return t.shape if isinstance(t, TensorType) else ()


def _dtype(t: Type) -> str:
    return t.dtype if isinstance(t, TensorType) else str(t)


def _bytes(t: Type, dtype: str) -> Poly:
    """The bytes of one batch item of a value: a float tensor at ``dtype``, other tensors at their own dtype (a
    recurrent state is counted with the layer's sequence output, which holds its last step)."""
    if not isinstance(t, TensorType):
        return Poly()
    size = ITEMSIZE[dtype] if is_float(t.dtype) else ITEMSIZE.get(t.dtype, 4)
    return Poly.numel(t.shape) * size


def _batches(g: Graph) -> dict[int, tuple[str, Poly]]:
    """What the batch axis of each value holds where it is not just the batch: ``B*T`` between the ``fold_time``
    and ``unfold_time`` of a ``timedistributed`` block or group, whose steps run as items of the batch; with the
    number of items per batch item (``T``)."""
    out: dict[int, tuple[str, Poly]] = {}
    for node in g.nodes:
        if not node.inputs:
            continue
        fold = folds_time(node.op)
        source = node.inputs[1] if fold < 0 else node.inputs[0]  # unfold_time: the batch of the tensor it follows
        batch, factor = out.get(source, ("B", Poly.of(1)))
        t = g.types[node.inputs[0]]
        if fold > 0 and isinstance(t, TensorType):
            batch, factor = f"{batch}*{t.shape[0]}", factor * Poly.dim(t.shape[0])
        if batch != "B":
            out.update((v, (batch, factor)) for v in node.outputs)
    return out
