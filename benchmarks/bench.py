#!/usr/bin/env python3
"""Benchmark dlc's generated modules: eager PyTorch, the fused Triton backend, and torch.compile.

Modes (see benchmarks/README.md):

- per-spec (``--device cuda``, the default when a GPU is present): every spec in specs/, every batch
  size, dtype and mode (inference, training step) for eager ``dlc.load(spec)``, fused
  ``dlc.load(spec, fuse=True)`` and ``torch.compile`` of the eager module; plus the cold time from spec
  to first forward, each measured in a fresh process with empty kernel caches;
- ``--gpu``: the per-spec benchmark at batch 32 in fp32 and bf16, inference and a training step, plus the
  effective bandwidth of the elementwise kernels against a device copy, within a wall-clock budget (8
  minutes by default) that drops what would run past it and says so; ``--dry-run`` runs the same plan on
  the CPU at toy sizes, to check the harness where there is no GPU;
- CPU rewrites (``--cpu-rewrites``, the default without a GPU): ``dlc.load(spec, optimize="inference")``
  against the same network eager in torchvision / torch.nn (the reference) and under ``torch.compile``,
  for ResNet-50, DenseNet-121, GoogLeNet, MobileNetV2 and the Transformer, batch 1 and 8, one thread, the
  variants timed in turn run by run so that a shared machine's noise hits them all alike; plus the time to
  first output of ``optimize="inference"`` and of ``torch.compile``, each in a fresh process.

Results are printed as Markdown; ``--record FILE`` appends them, with the machine, the versions and
the command line, to FILE (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from bandwidth import BandwidthRow, chain_rows, copy_row, gbps
from budget import Budget, OutOfTime
from references import REFERENCES, reference_like
from torch import nn

import dlc
from dlc.diagnostics import DlcError

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = ROOT / "specs"
SYMBOLIC_DIM = 32          # the size given to symbolic input dimensions (`T`, `S`, ...)
SEED = 0
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("infer", "train")
GPU_VARIANTS = ("eager", "fused", "compile")
CPU_VARIANTS = ("reference", "eager", "optimized", "compile")
CPU_SPECS = ("resnet50", "densenet121", "googlenet", "mobilenet_v2", "transformer")
# --gpu: the specs in the order they are measured, so that a budget running out drops the least telling ones
GPU_SPECS = ("resnet50", "vgg16", "mobilenet_v2", "efficientnet_b0", "densenet121", "googlenet", "inception_v3", "unet",
             "vit_b_16", "transformer", "gpt", "bert", "resnet18", "dcgan_generator", "dcgan_discriminator",
             "wavenet", "alexnet", "vae", "autoencoder", "denoising_autoencoder", "siamese", "lenet5", "mlp",
             "bilstm_tagger", "seq2seq")
GPU_BUDGET_S = 480.0          # --gpu must finish unattended in under 8 minutes
BANDWIDTH_ELEMENTS = 1 << 26  # 256 MiB per fp32 tensor: far beyond any cache
DRY_RUN = {"specs": ("mlp", "lenet5"), "batch": 2, "runs": 2, "elements": 1 << 14}
# What each variant is, for the tables' legends.
VARIANT_DOC = {
    "eager": "`dlc.load(spec)`",
    "fused": "`dlc.load(spec, fuse=True)`",
    "optimized": '`dlc.load(spec, optimize="inference")`',
    "compile": "`torch.compile(dlc.load(spec))`",
    "reference": "the same network in torchvision / torch.nn, eager",
}
COMPILE_OF_REFERENCE = "`torch.compile(reference)` (the torchvision / torch.nn model compiled, not the dlc module)"
COLD_TIMEOUT_S = 1200
Step = Callable[[], Any]


class BenchError(Exception):
    """A problem that stops the whole benchmark; its message is printed and the exit status is 1."""


class SkipSpec(Exception):
    """A spec the harness cannot feed (the message says why); it is listed as skipped."""


# ---- configuration ---------------------------------------------------------------------------


@dataclass
class Config:
    """What to measure, resolved from the command line and the machine."""

    specs: list[Path]
    batches: list[int]
    dtypes: list[str]
    modes: list[str]
    variants: list[str]
    device: str
    cpu_rewrites: bool
    runs: int
    threads: int | None = None       # torch.set_num_threads; None leaves torch's default
    gpu: bool = False                # the unattended --gpu plan: budget, bandwidth, no cold start
    budget: float | None = None      # seconds of wall time for the whole run
    cold: bool = True
    cold_only: bool = False
    bandwidth_elements: int = BANDWIDTH_ELEMENTS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; list options take comma-separated values."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", help="spec names or .dln paths (default: every spec; resnet50 for --cpu-rewrites)")
    p.add_argument("--batch", help="batch sizes (default: 1,32; 8 for --cpu-rewrites)")
    p.add_argument("--dtypes", help="fp32,bf16 (default: both; fp32 for --cpu-rewrites)")
    p.add_argument("--modes", help="infer,train (default: both; infer for --cpu-rewrites)")
    p.add_argument("--variants", help=f"a subset of {','.join(GPU_VARIANTS)} (per-spec) or of "
                                      f"{','.join(CPU_VARIANTS)} (--cpu-rewrites); eager is always measured")
    p.add_argument("--device", choices=("cuda", "cpu"),
                   help="cuda (default when available); cpu without --cpu-rewrites runs the per-spec loop on "
                        "the CPU with a plain timer, to check the harness rather than to measure")
    p.add_argument("--cpu-rewrites", action="store_true",
                   help="eager vs optimize='inference' on the CPU (the default without CUDA)")
    p.add_argument("--record", type=Path, metavar="FILE", help="append the results to FILE (Markdown)")
    p.add_argument("--repeat", type=int, metavar="N", help="timed runs per measurement (default: 100 on a GPU, "
                                                           "10 on the CPU)")
    p.add_argument("--gpu", action="store_true",
                   help=f"the unattended GPU run: batch 32, fp32+bf16, inference+training, eager/fused/compile, "
                        f"elementwise bandwidth, within --budget (default {GPU_BUDGET_S:.0f} s)")
    p.add_argument("--dry-run", action="store_true",
                   help="with --gpu: the same plan on the CPU at toy sizes (checks the harness, not the speed)")
    p.add_argument("--budget", type=float, metavar="S", help="wall-clock seconds for the run; what would run past "
                                                             "them is dropped and listed in the notes")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: 1 for --cpu-rewrites)")
    p.add_argument("--no-cold", action="store_true", help="leave out the cold-start / time-to-first-output table")
    p.add_argument("--cold-only", action="store_true", help="--cpu-rewrites: only the time-to-first-output table")
    p.add_argument("--cold-child", choices=("fused", "optimized", "compile"), help=argparse.SUPPRESS)
    p.add_argument("--cold-target", choices=("dlc", "reference"), default="dlc", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def split_list(text: str | None, default: Sequence[str]) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; ``None`` -> ``default``."""
    if text is None:
        return list(default)
    return [item.strip() for item in text.split(",") if item.strip()]


