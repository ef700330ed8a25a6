"""Turn a Lark parse tree into the frozen AST of :mod:`dlc.grammar.ast`."""

from __future__ import annotations

import ast as pyast
import math
import warnings
from dataclasses import dataclass

from lark import Token, Transformer, v_args
from lark.tree import Meta

from dlc.diagnostics import DlcError, Span
from dlc.grammar import ast


# Every integer a spec writes or computes fits a signed 64-bit integer (sizes become torch int64s) and every other
# number is a finite 64-bit float; the elaborator holds computed values and --set values to the same bounds.
MAX_INT = 2**63 - 1
_MAX_INT_DIGITS = len(str(MAX_INT))


def number_problem(value: int | float) -> str | None:
    """Why the number ``value`` is out of range (see :data:`MAX_INT`), or None if it is fine."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan is not a number" if math.isnan(value) else f"{value} is not a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
        return f"{describe_int(value)} does not fit in 64 bits"
    return None


def describe_int(value: int) -> str:
    """An integer for a message; a huge one by its size (printing it whole is slow, or refused by Python)."""
    if -10**24 < value < 10**24:
        return f"the integer {value}"
    return f"an integer of {_digits(abs(value)):,} digits"


def _digits(n: int) -> int:
    """How many decimal digits the positive ``n`` has, without str(n) (slow, and refused past 4,300 digits)."""
    # n >= 2**(bits-1) gives a lower bound that is exact or one short; the float error shows only for numbers
    # of about 10**15 digits, far past anything the limits let through
    digits = int((n.bit_length() - 1) * math.log10(2)) + 1
    return digits + 1 if n >= 10**digits else digits


NUMBER_HINT = "integers must fit in 64 bits (at most 9223372036854775807), other numbers in a 64-bit float"


_KEYWORDS = frozenset({"if", "then", "else", "and", "or", "not", "true", "false", "input", "output", "return",
                       "block", "network", "import", "param", "extern"})


# What `output_when` leaves for `output_stmt`: the output is computed in training mode only.
_TRAINING = object()


class _Builder(Transformer):
    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    # -- helpers
    def _span(self, meta: Meta) -> Span:
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    # -- top level
    @v_args(meta=True)
    def start(self, meta: Meta, items: list) -> ast.Module:
        imports = tuple(i for i in items if isinstance(i, ast.Import))
        defs = tuple(i for i in items if isinstance(i, (ast.BlockDef, ast.ExternDef)))
        return ast.Module(self.file, imports, defs)

    @v_args(meta=True)
    def import_stmt(self, meta: Meta, children: list) -> ast.Import:
        return ast.Import(_unquote(children[0], self._tok(children[0])), self._span(meta))

    def _def(self, meta: Meta, children: list, is_network: bool) -> ast.BlockDef:
        name = children[0]
        rest = children[1:]
        params: tuple[ast.Param, ...] = ()
        if rest and isinstance(rest[0], tuple):
            params, rest = rest[0], rest[1:]
        return ast.BlockDef(str(name), params, tuple(rest), is_network, self._span(meta), self._tok(name))

    @v_args(meta=True)
    def extern_def(self, meta: Meta, children: list) -> ast.ExternDef:
        name, rest = children[0], [c for c in children[1:] if c is not None]
        params: tuple[ast.Param, ...] = ()
        if rest and isinstance(rest[0], tuple):
            params, rest = rest[0], rest[1:]
        path_tok, entries = rest[0], tuple(rest[1]) if len(rest) > 1 else ()
        span = self._tok(path_tok)
        return ast.ExternDef(str(name), params, _unquote(path_tok, span), span, entries, self._span(meta),
                             self._tok(name))

    def extern_body(self, children: list) -> list:
        return children

    @v_args(meta=True)
    def extern_entry(self, meta: Meta, children: list) -> ast.ExternEntry:
        return ast.ExternEntry(str(children[0]), children[1], self._span(meta))

    @v_args(meta=True)
    def block_def(self, meta: Meta, children: list) -> ast.BlockDef:
        return self._def(meta, children, False)

    @v_args(meta=True)
    def network_def(self, meta: Meta, children: list) -> ast.BlockDef:
        return self._def(meta, children, True)

    def param_list(self, children: list) -> tuple:
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def param(self, meta: Meta, children: list) -> ast.Param:
        default = children[2] if len(children) > 2 else None
        return ast.Param(str(children[0]), children[1], default, self._span(meta))

    def param_type(self, children: list) -> str:
        return " | ".join(children)

    def type_atom(self, children: list) -> str:
        return str(children[0]) if len(children) == 1 else f"{children[0]}[{children[1]}]"

    # -- statements
    @v_args(meta=True)
    def input_stmt(self, meta: Meta, children: list) -> ast.Input:
        name = str(children[0])
        shape = children[1] if len(children) > 1 else None
        dtype = str(children[2]) if len(children) > 2 else None
        return ast.Input(name, shape, dtype, self._span(meta))

    @v_args(meta=True)
    def param_stmt(self, meta: Meta, children: list) -> ast.ParamDecl:
        rest = children[2:]
        dtype = str(rest.pop(0)) if rest and isinstance(rest[0], Token) else None
        return ast.ParamDecl(str(children[0]), children[1], dtype, rest[0] if rest else None, self._span(meta))

    def shape(self, children: list) -> tuple:
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def output_stmt(self, meta: Meta, children: list) -> ast.Output:
        training = bool(children) and children[-1] is _TRAINING
        if training:
            children = children[:-1]
        value = children[1] if len(children) > 1 else None
        return ast.Output(children[0], value, self._span(meta), training)

    def output_when(self, children: list) -> object:
        if str(children[0]) != "training":
            raise DlcError("syntax", f"an output's condition is `if training`, not `if {children[0]}`",
                           self._tok(children[0]),
                           hint="only outputs of training mode are declared this way; for a compile-time choice "
                                "write `output y = if cond then a else b`")
        return _TRAINING

    @v_args(meta=True)
    def return_stmt(self, meta: Meta, children: list) -> ast.Return:
        return ast.Return(tuple(children), self._span(meta))

    @v_args(meta=True)
    def assign_stmt(self, meta: Meta, children: list) -> ast.Assign:
        return ast.Assign(children[0], children[1], self._span(meta))

    def targets(self, children: list) -> tuple[str, ...]:
        return tuple(str(c) for c in children)

    # -- expressions
    @v_args(meta=True)
    def cond(self, meta: Meta, c: list) -> ast.Cond:
        return ast.Cond(c[0], c[1], c[2], self._span(meta))

    @v_args(meta=True)
    def pipe(self, meta: Meta, c: list) -> ast.Pipe:
        return ast.Pipe(c[0], tuple(c[1:]), self._span(meta))

    @v_args(meta=True)
    def or_(self, meta: Meta, c: list) -> ast.BoolOp:
        return ast.BoolOp("or", c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def and_(self, meta: Meta, c: list) -> ast.BoolOp:
        return ast.BoolOp("and", c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def not_(self, meta: Meta, c: list) -> ast.Not:
        return ast.Not(c[0], self._span(meta))

    @v_args(meta=True)
    def compare(self, meta: Meta, c: list) -> ast.Compare:
        return ast.Compare(str(c[1]), c[0], c[2], self._span(meta))

    @v_args(meta=True)
    def binop(self, meta: Meta, c: list) -> ast.BinOp:
        return ast.BinOp(str(c[1]), c[0], c[2], self._span(meta))

    @v_args(meta=True)
    def neg(self, meta: Meta, c: list) -> ast.Neg:
        return ast.Neg(c[0], self._span(meta))

    @v_args(meta=True)
    def call(self, meta: Meta, c: list) -> ast.Call:
        return ast.Call(c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def subscript(self, meta: Meta, c: list) -> ast.Subscript:
        return ast.Subscript(c[0], c[1], self._span(meta))

    def subscripts(self, c: list) -> tuple:
        return tuple(c)

    @v_args(meta=True)
    def ellipsis(self, meta: Meta, c: list) -> ast.EllipsisItem:
        return ast.EllipsisItem(self._span(meta))

    @v_args(meta=True)
    def slice(self, meta: Meta, c: list) -> ast.Slice:
        return ast.Slice(c[0], c[1], c[2], self._span(meta))

    @v_args(meta=True)
    def number(self, meta: Meta, c: list) -> ast.Number:
        text = str(c[0])
        # an integer longer than MAX_INT is refused before int() reads it: Python refuses 4,301 digits and more
        value: int | float = (MAX_INT + 1 if len(text.lstrip("0")) > _MAX_INT_DIGITS else int(text)) \
            if text.isdigit() else float(text)
        if number_problem(value) is not None:
            shown = text if len(text) <= 24 else f"{text[:20]}..."
            raise DlcError("bad-number", f"the number {shown} is too large", self._span(meta), hint=NUMBER_HINT)
        return ast.Number(value, self._span(meta))

    @v_args(meta=True)
    def string(self, meta: Meta, c: list) -> ast.String:
        return ast.String(_unquote(c[0], self._tok(c[0])), self._span(meta))

    @v_args(meta=True)
    def true(self, meta: Meta, c: list) -> ast.Bool:
        return ast.Bool(True, self._span(meta))

    @v_args(meta=True)
    def false(self, meta: Meta, c: list) -> ast.Bool:
        return ast.Bool(False, self._span(meta))

    @v_args(meta=True)
    def name(self, meta: Meta, c: list) -> ast.Name:
        return ast.Name(str(c[0]), self._span(meta))

    @v_args(meta=True)
    def list(self, meta: Meta, c: list) -> ast.ListExpr:
        return ast.ListExpr(tuple(x for x in c if x is not None), self._span(meta))

    @v_args(meta=True)
    def tuple(self, meta: Meta, c: list) -> ast.TupleExpr:
        return ast.TupleExpr(tuple(x for x in c if x is not None), self._span(meta))

    def args(self, c: list) -> tuple[ast.Arg, ...]:
        out = []
        for a in c:
            if a is None:
                continue
            out.append(a if isinstance(a, ast.Arg) else ast.Arg(None, a, a.span))
        return tuple(out)

    @v_args(meta=True)
    def kwarg(self, meta: Meta, c: list) -> ast.Arg:
        return ast.Arg(str(c[0]), c[1], self._span(meta))

    # -- stages
    @v_args(meta=True)
    def stage(self, meta: Meta, c: list) -> ast.Stage:
        label = label_span = checkpoint = None
        repeat = None
        if isinstance(c[0], Token):
            label, label_span = str(c[0]), self._tok(c[0])
            c = c[1:]
        if isinstance(c[0], _Checkpoint):
            checkpoint = c[0].span
            c = c[1:]
        core = c[0]
        if len(c) > 1:
            repeat = c[1]
        return ast.Stage(label, label_span, core, repeat, self._span(meta), checkpoint)

    def label(self, c: list) -> Token:
        return c[0]

    @v_args(meta=True)
    def checkpoint(self, meta: Meta, c: list) -> _Checkpoint:
        return _Checkpoint(self._span(meta))

    def repeat(self, c: list):
        return c[0]

    def _stage_name(self, tok: Token) -> str:
        # the lexer reads any word as a name where a stage may start; keywords are not stages
        if str(tok) in _KEYWORDS:
            hint = ("bind the conditional layer first: `l = if c then relu else gelu`, then `-> l`"
                    if str(tok) == "if" else None)
            raise DlcError("syntax", f"`{tok}` is a keyword and cannot be a pipeline stage; expected a layer, "
                           "a block or a named instance", self._tok(tok), hint=hint)
        return str(tok)

    @v_args(meta=True)
    def stage_name(self, meta: Meta, c: list) -> ast.StageName:
        return ast.StageName(self._stage_name(c[0]), self._span(meta))

    @v_args(meta=True)
    def stage_call(self, meta: Meta, c: list) -> ast.StageCall:
        return ast.StageCall(self._stage_name(c[0]), self._tok(c[0]), c[1], self._span(meta))

    @v_args(meta=True)
    def stage_group(self, meta: Meta, c: list) -> ast.StageGroup:
        return ast.StageGroup(tuple(c), self._span(meta))


@dataclass(frozen=True)
class _Checkpoint:
    """The `checkpoint` modifier of a stage, until :meth:`_Builder.stage` records its span."""

    span: Span


def _unquote(tok: Token, span: Span) -> str:
    try:
        with warnings.catch_warnings():  # "invalid escape sequence" warnings: keep the backslash, quietly
            warnings.simplefilter("ignore")
            value = pyast.literal_eval(str(tok))
    except (ValueError, SyntaxError) as exc:  # a malformed escape inside the string
        reason = getattr(exc, "msg", None) or str(exc)
        reason = reason.split(": ", 1)[-1].split(" (<unknown>", 1)[0]
        raise DlcError("syntax", f"bad string literal {tok}: {reason}", span,
                       hint="escapes are Python's: \\n, \\t, \\\\, \\\", \\xNN, \\uNNNN") from None
    if not isinstance(value, str):
        raise DlcError("syntax", f"bad string literal {tok}", span)
    return value


def build(tree, file: str) -> ast.Module:
    """Convert a parse tree of ``file`` into an :class:`ast.Module`."""
    return _Builder(file).transform(tree)
