"""Generated modules are ruff-clean: ``ruff check`` and ``ruff format --check`` at 120 columns find nothing.

Every spec of specs/ is compiled plain, ``--fuse`` (with the fused recurrent layers too, so the recurrent
runtime is embedded) and ``--optimize inference``, and every fused case of tests/fused_cases/ with ``--fuse``.
The backend writes its code laid out as the formatter would (backends/torch/layout.py) and never runs ruff.

The rule set is pycodestyle (E, W), pyflakes (F), isort (I) and bugbear (B). E/W/F are ruff's defaults;
isort keeps the import block canonical, and bugbear flags patterns that are bugs more often than style (a
``zip`` that silently truncates, loop variables captured by closures, mutable defaults), which matter in
code that runs a model. Pure style families are left out: UP would rewrite the fixed ``coding`` line, which
the generated file keeps on purpose, and RET/SIM would contradict the one-statement-per-layer shape of
``forward``. ``--isolated`` keeps any ruff configuration on the machine out of the check.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import yaml
from test_docs import COMPILED as DOC_EXAMPLES
from test_docs import _files_before

import dlc
from dlc.backends.torch.layout import layout, signature

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.dln"))
CASES = sorted((ROOT / "tests" / "fused_cases").glob("*.dln"))
VARIANTS = {
    "plain": {},
    "fused": {"fuse": True, "fused_recurrent": True},
    "inference": {"optimize": "inference"},
}
RUFF_OPTIONS = ["--isolated", "--line-length", "120", "--target-version", "py310"]
RULES = "E,W,F,I,B"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                                reason="ruff is not installed (it comes with the test extra: pip install -e '.[test]')")


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every spec's generated modules, one file each, in one folder."""
    out = tmp_path_factory.mktemp("generated")
    for spec in SPECS:
        for variant, options in VARIANTS.items():
            (out / f"{spec.stem}_{variant}.py").write_text(dlc.compile(spec, **options).source, encoding="utf-8")
    for case in CASES:
        (out / f"case_{case.stem}.py").write_text(dlc.compile(case, fuse=True).source, encoding="utf-8")
    for example in DOC_EXAMPLES:  # the language reference's examples use constructs the bundled specs do not
        if "error" in example.directives:
            continue
        work = tmp_path_factory.mktemp(f"doc{example.line}")
        for name, text in _files_before(example).items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text, encoding="utf-8")
        (work / "net.dln").write_text(example.text, encoding="utf-8")
        params = yaml.safe_load(example.directives["params"]) if "params" in example.directives else {}
        for variant, options in VARIANTS.items():
            source = dlc.compile(work / "net.dln", **params, **options).source
            (out / f"doc{example.line}_{variant}.py").write_text(source, encoding="utf-8")
    return out


DOC_COMPILED = [e for e in DOC_EXAMPLES if "error" not in e.directives]


def test_every_variant_is_checked(generated: Path):
    files = list(generated.glob("*.py"))
    assert len(files) == (len(SPECS) + len(DOC_COMPILED)) * len(VARIANTS) + len(CASES)
    text = "\n".join(f.read_text(encoding="utf-8") for f in files)
    # the embedded runtimes and helpers are among what is checked
    for name in ("recurrent_forward", "RowKernel", "LinearKernel", "batchnorm_affine", "folded_batchnorm"):
        assert f"def {name}(" in text or f"class {name}(" in text, name


def test_generated_modules_pass_ruff_check(generated: Path):
    result = _ruff("check", *RUFF_OPTIONS, "--select", RULES, "--output-format", "concise", str(generated))
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_modules_pass_ruff_format(generated: Path):
    result = _ruff("format", *RUFF_OPTIONS, "--check", "--diff", str(generated))
    assert result.returncode == 0, (result.stdout + result.stderr)[-20_000:]


def _long_statements() -> list[tuple[str, str | None]]:
    """Statements of every shape the backend writes, too long for one line (the specs have few of them)."""
    names = [f"branch_{i}" for i in range(60)]
    blocks = ", ".join(f"Block(c={i * 37}, x_channels={i * 11})" for i in range(12))
    return [
        (f"y = torch.cat([{', '.join(names)}], dim=1)", "wide.dln:3"),
        (f"y = {' + '.join(names[:40])}", "wide.dln:4"),
        (f"y = ({' + '.join(names[:30])}) / 30", None),
        (f"return {', '.join(names[:30])}", None),
        (f"a, b = self.pair(torch.cat([{', '.join(names[:25])}], dim=1))", "wide.dln:5: pair"),
        (f"self.stage = nn.Sequential({blocks})", "net.dln:7"),
        (f'self.stage = nn.Sequential(OrderedDict([("a", nn.Sequential({blocks})), ("b", nn.ReLU())]))', None),
        ("self.conv = nn.Conv2d(in_channels_of_the_block, out_channels_of_the_block, kernel_size=3, stride=2, "
         "padding=1, bias=False)", "net.dln:12"),
        ("y = self.frames(x_with_a_long_name.flatten(0, 1)).unflatten(0, x_with_a_long_name.shape[:2])",
         "net.dln:9 (every time step)"),
        (f"y = {names[0]}.reshape({names[0]}.shape[0], {', '.join(str(7 * i) for i in range(30))})", None),
    ]


def test_long_statements_are_laid_out_as_ruff_formats_them(tmp_path: Path):
    lines = ["class A:", *signature(4, "forward", ["self"] + [f"input_number_{i}" for i in range(12)])]
    for code, comment in _long_statements():
        lines += layout(8, code, comment)
    path = tmp_path / "laid_out.py"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _ruff("format", *RUFF_OPTIONS, "--check", "--diff", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert max(len(line) for line in lines) <= 120


def test_the_checks_fail_on_unformatted_or_unclean_code(tmp_path: Path):
    """The two checks are real: an unused variable and a hand-wrapped call are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x):\n    y = x\n    return g(x,\n             x)\n", encoding="utf-8")
    check = _ruff("check", *RUFF_OPTIONS, "--select", RULES, str(bad))
    assert check.returncode == 1 and "F841" in check.stdout and "F821" in check.stdout
    assert _ruff("format", *RUFF_OPTIONS, "--check", str(bad)).returncode == 1
