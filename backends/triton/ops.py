"""The two ops that exist only inside kernels, beside the ops' own kernel facets (dlc.compiler.ops.kernel).

``affine`` is batchnorm in a kernel (an op with a ChannelAffine facet): ``x * scale + shift`` with a
per-channel scale and shift computed by the runtime's ``batchnorm_affine`` from running or batch
statistics. ``bias`` adds the bias of the anchor (a convolution or linear layer) before the chain.
Neither is an IR op, so neither has a PyTorch facet: their PyTorch reference is written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dlc.compiler.ops.kernel import Elementwise

AFFINE = "affine"
BIAS = "bias"


@dataclass(frozen=True)
class InternalOp:
    """A kernel-internal op: its elementwise kernel text and its PyTorch reference on operand variables."""

    kernel: Elementwise
    reference: Callable[[list[str]], str]


INTERNAL: dict[str, InternalOp] = {
    AFFINE: InternalOp(Elementwise(lambda a, x: f"{x[0]} * {x[1]} + {x[2]}",
                                   lambda a, x, y, g: [f"{g} * {x[1]}", f"{g} * {x[0]}", g]),
                       lambda x: f"{x[0]} * {x[1]} + {x[2]}"),
    BIAS: InternalOp(Elementwise(lambda a, x: f"{x[0]} + {x[1]}", lambda a, x, y, g: [g, g]),
                     lambda x: f"{x[0]} + {x[1]}"),
}
