"""Shape manipulation: ``flatten``, ``reshape``, ``permute``, ``pad``, ``crop``, ``pixel_shuffle`` and
``pixel_unshuffle``."""

from __future__ import annotations

import math

from dlc.compiler.cost import free
from dlc.compiler.kinds import MAX_ARG
from dlc.compiler.ops.pytorch import CallSite, Filled, Form, Torch, Var, assign, axis as torch_axis
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import axis, known, numel, offset, out, scaled, tensor, want_rank, with_values
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


# ---- padding and cropping ---------------------------------------------------------------------------------

_PAD_MODES = ("constant", "reflect", "replicate", "circular")
_PAD_MODULES = {"constant": "ConstantPad", "reflect": "ReflectionPad", "replicate": "ReplicationPad",
                "circular": "CircularPad"}


def _pad(attrs, ins):
    x = tensor(ins[0])
    amounts, mode = list(attrs["pad"]), attrs["mode"]
    n = len(amounts) // 2
    if len(amounts) % 2 or not 1 <= n <= 3:
        raise ShapeError(f"`pad` takes 2, 4 or 6 amounts (left, right for the last axis, then the axis before it, "
                         f"...), got {len(amounts)}", attr="pad", code="bad-argument",
                         hint="as F.pad: `pad([left, right])`, `pad([left, right, top, bottom])`")
    if mode == "constant":
        if n > x.rank:
            raise ShapeError(f"`pad`: {len(amounts)} amounts pad {n} axes, but the input has {x.rank} (batch not "
                             f"counted)", attr="pad", code="bad-argument")
    else:
        if n not in (x.rank - 1, x.rank):
            raise ShapeError(f"`pad(mode={mode})` pads the last {n} axes of a rank-{n + 1} input (or rank {n}), "
                             f"got rank {x.rank}", attr="pad", code="bad-argument",
                             hint="as F.pad: only `mode=constant` pads any number of trailing axes")
        if any(v < 0 for v in amounts):
            raise ShapeError(f"`pad(mode={mode})` cannot crop: negative amounts need `mode=constant`", attr="pad",
                             code="bad-argument")
    if mode != "constant" and attrs["value"] != 0.0:
        raise ShapeError(f"`pad`: `value` is the fill of `mode=constant`, not of `mode={mode}`", attr="value",
                         code="bad-argument")
    shape = list(x.shape)
    for i in range(n):
        ax, lo, hi = x.rank - 1 - i, amounts[2 * i], amounts[2 * i + 1]
        size = shape[ax]
        if isinstance(size, str):
            shape[ax] = offset(size, lo + hi)
            continue
        if mode == "reflect" and max(lo, hi) >= size:
            raise ShapeError(f"`pad(mode=reflect)`: amounts must be smaller than the padded axis, got {max(lo, hi)} "
                             f"for an axis of size {size}", attr="pad", code="bad-argument")
        if mode == "circular" and max(lo, hi) > size:
            raise ShapeError(f"`pad(mode=circular)`: amounts must be at most the padded axis, got {max(lo, hi)} "
                             f"for an axis of size {size}", attr="pad", code="bad-argument")
        shape[ax] = size + lo + hi
        if shape[ax] < 1:
            raise ShapeError(f"`pad`: {lo}, {hi} leaves nothing of an axis of size {size}", attr="pad",
                             code="bad-argument")
    return out(x, tuple(shape))


def _pad_module(a, ins, outs) -> dict:
    n, mode = len(a["pad"]) // 2, a["mode"]
    if mode == "constant" and a["value"] == 0.0:
        return {"callee": Var(f"nn.ZeroPad{n}d"), "padding": tuple(a["pad"]), "value": 0.0}
    return {"callee": Var(f"nn.{_PAD_MODULES[mode]}{n}d"), "padding": tuple(a["pad"]), "value": a["value"]}


register(OpDef(
    "pad", (A("pad", "ints", min=-MAX_ARG), A("mode", "enum", "constant", _PAD_MODES), A("value", "float", 0.0)), _pad,
    torch=Torch(
        module=Form(lambda a: "{callee}({padding}, {value})" if a["mode"] == "constant" and a["value"] != 0.0
                    else "{callee}({padding})", _pad_module),
        function=Form("F.pad({x}, {pad}{,mode}{,value})",
                      lambda a, ins, outs: {"pad": tuple(a["pad"]), "mode": a["mode"], "value": a["value"]},
                      {"mode": "constant", "value": 0.0})),
    family="shape", label=lambda a: f"pad {list(a['pad'])}" + (f" {a['mode']}" if a["mode"] != "constant" else ""),
    doc="Pads trailing axes by per-side amounts in F.pad's order (last axis first): `pad([left, right])`, "
        "`pad([l, r, t, b], mode=reflect)`; negative amounts crop (constant mode)."))


