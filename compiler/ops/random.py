"""Random samples shaped like a tensor: ``randn_like`` (standard normal) and ``rand_like`` (uniform on [0, 1)).

They draw from torch's global generator (``torch.manual_seed`` fixes them) on every call, in training and in
evaluation mode alike: a VAE's reparameterisation ``mu + randn_like(mu) * exp(logvar / 2)`` samples in both.
They have no kernel facet: a fused module draws them in PyTorch, with the same generator, between its kernels.
"""

from __future__ import annotations

from dlc.compiler.cost import free
from dlc.compiler.ops.pytorch import Form, Torch
from dlc.compiler.ops.registry import OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import tensor
from dlc.compiler.types import is_float


def _like(name: str):
    def rule(attrs, ins):
        x = tensor(ins[0])
        if not is_float(x.dtype):
            raise ShapeError(f"`{name}` samples floats shaped like a float tensor, got {x.dtype}", code="type-mismatch",
                             hint="PyTorch samples floating-point tensors only")
        return (x,)
    return rule


for _name, _what in (("randn_like", "standard normal, N(0, 1)"), ("rand_like", "uniform on [0, 1)")):
    register(OpDef(
        _name, (), _like(_name),
        torch=Torch(module=Form(f"Apply(torch.{_name})"), function=Form(f"torch.{_name}({{x}})")),
        family="arith", doc=f"A {_what} sample shaped like the input, from torch's generator, in training and eval."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("randn_like", "rand_like"), free))
