"""Convolutions: ``conv1d``, ``conv2d``, ``conv3d`` and the transposed ``conv_transpose1d/2d/3d``."""

from __future__ import annotations

import math

from dlc.compiler.cost import Poly, shape
from dlc.compiler.ir import format_value
from dlc.compiler.ops.kernel import Anchor
from dlc.compiler.ops.pytorch import Form, Torch
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import conv_out, known, out, pair, symbolic_transpose, tensor, want_float, want_rank
from dlc.compiler.types import shape_str

_MEANING = {1: "[C, L]", 2: "[C, H, W]", 3: "[C, D, H, W]"}
_ATTRS = (
    A("channels", "int", min=1), A("k", "int2", min=1), A("stride", "int2", 1, min=1), A("pad", "pad", 0, min=0),
    A("dilation", "int2", 1, min=1), A("groups", "int", 1, min=1), A("bias", "bool", True),
)


def _rule(name: str, nd: int, transpose: bool):
    def rule(attrs, ins):
        x = tensor(ins[0])
        want_float(x, name)
        want_rank(x, (nd + 1,), name, _MEANING[nd])
        if nd == 3 and x.layout == "tcf":
            raise ShapeError(f"`{name}` convolves [C, D, H, W], but {shape_str(x.shape)} has a time axis before its "
                             "channels", hint="use `timedistributed(conv2d(...))` to convolve every time step")
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
            return out(x, (cout,) + x.shape[1:], "cf")
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
        return out(x, (cout, *spatial), "cf")
    return rule


def _params(nd: int):
    def params(a, ins):
        cin = ins[0].shape[0]
        k = math.prod(pair(a["k"], nd))
        return cin // a["groups"] * a["channels"] * k + (a["channels"] if a["bias"] else 0)
    return params


def _label(name: str, nd: int):
    def label(a) -> str:
        k = str(a["k"]) if nd == 1 else "×".join(str(v) for v in a["k"]) if isinstance(a["k"], (list, tuple)) \
            else "×".join([str(a["k"])] * nd)
        stride = f" /{format_value(a['stride'])}" if a["stride"] not in (1, [1] * nd) else ""
        return f"{name} {k}{stride}, {a['channels']}"
    return label


def _torch(cls: str, transpose: bool, channels_last: bool) -> Torch:
    keywords = ("stride", "padding") + (("output_padding",) if transpose else ()) + ("dilation", "groups", "bias")
    template = (f"nn.{cls}({{in_channels}}, {{out_channels}}, kernel_size={{kernel_size}}"
                + "".join(f"{{,{k}}}" for k in keywords) + ")")

    def fill(a, ins, outs):
        values = {"in_channels": ins[0].shape[0], "out_channels": a["channels"], "kernel_size": a["k"],
                  "stride": a["stride"], "padding": a["pad"], "dilation": a["dilation"], "groups": a["groups"],
                  "bias": a["bias"]}
        if transpose:
            values["output_padding"] = a["output_pad"]
        return values

    defaults = {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1, "groups": 1, "bias": True}
    return Torch(module=Form(template, fill, defaults), channels_last=channels_last)


def _conv(nd: int, transpose: bool = False) -> None:
    name = f"conv{'_transpose' if transpose else ''}{nd}d"
    attrs = _ATTRS
    if transpose:
        attrs = attrs[:4] + (A("output_pad", "int2", 0, min=0),) + attrs[4:]
    cls = f"Conv{'Transpose' if transpose else ''}{nd}d"
    # the fused runtime's anchor (conv_without_bias) and batchnorm folding run the 1-d and 2-d convolutions and
    # the 2-d transposed one; the others are never fused or folded
    runtime = nd in (1, 2) and (nd == 2 or not transpose)
    register(OpDef(
        name, attrs, _rule(name, nd, transpose), count_params=_params(nd), stateful=True,
        torch=_torch(cls, transpose, channels_last=nd == 2 and not transpose),
        kernel=Anchor() if runtime else None, family="conv", label=_label(name, nd),
        fold_axis=0 if runtime and not transpose else None, overwritable=True,
        doc=f"{nd}-d {'transposed ' if transpose else ''}convolution: "
            f"`{name}(channels, k, stride=1, pad=0, dilation=1, groups=1, bias=true)`."))


_conv(1)
_conv(2)
_conv(3)
_conv(1, transpose=True)
_conv(2, transpose=True)
_conv(3, transpose=True)


def _cost(nd: int, transpose: bool):
    """One multiply per weight and output position (FlopCounterMode's rule): a convolution's output positions, a
    transposed convolution's input positions (each spreads its kernel over the output); biases are not counted."""
    def cost(a, ins, outs) -> Poly:
        x, y = shape(ins[0]), shape(outs[0])
        positions = Poly.numel(x[1:] if transpose else y[1:])
        return positions * (x[0] * a["channels"] // a["groups"]) * math.prod(pair(a["k"], nd))
    return cost


set_costs({f"conv{'_transpose' if t else ''}{nd}d": _cost(nd, t) for t in (False, True) for nd in (1, 2, 3)})
