"""One driver (dlc.pipeline): the CLI and the Python API compile through it, and the modules that elaborate a
network import only downwards (no module imports one that imports it, not even inside a function)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dlc
from dlc.pipeline import Options, build_graph, run, torch_source

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
# The steps only the driver calls: a front end or backend call anywhere else would be a second pipeline.
STEPS = {"load_program", "elaborate", "PassManager", "pipeline", "emit_module", "build_graph"}


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names.update(a.name for a in node.names)
    return names


def test_cli_and_api_call_no_pipeline_step_themselves():
    for entry in ("dlc/api.py", "dlc/cli.py"):
        assert not _imported_names(ROOT / entry) & STEPS, entry


def test_api_and_cli_give_the_same_module():
    spec = SPECS / "resnet18.dln"
    cli = subprocess.run([sys.executable, "-m", "dlc", "compile", str(spec), "--fuse", "--optimize", "inference",
                          "--set", "classes=7"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert dlc.compile(spec, fuse=True, optimize="inference", classes=7).source == cli.stdout


def test_run_hands_the_backend_the_optimised_graph_and_the_options():
    spec = SPECS / "resnet18.dln"
    seen = []
    options = Options(optimize="inference", overrides={"classes": 3}, fuse=True)
    graph, result = run(spec, options, lambda g, o: seen.append((g, o)) or "made")
    assert result == "made" and seen == [(graph, options)]
    plain = build_graph(spec, {"classes": 3})
    assert sum(n.op == "batchnorm" for n in plain.nodes) == 20
    assert sum(n.op == "batchnorm" for n in graph.nodes) == 0  # folded: the inference passes ran
    assert torch_source(graph, options) == dlc.compile(spec, fuse=True, optimize="inference", classes=3).source


# ---- the dependency direction of the compiler's modules -------------------------------------------------------

_PACKAGES = {"dlc.compiler": ROOT / "compiler", "dlc.backends": ROOT / "backends", "dlc.grammar": ROOT / "grammar",
             "dlc": ROOT / "dlc"}
OWN = ["compiler/" + name for name in ("context.py", "naming.py", "nodes.py", "expressions.py", "binding.py",
                                      "lowering.py", "elaborate.py", "kinds.py", "program.py", "__init__.py")]
OWN += ["dlc/pipeline.py", "dlc/api.py", "dlc/cli.py"]


def _file_of(module: str) -> Path | None:
    for package, folder in sorted(_PACKAGES.items(), key=lambda kv: -len(kv[0])):
        if module == package or module.startswith(package + "."):
            rest = module[len(package):].lstrip(".").split(".") if module != package else []
            base = folder.joinpath(*rest)
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if rest and candidate.is_file() or not rest and candidate.name == "__init__.py" and candidate.is_file():
                    return candidate
    return None


def _imports(path: Path) -> set[Path]:
    """The dlc files ``path`` imports, at any depth of its code, except under ``if TYPE_CHECKING:``, and except
    the package ``dlc`` itself: every import of a submodule runs it, and its ``load``/``compile`` reach the API
    only when called (it is the façade, not a step)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for m in modules:
            target = _file_of(m)
            if target is not None and target not in (path, ROOT / "dlc" / "__init__.py"):
                out.add(target)
    return out


def test_no_module_of_the_driver_or_the_elaboration_imports_its_importer():
    graph: dict[Path, set[Path]] = {}
    todo = [ROOT / name for name in OWN]
    while todo:
        path = todo.pop()
        if path not in graph:
            graph[path] = _imports(path)
            todo.extend(graph[path])
    for start in (ROOT / name for name in OWN):
        seen, stack = set(), list(graph[start])
        while stack:
            path = stack.pop()
            assert path != start, f"{start.relative_to(ROOT)} is imported by a module it imports"
            if path not in seen:
                seen.add(path)
                stack.extend(graph.get(path, ()))
