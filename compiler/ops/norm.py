"""Normalisation: ``batchnorm``, ``layernorm``, ``groupnorm`` and ``instancenorm``."""

from __future__ import annotations

import math

from dlc.compiler.cost import free
from dlc.compiler.ops.kernel import ChannelAffine, Row
from dlc.compiler.ops.pytorch import Form, Torch, Var
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_buffers, set_costs
from dlc.compiler.ops.shapes import known, tensor, want_float, want_rank
from dlc.compiler.types import shape_str


def _batchnorm(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "batchnorm")
    want_rank(x, (1, 2, 3, 4), "batchnorm", "[C], [C, L], [C, H, W] or [C, D, H, W]")
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


# nn.BatchNorm1d takes [N, C] and [N, C, L]; 2d [N, C, H, W]; 3d [N, C, D, H, W]
_BATCHNORM_ND = {1: 1, 2: 1, 3: 2, 4: 3}


def _batchnorm_module(a, ins, outs) -> dict:
    t = ins[0]
    return {"callee": Var(f"nn.BatchNorm{_BATCHNORM_ND[t.rank]}d"), "num_features": t.shape[0],
            "eps": a["eps"], "momentum": a["momentum"], "affine": a["affine"]}


register(OpDef(
    "batchnorm", (A("eps", "epsilon", 1e-5), A("momentum", "fraction", 0.1), A("affine", "bool", True)), _batchnorm,
    count_params=lambda a, ins: 2 * ins[0].shape[0] if a["affine"] else 0, stateful=True,
    torch=Torch(module=Form("{callee}({num_features}{,eps}{,momentum}{,affine})", _batchnorm_module,
                            {"eps": 1e-5, "momentum": 0.1, "affine": True})),
    kernel=ChannelAffine(), family="norm", folds=True, overwritable=True, aka=("batch_norm",),
    doc="Batch normalisation over the channel axis: `batchnorm(eps=1e-5, momentum=0.1)`."))


def _layernorm(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "layernorm")
    n = attrs["dims"]
    if not 1 <= n <= x.rank:
        raise ShapeError(f"`layernorm(dims={n})` needs 1 <= dims <= rank ({x.rank})", attr="dims", code="bad-argument")
    for d in x.shape[-n:]:
        known(d, "layernorm", "size of every normalised dimension")
    return (x,)


def _row_forward(a, args: list[str], y: str) -> list[str]:
    x = args[0]
    lines = [
        f"row_mean = tl.sum(tl.where(mask, {x}, 0.0), 0) / n_cols",
        f"row_dev = tl.where(mask, {x} - row_mean, 0.0)",
        f"row_rstd = 1.0 / tl.sqrt(tl.sum(row_dev * row_dev, 0) / n_cols + {float(a['eps'])!r})",
        "row_hat = row_dev * row_rstd",
    ]
    if len(args) == 3:
        return lines + [f"{y} = row_hat * {args[1]} + {args[2]}"]
    return lines + [f"{y} = row_hat"]


def _row_backward(a, args: list[str], y: str, g: str, gx: str) -> list[str]:
    ghat = f"{g} * {args[1]}" if len(args) == 3 else g
    lines = [
        f"g_hat = tl.where(mask, {ghat}, 0.0)",
        "g_mean = tl.sum(g_hat, 0) / n_cols",
        "g_proj = tl.sum(g_hat * row_hat, 0) / n_cols",
        f"{gx} = row_rstd * (g_hat - g_mean - row_hat * g_proj)",
    ]
    if len(args) == 3:
        lines += [f"g{args[1]} = {g} * row_hat", f"g{args[2]} = {g}"]
    return lines


def _layernorm_module(a, ins, outs) -> dict:
    t, dims = ins[0], a["dims"]
    return {"normalized_shape": t.shape[-1] if dims == 1 else list(t.shape[-dims:]), "eps": a["eps"],
            "elementwise_affine": a["affine"]}


