"""External PyTorch layers (``extern``): the escape hatch for the one layer the language lacks.

A spec declares the layer by the dotted path of its class, with the parameters its constructor takes (named as
the constructor names them) and, optionally, its output shape as a formula over the input's shape ``x``::

    extern Swish = "torch.nn.SiLU"                                   # same shape as its input
    extern Bilin(in1_features: int, in2_features: int, out_features: int) = "torch.nn.Bilinear" {
        shape = [out_features]
    }

and calls it like a block: ``x -> Swish()``, ``act: Swish()``, ``(a, b) -> Bilin(16, 12, 8)``. Its arguments are
bound and type-checked as a block's are, and passed to the constructor by keyword; the tensors are the layer's
``forward`` arguments. Here: the declaration checked (:func:`check_extern`: the path can only be dotted
identifiers, so no spec can put code into the generated module) and an application lowered to one ``external``
node (:class:`Externs`). Parameter counts need the class itself: :func:`external_params` imports it (with
torch), which only ``dlc summary`` and the API's summary do; ``dlc compile`` never imports either.
"""

from __future__ import annotations

import importlib
import keyword
from typing import TYPE_CHECKING, Any

from dlc.compiler.context import Context, Frame
from dlc.compiler.ir import Graph
from dlc.compiler.names import MODULE_RESERVED
from dlc.compiler.naming import Container
from dlc.compiler.ops.external import class_of, module_of
from dlc.compiler.ops.registry import op_of
from dlc.compiler.values import Layer, SymSize, Tensor, describe
from dlc.diagnostics import DlcError, Span, suggest
from dlc.grammar import ast

if TYPE_CHECKING:  # the binder checks declarations with this module: only the types of the pieces are imported
    from dlc.compiler.binding import Binder
    from dlc.compiler.expressions import Evaluator
    from dlc.compiler.nodes import Nodes

