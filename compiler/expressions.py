"""Evaluating expressions: compile-time values, tensor arithmetic, shape queries.

Numbers, booleans, strings and lists are computed here; a name is looked up in its frame, then among the
program's blocks, the built-in layers and the builtin functions (``channels``, ``size``, ...). Tensor
arithmetic (`a + b`, `x * 2`) becomes nodes. Calls and pipelines apply layers: the :class:`Evaluator` hands
them to its :class:`LayerCalls` (the lowering of layers, :mod:`.lowering`), which evaluates their arguments
here in turn.
"""

from __future__ import annotations

import operator
from typing import Any, Protocol

from dlc.compiler.context import Context, Frame
from dlc.compiler.nodes import Nodes
from dlc.compiler.ops.registry import all_ops, by_dim, get
from dlc.compiler.types import TensorType
from dlc.compiler.ops.shapes import floor_divided, offset, scaled
from dlc.compiler.values import Instance, Layer, Symbol, SymSize, Tensor, describe
from dlc.diagnostics import DlcError, Span, suggest
from dlc.grammar import ast
from dlc.grammar.build import NUMBER_HINT, number_problem

BUILTINS = ("channels", "size", "rank", "min", "max", "int", "float", "len", "where")
# a comparison's op by its operator, and the operator with its operands swapped (`0 < x` is `x > 0`)
_COMPARE_OPS = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_SWAPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "//": operator.floordiv,
          "%": operator.mod}


class LayerCalls(Protocol):
    """What applies layers for the evaluator: a call (`linear(3)`, `f(x)`) and a pipeline (`x -> relu`)."""

    def call(self, e: ast.Call, frame: Frame) -> Any:
        """The value of a call: a configured layer, or what applying it gives."""

    def pipe(self, e: ast.Pipe, frame: Frame) -> Any:
        """The value of a pipeline: its last stage's result."""


