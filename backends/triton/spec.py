"""What a fusion group's kernel computes: :func:`kernel_for` turns a group of the IR into a :class:`KernelSpec`
(its inputs, the chain of ops, each a :class:`Step`, and the arguments the generated module passes it).
:mod:`dlc.backends.triton.codegen` writes its source. Kernels are shape-generic within a rank, so groups that
compute the same chain on the same kinds of inputs (every BasicBlock's conv-bn-relu) share one kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlc.backends.triton.ops import AFFINE, BIAS, INTERNAL
from dlc.compiler.fusion import FusionGroup
from dlc.compiler.ir import Graph, Node
from dlc.compiler.ops.kernel import Anchor, ChannelAffine, Elementwise, Row, reduces
from dlc.compiler.ops.pytorch import safe_text
from dlc.compiler.ops.registry import op_of
from dlc.compiler.types import TensorType


@dataclass(frozen=True)
class Step:
    """One op of a chain: ``out = op(args)``; ``note`` says which IR node it comes from."""

    op: str
    attrs: tuple[tuple[str, Any], ...]
    args: tuple[str, ...]
    out: str
    note: str = field(compare=False, default="")


@dataclass(frozen=True)
class ValueArg:
    """A kernel input the generated forward passes as it is: the IR value ``value``."""

    value: int


@dataclass(frozen=True)
class BiasArg:
    """The anchor's (node ``node``) bias, viewed to broadcast over its output."""

    node: int


@dataclass(frozen=True)
class AffineArg:
    """A batchnorm's (node ``node``) scale and shift, from the statistics of the value ``value``: two kernel
    inputs."""

    value: int
    node: int


@dataclass(frozen=True)
class RowWeightsArg:
    """A row op's (node ``node``, a layernorm) weight and bias: two kernel inputs."""

    node: int


@dataclass(frozen=True)
class WeightArg:
    """An elementwise op's (node ``node``, a prelu) module weight, viewed to ``shape`` (batch-less) to broadcast
    over its input (see :class:`~dlc.compiler.ops.kernel.Elementwise`)."""

    node: int
    shape: tuple[int, ...]


# How the generated forward passes one kernel input (or two: an affine map's and a row op's second input).
CallArg = ValueArg | BiasArg | AffineArg | RowWeightsArg | WeightArg


@dataclass
class KernelSpec:
    kind: str  # elementwise | linear | row
    rank: int  # rank of the output with the batch axis (of a reduction's input, for a reducing row kernel)
    full: tuple[bool, ...]  # per kernel input: has the output's shape (a reduction's input's)
    params: tuple[bool, ...]  # per kernel input: made from parameters (does not set the result's dtype)
    bools: tuple[bool, ...]  # per kernel input: a bool tensor (loaded as int1, gets no gradient)
    per_row: tuple[bool, ...]  # per input of a row kernel: one value per row (its row axes have size 1)
    pre: tuple[Step, ...]  # the chain (elementwise), the prologue (row), the epilogue (linear)
    row: Step | None = None
    post: tuple[Step, ...] = ()
    call: list[CallArg] = field(default_factory=list)
    dropout: str | None = None  # None | "train" | "always"
    keepdim: bool | None = None  # a reducing row kernel: whether its output keeps the reduced axes (size 1)
    name: str = ""
    uses: dict[str, None] = field(default_factory=dict)  # one line per group that runs it (an ordered set)

    def key(self) -> tuple:
        """Equal for kernels with the same code."""
        return (self.kind, self.rank, self.full, self.params, self.bools, self.per_row, self.pre, self.row, self.post,
                self.dropout, self.keepdim)

    @property
    def n_inputs(self) -> int:
        return len(self.full)

    def base_name(self) -> str:
        ops = [s.op for s in self.pre + ((self.row,) if self.row else ()) + self.post]
        if self.kind == "linear" and ops[0] == BIAS:
            ops = ops[1:]  # a linear layer's bias goes without saying
        prefix = "linear_" if self.kind == "linear" else ""
        words: list[str] = []
        for op in ops:
            word = {AFFINE: "bn"}.get(op, op)
            if not words or words[-1] != word:
                words.append(word)
        if len(words) > 4:  # long chains: the comment above the kernel lists every op
            words = words[:3] + [f"{len(words) - 3}more"]
        return (prefix + "_".join(words)).rstrip("_")


def _note(g: Graph, n: Node) -> str:
    who = f"{n.name} " if n.name else ""
    return f"{who}{n.op} ({safe_text(Path(n.span.file).name)}:{n.span.line})"


_SCALAR = (int, float, str, bool, type(None))


def _attrs(n: Node) -> tuple[tuple[str, Any], ...]:
    """The node's plain attributes, hashable: lists of scalars (a reduction's ``dim=[1, 2]``) as tuples."""
    out = []
    for k, v in n.attrs.items():
        if isinstance(v, list) and all(isinstance(e, _SCALAR) for e in v):
            out.append((k, tuple(v)))
        elif isinstance(v, _SCALAR):
            out.append((k, v))
    return tuple(sorted(out))


def elementwise_kernel(op: str) -> Elementwise:
    """The elementwise kernel of a step: a kernel-internal op's, or the IR op's facet."""
    if op in INTERNAL:
        return INTERNAL[op].kernel
    kernel = op_of(op).kernel
    assert isinstance(kernel, Elementwise), op
    return kernel


def _masked(op: str) -> bool:
    return op not in INTERNAL and elementwise_kernel(op).mask is not None


