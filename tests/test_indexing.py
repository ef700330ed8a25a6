"""Indexing and slicing (`x[0]`, `x[:, 1:]`, `x[..., :T]`, the op `index`), `split`, `chunk` and `transpose`
(compiler/ops/index.py, the subscript syntax in grammar/ and compiler/expressions.py).

The generated modules are compared with the same indexing, torch.split, torch.chunk and Tensor.transpose applied by
hand to the same tensors, forward and backward in float64, at two lengths of every symbolic dimension; the inferred
shapes with what PyTorch returns; the fused module with the plain one; and every bad subscript gives its
diagnostic through the command line (exit 1, `file:line:col`, a caret under the item).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_kernels_ran
from dlc.compiler.ops.registry import op_of
from dlc.compiler.passes.verify import infer_shapes
from dlc.compiler.serialize import dump_yaml, from_dict, load_yaml, to_dict

import dlc
from dlc.cli import main

SLICES = """
network Slices {
    input x: [4, T, 6]
    output a = x[0]
    output b = x[:, 1:]
    output c = x[..., :3]
    output d = x[-1]
    output e = x[:, ::2]
    output f = x[0, :, 2:-1]
    output g = x[1:3, -2]
    output h = x[..., 1:-1:2]
    output i = x[-3:, 2:, ...]
    output j = x[:, :-1, 5]
}
"""
# the same subscripts on a batched tensor: the batch axis comes first
REFERENCE = [
    lambda x: x[:, 0], lambda x: x[:, :, 1:], lambda x: x[..., :3], lambda x: x[:, -1], lambda x: x[:, :, ::2],
    lambda x: x[:, 0, :, 2:-1], lambda x: x[:, 1:3, -2], lambda x: x[..., 1:-1:2], lambda x: x[:, -3:, 2:, ...],
    lambda x: x[:, :, :-1, 5],
]
SHAPES = ["[T, 6]", "[4, T-1, 6]", "[4, T, 3]", "[T, 6]", "[4, (T-1)//2+1, 6]", "[T, 3]", "[2, 6]", "[4, T, 2]",
          "[3, T-2, 6]", "[4, T-1]"]


def _compile(tmp_path, text: str, **options) -> dlc.Compiled:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return dlc.compile(path, **options)


def _shapes(compiled: dlc.Compiled) -> list[str]:
    g = compiled.graph
    return ["[" + ", ".join(map(str, g.types[v].shape)) + "]" for _, v in g.outputs]


def _check_against(model, inputs: list[torch.Tensor], reference) -> None:
    """``model`` equals ``reference`` on ``inputs`` (float64), forward, and backward to every input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    mirror = [t.detach().clone().requires_grad_() for t in inputs]
    got = model(*leaves)
    want = reference(*mirror)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    for y, r in zip(got, want):
        torch.testing.assert_close(y, r, atol=1e-12, rtol=0)
    weights = [torch.randn_like(r) for r in want]
    sum((y * w).sum() for y, w in zip(got, weights)).backward()
    sum((r * w).sum() for r, w in zip(want, weights)).backward()
    for a, b in zip(leaves, mirror):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)


def test_slices_match_torch_at_two_lengths(tmp_path):
    compiled = _compile(tmp_path, SLICES)
    assert _shapes(compiled) == SHAPES
    model = compiled.instantiate().double()
    for length in (5, 9):
        x = torch.randn(2, 4, length, 6, dtype=torch.float64)
        _check_against(model, [x], lambda x: tuple(f(x) for f in REFERENCE))


def test_generated_forward_is_plain_subscripts(tmp_path):
    source = _compile(tmp_path, SLICES).source
    for line in ("a = x[:, 0]", "b = x[:, :, 1:]", "c = x[..., :3]", "d = x[:, -1]", "e = x[:, :, ::2]",
                 "f = x[:, 0, :, 2:-1]", "h = x[..., 1:-1:2]", "i = x[:, -3:, 2:, ...]"):
        assert f"        {line}  # net.dln:" in source


def test_diagram_label_is_the_subscript(tmp_path):
    g = _compile(tmp_path, SLICES).graph
    labels = [op_of(n.op).describe(n.attrs) for n in g.nodes if n.op == "index"]
    assert labels[:3] == ["[0]", "[:, 1:]", "[..., :3]"] and labels[7] == "[..., 1:-1:2]"


