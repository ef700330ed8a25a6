"""The closed, registered set of ops.

Every op declares in one place: its attributes (with types and defaults), its tensor
inputs, its shape rule, its parameter count, its family (for diagrams) and its
fusion kind. Backends keep a table keyed by op name; a test checks every op has
an entry in every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from dlc.compiler.kinds import Kind, kind_named
from dlc.compiler.types import Type

REQUIRED = object()


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
    """An op attribute: its name, its kind (:mod:`dlc.compiler.kinds`) and its default.

    ``kind`` is given by name (``"int"``, ``"int2"``, ``"axis"``, ``"enum"``, ... see
    :data:`~dlc.compiler.kinds.KIND_NAMES`) and becomes the :class:`~dlc.compiler.kinds.Kind` object here, or
    given as a kind object (``TokenId(vocabulary="vocab", min=0)``). With a name, ``min`` and ``max`` bound every
    integer of an integer kind (without ``max`` an integer argument is at most
    :data:`~dlc.compiler.kinds.MAX_ARG`; without ``min`` it has no lower bound) and ``choices`` are an ``enum``'s
    names.
    """

    name: str
    kind: Kind  # a kind's name is accepted and resolved in __post_init__
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    keyword_only: bool = False
    min: int | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.kind, str):
            kind = kind_named(self.kind, min=self.min, max=self.max, choices=self.choices)
            object.__setattr__(self, "kind", kind)


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
