"""Shared pytest configuration: the ``--update-golden`` option and paths used by several test files."""

from __future__ import annotations

import os

# The fused modules' Triton kernels run on CPU under the interpreter; it must be on before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = ROOT / "specs"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"

# Fused kernels against their PyTorch references, by dtype (max abs difference, on values of order 1). Kernels
# compute float32 and bfloat16 in float32 and float64 in float64; bfloat16 allows for its own rounding of the
# reference's intermediate results.
KERNEL_ATOL = {"float64": 1e-10, "float32": 2e-5, "bfloat16": 3e-2}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* from the current compiler output instead of comparing against it",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was started with ``--update-golden``."""
    return bool(request.config.getoption("--update-golden"))

# tests/golden/*.py are generated networks, not tests: never collect them (a spec named *_test.dln would be).
collect_ignore_glob = ["golden/*"]