def test_the_ir_round_trip_keeps_the_shapes(tmp_path):
    g = _compile(tmp_path, SLICES + SYMBOLIC_BOUND.replace("Crop", "Crop2")).graph
    again = from_dict(to_dict(g))
    assert not infer_shapes(again)
    assert load_yaml(dump_yaml(g)) == g  # entries are plain lists, symbolic bounds included: they load back equal


SYMBOLIC_BOUND = """
network Crop {
    input tokens: [T, 8]
    input pos: [16, 8]
    input x: [3, T]
    padded = x -> c: conv1d(5, k=3, pad=2)
    output causal = padded[..., :T]
    output positions = tokens + pos[:T]
    output skip = pos[2:T]
}
"""


def test_a_symbolic_bound_is_read_at_run_time(tmp_path):
    compiled = _compile(tmp_path, SYMBOLIC_BOUND)
    assert _shapes(compiled) == ["[5, T]", "[T, 8]", "[T-2, 8]"]
    assert "causal = padded[..., : tokens.shape[1]]" in compiled.source  # ruff's spacing around code bounds
    assert "positions = pos[:, : tokens.shape[1]]" in compiled.source
    model = compiled.instantiate().double()
    conv = model.c

    def reference(tokens, pos, x):
        t = tokens.shape[1]
        return F.conv1d(x, conv.weight, conv.bias, padding=2)[..., :t], tokens + pos[:, :t], pos[:, 2:t]
    for length in (4, 11):
        inputs = [torch.randn(2, length, 8, dtype=torch.float64), torch.randn(2, 16, 8, dtype=torch.float64),
                  torch.randn(2, 3, length, dtype=torch.float64)]
        _check_against(model, inputs, reference)


def test_a_block_reads_a_symbolic_bound_from_its_own_input(tmp_path):
    compiled = _compile(tmp_path, """
block Causal(k: int) {
    input x: [C, T]
    y = x -> conv1d(4, k=k, pad=k - 1)
    return y[..., :T] -> relu
}
network N {
    input x: [2, T]
    output y = x -> Causal(3) -> Causal(5)
}
""")
    assert _shapes(compiled) == ["[4, T]"]
    model = compiled.instantiate().double()
    for length in (6, 10):
        x = torch.randn(3, 2, length, dtype=torch.float64)
        assert model(x).shape == (3, 4, length)


SPLITS = """
network Splits {
    input x: [7, 6]
    a, b = x -> split([2, 5], dim=0)
    p, q, r = x -> split(3, dim=0)
    u, v, w = x -> chunk(3, dim=0)
    s, t, z = x -> chunk(4)
    h1, h2 = x -> chunk(2, dim=-1)
    output o1 = a
    output o2 = b
    output o3 = p
    output o4 = q
    output o5 = r
    output o6 = u
    output o7 = w
    output o8 = s
    output o9 = z
    output o10 = h1 * h2
    output o11 = x -> transpose(0, 1)
    output o12 = x -> transpose(-1, 0) -> linear(3)
    output o13 = (x -> chunk(2, dim=0))[1]
}
"""


def test_split_chunk_and_transpose_match_torch(tmp_path):
    compiled = _compile(tmp_path, SPLITS)
    assert _shapes(compiled) == ["[2, 6]", "[5, 6]", "[3, 6]", "[3, 6]", "[1, 6]", "[3, 6]", "[1, 6]", "[7, 2]",
                                 "[7, 2]", "[7, 3]", "[6, 7]", "[6, 3]", "[3, 6]"]
    source = compiled.source
    assert "a, b = torch.split(x, (2, 5), dim=1)" in source and "p, q, r = torch.split(x, 3, dim=1)" in source
    assert "s, t, z = torch.chunk(x, 4, dim=2)" in source and "o11 = x.transpose(1, 2)" in source
    model = compiled.instantiate().double()
    fc = model.linear_0

    def reference(x):
        a, b = torch.split(x, [2, 5], dim=1)
        p, q, r = torch.split(x, 3, dim=1)
        u, _, w = torch.chunk(x, 3, dim=1)
        s, _, z = torch.chunk(x, 4, dim=2)  # 6 in chunks of 2: three pieces, not four
        h1, h2 = torch.chunk(x, 2, dim=2)
        return (a, b, p, q, r, u, w, s, z, h1 * h2, x.transpose(1, 2), fc(x.transpose(2, 1)),
                torch.chunk(x, 2, dim=1)[1])
    _check_against(model, [torch.randn(2, 7, 6, dtype=torch.float64)], reference)


