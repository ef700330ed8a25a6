"""The command line, run as a user runs it: ``python -m dlc ...`` and the ``dlc`` console script, in subprocesses.

Covers every command (compile, check, summary, ir, render), parameter overrides, exit codes (0 ok, 1 spec
error, 2 usage error, 3 internal error), that ``dlc compile`` never imports torch or triton, and that nothing
a spec says (names, strings, its file name) can end up as code in the generated module.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import dlc
from dlc import cli as dlc_cli
from dlc.pipeline import build_graph
from dlc.compiler.ir import print_graph
from dlc.compiler.passes import total_params
from dlc.compiler.serialize import load_yaml
from dlc.diagnostics import DlcError

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.dln"))
SPEC_IDS = [p.stem for p in SPECS]
RESNET18 = ROOT / "specs" / "resnet18.dln"
LENET5 = ROOT / "specs" / "lenet5.dln"
MLP = ROOT / "specs" / "mlp.dln"
SIAMESE = ROOT / "specs" / "siamese.dln"
DLC_SCRIPT = Path(sys.executable).parent / ("dlc.exe" if os.name == "nt" else "dlc")
HAVE_DOT = shutil.which("dot") is not None
DIAGNOSTIC = re.compile(r"^(?P<file>[^\n:]+\.dln):(?P<line>\d+):(?P<col>\d+): error\[(?P<code>[a-z-]+)\]: ", re.M)


# ---- helpers --------------------------------------------------------------------------------


def run_dlc(*args, script: bool = False, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter: ``python -m dlc`` or (``script=True``) the ``dlc`` console script."""
    cmd = [str(DLC_SCRIPT)] if script else [sys.executable, "-m", "dlc"]
    full_env = {k: v for k, v in os.environ.items() if k != "DLC_DEBUG"}
    full_env.update(env or {})
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=full_env, timeout=timeout)


def run_dlc_here(*args, monkeypatch: pytest.MonkeyPatch) -> subprocess.CompletedProcess:
    """``dlc.cli.main`` on ``args`` in this interpreter (without ``DLC_DEBUG``), as :func:`run_dlc` reports it.

    For tests about what a command computes, not about the process: a fresh interpreter costs about half a second,
    and the tests above and tests/test_hostile_*.py run the real process."""
    monkeypatch.delenv("DLC_DEBUG", raising=False)
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = dlc_cli.main(argv)
    return subprocess.CompletedProcess(["dlc", *argv], code, out.getvalue(), err.getvalue())


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def import_file(path: Path):
    """Import a generated file by path, as a user would, under a unique module name."""
    name = f"dlc_cli_test_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def summary_total(text: str) -> int:
    m = re.search(r"^total parameters: ([\d,]+)$", text, re.M)
    assert m, text
    return int(m.group(1).replace(",", ""))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


ALLOWED_IMPORTS = {"torch", "collections", "__future__", "math", "typing"}
FORBIDDEN_NAMES = {"os", "sys", "subprocess", "builtins", "__builtins__", "shutil", "importlib", "socket", "pty"}
FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "open", "globals", "locals", "breakpoint", "system",
                   "popen", "run_path", "import_module"}


