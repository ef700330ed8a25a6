"""Every ```dln example in docs/language.md compiles, instantiates and runs, or fails as the doc says.

Conventions (HTML comments on the lines just before a ```dln fence):

- no comment: the block is a complete spec. It must compile with ``dlc.compile``, instantiate, and run
  a forward pass on random inputs of its declared shapes (batch 2, symbolic dimensions 8, integer
  inputs random ids in 0..9); every output must have the shape the compiler inferred.
- ``<!-- error: CODE -->``: compiling the block must raise ``DlcError`` with that code. When a ```text
  block follows it directly, that text must be exactly the rendered diagnostic; otherwise the block
  must say ``error[CODE]`` in a comment (readers of the rendered page do not see the HTML comment).
- ``<!-- file: NAME.dln -->``: not compiled; written to NAME.dln (relative to the spec) for later
  blocks to ``import``. A later file block with the same name replaces it.
- ``<!-- params: {name: value, ...} -->``: compile with these parameter overrides (a YAML mapping).

The spec itself is written to ``net.dln`` in a temporary directory that is also the working
directory, so diagnostics read ``net.dln:LINE:COL``. Further checks keep the reference in step with
the compiler: every op of the registry has a row in the op table, and every diagnostic code the
compiler can raise is listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

import dlc
from dlc.compiler.ops.registry import all_ops
from dlc.compiler.types import TensorType
from dlc.diagnostics import DlcError, render

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "language.md"
SYMBOLIC_SIZE = 8
BATCH = 2

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(error|file|params)\s*:\s*(.*?)\s*-->\s*$")


@dataclass
class Example:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)
    follows_directly: bool = False  # only blank lines between the previous block and this one
    expected_text: str | None = None  # a ```text block right after an error example


def parse_doc(text: str) -> list[Example]:
    lines = text.splitlines()
    blocks: list[Example] = []
    pending: dict[str, str] = {}
    since_last = 0  # non-blank lines since the previous block closed
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m and m.group(1):
            start = i
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise AssertionError(f"docs/language.md:{start + 1}: unterminated code block")
            blocks.append(Example(start + 1, m.group(1), "\n".join(body) + "\n", pending, since_last == 0))
            pending = {}
            since_last = 0
        else:
            d = _DIRECTIVE.match(lines[i].strip())
            if d:
                if d.group(1) in pending:
                    raise AssertionError(f"docs/language.md:{i + 1}: `{d.group(1)}` given twice for one block")
                pending = {**pending, d.group(1): d.group(2)}
            elif lines[i].strip() and pending:
                raise AssertionError(f"docs/language.md:{i + 1}: a directive comment must come right before "
                                     f"its ```dln block")
            if lines[i].strip():
                since_last += 1
        i += 1
    if pending:
        raise AssertionError("docs/language.md: a directive comment at the end is not followed by a block")
    for prev, nxt in zip(blocks, blocks[1:]):
        if "error" in prev.directives and nxt.lang == "text" and nxt.follows_directly:
            prev.expected_text = nxt.text
    return blocks


EXAMPLES = parse_doc(DOC.read_text(encoding="utf-8"))
DLN = [e for e in EXAMPLES if e.lang == "dln"]
COMPILED = [e for e in DLN if "file" not in e.directives]


def _files_before(example: Example) -> dict[str, str]:
    files: dict[str, str] = {}
    for e in DLN:
        if e.line >= example.line:
            break
        if "file" in e.directives:
            files[e.directives["file"]] = e.text
    return files


def _random_inputs(compiled) -> list[torch.Tensor]:
    g = compiled.graph
    out = []
    for _, vid in g.inputs:
        t = g.types[vid]
        shape = [BATCH] + [d if isinstance(d, int) else SYMBOLIC_SIZE for d in t.shape]
        dtype = getattr(torch, t.dtype)
        if t.dtype in ("int64", "int32") and not t.shape:  # one integer per sequence: a length, 1..T
            out.append(torch.randint(1, SYMBOLIC_SIZE + 1, shape, dtype=dtype))
        elif t.dtype in ("int64", "int32"):
            out.append(torch.randint(0, 10, shape, dtype=dtype))
        elif t.dtype == "bool":
            out.append(torch.rand(shape) > 0.5)
        else:
            out.append(torch.randn(shape, dtype=dtype))
    return out


def _check_shape(name: str, want, got: torch.Tensor, symbolic: set[str]) -> None:
    assert isinstance(want, TensorType), f"output `{name}` is not a tensor: {want}"
    assert got.shape[0] == BATCH, f"output `{name}`: batch axis {got.shape[0]}"
    assert got.dim() == want.rank + 1, f"output `{name}`: {tuple(got.shape)} vs inferred {want}"
    for axis, d in enumerate(want.shape):
        if isinstance(d, int):
            assert got.shape[axis + 1] == d, f"output `{name}`: {tuple(got.shape)} vs inferred {want}"
        elif d in symbolic:
            assert got.shape[axis + 1] == SYMBOLIC_SIZE, f"output `{name}`: {tuple(got.shape)} vs {want}"


def _ident(e: Example) -> str:
    kind = "error-" + e.directives["error"] if "error" in e.directives else "run"
    return f"line{e.line}-{kind}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _module_paths(model) -> set[str]:
    """Owners of the state_dict entries: `fc1` for `fc1.weight`."""
    return {k.rsplit(".", 1)[0] for k in model.state_dict()}


def _claim_mc_dropout(model, inputs) -> None:
    with torch.no_grad():  # dropout(always=true) stays on after model.eval()
        assert not torch.equal(model(*inputs), model(*inputs))


def _claim_siamese(model, inputs) -> None:
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1, "the tower is one module applied twice"
    assert {"tower.conv2d_0", "tower.fc", "linear_0"} == _module_paths(model)


def _claim_naming(model, inputs) -> None:
    assert _module_paths(model) == {"stem.conv", "stem.bn", "conv_bn_0.conv", "conv_bn_0.bn", "conv2d_0", "ctx",
                                    "ctx.out_proj", "linear_0", "head"}
    assert isinstance(model.act, torch.nn.ReLU)


def _claim_groups(model, inputs) -> None:
    assert isinstance(model.stem, torch.nn.Sequential) and len(model.stem) == 3
    assert {"stem.0", "stem.1", "blocks.0.conv2d_0", "blocks.1.conv2d_0", "pairs.0.0", "pairs.1.0", "named.proj",
            "conv2d_0", "conv2d_1", "conv2d_2"} <= _module_paths(model)


def _claim_causal(model, inputs) -> None:
    x, memory = inputs
    changed = x.clone()
    changed[:, -1] += 1.0  # the last time step must not change earlier outputs
    with torch.no_grad():
        a, b = model(x, memory), model(changed, memory)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)
    assert not torch.allclose(a[:, -1], b[:, -1])


# Claims the text makes about particular examples, checked beyond "it runs" (keyed by network name).
CLAIMS = {
    "MCDropout": _claim_mc_dropout,
    "Siamese": _claim_siamese,
    "Naming": _claim_naming,
    "Groups": _claim_groups,
    "Attend": _claim_causal,
}


def test_claimed_examples_exist() -> None:
    names = {m.group(1) for e in COMPILED for m in re.finditer(r"^network (\w+)", e.text, flags=re.M)}
    assert set(CLAIMS) <= names


@pytest.mark.parametrize("example", COMPILED, ids=[_ident(e) for e in COMPILED])
def test_example(example: Example, workdir: Path) -> None:
    for name, text in _files_before(example).items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (workdir / "net.dln").write_text(example.text, encoding="utf-8")
    params = yaml.safe_load(example.directives["params"]) if "params" in example.directives else {}
    assert isinstance(params, dict), f"line {example.line}: params must be a YAML mapping"

    if "error" in example.directives:
        code = example.directives["error"]
        with pytest.raises(DlcError) as info:
            dlc.compile("net.dln", **params)
        assert info.value.code == code, f"line {example.line}: expected error[{code}], got:\n{render(info.value)}"
        if example.expected_text is not None:
            assert render(info.value).rstrip() == example.expected_text.rstrip()
        else:  # readers do not see the HTML comment: the block itself must say what fails
            assert f"error[{code}]" in example.text, f"line {example.line}: say `# fails with error[{code}]`"
        return

    try:
        compiled = dlc.compile("net.dln", **params)
    except DlcError as err:
        pytest.fail(f"docs/language.md:{example.line}: the example does not compile:\n{render(err)}")
    model = compiled.instantiate()
    model.eval()
    inputs = _random_inputs(compiled)
    with torch.no_grad():
        result = model(*inputs)
    g = compiled.graph
    outputs = [(n, v) for n, v in g.outputs if n not in g.training_outputs]  # eval mode returns these
    results = result if isinstance(result, tuple) and len(outputs) > 1 else (result,)
    assert len(results) == len(outputs)
    symbolic = {d for _, vid in g.inputs for d in g.types[vid].shape if isinstance(d, str)}
    for (name, vid), y in zip(outputs, results, strict=True):
        _check_shape(name, g.types[vid], y, symbolic)
        assert torch.isfinite(y).all(), f"output `{name}` has non-finite values"
    if g.name in CLAIMS:
        CLAIMS[g.name](model, inputs)


def test_doc_has_examples() -> None:
    assert len(COMPILED) >= 40
    assert any("error" in e.directives for e in DLN)
    assert any("file" in e.directives for e in DLN)


def _op_table_rows() -> dict[str, str]:
    rows = {}
    section = DOC.read_text(encoding="utf-8").split("## Op reference", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        m = re.match(r"^\|\s*`([a-z_0-9]+)`\s*\|", line)
        if m:
            rows.setdefault(m.group(1), line)
    return rows


def test_every_op_is_in_the_table() -> None:
    rows = _op_table_rows()
    for name, op in all_ops().items():
        assert name in rows, f"op `{name}` has no row in the op table of docs/language.md"
        for a in op.attrs:
            assert re.search(rf"\b{a.name}\b", rows[name]), f"op `{name}`: argument `{a.name}` is not in its row"


def _raised_codes() -> set[str]:
    """Diagnostic codes the compiler's source can raise."""
    codes: set[str] = set()
    pattern = re.compile(r"(?:DlcError|ShapeError|self\.err|raise_err)\(\s*\"([a-z][a-z-]*)\"|code=\"([a-z][a-z-]*)\"")
    for folder in ("compiler", "grammar", "dlc", "backends"):
        for path in (ROOT / folder).rglob("*.py"):
            for m in pattern.finditer(path.read_text(encoding="utf-8")):
                codes.add(m.group(1) or m.group(2))
    return codes


def test_every_error_code_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Error codes", 1)[1]
    listed = set(re.findall(r"^\|\s*`([a-z][a-z-]*)`\s*\|", section, flags=re.M))
    missing = _raised_codes() - listed
    assert not missing, f"error codes not listed in docs/language.md: {sorted(missing)}"
    errors_shown = {e.directives["error"] for e in DLN if "error" in e.directives}
    assert errors_shown <= listed, f"examples use unlisted codes: {sorted(errors_shown - listed)}"


def test_internal_links_resolve() -> None:
    text = DOC.read_text(encoding="utf-8")
    slugs = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in slugs, f"link to #{anchor} has no heading"
