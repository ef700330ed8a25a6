"""Merges and arithmetic: ``concat``, ``add``, ``sub``, ``div``, ``mul``, ``mean``, ``abs``, ``scale``, ``shift``,
the elementwise math functions ``exp``, ``log``, ``sqrt``, ``rsqrt``, ``clamp`` and ``pow``, and ``matmul``.

The merges have no module form: they are expressions in ``forward`` (and ellipses in diagrams).
"""

from __future__ import annotations

from dlc.compiler.cost import free, matmul_macs, shape
from dlc.compiler.ops.kernel import Elementwise, flt
from dlc.compiler.ops.pytorch import Form, Torch, axis as torch_axis
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import broadcast, promote, same_float, tensor, want_float, with_values
from dlc.compiler.types import TensorType, shape_str


def _concat(attrs, ins):
    xs = [tensor(t) for t in ins]
    first = xs[0]
    dim = attrs["dim"]
    ax = first.feature_axis if dim is None else dim % first.rank
    total = 0
    symbolic = False
    for t in xs:
        if t.rank != first.rank:
            raise ShapeError(f"`concat` needs inputs of equal rank, got {shape_str(first.shape)} and "
                             f"{shape_str(t.shape)}")
        for i, (a, b) in enumerate(zip(first.shape, t.shape)):
            if i != ax and a != b:
                raise ShapeError(
                    f"`concat` along axis {ax} needs equal sizes on the other axes, got "
                    f"{shape_str(first.shape)} and {shape_str(t.shape)}",
                    hint="shapes are batch-less; pass `dim=` to concatenate along another axis")
        if isinstance(t.shape[ax], str):
            symbolic = True
        else:
            total += t.shape[ax]
    shape = list(first.shape)
    shape[ax] = "+".join(str(t.shape[ax]) for t in xs) if symbolic else total
    return (TensorType(tuple(shape), promote([t.dtype for t in xs]), first.layout),)


def _concat_axis(a, ins, outs) -> dict:
    first = ins[0]
    return {"dim": first.feature_axis + 1 if a["dim"] is None else torch_axis(a["dim"])}


register(OpDef(
    "concat", (A("dim", "axis", None, keyword_only=True),), _concat, variadic=True,
    torch=Torch(function=Form("torch.cat([{*xs}], dim={dim})", _concat_axis)),
    family="merge", draw="merge", label=lambda a: "concat", aka=("cat", "concatenate"),
    doc="Concatenate tensors along the feature axis (channels for [C, H, W], last for [T, F]) or along `dim`."))


def _elementwise(name: str):
    def rule(attrs, ins):
        xs = [tensor(t) for t in ins]
        shape = xs[0].shape
        for t in xs[1:]:
            if t.rank != xs[0].rank:
                # both carry the batch axis in front, so NumPy's right-aligned broadcasting would misplace it
                raise ShapeError(f"`{name}` needs tensors of equal rank, got {shape_str(xs[0].shape)} and "
                                 f"{shape_str(t.shape)}",
                                 hint="shapes are batch-less but every tensor has a batch axis in front; "
                                      "`reshape` the smaller one to the same rank (size-1 axes broadcast)")
            shape = broadcast(shape, t.shape, name)
        return (TensorType(shape, promote([t.dtype for t in xs]), xs[0].layout),)
    return rule


def _product(names: list[str]) -> str:
    return " * ".join(names) if names else "1.0"


register(OpDef(
    "add", (), _elementwise("add"), inputs=("a", "b"), variadic=True,
    torch=Torch(function=Form("{*xs| + }", in_place="{x}.add_({*rest| + })")),
    kernel=Elementwise(lambda a, x: " + ".join(x), lambda a, x, y, g: [g] * len(x)),
    family="merge", draw="merge", label=lambda a: "add", in_place=True, overwritable=True,
    doc="Elementwise sum (`a + b`), with broadcasting."))
register(OpDef(
    "sub", (), _elementwise("sub"), inputs=("a", "b"),
    torch=Torch(function=Form("{*xs| - }")),
    kernel=Elementwise(lambda a, x: f"{x[0]} - {x[1]}", lambda a, x, y, g: [g, f"-{g}"]),
    family="merge", draw="merge", label=lambda a: "sub", doc="Elementwise difference (`a - b`)."))
def _div(attrs, ins):
    (out,) = _elementwise("div")(attrs, ins)
    want_float(out, "div")  # integer tensors divide into floats in PyTorch: say so rather than guess a dtype
    return (out,)


register(OpDef(
    "div", (), _div, inputs=("a", "b"),
    torch=Torch(function=Form("{*xs| / }")),
    kernel=Elementwise(lambda a, x: f"{x[0]} / {x[1]}",
                       lambda a, x, y, g: [f"{g} / {x[1]}", f"-{g} * {x[0]} / ({x[1]} * {x[1]})"]),
    family="merge", draw="merge", label=lambda a: "div", doc="Elementwise quotient (`a / b`), with broadcasting."))
