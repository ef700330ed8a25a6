#!/usr/bin/env python3
"""The generated U-Net at two commits against its hand-written twin: what generated code costs.

Loads tests/golden/unet.py (the code ``dlc compile specs/unet.dln`` writes) as it is now and as it was at
``--before`` (a git revision), and the twin of benchmarks/references.py, all with the same weights; checks
that the three agree, then calls them in turn (rotating order) at batch 8 on one thread under ``no_grad`` and
prints, per module, the median ms per call, its ratio to the twin and the median minor page faults per call
(``ru_minflt``) as a Markdown table.

    .venv/bin/python benchmarks/unet_cost.py --before 4dda858 --runs 41
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from references import UNet
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = "tests/golden/unet.py"


def load_generated(source: str, name: str) -> nn.Module:
    """The ``UNet`` class of a generated module's source, instantiated."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.UNet()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="git revision whose generated U-Net is compared")
    p.add_argument("--runs", type=int, default=41)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    old = subprocess.run(["git", "show", f"{args.before}:{GOLDEN}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    torch.manual_seed(0)
    twin = UNet().eval()
    models = {f"generated at {args.before}": load_generated(old, "unet_before"),
              "generated now": load_generated((ROOT / GOLDEN).read_text(encoding="utf-8"), "unet_now"),
              "hand-written twin": twin}
    x = torch.randn(args.batch, 1, 64, 64)
    times: dict[str, list[float]] = {n: [] for n in models}
    faults: dict[str, list[int]] = {n: [] for n in models}
    names = list(models)
    with torch.no_grad():
        want = twin(x)
        for m in models.values():
            m.load_state_dict(twin.state_dict(), strict=True)
            m.eval()
            torch.testing.assert_close(m(x), want)
        for i in range(args.runs):
            for n in names[i % 3:] + names[:i % 3]:
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                models[n](x)
                times[n].append((time.perf_counter() - start) * 1e3)
                faults[n].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    base = statistics.median(times["hand-written twin"])
    print("| module | median ms | / twin | minor faults / call |\n| --- | ---: | ---: | ---: |")
    for n in names:
        ms = statistics.median(times[n])
        print(f"| {n} | {ms:.1f} | {ms / base:.2f}x | {statistics.median(faults[n]):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
