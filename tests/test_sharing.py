"""Class sharing between block instances (backends/torch/sharing.py): compared as structure, numbers abstracted.

Each test compiles a small spec, checks the classes and constructor calls written, and runs the module against
the same computation written with torch directly, so a shared class is known to reproduce every instance.
"""

from __future__ import annotations

import ast

import pytest
import torch
import torch.nn.functional as F

import dlc


def _spec(tmp_path, text: str) -> str:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _classes(source: str) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}


def _init_params(cls: ast.ClassDef) -> list[str]:
    init = next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    return [a.arg for a in init.args.args[1:]]


def test_instances_differing_in_a_number_share_a_class_whose_argument_is_named_after_its_hole(tmp_path):
    # `int(4 * f)` and `f * 3` are no parameter's value and no input size: each is named after the hole it fills
    # in its layer's constructor, positional (`nn.MaxPool2d(kernel_size)`) or not (`Scale(factor)`)
    spec = _spec(tmp_path, """
block Q(f: float) {
    input x
    return x -> pool: maxpool(int(4 * f)) -> sc: scale(f * 3)
}
network N {
    input x: [4, 16, 16]
    output y = x -> a: Q(0.5) -> b: Q(0.25)
}""")
    src = dlc.compile(spec).source
    assert [c for c in _classes(src) if c.startswith("Q")] == ["Q"]
    assert _init_params(_classes(src)["Q"]) == ["pool_kernel_size", "sc_factor"]
    assert "self.a = Q(pool_kernel_size=2, sc_factor=1.5)" in src
    assert "self.b = Q(pool_kernel_size=1, sc_factor=0.75)" in src
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(dlc.load(spec)(x), F.max_pool2d(F.max_pool2d(x, 2) * 1.5, 1) * 0.75)


def test_instances_differing_in_structure_do_not_share(tmp_path):
    # stride 1 is the default, left out of the constructor: `stride=2` is one more keyword, not another number
    spec = _spec(tmp_path, """
block C(s: int) {
    input x
    return x -> conv: conv2d(4, k=3, stride=s, pad=1)
}
network N {
    input x: [4, 8, 8]
    output y = x -> a: C(1) -> b: C(2) -> c: C(1)
}""")
    src = dlc.compile(spec).source
    classes = _classes(src)
    assert sorted(c for c in classes if c.startswith("C")) == ["C", "C_2"]
    assert _init_params(classes["C"]) == [] and _init_params(classes["C_2"]) == []
    assert "self.a = C()" in src and "self.b = C_2()" in src and "self.c = C()" in src
    m = dlc.load(spec)
    x = torch.randn(2, 4, 8, 8)
    want = m.c.conv(m.b.conv(m.a.conv(x)))
    assert m.b.conv.stride == (2, 2) and m.a.conv.stride == (1, 1)
    torch.testing.assert_close(m(x), want)


def test_a_number_in_forward_becomes_a_kept_attribute(tmp_path):
    # unlabelled `scale` and `reshape` are written in forward (`y * s`, `y.reshape(y.shape[0], c, 4)`): their
    # numbers are constructor arguments kept as attributes; `s * 2` and the reshape's resolved -1 are no
    # parameter's value and no input size, so they are `arg1` and `arg2`
    spec = _spec(tmp_path, """
block R(c: int, s: float) {
    input x
    return x -> scale(s) -> scale(s * 2) -> reshape([c, -1])
}
network N {
    input x: [8]
    output y = concat(x -> R(2, 0.5) -> flatten, x -> R(4, 1.5) -> flatten)
}""")
    src = dlc.compile(spec).source
    cls = _classes(src)
    assert [c for c in cls if c.startswith("R")] == ["R"]
    assert _init_params(cls["R"]) == ["c", "s", "arg1", "arg2"]
    body = ast.get_source_segment(src, cls["R"])
    for arg in ("c", "s", "arg1", "arg2"):
        assert f"self.{arg} = {arg}" in body
    assert "* self.s" in body and "* self.arg1" in body and ".reshape(y.shape[0], self.c, self.arg2)" in body
    assert "R(c=2, s=0.5, arg1=1.0, arg2=4)" in src and "R(c=4, s=1.5, arg1=3.0, arg2=2)" in src
    x = torch.randn(3, 8)
    torch.testing.assert_close(dlc.load(spec)(x), torch.cat([x * 0.5 * 1.0, x * 1.5 * 3.0], dim=1))


