"""The op catalog: every layer the language knows, with its shape rule and parameter count.

Shapes are batch-less (see :mod:`dlc.compiler.types`).
"""

from __future__ import annotations

import math

from dlc.compiler.ops.registry import Attr, OpDef, ShapeError, register
from dlc.compiler.ops.shapes import (
    axis,
    broadcast,
    conv_out,
    known,
    numel,
    pair,
    promote,
    scaled,
    state_matches,
    symbolic_transpose,
    tensor,
    want_float,
    want_rank,
)
from dlc.compiler.types import MAX_ELEMENTS, StateType, TensorType, Type, shape_str

A = Attr


def _out(t: TensorType, shape, layout: str | None = None) -> tuple[Type, ...]:
    return (t.with_shape(shape, layout),)


# ---- dense -------------------------------------------------------------------------------


def _linear(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "linear")
    if x.rank == 0:
        raise ShapeError("`linear` needs at least one feature dimension")
    known(x.shape[-1], "linear", "number of input features")
    return _out(x, x.shape[:-1] + (attrs["units"],))


register(OpDef(
    "linear", (A("units", "int", min=1), A("bias", "bool", True)), _linear,
    count_params=lambda a, ins: ins[0].shape[-1] * a["units"] + (a["units"] if a["bias"] else 0),
    stateful=True, family="linear", fusion="anchor",
    doc="Fully connected layer on the last axis: `linear(units, bias=true)`.",
))


def _embedding(attrs, ins):
    x = tensor(ins[0])
    if x.dtype not in ("int64", "int32"):
        raise ShapeError(f"`embedding` needs integer token ids, got {x.dtype}", code="type-mismatch",
                         hint="declare the input as e.g. `input tokens: [T] int64`")
    pad = attrs["padding_idx"]
    if pad is not None and not -attrs["vocab"] <= pad < attrs["vocab"]:
        raise ShapeError(f"`embedding`: padding_idx {pad} is not a token id of a vocabulary of {attrs['vocab']}",
                         attr="padding_idx", code="bad-argument")
    return (TensorType(x.shape + (attrs["dim"],), "float32", "fl"),)


register(OpDef(
    "embedding", (A("vocab", "int", min=1), A("dim", "int", min=1), A("padding_idx", "int", None, min=0)), _embedding,
    count_params=lambda a, ins: a["vocab"] * a["dim"],
    stateful=True, family="embedding", fusion="opaque",
    doc="Lookup table: `embedding(vocab, dim)`; integer ids [T] -> [T, dim].",
))


# ---- convolution -----------------------------------------------------------------------

_CONV_ATTRS = (
    A("channels", "int", min=1), A("k", "int2", min=1), A("stride", "int2", 1, min=1), A("pad", "pad", 0, min=0),
    A("dilation", "int2", 1, min=1), A("groups", "int", 1, min=1), A("bias", "bool", True),
)


