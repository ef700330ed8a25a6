"""Fusion groups of the IR -> Triton kernel source.

``kernel_for(g, group)`` describes the kernel a group needs (:class:`KernelSpec`: its inputs,
the chain of ops, and how the generated module calls it); ``KernelSpec.source`` writes the
forward and backward ``@jit`` functions, the PyTorch reference and the runtime object tying them
together. Kernels are shape-generic within a rank, so groups that compute the same chain on the
same kinds of inputs (every BasicBlock's conv-bn-relu) share one kernel.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlc.backends.text import safe_text
from dlc.backends.triton.ops import EW
from dlc.compiler.fusion import FusionGroup
from dlc.compiler.ir import Graph, Node
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
class CallArg:
    """How the generated forward passes one kernel input.

    ``kind``: ``value`` (an IR value), ``bias`` (the anchor's bias, viewed to broadcast),
    ``bn`` (a batchnorm's scale and shift: two kernel inputs), ``weight`` / ``ln`` (a layernorm's
    weight and bias: two kernel inputs).
    """

    kind: str
    value: int | None = None  # value id for `value`, and the batchnorm's input for `bn`
    node: int | None = None  # the node whose module is meant


@dataclass
class KernelSpec:
    kind: str  # elementwise | linear | row
    rank: int  # rank of the output with the batch axis
    full: tuple[bool, ...]  # per kernel input: has the output's shape
    params: tuple[bool, ...]  # per kernel input: made from parameters (does not set the result's dtype)
    pre: tuple[Step, ...]  # the chain (elementwise), the prologue (row), the epilogue (linear)
    row: Step | None = None
    post: tuple[Step, ...] = ()
    call: list[CallArg] = field(default_factory=list)
    dropout: str | None = None  # None | "train" | "always"
    name: str = ""
    uses: dict[str, None] = field(default_factory=dict)  # one line per group that runs it (an ordered set)

    def key(self) -> tuple:
        """Equal for kernels with the same code."""
        return (self.kind, self.rank, self.full, self.params, self.pre, self.row, self.post, self.dropout)

    @property
    def n_inputs(self) -> int:
        return len(self.full)

    def base_name(self) -> str:
        ops = [s.op for s in self.pre + ((self.row,) if self.row else ()) + self.post]
        if self.kind == "linear" and ops[0] == "bias":
            ops = ops[1:]  # a linear layer's bias goes without saying
        prefix = "linear_" if self.kind == "linear" else ""
        words: list[str] = []
        for op in ops:
            word = {"affine": "bn"}.get(op, op)
            if not words or words[-1] != word:
                words.append(word)
        if len(words) > 4:  # long chains: the comment above the kernel lists every op
            words = words[:3] + [f"{len(words) - 3}more"]
        return (prefix + "_".join(words)).rstrip("_")


def _note(g: Graph, n: Node) -> str:
    who = f"{n.name} " if n.name else ""
    return f"{who}{n.op} ({safe_text(Path(n.span.file).name)}:{n.span.line})"


def _attrs(n: Node) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in n.attrs.items() if isinstance(v, (int, float, str, bool, type(None)))))


def kernel_for(g: Graph, grp: FusionGroup) -> KernelSpec:
    """The kernel a fusion group of kind anchor, elementwise or row runs."""
    nodes = [g.nodes[i] for i in grp.nodes]
    out_t = g.types[nodes[-1].outputs[0]]
    assert isinstance(out_t, TensorType)
    full: list[bool] = []
    params: list[bool] = []
    call: list[CallArg] = []
    names: dict[int, str] = {}  # IR value -> kernel variable

    def new_input(arg: CallArg, is_full: bool) -> str:
        call.append(arg)
        full.append(is_full)
        params.append(arg.kind != "value")
        return f"x{len(full) - 1}"

    def second_input() -> str:
        """The other half of a two-input argument (batchnorm shift, layernorm bias)."""
        full.append(False)
        params.append(True)
        return f"x{len(full) - 1}"

    def value(v: int) -> str:
        if v not in names:
            t = g.types[v]
            names[v] = new_input(CallArg("value", value=v), isinstance(t, TensorType) and t.shape == out_t.shape)
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
        if head.op == "linear" and "fold" not in head.attrs:
            kind = "linear"
            cur = new_input(CallArg("value", value=head.outputs[0]), True)  # the matmul result (z)
        else:
            kind = "elementwise"  # the convolution runs in PyTorch (cuDNN); its epilogue is one kernel
            cur = value(head.outputs[0])  # the convolution's result, materialised without its bias
        names[head.outputs[0]] = cur
        # a bias right before a batchnorm stays in the convolution: the batch statistics include it
        if "fold" in head.attrs:
            pass  # the folded layer's bias is the batchnorm's shift: it runs inside the folded layer
        elif head.attrs.get("bias") and not (head.op != "linear" and len(nodes) > 1 and nodes[1].op == "batchnorm"):
            b = new_input(CallArg("bias", node=head.id), False)
            out = fresh()
            steps.append(Step("bias", (), (cur, b), out, _note(g, head)))
            cur = out
        names[head.outputs[0]] = cur
        rest = nodes[1:]
    target = steps
    for n in rest:
        if n.op in ("softmax", "log_softmax", "layernorm"):
            x = names[n.inputs[0]] if n.inputs[0] in names else value(n.inputs[0])
            args: tuple[str, ...] = (x,)
            if n.op == "layernorm" and n.attrs["affine"]:
                w = new_input(CallArg("ln", node=n.id), False)
                args = (x, w, second_input())
            out = fresh()
            row = Step(n.op, _attrs(n), args, out, _note(g, n))
            names[n.outputs[0]] = out
            target = post
            continue
        if n.op == "batchnorm":
            x = names[n.inputs[0]] if n.inputs[0] in names else value(n.inputs[0])
            src = n.inputs[0]
            scale = new_input(CallArg("bn", value=src, node=n.id), False)
            shift = second_input()
            out = fresh()
            target.append(Step("affine", (), (x, scale, shift), out, _note(g, n)))
            names[n.outputs[0]] = out
            continue
        args = tuple(names[i] if i in names else value(i) for i in n.inputs)
        attrs = _attrs(n)
        if n.op == "dropout":
            dropout = "always" if n.attrs["always"] else "train"
            attrs = (("p", float(n.attrs["p"])), ("stream", sum(s.op == "dropout" for s in steps + post)))
        out = fresh()
        target.append(Step(n.op, attrs, args, out, _note(g, n)))
        names[n.outputs[0]] = out
    return KernelSpec(kind, out_t.rank + 1, tuple(full), tuple(params), tuple(steps), row, tuple(post), call,
                      dropout)


# ---- source ------------------------------------------------------------------------------------


def _fwd_lines(steps: tuple[Step, ...], offsets: str) -> list[str]:
    lines = []
    for s in steps:
        attrs = dict(s.attrs)
        args = list(s.args)
        if s.op == "dropout":
            keep = f"keep{attrs['stream']}"
            lines.append(f"{keep} = dlc_dropout_keep(seed + {attrs['stream']}, {offsets}, {attrs['p']!r}, on)")
            args.append(keep)
        lines.append(f"{s.out} = {EW[s.op].triton(attrs, args)}  # {s.note}")
    return lines


def _bwd_lines(steps: tuple[Step, ...], grads: dict[str, str]) -> list[str]:
    """Reverse-mode lines for a chain; ``grads`` maps variables to their gradient variables (updated)."""
    lines = []
    for s in reversed(steps):
        g = grads.get(s.out)
        if g is None:
            continue
        attrs = dict(s.attrs)
        args = list(s.args)
        if s.op == "dropout":
            args.append(f"keep{attrs['stream']}")
        for arg, expr in zip(args, EW[s.op].grads(attrs, args, s.out, g)):
            if arg.startswith("keep"):
                continue
            name = f"g{arg}"
            if arg in grads:
                lines.append(f"{name} = {name} + {expr}")
            else:
                lines.append(f"{name} = {expr}")
                grads[arg] = name
    return lines


def _ref_lines(steps: tuple[Step, ...]) -> list[str]:
    lines = []
    for s in steps:
        attrs = dict(s.attrs)
        if s.op == "dropout":
            expr = f"F.dropout({s.args[0]}, {attrs['p']!r}, training=training)"
        else:
            expr = EW[s.op].torch(attrs, list(s.args))
        lines.append(f"{s.out} = {expr}")
    return lines


def _row_fwd(row: Step) -> list[str]:
    a = dict(row.attrs)
    x = row.args[0]
    y = row.out
    if row.op in ("softmax", "log_softmax"):
        lines = [
            f"row_max = tl.max(tl.where(mask, {x}, -float(\"inf\")), 0)",
            f"row_exp = tl.where(mask, tl.exp({x} - row_max), 0.0)",
            "row_sum = tl.sum(row_exp, 0)",
        ]
        if row.op == "softmax":
            return lines + [f"{y} = row_exp / row_sum  # {row.note}"]
        return lines + [f"{y} = {x} - row_max - tl.log(row_sum)  # {row.note}"]
    lines = [
        f"row_mean = tl.sum(tl.where(mask, {x}, 0.0), 0) / n_cols",
        f"row_dev = tl.where(mask, {x} - row_mean, 0.0)",
        f"row_rstd = 1.0 / tl.sqrt(tl.sum(row_dev * row_dev, 0) / n_cols + {float(a['eps'])!r})",
        "row_hat = row_dev * row_rstd",
    ]
    if len(row.args) == 3:
        return lines + [f"{y} = row_hat * {row.args[1]} + {row.args[2]}  # {row.note}"]
    return lines + [f"{y} = row_hat  # {row.note}"]


def _row_bwd(row: Step, grads: dict[str, str]) -> list[str]:
    g = grads[row.out]
    x = row.args[0]
    gx = f"g{x}"
    if row.op == "softmax":
        lines = [f"{gx}_row = {row.out} * ({g} - tl.sum(tl.where(mask, {g} * {row.out}, 0.0), 0))"]
    elif row.op == "log_softmax":
        lines = [f"{gx}_row = {g} - tl.exp({row.out}) * tl.sum(tl.where(mask, {g}, 0.0), 0)"]
    else:
        ghat = f"{g} * {row.args[1]}" if len(row.args) == 3 else g
        lines = [
            f"g_hat = tl.where(mask, {ghat}, 0.0)",
            "g_mean = tl.sum(g_hat, 0) / n_cols",
            "g_proj = tl.sum(g_hat * row_hat, 0) / n_cols",
            f"{gx}_row = row_rstd * (g_hat - g_mean - row_hat * g_proj)",
        ]
        if len(row.args) == 3:
            lines += [f"g{row.args[1]} = {g} * row_hat", f"g{row.args[2]} = {g}"]
            grads[row.args[1]] = f"g{row.args[1]}"
            grads[row.args[2]] = f"g{row.args[2]}"
    if x in grads:
        lines.append(f"{gx} = {gx} + {gx}_row")
    else:
        lines.append(f"{gx} = {gx}_row")
        grads[x] = gx
    return lines


def _ref_row(row: Step, rank: int) -> list[str]:
    a = dict(row.attrs)
    x = row.args[0]
    if row.op in ("softmax", "log_softmax"):
        return [f"{row.out} = torch.{row.op}({x}, dim=-1)"]
    dims = a["dims"]
    w, b = (row.args[1], row.args[2]) if len(row.args) == 3 else ("None", "None")
    return [f"{row.out} = F.layer_norm({x}, {x}.shape[{rank - dims}:], {w}, {b}, {float(a['eps'])!r})"]


def _grad_stores(k: int, grads: dict[str, str]) -> list[str]:
    """Store the gradient of each input that needs one (bit i of NEED)."""
    lines = ["# the gradient of every input autograd asks for"]
    for i in range(k):
        lines += [f"if NEED & {1 << i}:", f"    tl.store(g{i}_ptr + offs, {grads.get(f'x{i}', '0.0 * x0')}, mask=mask)"]
    return lines


def _indent(lines: list[str], n: int = 4) -> list[str]:
    return [" " * n + ln for ln in lines]


def _signature(name: str, first: list[str], k: int, tail: list[str], skip_first: bool = False) -> str:
    params = first + [f"x{i}_ptr" for i in range(1 if skip_first else 0, k)] + ["seed", "on"] + tail
    return wrap_call(f"def {name}(", params, "):")


def wrap_call(head: str, args: list[str], close: str = ")") -> str:
    """``head(args)`` on one line when it fits in 120 columns, else one argument per line (black style)."""
    one = head + ", ".join(args) + close
    if len(one) <= 120:
        return one
    return head + "\n" + "".join(f"    {a},\n" for a in args) + close


class Source:
    """Python text for one kernel: its @jit functions, reference and runtime object."""

    def __init__(self, spec: KernelSpec) -> None:
        self.spec = spec

    def text(self) -> str:
        s = self.spec
        ops = [st.op for st in s.pre + ((s.row,) if s.row else ()) + s.post]
        header = textwrap.wrap(f"Kernel `{s.name}`: {' -> '.join((['matmul'] if s.kind == 'linear' else []) + ops)}",
                               116, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False)
        header.append(f"# Runs {'these groups' if len(s.uses) > 1 else 'this group'}:")
        for u in s.uses:
            header += textwrap.wrap(u, 116, initial_indent="#   ", subsequent_indent="#       ",
                                    break_on_hyphens=False)
        if s.kind == "elementwise" or s.kind == "linear":
            parts = [self._elementwise(), self._reference()]
            if s.kind == "linear":
                parts.insert(0, self._matmul())
            obj = self._object()
        else:
            parts = [self._row(), self._reference()]
            obj = self._object()
        return "\n".join(header) + "\n" + "\n\n\n".join(parts + [obj]) + "\n"

    # elementwise: forward and backward over a flat index with broadcast strides
    def _ew_prologue(self, rank: int) -> list[str]:
        s = self.spec
        lines = ["offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)", "mask = offs < n"]
        if not all(s.full):
            lines.append("rest = offs")
            for d in reversed(range(rank)):
                if d == 0:
                    lines.append("i0 = rest")
                else:
                    lines += [f"i{d} = rest % s{d}", f"rest = rest // s{d}"]
        for i, is_full in enumerate(s.full):
            where = "offs" if is_full else " + ".join(f"i{d} * st{i}_{d}" for d in range(rank))
            lines.append(f"x{i} = tl.load(x{i}_ptr + {where}, mask=mask, other=0.0).to(COMPUTE)")
        return lines

    def _ew_tail(self, rank: int) -> list[str]:
        full = self.spec.full
        strides = [f"st{i}_{d}" for i in range(len(full)) if not full[i] for d in range(rank)]
        return ["n"] + [f"s{d}" for d in range(rank)] + strides + ["BLOCK: tl.constexpr", "COMPUTE: tl.constexpr"]

    def _elementwise(self) -> str:
        s = self.spec
        rank = 2 if s.kind == "linear" else s.rank
        steps = s.pre
        out = steps[-1].out
        fwd = [_signature(f"{s.name}_forward", ["out_ptr"], s.n_inputs, self._ew_tail(rank))]
        body = self._ew_prologue(rank) + _fwd_lines(steps, "offs")
        body.append(f"tl.store(out_ptr + offs, {out}.to(out_ptr.dtype.element_ty), mask=mask)")
        fwd += _indent(body)
        grads = {out: "g_out"}
        bwd = [_signature(f"{s.name}_backward", ["grad_ptr"] + [f"g{i}_ptr" for i in range(s.n_inputs)],
                          s.n_inputs, self._ew_tail(rank) + ["NEED: tl.constexpr"])]
        body = self._ew_prologue(rank) + _fwd_lines(steps, "offs")
        body.append("g_out = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)")
        body += _bwd_lines(steps, grads) + _grad_stores(s.n_inputs, grads)
        bwd += _indent(body)
        if s.kind == "linear":  # its forward is the matmul kernel; its epilogue's backward is elementwise
            return "@jit\n" + "\n".join(bwd)
        return "@jit\n" + "\n".join(fwd) + "\n\n\n@jit\n" + "\n".join(bwd)

    def _matmul(self) -> str:
        s = self.spec
        k = s.n_inputs
        tail = (["M", "N", "K", "st_am", "st_ak", "st_wn", "st_wk"]
                + [f"st{i}_{d}" for i in range(1, k) for d in range(2)]
                + ["STORE_Z: tl.constexpr", "BM: tl.constexpr", "BN: tl.constexpr", "BK: tl.constexpr",
                   "COMPUTE: tl.constexpr", "DOT: tl.constexpr", "PRECISION: tl.constexpr"])
        # input 0 is the product itself (the accumulator), so the kernel takes pointers to inputs 1.. only
        head = _signature(f"{s.name}_forward", ["out_ptr", "z_ptr", "a_ptr", "w_ptr"], k, tail, skip_first=True)
        body = [
            "rm = tl.program_id(0) * BM + tl.arange(0, BM)",
            "rn = tl.program_id(1) * BN + tl.arange(0, BN)",
            "rk = tl.arange(0, BK)",
            "acc = tl.zeros((BM, BN), dtype=COMPUTE)",
            "for k0 in range(0, K, BK):",
            "    kk = k0 + rk",
            "    a_mask = (rm[:, None] < M) & (kk[None, :] < K)",
            "    a = tl.load(a_ptr + rm[:, None] * st_am + kk[None, :] * st_ak, mask=a_mask, other=0.0)",
            "    w_mask = (rn[None, :] < N) & (kk[:, None] < K)",
            "    w = tl.load(w_ptr + rn[None, :] * st_wn + kk[:, None] * st_wk, mask=w_mask, other=0.0)",
            "    acc += tl.dot(a.to(DOT), w.to(DOT), input_precision=PRECISION, out_dtype=COMPUTE)",
            "mask = (rm[:, None] < M) & (rn[None, :] < N)",
            "offs = rm[:, None] * N + rn[None, :]",
            "if STORE_Z:  # training: the backward needs the product before the epilogue",
            "    tl.store(z_ptr + offs, acc, mask=mask)",
            "x0 = acc",
        ]
        for i in range(1, k):
            body.append(f"x{i} = tl.load(x{i}_ptr + rm[:, None] * st{i}_0 + rn[None, :] * st{i}_1, mask=mask, "
                        f"other=0.0).to(COMPUTE)")
        body += _fwd_lines(s.pre, "offs")
        body.append(f"tl.store(out_ptr + offs, {s.pre[-1].out}.to(out_ptr.dtype.element_ty), mask=mask)")
        return "@jit\n" + head + "\n" + "\n".join(_indent(body))

    def _row(self) -> str:
        s = self.spec
        assert s.row is not None
        tail = ["n_cols", "BLOCK: tl.constexpr", "COMPUTE: tl.constexpr"]
        params = set(s.row.args[1:])

        def loads() -> list[str]:
            lines = ["cols = tl.arange(0, BLOCK)", "mask = cols < n_cols", "offs = tl.program_id(0) * n_cols + cols"]
            for i in range(s.n_inputs):
                where = "cols" if f"x{i}" in params else "offs"
                lines.append(f"x{i} = tl.load(x{i}_ptr + {where}, mask=mask, other=0.0).to(COMPUTE)")
            return lines

        fwd_body = loads() + _fwd_lines(s.pre, "offs") + _row_fwd(s.row) + _fwd_lines(s.post, "offs")
        out = (s.post[-1] if s.post else s.row).out
        fwd_body.append(f"tl.store(out_ptr + offs, {out}.to(out_ptr.dtype.element_ty), mask=mask)")
        fwd = "@jit\n" + _signature(f"{s.name}_forward", ["out_ptr"], s.n_inputs, tail) + "\n" + "\n".join(
            _indent(fwd_body))
        grads = {out: "g_out"}
        bwd_body = loads() + _fwd_lines(s.pre, "offs") + _row_fwd(s.row) + _fwd_lines(s.post, "offs")
        bwd_body.append("g_out = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)")
        bwd_body += _bwd_lines(s.post, grads)
        bwd_body += _row_bwd(s.row, grads)
        bwd_body += _bwd_lines(s.pre, grads) + _grad_stores(s.n_inputs, grads)
        bwd = "@jit\n" + _signature(f"{s.name}_backward", ["grad_ptr"] + [f"g{i}_ptr" for i in range(s.n_inputs)],
                                    s.n_inputs, tail + ["NEED: tl.constexpr"]) + "\n" + "\n".join(_indent(bwd_body))
        return fwd + "\n\n\n" + bwd

    def _reference(self) -> str:
        s = self.spec
        args = ", ".join(f"x{i}" for i in range(s.n_inputs))
        lines = _ref_lines(s.pre)
        if s.row is not None:
            lines += _ref_row(s.row, s.rank) + _ref_lines(s.post)
        out = (s.post[-1] if s.post else s.row or s.pre[-1]).out
        lines.append(f"return {out}")
        doc = '"""The same computation in PyTorch ops (CPU, or no triton)."""'
        return f"def {s.name}_reference({args}, training=False):\n    {doc}\n" + "\n".join(_indent(lines))

    def _object(self) -> str:
        s = self.spec
        def flags(name: str, values: tuple[bool, ...]) -> str:
            return f"{name}=(" + ", ".join(str(f) for f in values) + ("," if len(values) == 1 else "") + ")"

        args = [f"{s.name}_forward", f"{s.name}_backward", f"{s.name}_reference", flags("full", s.full)]
        if any(s.params):
            args.append(flags("params", s.params))
        if s.dropout:
            args.append("dropout=True")
        cls = {"linear": "LinearKernel", "row": "RowKernel", "elementwise": "ElementwiseKernel"}[s.kind]
        if s.row is not None and dict(s.row.attrs).get("dims", 1) != 1:
            args.append(f"dims={dict(s.row.attrs)['dims']}")
        return wrap_call(f"{s.name} = {cls}(", args)