register(OpDef(
    "layernorm", (A("dims", "int", 1, min=1), A("eps", "epsilon", 1e-5), A("affine", "bool", True)), _layernorm,
    count_params=lambda a, ins: 2 * math.prod(ins[0].shape[-a["dims"]:]) if a["affine"] else 0, stateful=True,
    torch=Torch(
        module=Form("nn.LayerNorm({normalized_shape}{,eps}{,elementwise_affine})", _layernorm_module,
                    {"eps": 1e-5, "elementwise_affine": True}),
        # used as the row kernel's reference: the caller gives the module's weight and bias when it has them
        function=Form("F.layer_norm({x}, {x}.shape[{start}:], {weight}, {bias}, {eps})", lambda a, ins, outs: {
            "start": -a["dims"], "weight": Var("None"), "bias": Var("None"), "eps": float(a["eps"])})),
    kernel=Row(axes=lambda a, rank: a["dims"], forward=_row_forward, backward=_row_backward,
               weights=lambda a: a["affine"]),
    family="norm", aka=("layer_norm",),
    doc="Layer normalisation over the last `dims` axes: `layernorm(dims=1, eps=1e-5)`."))


def _channels_first(x, name: str) -> None:
    """Refuse data whose channels are not on axis 0 (as batchnorm does): these layers normalise per channel."""
    if x.layout == "tcf" or (x.rank == 2 and x.layout == "fl"):
        raise ShapeError(f"`{name}` normalises channels-first data, but {shape_str(x.shape)} has its features "
                         f"{'after a time axis' if x.layout == 'tcf' else 'last'}",
                         hint="use `layernorm` on sequences, or `permute` the channels to the front")


def _groupnorm(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "groupnorm")
    want_rank(x, (1, 2, 3, 4), "groupnorm", "[C], [C, L], [C, H, W] or [C, D, H, W]")
    _channels_first(x, "groupnorm")
    c, g = known(x.shape[0], "groupnorm", "number of channels"), attrs["groups"]
    if c % g:
        raise ShapeError(f"`groupnorm({g})`: the groups must divide the channels ({c})", attr="groups",
                         code="bad-argument")
    return (x,)


register(OpDef(
    "groupnorm", (A("groups", "int", min=1), A("eps", "epsilon", 1e-5), A("affine", "bool", True)), _groupnorm,
    count_params=lambda a, ins: 2 * ins[0].shape[0] if a["affine"] else 0, stateful=True,
    torch=Torch(module=Form("nn.GroupNorm({num_groups}, {num_channels}{,eps}{,affine})", lambda a, ins, outs: {
        "num_groups": a["groups"], "num_channels": ins[0].shape[0], "eps": a["eps"], "affine": a["affine"]},
        {"eps": 1e-5, "affine": True})),
    family="norm", label=lambda a: f"groupnorm {a['groups']}", aka=("group_norm",),
    doc="Group normalisation: the channels in `groups` groups, each normalised over its channels and positions: "
        "`groupnorm(groups, eps=1e-5, affine=true)`."))


def _instancenorm(attrs, ins):
    x = tensor(ins[0])
    want_float(x, "instancenorm")
    want_rank(x, (2, 3, 4), "instancenorm", "[C, L], [C, H, W] or [C, D, H, W]")
    _channels_first(x, "instancenorm")
    known(x.shape[0], "instancenorm", "number of channels")
    return (x,)


register(OpDef(
    "instancenorm", (A("eps", "epsilon", 1e-5), A("momentum", "fraction", 0.1), A("affine", "bool", False),
                     A("track_running_stats", "bool", False)), _instancenorm,
    count_params=lambda a, ins: 2 * ins[0].shape[0] if a["affine"] else 0, stateful=True,
    torch=Torch(module=Form(
        "{callee}({num_features}{,eps}{,momentum}{,affine}{,track_running_stats})", lambda a, ins, outs: {
            "callee": Var(f"nn.InstanceNorm{ins[0].rank - 1}d"), "num_features": ins[0].shape[0], "eps": a["eps"],
            "momentum": a["momentum"], "affine": a["affine"], "track_running_stats": a["track_running_stats"]},
        {"eps": 1e-5, "momentum": 0.1, "affine": False, "track_running_stats": False})),
    family="norm", aka=("instance_norm",),
    doc="Instance normalisation of each channel of each sample over its positions (`nn.InstanceNorm1d/2d/3d` by "
        "rank): `instancenorm(eps=1e-5, momentum=0.1, affine=false, track_running_stats=false)`."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("batchnorm", "layernorm", "groupnorm", "instancenorm"), free))


def _running_stats(a, ins) -> int:
    # running_mean and running_var (one per channel) and num_batches_tracked
    return 2 * ins[0].shape[0] + 1 if a.get("track_running_stats", True) else 0


set_buffers({"batchnorm": _running_stats, "instancenorm": _running_stats})