register(OpDef(
    "mul", (), _elementwise("mul"), inputs=("a", "b"), variadic=True,
    torch=Torch(function=Form("{*xs| * }")),
    kernel=Elementwise(lambda a, x: " * ".join(x),
                       lambda a, x, y, g: [f"{g} * {_product(x[:i] + x[i + 1:])}" for i in range(len(x))]),
    family="merge", draw="merge", label=lambda a: "mul", doc="Elementwise product (`a * b`)."))
register(OpDef(
    "mean", (), _elementwise("mean"), inputs=("a", "b"), variadic=True,
    torch=Torch(function=Form("({*xs| + }) / {n}")),
    kernel=Elementwise(lambda a, x: f"({' + '.join(x)}) * {flt(1 / len(x))}",
                       lambda a, x, y, g: [f"{g} * {flt(1 / len(x))}"] * len(x)),
    family="merge", draw="merge", label=lambda a: "ave", doc="Elementwise mean of several tensors: `mean(a, b, c)`."))


def _same(attrs, ins):
    return (tensor(ins[0]),)


register(OpDef(
    "abs", (), _same,
    torch=Torch(module=Form("Abs()"), function=Form("torch.abs({x})")),
    kernel=Elementwise(lambda a, x: f"tl.abs({x[0]})",
                       lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, tl.where({x[0]} < 0, -{g}, 0.0))"]),
    family="activation", doc="Elementwise absolute value."))
register(OpDef(
    "scale", (A("factor", "float"),), same_float("scale"),
    torch=Torch(module=Form("Scale({factor})", lambda a, ins, outs: {"factor": a["factor"]}),
                function=Form("{x} * {factor}", lambda a, ins, outs: {"factor": a["factor"]})),
    kernel=Elementwise(lambda a, x: f"{x[0]} * {flt(a['factor'])}", lambda a, x, y, g: [f"{g} * {flt(a['factor'])}"]),
    family="arith", label=with_values("scale"), doc="Multiply by a constant (`x * 0.5`, `x / 2`)."))
register(OpDef(
    "shift", (A("offset", "float"),), same_float("shift"),
    torch=Torch(module=Form("Shift({offset})", lambda a, ins, outs: {"offset": a["offset"]}),
                function=Form("{x} + {offset}", lambda a, ins, outs: {"offset": a["offset"]})),
    kernel=Elementwise(lambda a, x: f"{x[0]} + {flt(a['offset'])}", lambda a, x, y, g: [g]),
    family="arith", label=with_values("shift"), doc="Add a constant (`x + 1`, `x - 1`)."))


def _math(name: str, what: str, function: str, kernel: Elementwise) -> None:
    """Register an elementwise math function of a float tensor: ``torch.<function>``, as a module ``Apply``."""
    register(OpDef(
        name, (), same_float(name),
        torch=Torch(module=Form(f"Apply(torch.{function})"), function=Form(f"torch.{function}({{x}})")),
        kernel=kernel, family="arith", doc=f"Elementwise {what}."))


_math("exp", "exponential", "exp",
      Elementwise(lambda a, x: f"tl.exp({x[0]})", lambda a, x, y, g: [f"{g} * {y}"]))
_math("log", "natural logarithm", "log",
      Elementwise(lambda a, x: f"tl.log({x[0]})", lambda a, x, y, g: [f"{g} / {x[0]}"]))
_math("sqrt", "square root", "sqrt",
      Elementwise(lambda a, x: f"tl.sqrt({x[0]})", lambda a, x, y, g: [f"{g} / (2.0 * {y})"]))
_math("rsqrt", "reciprocal square root, 1 / sqrt(x)", "rsqrt",
      Elementwise(lambda a, x: f"1.0 / tl.sqrt({x[0]})", lambda a, x, y, g: [f"-0.5 * {g} * {y} * {y} * {y}"]))


def _clamp(attrs, ins):
    lo, hi = attrs["min"], attrs["max"]
    if lo is None and hi is None:
        raise ShapeError("`clamp` needs `min`, `max` or both", code="missing-argument")
    if lo is not None and hi is not None and not lo <= hi:
        raise ShapeError(f"`clamp`: min ({lo}) must not be above max ({hi})", attr="max", code="bad-argument")
    return same_float("clamp")(attrs, ins)


def _clamp_bounds(a, ins, outs) -> dict:
    return {"min": None if a["min"] is None else float(a["min"]), "max": None if a["max"] is None else float(a["max"])}


def _clamp_kernel(a, x: list[str]) -> str:
    y = x[0]
    if a["min"] is not None:
        y = f"tl.maximum({y}, {flt(a['min'])})"
    if a["max"] is not None:
        y = f"tl.minimum({y}, {flt(a['max'])})"
    return y


