"""Block instances whose classes differ only in numbers share one class; those numbers become constructor arguments.

Classes are compared as structure, never as text: the templates of their statements (each a
:class:`~dlc.compiler.ops.pytorch.Filled` from an op's facet or the emitter) and their hole values, with every
value abstracted to a mark (:class:`_Walk`). A value is a number or a list of numbers (a kernel size ``3`` or
``(1, 7)``), and a keyword the form leaves out at a default that is a value counts as that value (``stride=2``
written, ``stride`` left out at 1). Instances of one block with the same structure share a class; a value that
varies between them becomes a constructor argument (a value in ``forward`` is kept as an attribute,
``self.scale = scale``), named, in this order of preference:

0. after the block parameter written the same in every instance (``c``, ``k`` for ``k: int2``; an int never
   stands for a float);
1. after a number the block body binds to a name, the same in every instance (``hidden = channels(x) * t``);
2. after an input size equal in every instance (``x_channels``, ``x_size2``);
3. after the constructor hole it fills (``conv_out_channels``: attribute ``conv``, hole ``out_channels``), when
   it is a whole argument of the constructor an attribute is assigned;
4. ``arg1``, ``arg2``, ... otherwise.

Lists of one length that no parameter or binding holds whole keep their fixed items: the items that vary are the
arguments (``F.pad(x, (self.dilation, 0))``). An argument filling only keywords with one default, left out in
some instance, gets that default in the signature (``stride=1``), and a call leaves it out where it has it.

A block's instances are given classes after those of the blocks they use, so a class compares its children's
constructor calls (:class:`~dlc.backends.torch.classes.ChildCall`, resolved here) with their arguments as values.
Each statement is walked a bounded number of times: the cost is linear in the size of the generated code.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dlc.backends.torch.classes import ChildCall, ClassDef, Instance, Line, location
from dlc.backends.torch.namespace import Namespace
from dlc.compiler.names import RESERVED_ATTRS
from dlc.compiler.ops.pytorch import OMIT, Filled, Var, holes, lit
from dlc.compiler.types import TensorType
from dlc.diagnostics import Span

# a number, or a list or tuple of numbers (see _is_value)
Value = int | float | list | tuple


class _Token:
    """A mark in a structure key, telling what the tokens after it are."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# A structure key is a flat sequence of tokens (no container per value: a class's key costs one tuple), written
# in prefix form: each value starts with a mark, a call's template says how many hole values follow, and items
# are counted.
_NUMBER, _CALL, _CODE, _ITEMS, _VALUE, _OMITTED = (_Token(n) for n in ("NUMBER", "CALL", "CODE", "ITEMS", "VALUE",
                                                                       "OMITTED"))


_NO_DEFAULT: Any = object()  # a number filling no keyword hole with a default


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_value(v: object) -> bool:
    """A number, or a non-empty list or tuple of numbers (a kernel size ``(1, 7)``): one value, one argument."""
    return _is_number(v) or (isinstance(v, (list, tuple)) and bool(v) and all(_is_number(x) for x in v))


def _written(v: object) -> str | None:
    """A value as the generated code writes it (``2`` and ``2.0`` differ: an argument holds one of them; a list is
    written as a tuple)."""
    if _is_number(v):
        return repr(v)
    if _is_value(v):
        items = [repr(x) for x in v]  # type: ignore[union-attr]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return None


