"""Every generated kernel of a spec through the real Triton compiler, without a GPU (``dlc compile --fuse
--check-kernels``).

The Triton interpreter, which the tests run kernels under, accepts programs the compiler rejects (constexpr
misuse, dtype mixes, pointer types) and says nothing about registers, spills or shared memory. Triton compiles
for a CUDA target without a GPU: ``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda",
cc, 32))`` goes through ttir, ttgir, llir, PTX and ptxas to a cubin. This module does that for the forward and
backward function of every kernel a fused module carries, in each dtype and for each compute capability, and
reads registers and spills from ptxas's report and shared memory from the kernel's metadata.

The signatures follow from each kernel's :class:`~dlc.backends.triton.spec.KernelSpec` and from what the runtime
(``runtime/common.py``) passes: activations, parameters and outputs in the checked dtype (a module cast with
``.to(dtype)``), bool inputs as ``*i1``, gradient buffers and a linear kernel's pre-epilogue product in the
compute dtype (``_compute_torch_dtype``), every integer an ``i32``. The block sizes are the shipped ones, read
from the generated module (``ELEMENTWISE_BLOCK``, ``LINEAR_TILES``), a row kernel's from its row length. With
``fused_recurrent`` the fixed LSTM and GRU step kernels of ``runtime/recurrent.py`` are compiled the same way
(:func:`recurrent_jobs`).

Compiles run in a pool of spawned processes: triton is never imported here (``dlc compile`` without this option
imports neither torch nor triton), and a worker starts without ``TRITON_INTERPRET``, which must be off before
triton is imported for ``@jit`` to give compilable functions.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import io
import math
import os
import re
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from dlc.backends.triton.spec import AffineArg, KernelSpec, RowWeightsArg, ValueArg, kernel_for
from dlc.compiler.fusion import FusionGroup, fusion_plan
from dlc.compiler.ir import Graph
from dlc.compiler.ops.kernel import Recurrent, Row
from dlc.compiler.ops.registry import op_of
from dlc.compiler.types import Dim, TensorType
from dlc.diagnostics import DlcError, Span

DTYPES = ("float32", "float16", "bfloat16")
CAPABILITIES = (80, 90)
BATCH = 32  # the typical launch: the spec's inputs at batch 32...
SYMBOLIC = 128  # ...with every symbolic size (`T`) 128
_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "bool": "i1", "int32": "i32", "int64": "i64"}
# Pointer roles a signature is written in before a worker knows the runtime's compute dtype.
ACT, COMPUTE = "*act", "*compute"


class NoTriton(Exception):
    """Triton is not installed: the kernels cannot be compiled."""


@dataclass(frozen=True)
class Job:
    """One compile: a kernel function of a generated module (``module``, a file) for one dtype and target."""

    module: str
    kernel: str  # the kernel object's name in the module (fused_...)
    kind: str  # elementwise | linear | row | recurrent
    direction: str  # forward | backward
    dtype: str
    cc: int
    params: tuple[tuple[str, str], ...]  # parameter -> Triton type (or ACT / COMPUTE); "constexpr" for constexprs
    constexprs: tuple[tuple[str, Any], ...]  # those the spec fixes; the worker adds block sizes and dtypes
    n_cols: int = 0  # a row kernel's row length, a recurrent layer's units (blocks follow from their power of two)
    same_as: tuple = ()  # the KernelSpec's key (the cell): equal for the same kernel code in another spec

    def key(self) -> tuple:
        """Equal for compiles with the same result, across specs."""
        block = 1 << max(self.n_cols - 1, 0).bit_length() if self.n_cols else 0
        return (self.same_as, self.direction, self.dtype, self.cc, self.constexprs, block)


@dataclass(frozen=True)
class Result:
    """What a compile gave: ptxas's registers and spill bytes, Triton's shared memory and warps, the block
    sizes used; or ``error`` (why it failed), or ``skipped`` (why the runtime never launches it)."""

    job: Job
    regs: int = 0
    spills: int = 0  # bytes of spill stores and loads
    shared: int = 0
    warps: int = 0
    block: tuple[int, ...] = ()
    error: str = ""
    skipped: str = ""


@dataclass
class Use:
    """A kernel's launches at the typical input: the programs of each group that runs it, and where the first
    of them is written."""

    span: Span | None
    programs: list[tuple[int, ...]] = dataclasses.field(default_factory=list)  # per group: the sizes of its grid
    n_cols: set[int] = dataclasses.field(default_factory=set)  # a row kernel's row lengths


# ---- sizes of the typical launch ----------------------------------------------------------------------------


def _size(dim: Dim) -> int:
    """A dimension at the typical input: a formula over symbolic sizes evaluated with each one at SYMBOLIC."""
    if isinstance(dim, int):
        return dim
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.FloorDiv: lambda a, b: a // b, ast.Div: lambda a, b: a / b, ast.Mod: lambda a, b: a % b}

    def ev(e: ast.expr) -> float:
        if isinstance(e, ast.Constant) and isinstance(e.value, (int, float)):
            return e.value
        if isinstance(e, ast.Name):
            return SYMBOLIC
        if isinstance(e, ast.BinOp) and type(e.op) in ops:
            return ops[type(e.op)](ev(e.left), ev(e.right))
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
            return -ev(e.operand)
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "ceil" and len(e.args) == 1:
            return math.ceil(ev(e.args[0]))
        raise ValueError(f"not a size formula: {dim}")

    return max(int(ev(ast.parse(dim, mode="eval").body)), 1)


def _numel(shape: Iterable[Dim]) -> int:
    return math.prod(_size(d) for d in shape)


def _launch(g: Graph, grp: FusionGroup, spec: KernelSpec) -> tuple[tuple[int, ...], int]:
    """The sizes a group's launch covers at the typical input: (elements,) for an elementwise kernel, (M, N)
    for a linear one, (rows,) for a row kernel; and its row length (0 unless a row kernel)."""
    nodes = [g.nodes[i] for i in grp.nodes]
    if spec.kind == "row":
        row = next(n for n in nodes if isinstance(op_of(n.op).kernel, Row))
        kernel = op_of(row.op).kernel
        t = g.types[row.inputs[0]]
        assert isinstance(kernel, Row) and isinstance(t, TensorType)
        axes = kernel.axes(row.attrs, t.rank) or 1
        return (BATCH * _numel(t.shape[:t.rank - axes]),), _numel(t.shape[t.rank - axes:])
    out = g.types[nodes[-1].outputs[0]]
    assert isinstance(out, TensorType)
    if spec.kind == "linear":
        x = g.types[nodes[0].inputs[0]]
        assert isinstance(x, TensorType)
        return (BATCH * _numel(x.shape[:-1]), _size(out.shape[-1])), 0
    return (BATCH * _numel(out.shape),), 0


# ---- signatures ---------------------------------------------------------------------------------------------


def _input_types(g: Graph, spec: KernelSpec) -> list[str]:
    """Each kernel input's pointer type: a value's own dtype when it is no float (bool, integer), else ACT
    (parameters included: a batchnorm's scale and shift, a layernorm's weight and bias are two inputs each)."""
    types: list[str] = []
    for arg in spec.call:
        t = g.types[arg.value] if isinstance(arg, ValueArg) else None
        if isinstance(t, TensorType) and t.dtype in _SHORT and not t.dtype.startswith(("float", "bfloat")):
            types.append("*" + _SHORT[t.dtype])
        else:
            types.append(ACT)
        if isinstance(arg, (AffineArg, RowWeightsArg)):
            types.append(ACT)
    assert len(types) == spec.n_inputs, (types, spec.n_inputs)
    return types


def _ew_tail(rank: int, full: tuple[bool, ...]) -> list[tuple[str, str]]:
    """An elementwise kernel's parameters after its pointers: sizes and the broadcast inputs' strides."""
    strides = [f"st{i}_{d}" for i in range(len(full)) if not full[i] for d in range(rank)]
    return ([("seed", "i32"), ("on", "i32"), ("n", "i32")] + [(f"s{d}", "i32") for d in range(rank)]
            + [(s, "i32") for s in strides] + [("BLOCK", "constexpr"), ("COMPUTE", "constexpr")])


def _grads(types: list[str]) -> list[tuple[str, str]]:
    """The gradient buffers of a backward kernel: the compute dtype, or (never written) the output gradient's
    for a bool input."""
    return [(f"g{i}_ptr", ACT if t == "*i1" else COMPUTE) for i, t in enumerate(types)]


def _need(types: list[str]) -> int:
    """NEED with every input that can have a gradient asking for one: the most code a backward runs."""
    return sum(1 << i for i, t in enumerate(types) if t != "*i1")


def signatures(g: Graph, spec: KernelSpec) -> dict[str, tuple[list[tuple[str, str]], dict[str, Any]]]:
    """The forward's and the backward's parameters with their types, and the constexprs the spec fixes, in the
    order backends/triton/codegen.py writes them and with the buffers runtime/common.py passes."""
    types = _input_types(g, spec)
    ins = [(f"x{i}_ptr", t) for i, t in enumerate(types)]
    if spec.kind == "row":
        tail = [("seed", "i32"), ("on", "i32"), ("n_cols", "i32"), ("BLOCK", "constexpr"), ("COMPUTE", "constexpr")]
        fwd = [("out_ptr", ACT)] + ins + tail
        bwd = [("grad_ptr", ACT)] + _grads(types) + ins + tail + [("NEED", "constexpr")]
        return {"forward": (fwd, {}), "backward": (bwd, {"NEED": _need(types)})}
    if spec.kind == "linear":
        # the forward is the matmul: input 0 is its accumulator, so inputs 1.. only (with [m, n] strides)
        sizes = ("seed", "on", "M", "N", "K", "st_am", "st_ak", "st_wn", "st_wk")
        tail = ([(p, "i32") for p in sizes] + [(f"st{i}_{d}", "i32") for i in range(1, len(types)) for d in range(2)]
                + [(c, "constexpr") for c in ("STORE_Z", "BM", "BN", "BK", "COMPUTE", "DOT", "PRECISION")])
        fwd = [("out_ptr", ACT), ("z_ptr", COMPUTE), ("a_ptr", ACT), ("w_ptr", ACT)] + ins[1:] + tail
        # the backward is the epilogue's elementwise backward over [m, n], reading the product z
        types = [COMPUTE] + types[1:]
        bwd_ins = [("x0_ptr", COMPUTE)] + ins[1:]
        bwd = ([("grad_ptr", ACT)] + _grads(types) + bwd_ins + _ew_tail(2, spec.full)
               + [("NEED", "constexpr")])
        # STORE_Z: the training forward, a superset of the inference one (one store more)
        return {"forward": (fwd, {"STORE_Z": True}), "backward": (bwd, {"NEED": _need(types)})}
    tail = _ew_tail(spec.rank, spec.full)
    fwd = [("out_ptr", ACT)] + ins + tail
    bwd = [("grad_ptr", ACT)] + _grads(types) + ins + tail + [("NEED", "constexpr")]
    return {"forward": (fwd, {}), "backward": (bwd, {"NEED": _need(types)})}


# ---- the kernels of a spec --------------------------------------------------------------------------------


def fused_kernels(g: Graph, channels_last: bool = False,
                  fused_recurrent: bool = False) -> tuple[list[KernelSpec], dict[str, Use]]:
    """The kernels ``dlc compile --fuse`` writes for ``g`` (named as in the module), and their launches (the
    fixed gate kernels of ``fused_recurrent`` are :func:`recurrent_jobs`')."""
    from dlc.backends.torch.emit import ModuleEmitter

    em = ModuleEmitter(g, True, channels_last, fused_recurrent)
    em.network()
    assert em.fused is not None
    specs = list(em.fused.kernels.values())
    by_key = {s.key(): s for s in specs}
    uses: dict[str, Use] = {}
    for grp in em.fused.plan.groups:
        if grp.kind not in ("anchor", "elementwise", "row"):
            continue
        spec = by_key[kernel_for(g, grp).key()]  # every kernel group runs one of the module's kernels
        use = uses.setdefault(spec.name, Use(g.nodes[grp.last].span))
        programs, n_cols = _launch(g, grp, spec)
        use.programs.append(programs)
        if n_cols:
            use.n_cols.add(n_cols)
    return specs, uses


def jobs(g: Graph, module: str, channels_last: bool = False,
         fused_recurrent: bool = False) -> tuple[list[Job], dict[str, Use]]:
    """The compiles that check every kernel of ``g``, whose generated module is the file ``module``: forward and
    backward, each of DTYPES and CAPABILITIES, each row length of a row kernel."""
    specs, uses = fused_kernels(g, channels_last, fused_recurrent)
    out: list[Job] = []
    for spec in specs:
        use = uses.get(spec.name)
        for direction, (params, constexprs) in signatures(g, spec).items():
            for n_cols in sorted(use.n_cols) if use and use.n_cols else [0]:
                for dtype in DTYPES:
                    for cc in CAPABILITIES:
                        out.append(Job(module, spec.name, spec.kind, direction, dtype, cc, tuple(params),
                                       tuple(constexprs.items()), n_cols, spec.key()))
    return out, uses


def gate_signature(params: list[str]) -> list[tuple[str, str]]:
    """A step kernel's parameters typed as ``_RnnLayerFn`` passes them: the cell state, the gates and the cell
    state's gradient in the compute dtype (its ``acc``), the other tensors in the layer's dtype, sizes as i32,
    and the constexprs (MERGE, CDT, BLOCK_B, BLOCK_H)."""
    constexprs = ("MERGE", "CDT", "BLOCK_B", "BLOCK_H")
    return [(p, "constexpr" if p in constexprs else "i32" if not p.endswith("_ptr")
             else COMPUTE if p in ("c_prev_ptr", "c_ptr", "gate_ptr", "dc_ptr") else ACT) for p in params]


def recurrent_jobs(g: Graph, module: str) -> tuple[list[Job], dict[str, Use]]:
    """The compiles of the step kernels (runtime/recurrent.py, ``_rnn_<cell>_fwd_kernel`` and ``_bwd_kernel``)
    that ``fused_recurrent`` runs for ``g``'s recurrent layers, forward and backward, in each way a step writes the
    layer's output (MERGE: its own direction; for a bidirectional layer merged by sum, mul or ave also the skipping
    and the merging direction). Their parameters are typed in the worker (:func:`gate_signature`)."""
    out: list[Job] = []
    uses: dict[str, Use] = {}
    for grp in fusion_plan(g, recurrent=True).groups:
        if grp.kind != "recurrent":
            continue
        node = g.nodes[grp.nodes[0]]
        kernel = op_of(node.op).kernel
        assert isinstance(kernel, Recurrent)
        cell = node.attrs["layer"] if op_of(node.op).wraps else dict(node.attrs, op=node.op)
        modes = ["own"]
        if kernel.directions == 2 and cell["return_sequences"] and node.attrs["merge"] in ("sum", "mul", "ave"):
            modes += ["skip", node.attrs["merge"]]
        name = f"_rnn_{cell['op']}"
        use = uses.setdefault(name, Use(node.span))
        use.programs.append((BATCH, cell["units"]))
        for direction in ("forward", "backward"):
            for mode in modes:
                for dtype in DTYPES:
                    for cc in CAPABILITIES:
                        out.append(Job(module, name, "recurrent", direction, dtype, cc, (), (("MERGE", mode),),
                                       cell["units"], (name,)))
    return out, uses


# ---- the worker ---------------------------------------------------------------------------------------------


def _start_worker(cache: str) -> None:
    """A worker's environment, before triton is imported: the compiler (not the interpreter), a private cache,
    and ptxas's report printed (to a buffer the worker reads)."""
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["TRITON_CACHE_DIR"] = cache
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"


_MODULES: dict[str, Any] = {}


def _module(path: str) -> Any:
    if path not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"dlc_checked_{len(_MODULES)}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # triton's @jit reads the kernels' source from the file
        _MODULES[path] = mod
    return _MODULES[path]


def compile_one(job: Job) -> Result:
    """Compile one job with Triton (in a worker started by :func:`_start_worker`)."""
    import torch
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget

    mod = _module(job.module)
    if job.kind == "recurrent":
        fn = getattr(mod, f"{job.kernel}_{'fwd' if job.direction == 'forward' else 'bwd'}_kernel")
    else:
        kernel = getattr(mod, job.kernel)
        fn = kernel.forward if job.direction == "forward" else kernel.backward
    if job.kind == "row" and job.n_cols > mod.ROW_LIMIT:
        return Result(job, skipped=f"rows of {job.n_cols} run the PyTorch reference (ROW_LIMIT)")
    dtype = getattr(torch, job.dtype)
    compute = _SHORT[str(mod._compute_torch_dtype(dtype)).removeprefix("torch.")]
    names = [p.name for p in fn.params]
    if job.kind == "recurrent":
        job = dataclasses.replace(job, params=tuple(gate_signature(names)))
    if names != [p for p, _ in job.params]:  # codegen and signatures() disagree: a bug here, said plainly
        return Result(job, error=f"parameters {names} differ from the expected {[p for p, _ in job.params]}")
    constexprs: dict[str, Any] = dict(job.constexprs)
    block: tuple[int, ...]
    if job.kind != "recurrent":
        constexprs["COMPUTE"] = mod._compute_dtype(dtype)
    if job.kind == "recurrent":  # as _RnnLayerFn and _rnn_grid choose them
        constexprs["MERGE"] = {"own": mod._RNN_OWN, "skip": mod._RNN_SKIP, **mod._RNN_MERGES}[constexprs["MERGE"]]
        constexprs["CDT"] = mod._compute_dtype(dtype)
        block = (min(mod._RNN_BLOCK_B, triton.next_power_of_2(BATCH)),
                 min(mod._RNN_BLOCK_H, triton.next_power_of_2(job.n_cols)))
        constexprs.update(zip(("BLOCK_B", "BLOCK_H"), block))
    elif job.kind == "row":
        constexprs["BLOCK"] = triton.next_power_of_2(job.n_cols)
        block = (constexprs["BLOCK"],)
    elif job.kind == "linear" and job.direction == "forward":
        block = tuple(mod.LINEAR_TILES)
        constexprs.update(zip(("BM", "BN", "BK"), block))
        # as _Linear.forward chooses them: a bfloat16 dot in bfloat16, ieee for float32 at "highest" precision
        constexprs["DOT"] = tl.bfloat16 if dtype == torch.bfloat16 else mod._compute_dtype(dtype)
        highest = dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"
        constexprs["PRECISION"] = "ieee" if highest else None
    else:
        constexprs["BLOCK"] = mod.ELEMENTWISE_BLOCK
        block = (mod.ELEMENTWISE_BLOCK,)
    signature = {p: {ACT: "*" + _SHORT[job.dtype], COMPUTE: "*" + compute}.get(t, t) for p, t in job.params}
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(triton.compiler.ASTSource(fn, signature, constexprs),
                                      target=GPUTarget("cuda", job.cc, 32))
    except Exception as exc:  # noqa: BLE001 - any compiler failure is reported with the kernel it concerns
        return Result(job, error=f"{type(exc).__name__}: {exc}".strip())
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if regs is None or spills is None:
        return Result(job, error=f"no ptxas report in the compiler's output: {text[-500:]!r}")
    return Result(job, int(regs.group(1)), int(spills.group(1)) + int(spills.group(2)), compiled.metadata.shared,
                  compiled.metadata.num_warps, block)


def run(all_jobs: list[Job], workers: int | None = None, cache: str | None = None) -> list[Result]:
    """Compile ``all_jobs`` (each distinct one once, see :meth:`Job.key`) in a pool of ``workers`` processes;
    one result per job, in order."""
    if importlib.util.find_spec("triton") is None:
        raise NoTriton("--check-kernels needs triton (pip install triton); it needs no GPU")
    distinct: dict[tuple, Job] = {}
    for job in all_jobs:
        distinct.setdefault(job.key(), job)
    with contextlib.ExitStack() as stack:
        if cache is None:
            cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="dlc-triton-cache-"))
        n = max(1, min(workers or os.cpu_count() or 1, len(distinct)))
        with ProcessPoolExecutor(n, mp_context=get_context("spawn"), initializer=_start_worker,
                                 initargs=(cache,)) as pool:
            done = dict(zip(distinct, pool.map(compile_one, distinct.values(), chunksize=4)))
    return [dataclasses.replace(done[job.key()], job=job) for job in all_jobs]


