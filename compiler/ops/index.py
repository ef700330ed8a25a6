"""Indexing and splitting: ``index`` (written ``x[0, 1:]``), ``split``, ``chunk`` and ``transpose``.

``index`` holds its subscript as ``entries``, one per item the spec wrote, each a list (plain data, as the IR's
YAML form holds it, so that a graph loads back equal):

- ``["index", i]``: an integer index, which drops the axis;
- ``["slice", start, stop, step]``: ``start`` and ``stop`` are an int, None, or a size computed at run time from
  a symbolic dimension, ``["dim", formula, input, axis]``: the formula (``T``, ``T-1``, ``T*2``) over the one
  symbolic dimension ``name`` that is the size of axis ``axis`` of an input, read there (``input`` 0 is the
  indexed tensor, 1... further inputs that only lend their sizes); ``step`` is an int or None;
- ``["..."]``: every axis not indexed otherwise.

The rules read entries by position only. A symbolic size is
assumed large enough for the bounds (as a convolution's window is assumed to fit), and the result's size is a
formula written as :mod:`~dlc.compiler.types` writes them (``T-1``, ``(T-1)//2+1``).
"""

from __future__ import annotations

import re
from typing import Any

from dlc.compiler.cost import free
from dlc.compiler.kinds import ArgumentError, Kind, Site
from dlc.compiler.ops.pytorch import CallSite, Filled, Form, Torch, assign, axis as torch_axis
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import symbolic_window, tensor, with_values
from dlc.compiler.types import Dim, TensorType

# A bound, normalised: a symbolic base (None for a plain number) plus a constant. `T+4` is ("T", 4), 3 is (None, 3).
Bound = tuple[str | None, int]
_TRAILING_CONSTANT = re.compile(r"^(.*[\w)])([+-]\d+)$")


class Subscripts(Kind):
    """The entries of an ``index`` node: made by the subscript syntax ``x[...]``, never passed as an argument."""

    name = "subscripts"

    def coerce(self, v: Any, site: Site) -> Any:
        raise ArgumentError(f"`{site.op.name}` is written as a subscript, not called", "write `x[0, 1:]`")


def _split_size(size: Dim) -> Bound:
    """``size`` as a base and a constant: ``T+4`` is ("T", 4); ``(H-1)//2+1`` is ("(H-1)//2", 1)."""
    if isinstance(size, int):
        return None, size
    m = _TRAILING_CONSTANT.match(size)
    if m and m.group(1).count("(") == m.group(1).count(")"):  # the sign is outside any parentheses
        return m.group(1), int(m.group(2))
    return size, 0


def _bound(v: Any, size: Bound, ins: list) -> Bound:
    """A slice bound as a base and a constant; a negative number counts from the end of the axis."""
    if isinstance(v, (list, tuple)):  # ("dim", formula, input, axis): a formula over a size read from an input
        return _split_size(v[1])
    return (None, v) if v >= 0 else (size[0], size[1] + v)


def _check_known(size: int, lo: Bound, hi: Bound, entry: Any, item: int) -> None:
    """error[bad-index] for a bound outside an axis of known ``size`` (a symbolic stop is not checked)."""
    if lo[0] is None and not 0 <= lo[1] < size:
        raise ShapeError(f"slice start {entry[1]} is out of range for an axis of size {size}", attr=f"item{item}",
                         code="bad-index")
    if hi[0] is None and not 0 <= hi[1] <= size:
        raise ShapeError(f"slice stop {entry[2]} is out of range for an axis of size {size}", attr=f"item{item}",
                         code="bad-index")


