"""Argument kinds: what an op's compile-time argument may be, as types.

Each :class:`Kind` does two jobs, each with its own messages:

- :meth:`Kind.coerce` runs when a layer's arguments are bound: it checks the value's type (an integer, a list of
  integers, one of a few names, a layer, ...) and bounds that need nothing else, and returns the value the IR
  keeps (``3`` for a float argument becomes ``3.0``). A refusal is an :class:`ArgumentError`, which the binder
  reports as ``error[bad-argument]`` at the argument.
- :meth:`Kind.check` runs when the layer is applied, before its shape rule: it checks what needs the layer's
  other arguments or its input types (an axis against the input's rank, a token id against the vocabulary) and
  what an argument means (a probability, an epsilon). A problem is reported as the shape rule's would be, at the
  argument, with the chain of block instances.

An op's :class:`~dlc.compiler.ops.registry.Attr` names its kind (``A("k", "int2", min=1)``) or gives one
(``A("padding_idx", TokenId(vocabulary="vocab"), None)``); :func:`kind_named` makes the kind from its name.
Nothing here knows an op by name: the binder hands a kind a :class:`Site`, which names the op and the argument
for messages and binds a wrapped layer's own arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from dlc.compiler.ops.initialisers import INITIALISERS, InitError, make_init
from dlc.compiler.types import TensorType, Type
from dlc.compiler.values import Init, Layer, Symbol, describe
from dlc.diagnostics import suggest

if TYPE_CHECKING:  # the registry makes an Attr's kind from here: kinds only read ops
    from dlc.compiler.ops.registry import OpDef

# The largest integer argument (a size, a stride, a count) an op takes unless its own ``max`` says otherwise.
# PyTorch's kernels read several of them as 32-bit ints: a pooling stride of 2**31 is a RuntimeError, and
# larger convolution strides make oneDNN fail, so a spec that could only fail at run time is refused here.
MAX_ARG = 2**31 - 1
# A number argument (a slope, a factor, an epsilon) reaches PyTorch as a float32 scalar: past this it cannot be
# converted (`leaky_relu(3.5e38)` fails at run time), so it is refused here.
MAX_FLOAT_ARG = 3.4028234663852886e38


class ArgumentError(Exception):
    """A value that an argument's kind refuses; the binder reports it as error[bad-argument] at the argument."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Site:
    """The argument being bound, as a kind sees it: names for messages and what the binder offers."""

    op: OpDef
    attr: str
    known_names: Callable[[], list[str]]  # the names in scope, for "did you mean" under a misspelt bare name
    bind_layer: Callable[[Layer], dict[str, Any]]  # a wrapped layer's own arguments, bound and coerced


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _bare_name(v: Any) -> Any:
    """The name a bare word stands for (`mode=nearest`, `approximate=tanh`: a symbol, or an op without
    arguments), else ``v`` itself."""
    if isinstance(v, Symbol):
        return v.name
    if isinstance(v, Layer) and not v.config:
        return v.name
    return v


def refuse(expected: str, v: Any, site: Site) -> ArgumentError:
    """The usual refusal: "`op`: `attr` must be EXPECTED, got WHAT", saying which list item is wrong."""
    hint = suggest(v.name, site.known_names()) if isinstance(v, Symbol) else None
    got = describe(v)
    if isinstance(v, list):  # say which item is wrong, or show the numbers
        odd = next(((i, x) for i, x in enumerate(v) if not _is_int(x)), None)
        if not v:
            got = "an empty list"
        elif odd is not None:
            got = f"a list whose item {odd[0]} is {describe(odd[1])}"
        else:
            got = f"the list [{', '.join(map(str, v))}]" if len(v) <= 8 else f"a list of {len(v)} integers"
    return ArgumentError(f"`{site.op.name}`: `{site.attr}` must be {expected}, got {got}", hint)


class Kind:
    """What one argument may be. Subclasses set :attr:`name` and override :meth:`coerce` (and :meth:`check`)."""

    name: ClassVar[str]

    def coerce(self, v: Any, site: Site) -> Any:
        """The value to keep for ``v``, or an :class:`ArgumentError` saying what the argument must be."""
        raise NotImplementedError

    def check(self, v: Any, op: str, attr: str, attrs: dict[str, Any], inputs: list[Type]) -> str | None:
        """A problem with the coerced value ``v`` given the layer's other arguments and input types, or None."""
        return None


