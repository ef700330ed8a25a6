"""Wrappers: ``timedistributed`` applies a layer at every time step."""

from __future__ import annotations

from dlc.compiler.ops.pytorch import CallSite, Filled, Form, Torch, Var, assign
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, op_of, register
from dlc.compiler.ops.shapes import tensor
from dlc.compiler.types import TensorType, shape_str


def _inner(a) -> tuple[OpDef, dict]:
    inner = dict(a["layer"])
    return op_of(inner.pop("op")), inner


def _timedistributed(attrs, ins):
    x = tensor(ins[0])
    if x.rank < 2:
        raise ShapeError(f"`timedistributed` expects [T, ...], got {shape_str(x.shape)}")
    inner = attrs["layer"]
    channels_first = x.layout == "tcf" or (x.rank - 1 >= 2 and op_of(inner["op"]).family == "conv")
    step = TensorType(x.shape[1:], x.dtype, "cf" if channels_first else x.layout)
    (y,) = op_of(inner["op"]).infer(inner, [step])
    # each step's channels sit on axis 1 of the result when the layer keeps them first
    return (TensorType((x.shape[0],) + y.shape, y.dtype, "tcf" if y.layout == "cf" and y.rank >= 1 else "fl"),)


def _td_params(a, ins):
    op, inner = _inner(a)
    x = ins[0]
    return op.count_params(inner, [TensorType(x.shape[1:], x.dtype, "cf")])


def _module(a, ins, outs) -> dict:
    op, inner = _inner(a)
    t = ins[0]
    return {"layer": op.torch.constructor(inner, [TensorType(t.shape[1:], t.dtype, "cf")], outs)}


def _call(site: CallSite) -> list[Filled]:
    steps = Filled("{mod}({x}.flatten(0, 1)).unflatten(0, {x}.shape[:2])",
                   {"mod": Var(site.mod), "x": Var(site.args[0])})
    return [assign(site.outs[:1], steps, "every time step")]


register(OpDef(
    "timedistributed", (A("layer", "step_layer"),), _timedistributed, count_params=_td_params, stateful=True,
    torch=Torch(module=Form("{layer}", _module), call=_call),
    family="wrapper", wraps=True, label=lambda a: "timedistributed(" + _inner(a)[0].describe(_inner(a)[1]) + ")",
    doc="Applies a single-input layer at every time step of [T, ...]: `timedistributed(conv2d(16, k=3))` on "
        "[T, C, H, W]."))