def kernel_for(g: Graph, grp: FusionGroup) -> KernelSpec:
    """The kernel a fusion group of kind anchor, elementwise or row runs."""
    nodes = [g.nodes[i] for i in grp.nodes]
    out_t = g.types[nodes[-1].outputs[0]]
    reducer = next((n for n in nodes if reduces(op_of(n.op).kernel)), None)
    keepdim = None
    if reducer is not None:  # the kernel's full inputs have the shape of the rows it reduces
        keepdim = g.types[reducer.inputs[0]].rank == out_t.rank
        out_t = g.types[reducer.inputs[0]]
    assert isinstance(out_t, TensorType)
    row_node = next((n for n in nodes if isinstance(op_of(n.op).kernel, Row)), None)
    per_row_shape = None  # the shape of an input with one value per row
    if row_node is not None:
        row_kernel = op_of(row_node.op).kernel
        assert isinstance(row_kernel, Row)
        axes = row_kernel.axes(row_node.attrs, out_t.rank)
        assert axes is not None  # the planner groups a row op only over axes it runs on
        per_row_shape = out_t.shape[:out_t.rank - axes] + (1,) * axes
    full: list[bool] = []
    params: list[bool] = []
    bools: list[bool] = []
    per_row: list[bool] = []
    call: list[CallArg] = []
    names: dict[int, str] = {}  # IR value -> kernel variable

    def new_input(arg: CallArg, is_full: bool) -> str:
        call.append(arg)
        full.append(is_full)
        params.append(not isinstance(arg, ValueArg))
        t = g.types[arg.value] if isinstance(arg, ValueArg) else None
        bools.append(isinstance(t, TensorType) and t.dtype == "bool")
        per_row.append(isinstance(t, TensorType) and not is_full and t.shape == per_row_shape)
        return f"x{len(full) - 1}"

    def second_input() -> str:
        """The other half of a two-input argument (batchnorm shift, layernorm bias)."""
        full.append(False)
        params.append(True)
        bools.append(False)
        per_row.append(False)
        return f"x{len(full) - 1}"

    def value(v: int) -> str:
        if v not in names:
            t = g.types[v]
            names[v] = new_input(ValueArg(v), isinstance(t, TensorType) and t.shape == out_t.shape)
        return names[v]

    kind = grp.kind
    steps: list[Step] = []
    row: Step | None = None
    post: list[Step] = []
    dropout: str | None = None
    counter = 0

    def fresh() -> str:
        nonlocal counter
        counter += 1
        return f"v{counter - 1}"

    cur = ""
    rest = nodes
    if kind == "anchor":
        head = nodes[0]
        anchor = op_of(head.op).kernel
        assert isinstance(anchor, Anchor)
        if anchor.matmul and head.fold is None:
            kind = "linear"
            cur = new_input(ValueArg(head.outputs[0]), True)  # the matmul result (z)
        else:
            kind = "elementwise"  # the convolution runs in PyTorch (cuDNN); its epilogue is one kernel
            cur = value(head.outputs[0])  # the convolution's result, materialised without its bias
        names[head.outputs[0]] = cur
        # a bias right before a batchnorm stays in the convolution: the batch statistics include it
        # a folded layer always has a bias, the batchnorm's shift: the kernel adds it, as a layer's own bias
        if head.fold is not None or (head.attrs.get("bias") and not (
                not anchor.matmul and len(nodes) > 1 and isinstance(op_of(nodes[1].op).kernel, ChannelAffine))):
            b = new_input(BiasArg(head.id), False)
            out = fresh()
            steps.append(Step(BIAS, (), (cur, b), out, _note(g, head)))
            cur = out
        names[head.outputs[0]] = cur
        rest = nodes[1:]
    target = steps
    for n in rest:
        kernel = op_of(n.op).kernel
        if isinstance(kernel, Row):
            x = names[n.inputs[0]] if n.inputs[0] in names else value(n.inputs[0])
            args: tuple[str, ...] = (x,)
            if kernel.weights(n.attrs):
                w = new_input(RowWeightsArg(n.id), False)
                args = (x, w, second_input())
            out = fresh()
            row = Step(n.op, _attrs(n), args, out, _note(g, n))
            names[n.outputs[0]] = out
            target = post
            continue
        if isinstance(kernel, ChannelAffine):
            x = names[n.inputs[0]] if n.inputs[0] in names else value(n.inputs[0])
            src = n.inputs[0]
            scale = new_input(AffineArg(src, n.id), False)
            shift = second_input()
            out = fresh()
            target.append(Step(AFFINE, (), (x, scale, shift), out, _note(g, n)))
            names[n.outputs[0]] = out
            continue
        args = tuple(names[i] if i in names else value(i) for i in n.inputs)
        attrs = _attrs(n)
        assert isinstance(kernel, Elementwise), n.op
        if kernel.weight is not None:
            x_t = g.types[n.inputs[0]]
            assert isinstance(x_t, TensorType)
            args += (new_input(WeightArg(n.id, kernel.weight(n.attrs, x_t)), False),)
        if kernel.mask is not None:
            dropout = "always" if kernel.mask.always(n.attrs) else "train"
            attrs += (("stream", sum(_masked(s.op) for s in steps + post)),)
        out = fresh()
        target.append(Step(n.op, attrs, args, out, _note(g, n)))
        names[n.outputs[0]] = out
    return KernelSpec(kind, out_t.rank + 1, tuple(full), tuple(params), tuple(bools), tuple(per_row), tuple(steps),
                      row, tuple(post), call, dropout, keepdim)
