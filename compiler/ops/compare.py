"""Tensor comparisons and masks: ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge`` (bool tensors), ``logical_and``,
``logical_or``, ``logical_not``, ``where`` and ``masked_fill``.

A spec writes comparisons with operators (``tokens != pad``, ``x > 0``, ``a == b``): between two tensors, or a
tensor and a number (kept in ``value``). ``and``, ``or`` and ``not`` on bool tensors are the logical ops.

Their kernel facets are elementwise on Triton's int1: a comparison passes no gradient to either side (its
result is bool), ``where`` and ``masked_fill`` pass it to the operand they selected, and a bool operand gets
none.
"""

from __future__ import annotations

from dlc.compiler.cost import free
from dlc.compiler.ir import format_value
from dlc.compiler.ops.kernel import Elementwise, flt
from dlc.compiler.ops.pytorch import Form, Torch
from dlc.compiler.ops.registry import Attr as A, set_costs
from dlc.compiler.ops.registry import OpDef, ShapeError, register
from dlc.compiler.ops.shapes import broadcast, promote, tensor
from dlc.compiler.types import TensorType, is_float, shape_str

# op name -> its Python operator
COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _same_rank(name: str, xs: list[TensorType]) -> tuple:
    shape = xs[0].shape
    for t in xs[1:]:
        if t.rank != xs[0].rank:
            # both carry the batch axis in front, so NumPy's right-aligned broadcasting would misplace it
            raise ShapeError(f"`{name}` needs tensors of equal rank, got {shape_str(xs[0].shape)} and "
                             f"{shape_str(t.shape)}",
                             hint="every tensor has a batch axis in front; `reshape` the smaller one to the same "
                                  "rank (size-1 axes broadcast)")
        shape = broadcast(shape, t.shape, name)
    return shape


def _compare_rule(name: str):
    def rule(attrs, ins):
        xs = [tensor(t) for t in ins]
        if len(xs) == 1 and attrs["value"] is None:
            raise ShapeError(f"`{name}` compares two tensors, or a tensor with `value`", code="missing-argument")
        if len(xs) == 2 and attrs["value"] is not None:
            raise ShapeError(f"`{name}` compares with a tensor or with `value`, not both", attr="value",
                             code="bad-argument")
        return (TensorType(_same_rank(name, xs), "bool", xs[0].layout),)
    return rule


def _template(symbol: str):
    return lambda a: f"{{x}} {symbol} {{value}}" if a["value"] is not None else f"{{x}} {symbol} {{*rest}}"


def _value(a, ins, outs) -> dict:
    return {"value": a["value"]}


def _compare_label(symbol: str):
    return lambda a: symbol if a["value"] is None else f"{symbol} {format_value(a['value'])}"


def _compare_kernel(symbol: str) -> Elementwise:
    """``a <symbol> b`` (or ``a <symbol> value``) in a kernel; no gradient flows through a bool result."""
    return Elementwise(lambda a, x: f"{x[0]} {symbol} {x[1] if len(x) > 1 else flt(a['value'])}",
                       lambda a, x, y, g: [None] * len(x))


for _name, _symbol in COMPARISONS.items():
    register(OpDef(
        _name, (A("value", "float", None),), _compare_rule(_name), inputs=("a", "b"), optional_inputs=frozenset({"b"}),
        torch=Torch(function=Form(_template(_symbol), _value)), kernel=_compare_kernel(_symbol),
        family="merge", draw="merge",
        label=_compare_label(_symbol),
        doc=f"Elementwise `a {_symbol} b` (or `a {_symbol} value`), a bool tensor."))


def _logical(name: str):
    def rule(attrs, ins):
        xs = [tensor(t) for t in ins]
        for t in xs:
            if t.dtype != "bool":
                raise ShapeError(f"`{name}` needs bool tensors, got {t.dtype}", code="type-mismatch",
                                 hint="comparisons such as `x > 0` give bool tensors")
        return (TensorType(_same_rank(name, xs), "bool", xs[0].layout),)
    return rule


def _no_grads(a, x: list[str], y: str, g: str) -> list[str | None]:
    return [None] * len(x)


register(OpDef(
    "logical_and", (), _logical("and"), inputs=("a", "b"), torch=Torch(function=Form("{x} & {*rest}")),
    kernel=Elementwise(lambda a, x: f"{x[0]} & {x[1]}", _no_grads),
    family="merge", draw="merge", label=lambda a: "and", doc="`a and b` between bool tensors."))
