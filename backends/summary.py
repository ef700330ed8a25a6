"""``dlc summary``: a table of layers, output shapes and parameter counts (like Keras' ``summary``)."""

from __future__ import annotations

from dlc.compiler.external import external_params
from dlc.compiler.fusion import fusion_plan
from dlc.compiler.ir import Graph, format_value
from dlc.compiler.ops.registry import op_of
from dlc.compiler.passes import count_params, tied_to
from dlc.compiler.ops.wrapper import folds_time
from dlc.compiler.types import TensorType, batched_str


def summarize(g: Graph, count_external: bool = False) -> str:
    """Every node with its module path, op, output shape(s) and parameters (shared ones counted once).

    An external layer's parameters are known only to its class: with ``count_external`` its module is imported
    (with torch) and the class constructed to count them (:func:`~dlc.compiler.external.external_params`);
    where that is not done or fails, the count says "unknown"."""
    params: dict[str, int | None] = dict(count_params(g))
    external = external_params(g) if count_external else {}
    params.update({n.module_path: external.get(n.module_path) for n in g.nodes  # type: ignore[misc]
                   if n.module_path is not None and op_of(n.op).torch.imports is not None})
    plan = fusion_plan(g)
    rows: list[tuple[str, str, str, str, str]] = []
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
        batch = batches.get(node.outputs[0], "B") if node.outputs else "B"
        shapes = ", ".join(batched_str(t).replace("[B", "[" + batch, 1) for t in node.types)
        if path is not None and path in seen:
            count = "shared"
        elif path is not None:
            seen.add(path)
            n = params.get(path, 0)
            count = f"{n:,}" if n is not None else "unknown"
            if tied_to(node) is not None:  # its weight is counted with the layer it shares it with
                count += f" (weight tied to {tied_to(node)})"
        else:
            count = "0"
        grp = plan.group_of.get(node.id)
        rows.append((name, op, shapes, count, f"#{grp.id}" if grp is not None else ""))
    header = ("layer", "op", "output shape", "params", "fused")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]

    def fmt(r: tuple[str, ...]) -> str:
        return (f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"
                f"  {r[4]:<{widths[4]}}").rstrip()

    rule = "-" * len(fmt(header + ("x" * widths[4],)))
    total = sum(n for n in params.values() if n is not None)
    unknown = [path for path, n in params.items() if n is None]
    title = f"{g.name}" + (f" ({format_value(g.params)[1:-1]})" if g.params else "")
    lines = [title, rule, fmt(header), rule] + [fmt(r) for r in rows] + [rule]
    lines.append(f"total parameters: {total:,}" + (f" + unknown (external layers: {', '.join(unknown)})"
                                                   if unknown else ""))
    lines.append("inputs:  " + ", ".join(f"{n} {batched_str(g.types[v])}" for n, v in g.inputs))
    lines.append("outputs: " + ", ".join(f"{n} {batched_str(g.types[v])}" + (" (training only)" if n in
                                         g.training_outputs else "") for n, v in g.outputs))
    if plan.groups:
        lines.append(f"fused:   {len(plan.groups)} groups run as kernels with --fuse "
                     f"(`dlc compile --fuse --explain-fusion` lists them)")
    return "\n".join(lines) + "\n"


def _batches(g: Graph) -> dict[int, str]:
    """What the batch axis of each value holds where it is not just the batch: ``B*T`` between the ``fold_time``
    and ``unfold_time`` of a ``timedistributed`` block or group, whose steps run as items of the batch."""
    out: dict[int, str] = {}
    for node in g.nodes:
        if not node.inputs:
            continue
        fold = folds_time(node.op)
        source = node.inputs[1] if fold < 0 else node.inputs[0]  # unfold_time: the batch of the tensor it follows
        batch = out.get(source, "B")
        t = g.types[node.inputs[0]]
        if fold > 0 and isinstance(t, TensorType):
            batch = f"{batch}*{t.shape[0]}"
        if batch != "B":
            out.update((v, batch) for v in node.outputs)
    return out