def spec_path(name: str) -> Path:
    """A spec by name (``resnet18``) or path (``specs/resnet18.dln``)."""
    path = Path(name) if name.endswith(".dln") else SPECS_DIR / f"{name}.dln"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(SPECS_DIR.glob("*.dln")))
        raise BenchError(f"no spec {name!r} (known: {known})")
    return path


def check_choices(values: list[str], allowed: Sequence[str], what: str) -> list[str]:
    """``values`` if each is in ``allowed``, else a BenchError naming the bad one."""
    for v in values:
        if v not in allowed:
            raise BenchError(f"unknown {what} {v!r}; choose from {', '.join(allowed)}")
    return values


def resolve(args: argparse.Namespace) -> Config:
    """Fill in the defaults of the chosen mode and check the options against it."""
    if args.gpu:
        return resolve_gpu(args)
    if args.dry_run:
        raise BenchError("--dry-run goes with --gpu (it runs the --gpu plan on the CPU)")
    has_cuda = torch.cuda.is_available()
    cpu_rewrites = args.cpu_rewrites or (args.device is None and not has_cuda)
    device = args.device or ("cuda" if has_cuda and not cpu_rewrites else "cpu")
    if device == "cuda" and not has_cuda:
        raise BenchError("--device cuda: torch sees no CUDA device")
    if cpu_rewrites and device != "cpu":
        raise BenchError("--cpu-rewrites measures on the CPU; leave out --device cuda")
    dtypes = check_choices(split_list(args.dtypes, ["fp32"] if cpu_rewrites else DTYPES), list(DTYPES), "dtype")
    modes = check_choices(split_list(args.modes, ["infer"] if cpu_rewrites else MODES), MODES, "mode")
    if args.cold_only and (args.no_cold or not cpu_rewrites):
        raise BenchError("--cold-only goes with --cpu-rewrites, without --no-cold")
    if cpu_rewrites and (dtypes != ["fp32"] or modes != ["infer"]):
        raise BenchError("--cpu-rewrites measures fp32 inference only (optimize='inference' is for eval mode)")
    allowed = CPU_VARIANTS if cpu_rewrites else GPU_VARIANTS
    variants = check_choices(split_list(args.variants, allowed), allowed, "variant")
    specs = [spec_path(s) for s in split_list(args.specs, CPU_SPECS if cpu_rewrites else [])]
    batches = [int(b) for b in split_list(args.batch, ["1", "8"] if cpu_rewrites else ["1", "32"])]
    check_counts(args)
    return Config(
        specs=specs or sorted(SPECS_DIR.glob("*.dln")),
        batches=batches,
        dtypes=dtypes,
        modes=modes,
        variants=["eager"] + [v for v in allowed if v in variants and v != "eager"],
        device=device,
        cpu_rewrites=cpu_rewrites,
        runs=args.repeat or (100 if device == "cuda" else 10),
        threads=args.threads or (1 if cpu_rewrites else None),
        budget=args.budget,
        cold=not args.no_cold,
        cold_only=args.cold_only,
    )