class _Walk:
    """One pass over statements, in the order their text is written.

    It writes their structure into ``key`` (tokens: templates, variables and values, every number the same
    mark), and rebuilds each statement with block instance calls resolved (from ``calls``) and each number
    replaced by what ``replace(position, number, in_forward)`` returns; an unchanged value stays the same object.
    It collects the numbers in order, each with the name of the constructor hole it fills (see the module
    docstring, rank 2), or None, and with the default of the keyword hole it fills (:data:`_NO_DEFAULT` if none).
    """

    def __init__(self, calls: Mapping[int, Filled],
                 replace: Callable[[int, Value, bool], object] | None = None) -> None:
        self.calls = calls
        self.replace = replace
        self.key: list[Hashable] = []
        self.numbers: list[Value] = []
        self.slots: list[str | None] = []
        self.defaults: list[Any] = []
        self._forward = False

    def line(self, ln: Line, forward: bool) -> Line:
        """``ln`` rebuilt; its structure is added to ``key``."""
        self._forward = forward
        self.key.append(ln.attr)
        if isinstance(ln.code, str):
            self.key += (_CODE, str(ln.code))
            return ln
        code = self.calls[ln.code.iid] if isinstance(ln.code, ChildCall) else ln.code
        new = self._value(code, _constructor(code, self.calls) if ln.attr else _children(code), ln.attr)
        return ln if new is ln.code else Line(new, ln.comment, ln.attr, ln.indent)

    def _value(self, v: Any, top: Filled | tuple | None, attr: str | None, slot: str | None = None,
               whole: bool = True, default: Any = None) -> Any:
        """``v`` rebuilt; ``whole``: a list of numbers is one value (not so for the items a ``*`` hole spreads)."""
        kind = type(v)  # exact types first: this runs for every value of every statement
        if kind is ChildCall:
            v = self.calls[v.iid]
            kind = Filled
        if kind is Filled:
            return self._filled(v, top, attr)
        if kind is Var:
            self.key += (_CODE, v)
            return v
        if kind is int or kind is float or _is_number(v) or (whole and _is_value(v)):
            self.key.append(_NUMBER)
            pos = len(self.numbers)
            self.numbers.append(v)
            self.slots.append(slot)
            self.defaults.append(default if _is_value(default) else _NO_DEFAULT)
            return v if self.replace is None else self.replace(pos, v, self._forward)
        if isinstance(v, (list, tuple)):
            self.key += (_ITEMS, len(v))
            items = [self._value(x, top, attr) for x in v]
            return v if all(n is x for n, x in zip(items, v)) else type(v)(items)
        if isinstance(v, Var):
            self.key += (_CODE, str(v))
            return v
        if isinstance(v, Filled):
            return self._filled(v, top, attr)
        self.key += (_VALUE, v)  # strings, booleans, None
        return v

    def _filled(self, v: Filled, top: Filled | tuple | None, attr: str | None) -> Filled:
        self.key += (_CALL, v.template)
        changed: dict[str, Any] = {}
        for hole in holes(v.template):
            old = v.values[hole.name]
            # a keyword left out at a default that is a number is that number: where instances differ in it, it is
            # an argument and the keyword is written (`stride=stride`); where they agree, it stays left out
            if hole.mark in (",", "=") and v.omitted(hole.name) and (old is OMIT or not _is_value(old)):
                self.key.append(_OMITTED)
                continue
            # a whole argument of the constructor call is named after its hole
            # (a labelled group's children: after the hole alone, `kernel_size`)
            whole_arg = v is top or (isinstance(top, tuple) and any(v is t for t in top))
            slot = (f"{attr}_{hole.name}" if attr else hole.name) if whole_arg and hole.mark != "*" else None
            keyword = hole.mark in (",", "=")
            new = self._value(old, top, attr, slot, whole=hole.mark != "*",
                              default=v.defaults.get(hole.name) if keyword else None)
            if new is not old:
                changed[hole.name] = new
        # unchanged, it stays the same object (its text already written, see Filled.text)
        return replace(v, values={**v.values, **changed}) if changed else v


def _children(code: Filled) -> tuple | None:
    """The children's constructor calls in a labelled group class's ``super().__init__(...)`` (emit.py's
    ``_sequential_class``), whose holes name the class's arguments; None for any other statement."""
    if not code.template.startswith("super().__init__("):
        return None
    if "items" in code.values:
        return tuple(code.values["items"])
    return tuple(pair.values["module"] for pair in code.values["pairs"])


