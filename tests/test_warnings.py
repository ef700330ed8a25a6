"""Warnings (dlc/compiler/lint.py) and dead code removal (dlc/compiler/passes/dead.py).

Each warning is checked at its line:col with its rendered text; the CLI prints warnings on stderr and exits 0, or 1
under --Werror without writing its output; the Python API issues DlcWarning from the caller's line. Unused code is
not in the generated module: the state_dict of a network with a dead branch loads strictly into a torch.nn twin
without it, and both compute the same outputs.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import pytest
import torch
from dlc.compiler.passes import live_nodes
from torch import nn

import dlc
from dlc import cli
from dlc.diagnostics import DlcWarning, render
from dlc.pipeline import build_graph

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "language.md"


def warned(text: str) -> list[tuple[str, int, int]]:
    """(code, line, col) of each warning of a spec text."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DlcWarning)
        c = dlc.compile_string(text, name="w.dln")
    return [(w.code, w.span.line, w.span.col) for w in c.warnings]


def cli_run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


CASES = [
    ("unused branch", "network N {\n    input x: [4]\n    h = x -> linear(8)\n    output y = x -> relu\n}\n",
     [("unused-layer", 3, 14)]),
    ("unused input", "network N {\n    input x: [4]\n    input m: [4]\n    output y = x -> relu\n}\n",
     [("unused-input", 3, 5)]),
    ("unused block instance, reported once at the instance",
     ("block B {\n    input x\n    return x -> linear(3) -> relu\n}\n"
     "network N {\n    input x: [4]\n    t = x -> b: B\n    output y = x -> relu\n}\n"), [("unused-layer", 7, 17)]),
    ("dead branch in a block used twice: one warning at the block's line",
     ("block B {\n    input x\n    a = x -> linear(2)\n    return x -> relu\n}\n"
     "network N {\n    input x: [4]\n    output y = x -> B -> B\n}\n"), [("unused-layer", 3, 14)]),
    ("parameter named like a block",
     ("block B {\n    input x\n    return x\n}\n"
     "network N(B: int = 2) {\n    input x: [4]\n    output y = x -> linear(B)\n}\n"),
     [("shadowed-param", 5, 11)]),
    ("dropout(0)", "network N {\n    input x: [4]\n    output y = x -> dropout(0)\n}\n", [("dropout-zero", 3, 21)]),
    ("dropout(p=0.0, always=true)",
     "network N {\n    input x: [4]\n    output y = x -> dropout(p=0.0, always=true)\n}\n",
     [("dropout-zero", 3, 21)]),
    ("relu -> relu", "network N {\n    input x: [4]\n    output y = x -> relu -> relu\n}\n",
     [("repeated-activation", 3, 29)]),
    ("a repeat * 1", "network N {\n    input x: [4]\n    output y = x -> g: (linear(4) * 1)\n}\n",
     [("repeat-once", 3, 37)]),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_warning_at_its_place(text, expected):
    assert warned(text) == expected


@pytest.mark.parametrize("text", [
    # a probability from a parameter is a setting (torchvision's ViT has dropout=0.0)
    "network N(p: float = 0.0) {\n    input x: [4]\n    output y = x -> dropout(p)\n}\n",
    # labels name modules: `dropout: dropout(dropout)` is how torchvision's names are matched
    "network N(dropout: float = 0.1) {\n    input x: [4]\n    output y = x -> dropout: dropout(dropout)\n}\n",
    # different activations, or relu on another value, are fine
    "network N {\n    input x: [4]\n    output y = x -> relu -> tanh -> relu\n}\n",
    "network N(n: int = 1) {\n    input x: [4]\n    output y = x -> g: (linear(4) * n)\n}\n",
], ids=["dropout-param", "label-like-param", "different-activations", "repeat-param"])
def test_no_warning_for_settings_and_idioms(text):
    assert warned(text) == []


def test_the_bundled_specs_have_no_warnings():
    for spec in sorted((ROOT / "specs").glob("*.dln")):
        g = build_graph(spec)
        assert g.warnings == [], "\n".join(render(w) for w in g.warnings)


def test_a_warning_renders_like_an_error_with_the_chain():
    text = "block B {\n    input x\n    a = x -> linear(2)\n    return x -> relu\n}\n" \
           "network N {\n    input x: [4]\n    output y = x -> b: B\n}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DlcWarning)
        (w,) = dlc.compile_string(text, name="w.dln").warnings
    assert render(w) == (
        "w.dln:3:14: warning[unused-layer]: the result of `a` (`linear`) reaches no output\n"
        " 3 |     a = x -> linear(2)\n"
        "   |              ^^^^^^^^^\n"
        "  = in: N > b (B)\n"
        "  = hint: use it in an output or remove it; it is not computed, and its parameters are not in the module")


# ---- the documentation ---------------------------------------------------------------------------------------


def _warning_examples() -> list[tuple[str, str | None]]:
    """The ```dln examples of the Warnings section, each with the ```text block right after it (if any)."""
    section = DOC.read_text(encoding="utf-8").split("### Warnings", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"```dln\n(.*?)```\n(?:\n```text\n(.*?)```)?", section, flags=re.DOTALL)
    return [(spec, text or None) for spec, text in found]


def test_the_documented_examples_warn_as_they_say(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples = _warning_examples()
    assert len(examples) == 3
    for spec, expected in examples:
        Path("net.dln").write_text(spec, encoding="utf-8")
        g = build_graph("net.dln")
        said = set(re.findall(r"warning\[([a-z-]+)\]", spec.splitlines()[0]))
        assert {w.code for w in g.warnings} == said
        if expected is not None:
            assert "\n".join(render(w) for w in g.warnings) + "\n" == expected


def test_every_warning_code_is_in_the_error_code_table():
    table = DOC.read_text(encoding="utf-8").split("## Error codes", 1)[1]
    listed = set(re.findall(r"^\|\s*`([a-z][a-z-]*)`\s*\| warning:", table, flags=re.MULTILINE))
    assert listed == {"unused-layer", "unused-input", "shadowed-param", "dropout-zero", "repeated-activation",
                      "repeat-once"}
    assert {code for case in CASES for code, *_ in case[2]} == listed


# ---- the command line ----------------------------------------------------------------------------------------


@pytest.fixture
def dead_spec(tmp_path: Path) -> Path:
    path = tmp_path / "dead.dln"
    path.write_text("network N {\n    input x: [4]\n    side = x -> probe: linear(8)\n"
                    "    output y = x -> linear(2)\n}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("command", [["compile"], ["check"], ["summary"], ["ir", "--text"]])
def test_every_command_prints_warnings_and_exits_0(dead_spec, command):
    code, out, err = cli_run(*command, dead_spec)
    assert code == 0
    assert err.startswith(f"{dead_spec}:3:24: warning[unused-layer]: the result of `side` (`linear`) reaches no "
                          "output\n 3 |     side = x -> probe: linear(8)\n   |                        ^^^^^^^^^\n")
    assert "probe" not in out  # not in the module, the summary or the IR


def test_werror_fails_and_writes_nothing(dead_spec, tmp_path):
    out_file = tmp_path / "net.py"
    code, _, err = cli_run("compile", dead_spec, "--Werror", "-o", out_file)
    assert code == 1 and not out_file.exists()
    assert "warning[unused-layer]" in err
    assert err.rstrip().endswith("dlc: error: 1 warning(s) treated as errors (--Werror)")
    code, _, err = cli_run("check", dead_spec, "--Werror")
    assert code == 1 and "treated as errors" in err


def test_werror_without_warnings_succeeds():
    code, out, err = cli_run("check", ROOT / "specs" / "mlp.dln", "--Werror")
    assert code == 0 and err == "" and ": ok: network" in out


# ---- the Python API ------------------------------------------------------------------------------------------


def test_python_warnings_come_from_the_callers_line(dead_spec):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = dlc.compile(dead_spec)  # this line
    (w,) = caught
    assert w.category is DlcWarning and w.filename == __file__
    assert str(w.message) == render(compiled.warnings[0])
    assert w.message.diagnostic == compiled.warnings[0]


def test_warnings_as_errors_through_the_warnings_module(dead_spec):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DlcWarning)
        with pytest.raises(DlcWarning, match=r"warning\[unused-layer\]"):
            dlc.compile(dead_spec)


# ---- dead code -----------------------------------------------------------------------------------------------

DEAD = """
block Two {
    input x
    a = x -> relu
    b = x -> unused_fc: linear(4)
    return x -> fc: linear(8)
}
network Net {
    input x: [8]
    input extra: [3]
    h = x -> fc1: linear(16)
    side = h -> proj: linear(5) -> relu
    t = x -> dead_two: Two
    output z = x -> two: Two
    output y = h -> relu -> fc2: linear(2)
}
"""


class DeadTwin(nn.Module):
    """Net above without what reaches no output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.two = nn.Module()
        self.two.fc = nn.Linear(8, 8)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x, extra):
        return self.two.fc(x), self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def dead_compiled():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DlcWarning)
        return dlc.compile_string(DEAD, name="dead.dln")


def test_unused_code_is_not_in_the_module(dead_compiled):
    src = dead_compiled.source
    for gone in ("proj", "dead_two", "unused_fc", "F.relu(x)"):
        assert gone not in src, gone
    assert "def forward(self, x, extra):" in src  # an unused input is still taken
    assert [(w.code, w.span.line) for w in dead_compiled.warnings] == [
        ("unused-layer", 4), ("unused-layer", 5), ("unused-input", 10), ("unused-layer", 12), ("unused-layer", 13)]


def test_dead_code_module_matches_its_torch_twin(dead_compiled):
    torch.manual_seed(0)
    twin = DeadTwin()
    net = dead_compiled.instantiate()
    net.load_state_dict(twin.state_dict(), strict=True)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in twin.parameters())
    x, extra = torch.randn(2, 8), torch.randn(2, 3)
    for got, want in zip(net(x, extra), twin(x, extra)):
        torch.testing.assert_close(got, want)


def test_the_fused_module_without_dead_code_matches_the_plain_one(dead_compiled):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DlcWarning)
        fused = dlc.compile_string(DEAD, name="dead.dln", fuse=True)
    assert "proj" not in fused.source
    plain, net = dead_compiled.instantiate(), fused.instantiate()
    net.load_state_dict(plain.state_dict(), strict=True)
    x, extra = torch.randn(2, 8), torch.randn(2, 3)
    for got, want in zip(net(x, extra), plain(x, extra)):
        torch.testing.assert_close(got, want)


def test_a_tied_layer_keeps_the_layer_it_shares_a_weight_with():
    text = """network N {
    input tokens: [T] int64
    input feats: [T, 8]
    e = tokens -> embed: embedding(50, 8)
    output y = feats -> head: linear(50, bias=false, tie=embed)
}
"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DlcWarning)
        c = dlc.compile_string(text)
    assert c.warnings == []
    assert "self.embed = nn.Embedding(50, 8)" in c.source
    net = c.instantiate()
    assert net.head.weight is net.embed.weight


def test_live_nodes_is_what_the_pass_keeps():
    g = build_graph(ROOT / "specs" / "resnet18.dln")
    live, calls = live_nodes(g)
    assert len(live) == len(g.nodes) and calls == set(g.calls)  # every node and block call reaches the output