def _conv(nd: int, transpose: bool = False):
    name = f"conv{'_transpose' if transpose else ''}{nd}d"

    def rule(attrs, ins):
        x = tensor(ins[0])
        want_float(x, name)
        want_rank(x, (nd + 1,), name, f"[C, {', '.join('LHW'[-nd:] if nd > 1 else 'L')}]" if nd == 2 else "[C, L]")
        cin = known(x.shape[0], name, "number of input channels")
        g, cout = attrs["groups"], attrs["channels"]
        if cin % g or cout % g:
            raise ShapeError(
                f"`{name}`: groups={g} must divide both input channels ({cin}) and output channels ({cout})",
                attr="groups", code="bad-argument")
        k, s = pair(attrs["k"], nd, name, "k"), pair(attrs["stride"], nd, name, "stride")
        d = pair(attrs["dilation"], nd, name, "dilation")
        pad = attrs["pad"]
        if pad == "same":
            if transpose:
                raise ShapeError(f"`{name}` has no `same` padding", attr="pad", code="bad-argument")
            if any(v != 1 for v in s):
                raise ShapeError("`pad=same` needs stride 1 (as in PyTorch)", attr="pad", code="bad-argument")
            return _out(x, (cout,) + x.shape[1:], "cf")
        p = pair(pad, nd, name, "pad")
        if transpose:
            op = pair(attrs["output_pad"], nd, name, "output_pad")
            for i in range(nd):
                if op[i] >= max(s[i], d[i]):
                    raise ShapeError(f"`{name}`: output_pad ({op[i]}) must be smaller than the stride ({s[i]}) "
                                     f"or the dilation ({d[i]})", attr="output_pad", code="bad-argument")
            spatial = []
            for i in range(nd):
                size = x.shape[1 + i]
                if isinstance(size, str):
                    spatial.append(symbolic_transpose(size, k[i], s[i], p[i], d[i], op[i]))
                else:
                    spatial.append((size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1)
                    if spatial[-1] < 1:
                        raise ShapeError(f"`{name}`: padding {p[i]} leaves nothing of an input of size {size}",
                                         attr="pad", code="bad-argument")
        else:
            spatial = [conv_out(x.shape[1 + i], k[i], s[i], p[i], d[i]) for i in range(nd)]
        return _out(x, (cout, *spatial), "cf")

    def params(a, ins):
        cin = ins[0].shape[0]
        k = math.prod(pair(a["k"], nd))
        return cin // a["groups"] * a["channels"] * k + (a["channels"] if a["bias"] else 0)

    attrs = _CONV_ATTRS
    if transpose:
        attrs = attrs[:4] + (A("output_pad", "int2", 0, min=0),) + attrs[4:]
    register(OpDef(name, attrs, rule, count_params=params, stateful=True, family="conv", fusion="anchor",
                   doc=f"{nd}-d {'transposed ' if transpose else ''}convolution: "
                       f"`{name}(channels, k, stride=1, pad=0, dilation=1, groups=1, bias=true)`."))


_conv(1)
_conv(2)
_conv(2, transpose=True)


# ---- pooling ---------------------------------------------------------------------------


def _pool(kind: str):
    name = f"{kind}pool"

    def rule(attrs, ins):
        x = tensor(ins[0])
        want_rank(x, (2, 3), name, "[C, L] or [C, H, W]")
        want_float(x, name)
        nd = x.rank - 1
        if attrs["k"] == "global":
            return _out(x, (x.shape[0],) + (1,) * nd, "cf")
        k = pair(attrs["k"], nd, name, "k")
        s = pair(attrs["stride"] if attrs["stride"] is not None else attrs["k"], nd, name,
                 "stride" if attrs["stride"] is not None else "k")
        p = pair(attrs["pad"], nd, name, "pad")
        for i in range(nd):
            if p[i] * 2 > k[i]:
                raise ShapeError(f"`{name}`: padding {p[i]} must be at most half the kernel size {k[i]}",
                                 attr="pad", code="bad-argument")
        spatial = [conv_out(x.shape[1 + i], k[i], s[i], p[i], 1, attrs["ceil"]) for i in range(nd)]
        return _out(x, (x.shape[0], *spatial), "cf")

    attrs = (A("k", "pool_size", min=1), A("stride", "int2", None, min=1), A("pad", "int2", 0, min=0),
             A("ceil", "bool", False))
    register(OpDef(name, attrs, rule, family="pool", fusion="opaque",
                   doc=f"{kind.capitalize()} pooling over [C, L] or [C, H, W]: "
                       f"`{name}(k, stride=k, pad=0, ceil=false)`; "
                       f"`{name}(global)` pools every spatial position."))


_pool("max")
_pool("avg")


def _adaptive(attrs, ins):
    x = tensor(ins[0])
    want_rank(x, (2, 3), "adaptive_avgpool", "[C, L] or [C, H, W]")
    want_float(x, "adaptive_avgpool")
    return _out(x, (x.shape[0], *pair(attrs["size"], x.rank - 1, "adaptive_avgpool", "size")), "cf")


register(OpDef("adaptive_avgpool", (A("size", "int2", min=1),), _adaptive, family="pool",
               doc="Average pooling to a fixed output size: `adaptive_avgpool(4)` or `adaptive_avgpool([4, 4])`."))


def _upsample(attrs, ins):
    x = tensor(ins[0])
    want_rank(x, (2, 3), "upsample", "[C, L] or [C, H, W]")
    want_float(x, "upsample")
    if attrs["mode"] == "bilinear" and x.rank != 3:
        raise ShapeError("`upsample(mode=bilinear)` needs [C, H, W]", attr="mode", code="bad-argument")
    scale = attrs["scale"]
    if not scale > 0:
        raise ShapeError(f"`upsample`: scale must be positive, got {scale}", attr="scale", code="bad-argument")
    out = []
    for d in x.shape[1:]:
        if isinstance(d, int) and d * scale > MAX_ELEMENTS:  # also keeps an infinite product from int()
            raise ShapeError(f"`upsample`: scale {scale} makes a dimension of size {d} too large", attr="scale",
                             code="too-large")
        out.append(scaled(d, scale) if isinstance(d, str) else int(math.floor(d * scale)))
        if isinstance(out[-1], int) and out[-1] < 1:
            raise ShapeError(f"`upsample`: scale {scale} shrinks a dimension of size {d} to nothing",
                             attr="scale", code="bad-argument")
    return _out(x, (x.shape[0], *out), "cf")


register(OpDef("upsample", (A("scale", "float", 2.0), A("mode", "enum", "nearest", ("nearest", "bilinear")),
                            A("align_corners", "bool", False)), _upsample, family="pool",
               doc="Upsampling of [C, L] or [C, H, W] by `scale`: `upsample(2, mode=bilinear)`."))


# ---- normalisation and regularisation -----------------------------------------------------


def positive_eps(attrs, op: str) -> None:
    if attrs["eps"] <= 0:
        raise ShapeError(f"`{op}`: eps must be positive (it keeps the division finite), got {attrs['eps']}",
                         attr="eps", code="bad-argument")


def _batchnorm(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "batchnorm")
    want_rank(x, (1, 2, 3, 4), "batchnorm", "[C], [C, L], [C, H, W] or [C, D, H, W]")
    positive_eps(attrs, "batchnorm")
    if not 0.0 <= attrs["momentum"] <= 1.0:
        raise ShapeError(f"`batchnorm`: momentum must be in [0, 1], got {attrs['momentum']}", attr="momentum",
                         code="bad-argument")
    if x.layout == "tcf":
        raise ShapeError(
            f"`batchnorm` normalises channels-first data, but {shape_str(x.shape)} has a time axis before its channels",
            hint="use `timedistributed(batchnorm)` to normalise every time step")
    if x.rank == 2 and x.layout == "fl":
        raise ShapeError(
            f"`batchnorm` normalises channels-first data, but {shape_str(x.shape)} is a features-last sequence",
            hint="use `layernorm` on sequences, or `permute([1, 0])` first")
    known(x.shape[0], "batchnorm", "number of channels")
    return (x,)


register(OpDef("batchnorm", (A("eps", "float", 1e-5), A("momentum", "float", 0.1), A("affine", "bool", True)),
               _batchnorm, count_params=lambda a, ins: 2 * ins[0].shape[0] if a["affine"] else 0,
               stateful=True, family="norm", fusion="elementwise",
               doc="Batch normalisation over the channel axis: `batchnorm(eps=1e-5, momentum=0.1)`."))


def _layernorm(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "layernorm")
    positive_eps(attrs, "layernorm")
    n = attrs["dims"]
    if not 1 <= n <= x.rank:
        raise ShapeError(f"`layernorm(dims={n})` needs 1 <= dims <= rank ({x.rank})", attr="dims", code="bad-argument")
    for d in x.shape[-n:]:
        known(d, "layernorm", "size of every normalised dimension")
    return (x,)


register(OpDef("layernorm", (A("dims", "int", 1, min=1), A("eps", "float", 1e-5), A("affine", "bool", True)),
               _layernorm,
               count_params=lambda a, ins: 2 * math.prod(ins[0].shape[-a["dims"]:]) if a["affine"] else 0,
               stateful=True, family="norm", fusion="reduction",
               doc="Layer normalisation over the last `dims` axes: `layernorm(dims=1, eps=1e-5)`."))


def _same(attrs, ins):
    x = tensor(ins[0])
    return (x,)


def _same_float(name):
    def rule(attrs, ins):
        x = tensor(ins[0])
        want_float(x, name)
        return (x,)
    return rule


def _dropout(attrs, ins):
    if not 0.0 <= attrs["p"] < 1.0:
        raise ShapeError(f"`dropout`: p must be in [0, 1), got {attrs['p']}", attr="p", code="bad-argument")
    return _same_float("dropout")(attrs, ins)


register(OpDef("dropout", (A("p", "float", 0.5), A("always", "bool", False)), _dropout,
               family="regularization", fusion="elementwise",
               doc="Dropout; `always=true` keeps it on at inference (Monte-Carlo dropout)."))


# ---- activations ----------------------------------------------------------------------

for _name, _attrs, _doc in [
    ("relu", (), "max(x, 0)"),
    ("leaky_relu", (A("slope", "float", 0.01),), "x if x > 0 else slope * x"),
    ("elu", (A("alpha", "float", 1.0),), "exponential linear unit"),
    ("selu", (), "scaled exponential linear unit"),
    ("gelu", (A("approximate", "enum", "none", ("none", "tanh")),), "Gaussian error linear unit"),
    ("silu", (), "x * sigmoid(x) (swish)"),
    ("mish", (), "x * tanh(softplus(x))"),
    ("tanh", (), "hyperbolic tangent"),
    ("sigmoid", (), "logistic sigmoid"),
]:
    register(OpDef(_name, _attrs, _same_float(_name), family="activation", fusion="elementwise",
                   doc=f"Activation: {_doc}."))


def _softmax(name):
    def rule(attrs, ins):
        x = tensor(ins[0])
        want_float(x, name)
        axis(attrs["dim"], x.rank, name)
        return (x,)
    return rule


for _name in ("softmax", "log_softmax"):
    register(OpDef(_name, (A("dim", "int", -1),), _softmax(_name), family="activation", fusion="reduction",
                   doc=f"`{_name}(dim=-1)` along a batch-less axis."))


# ---- shape manipulation ---------------------------------------------------------------


def _flatten(attrs, ins):
    x = tensor(ins[0])
    start = axis(attrs["start"], x.rank, "flatten") if x.rank else 0
    return _out(x, x.shape[:start] + (numel(x.shape[start:], "flatten"),), "fl")


register(OpDef("flatten", (A("start", "int", 0),), _flatten, family="shape",
               doc="Flattens every batch-less axis from `start` (default 0) into one."))


def _reshape(attrs, ins):
    x = tensor(ins[0])
    target = list(attrs["shape"])
    total = numel(x.shape, "reshape")
    if target.count(-1) > 1 or any(d < 1 and d != -1 for d in target):
        raise ShapeError(f"`reshape`: every dimension must be positive, or -1 (once) for the rest; got "
                         f"{shape_str(tuple(target))}", attr="shape", code="bad-argument")
    rest = math.prod(d for d in target if d != -1)
    if rest > MAX_ELEMENTS:
        raise ShapeError(f"`reshape`: the target shape has more than {MAX_ELEMENTS} elements", attr="shape",
                         code="too-large")
    if -1 in target:
        if total % rest:
            raise ShapeError(f"`reshape`: cannot reshape {shape_str(x.shape)} into {shape_str(tuple(target))}",
                             attr="shape")
        target[target.index(-1)] = total // rest
    elif rest != total:
        raise ShapeError(f"`reshape`: cannot reshape {shape_str(x.shape)} ({total} elements) into "
                         f"{shape_str(tuple(target))} ({rest} elements)", attr="shape")
    return _out(x, tuple(target), "cf" if len(target) >= 3 else "fl")


register(OpDef("reshape", (A("shape", "ints"),), _reshape, family="shape",
               doc="Reshape the batch-less part: `reshape([16, 7, 7])`; one entry may be -1."))


def _permute(attrs, ins):
    x = tensor(ins[0])
    dims = list(attrs["dims"])
    if sorted(dims) != list(range(x.rank)):
        raise ShapeError(f"`permute`: {dims} is not a permutation of the {x.rank} batch-less axes 0..{x.rank - 1}",
                         attr="dims", code="bad-argument")
    layout = x.layout
    if x.rank >= 2:  # follow the feature axis to its new place
        moved = dims.index(x.feature_axis)
        layout = "cf" if moved == 0 else "tcf" if moved == 1 and x.rank >= 3 else "fl"
    return _out(x, tuple(x.shape[d] for d in dims), layout)


register(OpDef("permute", (A("dims", "ints", min=0),), _permute, family="shape",
               doc="Reorder batch-less axes: `permute([1, 0])`."))


# ---- merges and arithmetic ------------------------------------------------------------


def _concat(attrs, ins):
    xs = [tensor(t) for t in ins]
    first = xs[0]
    dim = attrs["dim"]
    ax = first.feature_axis if dim is None else axis(dim, first.rank, "concat")
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


register(OpDef("concat", (A("dim", "int", None, keyword_only=True),), _concat, variadic=True, family="merge",
               fusion="opaque", module=False,
               doc="Concatenate tensors along the feature axis (channels for [C, H, W], last for [T, F]) "
                   "or along `dim`."))


def _elementwise(name):
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


for _name, _doc, _var in [
    ("add", "Elementwise sum (`a + b`), with broadcasting.", True),
    ("sub", "Elementwise difference (`a - b`).", False),
    ("mul", "Elementwise product (`a * b`).", True),
    ("mean", "Elementwise mean of several tensors: `mean(a, b, c)`.", True),
]:
    register(OpDef(_name, (), _elementwise(_name), inputs=("a", "b"), variadic=_var, family="merge",
                   fusion="elementwise", module=False, doc=_doc))

register(OpDef("abs", (), _same, family="activation", fusion="elementwise", doc="Elementwise absolute value."))
register(OpDef("scale", (A("factor", "float"),), _same_float("scale"), family="arith", fusion="elementwise",
               doc="Multiply by a constant (`x * 0.5`, `x / 2`)."))
register(OpDef("shift", (A("offset", "float"),), _same_float("shift"), family="arith", fusion="elementwise",
               doc="Add a constant (`x + 1`, `x - 1`)."))


# ---- recurrent --------------------------------------------------------------------------

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def recurrent_params(cell: str, units: int, layers: int, features: int, directions: int, bias: bool) -> int:
    g = _GATES[cell]
    total = 0
    for layer in range(layers):
        fin = features if layer == 0 else units * directions
        total += directions * (g * units * (fin + units) + (2 * g * units if bias else 0))
    return total


def recurrent_shape(cell: str, attrs, ins, directions: int, merge: str | None, name: str):
    x = tensor(ins[0])
    want_float(x, name)
    if x.rank != 2:
        raise ShapeError(f"`{name}` expects a sequence [T, F] (batch not counted), got {shape_str(x.shape)}",
                         hint="recurrent layers read [time, features]")
    known(x.shape[1], name, "number of input features")
    if not 0.0 <= attrs["dropout"] < 1.0:
        raise ShapeError(f"`{name}`: dropout must be in [0, 1), got {attrs['dropout']}", attr="dropout",
                         code="bad-argument")
    units = attrs["units"]
    width = units * directions if merge == "concat" else units
    state = StateType(cell, attrs["layers"], directions, units)
    if len(ins) > 1:
        state_matches(ins[1], state, name)
    y = TensorType((x.shape[0], width) if attrs["return_sequences"] else (width,), x.dtype, "fl")
    return (y, state) if attrs["return_state"] else (y,)


# Stacked recurrent layers: PyTorch builds each one in a Python loop, so a huge count would only hang.
MAX_RNN_LAYERS = 1024

_RNN_ATTRS = (
    A("units", "int", min=1), A("layers", "int", 1, min=1, max=MAX_RNN_LAYERS), A("return_sequences", "bool", True),
    A("return_state", "bool", False), A("dropout", "float", 0.0), A("bias", "bool", True),
)

for _cell in ("rnn", "lstm", "gru"):
    _attrs = _RNN_ATTRS + ((A("nonlinearity", "enum", "tanh", ("tanh", "relu")),) if _cell == "rnn" else ())
    register(OpDef(
        _cell, _attrs,
        (lambda c: lambda attrs, ins: recurrent_shape(c, attrs, ins, 1, None, c))(_cell),
        count_params=(lambda c: lambda a, ins: recurrent_params(c, a["units"], a["layers"], ins[0].shape[1], 1,
                                                                 a["bias"]))(_cell),
        inputs=("x", "initial_state"), optional_inputs=frozenset({"initial_state"}),
        outputs=lambda a: 2 if a["return_state"] else 1,
        stateful=True, family="recurrent", fusion="opaque",
        doc=f"`{_cell}(units, layers=1, return_sequences=true, return_state=false)` over [T, F]; "
            "`initial_state=` takes the state returned by another recurrent layer.",
    ))


def _bidirectional(attrs, ins):
    inner = attrs["layer"]
    return recurrent_shape(inner["op"], inner, ins, 2, attrs["merge"], "bidirectional")


register(OpDef(
    "bidirectional", (A("layer", "layer"), A("merge", "enum", "concat", ("concat", "sum", "mul", "ave"))),
    _bidirectional,
    count_params=lambda a, ins: recurrent_params(a["layer"]["op"], a["layer"]["units"], a["layer"]["layers"],
                                                 ins[0].shape[1], 2, a["layer"]["bias"]),
    inputs=("x", "initial_state"), optional_inputs=frozenset({"initial_state"}),
    outputs=lambda a: 2 if a["layer"]["return_state"] else 1,
    stateful=True, family="recurrent", fusion="opaque",
    doc="Runs a recurrent layer forwards and backwards and merges the two (Keras semantics): "
        "`bidirectional(lstm(128), merge=concat|sum|mul|ave)`.",
))


# ---- attention ------------------------------------------------------------------------


def _attention(attrs, ins):
    if not 0.0 <= attrs["dropout"] < 1.0:
        raise ShapeError(f"`attention`: dropout must be in [0, 1), got {attrs['dropout']}", attr="dropout",
                         code="bad-argument")
    q = tensor(ins[0], "query")
    k = tensor(ins[1] if len(ins) > 1 else ins[0], "key")
    v = tensor(ins[2] if len(ins) > 2 else k, "value")
    for t, what in ((q, "query"), (k, "key"), (v, "value")):
        if t.rank != 2:
            raise ShapeError(f"`attention` expects {what} as a sequence [T, E], got {shape_str(t.shape)}")
        want_float(t, "attention")
        known(t.shape[1], "attention", f"{what} feature size")
    if k.shape[0] != v.shape[0]:
        raise ShapeError(f"`attention`: key and value need the same length, got {shape_str(k.shape)} and "
                         f"{shape_str(v.shape)}")
    e, heads = q.shape[1], attrs["heads"]
    if e % heads:
        raise ShapeError(f"`attention`: heads={heads} must divide the query features ({e})", attr="heads",
                         code="bad-argument")
    return (q,)


def _attention_params(a, ins):
    e = ins[0].shape[1]
    kd = ins[1].shape[1] if len(ins) > 1 else e
    vd = ins[2].shape[1] if len(ins) > 2 else kd
    b = 1 if a["bias"] else 0
    return e * e + e * kd + e * vd + 3 * e * b + e * e + e * b


register(OpDef(
    "attention", (A("heads", "int", 1, min=1), A("causal", "bool", False), A("dropout", "float", 0.0),
                  A("bias", "bool", True)),
    _attention, count_params=_attention_params,
    inputs=("query", "key", "value"), optional_inputs=frozenset({"key", "value"}),
    stateful=True, family="attention", fusion="opaque",
    doc="Multi-head attention: `attention(query=q, key=k, value=v, heads=1, causal=false)`; "
        "piped alone it is self-attention.",
))


# ---- wrappers -------------------------------------------------------------------------


def _timedistributed(attrs, ins):
    from dlc.compiler.ops.registry import OPS

    x = tensor(ins[0])
    if x.rank < 2:
        raise ShapeError(f"`timedistributed` expects [T, ...], got {shape_str(x.shape)}")
    inner = attrs["layer"]
    channels_first = x.layout == "tcf" or (x.rank - 1 >= 2 and inner["op"].startswith("conv"))
    step = TensorType(x.shape[1:], x.dtype, "cf" if channels_first else x.layout)
    (y,) = OPS[inner["op"]].infer(inner, [step])
    # each step's channels sit on axis 1 of the result when the layer keeps them first
    return (TensorType((x.shape[0],) + y.shape, y.dtype, "tcf" if y.layout == "cf" and y.rank >= 1 else "fl"),)


def _td_params(a, ins):
    from dlc.compiler.ops.registry import OPS

    inner = a["layer"]
    x = ins[0]
    return OPS[inner["op"]].count_params(inner, [TensorType(x.shape[1:], x.dtype, "cf")])


register(OpDef("timedistributed", (A("layer", "layer"),), _timedistributed, count_params=_td_params,
               stateful=True, family="wrapper",
               doc="Applies a single-input layer at every time step of [T, ...]: "
                   "`timedistributed(conv2d(16, k=3))` on [T, C, H, W]."))
