"""The closed, registered set of ops: one :class:`OpDef` per op, carrying every facet of it.

Each op family has one module in this package (``dense``, ``conv``, ``pool``, ``norm``, ``activation``,
...), and each op is defined there once, by one :func:`register` call that gives all of it:

- **signature**: ``attrs`` (each an :class:`Attr` with its kind, default and bounds), the tensor
  ``inputs`` (``optional_inputs``, ``variadic``), and ``outputs`` (how many, by attributes);
- **shape rule** ``infer(attrs, input types) -> output types`` (raising :class:`ShapeError`) and
  **parameter count** ``count_params(attrs, input types)``; types are batch-less;
- **PyTorch facet** ``torch`` (:class:`~dlc.compiler.ops.pytorch.Torch`): module constructor, functional
  form and module call, as text templates with named holes (so compiling never imports torch);
- **kernel facet** ``kernel`` (:mod:`dlc.compiler.ops.kernel`): how the fused backend runs it, or None
  (never fused); ``fusion``, the op's fusion kind, is derived from it;
- **diagram**: ``label(attrs)`` (the node's text), ``draw`` (how it is drawn) and ``family`` (its colour);
- **cost** ``cost(attrs, input types, output types)``: the MACs of one batch item as a
  :class:`~dlc.compiler.cost.Poly` (None: unknown), counted as ``FlopCounterMode`` does (:mod:`dlc.compiler.cost`);
  each family module sets its ops' costs at its end with :func:`set_costs`; ``count_buffers`` counts the
  elements of buffers (batchnorm's running mean, variance and batch count), set with :func:`set_buffers`;
- **doc line** ``doc`` (docs/language.md's op table lists every op; a test checks);
- **what passes need**, as flags: ``folds`` and ``fold_axis`` (batchnorm folding), ``in_place`` and
  ``overwritable`` (in-place results), ``wraps`` (a layer wrapping another), ``declared`` (``input``).

Backends and passes ask these facets; none compares an op's name with a literal (a test walks their
source to keep it so). A new op is one ``register`` call in its family's module, a doc line and tests.
For example, an elementwise op with a module, a function and a fused kernel::

    register(OpDef(
        "leaky_relu", (Attr("slope", "float", 0.01),), same_float("leaky_relu"),
        torch=Torch(
            module=Form("nn.LeakyReLU({negative_slope})", lambda a, ins, outs: {"negative_slope": a["slope"]}),
            function=Form("F.leaky_relu({x}, {negative_slope})", lambda a, ins, outs: {"negative_slope": a["slope"]})),
        kernel=Elementwise(lambda a, x: f"tl.where({x[0]} > 0, {x[0]}, {x[0]} * {flt(a['slope'])})",
                           lambda a, x, y, g: [f"tl.where({x[0]} > 0, {g}, {g} * {flt(a['slope'])})"]),
        family="activation", label=with_values("leaky_relu"), doc="Activation: x if x > 0 else slope * x."))

Lookups: :func:`op_of` gives any IR node's op (``input`` included), :func:`get` and :func:`all_ops` the ops a
spec calls by name, :func:`registered` every op.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from dlc.compiler.cost import Cost
from dlc.compiler.kinds import Kind, kind_named
from dlc.compiler.ops.kernel import Kernel
from dlc.compiler.ops.pytorch import Torch
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


def _no_params(attrs: dict[str, Any], ins: list[Type]) -> int:
    return 0


def _one_output(attrs: dict[str, Any]) -> int:
    return 1


@dataclass(frozen=True)
class OpDef:
    """Everything dlc knows about one op (see the module docstring for the facets).

    ``stateful``: holds parameters or buffers, so it becomes a module attribute. ``draw``: ``layer`` (a
    box), ``merge`` (an ellipse: its label is the merge's kind), ``directions`` (a bidirectional layer: its
    wrapped layer drawn forwards and backwards, joining at its ``merge``) or ``input`` (a network input).
    ``declared``: not called by name but declared (``input x: [shape]``): its types come from the
    declaration, and it has no module. ``wraps``: ``attrs["layer"]`` holds a wrapped layer (``op`` and its
    attributes). ``folds``: in inference this op (batchnorm) may fold into the layer before it, when that
    layer's ``fold_axis`` (its output's channel axis, batch-less) is the axis it normalises (axis 0).
    ``in_place``: may overwrite its first input (the in-place pass sets ``Node.in_place``; its PyTorch
    forms have ``in_place`` templates);
    ``overwritable``: its backward does not read its output, so a later op may overwrite it.
    ``aka``: names PyTorch or Keras give the op (``cat`` for ``concat``), named in the hint of an unknown name.
    ``spelled``: the name a spec calls the op by with a ``dim=`` argument, where that name means something else
    without one (``mean(x, dim=1)`` is ``reduce_mean``, ``mean(a, b)`` the merge; see :func:`by_dim`).
    ``keyword_inputs``: optional tensor inputs given by keyword only, any of them or none (attention's masks, a
    recurrent layer's ``lengths``); those given follow the other inputs, in this order, and the node's attribute
    ``keyword_inputs`` names them (absent when none is given).
    ``idempotent``: applying it twice is applying it once (``relu``): ``relu -> relu`` gets a warning.
    ``advice``: given the attributes, a warning about values that make a call pointless, as ``(code, message)``
    (``dropout(p=0)`` does nothing), or None (see dlc/compiler/lint.py).
    """

    name: str
    attrs: tuple[Attr, ...]
    infer: Callable[[dict[str, Any], list[Type]], tuple[Type, ...]]
    count_params: Callable[[dict[str, Any], list[Type]], int] = _no_params
    inputs: tuple[str, ...] = ("x",)
    optional_inputs: frozenset[str] = frozenset()
    keyword_inputs: tuple[str, ...] = ()  # optional tensor inputs given by keyword only (see below)
    variadic: bool = False  # takes any number (>= 2) of tensors positionally
    outputs: Callable[[dict[str, Any]], int] = _one_output
    stateful: bool = False
    torch: Torch = field(default_factory=Torch)
    kernel: Kernel | None = None
    family: str = "other"
    label: Callable[[dict[str, Any]], str] | None = None  # None: the op's name
    draw: str = "layer"
    doc: str = ""
    declared: bool = False
    wraps: bool = False
    folds: bool = False
    fold_axis: int | None = None
    in_place: bool = False
    overwritable: bool = False
    spelled: str | None = None
    aka: tuple[str, ...] = ()  # what PyTorch or Keras call it, for the hint when a spec uses such a name
    internal: bool = False  # made by the compiler (timedistributed's time folds), never called by name
    cost: Cost | None = None  # MACs of one batch item; set by the family module's set_costs (a test demands it)
    count_buffers: Callable[[dict[str, Any], list[Type]], int] = _no_params  # running statistics' elements
    idempotent: bool = False
    advice: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None

    @property
    def module(self) -> bool:
        """Has a module form, so a label can name it (merges are only expressions in ``forward``)."""
        return self.torch.module is not None

    @property
    def fusion(self) -> str:
        """The fusion kind, from the kernel facet: elementwise, row, anchor, recurrent, attention or opaque."""
        return self.kernel.kind if self.kernel is not None else "opaque"

    def describe(self, attrs: dict[str, Any]) -> str:
        """The diagram's text for a node of this op: ``conv2d 3×3 /2, 128``."""
        return self.label(attrs) if self.label is not None else self.name

    def attr(self, name: str) -> Attr | None:
        """The attribute called ``name``, if the op has one."""
        for a in self.attrs:
            if a.name == name:
                return a
        return None


OPS: dict[str, OpDef] = {}
# The op families, one module each, in the order their ops are listed (suggestions, docs, strategies).
FAMILIES = ("io", "dense", "conv", "pool", "norm", "regularize", "activation", "shape", "index", "arith",
            "reduce", "compare", "random", "fill", "recurrent", "attention", "wrapper", "param", "position", "external")


def register(op: OpDef) -> OpDef:
    """Add ``op`` to the registry (each op once)."""
    if op.name in OPS:
        raise RuntimeError(f"op {op.name} registered twice")
    OPS[op.name] = op
    return op


def set_costs(costs: dict[str, Cost]) -> None:
    """Give registered ops their cost facet (:mod:`dlc.compiler.cost`), by name: a family module's last call."""
    for name, cost in costs.items():
        OPS[name] = replace(OPS[name], cost=cost)


def set_buffers(counts: dict[str, Callable[[dict[str, Any], list[Type]], int]]) -> None:
    """Give registered ops their buffer count (the elements of batchnorm's running statistics), by name."""
    for name, count in counts.items():
        OPS[name] = replace(OPS[name], count_buffers=count)


def get(name: str) -> OpDef | None:
    """The op a spec calls ``name``, if any (a declared op such as ``input`` is not called by name)."""
    op = registered().get(name)
    return op if op is not None and not op.declared and not op.internal else None


def by_dim(name: str) -> OpDef | None:
    """The op a call of ``name`` with a ``dim=`` argument means when it is not the op called ``name`` (the
    reduction ``reduce_max`` for ``max(x, dim=1)``), if any."""
    for op in registered().values():
        if op.spelled == name:
            return op
    return None


def known_as(name: str) -> OpDef | None:
    """The op a spec calls something else, which ``name`` is in PyTorch or Keras (``arange``: ``positions``)."""
    for op in all_ops().values():
        if name in op.aka:
            return op
    return None


def op_of(name: str) -> OpDef:
    """The definition of an IR node's op (every registered op, ``input`` included); KeyError if unknown."""
    return registered()[name]


def all_ops() -> dict[str, OpDef]:
    """The ops a spec can call by name, in catalog order."""
    return {name: op for name, op in registered().items() if not op.declared and not op.internal}


def registered() -> dict[str, OpDef]:
    """Every registered op, ``input`` included."""
    _load()
    return OPS


_loaded = False


def _load() -> None:
    # The family modules register their ops on import; lookups run for every node, so import only once.
    global _loaded
    if not _loaded:
        _loaded = True
        for family in FAMILIES:
            importlib.import_module(f"dlc.compiler.ops.{family}")
