"""Activations: elementwise (``relu`` ... ``sigmoid``) and along an axis (``softmax``, ``log_softmax``)."""

from __future__ import annotations

from typing import Any, Callable

from dlc.compiler.cost import free
from dlc.compiler.ops.kernel import Elementwise, Row, flt
from dlc.compiler.ops.pytorch import Form, Torch, axis as torch_axis
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import same_float, tensor, want_float, with_values

# SELU's constants (Klambauer et al. 2017), as torch.nn.SELU uses them.
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
INV_SQRT_2 = 0.7071067811865476


def _activation(name: str, attrs: tuple[A, ...], what: str, module: Form, function: Form, kernel: Elementwise,
                label: Callable[[dict[str, Any]], str] | None = None, in_place: bool = False,
                idempotent: bool = False) -> None:
    """Register an elementwise activation of a float tensor (same shape, same dtype)."""
    register(OpDef(name, attrs, same_float(name), torch=Torch(module=module, function=function), kernel=kernel,
                   family="activation", label=label, in_place=in_place, idempotent=idempotent,
                   doc=f"Activation: {what}."))


_activation(
    "relu", (), "max(x, 0)",
    Form("nn.ReLU()", in_place="nn.ReLU(inplace=True)"),
    Form("F.relu({x})", in_place="F.relu({x}, inplace=True)"),
    Elementwise(lambda a, x: f"tl.where({x[0]} > 0, {x[0]}, 0.0)",
                lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, 0.0)"]),
    in_place=True, idempotent=True)
_activation(
    "relu6", (), "min(max(x, 0), 6)",
    Form("nn.ReLU6()", in_place="nn.ReLU6(inplace=True)"), Form("F.relu6({x})", in_place="F.relu6({x}, inplace=True)"),
    # the gradient is PyTorch's (hardtanh's): zero at both corners
    Elementwise(lambda a, x: f"tl.minimum(tl.maximum({x[0]}, 0.0), 6.0)",
                lambda a, x, y, g: [f"tl.where({x[0]} > 0, tl.where({x[0]} < 6.0, {g}, 0.0), 0.0)"]),
    in_place=True, idempotent=True)
def _hardtanh(attrs, ins):
    if not attrs["min"] < attrs["max"]:
        raise ShapeError(f"`hardtanh`: min ({attrs['min']}) must be below max ({attrs['max']})", attr="max",
                         code="bad-argument")
    return same_float("hardtanh")(attrs, ins)


def _bounds(a, ins, outs) -> dict:
    return {"min_val": float(a["min"]), "max_val": float(a["max"])}


register(OpDef(
    "hardtanh", (A("min", "float", -1.0), A("max", "float", 1.0)), _hardtanh,
    torch=Torch(module=Form(lambda a: "nn.Hardtanh()" if (a["min"], a["max"]) == (-1.0, 1.0)
                            else "nn.Hardtanh({min_val}, {max_val})", _bounds),
                function=Form("F.hardtanh({x}{,min_val}{,max_val})", _bounds, {"min_val": -1.0, "max_val": 1.0})),
    # the gradient is PyTorch's: zero at and beyond both corners
    kernel=Elementwise(lambda a, x: f"tl.minimum(tl.maximum({x[0]}, {flt(a['min'])}), {flt(a['max'])})",
                       lambda a, x, y, g: [f"tl.where(({x[0]} > {flt(a['min'])}) & ({x[0]} < {flt(a['max'])}), "
                                           f"{g}, 0.0)"]),
    family="activation", label=with_values("hardtanh"),
    doc="Activation: min(max(x, min), max), `hardtanh(min=-1, max=1)`."))
_activation(
    "hardswish", (), "x * relu6(x + 3) / 6",
    Form("nn.Hardswish()"), Form("F.hardswish({x})"),
    # the gradient is PyTorch's, corners included: 0 up to -3, x / 3 + 1/2 between, 1 from 3 on
    Elementwise(lambda a, x: f"{x[0]} * tl.minimum(tl.maximum({x[0]} + 3.0, 0.0), 6.0) / 6.0",
                lambda a, x, y, g: [f"tl.where({x[0]} <= -3.0, 0.0, tl.where({x[0]} < 3.0, "
                                    f"{g} * ({x[0]} / 3.0 + 0.5), {g}))"]))
_activation(
    "hardsigmoid", (), "relu6(x + 3) / 6",
    Form("nn.Hardsigmoid()"), Form("F.hardsigmoid({x})"),
    Elementwise(lambda a, x: f"tl.minimum(tl.maximum({x[0]} + 3.0, 0.0), 6.0) / 6.0",
                lambda a, x, y, g: [f"tl.where(({x[0]} > -3.0) & ({x[0]} < 3.0), {g} / 6.0, 0.0)"]))