class Bool(Kind):
    name = "bool"

    def coerce(self, v: Any, site: Site) -> Any:
        if not isinstance(v, bool):
            raise refuse("true or false", v, site)
        return v


class Str(Kind):
    name = "str"

    def coerce(self, v: Any, site: Site) -> Any:
        if isinstance(v, Symbol):
            return v.name
        if not isinstance(v, str):
            raise refuse("a string", v, site)
        return v


@dataclass(frozen=True)
class Enum(Kind):
    """One of a few names, written bare (`mode=nearest`) or as a string."""

    choices: tuple[str, ...]
    name: ClassVar[str] = "enum"

    def coerce(self, v: Any, site: Site) -> Any:
        name = _bare_name(v)
        if not isinstance(name, str) or name not in self.choices:
            given = f"`{name}`" if isinstance(name, str) else describe(v)
            raise ArgumentError(f"`{site.op.name}`: `{site.attr}` must be one of {', '.join(self.choices)}; "
                                f"got {given}", suggest(name, self.choices) if isinstance(name, str) else None)
        return name


class Float(Kind):
    """A number, kept as a float; it must fit a float32 (PyTorch reads it as one)."""

    name = "float"

    def coerce(self, v: Any, site: Site) -> Any:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise refuse("a number", v, site)
        if abs(v) > MAX_FLOAT_ARG:
            raise refuse(f"a number of magnitude at most {MAX_FLOAT_ARG:.4g} (a float32)", v, site)
        return float(v)


class Number(Float):
    """A number kept as given: an integer stays an integer (exact to 64 bits, for integer tensors), a float must
    fit a float32."""

    name = "number"

    def coerce(self, v: Any, site: Site) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return v  # every integer a spec can write fits 64 bits (MAX_INT)
        return super().coerce(v, site)


class Probability(Float):
    """A probability of dropping something: from 0 up to, not including, 1."""

    name = "probability"

    def check(self, v: Any, op: str, attr: str, attrs: dict[str, Any], inputs: list[Type]) -> str | None:
        return None if 0.0 <= v < 1.0 else f"`{op}`: {attr} must be in [0, 1), got {v}"


class Fraction(Float):
    """A fraction from 0 to 1, both included (a momentum)."""

    name = "fraction"

    def check(self, v: Any, op: str, attr: str, attrs: dict[str, Any], inputs: list[Type]) -> str | None:
        return None if 0.0 <= v <= 1.0 else f"`{op}`: {attr} must be in [0, 1], got {v}"


class Positive(Float):
    """A number above 0 (a scale factor)."""

    name = "positive"
    why = ""

    def check(self, v: Any, op: str, attr: str, attrs: dict[str, Any], inputs: list[Type]) -> str | None:
        return None if v > 0 else f"`{op}`: {attr} must be positive{self.why}, got {v}"


class Epsilon(Positive):
    """The small number a normalisation adds to a variance before dividing by its root."""

    name = "epsilon"
    why = " (it keeps the division finite)"