class Evaluator:
    """Evaluates the expressions of one elaboration. ``layers`` is set by whoever applies layers."""

    def __init__(self, ctx: Context, nodes: Nodes) -> None:
        self.ctx = ctx
        self.nodes = nodes
        self.layers: LayerCalls | None = None

    def eval(self, e: ast.Expr, frame: Frame) -> Any:
        """The value of ``e`` in ``frame``."""
        self.ctx.step(e.span, frame)
        if isinstance(e, (ast.Number, ast.String, ast.Bool)):
            return e.value
        if isinstance(e, ast.Name):
            return self.lookup(e.id, e.span, frame)
        if isinstance(e, ast.ListExpr):
            return [self.eval(x, frame) for x in e.items]
        if isinstance(e, ast.TupleExpr):  # `(x, skip) -> Layer * n`: tensors carried through a pipeline
            return tuple(self.tensor(self.eval(x, frame), x.span, frame, "an item of a tuple") for x in e.items)
        if isinstance(e, ast.Cond):
            test = self.eval(e.test, frame)
            if isinstance(test, Tensor):
                raise self.ctx.err("type-mismatch", f"`if` is decided at compile time and cannot compare a tensor: "
                                   f"its condition is {describe(test)}", e.test.span, frame,
                                   hint="`where(condition, a, b)` chooses elementwise; shape queries such as "
                                        "`channels(x)` give numbers to compare")
            if not isinstance(test, bool):
                raise self.ctx.err("type-mismatch",
                                   f"the condition of `if` must be true or false, got {describe(test)}",
                                   e.test.span, frame)
            return self.eval(e.then if test else e.orelse, frame)
        if isinstance(e, ast.BoolOp):
            left = self.eval(e.left, frame)
            if isinstance(left, Tensor):  # bool tensors: elementwise, both sides evaluated
                right = self.tensor(self.eval(e.right, frame), e.right.span, frame, f"the right side of `{e.op}`")
                return self.nodes.emit(f"logical_{e.op}", [left, right], {}, e.span, frame)
            if not isinstance(left, bool):
                raise self.ctx.err("type-mismatch", f"expected true or false, got {describe(left)}", e.left.span,
                                   frame)
            if e.op == "and" and not left:
                return False
            if e.op == "or" and left:
                return True
            return self._bool(e.right, frame)
        if isinstance(e, ast.Not):
            v = self.eval(e.operand, frame)
            if isinstance(v, Tensor):
                return self.nodes.emit("logical_not", [v], {}, e.span, frame)
            if not isinstance(v, bool):
                raise self.ctx.err("type-mismatch", f"expected true or false, got {describe(v)}", e.operand.span,
                                   frame)
            return not v
        if isinstance(e, ast.Compare):
            return self._compare(e, frame)
        if isinstance(e, ast.Neg):
            v = self.eval(e.operand, frame)
            if isinstance(v, Tensor):
                return self.nodes.emit("scale", [v], {"factor": -1.0}, e.span, frame)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v
            raise self.ctx.err("type-mismatch", f"cannot negate {describe(v)}", e.span, frame)
        if isinstance(e, ast.BinOp):
            return self._binop(e, frame)
        if isinstance(e, ast.Subscript):
            return self.subscript(e, frame)
        if isinstance(e, ast.Call):
            assert self.layers is not None
            return self.layers.call(e, frame)
        if isinstance(e, ast.Pipe):
            assert self.layers is not None
            return self.layers.pipe(e, frame)
        raise AssertionError(f"unknown expression {type(e).__name__}")

    def _bool(self, e: ast.Expr, frame: Frame) -> bool:
        v = self.eval(e, frame)
        if not isinstance(v, bool):
            raise self.ctx.err("type-mismatch", f"expected true or false, got {describe(v)}", e.span, frame)
        return v

    def lookup(self, name: str, span: Span, frame: Frame, callee: bool = False,
               args: tuple[ast.Arg, ...] = ()) -> Any:
        """What ``name`` means in ``frame``: a value, a block or op as a layer, a builtin, or a Symbol (a bare
        name, which an argument's kind may accept); ``callee``: the name is called or piped into, with ``args``
        (a `dim=` among them makes `mean`, `max` and `min` the reductions)."""
        if name in frame.names:
            v = frame.names[name]
            # In call / stage position a plain compile-time value (e.g. a parameter `dropout: float`)
            # does not hide the layer of the same name: `dropout(dropout)` means the op.
            plain = isinstance(v, (int, float, str, list))
            if not (callee and plain and (name in self.ctx.program.defs or get(name) is not None)):
                return v
        if name in self.ctx.program.defs:
            d = self.ctx.program.defs[name]
            if d.is_network:
                raise self.ctx.err("bad-reference", f"`{name}` is a network; only blocks can be used inside others",
                                   span, frame, hint=f"declare it as `block {name}(...)`")
            return Layer(None, d, {}, [], {}, [], span)
        reduction = by_dim(name) if any(a.name == "dim" for a in args) else None
        if reduction is not None:
            return Layer(reduction, None, {}, [], {}, [], span)
        if name in BUILTINS:  # before the ops: `where` is also the op it makes, from tensors and numbers
            return ("builtin", name)
        op = get(name)
        if op is not None:
            return Layer(op, None, {}, [], {}, [], span)
        return Symbol(name, span)

    def known_names(self, frame: Frame) -> list[str]:
        """Every name visible in ``frame``, for "did you mean" hints."""
        return list(frame.names) + list(self.ctx.program.defs) + list(all_ops()) + list(BUILTINS)

    def _compare(self, e: ast.Compare, frame: Frame) -> Any:
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return self._compare_tensor(e, a, b, frame)
        for v, sub in ((a, e.left), (b, e.right)):
            if isinstance(v, (Layer, Instance, tuple)):
                raise self.ctx.err("type-mismatch", f"cannot compare {describe(v)} at compile time", sub.span, frame,
                                   hint="shape queries such as `channels(x)` give numbers to compare")
            if isinstance(v, Symbol):
                raise self.unknown_name(v, frame)
        try:
            return {"==": a == b, "!=": a != b}[e.op] if e.op in ("==", "!=") else \
                {"<": lambda: a < b, ">": lambda: a > b, "<=": lambda: a <= b, ">=": lambda: a >= b}[e.op]()
        except TypeError:
            raise self.ctx.err("type-mismatch", f"cannot compare {describe(a)} with {describe(b)}", e.span,
                               frame) from None

    def _compare_tensor(self, e: ast.Compare, a: Any, b: Any, frame: Frame) -> Tensor:
        """`x > 0`, `tokens != pad`, `a == b`: a bool tensor (a number on the left swaps the operator)."""
        op = e.op
        if not isinstance(a, Tensor):
            a, b, op = b, a, _SWAPPED[op]
        if isinstance(b, Tensor):
            return self.nodes.emit(_COMPARE_OPS[op], [a, b], {}, e.span, frame)
        if isinstance(b, Symbol):
            raise self.unknown_name(b, frame)
        if isinstance(b, bool) or not isinstance(b, (int, float)):
            raise self.ctx.err("type-mismatch", f"cannot compare a tensor with {describe(b)}", e.span, frame,
                               hint="a tensor compares with a tensor or a number")
        return self.nodes.emit(_COMPARE_OPS[op], [a], {"value": b}, e.span, frame)

    def _binop(self, e: ast.BinOp, frame: Frame) -> Any:
        a, b = self._sized(self.eval(e.left, frame), frame), self._sized(self.eval(e.right, frame), frame)
        if isinstance(a, SymSize) or isinstance(b, SymSize):
            return self._size_arith(e, a, b, frame)
        for v, sub in ((a, e.left), (b, e.right)):
            if isinstance(v, Symbol):
                raise self.unknown_name(v, frame)
        num = (int, float)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            hint_save = frame.hint
            if isinstance(a, Tensor) and isinstance(b, Tensor):
                op = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul"}.get(e.op)
                if op is None:
                    raise self.ctx.err("type-mismatch", f"`{e.op}` is not defined between tensors", e.span, frame,
                                       hint="tensors combine with +, -, *, / and @")
                return self.nodes.emit(op, [a, b], {}, e.span, frame)
            t, c = (a, b) if isinstance(a, Tensor) else (b, a)
            if not isinstance(c, num) or isinstance(c, bool):
                raise self.ctx.err("type-mismatch", f"cannot combine a tensor with {describe(c)} using `{e.op}`",
                                   e.span, frame)
            frame.hint = hint_save
            c = float(c)  # a scale or offset is a float; |c| <= MAX_INT converts without overflow
            if e.op == "+":
                return self.nodes.emit("shift", [t], {"offset": c}, e.span, frame)
            if e.op == "*":
                return self.nodes.emit("scale", [t], {"factor": c}, e.span, frame)
            if e.op == "-" and t is a:
                return self.nodes.emit("shift", [t], {"offset": -c}, e.span, frame)
            if e.op == "-":
                neg = self.nodes.emit("scale", [t], {"factor": -1.0}, e.span, frame)
                return self.nodes.emit("shift", [neg], {"offset": c}, e.span, frame)
            if e.op == "/" and t is a:
                if c == 0:
                    raise self.ctx.err("bad-argument", "division by zero", e.right.span, frame)
                return self.nodes.emit("scale", [t], {"factor": self.number(1.0 / c, e.span, frame)}, e.span, frame)
            raise self.ctx.err("type-mismatch", f"`{e.op}` between a tensor and a number is not supported", e.span,
                               frame)
        if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool) \
                and e.op in _ARITH:  # `@` multiplies tensors only
            try:
                result = _ARITH[e.op](a, b)
            except ZeroDivisionError:
                raise self.ctx.err("bad-argument", "division by zero", e.right.span, frame) from None
            # checked after every operation, so no value ever grows large enough to make the next one slow
            return self.number(result, e.span, frame)
        if e.op == "*" and isinstance(a, Layer | Instance):
            raise self.ctx.err("bad-repeat", "repeating a layer with `*` works only as a pipeline stage", e.span, frame,
                               hint="write `x -> layer * 3`")
        raise self.ctx.err("type-mismatch", f"cannot apply `{e.op}` to {describe(a)} and {describe(b)}", e.span, frame)

    def _sized(self, v: Any, frame: Frame) -> Any:
        """``v``, or the symbolic size it names when it is a bare name that a tensor here has as an axis (`T`)."""
        return SymSize(v.name) if isinstance(v, Symbol) and self._has_dim(v.name, frame) else v

    def _size_arith(self, e: ast.BinOp, a: Any, b: Any, frame: Frame) -> SymSize:
        """`T - 1`, `T + k`, `T * 2`, `T // 2`: a symbolic size and a number, as the formula the shape rules
        write (constants folded, so `T + 2 - 2` is `T` and equal sizes compare equal as text)."""
        def number(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)
        if not all(number(v) or isinstance(v, SymSize) for v in (a, b)):
            other = b if isinstance(a, SymSize) else a
            raise self.ctx.err("type-mismatch", f"cannot apply `{e.op}` to {describe(a)} and {describe(b)}", e.span,
                               frame, hint="a symbolic size combines with integers; a tensor's size is read in "
                               "`forward`" if isinstance(other, Tensor) else "a symbolic size combines with integers")
        if isinstance(a, SymSize) and isinstance(b, SymSize):
            raise self.ctx.err("symbolic-dim", f"`{e.op}` between the symbolic sizes `{a.formula}` and `{b.formula}`: "
                               "a size formula combines one symbolic size with numbers", e.span, frame)
        size, k = (a, b) if isinstance(a, SymSize) else (b, a)
        assert isinstance(size, SymSize) and isinstance(k, int)
        f = size.formula
        if e.op == "+":
            return SymSize(offset(f, k))
        if e.op == "-" and size is a:
            return SymSize(offset(f, -k))
        if e.op == "*" and k >= 1:
            return SymSize(scaled(f, k))
        if e.op == "//" and size is a and k >= 1:
            return SymSize(floor_divided(f, k))
        text = [v.formula if isinstance(v, SymSize) else str(v) for v in (a, b)]
        raise self.ctx.err("symbolic-dim", f"`{text[0]} {e.op} {text[1]}` is no size formula: a symbolic "
                           "size takes `+ k`, `- k`, `* k` and `// k` with an integer k (positive for `*` and `//`)",
                           e.span, frame)

    def subscript(self, e: ast.Subscript, frame: Frame) -> Any:
        """The value of ``v[...]``: an item or slice of a list or of several results, or an ``index`` node on a
        tensor (its entries checked against the shape by the op's rule, each problem at its item)."""
        v = self.eval(e.value, frame)
        if isinstance(v, (list, tuple)):
            return self._pick(v, e, frame)
        t = self.tensor(v, e.value.span, frame, "an indexed value")
        entries: list[tuple] = []
        refs = [t]  # the indexed tensor, then tensors that lend a symbolic bound its size
        spans = {f"item{i}": item.span for i, item in enumerate(e.items)}
        for item in e.items:
            if isinstance(item, ast.EllipsisItem):
                if ("...",) in entries:
                    raise self.ctx.err("bad-index", "a subscript may hold `...` only once", item.span, frame)
                entries.append(("...",))
            elif isinstance(item, ast.Slice):
                step = None if item.step is None else self._subscript_int(item.step, frame, "a slice step")
                if step is not None and step < 1:
                    raise self.ctx.err("bad-index", f"a slice step must be positive, got {step}", item.step.span,
                                       frame, hint="PyTorch tensors have no negative steps; `flip` is not an op yet")
                entries.append(("slice", self._slice_bound(item.start, refs, frame),
                                self._slice_bound(item.stop, refs, frame), step))
            else:
                entries.append(("index", self._subscript_int(item, frame, "an index")))
        # lists, the plain data the IR's YAML form gives back, so that a graph survives a round trip unchanged
        node = self.nodes.node("index", refs, {"entries": [list(e) for e in entries]}, None, e.span, frame.container,
                               None, frame.hint, frame, attr_spans=spans)
        return Tensor(node.outputs[0], node.types[0])

    def _pick(self, v: list | tuple, e: ast.Subscript, frame: Frame) -> Any:
        """``ks[1]``, ``ks[1:]`` of a compile-time list, or one of several results: ``(x -> chunk(2))[0]``."""
        what = "list" if isinstance(v, list) else "tuple"
        if len(e.items) != 1 or isinstance(e.items[0], ast.EllipsisItem):
            raise self.ctx.err("bad-index", f"a {what} takes one index or slice", e.span, frame)
        (item,) = e.items
        if isinstance(item, ast.Slice):  # as Python slices a list (an empty slice of a list is an empty list)
            bounds = [None if b is None else self._subscript_int(b, frame, "a slice bound")
                      for b in (item.start, item.stop, item.step)]
            if bounds[2] == 0:
                raise self.ctx.err("bad-index", "a slice step cannot be zero", item.span, frame)
            part = v[slice(*bounds)]
            if isinstance(v, tuple) and not part:
                raise self.ctx.err("bad-index", f"the slice of {len(v)} results is empty", item.span, frame)
            return part[0] if isinstance(v, tuple) and len(part) == 1 else part
        i = self._subscript_int(item, frame, "an index")
        if not -len(v) <= i < len(v):
            raise self.ctx.err("bad-index", f"index {i} is out of range for a {what} of {len(v)} item(s)", item.span,
                               frame)
        return v[i]

    def _subscript_int(self, e: ast.Expr, frame: Frame, what: str, v: Any = None) -> int:
        """The integer ``e`` (its value ``v`` if already evaluated) in a subscript, as ``what``."""
        v = self.eval(e, frame) if v is None else v
        if isinstance(v, Symbol) and not self._has_dim(v.name, frame):
            raise self.unknown_name(v, frame)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.ctx.err("type-mismatch", f"{what} must be an integer, got {describe(v)}", e.span, frame,
                               hint="symbolic dimensions can end a slice (`x[:T]`), not index or step")
        return v

    def _slice_bound(self, e: ast.Expr | None, refs: list[Tensor], frame: Frame) -> Any:
        """A slice's start or stop: None, an integer, or a symbolic dimension read at run time from the first
        tensor with an axis of that size, the indexed one (``refs[0]``) or one bound in ``frame``."""
        if e is None:
            return None
        v = self.eval(e, frame)
        if isinstance(v, SymSize):  # `T - 1`: read T at run time, the formula applied to it
            (name,) = v.names
            formula = v.formula
        elif isinstance(v, Symbol):
            name = formula = v.name
        else:
            return self._subscript_int(e, frame, "a slice bound", v)
        candidates = refs[:1] + [t for t in frame.names.values() if isinstance(t, Tensor)]
        for t in candidates:
            if isinstance(t.type, TensorType) and name in t.type.shape:
                if t not in refs:
                    refs.append(t)
                return ["dim", formula, refs.index(t), t.type.shape.index(name)]
        raise self.ctx.err("unknown-name", f"unknown name `{name}`", e.span, frame,
                           hint="a slice bound is a number, or a symbolic dimension that a tensor here has as an axis")

    def _has_dim(self, name: str, frame: Frame) -> bool:
        """Whether a tensor bound in ``frame`` has an axis of the symbolic size ``name``."""
        return any(isinstance(t, Tensor) and isinstance(t.type, TensorType) and name in t.type.shape
                   for t in frame.names.values())

    def number(self, v: int | float, span: Span, frame: Frame | None) -> int | float:
        """``v``, if it is within the bounds every number has (see ``MAX_INT``); else error[bad-number]."""
        problem = number_problem(v)
        if problem is not None:
            raise self.ctx.err("bad-number", f"the result is out of range: {problem}", span, frame, hint=NUMBER_HINT)
        return v

    def builtin(self, name: str, e: ast.Call, frame: Frame) -> Any:
        """The value of a call of the builtin function ``name`` (``channels(x)``, ``max(a, b)``, ...)."""
        args = [self.eval(a.value, frame) for a in e.args]
        if any(a.name for a in e.args):
            raise self.ctx.err("bad-argument", f"`{name}` takes no keyword arguments", e.span, frame)

        def want(n: int) -> None:
            if len(args) != n:
                raise self.ctx.err("bad-argument", f"`{name}` takes {n} argument(s), got {len(args)}", e.span, frame)

        if name in ("channels", "rank", "size"):
            want(1 if name != "size" else 2)
            t = args[0]
            if not isinstance(t, Tensor) or not isinstance(t.type, TensorType):
                if isinstance(t, Symbol):
                    raise self.unknown_name(t, frame)
                raise self.ctx.err("type-mismatch", f"`{name}` needs a tensor, got {describe(t)}", e.args[0].span,
                                   frame)
            if name == "rank":
                return t.type.rank
            if name == "channels":
                if t.type.rank == 0:
                    raise self.ctx.err("type-mismatch", "a scalar has no channels", e.args[0].span, frame)
                return t.type.features
            i = args[1]
            if isinstance(i, bool) or not isinstance(i, int):
                raise self.ctx.err("bad-argument", f"`size`: the axis must be an integer, got {describe(i)}",
                                   e.args[1].span, frame)
            if not -t.type.rank <= i < t.type.rank:
                raise self.ctx.err("bad-argument", f"`size`: axis {i} out of range for {t.type}", e.args[1].span, frame)
            return t.type.shape[i]
        if name in ("min", "max"):
            if len(args) < 1 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                hint = f"to reduce a tensor over an axis, give it: `{name}(x, dim=1)`" \
                    if any(isinstance(a, Tensor) for a in args) else None
                raise self.ctx.err("type-mismatch", f"`{name}` takes numbers", e.span, frame, hint=hint)
            return min(args) if name == "min" else max(args)
        if name == "where":
            return self._where(args, e, frame)
        if name in ("int", "float"):
            want(1)
            if not isinstance(args[0], (int, float)) or isinstance(args[0], bool):
                raise self.ctx.err("type-mismatch", f"`{name}` takes a number, got {describe(args[0])}", e.span, frame)
            return self.number(int(args[0]) if name == "int" else float(args[0]), e.span, frame)
        want(1)
        if not isinstance(args[0], list):
            raise self.ctx.err("type-mismatch", f"`len` takes a list, got {describe(args[0])}", e.span, frame)
        return len(args[0])

    def _where(self, args: list[Any], e: ast.Call, frame: Frame) -> Tensor:
        """`where(condition, a, b)`: the op `where` on the tensors, the numbers among `a` and `b` kept as its
        arguments `input` and `other` (their places tell which is which)."""
        if len(args) != 3:
            raise self.ctx.err("bad-argument", f"`where` takes 3 arguments (condition, a, b), got {len(args)}",
                               e.span, frame)
        cond = self.tensor(args[0], e.args[0].span, frame, "the condition of `where`")
        tensors, numbers = [cond], {}
        for key, v, a in zip(("input", "other"), args[1:], e.args[1:]):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                numbers[key] = v
            else:
                tensors.append(self.tensor(v, a.span, frame, "each value of `where`"))
        return self.nodes.emit("where", tensors, numbers, e.span, frame)

    def tensor(self, v: Any, span: Span, frame: Frame, what: str) -> Tensor:
        """``v`` if it is one tensor; else the diagnostic for ``what`` ("an argument") not being one."""
        if isinstance(v, Tensor):
            return v
        if isinstance(v, Symbol):
            raise self.unknown_name(v, frame)
        if isinstance(v, tuple) and len(v) > 1 and isinstance(v[0], Tensor):
            raise self.ctx.err("tuple-mismatch", f"{what} must be one tensor, got {len(v)} values", span, frame,
                               hint="unpack it first: `a, b = ...`")
        if isinstance(v, (Layer, Instance)):
            raise self.ctx.err("type-mismatch", f"{what} must be a tensor, got {describe(v)}", span, frame,
                               hint="apply the layer to a tensor: `x -> layer` or `layer(x)`")
        raise self.ctx.err("type-mismatch", f"{what} must be a tensor, got {describe(v)}", span, frame)

    def unknown_name(self, sym: Symbol, frame: Frame) -> DlcError:
        """error[unknown-name] for the bare name ``sym``, with a suggestion."""
        return self.ctx.err("unknown-name", f"unknown name `{sym.name}`", sym.span, frame,
                            hint=suggest(sym.name, self.known_names(frame)))
