"""Hardening: mutated specs either compile or raise a DlcError positioned inside the file -- never any other
exception (no tracebacks for users, whatever they type).

A few valid specs are mutated systematically: characters deleted, tokens duplicated, numbers swapped for names
and names for numbers, identifiers replaced by keywords, unicode and quotes, whitespace varied, and the file
truncated. The mutants are sampled deterministically so the whole file runs in a few seconds. Mutants that
compile also go through the inference rewrites and the fused backend (``dlc.compile`` / ``dlc.load`` with
``optimize="inference"`` and/or ``fuse=True``), where likewise nothing but a DlcError may come out.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

import dlc
from dlc.pipeline import build_graph
from dlc.diagnostics import DlcError, render

MLP = """# a small MLP
network MLP(hidden: int = 32, classes: int = 10, p: float = 0.1) {
    input x: [784]
    h = x -> fc1: linear(hidden) -> relu -> dropout(p)
          -> fc2: linear(hidden * 2) -> gelu
    output logits = h -> head: linear(classes)
    output probs = logits -> softmax(dim=-1)
}
"""

BLOCKS = """block ConvBN(c: int, k: int = 3, stride: int = 1) {
    input x
    return x -> conv: conv2d(c, k=k, stride=stride, pad=k // 2, bias=false) -> bn: batchnorm -> relu
}
"""

CONV = """import "blocks.dln"
block Res(c: int, stride: int = 1) {
    input x
    out = x -> a: ConvBN(c, stride=stride) -> b: ConvBN(c)
    skip = if stride != 1 or channels(x) != c
           then x -> down: (conv2d(c, k=1, stride=stride) -> batchnorm)
           else x
    return relu(out + skip)
}
network Net(classes: int = 10, width: int = 8) {
    input img: [3, 16, 16]
    y = img -> stem: ConvBN(width) -> maxpool(2)
            -> layer1: Res(width) * 2
            -> layer2: (Res(width * 2, stride=2) -> Res(width * 2))
    z = concat(y, y * 0.5, dim=0) -> avgpool(global) -> flatten
    output logits = z -> fc: linear(classes)
}
"""

TAGGER = """network Tagger(vocab: int = 100, tags: int = 5, mode: str = "concat") {
    input tokens: [T] int64
    h = tokens -> embed: embedding(vocab, 16)
               -> bi: bidirectional(lstm(8, layers=1), merge=concat)
               -> bidirectional(gru(8), merge=ave)
    enc, state = h -> lstm(8, return_state=true)
    dec = h -> lstm(8, initial_state=state)
    ctx = attention(query=dec, key=enc, value=enc)
    output scores = concat(dec, ctx) -> layernorm -> linear(tags)
}
"""

SPECS = {"mlp": MLP, "conv": CONV, "tagger": TAGGER}

TOKEN = re.compile(r'"[^"\n]*"|[^\W\d]\w*|\d+(?:\.\d+)?|->|//|[=!<>]=|\S')
# what an identifier may be replaced by: keywords of both languages, reserved and non-ASCII names, quotes ...
IDENT_REPLACEMENTS = [
    "if", "then", "else", "input", "output", "return", "network", "block", "import", "true", "not",
    "class", "lambda", "def", "None", "__x", "__init__", "forward", "é", "ñame", "名前", "x٣",
    '"', '"s"', '""', '"\\x"', "'", "`", "\\", "$", "0", "-1", "1.5", "1e999", "99999999999999999999",
    "[", "]", "(", ")", "{", "}", "->", "*", ",", ":", "=", "", "x", "T", "relu", "linear", "Res", "Net",
    "global", "same", "concat", "channels", "size", "max",
]
NUMBER_REPLACEMENTS = ["x", "T", "relu", "true", "hidden", "0", "-3", "2.5", "1e999", "[1, 2]", '"3"', "(", ""]
PUNCT_REPLACEMENTS = ["(", ")", "[", "]", "{", "}", ",", "->", "", "=", ":", "*", "-", "+", "<", "#"]
WHITESPACE = ["\t", "\r\n", "\x0c", "\u00a0", "\u2028", "", "\n\n", " # comment\n"]


def mutants(text: str, rng: random.Random, per_family: int):
    """(description, mutated text) pairs, ``per_family`` of each kind, sampled with ``rng``."""

    def sample(items, k=per_family):
        items = list(items)
        return items if len(items) <= k else rng.sample(items, k)

    n = len(text)
    for i in sample(range(n)):
        yield f"delete char {i} {text[i]!r}", text[:i] + text[i + 1:]
    for i in sample(range(n + 1)):
        yield f"truncate at {i}", text[:i]
    toks = list(TOKEN.finditer(text))
    for m in sample(toks):
        a, b = m.span()
        yield f"duplicate token {m.group()!r} at {a}", text[:b] + " " + m.group() + text[b:]
    for m in sample(toks):
        a, b = m.span()
        yield f"delete token {m.group()!r} at {a}", text[:a] + text[b:]
    numbers = [m for m in toks if m.group()[0].isdigit()]
    for m in numbers:
        a, b = m.span()
        for r in sample(NUMBER_REPLACEMENTS, 4):
            yield f"number {m.group()!r} at {a} -> {r!r}", text[:a] + r + text[b:]
    idents = [m for m in toks if m.group()[0].isalpha() or m.group()[0] == "_"]
    names = sorted({m.group() for m in idents})
    for m in sample(idents, 2 * per_family):
        a, b = m.span()
        r = rng.choice(IDENT_REPLACEMENTS + names)
        yield f"identifier {m.group()!r} at {a} -> {r!r}", text[:a] + r + text[b:]
    punct = [m for m in toks if not m.group()[0].isalnum() and m.group()[0] not in '_"']
    for m in sample(punct):
        a, b = m.span()
        r = rng.choice(PUNCT_REPLACEMENTS)
        yield f"punctuation {m.group()!r} at {a} -> {r!r}", text[:a] + r + text[b:]
    spaces = [m.start() for m in re.finditer(r"\s", text)]
    for i in sample(spaces, per_family // 2):
        r = rng.choice(WHITESPACE)
        yield f"whitespace at {i} -> {r!r}", text[:i] + r + text[i + 1:]
    for i in sample(range(n), per_family // 2):  # swap two neighbouring characters
        yield f"swap chars at {i}", text[:i] + text[i + 1:i + 2] + text[i:i + 1] + text[i + 2:]


def check_compiles_or_diagnoses(path: Path, text: str, files: dict[str, str], what: str) -> str:
    """Compile ``text`` as ``path``; returns 'ok' or the error code, fails on anything but a good DlcError."""
    try:
        build_graph(path, text=text)
        return "ok"
    except DlcError as err:
        span = err.span
        assert span is not None, f"{what}: {err.code} without a position: {err}"
        source = text if Path(span.file) == path else files.get(Path(span.file).name)
        assert source is not None, f"{what}: span in an unknown file {span.file}: {err}"
        lines = source.split("\n")
        assert 1 <= span.line <= len(lines), f"{what}: line {span.line} outside the file: {err}"
        assert 1 <= span.col <= len(lines[span.line - 1].rstrip("\r")) + 1, \
            f"{what}: column {span.col} outside line {span.line}: {err}"
        assert err.message and "Traceback" not in err.message, what
        rendered = render(err)
        assert rendered.startswith(f"{span.file}:{span.line}:{span.col}: error[{err.code}]: "), what
        return err.code
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{what}: {type(exc).__name__}: {exc}\n--- spec ---\n{text}")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_valid_specs_compile(tmp_path, name):
    (tmp_path / "blocks.dln").write_text(BLOCKS, encoding="utf-8")
    build_graph(tmp_path / f"{name}.dln", text=SPECS[name])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_mutants_compile_or_raise_positioned_dlc_errors(tmp_path, name):
    files = {"blocks.dln": BLOCKS}
    for fname, body in files.items():
        (tmp_path / fname).write_text(body, encoding="utf-8")
    path = tmp_path / f"{name}.dln"
    rng = random.Random(f"dlc-{name}")
    outcomes: dict[str, int] = {}
    for what, text in mutants(SPECS[name], rng, per_family=60):
        code = check_compiles_or_diagnoses(path, text, files, f"{name}: {what}")
        outcomes[code] = outcomes.get(code, 0) + 1
    # the mutations reach past the parser into the elaborator and the shape rules
    assert outcomes.get("syntax", 0) > 50
    assert len(outcomes) >= 8, outcomes


def test_mutated_imported_file(tmp_path):
    path = tmp_path / "conv.dln"
    rng = random.Random("dlc-imported")
    for what, body in mutants(BLOCKS, rng, per_family=15):
        (tmp_path / "blocks.dln").write_text(body, encoding="utf-8")
        check_compiles_or_diagnoses(path, CONV, {"blocks.dln": body}, f"blocks.dln: {what}")


@pytest.mark.parametrize("overrides", [
    {"classes": "ten"}, {"classes": 0}, {"classes": -1}, {"classes": True}, {"classes": 2.5}, {"classes": None},
    {"classes": [1, 2]}, {"width": 1}, {"width": 10**9}, {"clases": 3}, {"": 1}, {"width": 3, "extra": 1},
])
def test_bad_overrides(tmp_path, overrides):
    (tmp_path / "blocks.dln").write_text(BLOCKS, encoding="utf-8")
    path = tmp_path / "conv.dln"
    try:
        build_graph(path, overrides=overrides, text=CONV)
    except DlcError as err:
        # a layer made too large by an override is reported where the layer is, possibly in blocks.dln
        assert err.span is not None and err.span.file in (str(path), str(tmp_path / "blocks.dln")), render(err)


@pytest.mark.parametrize("text", [
    "", "\n", "# just a comment", "network", "network N", "network N {", "network N {}", "block B {}",
    "network N { input x: [4] output y = x }" * 2, "\ufeffnetwork N { input x: [4] output y = x }",
    "network N { input x: [4] output y = x } \x00", 'import ""', 'import "."', 'import "/"',
    'import "net.dln"\nnetwork N { input x: [4] output y = x }',
    "network N { input x: [] output y = x -> relu }",
    "network N { input x: [4] int64 output y = x -> linear(3) }",
    "network N { input x: [T, T] output y = x -> linear(3) -> flatten }",
    "network N { input x: [4] output y = x -> timedistributed(relu) }",
    "network N { input x: [2, 4] output y = x -> timedistributed(lstm(3)) }",
    "network N { input x: [4] a = linear(3) output y = a(a(x)) }",
    "network N { input x: [4] a = linear(3) output y = a(x) + a(x -> relu -> linear(3)) }",
    "network N { input x: [4] output y = x -> linear(3) * 100000 }",
    "network N { input x: [4] output y = x -> reshape([-1, -1]) }",
    "network N { input x: [4] output y = x -> reshape([0, -1]) }",
    "network N { input x: [4] output y = x -> softmax(dim=-5) }",
    "network N { input x: [4] output y = x -> linear(size(x, 5)) }",
    "network N { input x: [4] output y = x -> linear(channels(3)) }",
    "network N { input x: [4] output y = x -> linear(4 // 0) }",
    "network N { input x: [4] output y = x / 0 }",
    "network N { input x: [4] output y = x -> linear(min()) }",
    "network N { input x: [4] output y = x -> linear(len([1, [2]])) }",
    "network N { input x: [4] output y = x -> linear(int(1e300 * 1e300)) }",
    "network N { input x: [4] output y = x -> linear(2 ** 3) }",
    "network N { input x: [4] output y = x -> attention(heads=3) }",
    "network N { input x: [3, 4] output y = attention(query=x, key=x, value=x, heads=0) }",
    "network N { input x: [3, 4] output y = attention(x, x, x, x) }",
    "network N { input x: [3, 4] output a, b = x }",
    "network N { input x: [3, 4] output a, a = x -> lstm(3, return_state=true) }",
    "network N { input x: [3, 4] output y }",
    "network N { input x: [3, 4] output x }",
    "network N { input x: [3, 4] output y = channels }",
    "network N { input x: [3, 4] output y = x -> N }",
    "block B { input x return x } network N { input x: [4] output y = B(x, x) }",
    "block B { input x return x } network N { input x: [4] output y = B(y=x) }",
    "block B { input x return x, x } network N { input x: [4] output y = x -> B }",
    "block B { return 1 } network N { input x: [4] output y = x -> B }",
    "block B(c: list = [1, 2]) { input x return x -> reshape(c) } network N { input x: [2] output y = x -> B }",
    "block B(c: str = 3) { input x return x } network N { input x: [4] output y = x -> B }",
    "block B(c: int = c) { input x return x } network N { input x: [4] output y = x -> B }",
    "network N(n: int = n) { input x: [4] output y = x }",
    "network N { input x: [T, 4] output y = x -> reshape([size(x, 0), -1]) }",
    "network N { input x: [3, 8, 8] output y = x -> maxpool(2, pad=[1]) }",
    "network N { input x: [3, 8, 8] output y = x -> conv2d(3, k=[1, 2, 3], stride=[], dilation=[0]) }",
    "network N { input x: [3, 8, 8] output y = x -> conv_transpose2d(3, k=1, pad=5) }",
    "network N { input x: [3, 8] output y = x -> upsample(-2) -> upsample(0.01) }",
    "network N { input x: [4, 3, 8, 8] output y = x -> timedistributed(conv2d(3, k=3, groups=2)) }",
    "network N { input x: [4, 8] output y = x -> timedistributed(timedistributed(linear(3))) }",
    "block B { input x return x } network N { input x: [4, 8] output y = x -> timedistributed(B) }",
    "network N { input x: [T, 8] a, s = x -> lstm(3, return_state=true) output y = a + s }",
    "network N { input x: [T, 8] a, s = x -> lstm(3, return_state=true) k = channels(s) output y = a }",
    "network N { input x: [T, 8] a, s = x -> lstm(3, return_state=true) output y = x -> lstm(3, initial_state=a) }",
    "network N { input x: [8] k = size(x, true) + size(x, \"a\") output y = x }",
    "network N { input x: [8] output y = x -> g: (forward: linear(8)) }",
    "block B { input x input x return x } network N { input x: [8] output y = x -> B }",
    "block B { input x return x, x } network N { input x: [8] output y = x -> g: (B -> relu) }",
    "block B { input x return N } network N { input x: [8] output y = B(x) }",
])
def test_odd_specs(tmp_path, text):
    check_compiles_or_diagnoses(tmp_path / "net.dln", text, {}, repr(text))


# ---- the optimize and fuse paths ----------------------------------------------------------------------------------

# (optimize, fuse) beyond the plain compile the tests above check
BACKEND_PATHS = [("inference", False), (None, True), ("inference", True)]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_mutants_through_optimize_and_fuse_raise_only_dlc_errors(tmp_path, name):
    """Every mutant that compiles plainly, compiled with the inference rewrites and/or fused; every tenth one
    also loaded (the generated module imported and the network constructed) on each path."""
    (tmp_path / "blocks.dln").write_text(BLOCKS, encoding="utf-8")
    path = tmp_path / f"{name}.dln"
    rng = random.Random(f"dlc-backend-{name}")
    compiled = 0
    for i, (what, text) in enumerate(mutants(SPECS[name], rng, per_family=12)):
        try:
            build_graph(path, text=text)
        except DlcError:
            continue  # the tests above check these diagnostics
        path.write_text(text, encoding="utf-8")
        for optimize, fuse in BACKEND_PATHS:
            try:
                if i % 10 == 0:
                    dlc.load(path, optimize=optimize, fuse=fuse)
                else:
                    dlc.compile(path, optimize=optimize, fuse=fuse)
            except DlcError as err:
                assert err.span is not None and Path(err.span.file).name in (path.name, "blocks.dln"), render(err)
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{name}: {what} (optimize={optimize}, fuse={fuse}): {type(exc).__name__}: {exc}\n"
                            f"--- spec ---\n{text}")
        compiled += 1
    assert compiled >= 10  # enough mutants get past the front end to exercise the backends
