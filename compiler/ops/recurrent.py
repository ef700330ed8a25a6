"""Recurrent layers: ``rnn``, ``lstm``, ``gru`` and ``bidirectional`` (Keras semantics on PyTorch's layers)."""

from __future__ import annotations

from dlc.compiler.cost import Poly, shape
from dlc.compiler.ops.kernel import Recurrent
from dlc.compiler.ops.pytorch import OMIT, CallSite, Filled, Form, Torch, Var, assign, variables
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, op_of, register, set_costs
from dlc.compiler.ops.shapes import known, state_matches, tensor, want_float
from dlc.compiler.types import StateType, TensorType, shape_str

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# Stacked recurrent layers: PyTorch builds each one in a Python loop, so a huge count would only hang.
MAX_RNN_LAYERS = 1024
_ATTRS = (
    A("units", "int", min=1), A("layers", "int", 1, min=1, max=MAX_RNN_LAYERS), A("return_sequences", "bool", True),
    A("return_state", "bool", False), A("dropout", "probability", 0.0), A("bias", "bool", True),
)
# The Keras merges of a bidirectional layer's two directions (the generated code calls the runtime's
# merge_directions, backends/torch/runtime/recurrent.py, which defines them).
MERGES = ("concat", "sum", "mul", "ave")
UNMERGED = "none"  # merge=none: both directions as two outputs (Keras' merge_mode=None)


def recurrent_params(cell: str, units: int, layers: int, features: int, directions: int, bias: bool) -> int:
    """Parameters of a (possibly stacked, possibly bidirectional) recurrent layer, as PyTorch counts them."""
    g = _GATES[cell]
    total = 0
    for layer in range(layers):
        fin = features if layer == 0 else units * directions
        total += directions * (g * units * (fin + units) + (2 * g * units if bias else 0))
    return total


def _lengths(attrs, ins: list) -> tuple[list, object]:
    """The inputs without ``lengths``, and the ``lengths`` input (None if not given)."""
    if "lengths" in attrs.get("keyword_inputs", ()):
        return list(ins[:-1]), ins[-1]
    return list(ins), None


def recurrent_shape(cell: str, attrs, ins, directions: int, merge: str | None, name: str):
    """The outputs of a recurrent layer over [T, F]: the sequence (or last step), and the state if returned."""
    ins, lengths = _lengths(attrs, ins)
    if lengths is not None:
        lengths = tensor(lengths, "lengths")
        if lengths.dtype not in ("int64", "int32") or lengths.rank != 0:
            raise ShapeError(f"`{name}`: `lengths` must be one integer per sequence (int64 [], batch not counted), "
                             f"got {lengths.dtype} {shape_str(lengths.shape)}", attr="lengths",
                             code="type-mismatch" if lengths.dtype not in ("int64", "int32") else "shape-mismatch",
                             hint="declare it as `input lengths: [] int64`")
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
    ys = (y, y) if merge == UNMERGED else (y,)  # unmerged: the forward and the backward direction
    return ys + (state,) if attrs["return_state"] else ys


def _cell_values(a, ins, outs) -> dict:
    return {"input_size": ins[0].shape[-1], "hidden_size": a["units"], "num_layers": a["layers"], "bias": a["bias"],
            "dropout": a["dropout"], "nonlinearity": a.get("nonlinearity", OMIT),  # an rnn's only
            "batch_first": True, "bidirectional": False, "return_sequences": a["return_sequences"], "merge": None}


_KEYWORDS = "{,num_layers}{,bias}{,dropout}{,nonlinearity}{,batch_first}{,bidirectional}"
_DEFAULTS = {"num_layers": 1, "bias": True, "dropout": 0.0, "nonlinearity": "tanh", "batch_first": None,
             "bidirectional": False, "return_sequences": True, "merge": None}


def _packed_call(site: CallSite) -> tuple[Filled, Var | None]:
    """The module's call, through packed sequences when ``lengths`` is given (runtime ``run_packed``), and the
    lengths variable."""
    args, lengths = _lengths(site.attrs, site.args)
    if lengths is None:
        return site.call(), None
    call = Filled("run_packed({mod}, {*args})", {"mod": Var(site.mod), "args": variables(args + [lengths])})
    return call, Var(lengths)


def _rnn_call(site: CallSite) -> list[Filled]:
    a, outs = site.attrs, site.outs
    state = outs[1] if a["return_state"] else "_"
    seq = outs[0] if a["return_sequences"] else site.ctx.fresh("seq")
    call, lengths = _packed_call(site)
    lines = [assign([seq, state], call)]
    if not a["return_sequences"] and lengths is None:
        lines.append(assign(outs[:1], Filled("{seq}[:, -1]", {"seq": Var(seq)}), "the last time step"))
    elif not a["return_sequences"]:
        lines.append(assign(outs[:1], Filled("last_steps({seq}, {lengths})", {"seq": Var(seq), "lengths": lengths}),
                            "each sequence's last valid step"))
    return lines


def _label(name: str):
    def label(a) -> str:
        return f"{name} {a['units']}" + (f" ×{a['layers']} layers" if a["layers"] > 1 else "")
    return label


