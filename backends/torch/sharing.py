"""Block instances whose classes differ only in numbers share one class; those numbers become constructor arguments.

Classes are compared as structure, never as text: the templates of their statements (each a
:class:`~dlc.compiler.ops.pytorch.Filled` from an op's facet or the emitter) and their hole values, with every
number abstracted to a mark (:class:`_Walk`). Instances of one block with the same structure share a class; a
number that varies between them becomes a constructor argument (a number in ``forward`` is kept as an attribute,
``self.scale = scale``), named, in this order of preference:

0. after the block parameter written the same in every instance (``c``; an int never stands for a float);
1. after an input size equal in every instance (``x_channels``, ``x_size2``);
2. after the constructor hole it fills (``conv_out_channels``: attribute ``conv``, hole ``out_channels``), when
   it is a whole argument of the constructor an attribute is assigned;
3. ``arg1``, ``arg2``, ... otherwise.

A block's instances are given classes after those of the blocks they use, so a class compares its children's
constructor calls (:class:`~dlc.backends.torch.classes.ChildCall`, resolved here) with their arguments as numbers.
Each statement is walked a bounded number of times: the cost is linear in the size of the generated code.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dlc.backends.torch.classes import ChildCall, ClassDef, Instance, Line, location
from dlc.backends.torch.namespace import Namespace
from dlc.compiler.names import RESERVED_ATTRS
from dlc.compiler.ops.pytorch import Filled, Var, holes
from dlc.compiler.types import TensorType
from dlc.diagnostics import Span

Number = int | float


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


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _written(v: object) -> str | None:
    """A number as the generated code writes it (``2`` and ``2.0`` differ: an argument holds one of them)."""
    return repr(v) if _is_number(v) else None


class _Walk:
    """One pass over statements, in the order their text is written.

    It writes their structure into ``key`` (tokens: templates, variables and values, every number the same
    mark), and rebuilds each statement with block instance calls resolved (from ``calls``) and each number
    replaced by what ``replace(position, number, in_forward)`` returns; an unchanged value stays the same object.
    It collects the numbers in order, each with the name of the constructor hole it fills (see the module
    docstring, rank 2), or None.
    """

    def __init__(self, calls: Mapping[int, Filled],
                 replace: Callable[[int, Number, bool], object] | None = None) -> None:
        self.calls = calls
        self.replace = replace
        self.key: list[Hashable] = []
        self.numbers: list[Number] = []
        self.slots: list[str | None] = []
        self._forward = False

    def line(self, ln: Line, forward: bool) -> Line:
        """``ln`` rebuilt; its structure is added to ``key``."""
        self._forward = forward
        self.key.append(ln.attr)
        if isinstance(ln.code, str):
            self.key += (_CODE, str(ln.code))
            return ln
        code = self.calls[ln.code.iid] if isinstance(ln.code, ChildCall) else ln.code
        new = self._value(code, _constructor(code, self.calls) if ln.attr else None, ln.attr)
        return ln if new is ln.code else Line(new, ln.comment, ln.attr, ln.indent)

    def _value(self, v: Any, top: Filled | None, attr: str | None, slot: str | None = None) -> Any:
        kind = type(v)  # exact types first: this runs for every value of every statement
        if kind is ChildCall:
            v = self.calls[v.iid]
            kind = Filled
        if kind is Filled:
            return self._filled(v, top, attr)
        if kind is Var:
            self.key += (_CODE, v)
            return v
        if kind is int or kind is float or _is_number(v):
            self.key.append(_NUMBER)
            pos = len(self.numbers)
            self.numbers.append(v)
            self.slots.append(slot)
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

    def _filled(self, v: Filled, top: Filled | None, attr: str | None) -> Filled:
        self.key += (_CALL, v.template)
        changed: dict[str, Any] = {}
        for hole in holes(v.template):
            if hole.mark in (",", "=") and v.omitted(hole.name):
                self.key.append(_OMITTED)
                continue
            # a whole argument of the constructor call is named after its hole
            slot = f"{attr}_{hole.name}" if v is top and hole.mark != "*" else None
            old = v.values[hole.name]
            new = self._value(old, top, attr, slot)
            if new is not old:
                changed[hole.name] = new
        # unchanged, it stays the same object (its text already written, see Filled.text)
        return replace(v, values={**v.values, **changed}) if changed else v


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
    numbers: list[Number]
    slots: list[str | None]


def _shape(cls: ClassDef, calls: Mapping[int, Filled]) -> _Shape:
    """``cls``'s structure; its constructor statements get their block instance calls resolved on the way."""
    walk = _Walk(calls)
    cls.init = [walk.line(ln, False) for ln in cls.init]
    walk.key += (_ITEMS, len(cls.args), *cls.args)
    for ln in cls.body:
        walk.line(ln, True)
    return _Shape(tuple(walk.key), walk.numbers, walk.slots)


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