register(OpDef(
    "logical_or", (), _logical("or"), inputs=("a", "b"), torch=Torch(function=Form("{x} | {*rest}")),
    kernel=Elementwise(lambda a, x: f"{x[0]} | {x[1]}", _no_grads),
    family="merge", draw="merge", label=lambda a: "or", doc="`a or b` between bool tensors."))
register(OpDef(
    "logical_not", (), _logical("not"), torch=Torch(module=Form("Apply(torch.logical_not)"),
                                                     function=Form("torch.logical_not({x})")),
    kernel=Elementwise(lambda a, x: f"{x[0]} == 0", _no_grads),
    family="arith", label=lambda a: "not", doc="`not a` of a bool tensor."))


def _where(attrs, ins):
    xs = [tensor(t) for t in ins]
    cond = xs[0]
    if cond.dtype != "bool":
        raise ShapeError(f"`where` needs a bool condition, got {cond.dtype}", code="type-mismatch",
                         hint="comparisons such as `x > 0` give bool tensors")
    values = [t.dtype for t in xs[1:]]
    numbers = [attrs[k] for k in ("input", "other") if attrs[k] is not None]
    dtype = promote(values) if values else "float32"
    if any(isinstance(n, float) for n in numbers) and not is_float(dtype):
        dtype = "float32"  # an integer tensor and a float number give a float tensor, as in PyTorch
    if not values and all(isinstance(n, int) for n in numbers):
        dtype = "int64"
    layout = xs[1].layout if len(xs) > 1 else cond.layout
    return (TensorType(_same_rank("where", xs), dtype, layout),)


def _where_template(a) -> str:
    """The tensors after the condition take the places the numbers leave."""
    if a["input"] is None:
        return "torch.where({*xs})" if a["other"] is None else "torch.where({*xs}, {other})"
    return "torch.where({x}, {input}, {*rest})" if a["other"] is None else "torch.where({x}, {input}, {other})"


def _where_fill(a, ins, outs) -> dict:
    return {"input": a["input"], "other": a["other"]}


def _where_kernel(a, x: list[str]) -> str:
    """The tensors after the condition take the places the numbers leave, as in the PyTorch template."""
    tensors = iter(x[1:])
    picked = [next(tensors) if a[k] is None else flt(a[k]) for k in ("input", "other")]
    return f"tl.where({x[0]}, {picked[0]}, {picked[1]})"


def _where_grads(a, x: list[str], y: str, g: str) -> list[str | None]:
    """The gradient goes to the operand each element took: ``a`` where the condition holds, ``b`` elsewhere."""
    grads: list[str | None] = [None]
    if a["input"] is None:
        grads.append(f"tl.where({x[0]}, {g}, 0.0)")
    if a["other"] is None:
        grads.append(f"tl.where({x[0]}, 0.0, {g})")
    return grads


register(OpDef(
    "where", (A("input", "float", None), A("other", "float", None)), _where,
    inputs=("condition", "a", "b"), optional_inputs=frozenset(("a", "b")),
    torch=Torch(function=Form(_where_template, _where_fill)), kernel=Elementwise(_where_kernel, _where_grads),
    family="merge", draw="merge", label=lambda a: "where",
    doc="`where(condition, a, b)`: `a` where the bool condition holds, else `b` (tensors or numbers)."))


def _masked_fill(attrs, ins):
    x, mask = tensor(ins[0]), tensor(ins[1])
    if mask.dtype != "bool":
        raise ShapeError(f"`masked_fill` needs a bool mask, got {mask.dtype}", code="type-mismatch",
                         hint="comparisons such as `tokens == 0` give bool tensors")
    if mask.rank != x.rank or any(m not in (d, 1) for m, d in zip(mask.shape, x.shape)):
        raise ShapeError(f"`masked_fill`: the mask {shape_str(mask.shape)} does not broadcast to the tensor "
                         f"{shape_str(x.shape)}", hint="the mask needs the tensor's rank, each axis equal or 1")
    return (x,)


register(OpDef(
    "masked_fill", (A("value", "float"),), _masked_fill, inputs=("x", "mask"),
    torch=Torch(function=Form("{x}.masked_fill({*rest}, {value})", _value)),
    kernel=Elementwise(lambda a, x: f"tl.where({x[1]}, {flt(a['value'])}, {x[0]})",
                       lambda a, x, y, g: [f"tl.where({x[1]}, 0.0, {g})", None]),
    family="merge", draw="merge", label=lambda a: f"masked_fill {format_value(a['value'])}",
    doc="`masked_fill(x, mask, value)`: `value` where the bool mask holds, else x."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys((
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "where",
    "masked_fill"
), free))