@dataclass(frozen=True)
class Integer(Kind):
    """The integer kinds: every integer is within ``min`` .. ``max`` (``max`` defaults to :data:`MAX_ARG`,
    ``min`` to no bound)."""

    min: int | None = None
    max: int | None = None

    def out_of_range(self, v: int) -> bool:
        """True if the integer ``v`` is outside ``min`` .. ``max``."""
        return (self.min is not None and v < self.min) or v > (MAX_ARG if self.max is None else self.max)

    def range_text(self, plural: bool = False, values: tuple[int, ...] = ()) -> str:
        """The integers this kind takes, for a message: "a positive integer", "integers from 1 to 1024".

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

    def _one(self, v: Any, site: Site) -> int:
        if not _is_int(v):
            raise refuse("an integer", v, site)
        if self.out_of_range(v):
            raise refuse(self.range_text(values=(v,)), v, site)
        return v

    def _list(self, v: list, site: Site) -> list[int]:
        if any(self.out_of_range(x) for x in v):
            raise refuse(f"a list of {self.range_text(plural=True, values=tuple(v))}", v, site)
        return list(v)


@dataclass(frozen=True)
class Int(Integer):
    name: ClassVar[str] = "int"

    def coerce(self, v: Any, site: Site) -> Any:
        return self._one(v, site)


@dataclass(frozen=True)
class Axis(Integer):
    """An axis of the (first) input, batch not counted; negative counts from the end."""

    name: ClassVar[str] = "axis"

    def coerce(self, v: Any, site: Site) -> Any:
        return self._one(v, site)

    def check(self, v: Any, op: str, attr: str, attrs: dict[str, Any], inputs: list[Type]) -> str | None:
        if v is None or not inputs or not isinstance(inputs[0], TensorType):
            return None  # the default (a feature axis), or a state the shape rule refuses
        rank = inputs[0].rank
        return None if -rank <= v < rank else f"`{op}`: axis {v} is out of range for a rank-{rank} tensor"


@dataclass(frozen=True)
class TokenId(Integer):
    """A token id of the vocabulary whose size is the argument ``vocabulary`` (a padding index)."""

    vocabulary: str = "vocab"
    name: ClassVar[str] = "token_id"

    def coerce(self, v: Any, site: Site) -> Any:
        return self._one(v, site)

    def check(self, v: Any, op: str, attr: str, attrs: dict[str, Any], inputs: list[Type]) -> str | None:
        if v is None:
            return None
        size = attrs[self.vocabulary]
        if -size <= v < size:
            return None
        return f"`{op}`: {attr} {v} is not a token id of a vocabulary of {size}"


@dataclass(frozen=True)
class Ints(Integer):
    """A list of integers (a shape, a permutation)."""

    name: ClassVar[str] = "ints"

    def coerce(self, v: Any, site: Site) -> Any:
        if not isinstance(v, list) or not all(_is_int(x) for x in v):
            raise refuse("a list of integers", v, site)
        return self._list(v, site)


@dataclass(frozen=True)
class IntOrInts(Integer):
    """One integer for every spatial axis, or a list of one per axis (a kernel size, a stride)."""

    name: ClassVar[str] = "int2"
    word: ClassVar[str | None] = None  # a name the kind also takes: `same` padding, a `global` pool

    def coerce(self, v: Any, site: Site) -> Any:
        if self.word is not None and isinstance(v, (Symbol, str)) and _bare_name(v) == self.word:
            return self.word
        if _is_int(v):
            if self.out_of_range(v):
                raise refuse(self.range_text(values=(v,)), v, site)
            return v
        if isinstance(v, list) and v and all(_is_int(x) for x in v):
            return self._list(v, site)
        extra = f" or `{self.word}`" if self.word is not None else ""
        raise refuse(f"an integer or a list of integers{extra}", v, site)


@dataclass(frozen=True)
class Padding(IntOrInts):
    """A convolution's padding: per axis, or `same` (the output as large as the input)."""

    name: ClassVar[str] = "pad"
    word: ClassVar[str | None] = "same"


@dataclass(frozen=True)
class PoolSize(IntOrInts):
    """A pooling window: per axis, or `global` (every position)."""

    name: ClassVar[str] = "pool_size"
    word: ClassVar[str | None] = "global"


class LayerArg(Kind):
    """A built-in layer given as an argument (not applied): its op's name and bound arguments are kept.

    A wrapper says which layers it takes by its argument's kind: a recurrent wrapper (``bidirectional``) names
    :class:`RecurrentLayer`, a per-step wrapper (``timedistributed``) :class:`StepLayer`; plain ``layer`` takes
    any built-in layer.
    """

    name = "layer"
    example = "linear(64)"

    def coerce(self, v: Any, site: Site) -> Any:
        if isinstance(v, Layer) and v.block is not None:
            raise ArgumentError(f"`{site.op.name}` wraps a built-in layer, not the block `{v.name}`",
                                hint=f"apply it to a block where it is used (`x -> {site.op.name}({v.name}(...))`), "
                                     f"or share one: `s = {v.name}(...)` then `x -> {site.op.name}(s)`")
        if not isinstance(v, Layer) or v.op is None or v.has_tensors:
            raise refuse(f"a layer such as `{self.example}`", v, site)
        self.accept(v.op, site)
        return {"op": v.op.name, **site.bind_layer(v)}

    def accept(self, op: OpDef, site: Site) -> None:
        """Refuse (ArgumentError) a layer of the op ``op`` that this kind does not take; any by default."""