def _arg_name(column: tuple[str, ...], recs: list[Instance], slot: str | None) -> tuple[int, str]:
    """The name a varying number (written ``column[i]`` in instance ``i``) asks for, with its rank (see the module
    docstring; lower ranks are served first)."""
    for pname, _ in recs[0].scope.args:
        if all(_written(dict(r.scope.args).get(pname)) == v for r, v in zip(recs, column, strict=True)):
            return 0, pname
    for i, (iname, t) in enumerate(zip(recs[0].input_names, recs[0].input_types, strict=True)):
        if not isinstance(t, TensorType):
            continue
        for axis, _ in enumerate(t.shape):
            if all(isinstance(r.input_types[i], TensorType) and len(r.input_types[i].shape) > axis
                   and _written(r.input_types[i].shape[axis]) == v for r, v in zip(recs, column, strict=True)):
                return 1, f"{iname}_channels" if axis == t.feature_axis else f"{iname}_size{axis}"
    return (2, slot) if slot else (3, "")


def _parametrise(cls: ClassDef, names: dict[int, str], calls: Mapping[int, Filled]) -> None:
    """Replace the numbers at the positions in ``names`` by those constructor arguments (kept as attributes for
    ``forward``).

    The attribute that keeps an argument is named after it unless the class already has that attribute:
    ``self.c_2 = c`` beside a layer ``c``, ``self.training_ = training`` (nn.Module's flag).
    """
    attrs = Namespace(RESERVED_ATTRS)
    for name in cls.attrs:
        attrs.claim(name)
    kept: dict[str, str] = {}  # argument -> attribute

    def argument(pos: int, number: Number, in_forward: bool) -> object:
        arg = names.get(pos)
        if arg is None:
            return number
        if not in_forward:
            return Var(arg)
        if arg not in kept:
            kept[arg] = attrs.fresh(arg)
        return Var(f"self.{kept[arg]}")

    walk = _Walk(calls, argument)
    cls.init = [walk.line(ln, False) for ln in cls.init]
    cls.body = [walk.line(ln, True) for ln in cls.body]
    cls.init = [Line(arg, attr=attr) for arg, attr in kept.items()] + cls.init


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
            same = (block, shape.key, tuple(repr(n) for n in shape.numbers))
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
        # one constructor argument per distinct varying column: numbers share an argument only when they are
        # written the same in every instance (so `2` and `2.0` never do); a column is hashed once (it has one
        # entry per instance), then known by its index
        columns = zip(*(tuple(repr(n) for n in s.numbers) for _, s in members), strict=True)
        found: dict[tuple[str, ...], list[int]] = {}
        for pos, column in enumerate(columns):
            if len(set(column)) > 1:
                found.setdefault(column, []).append(pos)
        varying = list(found.items())  # (column, its positions), by first position
        wanted = [_arg_name(column, recs, shape.slots[ps[0]]) for column, ps in varying]
        # arguments are locals of __init__: they must not shadow the classes and imports it uses
        args = Namespace(parent=self.module)
        names = [""] * len(varying)
        unnamed = 0
        for i in sorted(range(len(varying)), key=lambda i: (wanted[i][0], varying[i][1][0])):
            rank, base = wanted[i]
            if rank == 3:
                unnamed += 1
                base = f"arg{unnamed}"
            names[i] = args.fresh(base)
        declared = [p for p, _ in first.scope.args]
        order = sorted(range(len(varying)), key=lambda i: (0, declared.index(wanted[i][1])) if wanted[i][0] == 0
                       else (1, varying[i][1][0]))
        cls = first.cls
        cls.name = name
        cls.params = [names[i] for i in order]
        where = self.blocks.get(first.scope.block or "", first.span)
        cls.doc = f"Block `{block}`, defined at {location(where.file, where.line)}."
        _parametrise(cls, {pos: names[i] for i, (_, ps) in enumerate(varying) for pos in ps}, self.calls)
        template = f"{name}({', '.join(f'{{={names[i]}}}' for i in order)})"
        for rec, s in members:
            # a call's argument is the instance's number at the column's first position
            self.calls[rec.iid] = Filled(template, {names[i]: s.numbers[varying[i][1][0]] for i in order})
        self.classes.append(cls)
