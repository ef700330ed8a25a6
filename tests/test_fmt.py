"""``dlc fmt``: the layout, semantics kept (the IR of every spec and docs example is unchanged), idempotence,
comments kept in order, and the command line (in place, ``-``, ``--check``, ``--diff``, bad input).

Every spec is checked in two deformatted variants written next to each other in a temporary copy of specs/
(imports stay relative): "squashed" (the same lines, spacing removed or added at random) must format back to
exactly the committed spec; "exploded" (every token on a line of its own, random indentation) must format to a
spec with the same IR.
"""

from __future__ import annotations

import io
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlc import cli as dlc_cli
from dlc.compiler.serialize import dump_yaml
from dlc.diagnostics import DlcError
from dlc.fmt import LINE_LIMIT, format_text
from dlc.grammar.parser import parse
from dlc.pipeline import build_graph

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").rglob("*.dln"))
NETWORKS = sorted((ROOT / "specs").glob("*.dln"))
DOCS = [ROOT / "docs" / "language.md", ROOT / "docs" / "fmt.md"]

# the spec's tokens as the grammar reads them: strings first (a `#` inside one is no comment), label patterns
# (`layer_{i}`), numbers (`1e-6`), names, multi-character operators, then any other character
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[^\W\d]\w*\{i\}\w*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+|\w+|'
                    r"\.\.\.|->|==|!=|<=|>=|//|\S")


def _lines(text: str) -> list[tuple[list[str], str | None]]:
    """Each line's code tokens and its comment."""
    out = []
    for line in text.splitlines():
        toks = _TOKEN.findall(line)
        comment = toks.pop() if toks and toks[-1].startswith("#") else None
        out.append((toks, comment))
    return out


def comments(text: str) -> list[str]:
    return [c.rstrip() for _, c in _lines(text) if c]


def _wordish(tok: str) -> bool:
    return tok[0].isalnum() or tok[0] in "_\"." or tok == "..."


def squashed(text: str, rng: random.Random) -> str:
    """The same lines, each with its tokens glued or spaced out at random (never two words glued)."""
    out = []
    for toks, comment in _lines(text):
        line = " " * rng.randrange(0, 9) + (toks[0] if toks else "")
        for a, b in zip(toks, toks[1:]):
            glue = not (_wordish(a) and _wordish(b)) and rng.random() < 0.5
            line += ("" if glue else " " * rng.randrange(1, 4)) + b
        out.append(line + (" " + comment if comment else ""))
    return "\n".join(out) + "\n"


def exploded(text: str, rng: random.Random) -> str:
    """Every token on its own line (a comment stays after the last token of its line)."""
    out = []
    for toks, comment in _lines(text):
        out += [" " * rng.randrange(0, 9) + t for t in toks]
        if comment and toks:
            out[-1] += " " + comment
        elif comment:
            out.append(comment)
    return "\n".join(out) + "\n"


def ir(path: Path, params: dict | None = None) -> object:
    """The IR as ``dlc ir`` prints it, less source positions and file names; or the error code."""
    try:
        graph = build_graph(path, params)
    except DlcError as err:
        return ("error", err.code)
    return _strip(yaml.load(dump_yaml(graph), Loader=yaml.CSafeLoader))


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: (None if k == "blocks" else _strip(v)) for k, v in value.items()
                if k not in ("span", "file", "files")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Path:
    """specs/ copied three times: formatted from the squashed and from the exploded text, and as it is."""
    root = tmp_path_factory.mktemp("fmt")
    rng = random.Random(12)
    for path in SPECS:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT / "specs")
        for name, deform in (("squashed", squashed), ("exploded", exploded)):
            out = root / name / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(format_text(deform(text, rng), str(out)), encoding="utf-8")
    return root


