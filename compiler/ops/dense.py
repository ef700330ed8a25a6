"""Dense layers: ``linear`` and ``embedding``."""

from __future__ import annotations

from typing import Any

from dlc.compiler.cost import Poly, free, shape
from dlc.compiler.kinds import Positive
from dlc.compiler.ops.kernel import Anchor
from dlc.compiler.ops.pytorch import Form, Torch
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import known, out, tensor, want_float
from dlc.compiler.types import TensorType, Type


def _linear(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "linear")
    if x.rank == 0:
        raise ShapeError("`linear` needs at least one feature dimension")
    known(x.shape[-1], "linear", "number of input features")
    return out(x, x.shape[:-1] + (attrs["units"],))


register(OpDef(
    "linear", (A("units", "int", min=1), A("bias", "bool", True)), _linear,
    count_params=lambda a, ins: ins[0].shape[-1] * a["units"] + (a["units"] if a["bias"] else 0),
    stateful=True,
    torch=Torch(module=Form("nn.Linear({in_features}, {out_features}{,bias})",
                            lambda a, ins, outs: {"in_features": ins[0].shape[-1], "out_features": a["units"],
                                                  "bias": a["bias"]},
                            {"bias": True})),
    kernel=Anchor(matmul=True), family="linear", label=lambda a: f"linear {a['units']}", aka=("dense",),
    fold_axis=-1, overwritable=True,
    doc="Fully connected layer on the last axis: `linear(units, bias=true)`.",
))


def _embedding(attrs, ins):
    x = tensor(ins[0])
    if x.dtype not in ("int64", "int32"):
        raise ShapeError(f"`embedding` needs integer token ids, got {x.dtype}", code="type-mismatch",
                         hint="declare the input as e.g. `input tokens: [T] int64`")
    return (TensorType(x.shape + (attrs["dim"],), "float32", "fl"),)


class _MaxNorm(Positive):
    """An embedding's `max_norm`: none (the default), or a positive number."""

    def check(self, v: Any, op: str, attr: str, attrs: dict[str, Any], inputs: list[Type]) -> str | None:
        return None if v is None else super().check(v, op, attr, attrs, inputs)


register(OpDef(
    "embedding", (A("vocab", "int", min=1), A("dim", "int", min=1), A("padding_idx", "token_id", None, min=0),
                  A("max_norm", _MaxNorm(), None), A("norm_type", "positive", 2.0)),
    _embedding,
    count_params=lambda a, ins: a["vocab"] * a["dim"],
    stateful=True,
    torch=Torch(module=Form("nn.Embedding({num_embeddings}, {embedding_dim}{,padding_idx}{,max_norm}{,norm_type})",
                            lambda a, ins, outs: {"num_embeddings": a["vocab"], "embedding_dim": a["dim"],
                                                  "padding_idx": a["padding_idx"], "max_norm": a["max_norm"],
                                                  "norm_type": a["norm_type"]},
                            {"padding_idx": None, "max_norm": None, "norm_type": 2.0})),
    family="embedding", label=lambda a: f"embedding {a['vocab']}×{a['dim']}",
    doc="Lookup table: `embedding(vocab, dim, padding_idx=none, max_norm=none, norm_type=2.0)`; integer ids [T] "
        "-> [T, dim]; rows looked up are renormalised in place to norm at most `max_norm`, as in PyTorch.",
))


def _linear_cost(a, ins, outs) -> Poly:
    # one product of [rows, in_features] by [in_features, units] (the bias is not counted, as FlopCounterMode)
    x = shape(ins[0])
    return Poly.numel(x) * a["units"]


set_costs({"linear": _linear_cost, "embedding": free})  # a lookup multiplies nothing
