"""Compute cost of ops: multiply-accumulates (MACs) as polynomials over the symbolic sizes, without torch.

Each op's ``cost`` facet (:class:`~dlc.compiler.ops.registry.OpDef`) gives the MACs of one batch item from the
op's attributes and batch-less input and output types. The convention is that of
``torch.utils.flop_counter.FlopCounterMode``: only matrix products, convolutions and attention's score and value
products are counted (FLOPs = 2 x MACs); elementwise ops, normalisations, pooling and biases count nothing.

A symbolic size (``T``) stays a symbol: :class:`Poly` is a small polynomial with integer coefficients whose
variables are the sizes' names, or a whole size formula (``(H-1)//2+1``) where it is not a polynomial of names.
:meth:`Poly.evaluate` puts numbers in (``--set T=128``).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlc.compiler.types import Dim, TensorType, Type

Monomial = tuple[str, ...]  # the variables multiplied, sorted, a variable once per power


@dataclass(frozen=True)
class Poly:
    """A polynomial with integer coefficients: ``{(): 12, ("T",): 1536, ("T", "T"): 8}`` is 8*T^2 + 1,536*T + 12."""

    terms: Mapping[Monomial, int] = field(default_factory=dict)

    @staticmethod
    def of(value: int | Poly) -> Poly:
        """An integer as a constant polynomial (a polynomial as itself)."""
        if isinstance(value, Poly):
            return value
        return Poly({(): value} if value else {})

    @staticmethod
    def dim(d: Dim) -> Poly:
        """A dimension: an integer, a size's name, or a formula: a polynomial where it is one (``T+1``), else one
        factor (``(H-3)//2+1``)."""
        if isinstance(d, int):
            return Poly.of(d)
        try:
            return _poly(ast.parse(d, mode="eval").body)
        except (SyntaxError, ValueError, _NotPolynomial):  # the whole size is one factor: (H-3)//2+1
            return Poly({(d,): 1})

    @staticmethod
    def numel(shape: Iterable[Dim]) -> Poly:
        """The number of elements of a batch-less shape."""
        return prod(Poly.dim(d) for d in shape)

    @property
    def constant(self) -> int | None:
        """The value when it has no variable, else None."""
        if all(m == () for m in self.terms):
            return self.terms.get((), 0)
        return None

    def __add__(self, other: int | Poly) -> Poly:
        terms = dict(self.terms)
        for m, c in Poly.of(other).terms.items():
            terms[m] = terms.get(m, 0) + c
        return Poly({m: c for m, c in terms.items() if c})

    __radd__ = __add__

    def __mul__(self, other: int | Poly) -> Poly:
        terms: dict[Monomial, int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in Poly.of(other).terms.items():
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, 0) + c1 * c2
        return Poly({m: c for m, c in terms.items() if c})

    __rmul__ = __mul__

    def __neg__(self) -> Poly:
        return self * -1

    def __sub__(self, other: int | Poly) -> Poly:
        return self + -Poly.of(other)

    def evaluate(self, sizes: Mapping[str, int]) -> Poly:
        """The polynomial with the sizes named in ``sizes`` put in (a formula variable once all its names are)."""
        out = Poly()
        for m, c in self.terms.items():
            term = Poly.of(c)
            for var in m:
                value = evaluate_formula(var, sizes)
                term = term * (Poly({(var,): 1}) if value is None else Poly.of(value))
            out = out + term
        return out

    def variables(self) -> set[str]:
        """The names of the sizes it depends on."""
        return {name for m in self.terms for var in m for name in _names(var)}

    def text(self, commas: bool = True) -> str:
        """``1,536*T^2 + 12`` (``1536*T^2 + 12`` without ``commas``); a formula variable in parentheses."""
        if not self.terms:
            return "0"
        parts = []
        for m in sorted(self.terms, key=lambda m: (-len(m), m)):
            c = self.terms[m]
            powers = [f"{_atom(v)}^{m.count(v)}" if m.count(v) > 1 else _atom(v) for v in sorted(set(m))]
            coefficient = f"{abs(c):,}" if commas else str(abs(c))
            body = "*".join(([coefficient] if abs(c) != 1 or not m else []) + powers)
            parts.append(("- " if c < 0 else "+ ") + body)
        first = parts[0]
        return (first[2:] if first.startswith("+") else "-" + first[2:]) + "".join(" " + p for p in parts[1:])

    def __str__(self) -> str:
        return self.text()


def prod(factors: Iterable[int | Poly]) -> Poly:
    """The product of integers and polynomials."""
    out = Poly.of(1)
    for f in factors:
        out = out * f
    return out


class _NotPolynomial(Exception):
    """A formula with an operation other than +, - and * (``//``, ``ceil``)."""


def _poly(e: ast.expr) -> Poly:
    """A formula's polynomial over names and integers with +, - and *."""
    if isinstance(e, ast.Name):
        return Poly({(e.id,): 1})
    if isinstance(e, ast.Constant) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return Poly.of(e.value)
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
        return -_poly(e.operand)
    if isinstance(e, ast.BinOp) and isinstance(e.op, (ast.Add, ast.Sub, ast.Mult)):
        left, right = _poly(e.left), _poly(e.right)
        return left + right if isinstance(e.op, ast.Add) else left - right if isinstance(e.op, ast.Sub) \
            else left * right
    raise _NotPolynomial


_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b, ast.Div: lambda a, b: a / b, ast.Mod: lambda a, b: a % b}


def evaluate_formula(formula: str, sizes: Mapping[str, int]) -> int | None:
    """A formula's value with ``sizes``, or None while a name in it has none (or it is not a size formula)."""

    def ev(e: ast.expr) -> float:
        if isinstance(e, ast.Constant) and isinstance(e.value, (int, float)):
            return e.value
        if isinstance(e, ast.Name):
            if e.id not in sizes:
                raise KeyError(e.id)
            return sizes[e.id]
        if isinstance(e, ast.BinOp) and type(e.op) in _OPS:
            return _OPS[type(e.op)](ev(e.left), ev(e.right))
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
            return -ev(e.operand)
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "ceil" and len(e.args) == 1:
            return math.ceil(ev(e.args[0]))
        raise ValueError(formula)

    try:
        return int(ev(ast.parse(formula, mode="eval").body))
    except (KeyError, ValueError, SyntaxError, ZeroDivisionError):
        return None


def _names(formula: str) -> set[str]:
    try:
        tree = ast.parse(formula, mode="eval")
    except (SyntaxError, ValueError):
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id != "ceil"}


def _atom(var: str) -> str:
    return var if var.isidentifier() else f"({var})"


# ---- cost rules the op families share ---------------------------------------------------------------------------

Cost = Callable[[dict[str, Any], list[Type], tuple[Type, ...]], Poly | None]


def free(attrs: dict[str, Any], ins: list[Type], outs: tuple[Type, ...]) -> Poly:
    """No MACs: elementwise ops, reductions, normalisations, pooling, shape ops (FlopCounterMode counts none)."""
    return Poly()


def unknown(attrs: dict[str, Any], ins: list[Type], outs: tuple[Type, ...]) -> None:
    """Not known without running it (an external layer)."""
    return None


def shape(t: Type) -> tuple[Dim, ...]:
    """A tensor type's batch-less shape."""
    assert isinstance(t, TensorType), t
    return t.shape


def matmul_macs(batch: Iterable[Dim], m: Dim, k: Dim, n: Dim) -> Poly:
    """The MACs of a (batched) product of [m, k] and [k, n] matrices."""
    return Poly.numel(batch) * Poly.dim(m) * Poly.dim(k) * Poly.dim(n)