def _constructor(code: Filled, calls: Mapping[int, Filled]) -> Filled:
    """The call a constructor statement assigns, looking through templates that are one hole (a wrapper's
    ``{layer}``)."""
    while True:
        only = holes(code.template)
        if len(only) != 1 or code.template != f"{{{only[0].name}}}":
            return code
        inner = code.values[only[0].name]
        inner = calls[inner.iid] if isinstance(inner, ChildCall) else inner
        if not isinstance(inner, Filled):
            return code
        code = inner


@dataclass
class _Shape:
    """A block instance's class as structure: the key instances sharing a class agree on, and its numbers."""

    key: Hashable
    numbers: list[Value]
    slots: list[str | None]
    defaults: list[Any]


def _shape(cls: ClassDef, calls: Mapping[int, Filled]) -> _Shape:
    """``cls``'s structure; its constructor statements get their block instance calls resolved on the way."""
    walk = _Walk(calls)
    cls.init = [walk.line(ln, False) for ln in cls.init]
    walk.key += (_ITEMS, len(cls.args), *cls.args)
    for ln in cls.body:
        walk.line(ln, True)
    return _Shape(tuple(walk.key), walk.numbers, walk.slots, walk.defaults)


def child_calls(cls: ClassDef) -> Iterator[int]:
    """The block instances whose constructor calls ``cls.__init__`` holds."""
    todo: list[Any] = [ln.code for ln in cls.init]
    while todo:
        v = todo.pop()
        if isinstance(v, ChildCall):
            yield v.iid
        elif isinstance(v, Filled):
            todo.extend(v.values.values())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)


def resolve(cls: ClassDef, calls: Mapping[int, Filled]) -> None:
    """Replace the block instance calls in ``cls.__init__`` by the constructor calls of their classes."""
    walk = _Walk(calls)
    cls.init = [walk.line(ln, False) for ln in cls.init]


def _arg_name(column: tuple[str | None, ...], recs: list[Instance], slot: str | None) -> tuple[int, str]:
    """The name a varying value (written ``column[i]`` in instance ``i``) asks for, with its rank (see the module
    docstring; lower ranks are served first)."""
    for rank, named in ((0, lambda r: r.scope.args), (1, lambda r: r.bound)):
        for pname, _ in named(recs[0]):
            if all(_written(dict(named(r)).get(pname)) == v for r, v in zip(recs, column, strict=True)):
                return rank, pname
    for i, (iname, t) in enumerate(zip(recs[0].input_names, recs[0].input_types, strict=True)):
        if not isinstance(t, TensorType):
            continue
        for axis, _ in enumerate(t.shape):
            if all(isinstance(r.input_types[i], TensorType) and len(r.input_types[i].shape) > axis
                   and _written(r.input_types[i].shape[axis]) == v for r, v in zip(recs, column, strict=True)):
                return 2, f"{iname}_channels" if axis == t.feature_axis else f"{iname}_size{axis}"
    return (3, slot) if slot else (4, "")


def _itemwise(values: list[Value], column: tuple[str | None, ...], recs: list[Instance]) -> bool:
    """Whether a varying value is lists of one length that no block parameter or binding holds whole: their
    varying items are arguments then (``F.pad(x, (self.dilation, 0))``), not the whole list."""
    lists = all(isinstance(v, (list, tuple)) and len(v) == len(values[0]) for v in values)  # type: ignore[arg-type]
    return lists and _arg_name(column, recs, None)[0] > 1


# Where a varying value is: its position among a class's numbers, and the item of a list (None: the whole value).
Place = tuple[int, int | None]