def _softplus_args(a, ins, outs) -> dict:
    return {"beta": float(a["beta"]), "threshold": float(a["threshold"])}


def _softplus(a, x: list[str]) -> str:
    bx = f"({x[0]} * {flt(a['beta'])})"
    return (f"tl.where({bx} > {flt(a['threshold'])}, {x[0]}, "
            f"(tl.maximum({bx}, 0.0) + tl.log(1.0 + tl.exp(-tl.abs({bx})))) / {flt(a['beta'])})")


_activation(
    "softplus", (A("beta", "positive", 1.0), A("threshold", "float", 20.0)),
    "log(1 + exp(beta * x)) / beta, x where beta * x > threshold",
    Form(lambda a: "nn.Softplus()" if (a["beta"], a["threshold"]) == (1.0, 20.0)
         else "nn.Softplus(beta={beta}, threshold={threshold})", _softplus_args),
    Form("F.softplus({x}{,beta}{,threshold})", _softplus_args, {"beta": 1.0, "threshold": 20.0}),
    Elementwise(_softplus,
                lambda a, x, y, g: [f"tl.where({x[0]} * {flt(a['beta'])} > {flt(a['threshold'])}, {g}, "
                                    f"{g} * tl.sigmoid({x[0]} * {flt(a['beta'])}))"]),
    label=with_values("softplus"))
_activation(
    "softsign", (), "x / (1 + |x|)",
    Form("nn.Softsign()"), Form("F.softsign({x})"),
    Elementwise(lambda a, x: f"{x[0]} / (1.0 + tl.abs({x[0]}))",
                lambda a, x, y, g: [f"{g} / ((1.0 + tl.abs({x[0]})) * (1.0 + tl.abs({x[0]})))"]))
_activation(
    "leaky_relu", (A("slope", "float", 0.01),), "x if x > 0 else slope * x",
    Form("nn.LeakyReLU({negative_slope})", lambda a, ins, outs: {"negative_slope": a["slope"]}),
    Form("F.leaky_relu({x}, {negative_slope})", lambda a, ins, outs: {"negative_slope": a["slope"]}),
    Elementwise(lambda a, x: f"tl.where({x[0]} > 0, {x[0]}, {x[0]} * {flt(a['slope'])})",
                lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, {g} * {flt(a['slope'])})"]),
    label=with_values("leaky_relu"))
_activation(
    "elu", (A("alpha", "float", 1.0),), "exponential linear unit",
    Form("nn.ELU({alpha})", lambda a, ins, outs: {"alpha": a["alpha"]}),
    Form("F.elu({x}, {alpha})", lambda a, ins, outs: {"alpha": a["alpha"]}),
    Elementwise(lambda a, x: f"tl.where({x[0]} > 0, {x[0]}, {flt(a['alpha'])} * (tl.exp({x[0]}) - 1.0))",
                lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, {g} * {flt(a['alpha'])} * tl.exp({x[0]}))"]),
    label=with_values("elu"))
_activation(
    "selu", (), "scaled exponential linear unit",
    Form("nn.SELU()"), Form("F.selu({x})"),
    Elementwise(lambda a, x: f"{flt(SELU_SCALE)} * tl.where({x[0]} > 0, {x[0]}, "
                             f"{flt(SELU_ALPHA)} * (tl.exp({x[0]}) - 1.0))",
                lambda a, x, y, g: [f"{g} * {flt(SELU_SCALE)} * tl.where({x[0]} > 0, 1.0, "
                                    f"{flt(SELU_ALPHA)} * tl.exp({x[0]}))"]))


def _gelu(a, x: list[str]) -> str:
    if a["approximate"] == "tanh":
        return f"dlc_gelu_tanh({x[0]})"
    return f"0.5 * {x[0]} * (1.0 + tl.math.erf({x[0]} * {flt(INV_SQRT_2)}))"


def _gelu_grad(a, x: list[str], y: str, g: str) -> list[str]:
    if a["approximate"] == "tanh":
        return [f"{g} * dlc_gelu_tanh_grad({x[0]})"]
    return [f"{g} * dlc_gelu_grad({x[0]})"]


def _approximate(a, ins, outs) -> dict:
    return {"approximate": a["approximate"]}


_activation(
    "gelu", (A("approximate", "enum", "none", ("none", "tanh")),), "Gaussian error linear unit",
    Form("nn.GELU({=approximate})", _approximate, {"approximate": "none"}),
    Form("F.gelu({x}{,approximate})", _approximate, {"approximate": "none"}),
    Elementwise(_gelu, _gelu_grad))