def assert_safe_source(source: str) -> None:
    """The generated module is plain network code: it parses, imports only torch (and collections), calls
    nothing that runs or loads code, and has no statements hidden among docstrings."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:  # a value broke out of its string or comment
        pytest.fail(f"generated source does not parse ({exc.msg}, line {exc.lineno}):\n"
                    f"{source.splitlines()[exc.lineno - 1] if exc.lineno else ''}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in ALLOWED_IMPORTS, f"line {node.lineno}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] in ALLOWED_IMPORTS, f"line {node.lineno}: from {node.module}"
        elif isinstance(node, ast.Name):
            assert node.id not in FORBIDDEN_NAMES, f"line {node.lineno}: name {node.id}"
        elif isinstance(node, ast.Call):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            assert called not in FORBIDDEN_CALLS, f"line {node.lineno}: call to {called}"
    # statement lists at module and class level: a docstring first, then definitions, imports, assignments
    bodies = [tree.body] + [n.body for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for body in bodies:
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.Expr):
                assert i == 0 and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str), \
                    f"line {stmt.lineno}: stray expression statement {ast.unparse(stmt)[:80]!r}"
            elif isinstance(stmt, ast.If):  # only `if __name__ == "__main__":`
                assert ast.unparse(stmt.test) in ("__name__ == '__main__'",), f"line {stmt.lineno}: unexpected if"
            else:
                assert isinstance(stmt, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef, ast.Assign,
                                         ast.AnnAssign)), f"line {stmt.lineno}: unexpected {ast.unparse(stmt)[:80]!r}"


# ---- --version, help ------------------------------------------------------------------------


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "console-script"])
def test_version(script):
    if script and not DLC_SCRIPT.exists():
        pytest.skip("the dlc console script is not installed next to this interpreter")
    r = ok(run_dlc("--version", script=script))
    assert r.stdout.strip() == f"dlc {dlc.__version__}"


def test_help_lists_commands():
    r = ok(run_dlc("--help"))
    for cmd in ("compile", "check", "summary", "ir", "render"):
        assert cmd in r.stdout


# ---- compile ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_compile_to_file_imports_and_matches_summary(spec, tmp_path, monkeypatch):
    """Every spec: the written file imports on its own, instantiates, and its parameter count is the one
    ``dlc summary`` and ``dlc check`` report."""
    out = tmp_path / "gen" / f"{spec.stem}_net.py"  # the folder does not exist yet
    r = ok(run_dlc_here("compile", spec, "-o", out, monkeypatch=monkeypatch))
    assert r.stdout == ""
    assert out.is_file() and out.stat().st_size > 0
    source = out.read_text(encoding="utf-8")
    assert_safe_source(source)  # in particular: no `import dlc`, so the file stands alone
    g = build_graph(spec)
    mod = import_file(out)
    model = getattr(mod, g.name)()
    expected = n_params(model)
    assert expected == total_params(g)

    summary = ok(run_dlc_here("summary", spec, monkeypatch=monkeypatch)).stdout
    assert summary_total(summary) == expected
    assert summary.splitlines()[0].startswith(g.name)


def test_compile_to_stdout_runs(tmp_path):
    import torch

    r = ok(run_dlc("compile", LENET5))
    assert r.stderr == ""
    assert r.stdout == dlc.compile(LENET5).source
    assert ok(run_dlc("compile", LENET5, "-o", "-")).stdout == r.stdout
    path = tmp_path / "lenet5_stdout.py"
    path.write_text(r.stdout, encoding="utf-8")
    model = import_file(path).LeNet5().eval()
    with torch.no_grad():
        assert tuple(model(torch.zeros(2, 1, 32, 32)).shape) == (2, 10)


@pytest.mark.slow
def test_generated_file_runs_standalone(tmp_path):
    """A fresh interpreter runs the generated file without dlc: it imports only torch."""
    out = tmp_path / "standalone.py"
    ok(run_dlc("compile", RESNET18, "--set", "classes=10", "-o", out))
    script = textwrap.dedent("""
        import runpy, sys, torch
        ns = runpy.run_path(sys.argv[1])
        model = ns["ResNet18"]().eval()
        with torch.no_grad():
            y = model(torch.zeros(1, 3, 64, 64))
        assert tuple(y.shape) == (1, 10), y.shape
        loaded = sorted(m for m in sys.modules if m == "dlc" or m.startswith("dlc."))
        assert not loaded, loaded
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-I", "-c", script, str(out)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_console_script_compile_and_errors(tmp_path):
    if not DLC_SCRIPT.exists():
        pytest.skip("the dlc console script is not installed next to this interpreter")
    r = ok(run_dlc("compile", MLP, script=True))
    assert r.stdout == dlc.compile(MLP).source
    bad = write(tmp_path / "bad.dln", """
        network N {
            input x: [4]
            output y = x -> fc: linaer(2)
        }
    """)
    r = run_dlc("check", bad, script=True)
    assert r.returncode == 1 and DIAGNOSTIC.search(r.stderr) and "Traceback" not in r.stderr
    r = run_dlc("check", tmp_path / "missing.dln", script=True)
    assert r.returncode == 2


def test_compile_relative_path_and_cwd(tmp_path):
    """Paths are taken relative to the working directory; -o relative to it as well."""
    r = ok(run_dlc("compile", os.path.relpath(LENET5, tmp_path), "-o", "out.py", cwd=tmp_path))
    assert (tmp_path / "out.py").read_text(encoding="utf-8") == dlc.compile(LENET5).source
    assert "out.py" in r.stderr


# ---- check, summary ---------------------------------------------------------------------------