def _parametrise(cls: ClassDef, names: Mapping[Place, str], calls: Mapping[int, Filled]) -> None:
    """Replace the values at the places in ``names`` by those constructor arguments (kept as attributes for
    ``forward``).

    The attribute that keeps an argument is named after it unless the class already has that attribute:
    ``self.c_2 = c`` beside a layer ``c``, ``self.training_ = training`` (nn.Module's flag).
    """
    attrs = Namespace(RESERVED_ATTRS)
    for name in cls.attrs:
        attrs.claim(name)
    kept: dict[str, str] = {}  # argument -> attribute
    items: dict[int, dict[int, str]] = {}  # position -> the arguments of its list's items
    for (pos, item), arg in names.items():
        if item is not None:
            items.setdefault(pos, {})[item] = arg

    def var(arg: str, in_forward: bool) -> Var:
        if not in_forward:
            return Var(arg)
        if arg not in kept:
            kept[arg] = attrs.fresh(arg)
        return Var(f"self.{kept[arg]}")

    def argument(pos: int, value: Value, in_forward: bool) -> object:
        whole = names.get((pos, None))
        if whole is not None:
            return var(whole, in_forward)
        if pos not in items:
            return value
        assert isinstance(value, (list, tuple))
        return type(value)(var(items[pos][i], in_forward) if i in items[pos] else x for i, x in enumerate(value))

    walk = _Walk(calls, argument)
    cls.init = [walk.line(ln, False) for ln in cls.init]
    cls.body = [walk.line(ln, True) for ln in cls.body]
    cls.init = [Line(arg, attr=attr) for arg, attr in kept.items()] + cls.init


def _at(numbers: list[Value], place: Place) -> Value:
    """The value at ``place``."""
    pos, item = place
    return numbers[pos] if item is None else numbers[pos][item]  # type: ignore[index]


