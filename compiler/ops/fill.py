"""Constant tensors shaped like a tensor: ``zeros_like``, ``ones_like`` and ``full_like(x, value)``.

The result has the input's shape, dtype and layout (``torch.zeros_like`` and its siblings), and does not depend
on the input's values, so no gradient flows back through it: a carried skip sum starts at zero with
``(h, zeros_like(h)) -> Layer * n``. They have no kernel facet: a kernel would read the input only to throw it
away, where PyTorch fills the result without reading it.
"""

from __future__ import annotations

from typing import Any

from dlc.compiler.cost import free
from dlc.compiler.ir import format_value
from dlc.compiler.ops.pytorch import Form, Torch
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import tensor
from dlc.compiler.types import TensorType, Type, is_float


def _like(attrs: dict[str, Any], ins: list[Type]) -> tuple[TensorType]:
    return (tensor(ins[0]),)


for _name, _what in (("zeros_like", "zeros"), ("ones_like", "ones")):
    register(OpDef(
        _name, (), _like,
        torch=Torch(module=Form(f"Apply(torch.{_name})"), function=Form(f"torch.{_name}({{x}})")),
        family="arith", doc=f"A tensor of {_what} with the input's shape and dtype."))


def _full_like(attrs: dict[str, Any], ins: list[Type]) -> tuple[TensorType]:
    x = tensor(ins[0])
    v = attrs["value"]
    # PyTorch would silently truncate the value to the tensor's dtype; a spec saying 0.5 for int64 is a mistake.
    if x.dtype == "bool" and v not in (0.0, 1.0):
        raise ShapeError(f"`full_like` fills a bool tensor with 0 or 1, got {format_value(v)}", attr="value",
                         code="type-mismatch", hint="the result has the input's dtype")
    if not is_float(x.dtype) and isinstance(v, float) and not v.is_integer():
        raise ShapeError(f"`full_like` fills an {x.dtype} tensor, which cannot hold {format_value(v)}",
                         attr="value", code="type-mismatch",
                         hint="the result has the input's dtype: give an integer, or a float tensor")
    if x.dtype == "int32" and not -2**31 <= v < 2**31:
        raise ShapeError(f"`full_like` fills an int32 tensor, which cannot hold {format_value(v)}", attr="value",
                         code="bad-argument")
    return (x,)


def _fill_value(a: dict[str, Any], ins: list[Type], outs: list[Type]) -> dict[str, Any]:
    """The value as the tensor's dtype writes it: ``3`` for an integer tensor, ``3.0`` for a float one."""
    v = a["value"]
    return {"fill_value": float(v) if is_float(tensor(ins[0]).dtype) else int(v)}


register(OpDef(
    "full_like", (A("value", "number"),), _full_like,
    torch=Torch(module=Form("Apply(torch.full_like, fill_value={fill_value})", _fill_value),
                function=Form("torch.full_like({x}, {fill_value})", _fill_value)),
    family="arith", label=lambda a: f"full_like {format_value(a['value'])}",
    doc="A tensor filled with `value`, with the input's shape and dtype."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("zeros_like", "ones_like", "full_like"), free))