def _cell(name: str, cls: str, attrs: tuple[A, ...], kernel: Recurrent | None) -> None:
    register(OpDef(
        name, attrs, lambda a, ins: recurrent_shape(name, a, ins, 1, None, name),
        count_params=lambda a, ins: recurrent_params(name, a["units"], a["layers"], ins[0].shape[1], 1, a["bias"]),
        inputs=("x", "initial_state"), optional_inputs=frozenset({"initial_state"}), keyword_inputs=("lengths",),
        outputs=lambda a: 2 if a["return_state"] else 1, stateful=True,
        torch=Torch(module=Form(f"nn.{cls}({{input_size}}, {{hidden_size}}{_KEYWORDS})", _cell_values, _DEFAULTS),
                    # inside nn.Sequential: the output only (helpers' SequenceOutput)
                    sequential=Form(f"Sequence{cls}({{input_size}}, {{hidden_size}}{_KEYWORDS}{{,return_sequences}}"
                                    "{,merge})", _cell_values, _DEFAULTS),
                    call=_rnn_call),
        kernel=kernel, family="recurrent", label=_label(name),
        doc=f"`{name}(units, layers=1, return_sequences=true, return_state=false)` over [T, F]; "
            "`lengths=` (int64 []) runs a padded batch packed; `initial_state=` takes the state returned by another "
            "recurrent layer."))


_cell("rnn", "RNN", _ATTRS + (A("nonlinearity", "enum", "tanh", ("tanh", "relu")),), None)  # no gate kernel
_cell("lstm", "LSTM", _ATTRS, Recurrent())
_cell("gru", "GRU", _ATTRS, Recurrent())


def _inner(a) -> tuple[OpDef, dict]:
    cell = dict(a["layer"])
    return op_of(cell.pop("op")), cell


def _bidirectional(attrs, ins):
    inner = {**attrs["layer"], "keyword_inputs": attrs.get("keyword_inputs", ())}
    return recurrent_shape(inner["op"], inner, ins, 2, attrs["merge"], "bidirectional")


def _both_ways(sequential: bool):
    def fill(a, ins, outs) -> dict:
        op, cell = _inner(a)
        if sequential:
            return {"layer": op.torch.sequential.filled(cell, ins, outs, bidirectional=True, merge=a["merge"])}
        return {"layer": op.torch.module.filled(cell, ins, outs, bidirectional=True)}
    return fill


def _bidirectional_call(site: CallSite) -> list[Filled]:
    """The module's output, merged Keras style by the runtime's ``merge_directions`` unless PyTorch's output is
    already it (concatenated directions at every time step)."""
    cell, merge, outs = site.attrs["layer"], site.attrs["merge"], site.outs
    state = outs[1] if cell["return_state"] else "_"
    seq = site.ctx.fresh("seq")  # taken even when unused, so later temporaries keep their names
    call, lengths = _packed_call(site)
    if cell["return_sequences"] and merge == "concat":
        return [assign([outs[0], state], call)]
    if merge == UNMERGED:
        state = outs[2] if cell["return_state"] else "_"
    merged = Filled("merge_directions({seq}, {merge}{,return_sequences}{,lengths})",
                    {"seq": Var(seq), "merge": merge, "return_sequences": cell["return_sequences"],
                     "lengths": lengths if lengths is not None else OMIT},
                    {"return_sequences": True})
    return [assign([seq, state], call), assign(outs[:2] if merge == UNMERGED else outs[:1], merged)]


register(OpDef(
    "bidirectional", (A("layer", "recurrent_layer"), A("merge", "enum", "concat", MERGES + (UNMERGED,))),
    _bidirectional,
    count_params=lambda a, ins: recurrent_params(a["layer"]["op"], a["layer"]["units"], a["layer"]["layers"],
                                                 ins[0].shape[1], 2, a["layer"]["bias"]),
    inputs=("x", "initial_state"), optional_inputs=frozenset({"initial_state"}), keyword_inputs=("lengths",),
    outputs=lambda a: (2 if a["merge"] == UNMERGED else 1) + (1 if a["layer"]["return_state"] else 0), stateful=True,
    torch=Torch(module=Form("{layer}", _both_ways(False)), sequential=Form("{layer}", _both_ways(True)),
                call=_bidirectional_call),
    kernel=Recurrent(directions=2), family="recurrent", draw="directions", wraps=True,
    label=lambda a: _inner(a)[0].describe(_inner(a)[1]),
    doc="Runs a recurrent layer forwards and backwards and merges the two (Keras semantics): "
        "`bidirectional(lstm(128), merge=concat|sum|mul|ave|none)`; `none` returns both directions."))


def _recurrent_cost(cell: str | None):
    """Every step multiplies the input and the hidden state by the gates' weights: T times the weights (without
    biases) per layer and direction. (FlopCounterMode on CPU sees these products for nn.RNN and nn.GRU, but
    nothing of nn.LSTM, whose CPU kernel is not decomposed into matrix products; docs/summary.md.)"""
    def cost(a, ins, outs) -> Poly:
        layer, directions = (a, 1) if cell is not None else (a["layer"], 2)
        x = shape(ins[0])
        weights = recurrent_params(cell or layer["op"], layer["units"], layer["layers"], x[1], directions, False)
        return Poly.dim(x[0]) * weights
    return cost


set_costs({"rnn": _recurrent_cost("rnn"), "lstm": _recurrent_cost("lstm"), "gru": _recurrent_cost("gru"),
           "bidirectional": _recurrent_cost(None)})