class ClassSharing:
    """Turns recorded block instances into classes (:meth:`share`): one per block and structure.

    ``classes`` are the block classes in the order they are written, ``calls`` each instance's constructor call.
    """

    def __init__(self, instances: list[Instance], module: Namespace, blocks: Mapping[str, Span]) -> None:
        self.instances = instances
        self.module = module  # the module's top-level names: classes are named there
        self.blocks = blocks  # where each block is defined
        self.classes: list[ClassDef] = []
        self.calls: dict[int, Filled] = {}
        self._held: set[str] = set()  # block names kept free for the block's first class

    def share(self) -> None:
        """Give every instance a class, the classes of a block's children first."""
        by_block: dict[str, list[Instance]] = {}
        for rec in self.instances:
            by_block.setdefault(rec.scope.block or "Block", []).append(rec)
        for b in by_block:  # a block's first class keeps its name where it can: no other class takes it
            if not self.module.taken(b):
                self.module.claim(b)
                self._held.add(b)
        children: dict[str, set[str]] = {b: set() for b in by_block}
        for b, recs in by_block.items():
            for rec in recs:
                children[b].update(self.instances[iid].scope.block or "Block" for iid in child_calls(rec.cls))
        done: set[str] = set()
        order: list[str] = []
        progress = True
        while progress:
            progress = False
            for b in by_block:
                if b not in done and children[b] <= done:
                    done.add(b)
                    order.append(b)
                    progress = True
        for b in order:
            groups: dict[Hashable, list[tuple[Instance, _Shape]]] = {}
            for rec in by_block[b]:
                shape = _shape(rec.cls, self.calls)
                groups.setdefault(shape.key, []).append((rec, shape))
            for members in groups.values():
                self._group_class(b, members)
        # A block that uses itself (recursion ended by a compile-time `if`), and a block using such a block, has
        # no such order: their instances become classes one by one, deepest first, sharing a class only when
        # identical, numbers included.
        identical: dict[tuple[str, Hashable, tuple[str, ...]], Filled] = {}
        recursive = sorted((rec for b in by_block if b not in done for rec in by_block[b]),
                           key=lambda rec: -len(rec.scope.path.split(".")))
        for rec in recursive:
            shape = _shape(rec.cls, self.calls)
            block = rec.scope.block or "Block"
            same = (block, shape.key, tuple(_written(n) for n in shape.numbers))
            if same in identical:
                self.calls[rec.iid] = identical[same]
            else:
                self._group_class(block, [(rec, shape)])
                identical[same] = self.calls[rec.iid]

    def _class_name(self, block: str) -> str:
        """``block`` for its first class if no reserved name is in the way; else ``tuple_``, ``BasicBlock_2``."""
        if block in self._held:
            self._held.remove(block)
            return block
        return self.module.fresh(block)

    def _group_class(self, block: str, members: list[tuple[Instance, _Shape]]) -> None:
        """One class for instances of ``block`` with the same structure; the numbers varying between them become
        its constructor arguments."""
        first, shape = members[0]
        recs = [rec for rec, _ in members]
        name = self._class_name(block)
        # one constructor argument per distinct varying column: values share an argument only when they are
        # written the same in every instance (so `2` and `2.0` never do); a column is hashed once (it has one
        # entry per instance), then known by its places
        found: dict[tuple[str | None, ...], list[Place]] = {}
        for pos in range(len(shape.numbers)):
            values = [s.numbers[pos] for _, s in members]
            column = tuple(_written(v) for v in values)
            if len(set(column)) == 1:
                continue
            if not _itemwise(values, column, recs):
                found.setdefault(column, []).append((pos, None))
                continue
            for i in range(len(values[0])):  # type: ignore[arg-type]
                items = tuple(_written(v[i]) for v in values)  # type: ignore[index]
                if len(set(items)) > 1:
                    found.setdefault(items, []).append((pos, i))
        varying = list(found.items())  # (column, its places), by first place
        wanted = [_arg_name(column, recs, shape.slots[ps[0][0]] if ps[0][1] is None else None)
                  for column, ps in varying]
        # arguments are locals of __init__: they must not shadow the classes and imports it uses
        args = Namespace(parent=self.module)
        names = [""] * len(varying)
        unnamed = 0
        for i in sorted(range(len(varying)), key=lambda i: (wanted[i][0], varying[i][1][0])):
            rank, base = wanted[i]
            if rank == 4:
                unnamed += 1
                base = f"arg{unnamed}"
            names[i] = args.fresh(base)
        # an argument filling only keywords with one default, left out in some instance, gets that default, and a
        # call leaves it out where it has it; arguments with defaults come last, and the first argument has none
        # (a call names one)
        defaults: dict[int, Any] = {}
        for i, (column, ps) in enumerate(varying):
            found_defaults = {_written(shape.defaults[pos]) for pos, item in ps if item is None}
            if all(item is None for _, item in ps) and len(found_defaults) == 1 and found_defaults <= set(column):
                defaults[i] = shape.defaults[ps[0][0]]
        declared = [p for p, _ in first.scope.args]
        bound = [b for b, _ in first.bound]
        order = sorted(range(len(varying)), key=lambda i: (
            i in defaults, *((0, declared.index(wanted[i][1])) if wanted[i][0] == 0
                             else (1, bound.index(wanted[i][1])) if wanted[i][0] == 1 else (2, varying[i][1][0]))))
        if order and order[0] in defaults:
            del defaults[order[0]]
        cls = first.cls
        cls.name = name
        cls.params = [f"{names[i]}={lit(defaults[i])}" if i in defaults else names[i] for i in order]
        where = self.blocks.get(first.scope.block or "", first.span)
        if cls.base == "nn.Module":  # a labelled group's class (an nn.Sequential) has its own
            cls.doc = f"Block `{block}`, defined at {location(where.file, where.line)}."
        _parametrise(cls, {place: names[i] for i, (_, ps) in enumerate(varying) for place in ps}, self.calls)
        template = f"{name}({{={names[order[0]]}}}{''.join(f'{{,{names[i]}}}' for i in order[1:])})" if order \
            else f"{name}()"
        call_defaults = {names[i]: d for i, d in defaults.items()}
        for rec, s in members:
            # a call's argument is the instance's value at the column's first place
            values = {names[i]: _at(s.numbers, varying[i][1][0]) for i in order}
            self.calls[rec.iid] = Filled(template, values, call_defaults)
        self.classes.append(cls)