def _crop(attrs, ins):
    x = tensor(ins[0])
    if (attrs["size"] is None) == (len(ins) < 2):
        raise ShapeError("`crop` takes a size (`crop([H, W])`) or a tensor to match (`crop(like=skip)`), not both",
                         attr="size", code="bad-argument")
    if len(ins) > 1:
        like = tensor(ins[1], "`like`")
        if like.rank != x.rank:
            raise ShapeError(f"`crop(like=...)` needs a tensor of the same rank: {x.rank} and {like.rank}",
                             code="shape-mismatch")
        target = list(like.shape[1:])
    else:
        target = list(attrs["size"])
    if not 1 <= len(target) <= min(3, x.rank):
        raise ShapeError(f"`crop` crops 1 to 3 trailing axes of a rank-{x.rank} input, got {len(target)} sizes",
                         attr="size", code="bad-argument")
    shape = list(x.shape)
    for i, want in enumerate(target):
        ax = x.rank - len(target) + i
        have = shape[ax]
        if have == want:
            continue
        if isinstance(have, str) or isinstance(want, str):
            raise ShapeError(f"`crop` needs known sizes to crop {have} to {want}", code="symbolic-dim",
                             hint="give the symbolic dimension a number in the input's shape")
        if want > have:
            raise ShapeError(f"`crop` cannot crop an axis of size {have} to the larger size {want}",
                             attr="size" if len(ins) < 2 else None)
        shape[ax] = want
    return out(x, tuple(shape))


def _crop_edges(ins, outs) -> list[tuple[int, int]]:
    """(start, end) of the kept part of each trailing axis a crop cuts: centred, any odd row at the end."""
    x, y = ins[0], outs[0]
    first = next((i for i in range(x.rank) if x.shape[i] != y.shape[i]), x.rank)
    return [((x.shape[i] - y.shape[i]) // 2, (x.shape[i] - y.shape[i]) // 2 + y.shape[i])
            for i in range(first, x.rank)]


def _crop_slices(a, ins, outs) -> dict:
    return {"slices": tuple(Var(f"{lo}:{hi}") for lo, hi in _crop_edges(ins, outs))}


def _crop_module(a, ins, outs) -> dict:
    edges = _crop_edges(ins, outs)
    padding = []
    for (lo, hi), size in zip(reversed(edges), reversed(ins[0].shape)):
        padding += [-lo, -(size - hi)]
    return {"callee": Var(f"nn.ZeroPad{len(edges)}d"), "padding": tuple(padding)}


def _crop_call(site: CallSite) -> list[Filled]:
    # the module crops its first input; `like` only gave the size
    return [assign(site.outs[:1], Filled("{mod}({x})", {"mod": Var(site.mod), "x": Var(site.args[0])}))]


register(OpDef(
    "crop", (A("size", "ints", None, min=1),), _crop, inputs=("x", "like"), optional_inputs=frozenset({"like"}),
    torch=Torch(module=Form("{callee}({padding})", _crop_module), call=_crop_call,
                function=Form("{x}[..., {*slices}]", _crop_slices)),
    family="shape", label=lambda a: "crop" if a["size"] is None else f"crop {list(a['size'])}",
    doc="Centre crop of the trailing axes: `crop([H, W])`, or `crop(like=skip)` to the size of `skip`'s axes "
        "after the first."))


def _shuffle(name: str, down: bool):
    def rule(attrs, ins):
        x = tensor(ins[0])
        want_rank(x, (3,), name, "[C, H, W]")
        r = attrs["factor"]
        c = known(x.shape[0], name, "number of channels")
        if down:
            for d in x.shape[1:]:
                if known(d, name, "height and width") % r:
                    raise ShapeError(f"`{name}({r})`: height and width must be multiples of {r}, got "
                                     f"{x.shape[1]}×{x.shape[2]}", attr="factor", code="bad-argument")
            return out(x, (c * r * r, x.shape[1] // r, x.shape[2] // r), "cf")
        if c % (r * r):
            raise ShapeError(f"`{name}({r})`: the channels ({c}) must be a multiple of {r}² = {r * r}",
                             attr="factor", code="bad-argument")
        spatial = tuple(scaled(d, r) if isinstance(d, str) else d * r for d in x.shape[1:])
        return out(x, (c // (r * r), *spatial), "cf")
    return rule


for _name, _cls, _down, _what in (("pixel_shuffle", "PixelShuffle", False, "upscale_factor"),
                                  ("pixel_unshuffle", "PixelUnshuffle", True, "downscale_factor")):
    register(OpDef(
        _name, (A("factor", "int", min=1, max=1024),), _shuffle(_name, _down),
        torch=Torch(module=Form(f"nn.{_cls}({{{_what}}})", lambda a, ins, outs, w=_what: {w: a["factor"]}),
                    function=Form(f"F.{_name}({{x}}, {{{_what}}})", lambda a, ins, outs, w=_what: {w: a["factor"]})),
        family="shape", label=with_values(_name),
        doc=("Space to depth: `pixel_unshuffle(r)`, [C, H, W] -> [C r², H / r, W / r]." if _down else
             "Depth to space (sub-pixel convolution): `pixel_shuffle(r)`, [C r², H, W] -> [C, H r, W r].")))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("flatten", "reshape", "permute", "pad", "crop", "pixel_shuffle", "pixel_unshuffle"), free))
