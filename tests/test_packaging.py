"""dlc as a user gets it: a wheel, installed into a fresh virtual environment, used from outside the checkout.

pyproject lists its packages explicitly (the top-level folders map onto one ``dlc`` namespace), so a folder
of code or a data file missing from it breaks only a normal install: ``pip install .`` once left out
dlc.backends.triton, and ``dlc compile`` failed with ModuleNotFoundError while every test, run against the
editable install, passed. The fast test checks the package list; the slow ones build the wheel as
``pip install .`` does, install it with the dependencies it declares (and the ``triton`` extra) into a new
venv, and run every command, the diagram and a fused forward pass from a directory outside the checkout.
The wheel and its venv are built once per run, shared by the pytest-xdist workers.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent
PREFIX = {"dlc": "dlc", "grammar": "dlc.grammar", "compiler": "dlc.compiler", "backends": "dlc.backends"}
# What the wheel build copies: the checkout less what is built or installed in it, and the git metadata.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".ruff_cache")
# Files read at run time that are not Python modules, or are read as text (the runtime embedded into fused files).
# torch, triton and the CUDA libraries of torch's wheel (about 5 GB, which took pip most of a minute and a half to
# unpack again): the new venv reads this environment's copies through a .pth file. pip still resolves the wheel's
# declared dependencies against them (a distribution on sys.path counts as installed) and installs everything
# else (lark, numpy, torch's own small dependencies) from its indexes; that the wheel declares torch and triton,
# which this would hide, is checked on its metadata.
SHARED = ("torch", "triton")
SHARED_PREFIXES = ("nvidia-", "nvidia_", "cuda-", "cuda_")
DATA_FILES = ["dlc/grammar/dln.lark", "dlc/backends/torch/templates/module.py.j2",
              "dlc/backends/triton/runtime/common.py", "dlc/backends/triton/runtime/recurrent.py"]

# A spec like the bundled ones: an imported block file, a repeat, and a kernel of each kind under --fuse
# (a convolution's epilogue, an elementwise chain, a matmul epilogue and a row kernel).
BLOCKS = """\
block ConvUnit(c: int) {
    input x
    return x -> conv: conv2d(c, k=3, pad=1, bias=false) -> bn: batchnorm -> relu
}
"""
NET = """\
import "blocks/units.dln"

network Small(classes: int = 5) {
    input x: [3, 12, 12]
    f = x -> stem: ConvUnit(8) -> maxpool(2) -> body: ConvUnit(8) * 2 -> flatten
    h = f -> fc1: linear(32) -> gelu -> ln: layernorm
    output y = (h * 0.5 + h) -> fc2: linear(classes) -> log_softmax
}
"""
# Runs in the installed venv: the dlc that imports is the installed one; the fused module's kernels launch
# (under the Triton interpreter, on CPU) and it computes what the plain module computes.
LOAD = """\
import sys
import torch
import dlc

assert dlc.__file__.startswith(sys.prefix), dlc.__file__
torch.manual_seed(0)
plain = dlc.load("net.dln").eval()
fused = dlc.load("net.dln", fuse=True).eval()
fused.load_state_dict(plain.state_dict())
x = torch.randn(2, 3, 12, 12)
with torch.no_grad():
    want, got = plain(x), fused(x)
assert got.shape == (2, 5), got.shape
torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
ns = sys.modules[type(fused).__module__]
kernels = {k.forward.__name__ for k in vars(ns).values() if isinstance(k, ns.ElementwiseKernel)}
assert len(kernels) == 5 and set(ns.LAUNCHES) == kernels, (kernels, ns.LAUNCHES)
print("ok", sorted(kernels))
"""


def test_every_code_folder_is_a_listed_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, package in PREFIX.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([package, *rel.parts]))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; extra: {sorted(listed - found)}"


def test_triton_is_an_extra_and_the_tests_need_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert not any(dep.startswith("triton") for dep in project["dependencies"])
    # numpy: the Triton interpreter needs it (installed without it, the kernels of the slow tests below never ran)
    assert [dep.split(">")[0] for dep in extras["triton"]] == ["triton", "numpy"]
    assert "dlc[triton]" in extras["test"] and any(dep.startswith("ruff") for dep in extras["test"])


@dataclass
class Installed:
    """A wheel of the checkout, installed into its own venv, and a working directory outside the checkout."""

    wheel: Path
    bin: Path
    work: Path

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """A command of the venv (``dlc``, ``python``) run in the working directory; it must succeed."""
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TRITON_INTERPRET")}
        r = subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.work, env={**clean, **env},
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r


def _check_call(*args: object) -> None:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, f"{' '.join(map(str, args))} exited {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr}"


def _share_heavy(folder: Path) -> None:
    """Links in ``folder`` to the top-level folders and metadata of :data:`SHARED`'s distributions."""
    folder.mkdir()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"].lower()
        if name in SHARED or name.startswith(SHARED_PREFIXES):
            tops = {f.parts[0] for f in dist.files or () if f.parts[0] != ".."}  # ".." are scripts in bin/
            for top in tops:
                if not (folder / top).exists():  # namespace folders (nvidia/, cuda/) are shared by several
                    (folder / top).symlink_to(Path(str(dist.locate_file(top))))


