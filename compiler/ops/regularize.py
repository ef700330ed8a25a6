"""Regularisation: ``dropout``, ``stochastic_depth``."""

from __future__ import annotations

from dlc.compiler.cost import free
from dlc.compiler.ops.kernel import Elementwise, Mask
from dlc.compiler.ops.pytorch import Form, Torch, Var
from dlc.compiler.ops.registry import Attr as A, OpDef, register, set_costs
from dlc.compiler.ops.shapes import same_float


def _dropout_advice(a: dict) -> tuple[str, str] | None:
    """p=0 keeps everything: a no-op left behind (p=1 is an error: the kind `probability` is below 1)."""
    return ("dropout-zero", "dropout with p=0 does nothing") if a["p"] == 0 else None


register(OpDef(
    "dropout", (A("p", "probability", 0.5), A("always", "bool", False)), same_float("dropout"),
    torch=Torch(
        module=Form(lambda a: "AlwaysDropout({p})" if a["always"] else "nn.Dropout({p})",
                    lambda a, ins, outs: {"p": a["p"]}),
        # a kernel's reference is given `training` (the kernel's own switch)
        function=Form("F.dropout({x}, {p}, training={training})", lambda a, ins, outs: {
            "p": a["p"], "training": Var("True" if a["always"] else "self.training")})),
    # the mask is the last operand: 0 or 1 / (1 - p)
    kernel=Elementwise(lambda a, x: f"{x[0]} * {x[1]}", lambda a, x, y, g: [f"{g} * {x[1]}"],
                       mask=Mask(p=lambda a: float(a["p"]), always=lambda a: a["always"])),
    family="regularization", label=lambda a: f"dropout {a['p']}" + (" (always)" if a["always"] else ""),
    advice=_dropout_advice,
    doc="Dropout; `always=true` keeps it on at inference (Monte-Carlo dropout)."))


# torchvision.ops.stochastic_depth, drawing from torch's generator as torchvision does (so no kernel: a fused one
# would draw other numbers); the runtime's `stochastic_depth` and `StochasticDepth` are its two forms.
register(OpDef(
    "stochastic_depth", (A("p", "fraction"), A("mode", "enum", "row", ("row", "batch"))),
    same_float("stochastic_depth"),
    torch=Torch(
        module=Form("StochasticDepth({p}, {mode})", lambda a, ins, outs: {"p": a["p"], "mode": a["mode"]}),
        function=Form("stochastic_depth({x}, {p}, {mode}, training=self.training)",
                      lambda a, ins, outs: {"p": a["p"], "mode": a["mode"]})),
    family="regularization",
    label=lambda a: f"stochastic depth {a['p']}" + (" (batch)" if a["mode"] == "batch" else ""),
    doc="Stochastic depth (torchvision's): in training, drops each sample (`mode=row`) or the whole batch "
        "(`mode=batch`) with probability `p`, scaling what is kept by 1 / (1 - p)."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("dropout", "stochastic_depth"), free))
