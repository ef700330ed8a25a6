"""Shape manipulation: ``flatten``, ``reshape`` and ``permute``."""

from __future__ import annotations

import math

from dlc.compiler.ops.pytorch import Form, Torch, axis as torch_axis
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register
from dlc.compiler.ops.shapes import axis, numel, out, tensor, with_values
from dlc.compiler.types import MAX_ELEMENTS, shape_str


def _flatten(attrs, ins):
    x = tensor(ins[0])
    start = axis(attrs["start"], x.rank, "flatten") if x.rank else 0
    return out(x, x.shape[:start] + (numel(x.shape[start:], "flatten"),), "fl")


def _start(a, ins, outs) -> dict:
    return {"start_dim": torch_axis(a["start"])}


register(OpDef(
    "flatten", (A("start", "int", 0),), _flatten,
    torch=Torch(module=Form("nn.Flatten({start_dim})", _start),
                function=Form("torch.flatten({x}, {start_dim})", _start)),
    family="shape", doc="Flattens every batch-less axis from `start` (default 0) into one."))


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
    return out(x, tuple(target), "cf" if len(target) >= 3 else "fl")


def _target(a, ins, outs) -> dict:
    return {"shape": tuple(outs[0].shape)}  # the output's shape: any -1 resolved


register(OpDef(
    "reshape", (A("shape", "ints"),), _reshape,
    torch=Torch(module=Form("Reshape({shape})", _target),
                function=Form("{x}.reshape({x}.shape[0], {*shape})", _target)),
    family="shape", label=with_values("reshape"),
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
    return out(x, tuple(x.shape[d] for d in dims), layout)


def _dims(a, ins, outs) -> dict:
    return {"dims": tuple(d + 1 for d in a["dims"])}  # after the batch axis


register(OpDef(
    "permute", (A("dims", "ints", min=0),), _permute,
    torch=Torch(module=Form("Permute({dims})", _dims), function=Form("{x}.permute(0, {*dims})", _dims)),
    family="shape", label=with_values("permute"), doc="Reorder batch-less axes: `permute([1, 0])`."))