ENTRIES = ("shape", "dtype")
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
_PATH_HINT = 'a class by its dotted import path, e.g. "torch.nn.SiLU" or "mypkg.layers.PoolTime"'


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a dotted path of plain ASCII identifiers naming a class in a module, or None."""
    if not path:
        return "the path is empty"
    parts = path.split(".")
    for part in parts:
        if not part:
            return "the path has an empty part (two dots, or a dot at either end)"
        if not (part.isascii() and part.isidentifier()):
            return "each part of the path is a plain ASCII identifier (letters, digits, `_`)"
        if keyword.iskeyword(part):
            return f"`{part}` is a Python keyword"
        if part.startswith("__"):
            return f"`{part}`: parts starting with `__` are refused"
    if len(parts) < 2:
        return f"`{path}` names no module: the path is `module.Class`"
    if parts[0] != "torch" and parts[0] in MODULE_RESERVED:
        return f"the generated module already uses the name `{parts[0]}` for something else"
    return None


def check_extern(d: ast.ExternDef) -> None:
    """Check an ``extern`` declaration: its path (at the string, with a caret) and its entries."""
    problem = path_problem(d.path)
    if problem is not None:
        shown = d.path if len(d.path) <= 60 else d.path[:57] + "..."
        raise DlcError("bad-extern", f"not a class path: {problem} (got {shown!r})", d.path_span, hint=_PATH_HINT)
    seen: set[str] = set()
    for e in d.entries:
        if e.name not in ENTRIES:
            raise DlcError("bad-extern", f"an external layer has no entry `{e.name}`", e.span,
                           hint=suggest(e.name, ENTRIES) or "its entries are `shape = [...]` and `dtype = ...`")
        if e.name in seen:
            raise DlcError("bad-extern", f"entry `{e.name}` is given twice", e.span)
        seen.add(e.name)
        if e.name == "dtype" and _dtype(e.value) not in DTYPES:
            raise DlcError("bad-extern", "`dtype` must be one of " + ", ".join(DTYPES), e.value.span)


def _dtype(e: ast.Expr) -> str | None:
    """The dtype an entry names: a bare word (``int64``) or a string."""
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.String):
        return e.value
    return None


class Externs:
    """Lowers applications of external layers for one elaboration."""

    def __init__(self, ctx: Context, ev: Evaluator, binder: Binder, nodes: Nodes) -> None:
        self.ctx = ctx
        self.ev = ev
        self.binder = binder
        self.nodes = nodes

    def apply(self, layer: Layer, inputs: list[Tensor], span: Span, frame: Frame, container: Container,
              name: str) -> Any:
        """The node of ``layer`` (an extern with its arguments) applied to ``inputs``, as the module ``name``: its
        result, or a tuple of results when the shape rule gives several."""
        d = layer.block
        assert isinstance(d, ast.ExternDef)
        if not inputs:
            raise self.ctx.err("wrong-inputs", f"`{d.name}` needs a tensor input", span, frame,
                               hint=f"apply it in a pipeline, `x -> {d.name}(...)`, or pass the tensors last")
        if d.path.split(".")[0] == self.ctx.g.name:
            raise self.ctx.err("bad-extern", f"the path of `{d.name}` starts with the network's name "
                               f"`{self.ctx.g.name}`, which the generated class takes", d.path_span, frame)
        inner = Frame(d, {}, Container((), "block", frame.container.chain))
        args = self.binder.bind_block_params(layer, inner, frame)
        first = inputs[0].type
        shapes = [list(t.type.shape) for t in inputs if hasattr(t.type, "shape")]
        if len(shapes) != len(inputs):
            raise self.ctx.err("type-mismatch", f"`{d.name}` takes tensors, not a recurrent state", span, frame)
        # a symbolic size is a SymSize in the rule, so that `x[0] * 2` is a formula (and `x[0] + "a"` no string)
        sized = [[SymSize(d) if isinstance(d, str) else d for d in s] for s in shapes]
        inner.names["x"] = sized[0]
        inner.names["xs"] = sized
        entries = {e.name: e for e in d.entries}
        rule = entries.get("shape")
        result = [shapes[0]] if rule is None else self._shapes(self.ev.eval(rule.value, inner), rule.value.span,
                                                                d, shapes, frame)
        dtype = _dtype(entries["dtype"].value) if "dtype" in entries else first.dtype  # type: ignore[union-attr]
        layout = first.layout  # type: ignore[union-attr]
        outputs = tuple((tuple(s), dtype, layout if len(s) == len(shapes[0]) else "cf" if len(s) >= 3 else "fl")
                        for s in result)
        attrs = {"path": d.path, "kwargs": tuple((p.name, args[p.name]) for p in d.params), "inputs": len(inputs),
                 "outputs": outputs}
        node = self.nodes.node("external", inputs, attrs, None, span, container, name, frame.hint, frame)
        outs = [Tensor(v, t) for v, t in zip(node.outputs, node.types)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _shapes(self, v: Any, span: Span, d: ast.ExternDef, shapes: list[list], frame: Frame) -> list[list]:
        """The output shapes a shape rule's value ``v`` gives: a list of sizes, or a list of such lists (one per
        output); each size a positive integer or a symbolic dimension of an input."""
        several = isinstance(v, list) and bool(v) and all(isinstance(s, list) for s in v)
        result = v if several else [v]
        symbolic = {n for s in shapes for dim in s if isinstance(dim, str) for n in SymSize(dim).names}
        for s in result:
            if not isinstance(s, list):
                raise self.ctx.err("bad-shape", f"the shape rule of `{d.name}` must give a list of sizes (or one "
                                   f"list per output), got {describe(v)}", span, frame,
                                   hint="e.g. `shape = [x[0], 8]`; `x` is the input's shape, batch not counted")
            for dim in s:
                ok = dim.names <= symbolic if isinstance(dim, SymSize) else \
                    isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1
                if not ok:
                    raise self.ctx.err("bad-shape", f"the shape rule of `{d.name}` gives the size {describe(dim)}; "
                                       "a size is a positive integer or a symbolic dimension of an input", span,
                                       frame, hint=f"the input's shape is [{', '.join(map(str, shapes[0]))}]")
        return [[dim.formula if isinstance(dim, SymSize) else dim for dim in s] for s in result]


def external_params(g: Graph) -> dict[str, int | None]:
    """Parameters of each external layer of ``g`` by module path, counted by constructing its class (this imports
    torch and the class's module); None where that fails (the module cannot be imported, the constructor
    raises). Every path was checked to be dotted identifiers when the spec was compiled."""
    out: dict[str, int | None] = {}
    for node in g.nodes:
        if op_of(node.op).torch.imports is None or node.module_path is None or node.module_path in out:
            continue
        out[node.module_path] = _count(node.attrs["path"], dict(node.attrs["kwargs"]))
    return out


def _count(path: str, kwargs: dict[str, Any]) -> int | None:
    from torch import nn

    try:
        cls = getattr(importlib.import_module(module_of(path)), class_of(path))
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            return None  # only an nn.Module class is ever constructed, as the generated module's external_layer does
        module = cls(**kwargs)
        return sum(p.numel() for p in module.parameters())
    except Exception:  # the user's code, whatever it raises: the count is unknown, which the summary says
        return None