def test_transpose_moves_the_layout_with_the_features(tmp_path):
    compiled = _compile(tmp_path, """
network N {
    input x: [T, 4]
    output y = x -> transpose(0, 1) -> conv1d(8, k=3)
    output z = x -> transpose(0, 1) -> transpose(1, 0) -> linear(2)
}
""")
    assert _shapes(compiled) == ["[8, T-2]", "[T, 2]"]
    g = compiled.graph
    assert [g.types[v].layout for _, v in g.outputs] == ["cf", "fl"]


def test_lists_and_results_are_indexed_at_compile_time(tmp_path):
    compiled = _compile(tmp_path, """
network N(widths: list = [3, 5, 8]) {
    input x: [6]
    y = x -> linear(widths[-1]) -> linear(widths[1])
    output a = y
    output b = (x -> split([2, 4]))[1] -> linear(len(widths[1:]))
}
""")
    assert _shapes(compiled) == ["[5]", "[2]"]


def test_fused_module_equals_the_plain_one(tmp_path):
    text = """
network N {
    input x: [4, T, 6]
    a, b = (x -> relu)[:, 1:] -> chunk(2, dim=-1)
    y = (a * 2 + b) -> sigmoid
    output o = (y[..., ::2] -> transpose(0, 1)) + 1
}
"""
    plain = _compile(tmp_path, text).instantiate().double()
    fused = _compile(tmp_path, text, fuse=True).instantiate().double()
    fused.load_state_dict(plain.state_dict())
    for length in (3, 8):
        x = torch.randn(2, 4, length, 6, dtype=torch.float64)
        _check_against(fused, [x], plain)
    assert_kernels_ran(fused, backward=True)


BAD = """network Bad {{
    input x: [4, 10]
    input s: [T, 3]
    ks = [1, 2]
    {line}
}}
"""


@pytest.mark.parametrize("line, code, col, width, message", [
    ("output y = x[4]", "bad-index", 18, 1, "index 4 is out of range for axis 0 of size 4"),
    ("output y = x[-5]", "bad-index", 18, 2, "index -5 is out of range for axis 0 of size 4"),
    ("output y = x[:, 10:]", "bad-index", 21, 3, "slice start 10 is out of range for an axis of size 10"),
    ("output y = x[:, :11]", "bad-index", 21, 3, "slice stop 11 is out of range for an axis of size 10"),
    ("output y = x[:, 8:-2]", "bad-index", 21, 4, "the slice 8:-2 of an axis of size 10 is empty"),
    ("output y = x[:, 0, 1]", "bad-index", 24, 1, "3 subscripts for a rank-2 tensor"),
    ("output y = x[..., 0, ...]", "bad-index", 26, 3, "a subscript may hold `...` only once"),
    ("output y = x[:, ::-1]", "bad-index", 23, 2, "a slice step must be positive, got -1"),
    ("output y = s[1:1]", "bad-index", 18, 3, "the slice 1:1 of an axis of size T is empty"),
    ("output y = s[-3:5]", "symbolic-dim", 18, 4,
     "the length of the slice -3:5 of an axis of size T depends on the symbolic size `T`"),
    ("output y = x[:, :U]", "unknown-name", 22, 1, "unknown name `U`"),
    ("output y = s[T]", "type-mismatch", 18, 1, "an index must be an integer, got the name `T`"),
    ("output y = x[0.5]", "type-mismatch", 18, 3, "an index must be an integer, got the number 0.5"),
    ("output y = x[ks[2]]", "bad-index", 21, 1, "index 2 is out of range for a list of 2 item(s)"),
    ("output y = x[ks]", "type-mismatch", 18, 2, "an index must be an integer, got a list"),
    ("output y = (x -> split([4, 6]))[2]", "bad-index", 37, 1, "index 2 is out of range for a tuple of 2 item(s)"),
    ("a, b = x -> split([4, 4])", "shape-mismatch", 23, 6,
     "`split`: the sizes [4, 4] add up to 8, but axis 1 has size 10"),
    ("a, b = s -> chunk(2, dim=0)", "symbolic-dim", 30, 1,
     "`chunk` needs the size of axis 0, but it is the symbolic dimension `T`"),
    ("output y = x -> transpose(0, 2)", "bad-argument", 34, 1,
     "`transpose`: axis 2 is out of range for a rank-2 tensor"),
    ("output y = x -> index", "missing-argument", 21, 5, "`index` needs the argument `entries`"),
])
def test_bad_subscripts_through_the_cli(tmp_path, capsys, line, code, col, width, message):
    path = tmp_path / "net.dln"
    path.write_text(BAD.format(line=line), encoding="utf-8")
    assert main(["compile", str(path), "-o", str(tmp_path / "out.py")]) == 1
    err = capsys.readouterr().err
    assert f"net.dln:5:{col}: error[{code}]: {message}" in err, err
    assert "Traceback" not in err
    lines = err.splitlines()
    source = next(i for i, ln in enumerate(lines) if ln.startswith(" 5 | "))
    caret = lines[source + 1]
    assert caret.index("^") - len("   | ") == col - 1 and caret.count("^") == width, err
    assert not (tmp_path / "out.py").exists()


