"""Pooling and resampling: ``maxpool``, ``avgpool``, ``adaptive_avgpool`` and ``upsample``."""

from __future__ import annotations

import math

from dlc.compiler.cost import free
from dlc.compiler.ir import format_value
from dlc.compiler.ops.pytorch import Form, Torch, Var
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import conv_out, out, pair, scaled, tensor, want_float, want_rank, with_values
from dlc.compiler.types import MAX_ELEMENTS


def _nd(ins) -> int:
    return ins[0].rank - 1


def _pool_rule(name: str):
    def rule(attrs, ins):
        x = tensor(ins[0])
        want_rank(x, (2, 3, 4), name, "[C, L], [C, H, W] or [C, D, H, W]")
        want_float(x, name)
        nd = x.rank - 1
        if attrs["k"] == "global":
            return out(x, (x.shape[0],) + (1,) * nd, "cf")
        k = pair(attrs["k"], nd, name, "k")
        s = pair(attrs["stride"] if attrs["stride"] is not None else attrs["k"], nd, name,
                 "stride" if attrs["stride"] is not None else "k")
        p = pair(attrs["pad"], nd, name, "pad")
        for i in range(nd):
            if p[i] * 2 > k[i]:
                raise ShapeError(f"`{name}`: padding {p[i]} must be at most half the kernel size {k[i]}",
                                 attr="pad", code="bad-argument")
        spatial = [conv_out(x.shape[1 + i], k[i], s[i], p[i], 1, attrs["ceil"]) for i in range(nd)]
        return out(x, (x.shape[0], *spatial), "cf")
    return rule


def _pool_label(name: str):
    def label(a) -> str:
        if a["k"] == "global":
            return f"{name} global"
        stride = a["stride"] if a["stride"] is not None else a["k"]
        k = "×".join(str(v) for v in a["k"]) if isinstance(a["k"], (list, tuple)) else f"{a['k']}×{a['k']}"
        return f"{name} {k}" + (f" /{format_value(stride)}" if stride != 1 else "")
    return label


def _pool_torch(kind: str) -> Torch:
    cap = kind.capitalize()
    defaults = {"stride": None, "padding": 0, "ceil_mode": False}

    def window(a, nd: int, callee: str) -> dict:
        if a["k"] == "global":
            return {"callee": Var(callee), "output_size": 1}
        return {"callee": Var(callee), "kernel_size": a["k"], "stride": a["stride"], "padding": a["pad"],
                "ceil_mode": a["ceil"]}

    def module(a, ins, outs):
        nd = _nd(ins)
        return window(a, nd, f"nn.Adaptive{cap}Pool{nd}d" if a["k"] == "global" else f"nn.{cap}Pool{nd}d")

    def function(a, ins, outs):
        nd = _nd(ins)
        return window(a, nd, f"F.adaptive_{kind}_pool{nd}d" if a["k"] == "global" else f"F.{kind}_pool{nd}d")

    return Torch(
        module=Form(lambda a: "{callee}({output_size})" if a["k"] == "global"
                    else "{callee}({kernel_size}{,stride}{,padding}{,ceil_mode})", module, defaults),
        function=Form(lambda a: "{callee}({x}, {output_size})" if a["k"] == "global"
                      else "{callee}({x}, {kernel_size}{,stride}{,padding}{,ceil_mode})", function, defaults))


def _pool(kind: str) -> None:
    name = f"{kind}pool"
    attrs = (A("k", "pool_size", min=1), A("stride", "int2", None, min=1), A("pad", "int2", 0, min=0),
             A("ceil", "bool", False))
    register(OpDef(name, attrs, _pool_rule(name), torch=_pool_torch(kind), family="pool", label=_pool_label(name),
                   aka=tuple(f"{kind}{sep}pool{d}d" for sep in ("", "_") for d in (1, 2, 3)),
                   doc=f"{kind.capitalize()} pooling over [C, L], [C, H, W] or [C, D, H, W]: "
                       f"`{name}(k, stride=k, pad=0, ceil=false)`; "
                       f"`{name}(global)` pools every spatial position."))


_pool("max")
_pool("avg")


def _adaptive(attrs, ins):
    x = tensor(ins[0])
    want_rank(x, (2, 3, 4), "adaptive_avgpool", "[C, L], [C, H, W] or [C, D, H, W]")
    want_float(x, "adaptive_avgpool")
    return out(x, (x.shape[0], *pair(attrs["size"], x.rank - 1, "adaptive_avgpool", "size")), "cf")


register(OpDef(
    "adaptive_avgpool", (A("size", "int2", min=1),), _adaptive,
    torch=Torch(
        module=Form("{callee}({output_size})", lambda a, ins, outs: {
            "callee": Var(f"nn.AdaptiveAvgPool{_nd(ins)}d"), "output_size": a["size"]}),
        function=Form("{callee}({x}, {output_size})", lambda a, ins, outs: {
            "callee": Var(f"F.adaptive_avg_pool{_nd(ins)}d"), "output_size": a["size"]})),
    family="pool", label=with_values("adaptive_avgpool"),
    doc="Average pooling to a fixed output size: `adaptive_avgpool(4)` or `adaptive_avgpool([4, 4])`."))


def _upsample(attrs, ins):
    x = tensor(ins[0])
    want_rank(x, (2, 3), "upsample", "[C, L] or [C, H, W]")
    want_float(x, "upsample")
    if attrs["mode"] == "bilinear" and x.rank != 3:
        raise ShapeError("`upsample(mode=bilinear)` needs [C, H, W]", attr="mode", code="bad-argument")
    scale = attrs["scale"]
    spatial = []
    for d in x.shape[1:]:
        if isinstance(d, int) and d * scale > MAX_ELEMENTS:  # also keeps an infinite product from int()
            raise ShapeError(f"`upsample`: scale {scale} makes a dimension of size {d} too large", attr="scale",
                             code="too-large")
        spatial.append(scaled(d, scale) if isinstance(d, str) else int(math.floor(d * scale)))
        if isinstance(spatial[-1], int) and spatial[-1] < 1:
            raise ShapeError(f"`upsample`: scale {scale} shrinks a dimension of size {d} to nothing",
                             attr="scale", code="bad-argument")
    return out(x, (x.shape[0], *spatial), "cf")


def _resample(a, ins, outs) -> dict:
    # align_corners only means something for bilinear: nearest never writes it
    return {"scale_factor": a["scale"], "mode": a["mode"],
            "align_corners": a["align_corners"] if a["mode"] == "bilinear" else None}


register(OpDef(
    "upsample", (A("scale", "positive", 2.0), A("mode", "enum", "nearest", ("nearest", "bilinear")),
                 A("align_corners", "bool", False)), _upsample,
    torch=Torch(
        module=Form("nn.Upsample(scale_factor={scale_factor}, mode={mode}{,align_corners})", _resample,
                    {"align_corners": None}),
        function=Form("F.interpolate({x}, scale_factor={scale_factor}, mode={mode}{,align_corners})", _resample,
                      {"align_corners": None})),
    family="pool", label=with_values("upsample"), aka=("interpolate", "upsampling2d"),
    doc="Upsampling of [C, L] or [C, H, W] by `scale`: `upsample(2, mode=bilinear)`."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("maxpool", "avgpool", "adaptive_avgpool", "upsample"), free))