def _slice_length(size: Dim, entry: Any, ins: list, item: int) -> Dim:
    """The length of ``size[start:stop:step]``, a number or a formula; error[bad-index] when it is empty."""
    _, start, stop, step = entry
    step = 1 if step is None else step
    if step < 1:
        raise ShapeError(f"a slice step must be positive, got {step}", attr=f"item{item}", code="bad-index")
    if start is None and stop is None and step == 1:
        return size  # the whole axis, its formula unchanged
    axis = _split_size(size)
    lo = (None, 0) if start is None else _bound(start, axis, ins)
    hi = axis if stop is None else _bound(stop, axis, ins)
    if isinstance(size, int):
        _check_known(size, lo, hi, entry, item)
    else:  # on the axis's own symbolic base, a bound past its end is out of range for every size
        for which, b, past in (("start", lo, lo[1] >= axis[1]), ("stop", hi, hi[1] > axis[1])):
            if b[0] == axis[0] and past:
                raise ShapeError(f"slice {which} {entry[1 if which == 'start' else 2][1]} is past the end of an axis "
                                 f"of size {size}", attr=f"item{item}", code="bad-index")
    if lo[0] == hi[0]:  # both on the same base: a known length
        span = hi[1] - lo[1]
        if span <= 0:
            raise ShapeError(f"the slice {_slice_text(entry)} of an axis of size {size} is empty", attr=f"item{item}",
                             code="bad-index")
        return -(-span // step)
    if lo[0] is not None or hi[0] is None:
        raise ShapeError(f"the length of the slice {_slice_text(entry)} of an axis of size {size} depends on the "
                         f"symbolic size `{lo[0] or size}`", attr=f"item{item}", code="symbolic-dim",
                         hint="give the start as a number from the front, or the dimension a number")
    # the positions lo, lo+step, ... below hi: as many as windows of 1 + lo - hi's constant with this stride
    return symbolic_window(hi[0], 1 + lo[1] - hi[1], step, 0, 1)


def _expand(entries: Any, rank: int) -> list:
    """The entries with ``...`` (or the axes left at the end) as whole slices: one entry per axis."""
    axes = [i for i, e in enumerate(entries) if e[0] != "..."]
    used = len(axes)
    if used > rank:
        raise ShapeError(f"{used} subscript{'s' if used != 1 else ''} for a rank-{rank} tensor",
                         attr=f"item{axes[rank]}", code="bad-index",
                         hint="shapes are batch-less: the batch axis is never indexed")
    whole = ("slice", None, None, None)
    out: list = []
    for e in entries:
        out.extend([whole] * (rank - used) if e[0] == "..." else [e])
    return out + [whole] * (rank - len(out))


def _layout(x: TensorType, kept: list[int]) -> str:
    """The layout of the axes ``kept`` of ``x``, in this order: it follows the feature axis, as ``permute``."""
    if x.rank < 2 or x.feature_axis not in kept or len(kept) < 2:
        return "fl"
    moved = kept.index(x.feature_axis)
    return "cf" if moved == 0 else "tcf" if moved == 1 and len(kept) >= 3 else "fl"


def _index(attrs, ins):
    x = tensor(ins[0])
    entries = attrs["entries"]
    if sum(1 for e in entries if e[0] == "...") > 1:
        raise ShapeError("a subscript may hold `...` only once", code="bad-index")
    shape: list[Dim] = []
    kept: list[int] = []
    for ax, e in enumerate(_expand(entries, x.rank)):
        item = _item_of(entries, ax, x.rank)
        size = x.shape[ax]
        if e[0] == "index":
            if isinstance(size, int) and not -size <= e[1] < size:
                raise ShapeError(f"index {e[1]} is out of range for axis {ax} of size {size}", attr=f"item{item}",
                                 code="bad-index")
            continue
        shape.append(_slice_length(size, e, ins, item))
        kept.append(ax)
    return (TensorType(tuple(shape), x.dtype, _layout(x, kept)),)


def _item_of(entries: Any, ax: int, rank: int) -> int:
    """Which written entry indexes axis ``ax`` (the ``...`` for the axes it stands for)."""
    used = sum(1 for e in entries if e[0] != "...")
    pos = 0
    for i, e in enumerate(entries):
        width = rank - used if e[0] == "..." else 1
        if ax < pos + width:
            return i
        pos += width
    return len(entries)


def _bound_text(v: Any) -> str:
    """A bound in the template: its number, or for a symbolic one its formula over the size of an input's axis,
    spaced as ruff formats it (``{x}.shape[1] - 1``)."""
    if isinstance(v, (list, tuple)):
        size = f"{{{'x' if v[2] == 0 else f'x{v[2]}'}}}.shape[{torch_axis(v[3])}]"
        tokens = re.findall(r"\d+|\w+|//|\S", v[1])
        code = "".join(size if t[0].isalpha() or t[0] == "_" else f" {t} " if t in ("+", "-", "*", "//") else t
                       for t in tokens)
        return code
    return "" if v is None else str(v)


def _slice_code(e: Any) -> str:
    """A slice as code, spaced as ruff formats it: ``1:-1``, but ``: x.shape[2]`` around a bound that is code."""
    parts = [_bound_text(v) for v in e[1:3]] + ([] if e[3] is None else [str(e[3])])
    if not any(isinstance(v, (list, tuple)) for v in e[1:3]):
        return ":".join(parts)
    return " : ".join(parts).replace(" :  : ", " :: ").strip().replace(":  :", "::")


def _template(a) -> str:
    """``{x}[:, 0, 1:]``: the batch axis first (unless ``...`` starts), numbers written in (a block's instances
    with other numbers get classes of their own: ruff spaces a slice by what its bounds are)."""
    entries = a["entries"]
    items = [] if entries and entries[0][0] == "..." else [":"]
    for e in entries:
        items.append("..." if e[0] == "..." else str(e[1]) if e[0] == "index" else _slice_code(e))
    return "{x}[" + ", ".join(items) + "]"


def _slice_text(e: Any) -> str:
    """An entry as the spec writes it: ``1:-1``, ``::2``, ``:T``."""
    if e[0] == "...":
        return "..."
    if e[0] == "index":
        return str(e[1])

    def bound(v: Any) -> str:
        return "" if v is None else v[1] if isinstance(v, (list, tuple)) else str(v)
    return f"{bound(e[1])}:{bound(e[2])}" + ("" if e[3] is None else f":{e[3]}")


register(OpDef(
    "index", (A("entries", Subscripts()),), _index, inputs=("x",),
    torch=Torch(function=Form(_template)),  # only an expression in `forward`, drawn as one: never labelled
    family="shape", draw="merge", label=lambda a: "[" + ", ".join(_slice_text(e) for e in a["entries"]) + "]",
    doc="Indexing and slicing, written `x[0, 1:, ..., ::2]`; axis 0 is the first batch-less axis."))


# ---- split, chunk, transpose -----------------------------------------------------------------


def _known_axis(x: TensorType, dim: int | None, op: str) -> tuple[int, int]:
    """The axis an op splits (the feature axis unless ``dim`` is given) and its size, which must be known."""
    ax = x.feature_axis if dim is None else dim % x.rank  # the axis kind has checked dim against the rank
    size = x.shape[ax]
    if isinstance(size, str):
        raise ShapeError(f"`{op}` needs the size of axis {ax}, but it is the symbolic dimension `{size}`",
                         attr="dim", code="symbolic-dim", hint=f"give `{size}` a number in the input's shape")
    return ax, size


def _pieces(x: TensorType, ax: int, sizes: list[int]) -> tuple[TensorType, ...]:
    return tuple(x.with_shape(x.shape[:ax] + (n,) + x.shape[ax + 1:]) for n in sizes)


def _split(attrs, ins):
    x = tensor(ins[0])
    if x.rank == 0:
        raise ShapeError("`split` needs a tensor with at least one axis")
    ax, size = _known_axis(x, attrs["dim"], "split")
    sizes = attrs["sizes"]
    if isinstance(sizes, int):  # pieces of this size, the last one smaller: as torch.split
        sizes = [sizes] * (size // sizes) + ([size % sizes] if size % sizes else [])
    elif sum(sizes) != size:
        raise ShapeError(f"`split`: the sizes {list(sizes)} add up to {sum(sizes)}, but axis {ax} has size {size}",
                         attr="sizes", hint="the sizes must add up to the size of the axis")
    return _pieces(x, ax, list(sizes))


def _chunk(attrs, ins):
    x = tensor(ins[0])
    if x.rank == 0:
        raise ShapeError("`chunk` needs a tensor with at least one axis")
    ax, size = _known_axis(x, attrs["dim"], "chunk")
    # as torch.chunk: pieces of ceil(size / chunks), the last smaller; fewer than `chunks` where they run out
    each = -(-size // attrs["chunks"])
    return _pieces(x, ax, [each] * (size // each) + ([size % each] if size % each else []))


def _split_dim(a, ins, outs) -> dict:
    x = ins[0]
    return {"dim": x.feature_axis + 1 if a["dim"] is None else torch_axis(a["dim"])}


def _split_args(a, ins, outs) -> dict:
    return {"split_size_or_sections": a["sizes"], **_split_dim(a, ins, outs)}


def _chunk_args(a, ins, outs) -> dict:
    return {"chunks": a["chunks"], **_split_dim(a, ins, outs)}


def _call_all(site: CallSite) -> list[Filled]:
    """A labelled split or chunk: its module returns every piece, as a tuple even when there is one."""
    return [assign(site.outs, site.call(), unpack=True)]


register(OpDef(
    "split", (A("sizes", "int2", min=1), A("dim", "axis", None)), _split,
    # with one size the count depends on the axis (the shape rule gives the pieces); at least two is all attrs say
    outputs=lambda a: len(a["sizes"]) if isinstance(a["sizes"], list) else 2,
    torch=Torch(module=Form("Apply(torch.split, split_size_or_sections={split_size_or_sections}, dim={dim})",
                            _split_args),
                function=Form("torch.split({x}, {split_size_or_sections}, dim={dim})", _split_args), call=_call_all,
                tuple_result=True),
    family="shape", label=with_values("split"),
    doc="Split an axis into pieces of the given sizes (a list adding up to the size, or one size for equal pieces "
        "and a smaller last one); a tuple of tensors."))
register(OpDef(
    "chunk", (A("chunks", "int", min=1), A("dim", "axis", None)), _chunk, outputs=lambda a: a["chunks"],
    torch=Torch(module=Form("Apply(torch.chunk, chunks={chunks}, dim={dim})", _chunk_args),
                function=Form("torch.chunk({x}, {chunks}, dim={dim})", _chunk_args), call=_call_all,
                tuple_result=True),
    family="shape", label=with_values("chunk"),
    doc="Split an axis into pieces of ceil(size / chunks) (the last smaller, possibly fewer pieces, as "
        "torch.chunk); a tuple."))


def _transpose(attrs, ins):
    x = tensor(ins[0])
    a, b = attrs["dim0"] % x.rank, attrs["dim1"] % x.rank  # the axis kind has checked both against the rank
    order = list(range(x.rank))
    order[a], order[b] = b, a
    return (x.with_shape(tuple(x.shape[i] for i in order), _layout(x, order)),)


def _dims(a, ins, outs) -> dict:
    return {"dim0": torch_axis(a["dim0"]), "dim1": torch_axis(a["dim1"])}


register(OpDef(
    "transpose", (A("dim0", "axis"), A("dim1", "axis")), _transpose,
    torch=Torch(module=Form("Apply(torch.transpose, dim0={dim0}, dim1={dim1})", _dims),
                function=Form("{x}.transpose({dim0}, {dim1})", _dims)),
    family="shape", label=with_values("transpose"), doc="Swap two batch-less axes: `transpose(0, 1)`."))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("index", "split", "chunk", "transpose"), free))
