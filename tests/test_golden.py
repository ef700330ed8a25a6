"""Golden files: the IR text and the generated PyTorch source of every spec, compared with tests/golden/.

The fused runtime a ``--fuse`` module embeds (backends/triton/runtime/*.py) is not copied into every golden
file: :func:`without_runtime` checks each embedded part against the module it comes from and keeps only its
heading line, and ``test_embedded_runtime_is_the_runtime_source`` checks the embedding itself.

``pytest tests/test_golden.py --update-golden`` rewrites the files from the current compiler; review the
diff (``git diff tests/golden``) before committing. On a mismatch the assertion shows a unified diff.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from pathlib import Path

import pytest

import dlc
from dlc.backends.torch.runtime import definitions
from dlc.backends.triton.runtime import HEADING, embedded
from dlc.compiler.ir import print_graph

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.dln"))
GOLDEN = Path(__file__).resolve().parent / "golden"

# Anything that would tie a golden file to one machine, checkout or run.
_MACHINE_SPECIFIC = [
    (re.compile(re.escape(str(ROOT))), "the repository's absolute path"),
    (re.compile(r"(?<![\w.])/(?:home|Users|tmp|work|root|usr|opt|var)/"), "an absolute path"),
    (re.compile(r"\b[A-Za-z]:\\"), "a Windows path"),
    (re.compile(r"0x[0-9a-f]{6,}"), "a memory address"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}"), "a timestamp"),
]


# The heading line of an embedded runtime part (see dlc.backends.triton.runtime.runtime_section).
_HEADING = re.compile("^" + re.escape(HEADING).replace(r"\{name\}", r"(?P<name>\w+)").replace(
    r"\{sections\}", r"(?: \[(?P<sections>[\w, ]+)\])?") + "$", re.MULTILINE)
_CHECKED = "# (embedded text: checked against the runtime module by tests/test_golden.py, not kept here)"


def without_runtime(source: str) -> str:
    """``source`` with each embedded runtime part, after checking it is the module's, replaced by a note."""
    out, last = [], 0
    for m in _HEADING.finditer(source):
        sections = set(m.group("sections").split(", ")) if m.group("sections") else None
        part = embedded(m.group("name"), sections).rstrip("\n")
        start = m.end() + 1
        assert source[start:start + len(part)] == part, f"the embedded {m.group(0)!r} differs from its module"
        out += [source[last:start], _CHECKED]
        last = start + len(part)
    return "".join(out) + source[last:]


def _diff(expected: str, actual: str, path: Path) -> str:
    lines = difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                 fromfile=f"{path.name} (golden)", tofile=f"{path.name} (now)", n=2)
    text = "".join(lines)
    if len(text) > 20_000:
        text = text[:20_000] + "\n... (diff truncated)\n"
    return text


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def check_golden(path: Path, actual: str, update: bool) -> None:
    """Compare ``actual`` with the golden file at ``path`` (or rewrite it under --update-golden)."""
    for pattern, what in _MACHINE_SPECIFIC:
        m = pattern.search(actual)
        assert m is None, f"{path.name}: output contains {what} ({m.group(0)!r}); golden files must be portable"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.write_text(actual, encoding="utf-8", newline="\n")
        return
    if not path.exists():
        pytest.fail(f"missing golden file {_rel(path)}; run `pytest tests/test_golden.py "
                    f"--update-golden` to create it")
    expected = path.read_text(encoding="utf-8")
    if expected != actual:
        pytest.fail(f"{_rel(path)} differs from the compiler's output "
                    f"(rerun with --update-golden if the change is intended):\n{_diff(expected, actual, path)}",
                    pytrace=False)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_golden(spec: Path, update_golden: bool):
    compiled = dlc.compile(spec)
    check_golden(GOLDEN / f"{spec.stem}.ir.txt", print_graph(compiled.graph), update_golden)
    check_golden(GOLDEN / f"{spec.stem}.py", compiled.source, update_golden)


