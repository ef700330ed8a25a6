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
    # `bias=False` is written in some instances and left out (at its default) in others: a boolean is no number,
    # so the code differs in more than numbers
    spec = _spec(tmp_path, """
block C(b: bool) {
    input x
    return x -> conv: conv2d(4, k=3, pad=1, bias=b)
}
network N {
    input x: [4, 8, 8]
    output y = x -> a: C(true) -> b: C(false) -> c: C(true)
}""")
    src = dlc.compile(spec).source
    classes = _classes(src)
    assert sorted(c for c in classes if c.startswith("C")) == ["C", "C_2"]
    assert _init_params(classes["C"]) == [] and _init_params(classes["C_2"]) == []
    assert "self.a = C()" in src and "self.b = C_2()" in src and "self.c = C()" in src
    m = dlc.load(spec)
    assert m.a.conv.bias is not None and m.b.conv.bias is None
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(m(x), m.c.conv(m.b.conv(m.a.conv(x))))


def _defaults(cls: ast.ClassDef) -> dict[str, object]:
    init = next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    params = [a.arg for a in init.args.args[1:]]
    return {p: ast.literal_eval(d) for p, d in zip(params[len(params) - len(init.args.defaults):], init.args.defaults)}


def test_instances_differing_in_a_keyword_left_out_at_its_default_share_a_class(tmp_path):
    # stride 1 is nn.Conv2d's default, left out of the constructor; stride 2 is written: one class whose
    # `stride=stride` is written, with the default 1 as the argument's (a call leaves it out where it has it)
    spec = _spec(tmp_path, """
block C(c: int, s: int = 1) {
    input x
    return x -> conv: conv2d(c, k=3, stride=s, pad=1)
}
network N {
    input x: [4, 8, 8]
    output y = x -> a: C(4) -> b: C(6, s=2) -> c: C(6)
}""")
    src = dlc.compile(spec).source
    classes = _classes(src)
    assert [c for c in classes if c.startswith("C")] == ["C"]
    assert _init_params(classes["C"]) == ["c", "x_channels", "s"] and _defaults(classes["C"]) == {"s": 1}
    assert "nn.Conv2d(x_channels, c, kernel_size=3, stride=s, padding=1)" in src
    assert "self.a = C(c=4, x_channels=4)" in src
    assert "self.b = C(c=6, x_channels=4, s=2)" in src and "self.c = C(c=6, x_channels=6)" in src
    m = dlc.load(spec)
    assert m.b.conv.stride == (2, 2) and m.c.conv.stride == (1, 1)
    x = torch.randn(2, 4, 8, 8)
    want = x
    for conv, stride in ((m.a.conv, 1), (m.b.conv, 2), (m.c.conv, 1)):
        want = F.conv2d(want, conv.weight, conv.bias, stride=stride, padding=1)
    torch.testing.assert_close(m(x), want)


def test_a_keyword_every_instance_leaves_out_stays_out(tmp_path):
    # every instance has stride 1: nothing to share, the keyword is not written (simple networks stay simple)
    spec = _spec(tmp_path, """
block C(c: int, s: int = 1) {
    input x
    return x -> conv: conv2d(c, k=3, stride=s, pad=1)
}
network N {
    input x: [4, 8, 8]
    output y = x -> a: C(4) -> b: C(6)
}""")
    src = dlc.compile(spec).source
    assert "stride" not in src
    assert _init_params(_classes(src)["C"]) == ["c"]
    assert "nn.Conv2d(4, c, kernel_size=3, padding=1)" in src


