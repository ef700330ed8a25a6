"""Effective memory bandwidth of dlc's elementwise kernels against a device copy.

An elementwise kernel reads each input once and writes each output once, so its effective bandwidth is
(bytes of the inputs + bytes of the outputs) / time. The ceiling it is compared with is a plain device copy,
``torch.empty_like(x).copy_(x)``: 2 x the tensor's bytes per call. Each chain below is a one-line spec that
``fuse=True`` turns into one kernel; it is timed as the fused module (one launch) and as the plain module
(one PyTorch op per layer), on a large flat tensor.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import dlc

# name -> (the inputs' names, the spec's output expression); every input is [n]
CHAINS: dict[str, tuple[tuple[str, ...], str]] = {
    "relu -> scale": (("x",), "x -> relu -> scale(2.0)"),
    "gelu -> scale": (("x",), "x -> gelu -> scale(0.5)"),
    "add -> relu": (("x", "b"), "x + b -> relu"),
    "silu -> mul": (("x", "g"), "silu(x) * g"),
}


def chain_spec(inputs: tuple[str, ...], expr: str) -> str:
    """The spec text of one chain over flat inputs of a parameter length ``n``."""
    decl = "\n".join(f"    input {name}: [n]" for name in inputs)
    return f"network Chain(n: int = 1024) {{\n{decl}\n    output y = {expr}\n}}\n"


def gbps(nbytes: int, ms: float) -> float:
    """Gigabytes (1e9 bytes) per second for ``nbytes`` moved in ``ms`` milliseconds."""
    return nbytes / (ms * 1e-3) / 1e9


def moved_bytes(inputs: tuple[torch.Tensor, ...], outputs: tuple[torch.Tensor, ...]) -> int:
    """What an elementwise pass must move at least: every input read once, every output written once."""
    return sum(t.numel() * t.element_size() for t in (*inputs, *outputs))


@dataclass
class BandwidthRow:
    """One chain (or the copy) in one dtype: milliseconds and GB/s of the fused and the plain module."""

    name: str
    dtype: str
    elements: int
    fused_ms: float
    plain_ms: float | None
    nbytes: int
    launched: bool  # whether the fused module launched its Triton kernel (False: it ran its PyTorch fallback)


def copy_row(n: int, dtype: torch.dtype, dtype_name: str, device: str,
             measure: Callable[[Callable[[], Any]], float]) -> BandwidthRow:
    """The ceiling: ``torch.empty_like(x).copy_(x)``."""
    x = torch.randn(n, device=device).to(dtype)
    ms = measure(lambda: torch.empty_like(x).copy_(x))
    return BandwidthRow("device copy", dtype_name, n, ms, None, 2 * x.numel() * x.element_size(), True)


def chain_rows(n: int, dtype: torch.dtype, dtype_name: str, device: str,
               measure: Callable[[Callable[[], Any]], float]) -> list[BandwidthRow]:
    """Every chain of :data:`CHAINS` at ``n`` elements, fused and plain, in eval mode under ``no_grad``."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlc-bench-bw-") as tmp:
        for name, (inputs, expr) in CHAINS.items():
            path = Path(tmp) / "chain.dln"
            path.write_text(chain_spec(inputs, expr), encoding="utf-8")
            plain = dlc.load(path, n=n).to(device=device, dtype=dtype).eval()
            fused = dlc.load(path, n=n, fuse=True).to(device=device, dtype=dtype).eval()
            gen = torch.Generator().manual_seed(0)
            xs = tuple(torch.randn(1, n, generator=gen).to(device=device, dtype=dtype) for _ in inputs)
            runtime = sys.modules[type(fused).__module__]
            runtime.LAUNCHES.clear()
            with torch.no_grad():
                out = fused(*xs)
                torch.testing.assert_close(out, plain(*xs), rtol=2e-2, atol=2e-2)
                launched = bool(sum(runtime.LAUNCHES.values()))
                fused_ms = measure(functools.partial(fused, *xs))
                plain_ms = measure(functools.partial(plain, *xs))
            rows.append(BandwidthRow(name, dtype_name, n, fused_ms, plain_ms, moved_bytes(xs, (out,)), launched))
    return rows
