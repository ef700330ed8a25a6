"""Learnable tensors and layers whose point is a learnable tensor: ``param`` (declared) and ``prelu``.

``param NAME: [shape] dtype = initialiser`` declares a tensor of the module (an ``nn.Parameter``), named in the
state_dict by the spec. Shapes are batch-less, so it is stored with a leading axis of 1 (``torch.zeros(1, 1,
768)``: torchvision ViT's ``class_token``), and in ``forward`` it is expanded over the batch of the body's first
input (a view, no copy), so every op sees a batch like any other tensor's: ``x + pos`` broadcasts, ``concat``
and recurrent layers get the real batch. Its node has that input as its one IR input (its batch is read there).

This module also says which tensors of a layer ``weight_init``, ``bias_init`` and ``tie`` reach
(:func:`weight_shape`), as PyTorch names them.
"""

from __future__ import annotations

import math
from typing import Any

from dlc.compiler.cost import free
from dlc.compiler.ops.initialisers import describe_init, needs_fans
from dlc.compiler.ops.kernel import Elementwise
from dlc.compiler.ops.pytorch import OMIT, CallSite, Filled, Form, Torch, Var, assign
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, op_of, register, set_costs
from dlc.compiler.ops.shapes import pair, same_float, tensor
from dlc.compiler.types import Dim, TensorType, Type, shape_str


def _declared(attrs, ins):
    raise ShapeError("a param's type is its declaration's")  # never asked: declared ops keep their types


def _storage(a: dict[str, Any], ins: list[Type], outs: list[Type]) -> dict[str, Any]:
    init = a["init"]
    start = init["init"] if init is not None and init["init"] in ("zeros", "ones") else "empty"
    if init is None:
        start = "zeros"
    dtype = a["dtype"]
    return {"start": Var(f"torch.{start}"), "size": (1,) + tuple(a["shape"]),
            "dtype": Var(f"torch.{dtype}") if dtype != "float32" else OMIT}


def _expand(site: CallSite) -> list[Filled]:
    """``pos = self.pos.expand(x.shape[0], -1, -1)``: the batch of the body's first input, the rest kept."""
    keep = tuple(Var("-1") for _ in site.attrs["shape"])
    template = "{mod}.expand({x}.shape[0], {*keep})" if keep else "{mod}.expand({x}.shape[0])"
    return [assign(site.outs[:1], Filled(template, {"mod": Var(site.mod), "x": Var(site.args[0]), "keep": keep}))]


register(OpDef(
    "param", (), _declared, inputs=("like",), stateful=True, declared=True,
    count_params=lambda a, ins: math.prod(a["shape"]),
    torch=Torch(module=Form("nn.Parameter({start}({*size}{,dtype}))", _storage), call=_expand),
    family="param", label=lambda a: "param [" + ", ".join(map(str, a["shape"])) + "]",
    doc="A learnable tensor, declared: `param pos: [197, 768] = normal(std=0.02)` (zeros unless given); "
        "stored with a leading axis of 1, expanded over the batch where used.",
))


def _prelu(attrs, ins):
    x = tensor(ins[0])
    (y,) = same_float("prelu")(attrs, ins)
    n = attrs["num_parameters"]
    if n > 1:
        if x.rank == 0:
            raise ShapeError("`prelu` with one slope per channel needs a tensor with a feature axis",
                             attr="num_parameters", hint="`prelu()` has one slope for every element")
        if isinstance(x.features, int) and x.features != n:
            raise ShapeError(f"`prelu`: {n} slopes for {x.features} channels of {x}", attr="num_parameters",
                             hint=f"`prelu({x.features})`, or `prelu()` for one shared slope")
    return (y,)


def _prelu_call(site: CallSite) -> list[Filled]:
    """nn.PReLU's slopes are per channel on axis 1: a features-last tensor moves its feature axis there."""
    x = tensor(site.ins[0])
    where = x.feature_axis + 1 if x.rank else 1
    if site.attrs["num_parameters"] == 1 or where == 1:
        return [assign(site.outs[:1], site.call())]
    moved = Filled("{mod}({x}.movedim({axis}, 1)).movedim(1, {axis})",
                   {"mod": Var(site.mod), "x": Var(site.args[0]), "axis": Var(str(where))})
    return [assign(site.outs[:1], moved)]


