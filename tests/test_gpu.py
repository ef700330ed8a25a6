"""GPU tier: the fused modules with compiled Triton kernels on CUDA (skipped where there is no GPU).

The kernels are compiled only where TRITON_INTERPRET is off, which must be decided before triton is
imported, so the check runs tests/gpu_check.py in a fresh process without it.
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


def test_fused_modules_on_cuda():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("gpu_check.py")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
