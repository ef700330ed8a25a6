"""External PyTorch layers (`extern`): declared by dotted import path with a shape rule, called like a block.

Compared with the torch.nn classes themselves (SiLU, Bilinear with two inputs) and with a module written to a
test folder on sys.path; the injection attempts are each a positioned diagnostic (exit 1, no code written);
`dlc compile` of a spec with externs never imports torch, and a missing module fails at load time with Python's
own ImportError (ModuleNotFoundError) raised by the generated module's import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dlc
from conftest import cli_rejects, write_spec


def _dlc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlc", *args], capture_output=True, text=True, timeout=120,
                          env=env)


TORCH_LAYERS = """
extern Swish = "torch.nn.SiLU"
extern Bilin(in1_features: int, in2_features: int, out_features: int, bias: bool = true) = "torch.nn.Bilinear" {
    shape = [out_features]
}
network Pair {
    input a: [16]
    input b: [12]
    h = a -> Swish() -> act: Swish()
    output y = (h, b) -> bl: Bilin(16, 12, 8)
    output z = Bilin(16, 12, out_features=4, bias=false, h, b)
}
"""


def test_torch_layers_by_path_match_the_classes(tmp_path: Path) -> None:
    compiled = dlc.compile(write_spec(tmp_path, TORCH_LAYERS))
    src = compiled.source
    assert "import torch.nn\n" in src
    assert "self.act = external_layer(torch.nn.SiLU)" in src
    assert "torch.nn.Bilinear, in1_features=16, in2_features=12, out_features=8, bias=True" in src
    assert "Parameters: 0 + external layers (not counted)" in src
    model = compiled.instantiate()
    assert isinstance(model.act, torch.nn.SiLU) and isinstance(model.bl, torch.nn.Bilinear)
    assert model.z.bias is None
    torch.manual_seed(0)
    a, b = torch.randn(3, 16), torch.randn(3, 12)
    y, z = model(a, b)
    h = torch.nn.functional.silu(torch.nn.functional.silu(a))
    torch.testing.assert_close(y, model.bl(h, b))
    torch.testing.assert_close(y, torch.nn.functional.bilinear(h, b, model.bl.weight, model.bl.bias))
    assert z.shape == (3, 4)
    # the summary counts the parameters by constructing the classes: 16*12*8 + 8 and 16*12*4
    text = compiled.summary()
    assert "external(Bilinear)" in text and "1,544" in text and "768" in text
    assert "total parameters: 2,312" in text


MODULE = '''
import torch


class PoolTime(torch.nn.Module):
    """Mean over time, then a learnt scale per feature."""

    def __init__(self, features, power=1.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((features,), 2.0))
        self.power = power

    def forward(self, x):
        return x.mean(dim=1) ** self.power * self.scale
'''

POOLED = """
extern Pool(features: int, power: float = 1) = "mylayers.pooling.PoolTime" { shape = [x[1]] }
network Pooled {
    input seq: [T, 6]
    output y = seq -> linear(6) -> p: Pool(6) -> linear(2)
}
"""


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package ``mylayers.pooling`` in a folder on sys.path (and on PYTHONPATH for the CLI)."""
    pkg = tmp_path / "lib" / "mylayers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "pooling.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    return tmp_path / "lib"


