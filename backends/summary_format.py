"""The formats of ``dlc summary``: an aligned table (default), CSV, JSON and a Markdown table.

Each takes a :class:`~dlc.backends.summary.Summary`; docs/summary.md defines the columns and the JSON schema
(its ``version`` changes when a field changes meaning or goes away).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable

from dlc.backends.summary import Row, Summary
from dlc.compiler.cost import Poly
from dlc.compiler.ir import format_value
from dlc.compiler.types import Dim

JSON_VERSION = 1
COLUMNS = ("layer", "op", "input shape", "output shape", "params", "MACs", "activations", "fused")


def table(s: Summary) -> str:
    """The aligned text table, then the totals."""
    rows = [_cells(s, r) for r in s.rows]
    widths = [max(len(r[i]) for r in rows + [COLUMNS]) for i in range(len(COLUMNS))]
    right = {4, 5, 6}

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(f"{c:>{w}}" if i in right else f"{c:<{w}}" for i, (c, w) in enumerate(zip(r, widths))
                         ).rstrip()

    rule = "-" * sum(w + 2 for w in widths)
    lines = [_title(s), rule, fmt(COLUMNS), rule] + [fmt(r) for r in rows] + [rule]
    lines += [f"{k}: {v}" for k, v in _totals(s)]
    g = s.graph
    lines.append("inputs:  " + ", ".join(f"{n} {_shape(s, 'B', g.types[v].shape, g.types[v].dtype)}"  # type: ignore
                                         for n, v in g.inputs))
    lines.append("outputs: " + ", ".join(_output(s, n, v) for n, v in g.outputs))
    if s.groups:
        lines.append(f"fused:   {s.groups} groups run as kernels with --fuse "
                     f"(`dlc compile --fuse --explain-fusion` lists them)")
    return "\n".join(lines) + "\n"


def markdown(s: Summary) -> str:
    """A Markdown (GitHub) table, then the totals as a list."""
    rows = [tuple(c.replace("|", "\\|") for c in _cells(s, r)) for r in s.rows]
    lines = [f"**{_title(s)}**", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---:" if i in (4, 5, 6) else "---" for i in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(f"`{c}`" if i < 2 and c else c for i, c in enumerate(r)) + " |" for r in rows]
    lines += [""] + [f"- {k}: {v}" for k, v in _totals(s)]
    return "\n".join(lines) + "\n"


def csv_text(s: Summary) -> str:
    """One CSV row per node, plain numbers (a formula where a size is symbolic), then a ``(total)`` row."""
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["layer", "op", "input_shape", "output_shape", "params", "buffers", "macs", "flops",
                "activation_bytes", "fused"])
    for r in s.rows:
        params = "shared" if r.shared else "unknown" if r.params is None else r.params
        w.writerow([r.layer, r.op, "; ".join(_shape(s, *t) for t in r.inputs),
                    "; ".join(_shape(s, *t) for t in r.outputs), params, r.buffers, _plain(r.macs),
                    _plain(None if r.macs is None else r.macs * 2), _plain(r.activation_bytes),
                    "" if r.fused is None else r.fused])
    w.writerow(["(total)", "", "", "", s.params, s.buffers, _plain(s.macs), _plain(s.macs * 2),
                _plain(s.activation_bytes), ""])
    return buffer.getvalue()


def json_text(s: Summary) -> str:
    """The summary as one JSON object (schema in docs/summary.md)."""
    g = s.graph

    def tensor(batch: str, shape: tuple[Dim, ...], dtype: str) -> dict[str, Any]:
        return {"batch": batch, "shape": [s.dim(d) for d in shape], "dtype": dtype}

    doc = {
        "version": JSON_VERSION, "network": g.name, "arguments": {k: _jsonable(v) for k, v in g.params.items()},
        "batch": s.batch, "dtype": s.dtype, "sizes": dict(s.sizes),
        "layers": [{"layer": r.layer, "op": r.op, "inputs": [tensor(*t) for t in r.inputs],
                    "outputs": [tensor(*t) for t in r.outputs], "params": 0 if r.shared else r.params,
                    "shared": r.shared, "tied_to": r.tied_to, "buffers": r.buffers, "macs": _value(r.macs),
                    "flops": _value(None if r.macs is None else r.macs * 2),
                    "activation_bytes": _value(r.activation_bytes), "fused": r.fused} for r in s.rows],
        "totals": {"params": s.params, "trainable_params": s.params, "non_trainable_params": 0,
                   "buffers": s.buffers, "macs": _value(s.macs), "flops": _value(s.macs * 2),
                   "activation_bytes": _value(s.activation_bytes), "input_bytes": _value(s.input_bytes),
                   "param_bytes": s.param_bytes, "unknown": list(s.unknown)},
        "inputs": [{"name": n, **tensor("B", g.types[v].shape, g.types[v].dtype)}  # type: ignore[union-attr]
                   for n, v in g.inputs],
        "outputs": [{"name": n, **tensor("B", g.types[v].shape, g.types[v].dtype),  # type: ignore[union-attr]
                     "training_only": n in g.training_outputs} for n, v in g.outputs],
        "fusion_groups": s.groups,
    }
    return json.dumps(doc, indent=2) + "\n"


FORMATS: dict[str, Callable[[Summary], str]] = {"table": table, "csv": csv_text, "json": json_text,
                                                "markdown": markdown}


def _title(s: Summary) -> str:
    args = f" ({format_value(s.graph.params)[1:-1]})" if s.graph.params else ""
    sizes = "".join(f", {k}={v}" for k, v in s.sizes.items())
    return f"{s.graph.name}{args}: batch {s.batch}, {s.dtype}{sizes}"


def _cells(s: Summary, r: Row) -> tuple[str, ...]:
    if r.shared:
        params = "shared"
    else:
        params = f"{r.params:,}" if r.params is not None else "unknown"
        if r.tied_to is not None:  # its weight is counted with the layer it shares it with
            params += f" (weight tied to {r.tied_to})"
    return (r.layer, r.op, ", ".join(_shape(s, *t) for t in r.inputs), ", ".join(_shape(s, *t) for t in r.outputs),
            params, "unknown" if r.macs is None else r.macs.text(), _size(r.activation_bytes),
            f"#{r.fused}" if r.fused is not None else "")


def _totals(s: Summary) -> list[tuple[str, str]]:
    unknown = [r.layer for r in s.rows if r.params is None and not r.shared]
    out = [("total parameters", f"{s.params:,}" + (f" + unknown (external layers: {', '.join(unknown)})"
                                                    if unknown else "")),
           ("trainable parameters", f"{s.params:,}"), ("non-trainable parameters", "0"),
           ("buffers", f"{s.buffers:,} (running statistics: not parameters, as in torchinfo)"),
           ("total MACs", s.macs.text() + (" + unknown" if s.unknown else "")),
           ("total FLOPs", (s.macs * 2).text() + " (2 per MAC, as torch.utils.flop_counter counts)"),
           ("activation memory", f"{_size(s.activation_bytes)} (every layer's outputs, batch {s.batch})"),
           ("input memory", _size(s.input_bytes)),
           ("parameter memory", _size(Poly.of(s.param_bytes)))]
    return out


def _output(s: Summary, name: str, v: int) -> str:
    t = s.graph.types[v]
    shape = _shape(s, "B", t.shape, t.dtype) if hasattr(t, "shape") else str(t)  # type: ignore[union-attr]
    return f"{name} {shape}" + (" (training only)" if name in s.graph.training_outputs else "")


def _shape(s: Summary, batch: str, shape: tuple[Dim, ...], dtype: str) -> str:
    """``[B, 3, 224, 224]``, the dtype after it unless float32 (a recurrent state: its description)."""
    if dtype.startswith("state("):
        return dtype
    return "[" + ", ".join([batch] + [str(s.dim(d)) for d in shape]) + "]" + (f" {dtype}" if dtype != "float32" else "")


def _size(p: Poly) -> str:
    """Bytes in decimal units (kB, MB, GB, as torchinfo writes them), or the formula in bytes."""
    n = p.constant
    if n is None:
        return f"{p.text()} B"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _plain(p: Poly | None) -> str:
    return "unknown" if p is None else str(p.constant) if p.constant is not None else p.text(commas=False)


def _value(p: Poly | None) -> int | str | None:
    return None if p is None else p.constant if p.constant is not None else p.text(commas=False)


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool, type(None))) else \
        [_jsonable(x) for x in v] if isinstance(v, (list, tuple)) else str(v)