def wraps_layer(op: OpDef) -> bool:
    """Whether ``op`` takes a layer as an argument (it is a wrapper)."""
    return any(isinstance(a.kind, LayerArg) for a in op.attrs)


class RecurrentLayer(LayerArg):
    """A recurrent cell (an rnn, lstm or gru layer) for a wrapper that runs it both ways."""

    name = "recurrent_layer"
    example = "lstm(64)"

    def accept(self, op: OpDef, site: Site) -> None:
        if op.family != "recurrent" or wraps_layer(op):
            raise ArgumentError(f"`{site.op.name}` wraps rnn, lstm or gru, not `{op.name}`")


class StepLayer(LayerArg):
    """A single-input layer that a wrapper applies at every time step."""

    name = "step_layer"

    def accept(self, op: OpDef, site: Site) -> None:
        if applies_per_step(op):
            raise ArgumentError(f"`{site.op.name}` cannot wrap another `{op.name}`",
                                "fold the extra axis first, e.g. with `reshape`")
        if not op.stateful and op.family not in ("activation", "pool") or len(op.inputs) != 1 or op.variadic:
            raise ArgumentError(f"`{site.op.name}` wraps a single-input layer, not `{op.name}`")


class Initialiser(Kind):
    """An initialiser (``ops/initialisers.py``): a bare name (``xavier_uniform``) or a call (``normal(std=0.02)``);
    kept as its IR dict."""

    name = "initialiser"

    def coerce(self, v: Any, site: Site) -> Any:
        if isinstance(v, Init):
            return v.ir()
        word = _bare_name(v)
        if isinstance(word, str) and word in INITIALISERS:
            try:
                return make_init(word, [])
            except InitError as e:
                raise ArgumentError(f"`{site.op.name}`: `{site.attr}`: {e.message}", e.hint) from None
        err = refuse("an initialiser such as `xavier_uniform` or `normal(std=0.02)`", v, site)
        err.hint = err.hint or f"initialisers are {', '.join(INITIALISERS)}"
        raise err


def applies_per_step(op: OpDef) -> bool:
    """Whether ``op`` applies a wrapped layer at every time step (its module needs reshapes around it)."""
    return any(isinstance(a.kind, StepLayer) for a in op.attrs)


_SIMPLE: dict[str, Callable[[], Kind]] = {
    k.name: k for k in (Bool, Str, Float, Number, Probability, Fraction, Positive, Epsilon, LayerArg, RecurrentLayer,
                        StepLayer, Initialiser)
}
_INTEGER: dict[str, Callable[..., Integer]] = {
    k.name: k for k in (Int, Axis, TokenId, Ints, IntOrInts, Padding, PoolSize)
}
KIND_NAMES = tuple(sorted([*_SIMPLE, *_INTEGER, Enum.name]))


def kind_named(name: str, *, min: int | None = None, max: int | None = None,
               choices: tuple[str, ...] = ()) -> Kind:
    """The kind called ``name`` (see :data:`KIND_NAMES`); ``min``/``max`` bound an integer kind, ``choices``
    are an ``enum``'s names. Anything else given, or an unknown name, is a mistake in the op's definition."""
    if name == Enum.name:
        if not choices or min is not None or max is not None:
            raise ValueError("an enum argument needs choices and no bounds")
        return Enum(tuple(choices))
    if choices:
        raise ValueError(f"only an enum argument has choices, not a {name} argument")
    if name in _INTEGER:
        return _INTEGER[name](min=min, max=max)
    if name in _SIMPLE:
        if min is not None or max is not None:
            raise ValueError(f"a {name} argument has no integer bounds")
        return _SIMPLE[name]()
    raise ValueError(f"unknown argument kind {name!r}; kinds are {', '.join(KIND_NAMES)}")
