"""GPU tier: the fused modules with compiled Triton kernels on CUDA (skipped where there is no GPU).

The kernels are compiled only where TRITON_INTERPRET is off, which must be decided before triton is
imported, so the checks run tests/gpu_check.py and benchmarks/bench.py in fresh processes without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none"),
]


ROOT = Path(__file__).resolve().parent.parent


def compiled_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_fused_modules_on_cuda():
    """Every spec's fused module (and fused + optimize="inference" in eval) against the plain one, fp32 and bf16."""
    script = Path(__file__).with_name("gpu_check.py")
    r = subprocess.run([sys.executable, str(script)], env=compiled_env(), capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr


def test_gpu_benchmark_short_run():
    """`bench.py --gpu` as the unattended run does it, cut to two specs and a 3-minute budget: every table is
    printed, every kernel of the bandwidth table launched, and nothing is dropped."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--gpu", "--specs", "mlp,resnet18", "--repeat",
            "5", "--budget", "180"]
    r = subprocess.run(argv, env=compiled_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    for row in ("| device copy | fp32 |", "| relu -> scale | bf16 |", "| resnet18 | 32 | bf16 | train |",
                "| mlp | 32 | fp32 | infer |"):
        assert row in r.stdout, row
    assert "fallback" not in r.stdout and "dropped" not in r.stdout and "stopped" not in r.stdout, r.stdout