def _build(base: Path) -> None:
    """Build the wheel into ``base/dist`` as ``pip install .`` does (from a copy: the build writes into the
    source tree) and install it with its declared dependencies and the triton extra into ``base/venv``."""
    src, dist, env = base / "src", base / "dist", base / "venv"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    _check_call(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", dist,
                src)
    shutil.rmtree(src, ignore_errors=True)
    (wheel,) = dist.glob("dlc-*.whl")
    _check_call(sys.executable, "-m", "venv", env)
    _share_heavy(base / "shared")
    (site,) = (env / "lib").glob("python3*/site-packages")
    (site / "shared.pth").write_text(f"{base / 'shared'}\n", encoding="utf-8")
    _check_call(env / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[triton,editors]")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel installed into its own venv (see :func:`_build`), built by the first pytest-xdist worker that
    needs it and reused by the others, and the spec files laid out in a directory of this worker's."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    base = root / "installed"
    with FileLock(str(root / "installed.lock")):
        if not (base / "venv" / "done").exists():
            shutil.rmtree(base, ignore_errors=True)  # a build that failed half-way
            base.mkdir()
            _build(base)
            (base / "venv" / "done").touch()
    work = tmp_path_factory.mktemp("work")
    (work / "blocks").mkdir()
    (work / "blocks" / "units.dln").write_text(BLOCKS, encoding="utf-8")
    (work / "net.dln").write_text(NET, encoding="utf-8")
    (wheel,) = (base / "dist").glob("dlc-*.whl")
    return Installed(wheel, base / "venv" / "bin", work)


@pytest.mark.slow
def test_wheel_carries_code_and_data(installed: Installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    missing = [f for f in DATA_FILES if f not in names]
    assert not missing, f"the wheel lacks {missing}"
    for top, package in PREFIX.items():
        for module in (ROOT / top).rglob("*.py"):
            rel = "/".join([*package.split("."), *module.relative_to(ROOT / top).parts])
            assert rel in names, f"the wheel lacks {rel}"
    assert not any(n.startswith(("tests/", "specs/", "grammar/", "compiler/", "backends/")) for n in names)
    # what pip installs with it: torch always, triton and numpy with the triton extra
    (name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = zipfile.ZipFile(installed.wheel).read(name).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(r.startswith("torch") and "extra" not in r for r in requires), requires
    for dep in ("triton", "numpy"):
        assert any(r.startswith(dep) and "extra == \"triton\"" in r for r in requires), requires


@pytest.mark.slow
def test_installed_commands(installed: Installed):
    assert installed.run("dlc", "--version").stdout.strip().endswith("0.1.0")
    assert "Small" in installed.run("dlc", "check", "net.dln").stdout
    summary = installed.run("dlc", "summary", "net.dln", "--set", "classes=7").stdout
    assert "body.1" in summary and "[B, 7]" in summary
    assert "nodes:" in installed.run("dlc", "ir", "net.dln").stdout
    installed.run("dlc", "ir", "net.dln", "--text")
    installed.run("dlc", "compile", "net.dln", "-o", "plain.py")
    installed.run("dlc", "compile", "net.dln", "--optimize", "inference", "-o", "inference.py")
    explain = installed.run("dlc", "compile", "net.dln", "--fuse", "--explain-fusion", "-o", "fused.py").stderr
    assert "fusion groups" in explain
    fused = (installed.work / "fused.py").read_text(encoding="utf-8")
    assert "ElementwiseKernel(" in fused and "LinearKernel(" in fused and "RowKernel(" in fused
    assert "dlc" not in {line.split()[1].split(".")[0] for line in fused.splitlines()
                         if line.startswith(("import ", "from "))}
    # the written module runs on its own, its kernels interpreted on CPU
    code = ("import torch, fused; m = fused.Small().eval(); y = m(torch.randn(2, 3, 12, 12)); "
            "print(tuple(y.shape), sorted(fused.LAUNCHES))")
    out = installed.run("python", "-c", code, TRITON_INTERPRET="1").stdout
    assert out.startswith("(2, 5) ['fused_") and "_forward" in out


@pytest.mark.slow
def test_installed_tools(installed: Installed):
    """The commands that need no torch, and the Pygments lexer found through the wheel's entry point."""
    installed.run("python", "-c", "import shutil; shutil.copy('net.dln', 'tools.dln')")
    installed.run("dlc", "fmt", "tools.dln")
    installed.run("dlc", "fmt", "--check", "tools.dln")
    report = json.loads(installed.run("dlc", "check", "tools.dln", "--format", "json").stdout)
    assert report["ok"] and report["network"] == "Small" and report["diagnostics"] == []
    assert "the networks are the same" in installed.run("dlc", "diff", "net.dln", "tools.dln").stdout
    html = installed.run("python", "-m", "pygments", "-l", "dln", "-f", "html", "tools.dln").stdout
    assert '<span class="kd">network</span>' in html


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make setup installs it)")
def test_installed_render(installed: Installed):
    installed.run("dlc", "render", "net.dln", "-o", "net.svg")
    svg = (installed.work / "net.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "</svg>" in svg and "ConvUnit" in svg


@pytest.mark.slow
def test_installed_load_runs_the_fused_kernels(installed: Installed):
    out = installed.run("python", "-c", LOAD, TRITON_INTERPRET="1").stdout
    assert out.startswith("ok ['fused_"), out
