"""Helpers shared by shape rules."""

from __future__ import annotations

import math

from dlc.compiler.ir import format_value
from dlc.compiler.ops.registry import ShapeError
from dlc.compiler.types import Dim, StateType, TensorType, Type, shape_str


def tensor(t: Type, what: str = "input") -> TensorType:
    if not isinstance(t, TensorType):
        raise ShapeError(f"expected a tensor as {what}, got a recurrent {t}", code="type-mismatch")
    return t


def want_rank(t: TensorType, ranks: tuple[int, ...], op: str, meaning: str) -> None:
    if t.rank not in ranks:
        got = shape_str(t.shape)
        raise ShapeError(
            f"`{op}` expects {meaning} (batch not counted), got a rank-{t.rank} input {got}",
            hint="shapes never include the batch dimension",
        )


def want_float(t: TensorType, op: str) -> None:
    if t.dtype not in ("float32", "float64", "float16", "bfloat16"):
        raise ShapeError(f"`{op}` needs a floating-point input, got {t.dtype}", code="type-mismatch",
                         hint="integer inputs (token ids) go through `embedding` first")


def known(d: Dim, op: str, what: str) -> int:
    if isinstance(d, str):
        raise ShapeError(
            f"`{op}` needs a known {what}, but it is the symbolic dimension `{d}`",
            code="symbolic-dim",
            hint=f"give `{d}` a number in the input's shape",
        )
    return d


def pair(v, n: int = 2, op: str | None = None, attr: str | None = None) -> tuple[int, ...]:
    """An int or a list of ``n`` ints (one per spatial axis) as an ``n``-tuple."""
    if isinstance(v, (list, tuple)):
        if len(v) != n and op is not None:
            raise ShapeError(f"`{op}`: `{attr}` needs {n} value{'s' if n > 1 else ''} here (one per spatial axis), "
                             f"got {len(v)}", attr=attr, code="bad-argument",
                             hint=f"give {n} value{'s' if n > 1 else ''}, or one integer for every axis")
        return tuple(v)
    return (v,) * n


def conv_out(size: Dim, k: int, s: int, p: int, d: int, ceil: bool = False) -> Dim:
    """Output length of a convolution or pooling window (PyTorch's formula)."""
    if isinstance(size, str):
        return symbolic_window(size, k, s, p, d, ceil)
    span = size + 2 * p - d * (k - 1) - 1
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + p:  # the last window must start inside the input or left padding
            out -= 1
    else:
        out = span // s + 1
    if out < 1:
        raise ShapeError(f"the window (kernel {k}, stride {s}, padding {p}) does not fit an input of size {size}")
    return out


_FLOAT_RANK = {"float16": 1, "bfloat16": 1, "float32": 2, "float64": 3}


def promote(dtypes: list[str]) -> str:
    """The dtype of an elementwise merge or concat of tensors, as PyTorch promotes it."""
    floats = [d for d in dtypes if d in _FLOAT_RANK]
    if not floats:
        return "int64" if len(set(dtypes)) > 1 else dtypes[0]
    if len(set(floats)) == 1:
        return floats[0]
    best = max(floats, key=_FLOAT_RANK.__getitem__)
    return "float32" if _FLOAT_RANK[best] == 1 else best  # float16 with bfloat16 gives float32


def _top_level(size: str) -> list[int]:
    """Positions of the + and - signs of ``size`` outside parentheses."""
    depth, signs = 0, []
    for i, ch in enumerate(size):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch in "+-" and i > 0:
            signs.append(i)
    return signs


def _term(size: str) -> str:
    """``size`` as an operand of * or //."""
    return f"({size})" if _top_level(size) else size


def _offset(size: str, off: int) -> str:
    """``size + off``, folding a trailing constant: ``(H-2)//2+1`` plus -1 is ``(H-2)//2``."""
    signs = _top_level(size)
    if signs and size[signs[-1] + 1:].isdigit():
        off += int(size[signs[-1]:])
        size = size[:signs[-1]]
    return size if off == 0 else f"{size}{off:+d}"


def offset(size: str, off: int) -> str:
    """``size + off`` for a symbolic size, as a formula (a trailing constant folds: ``T+4`` plus -4 is ``T``)."""
    return _offset(size, off)


def scaled(size: str, factor: float) -> str:
    """``size * factor`` for a symbolic size."""
    f = int(factor) if float(factor).is_integer() else factor
    return size if f == 1 else f"{_term(size)}*{f}"


def floor_divided(size: str, k: int) -> str:
    """``size // k`` for a symbolic size."""
    return size if k == 1 else f"{_term(size)}//{k}"


def symbolic_window(size: str, k: int, s: int, p: int, d: int, ceil: bool = False) -> str:
    """The output length of a window over a symbolic size, as a formula.

    Sizes are compared as text, so two branches agree only when they come from the same formula:
    a mismatch is reported at compile time rather than at run time for some input sizes.
    """
    off = 2 * p - d * (k - 1) - 1
    if s == 1:
        return _offset(size, off + 1)
    if ceil:
        return f"ceil(({_offset(size, off)})/{s})+1"
    return f"{_term(_offset(size, off))}//{s}+1"


def symbolic_transpose(size: str, k: int, s: int, p: int, d: int, out_pad: int) -> str:
    """The output length of a transposed convolution over a symbolic size."""
    return _offset(scaled(_offset(size, -1), s), -2 * p + d * (k - 1) + out_pad + 1)


def broadcast(a: tuple[Dim, ...], b: tuple[Dim, ...], op: str) -> tuple[Dim, ...]:
    """NumPy broadcasting of two batch-less shapes."""
    out: list[Dim] = []
    for i in range(max(len(a), len(b))):
        x = a[-1 - i] if i < len(a) else 1
        y = b[-1 - i] if i < len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeError(
                f"`{op}` needs matching shapes, got {shape_str(a)} and {shape_str(b)}",
                hint="shapes must be equal or broadcastable (batch not counted)",
            )
    return tuple(reversed(out))


def numel(shape: tuple[Dim, ...], op: str) -> int:
    for d in shape:
        known(d, op, "size for every dimension")
    return math.prod(shape)  # type: ignore[arg-type]


def axis(dim: int, rank: int, op: str) -> int:
    """Normalise a batch-less axis (negative counts from the end)."""
    if not -rank <= dim < rank:
        raise ShapeError(f"`{op}`: axis {dim} is out of range for a rank-{rank} tensor", attr="dim",
                         code="bad-argument")
    return dim % rank


def state_matches(t: Type, expected: StateType, op: str) -> None:
    if not isinstance(t, StateType):
        raise ShapeError(f"`{op}`: initial_state must be the state of a recurrent layer, got a tensor {t}",
                         attr="initial_state", code="type-mismatch")
    if t != expected:
        raise ShapeError(f"`{op}`: initial_state is {t}, but this layer needs {expected}", attr="initial_state")


def out(t: TensorType, shape: tuple, layout: str | None = None) -> tuple[Type, ...]:
    """The one output of a rule: ``t`` with another shape (and layout)."""
    return (t.with_shape(shape, layout),)


def same_float(name: str):
    """The rule of an op keeping its float input's type."""
    def rule(attrs, ins):
        x = tensor(ins[0])
        want_float(x, name)
        return (x,)
    return rule


def with_values(name: str):
    """A diagram label: the op's name and its attribute values (``scale 0.5``)."""
    def label(attrs) -> str:
        return f"{name} " + ", ".join(format_value(v) for v in attrs.values())
    return label
