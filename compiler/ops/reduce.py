"""Reductions over axes: ``sum``, ``mean``, ``max``, ``min``, ``prod``, ``logsumexp``, ``argmax`` and ``argmin``.

A spec writes them as ``x -> sum(dim=1)`` or ``sum(x, dim=[1, 2], keepdim=true)``. ``mean``, ``max`` and ``min``
already mean something without ``dim=`` (the merge ``mean(a, b)``, the compile-time ``max(a, b)`` on numbers),
so their reductions are the ops ``reduce_mean``, ``reduce_max`` and ``reduce_min``, ``spelled`` ``mean``, ``max``
and ``min``: a call of that name with a ``dim=`` argument means the reduction. ``max`` and ``min`` give the values
only (``torch.amax`` / ``torch.amin``); ``argmax`` and ``argmin`` give the indices, as int64.

``sum``, ``mean``, ``max``, ``min`` and ``logsumexp`` over the trailing axes (``dim=-1``) have reducing row kernel
facets: they join the elementwise chain that computes their input (``x -> exp -> sum(dim=-1)`` is one kernel).
Over other axes, and ``prod``, ``argmax`` and ``argmin`` everywhere, they run in PyTorch between fused kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dlc.compiler.cost import free
from dlc.compiler.ops.kernel import Row
from dlc.compiler.ops.pytorch import Form, Torch
from dlc.compiler.ops.registry import Attr as A, set_costs
from dlc.compiler.ops.registry import OpDef, ShapeError, register
from dlc.compiler.ops.shapes import tensor
from dlc.compiler.types import TensorType, is_float, shape_str


def _same(dtype: str) -> str:
    return dtype


def _widened(dtype: str) -> str:
    """Integer and bool inputs sum (and multiply) into int64, as in PyTorch."""
    return dtype if is_float(dtype) else "int64"


def _index(dtype: str) -> str:
    return "int64"


def _dims(attrs: dict[str, Any]) -> list[int]:
    """The axes ``dim`` names, as written: one int, or a list (a tuple in a kernel's step)."""
    dim = attrs["dim"]
    return list(dim) if isinstance(dim, (list, tuple)) else [dim]


def _axes(attrs: dict[str, Any], x: TensorType, name: str, single: bool) -> list[int]:
    """The batch-less axes ``dim`` names, each from 0 up (``single``: the op takes one axis only)."""
    dims = _dims(attrs)
    if single and len(dims) != 1:
        raise ShapeError(f"`{name}` reduces one axis, got {len(dims)}", attr="dim", code="bad-argument",
                         hint="reduce the axes one after the other")
    axes: list[int] = []
    for d in dims:
        if not -x.rank <= d < x.rank:
            raise ShapeError(f"`{name}`: axis {d} is out of range for a rank-{x.rank} tensor {shape_str(x.shape)}",
                             attr="dim", code="bad-argument",
                             hint="axes are batch-less: axis 0 is the first axis after the batch")
        if d % x.rank in axes:
            raise ShapeError(f"`{name}`: axis {d} is given twice", attr="dim", code="bad-argument")
        axes.append(d % x.rank)
    return axes


def _layout(x: TensorType, axes: list[int], rank: int) -> str:
    """Where the features are after the reduction: the feature axis followed to its new place."""
    if x.rank == 0 or rank < 2:
        return "fl"
    fa = x.feature_axis
    if fa in axes:
        return "fl"
    moved = fa - sum(1 for a in axes if a < fa)
    return "cf" if moved == 0 else "tcf" if moved == 1 and moved != rank - 1 else "fl"


def _reduction(name: str, single: bool, floats: bool, dtype: Callable[[str], str]):
    def rule(attrs, ins):
        x = tensor(ins[0])
        if x.rank == 0:
            raise ShapeError(f"`{name}` needs a tensor with axes, got a scalar", code="shape-mismatch")
        axes = _axes(attrs, x, name, single)
        if floats and not is_float(x.dtype):
            raise ShapeError(f"`{name}` needs a floating-point input, got {x.dtype}", code="type-mismatch",
                             hint="PyTorch computes it for float tensors only")
        if attrs["keepdim"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
            return (TensorType(shape, dtype(x.dtype), x.layout),)
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return (TensorType(shape, dtype(x.dtype), _layout(x, axes, len(shape))),)
    return rule


def _dim(a, ins, outs) -> dict:
    """``dim`` with the batch axis counted: one int, or a tuple for several axes."""
    rank = ins[0].rank if ins else None
    dims = _dims(a)
    torch_dims = tuple((d % rank) + 1 if rank else (d + 1 if d >= 0 else d) for d in dims)
    return {"dim": torch_dims[0] if len(torch_dims) == 1 else torch_dims, "keepdim": a["keepdim"]}


def _label(name: str):
    def label(attrs) -> str:
        dims = _dims(attrs)
        keep = ", keepdim" if attrs["keepdim"] else ""
        return f"{name} dim={','.join(map(str, dims))}{keep}"
    return label


def _trailing(attrs: dict[str, Any], rank: int) -> int | None:
    """How many trailing axes of a rank-``rank`` input ``dim`` names (a row kernel reduces those), or None when
    it names others."""
    dims = _dims(attrs)
    axes = sorted(d % rank for d in dims)
    return len(axes) if axes == list(range(rank - len(axes), rank)) else None


def _row(forward: Callable[[str, str], list[str]], backward: Callable[[str, str, str, str], list[str]]) -> Row:
    """A reducing row kernel: ``forward(x, y)`` reduces the row ``x`` (its valid columns: ``mask``) to the scalar
    ``y``; ``backward(x, y, g, gx)`` spreads the scalar gradient ``g`` over the row as ``gx``."""
    return Row(axes=_trailing, forward=lambda a, x, y: forward(x[0], y),
               backward=lambda a, x, y, g, gx: backward(x[0], y, g, gx), reduces=True)


def _extreme(which: str, empty: str) -> Row:
    """``tl.max`` or ``tl.min`` of a row, NaN where the row has one (as ``torch.amax`` / ``torch.amin``; Triton's
    reductions leave that unspecified); the gradient is shared evenly among the elements that equal the result, as
    torch shares it."""
    return _row(lambda x, y: [f"row_nan = tl.max(tl.where(mask & ({x} != {x}), 1, 0), 0)",
                              f"row_{which} = tl.{which}(tl.where(mask, {x}, {empty}), 0)",
                              f"{y} = tl.where(row_nan > 0, float(\"nan\"), row_{which})"],
                lambda x, y, g, gx: [f"row_hit = tl.where(mask & ({x} == {y}), 1.0, 0.0)",
                                     f"{gx} = row_hit * ({g} / tl.sum(row_hit, 0))"])


SUM_ROW = _row(lambda x, y: [f"{y} = tl.sum(tl.where(mask, {x}, 0.0), 0)"],
               lambda x, y, g, gx: [f"{gx} = tl.where(mask, {g}, 0.0)"])
MEAN_ROW = _row(lambda x, y: [f"{y} = tl.sum(tl.where(mask, {x}, 0.0), 0) / n_cols"],
                lambda x, y, g, gx: [f"{gx} = tl.where(mask, {g} / n_cols, 0.0)"])
# torch.logsumexp's shift: the row's maximum, or 0 where that is infinite (a row of -inf gives -inf, not nan)
LOGSUMEXP_ROW = _row(lambda x, y: [f"row_max = tl.max(tl.where(mask, {x}, -float(\"inf\")), 0)",
                                   "row_shift = tl.where(tl.abs(row_max) == float(\"inf\"), 0.0, row_max)",
                                   (f"{y} = tl.log(tl.sum(tl.where(mask, tl.exp({x} - row_shift), 0.0), 0)) "
                                    "+ row_shift")],
                     lambda x, y, g, gx: [f"{gx} = tl.where(mask, {g} * tl.exp({x} - {y}), 0.0)"])


def _reduce(name: str, spelled: str | None, function: str, what: str, single: bool = False, floats: bool = False,
            dtype: Callable[[str], str] = _same, kernel: Row | None = None) -> None:
    """Register a reduction ``torch.<function>(x, dim=..., keepdim=...)``, as a module ``Apply``; ``single``: over
    one axis only, ``floats``: of float tensors only, ``dtype``: the result's dtype from the input's, ``kernel``:
    its reducing row kernel."""
    register(OpDef(
        name, (A("dim", "int2"), A("keepdim", "bool", False)), _reduction(spelled or name, single, floats, dtype),
        torch=Torch(module=Form(f"Apply(torch.{function}, {{=dim}}{{,keepdim}})", _dim, {"keepdim": False}),
                    function=Form(f"torch.{function}({{x}}, {{=dim}}{{,keepdim}})", _dim, {"keepdim": False})),
        kernel=kernel, family="arith", label=_label(spelled or name), spelled=spelled, doc=what))


_reduce("sum", None, "sum", "Sum over the axes `dim` (an int or a list): `sum(dim=1)`.", dtype=_widened,
        kernel=SUM_ROW)
_reduce("reduce_mean", "mean", "mean", "Mean over the axes `dim`, written `mean(x, dim=1)`.", floats=True,
        kernel=MEAN_ROW)
_reduce("reduce_max", "max", "amax", "Largest value over the axes `dim`, written `max(x, dim=1)` (values only).",
        kernel=_extreme("max", '-float("inf")'))
_reduce("reduce_min", "min", "amin", "Smallest value over the axes `dim`, written `min(x, dim=1)` (values only).",
        kernel=_extreme("min", 'float("inf")'))
_reduce("prod", None, "prod", "Product over one axis `dim`: `prod(dim=1)`.", single=True, dtype=_widened)
_reduce("logsumexp", None, "logsumexp", "log(sum(exp(x))) over the axes `dim`, computed stably.", floats=True,
        kernel=LOGSUMEXP_ROW)
_reduce("argmax", None, "argmax", "Index (int64) of the largest value along one axis `dim`.", single=True,
        dtype=_index)
_reduce("argmin", None, "argmin", "Index (int64) of the smallest value along one axis `dim`.", single=True,
        dtype=_index)


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys((
    "sum", "reduce_mean", "reduce_max", "reduce_min", "prod", "logsumexp", "argmax", "argmin"
), free))
