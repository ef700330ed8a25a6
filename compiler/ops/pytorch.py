"""The PyTorch facet of an op: its module constructor and functional form as text templates.

A template is Python text with named holes, filled from data, so ``dlc compile`` writes PyTorch code
without importing torch. A :class:`Form` pairs a template with a ``fill`` function computing the hole
values from the node's attributes and its batch-less input and output types; the caller adds the
variable holes (``x``, ``xs``...). Filling gives a :class:`Filled`: the template and its values, which
renders to text with :meth:`Filled.text`. Hole values are data (numbers, strings, tuples, variable
names as :class:`Var`, nested :class:`Filled` calls), and a hole is named for what it holds
(``in_features``, ``out_channels``, ``kernel_size``): the torch emitter compares the structure of two
generated classes with their numbers abstracted (backends/torch/sharing.py), and names a varying number
after its hole. Forward statements are :class:`Filled` too (:func:`assign`, :meth:`CallSite.call`), so a
number they hold is found the same way.

Hole syntax:

- ``{name}``: the value; a :class:`Var` or :class:`Filled` as code, anything else as a literal (:func:`lit`);
- ``{*name}`` or ``{*name|SEP}``: the items of a sequence, each rendered as above, joined by ``, `` or SEP;
- ``{,name}``: the keyword argument ``, name=value``, left out when the value equals the form's default
  for ``name`` or is :data:`OMIT` (a default that depends on other values is decided by ``fill``);
- ``{=name}``: the same without the comma, for a call whose only argument is that keyword.

Variable holes every renderer supplies: ``x`` (the first operand), ``xs`` (all operands), ``rest``
(all but the first), ``x1``, ``x2``, ... (each one after the first) and ``n`` (how many). Axes in the IR are
batch-less; :func:`axis` adds the batch axis.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from dlc.compiler.types import Type
from dlc.diagnostics import DlcError, Span

class Var(str):
    """Code, not a value: a variable name or an expression placed in a template as it is."""

    __slots__ = ()  # a plain string underneath: no dict, untracked by the cycle collector


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()  # a keyword hole's value meaning "leave the keyword out"


def safe_text(text: str) -> str:
    """Spec-supplied text (file names, string values) made inert for comments, docstrings and string literals.

    Control characters (newlines included) and backslashes are escaped and quotes become
    escaped quotes, so the text can neither end a comment line nor close a docstring or string;
    inside a string or docstring it reads back as the original text. A lone surrogate (an
    undecodable byte of a file name, never text) stays escaped even there (``\\udcff``): Python
    cannot encode it, and a class whose docstring holds one cannot be created.
    """
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\\\u{ord(ch):04x}")
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def lit(v: Any) -> str:
    """A Python literal for an attribute value (never raw text from a spec).

    Strings pass through :func:`safe_text`, as file names in comments do (so they read back
    unchanged, except a lone surrogate, which stays its escape text); a float with no literal
    (``inf``, ``nan``) is ``error[bad-number]`` (the caller adds the node's position).
    """
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise DlcError("bad-number", f"the value {v!r} cannot be written into the generated module",
                       hint="use a finite number")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + safe_text(v) + '"'
    if isinstance(v, (list, tuple)):
        items = [lit(x) for x in v]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise TypeError(f"no literal for {v!r}")


def axis(dim: int) -> int:
    """A batch-less axis as a PyTorch axis (negative axes are unchanged)."""
    return dim + 1 if dim >= 0 else dim


def check_finite(op: str, attrs: dict[str, Any], span: Span) -> None:
    """``error[bad-number]`` at ``span`` if one of the attributes is a float with no literal.

    Fused kernels write attributes (scale factors, slopes, eps) into their code without :func:`lit`.
    """
    todo: list[Any] = [attrs]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise DlcError("bad-number", f"`{op}` has the value {v!r}, which cannot be written into the "
                           "generated module", span, hint="use a finite number")


_HOLE = re.compile(r"\{([*,=]?)(\w+)(?:\|([^}]*))?\}")


@dataclass(frozen=True)
class Hole:
    """One hole of a template: its ``mark`` (``""``, ``"*"``, ``","`` or ``"="``), its name and a ``*`` hole's
    separator."""

    mark: str
    name: str
    sep: str | None


@functools.cache
def _pieces(template: str) -> tuple[tuple[str, Hole | None], ...]:
    """``template`` as its text before each hole and the hole (the last piece has none): it is read once."""
    pieces: list[tuple[str, Hole | None]] = []
    last = 0
    for m in _HOLE.finditer(template):
        pieces.append((template[last : m.start()], Hole(m.group(1), m.group(2), m.group(3))))
        last = m.end()
    return tuple(pieces) + ((template[last:], None),)


@functools.cache
def holes(template: str) -> tuple[Hole, ...]:
    """The holes of ``template``, in the order they are written."""
    return tuple(hole for _, hole in _pieces(template) if hole is not None)


def _value_text(v: Any) -> str:
    if isinstance(v, Var):
        return str(v)
    if isinstance(v, Filled):
        return v.text()
    if isinstance(v, (list, tuple)):  # as lit writes it, its items possibly code (a constructor's argument)
        items = [_value_text(x) for x in v]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return lit(v)


_NO_DEFAULTS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Filled:
    """A template with the values of its holes: one constructor call, expression or statement, as data."""

    template: str
    values: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=lambda: _NO_DEFAULTS)  # one shared empty mapping
    # the text, written once: the emitter reads a statement when it is made and prints it at the end
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    def omitted(self, name: str) -> bool:
        """Whether keyword hole ``name`` is left out: its value is OMIT or the form's default."""
        v = self.values[name]
        return v is OMIT or (name in self.defaults and v == self.defaults[name])

    def text(self) -> str:
        """The Python text (see the module docstring for how each hole is written)."""
        if self._text is not None:
            return self._text
        text = self._write()
        object.__setattr__(self, "_text", text)  # frozen: the cache is set past the dataclass's guard
        return text

    def names(self) -> frozenset[str]:
        """The top-level names this code reads (``nn``, ``F``, ``torch``, a helper such as ``merge_directions``):
        those its template's own text reads, and those of the code in its values. Templates and code values are
        facet text, each read once (:func:`code_names`); the generated text is never re-read."""
        found = set(code_names("".join(before for before, _ in _pieces(self.template))))
        todo = list(self.values.values())
        while todo:
            v = todo.pop()
            if isinstance(v, Filled):
                found |= v.names()
            elif isinstance(v, Var):
                found |= code_names(v)
            elif isinstance(v, (list, tuple)):
                todo.extend(v)
        return frozenset(found)

    def _write(self) -> str:
        out = []
        for before, hole in _pieces(self.template):
            out.append(before)
            if hole is None:
                continue
            v = self.values[hole.name]
            if hole.mark == "*":
                out.append((", " if hole.sep is None else hole.sep).join(_value_text(x) for x in v))
            elif hole.mark in (",", "="):
                if not self.omitted(hole.name):
                    out.append(f"{', ' if hole.mark == ',' else ''}{hole.name}={_value_text(v)}")
            else:
                out.append(_value_text(v))
        return "".join(out)


def outside_strings(code: str) -> Iterator[tuple[int, str]]:
    """The characters of Python text ``code`` (with their index) that are not inside a string literal (the
    quotes themselves included)."""
    quote = ""
    escaped = False
    for i, ch in enumerate(code):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        else:
            yield i, ch


@functools.cache
def code_names(code: str) -> frozenset[str]:
    """The names a piece of facet code reads at the top level: each identifier not after a dot, outside string
    literals and comments (``nn`` and ``F`` in ``nn.ReLU(inplace=True)``; ``inplace`` is read too, which is
    harmless: callers keep only the module-level names they know)."""
    names: set[str] = set()
    word, after_dot, last = "", False, -1
    for i, ch in outside_strings(code + " "):
        if i != last + 1:  # a string literal came between: it ends a word, and is no dot
            if word and not after_dot and not word[0].isdigit():
                names.add(word)
            word, after_dot = "", False
        last = i
        if ch.isalnum() or ch == "_":
            word += ch
            continue
        if word and not after_dot and not word[0].isdigit():
            names.add(word)
        word = ""
        if ch == "#":
            break
        if not ch.isspace():
            after_dot = ch == "."
    return frozenset(names)


def variables(names: Sequence[str]) -> tuple[Var, ...]:
    """Variable names as hole values."""
    return tuple(Var(n) for n in names)


def assign(targets: Sequence[str], value: Any, comment: str | None = None, unpack: bool = False) -> Filled:
    """The statement ``targets = value`` (several targets unpack a tuple), with a fixed trailing comment; with
    ``unpack``, one target unpacks a tuple of one too (``(y,) = torch.chunk(x, 1)``)."""
    tail = f"  # {comment}" if comment else ""
    lhs = "({*targets},)" if unpack and len(targets) == 1 else "{*targets}"
    return Filled(lhs + " = {value}" + tail, {"targets": variables(targets), "value": value})


Fill = Callable[[dict[str, Any], list[Type], list[Type]], dict[str, Any]]


def _no_holes(attrs: dict[str, Any], ins: list[Type], outs: list[Type]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Form:
    """A template (or a choice of templates by attributes) and how to fill its holes.

    ``fill(attrs, ins, outs)`` gets the node's attributes and its batch-less input and output types.
    A form used by a kernel's PyTorch reference is filled from scalar attributes alone, with empty
    ``ins`` and ``outs`` (kernels are shape-generic). ``in_place``: the template for a node that overwrites its
    first input (``Node.in_place``, which the in-place pass sets where the op's ``OpDef.in_place`` allows it).
    """

    template: str | Callable[[dict[str, Any]], str]
    fill: Fill = _no_holes
    defaults: Mapping[str, Any] = field(default_factory=dict)
    in_place: str | None = None

    def filled(self, attrs: dict[str, Any], ins: list[Type], outs: list[Type], in_place: bool = False,
               **given: Any) -> Filled:
        """The form for one node (working in place if ``in_place``); ``given`` adds the variable holes (and
        overrides filled ones)."""
        if in_place and self.in_place is not None:
            template = self.in_place
        else:
            template = self.template if isinstance(self.template, str) else self.template(attrs)
        return Filled(template, {**self.fill(attrs, ins, outs), **given}, self.defaults)


def operands(args: list[str]) -> dict[str, Any]:
    """The variable holes of a functional form: ``x``, ``xs``, ``rest`` and ``n``."""
    xs = tuple(Var(a) for a in args)
    each = {f"x{i}": v for i, v in enumerate(xs[1:], 1)}  # x1, x2, ...: one operand after the first
    return {"x": xs[0] if xs else Var(""), "xs": xs, "rest": xs[1:], "n": len(xs), **each}


@dataclass(frozen=True)
class Ctx:
    """What a forward statement may need besides its node: fresh temporaries."""

    fresh: Callable[[str], str]


@dataclass(frozen=True)
class CallSite:
    """A use of a module in ``forward``: ``mod`` called on ``args``, results in ``outs``."""

    attrs: dict[str, Any]
    ins: list[Type]
    args: list[str]
    mod: str
    outs: list[str]
    ctx: Ctx

    def call(self) -> Filled:
        """The module called on the arguments: ``self.layer(x, ...)``."""
        return Filled("{mod}({*args})", {"mod": Var(self.mod), "args": variables(self.args)})


def call_module(site: CallSite) -> list[Filled]:
    """The usual statement: ``out = self.layer(x, ...)``."""
    return [assign(site.outs[:1], site.call())]


@dataclass(frozen=True)
class Torch:
    """How an op becomes PyTorch code.

    ``module``: its module's constructor (required for ops with parameters; for the others the module
    used inside ``nn.Sequential`` or when the spec labels them; None for merges, which are only
    expressions). ``sequential``: the module form inside ``nn.Sequential`` where it differs.
    ``function``: the expression computing the output in ``forward`` without a module, and the PyTorch
    reference of the op's kernel facet. ``call``: the statements (each a :class:`Filled`) that call the
    module (default :func:`call_module`). ``channels_last``: runs faster with channels-last memory order.
    ``imports``: the modules a node's code needs imported besides torch, by its attributes.
    """

    module: Form | None = None
    function: Form | None = None
    sequential: Form | None = None
    call: Callable[[CallSite], list[Filled]] = call_module
    channels_last: bool = False
    # the modules the generated file imports for a node of this op (an external layer's: `import mypkg.layers`)
    imports: Callable[[dict[str, Any]], tuple[str, ...]] | None = None
    # the functional form gives a tuple of results however many there are (torch.split, torch.chunk)
    tuple_result: bool = False

    def constructor(self, attrs: dict[str, Any], ins: list[Type], outs: list[Type],
                    in_sequential: bool = False, in_place: bool = False) -> Filled:
        """The constructor call of the node's module (its ``nn.Sequential`` form when ``in_sequential``; a module
        working in place when ``in_place``)."""
        form = self.sequential if in_sequential and self.sequential is not None else self.module
        assert form is not None, "no module form"
        return form.filled(attrs, ins, outs, in_place)

    def expression(self, attrs: dict[str, Any], args: list[str], ins: list[Type] | None = None,
                   outs: list[Type] | None = None, in_place: bool = False, **given: Any) -> str:
        """The functional form's text on the operand variables ``args`` (overwriting the first if ``in_place``)."""
        assert self.function is not None, "no functional form"
        return self.function.filled(attrs, ins or [], outs or [], in_place, **operands(args), **given).text()

    def forward(self, attrs: dict[str, Any], ins: list[Type], outs_t: list[Type], args: list[str], mod: str | None,
                outs: list[str], ctx: Ctx, in_place: bool = False) -> list[Filled]:
        """The ``forward`` statements computing ``outs``: the module called when there is one (its constructor
        makes it work in place), else the functional form (overwriting its first operand if ``in_place``)."""
        if mod is not None:
            return self.call(CallSite(attrs, ins, args, mod, outs, ctx))
        assert self.function is not None, "no functional form"
        return [assign(outs, self.function.filled(attrs, ins, outs_t, in_place, **operands(args)),
                       unpack=self.tuple_result)]