def _slopes_shape(a: dict[str, Any], x: TensorType) -> tuple[int, ...]:
    """prelu's slopes as a kernel operand: one for all, or one per channel (the feature axis) with size-1 axes
    after it, so they broadcast over ``x`` (batch-less)."""
    n = a["num_parameters"]
    return (1,) if n == 1 else (n,) + (1,) * (x.rank - 1 - x.feature_axis)


register(OpDef(
    "prelu", (A("num_parameters", "int", 1, min=1), A("init", "float", 0.25)), _prelu,
    count_params=lambda a, ins: a["num_parameters"], stateful=True,
    torch=Torch(module=Form(lambda a: "nn.PReLU({num_parameters}{,init})" if a["num_parameters"] > 1 else
                            "nn.PReLU({=init})",
                            lambda a, ins, outs: {"num_parameters": a["num_parameters"], "init": a["init"]},
                            {"num_parameters": 1, "init": 0.25}),
                call=_prelu_call,
                # the kernel's reference: the caller gives the slopes shaped as the kernel reads them (the module's
                # own forward is nn.PReLU); without them, the initial slope
                function=Form("torch.where({x} > 0, {x}, {weight} * {x})",
                              lambda a, ins, outs: {"weight": float(a["init"])})),
    # the slopes are the last operand: d/dx is 1 or the slope, d/dslope is 0 or x
    kernel=Elementwise(lambda a, x: f"tl.where({x[0]} > 0, {x[0]}, {x[1]} * {x[0]})",
                       lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, {g} * {x[1]})",
                                           f"tl.where({x[0]} > 0, 0.0, {g} * {x[0]})"],
                       weight=_slopes_shape),
    family="activation", label=lambda a: "prelu" + (f" {a['num_parameters']}" if a["num_parameters"] > 1 else ""),
    doc="Activation with learnable slopes: x if x > 0 else a * x; `prelu()` one slope, `prelu(channels)` one per "
        "channel (the feature axis), `init=0.25`.",
))


def step_layer(op: str, attrs: dict[str, Any], ins: list[Type]) -> tuple[str, dict[str, Any], list[Type]]:
    """The layer whose tensors a module holds: for ``timedistributed(layer)`` (whose module is the wrapped layer
    itself) the wrapped layer, its arguments and its input type at one time step; else ``op`` itself."""
    inner = attrs.get("layer")
    if not (isinstance(inner, dict) and op_of(op).family == "wrapper" and ins and isinstance(ins[0], TensorType)):
        return op, attrs, ins
    x = ins[0]
    # the step's layout as timedistributed's shape rule gives it: only the wrapped op's family matters here
    return inner["op"], {k: v for k, v in inner.items() if k != "op"}, [TensorType(x.shape[1:], x.dtype, "cf")]


