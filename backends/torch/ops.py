"""The PyTorch backend's op table: how each IR op becomes a module and a forward line.

Every op has an :class:`Emit` entry. ``init`` builds the constructor expression of its
module (required for ops with parameters; for the others it is the module form used
inside ``nn.Sequential`` or when the spec labels them). ``forward`` returns the lines
computing the outputs from the input expressions; ``mod`` is the module attribute
(``self.conv1``) when the node has one.

Axes in the IR are batch-less; generated code adds 1 for the batch axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from dlc.backends.text import safe_text
from dlc.compiler.ir import Node
from dlc.compiler.types import TensorType, Type
from dlc.diagnostics import DlcError


def lit(v: Any) -> str:
    """A Python literal for an attribute value (never raw text from a spec).

    Strings pass through :func:`safe_text`, as file names in comments do (so they read back
    unchanged, except a lone surrogate, which stays its escape text); a float with no literal
    (``inf``, ``nan``) is ``error[bad-number]`` (the caller adds the node's position).
    """
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise DlcError("bad-number", f"the value {v!r} cannot be written into the generated module",
                       hint="use a finite number")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + safe_text(v) + '"'
    if isinstance(v, (list, tuple)):
        items = [lit(x) for x in v]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise TypeError(f"no literal for {v!r}")


def check_finite(node: Node) -> None:
    """``error[bad-number]`` at ``node`` if one of its attributes is a float with no literal.

    Fused kernels write attributes (scale factors, slopes, eps) into their code without :func:`lit`.
    """
    todo: list[Any] = [node.attrs]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise DlcError("bad-number", f"`{node.op}` has the value {v!r}, which cannot be written into the "
                           "generated module", node.span, hint="use a finite number")


def kwargs(pairs: list[tuple[str, Any, Any]]) -> str:
    """``name=value`` for each (name, value, default) whose value is not the default."""
    return "".join(f", {k}={lit(v)}" for k, v, d in pairs if v != d)


def axis(dim: int) -> int:
    """A batch-less axis as a PyTorch axis (negative axes are unchanged)."""
    return dim + 1 if dim >= 0 else dim


@dataclass(frozen=True)
class Ctx:
    """What a forward emitter may need besides its node: fresh temporaries."""

    fresh: Callable[[str], str]


Init = Callable[[Node, list[Type]], str]
Forward = Callable[[Node, list[Type], list[str], "str | None", list[str], Ctx], list[str]]


@dataclass(frozen=True)
class Emit:
    init: Init | None
    forward: Forward
    seq_init: Init | None = None  # module form inside nn.Sequential, where it differs from ``init``


def _call_module(node, ins, args, mod, outs, ctx) -> list[str]:
    return [f"{outs[0]} = {mod}({args[0]})"]


def _functional(expr: Callable[[Node, list[Type], list[str]], str]) -> Forward:
    def forward(node, ins, args, mod, outs, ctx) -> list[str]:
        if mod is not None:
            return [f"{outs[0]} = {mod}({', '.join(args)})"]
        return [f"{outs[0]} = {expr(node, ins, args)}"]
    return forward


def _nd(t: Type) -> int:
    assert isinstance(t, TensorType)
    return t.rank - 1


TABLE: dict[str, Emit] = {}


def emits(name: str, init: Init | None, forward: Forward) -> None:
    TABLE[name] = Emit(init, forward)


# ---- layers with parameters ---------------------------------------------------------------

emits("linear",
      lambda n, ins: f"nn.Linear({ins[0].shape[-1]}, {n.attrs['units']}{kwargs([('bias', n.attrs['bias'], True)])})",
      _call_module)


def _conv_init(cls: str, transpose: bool = False) -> Init:
    def init(n: Node, ins: list[Type]) -> str:
        a = n.attrs
        extra = [("stride", a["stride"], 1), ("padding", a["pad"], 0)]
        if transpose:
            extra.append(("output_padding", a["output_pad"], 0))
        extra += [("dilation", a["dilation"], 1), ("groups", a["groups"], 1), ("bias", a["bias"], True)]
        return f"nn.{cls}({ins[0].shape[0]}, {a['channels']}, kernel_size={lit(a['k'])}{kwargs(extra)})"
    return init


emits("conv1d", _conv_init("Conv1d"), _call_module)
emits("conv2d", _conv_init("Conv2d"), _call_module)
emits("conv_transpose2d", _conv_init("ConvTranspose2d", transpose=True), _call_module)


def _batchnorm_init(n: Node, ins: list[Type]) -> str:
    t = ins[0]
    assert isinstance(t, TensorType)
    nd = {1: 1, 2: 1, 3: 2, 4: 3}[t.rank]
    a = n.attrs
    return (f"nn.BatchNorm{nd}d({t.shape[0]}"
            f"{kwargs([('eps', a['eps'], 1e-5), ('momentum', a['momentum'], 0.1), ('affine', a['affine'], True)])})")


emits("batchnorm", _batchnorm_init, _call_module)


def _layernorm_init(n: Node, ins: list[Type]) -> str:
    t = ins[0]
    assert isinstance(t, TensorType)
    dims = n.attrs["dims"]
    shape = t.shape[-1] if dims == 1 else list(t.shape[-dims:])
    return (f"nn.LayerNorm({lit(shape)}"
            f"{kwargs([('eps', n.attrs['eps'], 1e-5), ('elementwise_affine', n.attrs['affine'], True)])})")


emits("layernorm", _layernorm_init, _call_module)
emits("embedding",
      lambda n, ins: f"nn.Embedding({n.attrs['vocab']}, {n.attrs['dim']}"
                     f"{kwargs([('padding_idx', n.attrs['padding_idx'], None)])})",
      _call_module)


# ---- pooling and resampling -----------------------------------------------------------------


def _pool(kind: str) -> tuple[Init, Forward]:
    cap = kind.capitalize()

    def options(n: Node) -> str:
        a = n.attrs
        return lit(a["k"]) + kwargs([("stride", a["stride"], None), ("padding", a["pad"], 0),
                                     ("ceil_mode", a["ceil"], False)])

    def init(n: Node, ins: list[Type]) -> str:
        nd = _nd(ins[0])
        if n.attrs["k"] == "global":
            return f"nn.Adaptive{cap}Pool{nd}d(1)"
        return f"nn.{cap}Pool{nd}d({options(n)})"

    def expr(n: Node, ins: list[Type], args: list[str]) -> str:
        nd = _nd(ins[0])
        if n.attrs["k"] == "global":
            return f"F.adaptive_{kind}_pool{nd}d({args[0]}, 1)"
        return f"F.{kind}_pool{nd}d({args[0]}, {options(n)})"

    return init, _functional(expr)


emits("maxpool", *_pool("max"))
emits("avgpool", *_pool("avg"))
emits("adaptive_avgpool",
      lambda n, ins: f"nn.AdaptiveAvgPool{_nd(ins[0])}d({lit(n.attrs['size'])})",
      _functional(lambda n, ins, a: f"F.adaptive_avg_pool{_nd(ins[0])}d({a[0]}, {lit(n.attrs['size'])})"))


def _upsample_kw(n: Node) -> str:
    a = n.attrs
    align = a["align_corners"] if a["mode"] == "bilinear" else None
    return f"scale_factor={lit(a['scale'])}, mode={lit(a['mode'])}" + kwargs([("align_corners", align, None)])


emits("upsample",
      lambda n, ins: f"nn.Upsample({_upsample_kw(n)})",
      _functional(lambda n, ins, a: f"F.interpolate({a[0]}, {_upsample_kw(n)})"))


# ---- regularisation and activations ---------------------------------------------------------


def _dropout_forward(node, ins, args, mod, outs, ctx) -> list[str]:
    if mod is not None:
        return [f"{outs[0]} = {mod}({args[0]})"]
    training = "True" if node.attrs["always"] else "self.training"
    return [f"{outs[0]} = F.dropout({args[0]}, {lit(node.attrs['p'])}, training={training})"]


def _dropout_init(n: Node, ins: list[Type]) -> str:
    if n.attrs["always"]:
        return f"AlwaysDropout({lit(n.attrs['p'])})"
    return f"nn.Dropout({lit(n.attrs['p'])})"


emits("dropout", _dropout_init, _dropout_forward)

_ACTIVATIONS: dict[str, tuple[Callable[[Node], str], Callable[[Node, str], str]]] = {
    "relu": (lambda n: "nn.ReLU(inplace=True)" if n.attrs.get("inplace") else "nn.ReLU()",
             lambda n, x: f"F.relu({x}, inplace=True)" if n.attrs.get("inplace") else f"F.relu({x})"),
    "leaky_relu": (lambda n: f"nn.LeakyReLU({lit(n.attrs['slope'])})",
                   lambda n, x: f"F.leaky_relu({x}, {lit(n.attrs['slope'])})"),
    "elu": (lambda n: f"nn.ELU({lit(n.attrs['alpha'])})", lambda n, x: f"F.elu({x}, {lit(n.attrs['alpha'])})"),
    "selu": (lambda n: "nn.SELU()", lambda n, x: f"F.selu({x})"),
    "gelu": (lambda n: f"nn.GELU({kwargs([('approximate', n.attrs['approximate'], 'none')])[2:]})",
             lambda n, x: f"F.gelu({x}{kwargs([('approximate', n.attrs['approximate'], 'none')])})"),
    "silu": (lambda n: "nn.SiLU()", lambda n, x: f"F.silu({x})"),
    "mish": (lambda n: "nn.Mish()", lambda n, x: f"F.mish({x})"),
    "tanh": (lambda n: "nn.Tanh()", lambda n, x: f"torch.tanh({x})"),
    "sigmoid": (lambda n: "nn.Sigmoid()", lambda n, x: f"torch.sigmoid({x})"),
    "softmax": (lambda n: f"nn.Softmax(dim={axis(n.attrs['dim'])})",
                lambda n, x: f"torch.softmax({x}, dim={axis(n.attrs['dim'])})"),
    "log_softmax": (lambda n: f"nn.LogSoftmax(dim={axis(n.attrs['dim'])})",
                    lambda n, x: f"torch.log_softmax({x}, dim={axis(n.attrs['dim'])})"),
}

for _name, (_init, _expr) in _ACTIVATIONS.items():
    emits(_name, (lambda i: lambda n, ins: i(n))(_init), _functional((lambda e: lambda n, ins, a: e(n, a[0]))(_expr)))


# ---- shapes, merges and arithmetic ------------------------------------------------------------

emits("flatten",
      lambda n, ins: f"nn.Flatten({axis(n.attrs['start'])})",
      _functional(lambda n, ins, a: f"torch.flatten({a[0]}, {axis(n.attrs['start'])})"))


def _out_shape(n: Node) -> tuple:
    t = n.types[0]
    assert isinstance(t, TensorType)
    return t.shape


emits("reshape",
      lambda n, ins: f"Reshape({lit(list(_out_shape(n)))})",
      _functional(lambda n, ins, a: f"{a[0]}.reshape({a[0]}.shape[0], {', '.join(map(str, _out_shape(n)))})"))
emits("permute",
      lambda n, ins: f"Permute({lit([d + 1 for d in n.attrs['dims']])})",
      _functional(lambda n, ins, a: f"{a[0]}.permute(0, {', '.join(str(d + 1) for d in n.attrs['dims'])})"))


def _concat_axis(n: Node, ins: list[Type]) -> int:
    first = ins[0]
    assert isinstance(first, TensorType)
    dim = n.attrs["dim"]
    return first.feature_axis + 1 if dim is None else axis(dim)


emits("concat", None,
      _functional(lambda n, ins, a: f"torch.cat([{', '.join(a)}], dim={_concat_axis(n, ins)})"))
emits("add", None, _functional(lambda n, ins, a: (f"{a[0]}.add_({' + '.join(a[1:])})" if n.attrs.get("inplace")
                                                   else " + ".join(a))))
emits("sub", None, _functional(lambda n, ins, a: " - ".join(a)))
emits("mul", None, _functional(lambda n, ins, a: " * ".join(a)))
emits("mean", None, _functional(lambda n, ins, a: f"({' + '.join(a)}) / {len(a)}"))
emits("abs", lambda n, ins: "Abs()", _functional(lambda n, ins, a: f"torch.abs({a[0]})"))
emits("scale", lambda n, ins: f"Scale({lit(n.attrs['factor'])})",
      _functional(lambda n, ins, a: f"{a[0]} * {lit(n.attrs['factor'])}"))
emits("shift", lambda n, ins: f"Shift({lit(n.attrs['offset'])})",
      _functional(lambda n, ins, a: f"{a[0]} + {lit(n.attrs['offset'])}"))


# ---- recurrent layers and attention -------------------------------------------------------------

_CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _recurrent_init(cell: dict, features: Any, bidirectional: bool) -> str:
    extra = [("num_layers", cell["layers"], 1), ("bias", cell["bias"], True), ("dropout", cell["dropout"], 0.0)]
    if cell["op"] == "rnn":
        extra.append(("nonlinearity", cell["nonlinearity"], "tanh"))
    extra += [("batch_first", True, None), ("bidirectional", bidirectional, False)]
    return f"nn.{_CELLS[cell['op']]}({features}, {cell['units']}{kwargs(extra)})"


def _rnn_init(n: Node, ins: list[Type]) -> str:
    return _recurrent_init({"op": n.op, **n.attrs}, ins[0].shape[-1], False)


def _sequence_init(cell: dict, features: Any, bidirectional: bool, merge: str | None) -> str:
    """The module form of a recurrent layer inside nn.Sequential (see helpers.SequenceOutput)."""
    expr = _recurrent_init(cell, features, bidirectional)
    extra = kwargs([("return_sequences", cell["return_sequences"], True), ("merge", merge, None)])
    return "Sequence" + expr[len("nn."):-1] + extra + ")"


def _rnn_forward(node, ins, args, mod, outs, ctx) -> list[str]:
    a = node.attrs
    state = outs[1] if a["return_state"] else "_"
    seq = outs[0] if a["return_sequences"] else ctx.fresh("seq")
    lines = [f"{seq}, {state} = {mod}({', '.join(args)})"]
    if not a["return_sequences"]:
        lines.append(f"{outs[0]} = {seq}[:, -1]  # the last time step")
    return lines


for _cell in _CELLS:
    TABLE[_cell] = Emit(_rnn_init, _rnn_forward, seq_init=lambda n, ins: _sequence_init(
        {"op": n.op, **n.attrs}, ins[0].shape[-1], False, None))


def _bi_init(n: Node, ins: list[Type]) -> str:
    return _recurrent_init(n.attrs["layer"], ins[0].shape[-1], True)


def _bi_forward(node, ins, args, mod, outs, ctx) -> list[str]:
    cell, merge = node.attrs["layer"], node.attrs["merge"]
    units = cell["units"]
    state = outs[1] if cell["return_state"] else "_"
    seq = ctx.fresh("seq")
    lines = [f"{seq}, {state} = {mod}({', '.join(args)})"]
    if cell["return_sequences"]:
        fwd_src, bwd_src = f"{seq}[..., :{units}]", f"{seq}[..., {units}:]"
        if merge == "concat":
            lines[0] = f"{outs[0]}, {state} = {mod}({', '.join(args)})"
            return lines
    else:
        # Keras semantics: the backward direction's final output is the one at time step 0.
        fwd_src, bwd_src = f"{seq}[:, -1, :{units}]", f"{seq}[:, 0, {units}:]"
    fwd, bwd = ctx.fresh("fwd"), ctx.fresh("bwd")
    lines.append(f"{fwd}, {bwd} = {fwd_src}, {bwd_src}")
    merged = {
        "concat": f"torch.cat([{fwd}, {bwd}], dim=-1)",
        "sum": f"{fwd} + {bwd}",
        "mul": f"{fwd} * {bwd}",
        "ave": f"({fwd} + {bwd}) / 2",
    }[merge]
    lines.append(f"{outs[0]} = {merged}  # merge={merge}")
    return lines


TABLE["bidirectional"] = Emit(_bi_init, _bi_forward, seq_init=lambda n, ins: _sequence_init(
    n.attrs["layer"], ins[0].shape[-1], True, n.attrs["merge"]))


def _attention_init(n: Node, ins: list[Type]) -> str:
    e = ins[0].shape[-1]
    kd = ins[1].shape[-1] if len(ins) > 1 else e
    vd = ins[2].shape[-1] if len(ins) > 2 else kd
    a = n.attrs
    extra = [("dropout", a["dropout"], 0.0), ("bias", a["bias"], True), ("kdim", kd, e), ("vdim", vd, e),
             ("batch_first", True, None)]
    return f"nn.MultiheadAttention({e}, {a['heads']}{kwargs(extra)})"


def _attention_forward(node, ins, args, mod, outs, ctx) -> list[str]:
    q = args[0]
    k = args[1] if len(args) > 1 else q
    v = args[2] if len(args) > 2 else k
    lines = []
    mask = ""
    if node.attrs["causal"]:
        m = ctx.fresh("causal_mask")
        lines.append(f"{m} = torch.ones({q}.shape[1], {k}.shape[1], dtype=torch.bool, device={q}.device).triu(1)")
        mask = f", attn_mask={m}"
    lines.append(f"{outs[0]}, _ = {mod}({q}, {k}, {v}, need_weights=False{mask})")
    return lines


TABLE["attention"] = Emit(_attention_init, _attention_forward, seq_init=lambda n, ins: (
    "SelfAttention" + _attention_init(n, ins)[len("nn.MultiheadAttention"):-1]
    + kwargs([("causal", n.attrs["causal"], False)]) + ")"))


def _td_init(n: Node, ins: list[Type]) -> str:
    inner = dict(n.attrs["layer"])
    op = inner.pop("op")
    t = ins[0]
    assert isinstance(t, TensorType)
    step = TensorType(t.shape[1:], t.dtype, "cf")
    fake = Node(n.id, op, n.inputs, n.outputs, inner, n.types, n.span, n.scope, n.name)
    init = TABLE[op].init
    assert init is not None
    return init(fake, [step])


emits("timedistributed", _td_init,
      lambda node, ins, args, mod, outs, ctx: [
          f"{outs[0]} = {mod}({args[0]}.flatten(0, 1)).unflatten(0, {args[0]}.shape[:2])  # every time step"])
