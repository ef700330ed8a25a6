"""Types of IR values: tensors with (batch-less) shapes, and recurrent states.

Shapes never include the batch dimension. A dimension is an ``int``, the name of a symbolic
dimension (``"T"``), or a formula over such names (``"(H-1)//2+1"``). ``layout`` says where a
tensor's features live: ``"cf"`` (channels first, as produced by convolutions: [C, H, W]),
``"fl"`` (features last, as in sequences: [T, F]) or ``"tcf"`` (channels on axis 1 after a time
axis, as ``timedistributed`` over a convolution produces: [T, C, H, W]). Ops such as ``concat``
and ``channels()`` use it to find the feature axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from dlc.grammar.build import MAX_INT

Dim = Union[int, str]

# The known elements of one tensor (batch not counted) and the parameters of one layer: PyTorch counts them in an
# int64, so a larger tensor cannot exist and a larger count would be nonsense.
MAX_ELEMENTS = MAX_INT


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    layout: str = "fl"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def feature_axis(self) -> int:
        """Axis holding the features / channels of this tensor (batch-less)."""
        if self.rank == 0:
            raise ValueError("a scalar has no feature axis")
        if self.layout == "cf":
            return 0
        if self.layout == "tcf" and self.rank >= 2:
            return 1
        return self.rank - 1

    @property
    def features(self) -> Dim:
        return self.shape[self.feature_axis]

    def with_shape(self, shape, layout: str | None = None) -> "TensorType":
        return TensorType(tuple(shape), self.dtype, layout or self.layout)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        lay = "" if self.layout == "fl" or self.rank < 2 else f" {self.layout}"
        return f"[{dims}] {self.dtype}{lay}"


@dataclass(frozen=True)
class StateType:
    """The final state of a recurrent layer: (h) or (h, c), one per layer and direction."""

    cell: str  # rnn | lstm | gru
    layers: int
    directions: int
    hidden: int

    def __str__(self) -> str:
        return f"state({self.cell}, layers={self.layers}, dirs={self.directions}, hidden={self.hidden})"


Type = Union[TensorType, StateType]


def batched_str(t: "Type") -> str:
    """A type as a user sees the tensor: with the batch axis (``[B, 3, 224, 224]``), dtype unless float32."""
    if isinstance(t, TensorType):
        dtype = f" {t.dtype}" if t.dtype != "float32" else ""
        return "[" + ", ".join(["B"] + [str(d) for d in t.shape]) + "]" + dtype
    return str(t)


def shape_str(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
# Bytes per element of each dtype a spec can declare.
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "bool": 1}


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def size_problem(t: "Type") -> str | None:
    """Why a tensor of type ``t`` is too large to exist (see :data:`MAX_ELEMENTS`), or None."""
    if not isinstance(t, TensorType):
        return None
    known = [d for d in t.shape if isinstance(d, int)]
    if math.prod(known) > MAX_ELEMENTS:
        return f"a tensor {shape_str(t.shape)} would have more than {MAX_ELEMENTS} elements"
    return None
