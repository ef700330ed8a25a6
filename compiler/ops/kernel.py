"""The kernel facet of an op: how the fused backend (``dlc compile --fuse``) runs it in a Triton kernel.

An op's facet is one of the classes below, and its fusion kind (``OpDef.fusion``) is the facet's
``kind``; an op without one (None) is never fused. The text is Triton source written from data:
``args`` are the names of the op's operand variables (in the kernel's compute dtype), ``out`` the
name of its result and ``g`` the name of the gradient flowing into that result. The PyTorch
reference of a kernel is the op's PyTorch facet's functional form, never a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from dlc.compiler.types import TensorType

Attrs = dict[str, Any]


def flt(v: float) -> str:
    """A number as a Triton float literal."""
    return repr(float(v))


@dataclass(frozen=True)
class Mask:
    """A random keep mask (dropout): each element kept with probability ``1 - p(attrs)``, scaled by
    ``1 / (1 - p)``. The kernel draws the mask from the call's seed and passes it as the op's last
    operand (which gets no derivative); ``always(attrs)`` keeps it on in eval mode (one kernel has one on/off
    switch)."""

    p: Callable[[Attrs], float]
    always: Callable[[Attrs], bool]


@dataclass(frozen=True)
class Elementwise:
    """One line per op in an elementwise chain: ``expr(attrs, args)`` computes the result and
    ``grads(attrs, args, out, g)`` the gradient of each operand (values are recomputed in the backward
    kernel, not stored), None for an operand no gradient flows to: a bool operand, and both operands of a
    comparison. Bool values are Triton's int1 in a kernel (a bool input is loaded as ``!= 0``).

    ``weight(attrs, input type)``: the op takes its module's ``weight`` (prelu's slopes) as its last operand,
    viewed to this batch-less shape to broadcast over its input (``(C, 1, 1)`` per channel of ``[C, H, W]``,
    ``(1,)`` for one value); its gradient is summed over the axes it was broadcast along. The reference (the
    functional form) is given it as ``weight``."""

    kind: ClassVar[str] = "elementwise"
    expr: Callable[[Attrs, list[str]], str]
    grads: Callable[[Attrs, list[str], str, str], list[str | None]]
    mask: Mask | None = None
    weight: Callable[[Attrs, TensorType], tuple[int, ...]] | None = None


@dataclass(frozen=True)
class ChannelAffine:
    """Batch normalisation in a kernel: the chain's ``affine`` op (``x * scale + shift``), its per-channel
    scale and shift made by the runtime from the module's running or batch statistics. The statistics
    need the op's input materialised, so it only directly follows an anchor that runs in PyTorch (whose
    bias it then leaves in the anchor), and it may fold into that anchor in inference."""

    kind: ClassVar[str] = "elementwise"


@dataclass(frozen=True)
class Row:
    """A row kernel: one program per row of the trailing ``axes(attrs, rank)`` axes of a batch-less
    input of rank ``rank`` (None: the op works on other axes and cannot run as one), absorbing the
    elementwise ops before and after it that work on the same rows.

    ``forward(attrs, args, out)`` gives the lines computing ``out`` from the row loaded in ``args[0]``
    (``mask`` marks the row's valid columns, ``n_cols`` is their number); ``backward(attrs, args, out,
    g, gx)`` gives the lines computing the input's gradient ``gx`` from ``g`` (it may reuse the forward's
    named temporaries) and, for ops with ``weights``, ``g<arg>`` for each of ``args[1:]``.
    ``weights(attrs)``: the op takes its module's ``weight`` and ``bias`` as two per-column operands.

    ``reduces``: the op reduces each row to one value (``sum``, ``mean``, ``max``... over trailing axes):
    ``forward`` computes the scalar ``out`` and ``backward`` receives the scalar ``g``. Nothing after a
    reduction joins its kernel, and a lone reduction stays in PyTorch (the kernel would be that op alone).
    """

    kind: ClassVar[str] = "row"
    axes: Callable[[Attrs, int], int | None]
    forward: Callable[[Attrs, list[str], str], list[str]]
    backward: Callable[[Attrs, list[str], str, str, str], list[str]]
    weights: Callable[[Attrs], bool] = lambda attrs: False
    reduces: bool = False


@dataclass(frozen=True)
class Anchor:
    """A layer whose epilogue (the elementwise chain after it) becomes one kernel.

    ``matmul``: the kernel computes the layer's product itself (a tiled matmul over the last axis, the
    epilogue applied to each tile, LinearKernel); otherwise the layer runs in PyTorch (cuDNN) without its
    bias, and the kernel is its epilogue over the materialised result, bias (per channel, axis 0) first.
    """

    kind: ClassVar[str] = "anchor"
    matmul: bool = False


@dataclass(frozen=True)
class Recurrent:
    """A recurrent layer run by dlc's gate kernels (with ``--fused-recurrent``); ``directions=2`` runs
    its wrapped layer (``attrs["layer"]``, which must have a Recurrent facet too) both ways."""

    kind: ClassVar[str] = "recurrent"
    directions: int = 1


@dataclass(frozen=True)
class Attention:
    """Multi-head attention run through ``F.scaled_dot_product_attention`` (flash / memory-efficient)."""

    kind: ClassVar[str] = "attention"


Kernel = Elementwise | ChannelAffine | Row | Anchor | Recurrent | Attention


def reduces(kernel: Kernel | None) -> bool:
    """A row kernel that reduces its rows (see :class:`Row`)."""
    return isinstance(kernel, Row) and kernel.reduces
