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
from dlc.compiler.ops.registry import all_ops, get
from dlc.compiler.types import TensorType
from dlc.compiler.values import Instance, Layer, Symbol, Tensor, describe
from dlc.diagnostics import DlcError, Span, suggest
from dlc.grammar import ast
from dlc.grammar.build import NUMBER_HINT, number_problem

BUILTINS = ("channels", "size", "rank", "min", "max", "int", "float", "len")
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
            if not isinstance(test, bool):
                raise self.ctx.err("type-mismatch",
                                   f"the condition of `if` must be true or false, got {describe(test)}",
                                   e.test.span, frame)
            return self.eval(e.then if test else e.orelse, frame)
        if isinstance(e, ast.BoolOp):
            left = self._bool(e.left, frame)
            if e.op == "and" and not left:
                return False
            if e.op == "or" and left:
                return True
            return self._bool(e.right, frame)
        if isinstance(e, ast.Not):
            return not self._bool(e.operand, frame)
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

    def lookup(self, name: str, span: Span, frame: Frame, callee: bool = False) -> Any:
        """What ``name`` means in ``frame``: a value, a block or op as a layer, a builtin, or a Symbol (a bare
        name, which an argument's kind may accept); ``callee``: the name is called or piped into."""
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
        op = get(name)
        if op is not None:
            return Layer(op, None, {}, [], {}, [], span)
        if name in BUILTINS:
            return ("builtin", name)
        return Symbol(name, span)

    def known_names(self, frame: Frame) -> list[str]:
        """Every name visible in ``frame``, for "did you mean" hints."""
        return list(frame.names) + list(self.ctx.program.defs) + list(all_ops()) + list(BUILTINS)

    def _compare(self, e: ast.Compare, frame: Frame) -> bool:
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        for v, sub in ((a, e.left), (b, e.right)):
            if isinstance(v, (Tensor, Layer, Instance, tuple)):
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

    def _binop(self, e: ast.BinOp, frame: Frame) -> Any:
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        for v, sub in ((a, e.left), (b, e.right)):
            if isinstance(v, Symbol):
                raise self.unknown_name(v, frame)
        num = (int, float)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            hint_save = frame.hint
            if isinstance(a, Tensor) and isinstance(b, Tensor):
                op = {"+": "add", "-": "sub", "*": "mul", "/": "div"}.get(e.op)
                if op is None:
                    raise self.ctx.err("type-mismatch", f"`{e.op}` is not defined between tensors", e.span, frame,
                                       hint="tensors combine with +, -, * and /")
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
        if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
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
                raise self.ctx.err("type-mismatch", f"`{name}` takes numbers", e.span, frame)
            return min(args) if name == "min" else max(args)
        if name in ("int", "float"):
            want(1)
            if not isinstance(args[0], (int, float)) or isinstance(args[0], bool):
                raise self.ctx.err("type-mismatch", f"`{name}` takes a number, got {describe(args[0])}", e.span, frame)
            return self.number(int(args[0]) if name == "int" else float(args[0]), e.span, frame)
        want(1)
        if not isinstance(args[0], list):
            raise self.ctx.err("type-mismatch", f"`len` takes a list, got {describe(args[0])}", e.span, frame)
        return len(args[0])

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