# ---- the command ------------------------------------------------------------------------------------------


def _programs(job: Job, result: Result, use: Use | None) -> str:
    """The programs the kernel's launches use at the typical input: one number, or the smallest to largest."""
    if use is None:
        return "-"
    counts = []
    for sizes in use.programs:
        if job.kind == "recurrent" or (job.kind == "linear" and job.direction == "forward"):
            counts.append(math.ceil(sizes[0] / result.block[0]) * math.ceil(sizes[1] / result.block[1]))
        elif job.kind == "row":
            counts.append(sizes[0])
        else:  # elementwise, and a linear kernel's backward: over the M x N product
            counts.append(math.ceil(math.prod(sizes) / result.block[0]))
    lo, hi = min(counts), max(counts)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def table(results: list[Result], uses: dict[str, Use]) -> str:
    """The report: one row per compile."""
    head = ("kernel", "kind", "dir", "dtype", "cc", "regs", "spills", "smem", "warps", "block", "programs")
    rows = [head]
    for r in results:
        j = r.job
        if r.skipped or r.error:
            cells = ("-",) * 5 + (r.skipped or "FAILED",)
        else:
            cells = (str(r.regs), str(r.spills), str(r.shared), str(r.warps), "x".join(map(str, r.block)),
                     _programs(j, r, uses.get(j.kernel)))
        direction = {"forward": "fwd", "backward": "bwd"}[j.direction]
        rows.append((j.kernel, j.kind, direction, _SHORT[j.dtype], f"sm_{j.cc}") + cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    notes = ["# Triton kernels on the real compiler (CUDA targets, no GPU). regs: registers per thread; spills:",
             "# bytes of spill stores and loads; smem: bytes of shared memory; programs: the grid of one launch at",
             f"# batch {BATCH} (symbolic sizes {SYMBOLIC}; a recurrent kernel launches once per time step)"]
    return "\n".join(notes + lines) + "\n"


def check_kernels(g: Graph, channels_last: bool = False, fused_recurrent: bool = False,
                  workers: int | None = None) -> str:
    """Compile every generated kernel of ``dlc compile --fuse`` for ``g``, and the table of what they use.
    Raises DlcError (at the first group the kernel runs) when one does not compile, NoTriton without triton."""
    from dlc.backends.torch.emit import emit_module

    with tempfile.TemporaryDirectory(prefix="dlc-check-kernels-") as tmp:
        path = Path(tmp) / "module.py"
        path.write_text(emit_module(g, fuse=True, channels_last=channels_last, fused_recurrent=fused_recurrent),
                        encoding="utf-8")
        all_jobs, uses = jobs(g, str(path), channels_last, fused_recurrent)
        if fused_recurrent:
            gates, gate_uses = recurrent_jobs(g, str(path))
            all_jobs += gates
            uses.update(gate_uses)
        if not all_jobs:
            return "no kernels: no chain of this network fuses\n"
        results = run(all_jobs, workers, str(Path(tmp) / "cache"))
    for r in results:
        if r.error:
            j = r.job
            use = uses.get(j.kernel)
            lines = [ln.strip() for ln in r.error.splitlines() if ln.strip()]
            raise DlcError("kernel-compile", f"kernel `{j.kernel}` ({j.direction}, {_SHORT[j.dtype]}, sm_{j.cc}) "
                           f"does not compile with Triton: {lines[-1] if lines else 'no message'}",
                           use.span if use else None, notes=[f"Triton said: {' | '.join(lines[:12])}"],
                           hint="this is a bug in dlc's kernel generator, not in the spec: please report it with "
                                "the spec; `dlc compile` without --fuse writes a module that needs no kernel")
    return table(results, uses)