def test_two_numbers_share_an_argument_only_when_written_the_same_in_every_instance(tmp_path):
    spec = _spec(tmp_path, """
block P(k: int, f: float) {
    input x
    return x -> pool: maxpool(k) -> sc: scale(f)
}
network N {
    input x: [4, 12, 12]
    output y = x -> a: P(2, 2.0) -> b: P(3, 3.0)
}""")
    src = dlc.compile(spec).source
    assert _init_params(_classes(src)["P"]) == ["k", "f"]
    assert "P(k=2, f=2.0)" in src and "P(k=3, f=3.0)" in src
    x = torch.randn(2, 4, 12, 12)
    torch.testing.assert_close(dlc.load(spec)(x), F.max_pool2d(F.max_pool2d(x, 2) * 2.0, 3) * 3.0)


def test_a_negative_number_is_a_number(tmp_path):
    # softmax over axis 0 and -1 (PyTorch dims 1 and -1): one class, the argument holding the signed value
    spec = _spec(tmp_path, """
block S(d: int) {
    input x
    return x -> sm: softmax(dim=d)
}
network N {
    input x: [4, 6]
    output y = x -> a: S(0) -> b: S(-1)
}""")
    src = dlc.compile(spec).source
    assert [c for c in _classes(src) if c.startswith("S")] == ["S"]
    assert "self.a = S(sm_dim=1)" in src and "self.b = S(sm_dim=-1)" in src
    x = torch.randn(2, 4, 6)
    torch.testing.assert_close(dlc.load(spec)(x), torch.softmax(torch.softmax(x, dim=1), dim=-1))


def test_block_instance_calls_inside_a_class_are_structure(tmp_path):
    # Out(4) and Out(8) hold In calls differing only in numbers (inside an nn.Sequential too): one Out class,
    # whose own arguments flow into its children's calls
    spec = _spec(tmp_path, """
block In(c: int) {
    input x
    return x -> conv: conv2d(c, k=1)
}
block Out(c: int) {
    input x
    return x -> g: (In(c) -> In(c * 2)) -> last: In(c)
}
network N {
    input x: [3, 4, 4]
    output y = x -> a: Out(4) -> b: Out(8)
}""")
    src = dlc.compile(spec).source
    classes = _classes(src)
    assert sorted(c for c in classes if c[0] in "IO") == ["In", "Out"]
    out = ast.get_source_segment(src, classes["Out"])
    assert "nn.Sequential(In(c=c, x_channels=x_channels), In(c=arg1, x_channels=c))" in out
    assert "self.last = In(c=c, x_channels=arg1)" in out
    assert "self.a = Out(c=4, x_channels=3, arg1=8)" in src and "self.b = Out(c=8, x_channels=4, arg1=16)" in src
    shapes = {k: tuple(v.shape) for k, v in dlc.load(spec).state_dict().items()}
    assert shapes["a.g.1.conv.weight"] == (8, 4, 1, 1) and shapes["b.last.conv.weight"] == (8, 16, 1, 1)


def test_a_recursive_block_may_use_another_block(tmp_path):
    spec = _spec(tmp_path, """
block Leaf(u: int) {
    input x
    return x -> linear(u) -> relu
}
block Stack(n: int, u: int) {
    input x
    return if n == 0 then x else x -> Leaf(u) -> Stack(n - 1, u)
}
network N {
    input x: [4]
    output y = x -> Stack(2, 5) -> Leaf(3)
}""")
    m = dlc.load(spec)
    x = torch.randn(2, 4)
    inner = m.stack_0.leaf_0.linear_0, m.stack_0.stack_0.leaf_0.linear_0, m.leaf_0.linear_0
    want = torch.relu(inner[2](torch.relu(inner[1](torch.relu(inner[0](x))))))
    torch.testing.assert_close(m(x), want)


@pytest.mark.parametrize(("layer", "written"), [
    ("bidirectional(lstm(4), merge=sum)", 'y = merge_directions(seq, "sum")'),
    ("bidirectional(gru(4, return_sequences=false))", 'y = merge_directions(seq, "concat", return_sequences=False)'),
])
def test_a_bidirectional_merge_calls_the_one_merge_function(tmp_path, layer, written):
    spec = _spec(tmp_path, f"""
network N {{
    input x: [T, 3]
    output y = x -> {layer}
}}""")
    src = dlc.compile(spec).source
    assert written in src
    assert src.count("def merge_directions(") == 1
    m = dlc.load(spec)
    x = torch.randn(2, 5, 3)
    seq, _ = m.bidirectional_0(x)
    fwd, bwd = seq[..., :4], seq[..., 4:]
    want = fwd + bwd if "sum" in layer else torch.cat([fwd[:, -1], bwd[:, 0]], dim=-1)
    torch.testing.assert_close(m(x), want)


def test_concatenated_sequences_are_the_module_output_as_it_is(tmp_path):
    spec = _spec(tmp_path, """
network N {
    input x: [T, 3]
    output y = x -> bidirectional(lstm(4))
}""")
    src = dlc.compile(spec).source
    assert "y, _ = self.bidirectional_0(x)" in src and "merge_directions" not in src