def test_every_spec_is_formatted(capsys):
    assert dlc_cli.main(["fmt", "--check", str(ROOT / "specs")]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_spacing_is_canonical(variants, path):
    """However a spec's lines are spaced, the formatter writes the committed text back."""
    rel = path.relative_to(ROOT / "specs")
    assert (variants / "squashed" / rel).read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_exploded_spec_keeps_its_meaning_and_comments(variants, path):
    rel = path.relative_to(ROOT / "specs")
    text = (variants / "exploded" / rel).read_text(encoding="utf-8")
    assert format_text(text) == text  # idempotent
    assert comments(text) == comments(path.read_text(encoding="utf-8"))
    assert max(len(line) for line in text.splitlines()) <= LINE_LIMIT + 40  # only comments may run past the limit
    if path in NETWORKS:
        assert ir(variants / "exploded" / rel) == ir(path)


def _doc_examples() -> list[tuple[str, str, dict[str, str], dict]]:
    """(id, text, files written by earlier `<!-- file: -->` blocks, params) of every ```dln block of the docs."""
    out = []
    for doc in DOCS:
        if not doc.exists():
            continue
        files: dict[str, str] = {}
        pending: dict[str, str] = {}
        lines = doc.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^<!--\s*(error|file|params)\s*:\s*(.*?)\s*-->\s*$", lines[i].strip())
            if m:
                pending[m.group(1)] = m.group(2)
            elif lines[i].strip() == "```dln":
                j = lines.index("```", i + 1)
                text = "\n".join(lines[i + 1:j]) + "\n"
                if "file" in pending:
                    files[pending["file"]] = text
                else:
                    params = yaml.safe_load(pending.get("params", "{}"))
                    out.append((f"{doc.stem}:{i + 1}", text, dict(files), params))
                pending, i = {}, j
            i += 1
    return out


DOC_EXAMPLES = _doc_examples()


@pytest.mark.parametrize("example", DOC_EXAMPLES, ids=[e[0] for e in DOC_EXAMPLES])
def test_docs_example_keeps_its_meaning(tmp_path, example):
    _, text, files, params = example
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    try:
        new = format_text(text, "net.dln")
    except DlcError as err:  # a syntax-error example: the compiler's parser says the same
        with pytest.raises(DlcError) as want:
            parse(text, "net.dln")
        assert (err.code, err.span) == (want.value.code, want.value.span)
        return
    assert format_text(new) == new
    assert comments(new) == comments(text)
    (tmp_path / "net.dln").write_text(text, encoding="utf-8")
    before = ir(tmp_path / "net.dln", params)
    (tmp_path / "net.dln").write_text(new, encoding="utf-8")
    assert ir(tmp_path / "net.dln", params) == before


def test_layout():
    messy = ("import \"blocks/resnet.dln\"\n\n\n\nnetwork  N( c :int=4 ){input x:[4,T]  # in\n"
             "\n\n  y=x->fc:linear( c ,bias = false)->relu\n      -> dropout(0.1)\n"
             "  z = y[ 1 : , :: 2 ] * -1 + (if true then y else y)\n"
             "  output out = z\n}\nblock B(c: int | list[int]) { input x return x->linear(c)}")
    assert format_text(messy) == (
        'import "blocks/resnet.dln"\n'
        "\n"
        "network N(c: int = 4) {\n"
        "    input x: [4, T]  # in\n"
        "\n"
        "    y = x -> fc: linear(c, bias=false) -> relu\n"
        "          -> dropout(0.1)\n"
        "    z = y[1:, ::2] * -1 + (if true then y else y)\n"
        "    output out = z\n"
        "}\n"
        "\n"
        "block B(c: int | list[int]) {\n"
        "    input x\n"
        "    return x -> linear(c)\n"
        "}\n")


def test_long_lines_break_before_arrows_then_after_commas():
    stage = "conv2d(64, k=3, stride=1, pad=1, bias=false)"
    text = "network N {\n    input x: [3, 8, 8]\n    output y = x -> " + " -> ".join([stage] * 4) + "\n}\n"
    out = format_text(text)
    assert out == ("network N {\n    input x: [3, 8, 8]\n"
                   f"    output y = x -> {stage} -> {stage}\n"
                   f"                 -> {stage} -> {stage}\n}}\n")
    args = ", ".join(f"a{i}=1" for i in range(40))
    long_call = "network N {\n    input x: [3]\n    output y = x -> f(" + args + ")\n}\n"
    out = format_text(long_call)
    lines = out.splitlines()
    assert all(len(line) <= LINE_LIMIT for line in lines)
    assert lines[3].startswith(" " * len("    output y = x -> f("))  # under the first argument
    assert format_text(out) == out


def test_comments_everywhere_are_kept():
    text = ("# head\n\n# about N\nnetwork N {  # opening\n    # first\n    input x: [4]\n"
            "    y = x -> linear(4)  # one\n        # between stages\n        -> relu\n"
            "    # last\n}\n# tail\n")
    out = format_text(text)
    assert comments(out) == comments(text)
    assert out == ("# head\n\n# about N\nnetwork N {  # opening\n    # first\n    input x: [4]\n"
                   "    y = x -> linear(4)  # one\n          # between stages\n          -> relu\n"
                   "    # last\n}\n# tail\n")
    assert format_text(out) == out


def test_hanging_brackets_keep_their_contents_apart():
    text = ("network N {\n    input x: [4]\n    output y = x -> g: (\n  linear(4) -> relu  # a\n"
            "-> relu)  # b\n}\n")
    assert format_text(text) == ("network N {\n    input x: [4]\n    output y = x -> g: (\n"
                                 "        linear(4) -> relu  # a\n        -> relu            # b\n    )\n}\n")


@pytest.mark.slow
def test_generated_specs_keep_their_meaning(tmp_path):
    """Random well-formed specs (tests/spec_strategies.py): formatting keeps the IR and is idempotent."""
    from hypothesis import HealthCheck, given, settings

    from spec_strategies import specs

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(specs())
    def check(text: str) -> None:
        rng = random.Random(len(text))
        new = format_text(exploded(text, rng))
        assert format_text(new) == new
        (tmp_path / "a.dln").write_text(text, encoding="utf-8")
        (tmp_path / "b.dln").write_text(new, encoding="utf-8")
        assert ir(tmp_path / "b.dln") == ir(tmp_path / "a.dln")

    check()


# ---- the command line ---------------------------------------------------------------------------------------

UGLY = "network N{input x:[4]\n output y=x->linear( 3 )}\n"
PRETTY = "network N {\n    input x: [4]\n    output y = x -> linear(3)\n}\n"


def _dlc(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlc", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_rewrites_in_place_and_reports(tmp_path, capsys):
    (tmp_path / "a.dln").write_text(UGLY)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.dln").write_text(PRETTY)
    assert dlc_cli.main(["fmt", str(tmp_path)]) == 0
    assert (tmp_path / "a.dln").read_text() == PRETTY
    assert (tmp_path / "sub" / "b.dln").read_text() == PRETTY
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"reformatted {tmp_path / 'a.dln'}\n"


def test_check_lists_files_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "a.dln").write_text(UGLY)
    (tmp_path / "b.dln").write_text(PRETTY)
    assert dlc_cli.main(["fmt", "--check", str(tmp_path / "a.dln"), str(tmp_path / "b.dln")]) == 1
    assert capsys.readouterr() == (f"{tmp_path / 'a.dln'}\n", "")
    assert (tmp_path / "a.dln").read_text() == UGLY
    assert dlc_cli.main(["fmt", "--check", str(tmp_path / "b.dln")]) == 0


def test_diff_prints_a_unified_diff(tmp_path, capsys):
    (tmp_path / "a.dln").write_text(UGLY)
    assert dlc_cli.main(["fmt", "--diff", str(tmp_path / "a.dln")]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"--- {tmp_path / 'a.dln'}\n+++ {tmp_path / 'a.dln'}\n@@")
    assert "+    output y = x -> linear(3)\n" in out
    assert (tmp_path / "a.dln").read_text() == UGLY


def test_stdin_to_stdout_without_torch():
    code = ("import io, sys\nfrom dlc import cli\nsys.stdin = io.StringIO(sys.argv[1])\n"
            "rc = cli.main(['fmt', '-'])\nassert 'torch' not in sys.modules and 'triton' not in sys.modules\n"
            "sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, UGLY], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout, run.stderr) == (0, PRETTY, "")


def test_a_spec_that_does_not_parse_is_left_alone(tmp_path):
    bad = tmp_path / "bad.dln"
    bad.write_text("network N {\n    input x: [4]\n    output y = x ->\n}\n")
    good = tmp_path / "good.dln"
    good.write_text(UGLY)
    run = _dlc("fmt", str(bad), str(good))
    assert run.returncode == 1
    assert f"{bad}:4:1: error[syntax]: unexpected `}}`; expected a pipeline stage after `->`" in run.stderr
    assert " 4 | }\n   | ^\n" in run.stderr
    assert bad.read_text() == "network N {\n    input x: [4]\n    output y = x ->\n}\n"
    assert good.read_text() == PRETTY  # the other files are still formatted


def test_stdin_syntax_error(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("network N {\n  input x: [4\n}\n"))
    assert dlc_cli.main(["fmt", "-"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("<stdin>:3:1: error[syntax]: unexpected `}`")


@pytest.mark.parametrize("name, code", [("missing.dln", "file-not-found"), ("notes.txt", "not-a-spec")])
def test_files_that_cannot_be_formatted(tmp_path, capsys, name, code):
    (tmp_path / "notes.txt").write_text("hello")
    assert dlc_cli.main(["fmt", str(tmp_path / name)]) == 1
    assert f"error[{code}]" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "hello"


def test_usage_errors_exit_2():
    run = _dlc("fmt")
    assert run.returncode == 2
    assert "the following arguments are required: FILE" in run.stderr
    run = _dlc("fmt", "--bogus", "x.dln")
    assert run.returncode == 2


def test_docs_before_and_after():
    """docs/fmt.md's example: the `after` block is what the formatter makes of the `before` block."""
    text = (ROOT / "docs" / "fmt.md").read_text(encoding="utf-8")
    blocks = dict(re.findall(r"<!-- fmt: (\w+) -->\n```dln\n(.*?)```", text, re.S))
    assert set(blocks) == {"before", "after"}
    assert format_text(blocks["before"]) == blocks["after"]


def test_stdin_over_the_size_limit(capsys, monkeypatch):
    monkeypatch.setenv("DLC_MAX_SPEC_BYTES", "10")
    monkeypatch.setattr(sys, "stdin", io.StringIO(UGLY))
    assert dlc_cli.main(["fmt", "-"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error[file-too-large]: cannot read <stdin>: larger than 10 bytes")


def test_a_break_before_the_first_arrow_indents_the_pipeline():
    text = "network N {\n    input x: [4]\n    output y = x\n  -> linear(4) -> relu\n          -> linear(2)\n}\n"
    assert format_text(text) == ("network N {\n    input x: [4]\n    output y = x\n        -> linear(4) -> relu\n"
                                 "        -> linear(2)\n}\n")


@pytest.mark.parametrize("text", ["network N {\n input x: [4]\n output y = concat(x,  # c\n x,\n)\n}\n",
                                  "network N {\n input x: [4]\n output y = concat(x, x\n # c\n)\n}\n"])
def test_comments_before_a_closing_bracket_are_kept(text):
    out = format_text(text)
    assert comments(out) == ["# c"]
    assert format_text(out) == out