def weight_shape(op: str, attrs: dict[str, Any], ins: list[Type]) -> tuple[Dim, ...] | None:
    """The shape of the layer's ``weight`` as PyTorch makes it, where ``tie`` can share it; else None."""
    op, attrs, ins = step_layer(op, attrs, ins)
    o = op_of(op)
    if o.wraps or o.family not in ("linear", "conv", "embedding"):
        return None
    x = ins[0] if ins else None
    if o.family == "embedding":
        return (attrs["vocab"], attrs["dim"])
    if not isinstance(x, TensorType):
        return None
    if o.family == "linear":
        return (attrs["units"], x.shape[-1])
    k = attrs.get("k")
    groups = attrs.get("groups", 1)
    n = max(x.rank - 1, 1)
    kernel = pair(k, n) if k is not None else ()
    c_in = x.shape[0]
    per_group = c_in // groups if isinstance(c_in, int) else c_in
    if "output_pad" in attrs:  # a transposed convolution: [in, out / groups, *k]
        return (c_in, attrs["channels"] // groups) + tuple(kernel)
    return (attrs["channels"], per_group) + tuple(kernel)


# The arguments every layer with parameters takes besides its own: initialisers of its weights and biases, and a
# layer of the same body whose weight it shares.
LAYER_PARAM_ARGS = ("weight_init", "bias_init", "tie")


def names_parameters(op: OpDef) -> bool:
    """Whether :func:`parameter_tensors` knows the tensors of ``op``'s module (not those of any wrapped layer)."""
    return not op.wraps or op.family == "recurrent"


def parameter_tensors(op: str, attrs: dict[str, Any], ins: list[Type]) -> tuple[list[str], list[str]] | None:
    """The module's weights and biases as PyTorch names them (``weight_hh_l0``, ``out_proj.weight``), which
    ``weight_init`` and ``bias_init`` initialise; None where dlc does not know them (a wrapper of any layer)."""
    op, attrs, ins = step_layer(op, attrs, ins)
    o = op_of(op)
    if o.family == "recurrent":
        cell, directions = (attrs["layer"], 2) if o.wraps else (attrs, 1)
        suffixes = [f"l{k}{'_reverse' if d else ''}" for k in range(cell["layers"]) for d in range(directions)]
        weights = [f"weight_{g}_{s}" for s in suffixes for g in ("ih", "hh")]
        return weights, [f"bias_{g}_{s}" for s in suffixes for g in ("ih", "hh")] if cell["bias"] else []
    if o.wraps:
        return None
    if o.family == "attention":
        e = tensor(ins[0]).shape[-1]
        kv = [tensor(t).shape[-1] for t in ins[1:3] if isinstance(t, TensorType)]
        weights = ["in_proj_weight"] if all(d == e for d in kv) else ["q_proj_weight", "k_proj_weight",
                                                                        "v_proj_weight"]
        return weights + ["out_proj.weight"], ["in_proj_bias", "out_proj.bias"] if attrs["bias"] else []
    if not attrs.get("affine", True):
        return [], []
    # a bias where the op says so: by its `bias` argument, or a norm's affine shift (embedding and prelu have none)
    biased = attrs["bias"] if o.attr("bias") is not None else o.attr("affine") is not None
    return ["weight"], ["bias"] if biased else []


def tied_params(op: str, attrs: dict[str, Any], ins: list[Type]) -> int:
    """How many of the layer's parameters are another layer's (its weight, with ``tie``): counted there."""
    op, attrs, ins = step_layer(op, attrs, ins)
    if attrs.get("tie") is None:
        return 0
    shape = weight_shape(op, attrs, ins)
    return math.prod(d for d in shape if isinstance(d, int)) if shape else 0


def vector_weights(op: str, attrs: dict[str, Any], ins: list[Type]) -> bool:
    """Whether the layer's weights are vectors (norm scales, prelu slopes), which have no fans: it has no weight
    matrix of a linear, convolution or embedding (:func:`weight_shape`), nor a recurrent layer's or attention's."""
    return weight_shape(op, attrs, ins) is None and op_of(op).family not in ("recurrent", "attention")


def check_param_args(op: OpDef, attrs: dict[str, Any], ins: list[Type], tied: tuple[str, TensorType] | None) -> None:
    """What ``weight_init``, ``bias_init`` and ``tie`` need of the layer they are given to (raised as a shape rule's
    error at the argument): tensors to reach, weights with fans for a fan-based initialiser, and for ``tie`` the
    layer ``tied`` (its op and weight shape, None if no layer of that name precedes) with the same weight shape."""
    tensors = parameter_tensors(op.name, attrs, ins)
    assert tensors is not None, "checked when bound"
    for key, names in (("weight_init", tensors[0]), ("bias_init", tensors[1])):
        init = attrs.get(key)
        if init is None:
            continue
        if not names:
            raise ShapeError(f"`{op.name}` has no {key[:-5]} here to initialise", attr=key, code="bad-argument")
        if needs_fans(init) and (key == "bias_init" or vector_weights(op.name, attrs, ins)):
            raise ShapeError(f"`{describe_init(init)}` computes fans, which the {key[:-5]} of `{op.name}` (a "
                             "vector) does not have", attr=key, code="bad-argument",
                             hint="use e.g. `zeros`, `constant(0.1)` or `normal(std=0.02)`")
    if attrs.get("tie") is None:
        return
    mine = weight_shape(op.name, attrs, ins)
    if mine is None:
        raise ShapeError(f"`{op.name}` cannot share a weight: `tie` is for linear, convolution and embedding "
                         "layers", attr="tie", code="bad-argument")
    if tied is None:
        raise ShapeError(f"no layer `{attrs['tie']}` before this one to share a weight with", attr="tie",
                         code="unknown-name", hint="label the layer first: `embed: embedding(vocab, d)`")
    other, theirs = tied
    if not theirs.shape:
        raise ShapeError(f"`{attrs['tie']}` ({other}) has no weight to share", attr="tie", code="bad-argument")
    if tuple(mine) != tuple(theirs.shape):
        raise ShapeError(f"`tie={attrs['tie']}`: this `{op.name}`'s weight is {shape_str(tuple(mine))} but "
                         f"`{attrs['tie']}` ({other}) has {shape_str(theirs.shape)}", attr="tie")


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("param", "prelu"), free))