def test_a_module_of_the_user_is_imported_and_called(tmp_path: Path, on_path: Path) -> None:
    compiled = dlc.compile(write_spec(tmp_path, POOLED))
    assert "import mylayers.pooling\n" in compiled.source
    assert "self.p = external_layer(mylayers.pooling.PoolTime, features=6, power=1.0)" in compiled.source
    model = compiled.instantiate()
    assert "p.scale" in model.state_dict()
    x = torch.randn(2, 5, 6)
    expected = model.linear_1(model.linear_0(x).mean(dim=1) * 2.0)
    torch.testing.assert_close(model(x), expected)
    assert compiled.graph.types[compiled.graph.outputs[0][1]].shape == (2,)
    # the CLI's summary imports it to count its 6 parameters; without the folder the count is unknown
    env = dict(os.environ, PYTHONPATH=str(on_path))
    r = _dlc("summary", str(tmp_path / "net.dln"), env=env)
    assert r.returncode == 0 and "external(PoolTime)" in r.stdout and "total parameters: 62" in r.stdout, r.stdout
    r = _dlc("summary", str(tmp_path / "net.dln"), env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0 and "total parameters: 56 + unknown (external layers: p)" in r.stdout, r.stdout


def test_compile_never_imports_torch_and_a_missing_module_fails_at_load(tmp_path: Path) -> None:
    path = write_spec(tmp_path, POOLED.replace("mylayers.pooling", "nowhere_to_be_found.layers"))
    code = ("import sys, dlc.cli\n"
            f"rc = dlc.cli.main(['compile', {str(path)!r}, '-o', {str(tmp_path / 'out.py')!r}])\n"
            "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "import nowhere_to_be_found.layers" in (tmp_path / "out.py").read_text(encoding="utf-8")
    with pytest.raises(ModuleNotFoundError, match="nowhere_to_be_found"):
        dlc.load(path)


def test_an_extern_in_a_group_and_at_every_time_step(tmp_path: Path) -> None:
    text = """
extern Swish = "torch.nn.SiLU"
extern Proj(in_features: int, out_features: int) = "torch.nn.Linear" { shape = [out_features] }
network N {
    input x: [T, 8]
    a = x -> g: (linear(8) -> Swish())
    output y = a -> td: timedistributed(Proj(8, 3))
}
"""
    model = dlc.load(write_spec(tmp_path, text))
    assert isinstance(model.g[1], torch.nn.SiLU) and isinstance(model.td, torch.nn.Linear)
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(model(x), model.td(model.g(x)))


@pytest.mark.parametrize("path", ["os; import sys", "__import__('os').system", "torch.nn.SiLU()", "", "SiLU",
                                  "torch..SiLU", "torch.nn.class", "torch.nn.__class__", "nn.ReLU",
                                  "torch.nn.SiLU\\nimport os"])
def test_a_path_that_is_not_dotted_identifiers_is_refused(tmp_path: Path, path: str) -> None:
    text = f'extern S = "{path}"\nnetwork N {{\n    input a: [4]\n    output y = a -> S()\n}}\n'
    cli_rejects(tmp_path, text, "bad-extern", "1:12", "not a class path")


@pytest.mark.parametrize("text, code, where, parts", [
    ("""
extern Bilin(in1_features: int, in2_features: int, out_features: int) = "torch.nn.Bilinear" { shape = out_features }
network N {
    input a: [4]
    output y = (a, a) -> Bilin(4, 4, 2)
}
""", "bad-shape", "2:103", ["must give a list of sizes"]),
    ("""
extern P = "torch.nn.Identity" { shape = [x[0], 0] }
network N {
    input a: [4]
    output y = a -> P()
}
""", "bad-shape", "2:42", ["the size the integer 0"]),
    ("""
extern P = "torch.nn.Identity" { shape = ["T"] }
network N {
    input a: [4]
    output y = a -> P()
}
""", "bad-shape", "2:42", ["symbolic dimension of an input"]),
    ("""
extern P = "torch.nn.Identity" { shap = [4] }
network N {
    input a: [4]
    output y = a -> P()
}
""", "bad-extern", "2:34", ["no entry `shap`", "did you mean `shape`"]),
    ("""
extern P(k: int) = "torch.nn.Identity"
network N {
    input a: [4]
    output y = a -> P(k=2.5)
}
""", "type-mismatch", "5:25", ["parameter `k` is int"]),
    ("""
extern P = "torch.nn.Identity"
network N {
    input a: [4]
    output y = a -> P(k=2)
}
""", "unknown-argument", "5:23", ["`P` has no argument `k`"]),
    ("""
extern Two = "torch.nn.Identity" { shape = [[4], [4]] }
network N {
    input a: [4]
    output y = a -> Two()
}
""", "tuple-mismatch", "5:16", []),
])
def test_bad_declarations_and_calls_are_positioned_diagnostics(tmp_path: Path, text: str, code: str, where: str,
                                                               parts: list[str]) -> None:
    cli_rejects(tmp_path, text, code, where, *parts)


def test_several_outputs_from_the_rule(tmp_path: Path, on_path: Path) -> None:
    (on_path / "halves_mod.py").write_text(
        "import torch\n\nclass Halves(torch.nn.Module):\n    def forward(self, x):\n        return x.chunk(2, -1)\n",
        encoding="utf-8")
    text = """
extern Halves = "halves_mod.Halves" { shape = [[x[0], x[1] // 2], [x[0], x[1] // 2]] }
network N {
    input a: [3, 8]
    lo, hi = a -> Halves()
    output y = lo - hi
}
"""
    compiled = dlc.compile(write_spec(tmp_path, text))
    assert compiled.graph.types[compiled.graph.outputs[0][1]].shape == (3, 4)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(compiled.instantiate()(x), x[..., :4] - x[..., 4:])


def test_an_extern_naming_a_function_is_never_called(tmp_path: Path) -> None:
    """An extern names a callable by path; only an nn.Module class is ever constructed. Naming
    `subprocess.call` with a command of the spec's choosing runs nothing: loading the module raises TypeError
    (the generated `external_layer` checks the class) and `dlc summary` counts "unknown" without calling it."""
    marker = tmp_path / "pwned"
    path = write_spec(tmp_path, f"""
extern Run(args: list[str]) = "subprocess.call" {{ shape = [x[0]] }}
network Bad {{
    input x: [4]
    output y = x -> Run(["touch", "{marker}"])
}}
""")
    source = dlc.compile(path).source
    assert "external_layer(" in source and "subprocess.call," in source
    r = _dlc("summary", str(path))
    assert r.returncode == 0 and "unknown (external layers: run_0)" in r.stdout, r.stdout + r.stderr
    with pytest.raises(TypeError, match="an extern layer must be an nn.Module class"):
        dlc.load(path)
    assert not marker.exists()