def check_counts(args: argparse.Namespace) -> None:
    """--repeat, --threads and --budget, where given, are positive."""
    for name in ("repeat", "threads", "budget"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise BenchError(f"--{name} must be positive")


def resolve_gpu(args: argparse.Namespace) -> Config:
    """``--gpu``: fixed batch (32), both dtypes and modes, every GPU variant, the specs in :data:`GPU_SPECS` order
    (or ``--specs``), an 8-minute budget; ``--dry-run`` the same on the CPU at toy sizes."""
    if args.cpu_rewrites or args.device is not None:
        raise BenchError("--gpu chooses the device itself; leave out --cpu-rewrites and --device")
    if not args.dry_run and not torch.cuda.is_available():
        raise BenchError("--gpu: torch sees no CUDA device (--gpu --dry-run runs the same plan on the CPU)")
    check_counts(args)
    dry = args.dry_run
    dtypes = check_choices(split_list(args.dtypes, DTYPES), list(DTYPES), "dtype")
    modes = check_choices(split_list(args.modes, MODES), MODES, "mode")
    variants = check_choices(split_list(args.variants, GPU_VARIANTS), GPU_VARIANTS, "variant")
    default_specs = DRY_RUN["specs"] if dry else GPU_SPECS
    batch = str(DRY_RUN["batch"]) if dry else "32"
    return Config(
        specs=[spec_path(s) for s in split_list(args.specs, default_specs)],
        batches=[int(b) for b in split_list(args.batch, [batch])],
        dtypes=dtypes,
        modes=modes,
        variants=["eager"] + [v for v in GPU_VARIANTS if v in variants and v != "eager"],
        device="cpu" if dry else "cuda",
        cpu_rewrites=False,
        runs=args.repeat or (DRY_RUN["runs"] if dry else 50),
        threads=args.threads,
        gpu=True,
        budget=args.budget or GPU_BUDGET_S,
        cold=False,
        bandwidth_elements=DRY_RUN["elements"] if dry else BANDWIDTH_ELEMENTS,
    )


# ---- models ----------------------------------------------------------------------------------


def load_variant(path: Path, **options: Any) -> nn.Module:
    """``dlc.load(path, **options)`` for the fused-backend options (``fuse``, ``optimize``).

    A dlc that predates them reads the keywords as network parameters (``error[unknown-param]``) or
    rejects them (``TypeError``): that stops the benchmark with a message saying so.
    """
    try:
        return dlc.load(path, **options)
    except TypeError as exc:
        if "keyword" not in str(exc):
            raise
        raise missing_api(options, exc) from None
    except DlcError as exc:
        if exc.code == "unknown-param" and any(f"`{name}`" in exc.message for name in options):
            raise missing_api(options, exc) from None
        raise


def missing_api(options: dict[str, Any], exc: Exception) -> BenchError:
    """The error for a ``dlc.load`` without the fused backend's keywords."""
    call = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return BenchError(f"this dlc's load() does not accept {call} yet (the fused backend has not landed?): {exc}")


def load_eager(path: Path) -> nn.Module:
    """The unfused module, seeded, with non-default batchnorm statistics (so that folding them matters)."""
    torch.manual_seed(SEED)
    model = dlc.load(path)
    randomize_batchnorm(model)
    return model


def randomize_batchnorm(model: nn.Module) -> None:
    """Running statistics and affine parameters away from their identity defaults."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)


def with_weights_of(eager: nn.Module, model: nn.Module, what: str) -> nn.Module:
    """``model`` holding ``eager``'s weights (strict ``load_state_dict``), so outputs can be compared."""
    try:
        model.load_state_dict(eager.state_dict(), strict=True)
    except (RuntimeError, KeyError) as exc:
        raise BenchError(f"{what} does not load the unfused module's state_dict (strict=True), which the "
                         f"harness needs to compare outputs on equal weights: {first_line(exc)}") from None
    return model


def build_variant(name: str, path: Path, eager: nn.Module, reference: nn.Module | None = None) -> nn.Module:
    """One variant of ``path``'s module with ``eager``'s weights; ``compile`` wraps ``reference`` where given,
    else ``eager`` itself."""
    if name == "reference":
        if reference is None:
            raise ValueError("no reference")
        return reference
    if name == "fused":
        return with_weights_of(eager, load_variant(path, fuse=True), "dlc.load(spec, fuse=True)")
    if name == "optimized":
        model = load_variant(path, optimize="inference")
        return with_weights_of(eager, model, 'dlc.load(spec, optimize="inference")')
    if name == "compile":
        return torch.compile(eager if reference is None else reference, dynamic=False)
    raise ValueError(name)


def build_models(path: Path, variants: list[str], device: str, dtype: torch.dtype,
                 notes: list[str]) -> dict[str, nn.Module]:
    """Every variant that builds, on ``device`` in ``dtype``; a failure other than a missing API is noted.
    With a ``reference`` variant (the spec's torchvision / torch.nn model), ``compile`` compiles it."""
    eager = load_eager(path)
    reference = reference_like(path.stem, eager) if "reference" in variants else None
    if reference is not None:
        reference = reference.to(device=device, dtype=dtype)
    eager = eager.to(device=device, dtype=dtype)
    models = {"eager": eager}
    for name in variants[1:]:
        if name == "reference" and reference is None:
            continue
        try:
            models[name] = build_variant(name, path, eager, reference).to(device=device, dtype=dtype)
        except BenchError:
            raise
        except Exception as exc:  # a backend that cannot handle this spec: report it, measure the rest
            notes.append(f"{path.stem} {dtype_name(dtype)}: building `{name}` failed: {first_line(exc)}")
    return models


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line notes."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# ---- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One network input: its batch-less shape with symbolic dimensions made concrete, and what it holds."""

    name: str
    shape: tuple[int, ...]
    dtype: str          # the spec's dtype: float32, int64, bool (a padding mask: nothing masked), ...
    vocab: int | None   # for integer inputs: ids are drawn from range(vocab)


def input_specs(path: Path) -> list[InputSpec]:
    """The network's inputs from its IR; SkipSpec for an input the harness cannot fill with valid values."""
    graph = dlc.compile(path).graph
    users = graph.users()
    specs = []
    for name, vid in graph.inputs:
        t = graph.types[vid]
        shape = tuple(d if isinstance(d, int) else SYMBOLIC_DIM for d in t.shape)
        vocab = None
        if t.dtype.startswith("int"):
            readers = users.get(vid, [])
            if not readers or any(n.op != "embedding" for n in readers):
                ops = ", ".join(sorted({n.op for n in readers})) or "nothing"
                raise SkipSpec(f"integer input `{name}` feeds {ops}, not only embeddings: no known valid range")
            vocab = min(n.attrs["vocab"] for n in readers)
        elif not t.dtype.startswith(("float", "bfloat", "bool")):
            raise SkipSpec(f"input `{name}` is {t.dtype}")
        specs.append(InputSpec(name, shape, t.dtype, vocab))
    return specs


def make_inputs(specs: list[InputSpec], batch: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, ...]:
    """Seeded random inputs: floats in ``dtype``, integer ids below the vocabulary size."""
    gen = torch.Generator().manual_seed(SEED)
    tensors = []
    for s in specs:
        shape = (batch, *s.shape)
        if s.dtype == "bool":
            t = torch.zeros(shape, dtype=torch.bool)
        elif s.vocab is not None:
            t = torch.randint(0, s.vocab, shape, generator=gen, dtype=getattr(torch, s.dtype))
        else:
            t = torch.randn(shape, generator=gen).to(dtype)
        tensors.append(t.to(device))
    return tuple(tensors)


# ---- steps and timers ------------------------------------------------------------------------


def float_outputs(out: Any) -> list[torch.Tensor]:
    """The floating-point tensors among a module's outputs (one tensor or a tuple)."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]


def make_step(model: nn.Module, inputs: tuple[torch.Tensor, ...], mode: str) -> Step:
    """Inference (eval, no_grad) or one training step (train, backward of the summed outputs, zero grads)."""
    model.train(mode == "train")
    if mode == "infer":
        def infer() -> Any:
            with torch.no_grad():
                return model(*inputs)
        return infer

    def train() -> None:
        loss = sum(o.float().sum() for o in float_outputs(model(*inputs)))
        loss.backward()
        model.zero_grad(set_to_none=True)
    return train


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_ms(step: Step, device: str) -> float:
    """Wall time of one synchronized call, in milliseconds."""
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def median_ms(step: Step, runs: int, device: str, warmup: int = 2) -> float:
    """Median of ``runs`` synchronized calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    return statistics.median(timed_ms(step, device) for _ in range(runs))


def gpu_median_ms(step: Step, runs: int) -> float:
    """Median GPU time from ``triton.testing.do_bench`` over about ``runs`` calls (plain timer without triton)."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return median_ms(step, runs, "cuda")
    estimate = median_ms(step, 3, "cuda")  # also the warm-up: compilation, autotuning
    return do_bench(step, warmup=max(25.0, 5 * estimate), rep=runs * estimate, return_mode="median")


def minor_faults() -> int:
    """This process's minor page faults so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved_medians(steps: dict[str, Step], runs: int,
                        warmup: int = 2) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms and median minor page faults per call of each step, the steps called in turn each run (in a
    rotating order), on the CPU."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    faults: dict[str, list[int]] = {name: [] for name in steps}
    names = list(steps)
    for i in range(runs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            before = minor_faults()
            times[name].append(timed_ms(steps[name], "cpu"))
            faults[name].append(minor_faults() - before)
    return ({name: statistics.median(t) for name, t in times.items()},
            {name: statistics.median(f) for name, f in faults.items()})


def max_abs_diff(got: Any, want: Any) -> float:
    """Largest absolute difference over the float outputs, compared in float32."""
    pairs = list(zip(float_outputs(got), float_outputs(want), strict=True))
    return max((g.float() - w.float()).abs().max().item() for g, w in pairs)


# ---- Markdown --------------------------------------------------------------------------------


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt_ratio(base: float | None, ms: float | None) -> str:
    return "—" if base is None or ms is None else f"{base / ms:.2f}×"


def fmt_diff(diff: float | None) -> str:
    return "—" if diff is None else f"{diff:.2g}"


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class Report:
    """The Markdown sections of one run, and notes (skips, failures) listed under them."""

    sections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = list(self.sections)
        if self.notes:
            parts.append("Notes:\n\n" + "\n".join(f"- {n}" for n in self.notes))
        return "\n\n".join(parts) + "\n"


def legend(variants: list[str]) -> str:
    return "Variants: " + "; ".join(f"{v} = {VARIANT_DOC[v]}" for v in variants) + "."


# ---- per-spec benchmark (GPU) ----------------------------------------------------------------


@dataclass
class Row:
    """One spec x batch x dtype x mode: milliseconds per variant (None: failed) and, for inference, the
    largest difference of each variant's outputs from eager's."""

    spec: str
    batch: int
    dtype: str
    mode: str
    ms: dict[str, float | None]
    diff: dict[str, float | None]


def measure(step: Step, cfg: Config) -> float:
    return gpu_median_ms(step, cfg.runs) if cfg.device == "cuda" else median_ms(step, cfg.runs, cfg.device)


def measure_row(models: dict[str, nn.Module], inputs: tuple[torch.Tensor, ...], mode: str, cfg: Config,
                label: str, notes: list[str]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Time each model's step; for inference also compare its outputs with eager's."""
    ms: dict[str, float | None] = {}
    diff: dict[str, float | None] = {}
    reference = make_step(models["eager"], inputs, "infer")() if mode == "infer" else None
    for name in models:
        ms[name] = diff[name] = None
        if name not in models:
            continue
        try:
            step = make_step(models[name], inputs, mode)
            if reference is not None and name != "eager":
                diff[name] = max_abs_diff(step(), reference)
            ms[name] = measure(step, cfg)
        except Exception as exc:  # e.g. a kernel the backend lacks for this dtype: report, go on
            notes.append(f"{label} {mode} `{name}`: {first_line(exc)}")
    return ms, diff


# Before any unit has run, a budgeted run assumes one takes this long (a torch.compile of a large network).
FIRST_UNIT_ESTIMATE_S = 30.0


def bench_spec(path: Path, cfg: Config, notes: list[str], budget: Budget | None = None,
               variants: list[str] | None = None) -> list[Row]:
    """Every batch x dtype x mode of one spec (fresh models per batch: no recompilation across shapes) for
    ``variants`` (default: the configured ones). With a budget, each spec x dtype is a unit that starts only if
    the budget admits it."""
    variants = variants or cfg.variants
    try:
        specs = input_specs(path)
    except SkipSpec as exc:
        notes.append(f"{path.stem} skipped: {exc}")
        return []
    rows: list[Row] = []
    for dt in cfg.dtypes:
        if budget is not None and not budget.admit(f"{path.stem} {dt}", FIRST_UNIT_ESTIMATE_S):
            continue
        with budget.unit() if budget is not None else contextlib.nullcontext():
            for batch in cfg.batches:
                models = build_models(path, variants, cfg.device, DTYPES[dt], notes)
                inputs = make_inputs(specs, batch, DTYPES[dt], cfg.device)
                for mode in cfg.modes:
                    ms, diff = measure_row(models, inputs, mode, cfg, f"{path.stem} b{batch} {dt}", notes)
                    missing = {v: None for v in cfg.variants}  # a variant measured in another pass, or failed
                    rows.append(Row(path.stem, batch, dt, mode, {**missing, **ms}, {**missing, **diff}))
                del models, inputs
                release_memory(cfg.device)
    return rows


def release_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def speed_table(rows: list[Row], variants: list[str]) -> str:
    others = variants[1:]
    header = ["spec", "batch", "dtype", "mode"] + [f"{v} ms" for v in variants]
    header += [f"{v} speedup" for v in others] + [f"{v} max abs diff" for v in others]
    body = [[r.spec, str(r.batch), r.dtype, r.mode] + [fmt_ms(r.ms[v]) for v in variants]
            + [fmt_ratio(r.ms["eager"], r.ms[v]) for v in others] + [fmt_diff(r.diff[v]) for v in others]
            for r in rows]
    return md_table(header, body)


def geomean_lines(rows: list[Row], variant: str) -> list[str]:
    """Geometric mean over specs of ``variant``'s inference speedup, per batch size and dtype."""
    groups: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        if r.mode == "infer" and r.ms["eager"] and r.ms.get(variant):
            groups.setdefault((r.batch, r.dtype), []).append(r.ms["eager"] / r.ms[variant])
    return [f"- batch {b}, {dt}: {geomean(v):.2f}× over {len(v)} specs" for (b, dt), v in groups.items()]


def budgeted_rows(cfg: Config, report: Report, budget: Budget | None) -> list[Row]:
    """Every spec's rows. With a budget, two passes: every spec without ``torch.compile`` (minutes of compiling
    per network), then ``compile`` spec by spec, merged into the rows; what would run past the budget is
    dropped, and a unit still running at the deadline is stopped, both listed in the notes."""
    if budget is None:
        return [row for path in cfg.specs for row in bench_spec(path, cfg, report.notes)]
    passes = [[v for v in cfg.variants if v != "compile"]] + ([["eager", "compile"]] if "compile" in cfg.variants
                                                              else [])
    rows: list[Row] = []
    try:
        with budget.guard():
            for variants in passes:
                for path in cfg.specs:
                    merge_rows(rows, bench_spec(path, cfg, report.notes, budget, variants), variants[1:])
    except OutOfTime as exc:
        report.notes.append(f"stopped: {exc}")
    report.notes += budget.dropped
    return rows


def merge_rows(rows: list[Row], new: list[Row], variants: list[str]) -> None:
    """Add ``new`` rows to ``rows``; where a row of the same spec, batch, dtype and mode exists, only its
    ``variants``' times and differences are taken from the new one."""
    index = {(r.spec, r.batch, r.dtype, r.mode): r for r in rows}
    for r in new:
        old = index.get((r.spec, r.batch, r.dtype, r.mode))
        if old is None:
            rows.append(r)
            continue
        for v in variants:
            old.ms[v], old.diff[v] = r.ms[v], r.diff[v]


def run_per_spec(cfg: Config) -> Report:
    """The per-spec benchmark: (with --gpu, the bandwidth table first), speed table, geometric means, cold
    times."""
    report = Report()
    budget = Budget(cfg.budget) if cfg.budget is not None else None
    if cfg.gpu and cfg.device == "cpu":
        report.sections.append("Dry run on the CPU (`--gpu --dry-run`): toy sizes and a plain timer; the numbers "
                               "check the harness, not the speed.")
    if cfg.gpu:
        report.sections.append(bandwidth_section(cfg, report.notes))
    rows = budgeted_rows(cfg, report, budget)
    report.sections.append(legend(cfg.variants) + " Times are medians in ms per call; speedups are eager time / "
                           "variant time; max abs diff compares inference outputs with eager's.")
    report.sections.append(speed_table(rows, cfg.variants))
    if "fused" in cfg.variants:
        lines = geomean_lines(rows, "fused")
        report.sections.append("Geometric mean of the fused inference speedup over specs:\n\n"
                               + ("\n".join(lines) or "- none measured"))
    cold = [v for v in cfg.variants if v in ("fused", "compile")]
    if cold and cfg.cold:
        report.sections.append(cold_table(cfg, cold, report.notes))
    if budget is not None:
        report.notes.append(f"wall time {budget.seconds - budget.left():.0f} s of a {budget.seconds:.0f} s budget")
    return report


# ---- bandwidth (--gpu) -----------------------------------------------------------------------


def bandwidth_section(cfg: Config, notes: list[str]) -> str:
    """Effective GB/s of each elementwise chain fused and plain, and of a device copy, per dtype."""
    rows: list[BandwidthRow] = []
    for dt in cfg.dtypes:
        def timer(step: Step) -> float:
            return measure(step, cfg)
        try:
            rows.append(copy_row(cfg.bandwidth_elements, DTYPES[dt], dt, cfg.device, timer))
            rows += chain_rows(cfg.bandwidth_elements, DTYPES[dt], dt, cfg.device, timer)
        except Exception as exc:  # a kernel failing here must not cost the rest of the run
            notes.append(f"bandwidth {dt}: {first_line(exc)}")
    notes += [f"bandwidth {r.name} {r.dtype}: the fused module ran its PyTorch fallback, no Triton kernel"
              for r in rows if not r.launched]
    copy = {r.dtype: gbps(r.nbytes, r.fused_ms) for r in rows if r.plain_ms is None}
    body = [[r.name, r.dtype, f"{r.elements:,}", fmt_ms(r.fused_ms), f"{gbps(r.nbytes, r.fused_ms):.0f}",
             f"{gbps(r.nbytes, r.fused_ms) / copy[r.dtype]:.0%}" if r.dtype in copy else "—",
             fmt_ms(r.plain_ms), "—" if r.plain_ms is None else f"{gbps(r.nbytes, r.plain_ms):.0f}"] for r in rows]
    intro = ("Effective bandwidth of the elementwise kernels: (bytes of the inputs + bytes of the output) / time, "
             "inference, one launch of the fused module (`fuse=True`) against the plain module's PyTorch ops and a "
             "device copy (`torch.empty_like(x).copy_(x)`, 2 x its bytes).")
    return intro + "\n\n" + md_table(["kernel", "dtype", "elements", "fused ms", "fused GB/s", "of copy",
                                       "plain ms", "plain GB/s"], body)


# ---- cold start ------------------------------------------------------------------------------


def cold_seconds(path: Path, variant: str, batch: int, dtype: torch.dtype, device: str, target: str = "dlc") -> float:
    """Seconds from spec to first inference output: ``dlc.load(spec, fuse=True)`` or ``dlc.load(spec,
    optimize="inference")`` + first forward, or ``torch.compile(model)`` + first forward, ``model`` being the
    eager dlc module or (``target="reference"``) the spec's torchvision / torch.nn model, whose building, like
    moving weights and making inputs, is not counted."""
    options = {"fused": {"fuse": True}, "optimized": {"optimize": "inference"}}.get(variant, {})
    start = time.perf_counter()
    model = load_variant(path, **options) if options else dlc.load(path)
    loading = time.perf_counter() - start
    if target == "reference":
        model = reference_like(path.stem, model)
        if model is None:
            raise BenchError(f"{path.stem} has no reference model")
    model = model.to(device=device, dtype=dtype).eval()
    inputs = make_inputs(input_specs(path), batch, dtype, device)
    sync(device)
    start = time.perf_counter()
    if variant == "compile":
        model = torch.compile(model, dynamic=False)
    with torch.no_grad():
        model(*inputs)
    sync(device)
    first = time.perf_counter() - start
    return first if variant == "compile" else loading + first


def cold_child(args: argparse.Namespace) -> int:
    """``--cold-child VARIANT``: print one cold time as JSON (run by :func:`cold_in_fresh_process`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        seconds = cold_seconds(spec_path(args.specs), args.cold_child, int(args.batch), DTYPES[args.dtypes],
                               args.device, args.cold_target)
    except Exception as exc:  # reported by the parent as a note
        print(json.dumps({"error": first_line(exc)}))
        return 1
    print(json.dumps({"seconds": seconds}))
    return 0


def cold_in_fresh_process(path: Path, variant: str, batch: int, dtype: str, cfg: Config) -> float:
    """One cold time, measured in a new Python process whose Triton and Inductor caches are empty; in the CPU
    comparison ``compile`` compiles the reference model."""
    target = "reference" if cfg.cpu_rewrites and "reference" in cfg.variants and path.stem in REFERENCES else "dlc"
    with tempfile.TemporaryDirectory(prefix="dlc-bench-cold-") as tmp:
        env = dict(os.environ, TRITON_CACHE_DIR=f"{tmp}/triton", TORCHINDUCTOR_CACHE_DIR=f"{tmp}/inductor")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cold-child", variant, "--specs", str(path),
               "--batch", str(batch), "--dtypes", dtype, "--device", cfg.device, "--cold-target", target]
        if cfg.threads:
            cmd += ["--threads", str(cfg.threads)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=COLD_TIMEOUT_S)
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}") from None
    if "error" in result:
        raise RuntimeError(result["error"])
    return result["seconds"]


COLD_DOC = {
    "fused": "`dlc.load(spec, fuse=True)` + first forward",
    "optimized": '`dlc.load(spec, optimize="inference")` + first forward',
    "compile": "`torch.compile(model)` + first forward (building the model not counted)",
}


def cold_table(cfg: Config, variants: list[str], notes: list[str]) -> str:
    """Cold times per spec and dtype at the first batch size, inference, with their ratio where there are two."""
    batch = cfg.batches[0]
    rows = []
    for path in cfg.specs:
        try:
            input_specs(path)
        except SkipSpec:
            continue
        for dt in cfg.dtypes:
            seconds: list[float | None] = []
            for v in variants:
                try:
                    seconds.append(cold_in_fresh_process(path, v, batch, dt, cfg))
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    notes.append(f"{path.stem} {dt} cold `{v}`: {first_line(exc)}")
                    seconds.append(None)
            cells = ["—" if t is None else f"{t:.2f}" for t in seconds]
            if len(seconds) == 2:
                a, b = seconds
                cells.append("—" if a is None or b is None else f"{a / b:.1%}")
            rows.append([path.stem, dt, str(batch)] + cells)
    header = ["spec", "dtype", "batch"] + [f"{v} s" for v in variants]
    if len(variants) == 2:
        header.append(f"{variants[0]} / {variants[1]}")
    intro = ("Time to first output, in seconds, each in a fresh process with empty Triton / Inductor caches: "
             + "; ".join(f"{v} = {COLD_DOC[v]}" for v in variants) + ".")
    return intro + "\n\n" + md_table(header, rows)


# ---- CPU rewrites ----------------------------------------------------------------------------


def run_cpu_rewrites(cfg: Config) -> Report:
    """optimize='inference' against the reference model and torch.compile in eval mode on the CPU, timed
    interleaved; then the time to first output of optimize='inference' and of torch.compile."""
    report = Report()
    rows: list[list[str]] = []
    for path in [] if cfg.cold_only else cfg.specs:
        specs = input_specs(path)
        for batch in cfg.batches:
            rows += cpu_rows(path, specs, batch, cfg, report.notes)
            release_memory("cpu")
    if rows:
        compiled = COMPILE_OF_REFERENCE if "reference" in cfg.variants else VARIANT_DOC["compile"]
        doc = {**VARIANT_DOC, "compile": compiled}
        report.sections.append(
            "Variants: " + "; ".join(f"{v} = {doc[v]}" for v in cfg.variants) + ". fp32, eval mode, "
            f"`torch.no_grad()`, {torch.get_num_threads()} thread(s); median ms of {cfg.runs} runs after warm-up, "
            "the variants called in turn each run; ratios are the baseline's median / the variant's (above 1: the "
            "variant is faster); max abs diff compares outputs with the dlc eager module's on equal weights "
            "(batchnorm statistics randomised); minor faults / call is the median of the process's `ru_minflt` "
            "deltas over a call. Specs without a reference use the dlc eager module as the baseline and compile it.")
        report.sections.append(md_table(["spec", "batch", "variant", "median ms", "vs reference", "vs compile",
                                         "minor faults / call", "max abs diff"], rows))
    cold = [v for v in ("optimized", "compile") if v in cfg.variants]
    if cold and cfg.cold:
        report.sections.append(cold_table(cfg, cold, report.notes))
    return report


def cpu_rows(path: Path, specs: list[InputSpec], batch: int, cfg: Config, notes: list[str]) -> list[list[str]]:
    """Table rows for one spec and batch: check outputs against eager, then time interleaved."""
    models = build_models(path, cfg.variants, "cpu", torch.float32, notes)
    inputs = make_inputs(specs, batch, torch.float32, "cpu")
    steps = {name: make_step(model, inputs, "infer") for name, model in models.items()}
    reference = steps["eager"]()
    diffs: dict[str, float] = {}
    for name in list(steps):
        try:
            start = time.perf_counter()
            diffs[name] = max_abs_diff(steps[name](), reference)
            if name == "compile":
                notes.append(f"{path.stem} b{batch}: torch.compile's first call took "
                             f"{time.perf_counter() - start:.1f} s (Inductor's on-disk cache may have been warm)")
        except Exception as exc:  # torch.compile may lack a working C++ toolchain here
            notes.append(f"{path.stem} b{batch} `{name}` failed, not timed: {first_line(exc)}")
            del steps[name]
    medians, faults = interleaved_medians(steps, cfg.runs)
    base = medians.get("reference", medians["eager"])
    rows = [[path.stem, str(batch), name, fmt_ms(ms), fmt_ratio(base, ms), fmt_ratio(medians.get("compile"), ms),
             f"{faults[name]:,.0f}", fmt_diff(diffs[name])] for name, ms in medians.items()]
    for row in rows:  # progress of a long run, on stderr; the table comes at the end
        print("| " + " | ".join(row) + " |", file=sys.stderr, flush=True)
    return rows


# ---- recording -------------------------------------------------------------------------------


def device_description(device: str) -> str:
    """The GPU's name, or the CPU model and its core count."""
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"


def versions() -> str:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return (f"torch {torch.__version__}, triton {triton_version}, dlc {dlc.__version__}, "
            f"Python {platform.python_version()}")


def git_revision() -> str:
    """The checkout's commit, with ``+changes`` when the working tree differs from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+changes" if dirty else "")


def record(file: Path, body: str, cfg: Config, argv: Sequence[str], revision: str) -> None:
    """Append one dated section with the machine, versions, commit (``revision``, taken when the run started),
    command line and results to ``file``."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "CPU rewrites" if cfg.cpu_rewrites else "GPU run (--gpu)" if cfg.gpu else "per-spec"
    header = (f"## {now}: {title}, {device_description(cfg.device)}\n\n"
              f"- versions: {versions()}\n- commit: {revision}\n"
              f"- command: `python benchmarks/bench.py {shlex.join(argv)}`".rstrip() + "\n")
    file.parent.mkdir(parents=True, exist_ok=True)
    prefix = "" if file.exists() else "# Benchmarks\n"
    with file.open("a", encoding="utf-8") as f:
        f.write(f"{prefix}\n{header}\n{body}")


# ---- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.cold_child:
        return cold_child(args)
    revision = git_revision()  # the code measured, before anything is edited while a long run goes on
    try:
        cfg = resolve(args)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        report = run_cpu_rewrites(cfg) if cfg.cpu_rewrites else run_per_spec(cfg)
    except (BenchError, SkipSpec) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    body = report.markdown()
    print(body, end="")
    if args.record:
        record(args.record, body, cfg, argv, revision)
        print(f"recorded in {args.record}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