def test_check_reports_network_and_params():
    g = build_graph(RESNET18)
    r = ok(run_dlc("check", RESNET18))
    assert "ok" in r.stdout and g.name in r.stdout
    assert f"{total_params(g):,}" in r.stdout


def test_summary_rows():
    r = ok(run_dlc("summary", SIAMESE))
    text = r.stdout
    assert "tower.conv1" in text and "shared" in text  # the tower is applied twice, counted once
    assert summary_total(text) == total_params(build_graph(SIAMESE))


# ---- ir -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "siamese", "seq2seq"])
def test_ir_yaml_loads_back_equal(name, tmp_path):
    spec = ROOT / "specs" / f"{name}.dln"
    g = build_graph(spec)
    r = ok(run_dlc("ir", spec))
    assert load_yaml(r.stdout) == g
    out = tmp_path / "g.yaml"
    ok(run_dlc("ir", spec, "-o", out))
    assert out.read_text(encoding="utf-8") == r.stdout


def test_ir_text():
    for spec in (RESNET18, LENET5):
        r = ok(run_dlc("ir", "--text", spec))
        assert r.stdout == print_graph(build_graph(spec))
        assert r.stdout.startswith("network ")


# ---- render ------------------------------------------------------------------------------------


def test_render_dot(tmp_path):
    out = tmp_path / "r.dot"
    ok(run_dlc("render", RESNET18, "-o", out))
    text = out.read_text(encoding="utf-8")
    assert text.startswith("digraph") and text.rstrip().endswith("}")
    assert "layer1" in text


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` is not installed")
def test_render_svg_png(tmp_path):
    svg = tmp_path / "r.svg"
    png = tmp_path / "sub" / "r.png"
    ok(run_dlc("render", SIAMESE, "-o", svg))
    ok(run_dlc("render", LENET5, "-o", png))
    assert svg.stat().st_size > 0 and png.stat().st_size > 0
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_without_graphviz_falls_back_to_dot(tmp_path):
    empty = tmp_path / "empty_path"
    empty.mkdir()
    out = tmp_path / "r.svg"
    r = ok(run_dlc("render", LENET5, "-o", out, env={"PATH": str(empty)}))
    assert not out.exists()
    assert out.with_suffix(".dot").read_text(encoding="utf-8").startswith("digraph")
    assert "dot" in r.stderr and "install" in r.stderr.lower()


# ---- overrides ---------------------------------------------------------------------------------


def test_set_changes_result(tmp_path):
    default = ok(run_dlc("compile", RESNET18)).stdout
    ten = ok(run_dlc("compile", RESNET18, "--set", "classes=10")).stdout
    assert "nn.Linear(512, 1000)" in default and "nn.Linear(512, 10)" in ten
    assert "nn.Linear(512, 10)" not in default
    params = tmp_path / "p.yaml"
    params.write_text("classes: 10\n", encoding="utf-8")
    assert ok(run_dlc("compile", RESNET18, "--params", params)).stdout == ten
    # --set wins over --params
    both = ok(run_dlc("compile", RESNET18, "--params", params, "--set", "classes=7")).stdout
    assert "nn.Linear(512, 7)" in both
    assert both == dlc.compile(RESNET18, classes=7).source


def test_set_several_and_types():
    r = ok(run_dlc("check", MLP, "--set", "hidden=64", "--set", "classes=3", "--set", "dropout=0.5"))
    g = build_graph(MLP, {"hidden": 64, "classes": 3, "dropout": 0.5})
    assert f"{total_params(g):,} parameters" in r.stdout
    r = ok(run_dlc("ir", "--text", MLP, "--set", "dropout=0.5"))
    assert "p=0.5" in r.stdout


def test_network_option(tmp_path):
    spec = write(tmp_path / "two.dln", """
        network A {
            input x: [4]
            output y = x -> fc: linear(2)
        }
        network B(k: int = 3) {
            input x: [4]
            output y = x -> fc: linear(k)
        }
    """)
    assert "network A" in ok(run_dlc("check", spec)).stdout
    r = ok(run_dlc("compile", spec, "--network", "B", "--set", "k=5"))
    assert "class B(" in r.stdout and "nn.Linear(4, 5)" in r.stdout
    r = run_dlc("check", spec, "--network", "C")
    assert r.returncode == 1 and "error[unknown-network]" in r.stderr and "Traceback" not in r.stderr


# ---- exit code 1: errors in the spec -------------------------------------------------------------


BROKEN = {
    "syntax": ("""
        network N {
            input x: [4]
            output y = x -> -> fc
        }
    """, 3, "syntax"),
    "unknown-layer": ("""
        network N {
            input x: [4]
            output y = x -> fc: linaer(2)
        }
    """, 3, "unknown-layer"),
    "shape": ("""
        network N {
            input x: [3, 8, 8]
            a = x -> conv2d(4, k=3)
            output y = a + x
        }
    """, 4, "shape-mismatch"),
    "bad-name": ("""
        network N {
            input x: [4]
            output y = x -> class: linear(2)
        }
    """, 3, None),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_spec_error_exit_1(case, tmp_path):
    text, line, code = BROKEN[case]
    spec = write(tmp_path / f"{case}.dln", text)
    r = run_dlc("check", spec)
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    m = DIAGNOSTIC.search(r.stderr)
    assert m, r.stderr
    assert Path(m["file"]).name == spec.name and int(m["line"]) == line
    if code:
        assert m["code"] == code
    assert f"error[{m['code']}]" in r.stderr


@pytest.mark.parametrize("command", ["compile", "summary", "ir", "render"])
def test_spec_error_exit_1_every_command(command, tmp_path):
    spec = write(tmp_path / "bad.dln", BROKEN["unknown-layer"][0])
    extra = ["-o", tmp_path / "x.svg"] if command == "render" else []
    r = run_dlc(command, spec, *extra)
    assert r.returncode == 1 and r.stdout == ""
    assert DIAGNOSTIC.search(r.stderr) and "Traceback" not in r.stderr
    assert not (tmp_path / "x.svg").exists()


def test_error_in_imported_file_points_there(tmp_path):
    write(tmp_path / "blocks" / "bad.dln", """
        block Bad {
            input x
            return x -> conv2d(4, k=3)
        }
    """)
    main = write(tmp_path / "main.dln", """
        import "blocks/bad.dln"
        network N {
            input x: [4]
            output y = x -> Bad
        }
    """)
    r = run_dlc("compile", main)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    m = DIAGNOSTIC.search(r.stderr)
    assert m and Path(m["file"]).name == "bad.dln" and m["line"] == "3", r.stderr
    assert "Bad" in r.stderr  # the instance chain


@pytest.mark.parametrize("args", [["--set", "nosuch=3"], ["--set", "hidden=abc"]], ids=["unknown", "type"])
def test_bad_override_exit_1(args):
    r = run_dlc("check", MLP, *args)
    assert r.returncode == 1 and DIAGNOSTIC.search(r.stderr) and "Traceback" not in r.stderr


def test_bad_params_file_exit_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden: [1\n", encoding="utf-8")
    r = run_dlc("check", MLP, "--params", bad)
    assert r.returncode == 1 and "error[params-file]" in r.stderr and "Traceback" not in r.stderr
    bad.write_text("- 1\n- 2\n", encoding="utf-8")
    r = run_dlc("check", MLP, "--params", bad)
    assert r.returncode == 1 and "error[params-file]" in r.stderr


# ---- exit code 2: usage errors -------------------------------------------------------------------


USAGE = {
    "missing-file": ["compile", "specs/no_such_spec.dln"],
    "directory": ["check", "specs"],
    "set-no-equals": ["compile", "specs/mlp.dln", "--set", "hidden"],
    "set-empty-name": ["compile", "specs/mlp.dln", "--set", "=3"],
    "unknown-command": ["frobnicate", "specs/mlp.dln"],
    "no-command": [],
    "render-txt": ["render", "specs/mlp.dln", "-o", "OUT.txt"],
    "render-no-output": ["render", "specs/mlp.dln"],
    "unknown-option": ["check", "specs/mlp.dln", "--bogus"],
    "missing-params-file": ["check", "specs/mlp.dln", "--params", "no_such.yaml"],
    "no-spec": ["compile"],
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_usage_error_exit_2(case, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in USAGE[case]]
    r = run_dlc(*args)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
    assert "usage:" in r.stderr and "error" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("command", ["compile", "ir"])
def test_unwritable_output_is_a_usage_error(command, tmp_path):
    """An output path that cannot be written is the user's error (exit 2), not an internal error (3)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    r = run_dlc(command, LENET5, "-o", blocker / "sub" / "out.py")
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


# ---- exit code 3: bugs in dlc --------------------------------------------------------------------


_BOOM = ("import sys, dlc.pipeline, dlc.cli\n"
         "def boom(*a, **k): raise RuntimeError('boom')\n"
         "dlc.pipeline.build_graph = boom\n"
         "sys.exit(dlc.cli.main(sys.argv[1:]))\n")


def test_internal_error_exit_3():
    env = {k: v for k, v in os.environ.items() if k != "DLC_DEBUG"}
    r = subprocess.run([sys.executable, "-c", _BOOM, "check", str(MLP)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 3
    assert "internal error" in r.stderr and "boom" in r.stderr and "Traceback" not in r.stderr
    env["DLC_DEBUG"] = "1"
    r = subprocess.run([sys.executable, "-c", _BOOM, "check", str(MLP)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 3 and "Traceback" in r.stderr and "RuntimeError: boom" in r.stderr


# ---- dlc compile never imports torch or triton ---------------------------------------------------


def test_compile_does_not_import_torch(tmp_path):
    script = textwrap.dedent("""
        import io, sys, contextlib
        import dlc.cli
        out, specs = sys.argv[1], sys.argv[2:]
        commands = []
        for spec in specs:
            commands.append(["compile", spec, "-o", out + "/x.py"])
            commands.append(["compile", spec])
        commands += [["check", specs[0]], ["summary", specs[0]], ["ir", specs[0]], ["ir", "--text", specs[0]],
                     ["render", specs[0], "-o", out + "/x.dot"]]
        for argv in commands:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = dlc.cli.main(argv)
            assert rc == 0, (argv, rc)
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "triton"))
            assert not heavy, (argv, heavy[:5])
        print("ok", len(commands))
    """)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path), *map(str, SPECS)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


# ---- security: nothing from a spec becomes code ------------------------------------------------


BAD_NAMES = {
    "label-keyword": "output y = x -> class: linear(2)",
    "label-dunder": "output y = x -> __class__: linear(2)",
    "label-module-attr": "output y = x -> forward: linear(2)",
    "label-non-ascii": "output y = x -> f\u00e9: linear(2)",
    "label-none": "output y = x -> None: linear(2)",
    "output-keyword": "output import = x -> linear(2)",
    "output-lambda": "output lambda = x -> linear(2)",
    "assign-keyword": "def = x -> linear(2)\n    output y = def",
    "assign-dunder": "__import__ = x -> linear(2)\n    output y = __import__",
    "label-quote": "output y = x -> a\"b: linear(2)",
    "label-semicolon": "output y = x -> a;b: linear(2)",
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_bad_names_rejected(case, tmp_path):
    spec = write(tmp_path / "n.dln", "network N {\n    input x: [4]\n    " + BAD_NAMES[case] + "\n}\n")
    with pytest.raises(DlcError):
        dlc.compile(spec)


@pytest.mark.parametrize("decl", [
    "block class {\n input x\n return x\n}\nnetwork N {\n input x: [4]\n output y = x -> class\n}\n",
    "block B {\n input lambda\n return lambda\n}\nnetwork N {\n input x: [4]\n output y = x -> B\n}\n",
    "network N {\n input def: [4]\n output y = def -> linear(2)\n}\n",
    "network return {\n input x: [4]\n output y = x -> linear(2)\n}\n",
    "network __N {\n input x: [4]\n output y = x -> linear(2)\n}\n",
    "network N(import: int = 1) {\n input x: [4]\n output y = x -> linear(2)\n}\n",
    "network N {\n input x: [yield]\n output y = x -> linear(2)\n}\n",
], ids=["block-keyword", "block-input-keyword", "input-keyword", "network-keyword", "network-dunder",
        "param-keyword", "dim-keyword"])
def test_bad_declaration_names_rejected(decl, tmp_path):
    spec = write(tmp_path / "d.dln", decl)
    with pytest.raises(DlcError):
        dlc.compile(spec)


def test_bad_name_via_cli_exit_1(tmp_path):
    spec = write(tmp_path / "n.dln", "network N {\n    input x: [4]\n    output y = x -> class: linear(2)\n}\n")
    r = run_dlc("compile", spec)
    assert r.returncode == 1 and DIAGNOSTIC.search(r.stderr) and r.stdout == ""


@pytest.mark.parametrize("name", ["torch", "nn", "F", "OrderedDict", "Reshape"])
def test_class_names_do_not_shadow_generated_globals(name, tmp_path):
    """A block or network named like a global the generated code uses (torch, nn, F, helpers) is either
    rejected or renamed: it must never give a module that breaks when built or run."""
    import torch

    block = write(tmp_path / "b.dln", f"""
        block {name}(c: int) {{
            input x
            return x -> fc: linear(c) -> relu -> reshape([c]) -> tanh
        }}
        network Net {{
            input x: [4]
            output y = x -> {name}(3) -> dropout(0.1)
        }}
    """)
    net = write(tmp_path / "n.dln", f"""
        network {name} {{
            input x: [4]
            output y = x -> fc: linear(3) -> relu -> reshape([3]) -> tanh
        }}
    """)
    for spec in (block, net):
        try:
            compiled = dlc.compile(spec)
        except DlcError:
            continue
        assert_safe_source(compiled.source)
        try:
            model = compiled.instantiate().eval()
            with torch.no_grad():
                y = model(torch.zeros(2, 4))
        except Exception as exc:  # noqa: BLE001 - any failure here is the bug this test is about
            pytest.fail(f"{spec.name} ({name!r} as a {'block' if spec is block else 'network'} name) compiles, "
                        f"but the module breaks: {type(exc).__name__}: {exc}")
        assert tuple(y.shape) == (2, 3), spec.name


INJECTIONS = [
    'x"""; import os; os.system("echo INJECTED"); """',
    "x'); import os; ('",
    "x'''; import os; '''",
    'a\nimport os\n#',
    'a\\',
    'x"""\nimport os\n"""',
    "\\N{LATIN SMALL LETTER A}\x00\r",
]
INJECTION_IDS = ["triple-dq", "sq-paren", "triple-sq", "newline", "backslash", "triple-dq-newline", "escapes"]


def _dln_string(value: str) -> str:
    """``value`` as a .dln string literal (the grammar reads Python-style escapes)."""
    return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


@pytest.mark.parametrize("payload", INJECTIONS, ids=INJECTION_IDS)
def test_string_values_never_become_code(payload, tmp_path):
    """Strings from a spec (an enum attribute, a network `str` parameter, a block `str` parameter, a --set
    override) either fail with a DlcError or stay data: the generated module imports nothing else and calls
    nothing that runs code."""
    lit = _dln_string(payload)
    specs = {
        "enum": f"""
            network N {{
                input x: [3, 8, 8]
                output y = x -> upsample(2, mode={lit})
            }}
        """,
        "network-param": f"""
            network N(mode: str = {lit}) {{
                input x: [4]
                output y = x -> fc: linear(2)
            }}
        """,
        "block-param": f"""
            block B(s: str = "a") {{
                input x
                return x -> fc: linear(2)
            }}
            network N(mode: str = {lit}) {{
                input x: [4]
                output y = x -> B(mode) -> B(s={lit})
            }}
        """,
    }
    for what, text in specs.items():
        spec = write(tmp_path / f"{what}.dln", text)
        try:
            compiled = dlc.compile(spec)
        except DlcError:
            continue
        try:
            assert_safe_source(compiled.source)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None


@pytest.mark.parametrize("payload", INJECTIONS[:2], ids=INJECTION_IDS[:2])
def test_set_override_never_becomes_code(payload, tmp_path):
    spec = write(tmp_path / "p.dln", """
        network N(mode: str = "a") {
            input x: [4]
            output y = x -> fc: linear(2)
        }
    """)
    r = run_dlc("compile", spec, "--set", f"mode={payload}")
    if r.returncode == 0:
        assert_safe_source(r.stdout)
    else:
        assert r.returncode == 1 and "Traceback" not in r.stderr


@pytest.mark.skipif(os.name == "nt", reason="file names with quotes and newlines")
@pytest.mark.parametrize("stem", ['x"""; import os; os.system("echo INJECTED"); """', 'a\nimport os\n#',
                                  "x'''; import os; '''"], ids=["triple-quote", "newline", "single-quotes"])
def test_file_names_never_become_code(stem, tmp_path):
    """The spec's file name (and an imported file's) appears in comments and docstrings of the generated
    module: it must stay data there."""
    spec = write(tmp_path / f"{stem}.dln", """
        network N {
            input x: [4]
            output y = x -> fc: linear(2)
        }
    """)
    assert_safe_source(dlc.compile(spec).source)
    write(tmp_path / "blocks" / f"{stem}.dln", """
        block B {
            input x
            return x -> fc: linear(2)
        }
    """)
    main = write(tmp_path / "main.dln", f"""
        import {_dln_string("blocks/" + stem + ".dln")}
        network N {{
            input x: [4]
            output y = x -> B
        }}
    """)
    assert_safe_source(dlc.compile(main).source)