def test_a_keyword_left_out_is_a_number_in_the_only_argument(tmp_path):
    # the first argument has no default: a call names at least one argument
    spec = _spec(tmp_path, """
block D(d: int) {
    input x
    return x -> pad([d, 0]) -> conv: conv1d(4, k=2, dilation=d)
}
network N {
    input x: [4, T]
    output y = x -> a: D(1) -> b: D(2) -> c: D(4)
}""")
    src = dlc.compile(spec).source
    classes = _classes(src)
    assert [c for c in classes if c.startswith("D")] == ["D"] and _defaults(classes["D"]) == {}
    # the padding list is no parameter's value: its varying item is the argument
    assert "F.pad(x, (self.d, 0))" in src and "dilation=d)" in src
    assert "self.a = D(d=1)" in src and "self.b = D(d=2)" in src and "self.c = D(d=4)" in src
    m = dlc.load(spec)
    x = torch.randn(2, 4, 20)
    want = x
    for conv, d in ((m.a.conv, 1), (m.b.conv, 2), (m.c.conv, 4)):
        want = F.conv1d(F.pad(want, (d, 0)), conv.weight, conv.bias, dilation=d)
    torch.testing.assert_close(m(x), want)


def test_a_list_parameter_is_passed_whole(tmp_path):
    # k and pad are `int2`: an int in some instances, a pair in others; the class takes them as they are
    spec = _spec(tmp_path, """
block B(c: int, k: int2, pad: int2 = 0) {
    input x
    return x -> conv: conv2d(c, k=k, pad=pad, bias=false) -> relu
}
network N {
    input x: [3, 9, 9]
    output y = x -> a: B(4, k=1) -> b: B(6, k=[1, 3], pad=[0, 1]) -> c: B(8, k=[3, 1], pad=[1, 0])
}""")
    src = dlc.compile(spec).source
    classes = _classes(src)
    assert [c for c in classes if c.startswith("B")] == ["B"]
    assert _init_params(classes["B"]) == ["c", "k", "x_channels", "pad"] and _defaults(classes["B"]) == {"pad": 0}
    assert "nn.Conv2d(x_channels, c, kernel_size=k, padding=pad, bias=False)" in src
    assert "self.a = B(c=4, k=1, x_channels=3)" in src
    assert "self.b = B(c=6, k=(1, 3), x_channels=4, pad=(0, 1))" in src
    assert "self.c = B(c=8, k=(3, 1), x_channels=6, pad=(1, 0))" in src
    m = dlc.load(spec)
    assert m.b.conv.kernel_size == (1, 3) and m.c.conv.padding == (1, 0)
    x = torch.randn(2, 3, 9, 9)
    want = x
    for conv, pad in ((m.a.conv, 0), (m.b.conv, (0, 1)), (m.c.conv, (1, 0))):
        want = torch.relu(F.conv2d(want, conv.weight, padding=pad))
    torch.testing.assert_close(m(x), want)


def test_a_number_bound_in_the_block_is_named_after_its_binding(tmp_path):
    # `hidden` is computed from the input and a parameter: no parameter holds it, its binding names it
    spec = _spec(tmp_path, """
block E(c: int, t: int) {
    input x
    hidden = channels(x) * t
    return x -> up: conv2d(hidden, k=1) -> relu -> down: conv2d(c, k=1)
}
network N {
    input x: [4, 5, 5]
    output y = x -> a: E(4, 2) -> b: E(8, 3)
}""")
    src = dlc.compile(spec).source
    classes = _classes(src)
    assert [c for c in classes if c.startswith("E")] == ["E"]
    assert _init_params(classes["E"]) == ["c", "hidden"]
    assert "nn.Conv2d(4, hidden, kernel_size=1)" in src and "nn.Conv2d(hidden, c, kernel_size=1)" in src
    assert "self.a = E(c=4, hidden=8)" in src and "self.b = E(c=8, hidden=12)" in src
    m = dlc.load(spec)
    assert m.b.up.out_channels == 12
    x = torch.randn(2, 4, 5, 5)
    want = x
    for e in (m.a, m.b):
        want = e.down(torch.relu(e.up(want)))
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
    assert "* self.s" in body and "* self.arg1" in body and ".reshape(x.shape[0], self.c, self.arg2)" in body
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
