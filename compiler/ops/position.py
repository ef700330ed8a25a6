"""Positions in a sequence: ``positions`` (int64 position ids, ``arange`` over a possibly symbolic length) and
``positional_encoding`` (the sinusoidal encoding of "Attention is all you need" added to a sequence).

Both run in the generated code (backends/torch/runtime/recurrent.py: ``position_ids``, ``sinusoidal_encoding``)
on the input's actual length, so a symbolic length ``T`` stays symbolic and nothing is stored in the state_dict.
"""

from __future__ import annotations

from dlc.compiler.cost import free
from dlc.compiler.ops.pytorch import Form, Torch, axis as torch_axis
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import axis, tensor, want_float
from dlc.compiler.types import TensorType, shape_str


def _positions(attrs, ins):
    x = tensor(ins[0])
    if x.rank == 0:
        raise ShapeError("`positions` needs a sequence: the input has no axis (batch not counted)")
    length = x.shape[axis(attrs["dim"], x.rank, "positions")]
    return (TensorType((length,), "int64", "fl"),)


def _dim(a, ins, outs) -> dict:
    return {"dim": torch_axis(a["dim"])}


register(OpDef(
    "positions", (A("dim", "int", 0),), _positions,
    torch=Torch(module=Form("PositionIds({dim})", _dim), function=Form("position_ids({x}, {dim})", _dim)),
    family="shape", label=lambda a: "positions" if a["dim"] == 0 else f"positions(dim={a['dim']})", aka=("arange",),
    doc="Position ids 0..n-1 along axis `dim` (default 0) of the input: [T, ...] -> int64 [T] (`arange`)."))


def _encoding(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "positional_encoding")
    if x.rank != 2:
        raise ShapeError(f"`positional_encoding` expects a sequence [T, d] (batch not counted), got "
                         f"{shape_str(x.shape)}")
    if attrs["base"] <= 1.0:
        raise ShapeError(f"`positional_encoding`: base must be above 1, got {attrs['base']}", attr="base",
                         code="bad-argument")
    return (x,)


def _base(a, ins, outs) -> dict:
    return {"base": a["base"]}


register(OpDef(
    "positional_encoding", (A("base", "float", 10000.0),), _encoding,
    torch=Torch(module=Form("PositionalEncoding({,base})", _base, {"base": 10000.0}),
                function=Form("sinusoidal_encoding({x}{,base})", _base, {"base": 10000.0})),
    family="shape", label=lambda a: "positional encoding",
    doc="Adds the sinusoidal position encoding (sin on even features, cos on odd ones) to a sequence [T, d]."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("positions", "positional_encoding"), free))
