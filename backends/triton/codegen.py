"""Kernel source: a :class:`~dlc.backends.triton.spec.KernelSpec` (what a fusion group computes, see
:mod:`dlc.backends.triton.spec`) -> the forward and backward ``@jit`` functions, the PyTorch reference and
the runtime object tying them together (:class:`Source`).
"""

from __future__ import annotations

import ast
import textwrap

from dlc.backends.triton.ops import INTERNAL
from dlc.backends.triton.spec import KernelSpec, Step, elementwise_kernel
from dlc.compiler.ops.kernel import Row
from dlc.compiler.ops.pytorch import Var
from dlc.compiler.ops.registry import op_of


# ---- source ------------------------------------------------------------------------------------


def _fwd_lines(steps: tuple[Step, ...], offsets: str) -> list[str]:
    lines = []
    for s in steps:
        attrs = dict(s.attrs)
        args = list(s.args)
        kernel = elementwise_kernel(s.op)
        if kernel.mask is not None:
            keep = f"keep{attrs['stream']}"
            p = kernel.mask.p(attrs)
            lines.append(f"{keep} = dlc_dropout_keep(seed + {attrs['stream']}, {offsets}, {p!r}, on)")
            args.append(keep)
        lines.append(f"{s.out} = {kernel.expr(attrs, args)}  # {s.note}")
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
        kernel = elementwise_kernel(s.op)
        if kernel.mask is not None:
            args.append(f"keep{attrs['stream']}")
        for arg, expr in zip(args, kernel.grads(attrs, args, s.out, g)):
            if arg.startswith("keep") or expr is None:
                continue  # a dropout's mask, a bool operand, a comparison's operands: no gradient
            name = f"g{arg}"
            if arg in grads:
                lines.append(f"{name} = {name} + {expr}")
            else:
                lines.append(f"{name} = {expr}")
                grads[arg] = name
    return lines


def _reference(s: Step) -> str:
    """A step in PyTorch: a kernel-internal op's reference, or the IR op's functional form (out of place; a
    dropout switched by the reference's ``training`` argument)."""
    if s.op in INTERNAL:
        return INTERNAL[s.op].reference(list(s.args))
    if elementwise_kernel(s.op).weight is not None:  # the module's weight is the last operand
        return op_of(s.op).torch.expression(dict(s.attrs), list(s.args[:-1]), training=Var("training"),
                                            weight=Var(s.args[-1]))
    return op_of(s.op).torch.expression(dict(s.attrs), list(s.args), training=Var("training"))


def _ref_lines(steps: tuple[Step, ...]) -> list[str]:
    return [f"{s.out} = {_reference(s)}" for s in steps]


def _row(row: Step) -> Row:
    kernel = op_of(row.op).kernel
    assert isinstance(kernel, Row), row.op
    return kernel


def _row_fwd(row: Step) -> list[str]:
    lines = _row(row).forward(dict(row.attrs), list(row.args), row.out)
    return lines[:-1] + [f"{lines[-1]}  # {row.note}"]


def _row_bwd(row: Step, grads: dict[str, str]) -> list[str]:
    x = row.args[0]
    gx = f"g{x}"
    lines = _row(row).backward(dict(row.attrs), list(row.args), row.out, grads[row.out], f"{gx}_row")
    for w in row.args[1:]:  # the module's weight and bias: the op's backward wrote g<arg>
        grads[w] = f"g{w}"
    if x in grads:
        lines.append(f"{gx} = {gx} + {gx}_row")
    else:
        lines.append(f"{gx} = {gx}_row")
        grads[x] = gx
    return lines


def _ref_row(row: Step) -> list[str]:
    weights = dict(zip(("weight", "bias"), (Var(w) for w in row.args[1:])))
    return [f"{row.out} = {op_of(row.op).torch.expression(dict(row.attrs), [row.args[0]], **weights)}"]


def _grad_stores(bools: tuple[bool, ...], grads: dict[str, str], per_row: tuple[bool, ...] = ()) -> list[str]:
    """Store the gradient of each input that needs one (bit i of NEED); bool inputs never do. An input only a
    comparison reads gets zeros; one with one value per row (``per_row``) the sum of its gradient over the row."""
    lines = ["# the gradient of every input autograd asks for"]
    for i, is_bool in enumerate(bools):
        if is_bool:
            continue
        grad = grads.get(f"x{i}", f"tl.zeros_like(x{i})")
        if per_row and per_row[i]:
            store = f"tl.store(g{i}_ptr + tl.program_id(0), tl.sum(tl.where(mask, {grad}, 0.0), 0))"
        else:
            store = f"tl.store(g{i}_ptr + offs, {grad}, mask=mask)"
        lines += [f"if NEED & {1 << i}:", f"    {store}"]
    return lines


