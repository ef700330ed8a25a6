"""Shared pytest configuration: the ``--update-golden`` option, paths used by several test files, the check that a
fused module's Triton kernels really ran (not its PyTorch fallback), and spec files rejected as a user sees it."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

# The fused modules' Triton kernels run on CPU under the interpreter; it must be on before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
# The pass manager verifies the IR after every pass (and names the pass that broke it), in the CLI's subprocesses too.
os.environ.setdefault("DLC_VERIFY_PASSES", "1")
# Under pytest-xdist (`make test` runs one worker per core) each worker computes with one thread: torch's own
# threads would otherwise compete with the other workers for the same cores. Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

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


def generated_module(model: Any) -> types.ModuleType:
    """The generated Python module that a model from ``dlc.load`` or ``Compiled.instantiate`` was defined in."""
    return sys.modules[type(model).__module__]


def expected_kernels(model: Any, backward: bool) -> set[str]:
    """The Triton kernels a run of the fused ``model`` must launch.

    Every generated kernel's forward kernel (and backward kernel, when ``backward``), and the step kernels of
    every LSTM / GRU layer where the module carries the recurrent runtime (``fused_recurrent``).
    """
    ns = generated_module(model)
    passes = {"forward": "fwd", "backward": "bwd"} if backward else {"forward": "fwd"}
    names = set()
    kernel_class = getattr(ns, "ElementwiseKernel", None)  # the base of every kernel; absent from plain modules
    for kernel in vars(ns).values():
        if kernel_class is not None and isinstance(kernel, kernel_class):
            names.update(getattr(kernel, attr).__name__ for attr in passes)
    if hasattr(ns, "recurrent_forward"):
        for layer in model.modules():
            for cell, cls in (("lstm", ns.nn.LSTM), ("gru", ns.nn.GRU)):
                if isinstance(layer, cls):
                    names.update(f"_rnn_{cell}_{short}_kernel" for short in passes.values())
    return names


def assert_kernels_ran(model: Any, backward: bool = False) -> dict[str, int]:
    """Each kernel of :func:`expected_kernels` launched since the module's ``LAUNCHES`` was last cleared.

    A fused module computes the same function with PyTorch ops wherever its kernels cannot run, so equal outputs
    alone prove nothing about the kernels: this is what makes a kernel test fail when the Triton path is not
    taken. Returns the launch counts.
    """
    ns = generated_module(model)
    expected = expected_kernels(model, backward)
    assert expected, "the fused module defines no Triton kernel"
    missing = sorted(name for name in expected if not ns.LAUNCHES.get(name))
    assert not missing, f"Triton kernels that never ran (the PyTorch fallback ran instead): {missing}"
    return dict(ns.LAUNCHES)


def assert_no_kernels(model: Any) -> None:
    """No Triton kernel of the module launched (it has none, or it took the PyTorch path)."""
    assert getattr(generated_module(model), "LAUNCHES", {}) == {}


# tests/golden/*.py are generated networks, not tests: never collect them (a spec named *_test.dln would be).
collect_ignore_glob = ["golden/*"]


def write_spec(tmp_path: Path, text: str, name: str = "net.dln") -> Path:
    """``text`` as the spec file ``tmp_path/name``."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def cli_rejects(tmp_path: Path, text: str, code: str, where: str, *parts: str) -> str:
    """``dlc compile`` of the spec ``text`` (as net.dln) fails as a user sees it: exit 1, ``net.dln:LINE:COL:
    error[code]`` at ``where``, each of ``parts`` in what it prints, no traceback and no output file. Returns
    stderr."""
    path = write_spec(tmp_path, text)
    out = tmp_path / "out.py"
    r = subprocess.run([sys.executable, "-m", "dlc", "compile", str(path), "-o", str(out)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"net.dln:{where}: error[{code}]" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    for part in parts:
        assert part in r.stderr, r.stderr
    return r.stderr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Test files with tests marked slow run first: under pytest-xdist the last tests to finish are then short
    ones, instead of one whole network keeping a worker busy while the other core waits. A file's tests stay
    together and in order, so its module-scoped fixtures are still built once."""
    heavy = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in heavy)
