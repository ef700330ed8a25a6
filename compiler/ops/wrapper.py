"""Wrappers: ``timedistributed`` applies a layer at every time step; ``weightnorm`` reparametrises a layer's weight.

``timedistributed`` of one built-in layer is one node. Of a block or a group (``timedistributed(Block(8))``,
``timedistributed((conv2d(8, k=3) -> relu))``) the lowering makes three: ``fold_time`` (the time axis merged into
the batch), the block instance or ``nn.Sequential`` run on every step at once, and ``unfold_time`` (batch and time
split again). Those two ops are internal: the compiler makes them, a spec never calls them by name.
"""

from __future__ import annotations

from dlc.compiler.cost import Poly, free, shape
from dlc.compiler.kinds import ArgumentError, LayerArg, Site, wraps_layer
from dlc.compiler.ops.pytorch import CallSite, Filled, Form, Torch, Var, assign
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, op_of, register, set_costs
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
    step = _step(x, inner)
    (y,) = op_of(inner["op"]).infer(inner, [step])
    # each step's channels sit on axis 1 of the result when the layer keeps them first
    return (TensorType((x.shape[0],) + y.shape, y.dtype, "tcf" if y.layout == "cf" and y.rank >= 1 else "fl"),)


def _step(x: TensorType, inner: dict) -> TensorType:
    """The type of one time step of ``x`` [T, ...], as the wrapped layer sees it."""
    channels_first = x.layout == "tcf" or (x.rank - 1 >= 2 and op_of(inner["op"]).family == "conv")
    return TensorType(x.shape[1:], x.dtype, "cf" if channels_first else x.layout)


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


# ---- time folded into the batch (timedistributed over a block or group) ----------------------------------------


def step_type(x: TensorType) -> TensorType:
    """The type of one time step of ``x`` ([T, ...]): its other axes, channels first unless ``x`` is a sequence
    of features-last steps (a step of rank 1 has its features last)."""
    return TensorType(x.shape[1:], x.dtype, "fl" if x.layout == "fl" or x.rank < 3 else "cf")


def _fold_time(attrs, ins):
    x = tensor(ins[0])
    if x.rank < 2:
        raise ShapeError(f"`timedistributed` expects [T, ...] (a time axis, then a step), got {shape_str(x.shape)}",
                         hint="shapes never include the batch dimension")
    return (step_type(x),)


def _unfold_time(attrs, ins):
    y, x = tensor(ins[0]), tensor(ins[1])
    # each step's channels sit on axis 1 of the result when the steps keep them first
    return (TensorType((x.shape[0],) + y.shape, y.dtype, "tcf" if y.layout == "cf" and y.rank >= 1 else "fl"),)


def folds_time(op: str) -> int:
    """How ``op`` changes what the batch axis holds: 1 for ``fold_time`` (time joins the batch), -1 for
    ``unfold_time`` (it leaves again), 0 for every other op."""
    return _TIME_FOLDS.get(op, 0)


_TIME_FOLDS = {"fold_time": 1, "unfold_time": -1}

register(OpDef(
    "fold_time", (), _fold_time, internal=True,
    torch=Torch(function=Form("{x}.flatten(0, 1)")),
    family="wrapper", label=lambda a: "time into batch",
    doc="Internal (made by `timedistributed` of a block or group): [B, T, ...] as [B*T, ...]."))

register(OpDef(
    "unfold_time", (), _unfold_time, inputs=("x", "like"), internal=True,
    torch=Torch(function=Form("{x}.unflatten(0, {x1}.shape[:2])")),
    family="wrapper", label=lambda a: "batch into time",
    doc="Internal (made by `timedistributed` of a block or group): [B*T, ...] as [B, T, ...], "
        "B and T read from `like`."))


# ---- weight normalisation ------------------------------------------------------------------------------------


class WeightedLayer(LayerArg):
    """A layer with a `weight` whose first axis weight normalisation keeps a norm for: linear or a convolution."""

    name = "weighted_layer"
    example = "conv1d(64, k=3)"

    def accept(self, op: OpDef, site: Site) -> None:
        if op.family not in ("linear", "conv") or wraps_layer(op):
            raise ArgumentError(f"`{site.op.name}` wraps `linear` or a convolution, not `{op.name}`")


def _weightnorm(attrs, ins):
    op, inner = _inner(attrs)
    return op.infer(inner, ins)


def _wn_params(a, ins):
    # the weight becomes its direction (original1, the weight's size) and one norm per slice of its first axis
    # (original0): out_features / out_channels, or a transposed convolution's in_channels
    op, inner = _inner(a)
    first = ins[0].shape[0] if op.attr("output_pad") is not None else inner.get("channels", inner.get("units"))
    return op.count_params(inner, ins) + first


def _wn_module(a, ins, outs) -> dict:
    op, inner = _inner(a)
    return {"layer": op.torch.constructor(inner, ins, outs)}


register(OpDef(
    "weightnorm", (A("layer", WeightedLayer()),), _weightnorm, count_params=_wn_params, stateful=True,
    torch=Torch(module=Form("nn.utils.parametrizations.weight_norm({layer})", _wn_module)),
    family="wrapper", wraps=True, label=lambda a: "weightnorm(" + _inner(a)[0].describe(_inner(a)[1]) + ")",
    doc="Weight normalisation of a linear or convolution layer (its weight as a norm times a direction, "
        "`nn.utils.parametrizations.weight_norm`): `weightnorm(conv1d(64, k=3))`."))


def _td_cost(a, ins, outs) -> Poly | None:
    # the layer once per time step, on one step's tensor
    op, inner = _inner(a)
    step = _step(ins[0], a["layer"])
    per_step = op.cost(inner, [step], op.infer(inner, [step])) if op.cost is not None else None
    return None if per_step is None else Poly.dim(shape(ins[0])[0]) * per_step


def _wn_cost(a, ins, outs) -> Poly | None:
    # the wrapped layer's products; recomputing the weight from its direction and norm is elementwise
    op, inner = _inner(a)
    return op.cost(inner, ins, outs) if op.cost is not None else None


set_costs({"timedistributed": _td_cost, "fold_time": free, "unfold_time": free, "weightnorm": _wn_cost})
