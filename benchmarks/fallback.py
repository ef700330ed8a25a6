#!/usr/bin/env python3
"""The fused modules' CPU fallback against the plain module: ``dlc.load(spec, fuse=True)`` vs ``dlc.load(spec)``.

On a CPU without the Triton interpreter no fused kernel can run, and a fused module runs the unfused layers' ops
(docs/fusion.md, "Capture and export"): it should cost what the plain module costs. This script times both, in
eval mode under ``torch.no_grad`` (inference) and as a training step (forward, loss, backward), on one thread,
the two modules timed in turn run by run (interleaved) so that a shared machine's noise hits both alike, and
prints the medians and their ratio as a Markdown table (docs/benchmarks.md).

    python benchmarks/fallback.py                       # the five CNNs, batch 8
    python benchmarks/fallback.py --specs resnet18 --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

if os.environ.get("TRITON_INTERPRET") == "1":  # the interpreter would run the kernels: not the fallback
    sys.exit("fallback.py: unset TRITON_INTERPRET (it makes fused modules run their kernels on the CPU)")

import torch

import dlc

ROOT = Path(__file__).resolve().parent.parent
SPECS = ("resnet18", "resnet50", "densenet121", "googlenet", "mobilenet_v2")


def steps(name: str, batch: int) -> dict[str, dict[str, Callable[[], Any]]]:
    """Per mode (``infer``, ``train``), the step of the plain and of the fused module (same weights and input)."""
    path = ROOT / "specs" / f"{name}.dln"
    plain = dlc.load(path)
    fused = dlc.load(path, fuse=True)
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 3, 224, 224)

    def infer(model: torch.nn.Module) -> Callable[[], Any]:
        def step() -> Any:
            model.eval()
            with torch.no_grad():
                return model(x)
        return step

    def train(model: torch.nn.Module) -> Callable[[], Any]:
        def step() -> None:
            model.train()
            y = model(x)
            loss = sum(t.float().square().mean() for t in (y if isinstance(y, tuple) else (y,)))
            model.zero_grad(set_to_none=True)
            loss.backward()
        return step

    return {"infer": {"plain": infer(plain), "fused": infer(fused)},
            "train": {"plain": train(plain), "fused": train(fused)}}


def interleaved(pair: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    """Median milliseconds of each step, the steps run in turn ``runs`` times after one warm-up each."""
    for step in pair.values():
        step()
    times: dict[str, list[float]] = {k: [] for k in pair}
    for _ in range(runs):
        for k, step in pair.items():
            start = time.perf_counter()
            step()
            times[k].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=list(SPECS), help="spec names in specs/")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per module and mode")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"| spec | mode | plain ms | fused ms | fused / plain |  (batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.runs} interleaved runs)")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in args.specs:
        for mode, pair in steps(name, args.batch).items():
            ms = interleaved(pair, args.runs)
            print(f"| {name} | {mode} | {ms['plain']:.1f} | {ms['fused']:.1f} | {ms['fused'] / ms['plain']:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