# Variants of the generated source kept as golden files too: <spec>.<variant>.py
VARIANTS = {
    ("resnet18", "fused"): {"fuse": True},  # conv epilogue kernels, shared between blocks
    ("mlp", "fused"): {"fuse": True},  # matmul kernels with a dropout epilogue
    ("resnet18", "inference"): {"optimize": "inference"},  # folded batchnorm, in-place ops, channels-last
}


@pytest.mark.parametrize("name,variant", sorted(VARIANTS), ids=lambda v: v)
def test_golden_variants(name: str, variant: str, update_golden: bool):
    compiled = dlc.compile(ROOT / "specs" / f"{name}.dln", **VARIANTS[(name, variant)])
    check_golden(GOLDEN / f"{name}.{variant}.py", without_runtime(compiled.source), update_golden)


def _top_level(source: str) -> dict[str, str]:
    """The source text of each top-level class and function of ``source``."""
    tree = ast.parse(source)
    return {n.name: ast.get_source_segment(source, n) or "" for n in tree.body
            if isinstance(n, (ast.ClassDef, ast.FunctionDef))}


def test_embedded_runtime_is_the_runtime_source(tmp_path: Path):
    """What a generated module embeds is the runtime modules' text, whole, and it imports nothing from dlc."""
    spec = tmp_path / "net.dln"
    spec.write_text("""
network N {
    input t: [7] int64
    input x: [3, 8, 8]
    s = t -> embedding(50, 8) -> lstm(6) -> enc: (bidirectional(gru(4), merge=sum) -> reshape([-1]))
    output y = x -> conv2d(4, k=3, pad=1) -> batchnorm -> relu -> flatten -> linear(5) -> dropout(0.1)
    output z = s
}""")
    source = dlc.compile(spec, fuse=True, fused_recurrent=True).source
    headings = _HEADING.findall(source)
    assert [h[0] for h in headings] == ["common", "recurrent"]
    assert without_runtime(source).count(_CHECKED) == 2  # each part equals its module's embedded text
    helpers = definitions()
    top = _top_level(source)
    for name in ("Reshape", "SequenceGRU", "SequenceOutput", "merge_directions"):
        assert top[name] == helpers[name].text, name
    assert not {"FoldingSequential", "SequenceLSTM", "SequenceRNN"} & set(top)  # only what the module uses
    tree = ast.parse(source)
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m == "dlc" or m.startswith("dlc.") for m in modules), modules


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_output_does_not_depend_on_working_directory(spec: Path, tmp_path: Path, monkeypatch):
    """A relative path from another directory gives the same IR text and source as the absolute one."""
    compiled = dlc.compile(spec)
    monkeypatch.chdir(tmp_path)
    other = dlc.compile(os.path.relpath(spec, tmp_path))
    assert print_graph(other.graph) == print_graph(compiled.graph)
    assert other.source == compiled.source


def test_no_stale_golden_files():
    """Every golden file belongs to a spec that still exists (delete files of removed specs)."""
    if not GOLDEN.exists():
        pytest.skip("no golden files yet")
    names = {p.stem for p in SPECS}
    stale = []
    for f in GOLDEN.iterdir():
        if f.name == "README.md":
            continue
        stem = f.name.removesuffix(".ir.txt").removesuffix(".py")
        for _, variant in VARIANTS:
            stem = stem.removesuffix(f".{variant}")
        if stem not in names:
            stale.append(f.name)
    assert not stale, f"golden files without a spec in specs/: {stale}"


def test_golden_detects_a_change(tmp_path: Path):
    """The comparison really fails, with a unified diff, when the text differs."""
    golden = tmp_path / "x.py"
    golden.write_text("a = 1\nb = 2\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception) as info:
        check_golden(golden, "a = 1\nb = 3\n", update=False)
    message = str(info.value)
    assert "-b = 2" in message and "+b = 3" in message and "@@" in message
    check_golden(golden, "a = 1\nb = 3\n", update=True)
    assert golden.read_text(encoding="utf-8") == "a = 1\nb = 3\n"
    with pytest.raises(AssertionError, match="absolute path"):
        check_golden(golden, "# from /home/someone/specs/x.dln\n", update=False)