def _load(i: int, where: str, is_bool: bool, masked: bool = True) -> str:
    """Load kernel input ``i``: floats in the compute dtype, bools as int1; ``masked=False``: one value, always
    there (a row's)."""
    mask = (", mask=mask, other=0" if is_bool else ", mask=mask, other=0.0") if masked else ""
    return f"x{i} = tl.load(x{i}_ptr + {where}{mask})" + (" != 0" if is_bool else ".to(COMPUTE)")


def _live(lines: list[str]) -> list[str]:
    """``lines`` without the assignments nothing reads (a backward kernel recomputes the whole forward chain,
    of which its gradients need only part; a value computed and never read would be dead code, ruff's F841).
    Every assignment the kernels make is free of side effects."""
    stmts = ast.parse("\n".join(lines)).body
    needed: set[str] = set()
    dead: set[int] = set()  # line numbers (0-based) of dropped statements
    for stmt in reversed(stmts):
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id not in needed):
            dead.update(range(stmt.lineno - 1, stmt.end_lineno or stmt.lineno))
            continue
        if isinstance(stmt, ast.Assign):
            needed.difference_update(n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name))
        needed.update(n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
    return [ln for i, ln in enumerate(lines) if i not in dead]


def _indent(lines: list[str], n: int = 4) -> list[str]:
    """A function body: its live lines (see :func:`_live`), indented."""
    return [" " * n + ln for ln in _live(lines)]


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
            lines.append(_load(i, where, s.bools[i]))
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
        body += _bwd_lines(steps, grads) + _grad_stores(s.bools, grads)
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
            body.append(_load(i, f"rm[:, None] * st{i}_0 + rn[None, :] * st{i}_1", s.bools[i]))
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
                if s.per_row[i]:
                    lines.append(_load(i, "tl.program_id(0)", s.bools[i], masked=False))
                else:
                    lines.append(_load(i, "cols" if f"x{i}" in params else "offs", s.bools[i]))
            return lines

        reduced = _row(s.row).reduces  # one value per row: stored at the row's index, its gradient loaded there
        fwd_body = loads() + _fwd_lines(s.pre, "offs") + _row_fwd(s.row) + _fwd_lines(s.post, "offs")
        out = (s.post[-1] if s.post else s.row).out
        if reduced:
            fwd_body.append(f"tl.store(out_ptr + tl.program_id(0), {out}.to(out_ptr.dtype.element_ty))")
        else:
            fwd_body.append(f"tl.store(out_ptr + offs, {out}.to(out_ptr.dtype.element_ty), mask=mask)")
        fwd = "@jit\n" + _signature(f"{s.name}_forward", ["out_ptr"], s.n_inputs, tail) + "\n" + "\n".join(
            _indent(fwd_body))
        grads = {out: "g_out"}
        bwd_body = loads() + _fwd_lines(s.pre, "offs") + _row_fwd(s.row) + _fwd_lines(s.post, "offs")
        if reduced:
            bwd_body.append("g_out = tl.load(grad_ptr + tl.program_id(0)).to(COMPUTE)")
        else:
            bwd_body.append("g_out = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)")
        bwd_body += _bwd_lines(s.post, grads)
        bwd_body += _row_bwd(s.row, grads)
        bwd_body += _bwd_lines(s.pre, grads) + _grad_stores(s.bools, grads, s.per_row)
        bwd = "@jit\n" + _signature(f"{s.name}_backward", ["grad_ptr"] + [f"g{i}_ptr" for i in range(s.n_inputs)],
                                    s.n_inputs, tail + ["NEED: tl.constexpr"]) + "\n" + "\n".join(_indent(bwd_body))
        return fwd + "\n\n\n" + bwd

    def _reference(self) -> str:
        s = self.spec
        args = ", ".join(f"x{i}" for i in range(s.n_inputs))
        lines = _ref_lines(s.pre)
        if s.row is not None:
            lines += _ref_row(s.row) + _ref_lines(s.post)
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
        if any(s.per_row):
            args.append(flags("per_row", s.per_row))
        if s.dropout:
            args.append("dropout=True")
        cls = {"linear": "LinearKernel", "row": "RowKernel", "elementwise": "ElementwiseKernel"}[s.kind]
        axes = _row(s.row).axes(dict(s.row.attrs), s.rank - 1) if s.row is not None else 1
        if axes != 1:
            args.append(f"dims={axes}")
        if s.keepdim is not None:
            args.append(f'reduce="{"keepdim" if s.keepdim else "drop"}"')
        return wrap_call(f"{s.name} = {cls}(", args)