def test_bad_syntax_in_a_subscript(tmp_path, capsys):
    path = tmp_path / "net.dln"
    path.write_text(BAD.format(line="output y = x[]"), encoding="utf-8")
    assert main(["compile", str(path)]) == 1
    err = capsys.readouterr().err
    assert "net.dln:5:18: error[syntax]: unexpected `]`" in err


def test_labelled_split_and_transpose_are_modules(tmp_path):
    compiled = _compile(tmp_path, """
network N {
    input x: [6, 4]
    a, b = x -> s: split([2, 4], dim=0)
    c, d = x -> k: chunk(2)
    output y = (a -> t: transpose(0, 1)) + c[2:] + d[:4]
}
""")
    source = compiled.source
    assert "self.s = Apply(torch.split, split_size_or_sections=(2, 4), dim=1)" in source
    assert "self.k = Apply(torch.chunk, chunks=2, dim=2)" in source
    assert "self.t = Apply(torch.transpose, dim0=1, dim1=2)" in source
    assert "a, b = self.s(x)" in source and "c, d = self.k(x)" in source
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    want = x[:, :2].transpose(1, 2) + x[:, 2:, :2] + x[:, :4, 2:]
    torch.testing.assert_close(compiled.instantiate()(x), want)


ONE_PIECE = """network One {
    input x: [16]
    shared = chunk(1)
    a = shared(x) + shared(x)                   # a shared module giving a tuple of one piece
    b = x -> chunk(1)                           # the function form
    c = x -> s: split(16)                       # a labelled module
    output y = a + b + c
}
"""


def test_a_split_or_chunk_into_one_piece_is_one_tensor(tmp_path):
    """torch.chunk / torch.split return a tuple even for one piece: the generated code unpacks it (found by the
    spec fuzzer, where `shared1(x) + shared1(x)` added two tuples)."""
    compiled = _compile(tmp_path, ONE_PIECE)
    assert "(a,) = self.shared(x)" in compiled.source and "(b,) = torch.chunk(x, 1, dim=1)" in compiled.source
    x = torch.randn(2, 16)
    y = dlc.load(tmp_path / "net.dln")(x)
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y, 4 * x)


def test_a_split_or_chunk_cannot_be_a_member_of_a_labelled_group(tmp_path, capsys):
    path = tmp_path / "net.dln"
    path.write_text("network Bad {\n    input x: [16]\n    output y = x -> g: (chunk(1) -> relu)\n}\n",
                    encoding="utf-8")
    assert main(["compile", str(path)]) == 1
    err = capsys.readouterr().err
    assert "net.dln:3:25: error[bad-group]: `chunk` gives a tuple of outputs" in err, err