def _clamp_grad(a, x: list[str], y: str, g: str) -> list[str]:
    # PyTorch's: the gradient passes strictly inside the bounds (torch.clamp's gradient is 0 at a bound)
    inside = [f"({x[0]} > {flt(a['min'])})" if a["min"] is not None else "",
              f"({x[0]} < {flt(a['max'])})" if a["max"] is not None else ""]
    return [f"tl.where({' & '.join(c for c in inside if c)}, {g}, 0.0)"]


register(OpDef(
    "clamp", (A("min", "float", None), A("max", "float", None)), _clamp,
    torch=Torch(module=Form("Apply(torch.clamp{,min}{,max})", _clamp_bounds, {"min": None, "max": None}),
                function=Form("torch.clamp({x}{,min}{,max})", _clamp_bounds, {"min": None, "max": None})),
    kernel=Elementwise(_clamp_kernel, _clamp_grad),
    family="arith", label=with_values("clamp"),
    doc="Elementwise clamp into [min, max]: `clamp(min=0, max=1)`; either bound may be left out."))


def _matmul(attrs, ins):
    a, b = tensor(ins[0]), tensor(ins[1])
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"`matmul` multiplies matrices: each operand needs at least 2 batch-less axes, got "
                         f"{shape_str(a.shape)} and {shape_str(b.shape)}",
                         hint="shapes are batch-less and every tensor has a batch axis in front; `reshape` a vector "
                              "[K] to [1, K] or [K, 1]")
    if a.rank != b.rank:
        raise ShapeError(f"`matmul` needs operands of equal rank, got {shape_str(a.shape)} and {shape_str(b.shape)}",
                         hint="both carry the batch axis in front; `reshape` the smaller one (size-1 axes "
                              "broadcast)")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"`matmul`: the inner sizes differ: {shape_str(a.shape)} @ {shape_str(b.shape)} multiplies "
                         f"[..., N, K] by [..., K, M], but {a.shape[-1]} != {b.shape[-2]}",
                         hint="`permute` the second operand to transpose it")
    for t in (a, b):
        want_float(t, "matmul")
    batch = broadcast(a.shape[:-2], b.shape[:-2], "matmul") if a.rank > 2 else ()
    return (TensorType(batch + (a.shape[-2], b.shape[-1]), promote([a.dtype, b.dtype]), "fl"),)


register(OpDef(
    "matmul", (), _matmul, inputs=("a", "b"),
    torch=Torch(function=Form("torch.matmul({x}, {*rest})")),
    family="merge", draw="merge", label=lambda a: "matmul",
    doc="Matrix product per sample (`a @ b`): [..., N, K] by [..., K, M] gives [..., N, M]; leading axes broadcast."))


def _power(e: float, x: str) -> str:
    """Triton text for ``x ** e`` with a constant ``e`` (Triton has no pow): small integer powers as products,
    others as exp(e log|x|), the sign restored for odd integer powers; a fractional power of a negative number
    is nan, as in PyTorch."""
    if e == 0:
        return "1.0"
    if float(e).is_integer() and abs(e) <= 4:
        product = " * ".join([x] * int(abs(e)))
        return product if e > 0 else f"1.0 / ({product})"
    magnitude = f"tl.exp({flt(e)} * tl.log(tl.abs({x})))"
    if float(e).is_integer():
        return f"tl.where({x} < 0, -{magnitude}, {magnitude})" if int(e) % 2 else magnitude
    return f"tl.exp({flt(e)} * tl.log({x}))"


def _exponent(a, ins, outs) -> dict:
    return {"exponent": a["exponent"]}


register(OpDef(
    "pow", (A("exponent", "float"),), same_float("pow"),
    torch=Torch(module=Form("Apply(torch.pow, exponent={exponent})", _exponent),
                function=Form("torch.pow({x}, {exponent})", _exponent)),
    kernel=Elementwise(lambda a, x: _power(a["exponent"], x[0]),
                       lambda a, x, y, g: [f"{g} * {flt(a['exponent'])} * ({_power(a['exponent'] - 1, x[0])})"]),
    family="arith", label=with_values("pow"), doc="Elementwise power with a constant exponent: `pow(x, 2.0)`."))


# only the matrix product multiplies matrices: [..., N, K] @ [..., K, M] is N*K*M MACs per (broadcast) batch index
set_costs({"matmul": lambda a, ins, outs: matmul_macs(shape(outs[0])[:-2], shape(ins[0])[-2], shape(ins[0])[-1],
                                                      shape(ins[1])[-1]),
           **dict.fromkeys(("concat", "add", "sub", "div", "mul", "mean", "abs", "scale", "shift", "exp", "log",
                            "sqrt", "rsqrt", "clamp", "pow"), free)})
