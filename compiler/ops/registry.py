"""The closed, registered set of ops.

Every op declares in one place: its attributes (with types and defaults), its tensor
inputs, its shape rule, its parameter count, its family (for diagrams) and its
fusion kind. Backends keep a table keyed by op name; a test checks every op has
an entry in every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from dlc.compiler.types import Type

REQUIRED = object()
# The largest integer argument (a size, a stride, a count) an op takes unless its own ``max`` says otherwise.
# PyTorch's kernels read several of them as 32-bit ints: a pooling stride of 2**31 is a RuntimeError, and
# larger convolution strides make oneDNN fail, so a spec that could only fail at run time is refused here.
MAX_ARG = 2**31 - 1
# A number argument (a slope, a factor, an epsilon) reaches PyTorch as a float32 scalar: past this it cannot be
# converted (`leaky_relu(3.5e38)` fails at run time), so it is refused here.
MAX_FLOAT_ARG = 3.4028234663852886e38


class ShapeError(Exception):
    """Raised by a shape rule; the elaborator turns it into a positioned diagnostic.

    ``attr`` names the attribute the problem is about (its argument is underlined),
    ``code`` overrides the default diagnostic code ``shape-mismatch``.
    """

    def __init__(self, message: str, *, hint: str | None = None, attr: str | None = None, code: str = "shape-mismatch"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.attr = attr
        self.code = code


@dataclass(frozen=True)
class Attr:
    """An op attribute.

    Kinds: ``int``, ``float``, ``bool``, ``str``, ``enum`` (one of ``choices``, written as
    a bare name or a string), ``int2`` (an int or a list of two), ``ints`` (a list of
    ints), ``pad`` (int, list of ints, or ``same``), ``pool_size`` (int or ``global``),
    ``layer`` (a layer value, e.g. the layer wrapped by ``bidirectional``).

    ``min`` and ``max`` bound every integer of an integer kind (``int``, ``int2``, ``ints``, ``pad``,
    ``pool_size``). Without ``max`` an integer argument is at most :data:`MAX_ARG`; without ``min`` it has
    no lower bound (axes count from the end). Shape rules check what depends on the input (an axis against
    the rank, a padding index against the vocabulary).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    keyword_only: bool = False
    min: int | None = None
    max: int | None = None

    def out_of_range(self, v: int) -> bool:
        """True if the integer ``v`` is outside ``min`` .. ``max`` (``max`` defaults to :data:`MAX_ARG`)."""
        return (self.min is not None and v < self.min) or v > (MAX_ARG if self.max is None else self.max)

    def range_text(self, plural: bool = False, values: tuple[int, ...] = ()) -> str:
        """The integers this attribute takes, for a message: "a positive integer", "integers from 1 to 1024".

        The implied upper bound :data:`MAX_ARG` is named only when one of ``values`` passes it.
        """
        lo, hi = self.min, self.max
        if hi is None and any(v > MAX_ARG for v in values):
            hi = MAX_ARG
        if hi is None:
            what = {None: "integer", 0: "non-negative integer", 1: "positive integer"}.get(lo, "integer")
            bound = f" of at least {lo}" if lo not in (None, 0, 1) else ""
        else:
            what, bound = "integer", f" of at most {hi}" if lo is None else f" from {lo} to {hi}"
        if plural:
            return f"{what}s{bound}"
        return f"{'an' if what[0] in 'aeiou' else 'a'} {what}{bound}"


@dataclass(frozen=True)
class OpDef:
    name: str
    attrs: tuple[Attr, ...]
    infer: Callable[..., tuple[Type, ...]]
    count_params: Callable[[dict, list[Type]], int] = lambda attrs, ins: 0
    inputs: tuple[str, ...] = ("x",)
    optional_inputs: frozenset[str] = frozenset()
    variadic: bool = False  # takes any number (>= 2) of tensors positionally
    stateful: bool = False  # holds parameters or buffers: becomes a module attribute
    module: bool = True  # has a module form, so a label can name it (merges are only expressions in forward)
    family: str = "other"
    fusion: str = "opaque"  # elementwise | reduction | anchor | opaque
    doc: str = ""
    outputs: Callable[[dict], int] = field(default=lambda attrs: 1)

    def attr(self, name: str) -> Attr | None:
        for a in self.attrs:
            if a.name == name:
                return a
        return None


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise RuntimeError(f"op {op.name} registered twice")
    OPS[op.name] = op
    return op


def get(name: str) -> OpDef | None:
    _load_catalog()
    return OPS.get(name)


def all_ops() -> dict[str, OpDef]:
    _load_catalog()
    return OPS


_loaded = False


def _load_catalog() -> None:
    # The catalog modules register themselves on import; `get` runs for every node, so import only once.
    global _loaded
    if not _loaded:
        from dlc.compiler.ops import catalog  # noqa: F401
        _loaded = True