_activation(
    "silu", (), "x * sigmoid(x) (swish)",
    Form("nn.SiLU()", in_place="nn.SiLU(inplace=True)"), Form("F.silu({x})", in_place="F.silu({x}, inplace=True)"),
    Elementwise(lambda a, x: f"{x[0]} * tl.sigmoid({x[0]})",
                lambda a, x, y, g: [f"{g} * tl.sigmoid({x[0]}) * (1.0 + {x[0]} * (1.0 - tl.sigmoid({x[0]})))"]),
    in_place=True)
_activation(
    "mish", (), "x * tanh(softplus(x))",
    Form("nn.Mish()"), Form("F.mish({x})"),
    Elementwise(lambda a, x: f"{x[0]} * dlc_tanh(dlc_softplus({x[0]}))",
                lambda a, x, y, g: [f"{g} * dlc_mish_grad({x[0]})"]))
_activation(
    "tanh", (), "hyperbolic tangent",
    Form("nn.Tanh()"), Form("torch.tanh({x})"),
    Elementwise(lambda a, x: f"dlc_tanh({x[0]})", lambda a, x, y, g: [f"{g} * (1.0 - {y} * {y})"]))
_activation(
    "sigmoid", (), "logistic sigmoid",
    Form("nn.Sigmoid()"), Form("torch.sigmoid({x})"),
    Elementwise(lambda a, x: f"tl.sigmoid({x[0]})", lambda a, x, y, g: [f"{g} * {y} * (1.0 - {y})"]))


# ---- along an axis: row kernels ---------------------------------------------------------


def _along(name: str):
    def rule(attrs, ins):
        x = tensor(ins[0])
        want_float(x, name)
        return (x,)
    return rule


def _last_axis(a, rank: int) -> int | None:
    """A row kernel works on the last axis only."""
    return 1 if a["dim"] in (-1, rank - 1) else None


def _exp_row(x: str) -> list[str]:
    return [
        f"row_max = tl.max(tl.where(mask, {x}, -float(\"inf\")), 0)",
        f"row_exp = tl.where(mask, tl.exp({x} - row_max), 0.0)",
        "row_sum = tl.sum(row_exp, 0)",
    ]


def _dim(a, ins, outs) -> dict:
    return {"dim": torch_axis(a["dim"])}


register(OpDef(
    "softmax", (A("dim", "axis", -1),), _along("softmax"),
    torch=Torch(module=Form("nn.Softmax(dim={dim})", _dim), function=Form("torch.softmax({x}, dim={dim})", _dim)),
    kernel=Row(axes=_last_axis, forward=lambda a, x, y: _exp_row(x[0]) + [f"{y} = row_exp / row_sum"],
               backward=lambda a, x, y, g, gx: [
                   f"{gx} = {y} * ({g} - tl.sum(tl.where(mask, {g} * {y}, 0.0), 0))"]),
    family="activation", doc="`softmax(dim=-1)` along a batch-less axis."))
register(OpDef(
    "log_softmax", (A("dim", "axis", -1),), _along("log_softmax"),
    torch=Torch(module=Form("nn.LogSoftmax(dim={dim})", _dim),
                function=Form("torch.log_softmax({x}, dim={dim})", _dim)),
    kernel=Row(axes=_last_axis, forward=lambda a, x, y: _exp_row(x[0]) + [f"{y} = {x[0]} - row_max - tl.log(row_sum)"],
               backward=lambda a, x, y, g, gx: [f"{gx} = {g} - tl.exp({y}) * tl.sum(tl.where(mask, {g}, 0.0), 0)"]),
    family="activation", doc="`log_softmax(dim=-1)` along a batch-less axis."))


def _glu(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "glu")
    axis = attrs["dim"] % x.rank  # the axis kind has checked it against the rank
    size = x.shape[axis]
    if isinstance(size, str):
        raise ShapeError(f"`glu` halves axis {attrs['dim']}, whose size `{size}` is not known", attr="dim")
    if size % 2:
        raise ShapeError(f"`glu` halves axis {attrs['dim']}, but its size {size} is odd", attr="dim")
    return (x.with_shape(x.shape[:axis] + (size // 2,) + x.shape[axis + 1:]),)


register(OpDef(
    "glu", (A("dim", "axis", -1),), _glu,
    torch=Torch(module=Form("nn.GLU(dim={dim})", _dim), function=Form("F.glu({x}, dim={dim})", _dim)),
    family="activation", label=with_values("glu"),
    doc="Gated linear unit `glu(dim=-1)`: the first half of the axis times the sigmoid of the second half."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys((
    "relu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "softplus", "softsign", "leaky_relu",
    "elu", "selu", "gelu", "silu", "mish", "tanh", "sigmoid", "softmax", "log_softmax", "glu"
), free))
