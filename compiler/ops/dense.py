"""Dense layers: ``linear`` and ``embedding``."""

from __future__ import annotations

from dlc.compiler.ops.kernel import Anchor
from dlc.compiler.ops.pytorch import Form, Torch
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register
from dlc.compiler.ops.shapes import known, out, tensor, want_float
from dlc.compiler.types import TensorType


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
    kernel=Anchor(matmul=True), family="linear", label=lambda a: f"linear {a['units']}",
    fold_axis=-1, overwritable=True,
    doc="Fully connected layer on the last axis: `linear(units, bias=true)`.",
))


def _embedding(attrs, ins):
    x = tensor(ins[0])
    if x.dtype not in ("int64", "int32"):
        raise ShapeError(f"`embedding` needs integer token ids, got {x.dtype}", code="type-mismatch",
                         hint="declare the input as e.g. `input tokens: [T] int64`")
    return (TensorType(x.shape + (attrs["dim"],), "float32", "fl"),)


register(OpDef(
    "embedding", (A("vocab", "int", min=1), A("dim", "int", min=1), A("padding_idx", "token_id", None, min=0)),
    _embedding,
    count_params=lambda a, ins: a["vocab"] * a["dim"],
    stateful=True,
    torch=Torch(module=Form("nn.Embedding({num_embeddings}, {embedding_dim}{,padding_idx})",
                            lambda a, ins, outs: {"num_embeddings": a["vocab"], "embedding_dim": a["dim"],
                                                  "padding_idx": a["padding_idx"]},
                            {"padding_idx": None})),
    family="embedding", label=lambda a: f"embedding {a['vocab']}×{a['dim']}",
    doc="Lookup table: `embedding(vocab, dim)`; integer ids [T] -> [T, dim].",
))
