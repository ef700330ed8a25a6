"""Elementwise ops as Triton expressions, their derivatives, and their PyTorch references.

Every kernel of the fused backend is assembled from this table: an IR elementwise chain becomes
one line per op in the forward kernel, the same lines again in the backward kernel (values are
recomputed, not stored), then one derivative line per op in reverse order. ``args`` are the names
of the op's operand variables (in the kernel's compute dtype), ``out`` the name of its result and
``g`` the name of the gradient flowing into that result.

Two ops exist only inside kernels: ``affine`` (batchnorm as ``x * scale + shift`` with per-channel
scale and shift, computed from running or batch statistics by ``batchnorm_affine``) and ``bias``
(the bias of the anchor before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# SELU's constants (Klambauer et al. 2017), as torch.nn.SELU uses them.
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
INV_SQRT_2 = 0.7071067811865476


def _f(v: float) -> str:
    return repr(float(v))


@dataclass(frozen=True)
class EwOp:
    """One elementwise op: forward expression, derivative per operand, PyTorch reference."""

    triton: Callable[[dict, list[str]], str]
    grads: Callable[[dict, list[str], str, str], list[str]]
    torch: Callable[[dict, list[str]], str]


def _product(names: list[str]) -> str:
    return " * ".join(names) if names else "1.0"


def _gelu_grad(a: dict, x: list[str], y: str, g: str) -> list[str]:
    if a["approximate"] == "tanh":
        return [f"{g} * dlc_gelu_tanh_grad({x[0]})"]
    return [f"{g} * dlc_gelu_grad({x[0]})"]


def _gelu(a: dict, x: list[str]) -> str:
    if a["approximate"] == "tanh":
        return f"dlc_gelu_tanh({x[0]})"
    return f"0.5 * {x[0]} * (1.0 + tl.math.erf({x[0]} * {_f(INV_SQRT_2)}))"


EW: dict[str, EwOp] = {
    "add": EwOp(lambda a, x: " + ".join(x), lambda a, x, y, g: [g] * len(x), lambda a, x: " + ".join(x)),
    "bias": EwOp(lambda a, x: f"{x[0]} + {x[1]}", lambda a, x, y, g: [g, g], lambda a, x: f"{x[0]} + {x[1]}"),
    "sub": EwOp(lambda a, x: f"{x[0]} - {x[1]}", lambda a, x, y, g: [g, f"-{g}"], lambda a, x: f"{x[0]} - {x[1]}"),
    "mul": EwOp(lambda a, x: " * ".join(x),
                lambda a, x, y, g: [f"{g} * {_product(x[:i] + x[i + 1:])}" for i in range(len(x))],
                lambda a, x: " * ".join(x)),
    "mean": EwOp(lambda a, x: f"({' + '.join(x)}) * {_f(1 / len(x))}",
                 lambda a, x, y, g: [f"{g} * {_f(1 / len(x))}"] * len(x),
                 lambda a, x: f"({' + '.join(x)}) / {len(x)}"),
    "abs": EwOp(lambda a, x: f"tl.abs({x[0]})",
                lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, tl.where({x[0]} < 0, -{g}, 0.0))"],
                lambda a, x: f"torch.abs({x[0]})"),
    "scale": EwOp(lambda a, x: f"{x[0]} * {_f(a['factor'])}", lambda a, x, y, g: [f"{g} * {_f(a['factor'])}"],
                  lambda a, x: f"{x[0]} * {_f(a['factor'])}"),
    "shift": EwOp(lambda a, x: f"{x[0]} + {_f(a['offset'])}", lambda a, x, y, g: [g],
                  lambda a, x: f"{x[0]} + {_f(a['offset'])}"),
    "affine": EwOp(lambda a, x: f"{x[0]} * {x[1]} + {x[2]}",
                   lambda a, x, y, g: [f"{g} * {x[1]}", f"{g} * {x[0]}", g],
                   lambda a, x: f"{x[0]} * {x[1]} + {x[2]}"),
    "relu": EwOp(lambda a, x: f"tl.where({x[0]} > 0, {x[0]}, 0.0)",
                 lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, 0.0)"], lambda a, x: f"F.relu({x[0]})"),
    "leaky_relu": EwOp(lambda a, x: f"tl.where({x[0]} > 0, {x[0]}, {x[0]} * {_f(a['slope'])})",
                       lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, {g} * {_f(a['slope'])})"],
                       lambda a, x: f"F.leaky_relu({x[0]}, {_f(a['slope'])})"),
    "elu": EwOp(lambda a, x: f"tl.where({x[0]} > 0, {x[0]}, {_f(a['alpha'])} * (tl.exp({x[0]}) - 1.0))",
                lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, {g} * {_f(a['alpha'])} * tl.exp({x[0]}))"],
                lambda a, x: f"F.elu({x[0]}, {_f(a['alpha'])})"),
    "selu": EwOp(lambda a, x: f"{_f(SELU_SCALE)} * tl.where({x[0]} > 0, {x[0]}, "
                              f"{_f(SELU_ALPHA)} * (tl.exp({x[0]}) - 1.0))",
                 lambda a, x, y, g: [f"{g} * {_f(SELU_SCALE)} * tl.where({x[0]} > 0, 1.0, "
                                     f"{_f(SELU_ALPHA)} * tl.exp({x[0]}))"],
                 lambda a, x: f"F.selu({x[0]})"),
    "gelu": EwOp(_gelu, _gelu_grad,
                 lambda a, x: f"F.gelu({x[0]}" + (", approximate=\"tanh\")" if a["approximate"] == "tanh" else ")")),
    "silu": EwOp(lambda a, x: f"{x[0]} * tl.sigmoid({x[0]})",
                 lambda a, x, y, g: [f"{g} * tl.sigmoid({x[0]}) * (1.0 + {x[0]} * (1.0 - tl.sigmoid({x[0]})))"],
                 lambda a, x: f"F.silu({x[0]})"),
    "mish": EwOp(lambda a, x: f"{x[0]} * dlc_tanh(dlc_softplus({x[0]}))",
                 lambda a, x, y, g: [f"{g} * dlc_mish_grad({x[0]})"],
                 lambda a, x: f"F.mish({x[0]})"),
    "tanh": EwOp(lambda a, x: f"dlc_tanh({x[0]})", lambda a, x, y, g: [f"{g} * (1.0 - {y} * {y})"],
                 lambda a, x: f"torch.tanh({x[0]})"),
    "sigmoid": EwOp(lambda a, x: f"tl.sigmoid({x[0]})", lambda a, x, y, g: [f"{g} * {y} * (1.0 - {y})"],
                    lambda a, x: f"torch.sigmoid({x[0]})"),
    # dropout: `keep` is the per-element factor (0 or 1/(1-p)) drawn from the call's seed; see dropout_keep
    "dropout": EwOp(lambda a, x: f"{x[0]} * {x[1]}", lambda a, x, y, g: [f"{g} * {x[1]}"],
                    lambda a, x: ""),
}
