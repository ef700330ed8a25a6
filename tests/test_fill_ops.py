"""zeros_like, ones_like and full_like (compiler/ops/fill.py): against torch's own functions in every dtype they
take, with symbolic sizes, with no gradient flowing back through them, as module forms in a labelled group, fused
next to kernels, and their diagnostics through the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import assert_kernels_ran

import dlc
from dlc.diagnostics import DlcError

LIKE = """
network Like {
    input x: [4, T]
    input ids: [T] int64
    input m: [T] bool
    output z = zeros_like(x)
    output o = x -> ones_like
    output f = full_like(x, -1.5)
    output i = full_like(ids, 3)
    output b = m -> full_like(1)
    output zi = zeros_like(ids)
}
"""


def _compile(tmp_path, text: str, **options) -> dlc.Compiled:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return dlc.compile(path, **options)


@pytest.mark.parametrize("length", [3, 7])
def test_constants_match_torch_in_shape_and_dtype(tmp_path, length):
    compiled = _compile(tmp_path, LIKE)
    assert "torch.full_like(ids, 3)" in compiled.source  # an integer tensor is filled with an integer
    assert "torch.full_like(x, -1.5)" in compiled.source
    x, ids = torch.randn(2, 4, length), torch.randint(0, 9, (2, length))
    m = ids > 4
    got = compiled.instantiate()(x, ids, m)
    want = (torch.zeros_like(x), torch.ones_like(x), torch.full_like(x, -1.5), torch.full_like(ids, 3),
            torch.full_like(m, True), torch.zeros_like(ids))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    types = [compiled.graph.types[v] for _, v in compiled.graph.outputs]
    assert [(t.shape, t.dtype) for t in types] == [
        ((4, "T"), "float32"), ((4, "T"), "float32"), ((4, "T"), "float32"), (("T",), "int64"), (("T",), "bool"),
        (("T",), "int64")]


@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
def test_a_skip_sum_starting_at_zero_matches_torch(tmp_path, fuse):
    """A carried (residual, skip) repeat started with zeros_like, against the same stack written with torch.nn:
    outputs and gradients; the constant takes no gradient."""
    spec = """
block Layer(c: int) {
    input x
    input skip
    h = x -> conv: conv1d(c, k=3, pad=1) -> tanh
    return x + h, skip + h * 0.5
}
network Stack {
    input x: [4, T]
    res, skip = (x, zeros_like(x)) -> Layer(4) * 2
    output y = skip + ones_like(skip)
}
"""
    model = _compile(tmp_path, spec, fuse=fuse).instantiate().double()
    convs = [model.get_submodule(f"layer_{i}.conv") for i in range(2)]
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    got = model(x)
    res, skip = xr, torch.zeros_like(xr)
    for conv in convs:
        h = torch.tanh(torch.nn.functional.conv1d(res, conv.weight, conv.bias, padding=1))
        res, skip = res + h, skip + h * 0.5
    want = skip + 1
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    (got * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    if fuse:
        assert_kernels_ran(model)


def test_constants_take_no_gradient(tmp_path):
    model = _compile(tmp_path, "network N {\n    input x: [5]\n    output y = full_like(x, 2) + zeros_like(x)\n}\n"
                     ).instantiate()
    y = model(torch.randn(2, 5, requires_grad=True))
    assert not y.requires_grad
    torch.testing.assert_close(y, torch.full((2, 5), 2.0))


def test_module_forms_in_a_labelled_group(tmp_path):
    spec = "network N {\n    input x: [5]\n    output y = x -> g: (linear(5) -> full_like(0.25) -> ones_like)\n}\n"
    compiled = _compile(tmp_path, spec)
    assert "Apply(torch.full_like, fill_value=0.25)" in compiled.source
    assert "Apply(torch.ones_like)" in compiled.source
    torch.testing.assert_close(compiled.instantiate()(torch.randn(3, 5)), torch.ones(3, 5))


@pytest.mark.parametrize("body, message, col", [
    ("input t: [4] int64\n    output y = full_like(t, 0.5)",
     "`full_like` fills an int64 tensor, which cannot hold 0.5", 29),
    ("input m: [4] bool\n    output y = m -> full_like(2)",
     "`full_like` fills a bool tensor with 0 or 1, got 2", 31),
])
def test_a_value_the_dtype_cannot_hold_is_refused(tmp_path, body, message, col):
    text = "network N {\n    " + body + "\n}\n"
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, text)
    err = info.value
    assert (err.code, err.message, err.span.line, err.span.col) == ("type-mismatch", message, 3, col)
    path = tmp_path / "net.dln"
    run = subprocess.run([sys.executable, "-m", "dlc", "compile", str(path), "-o", str(tmp_path / "out.py")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"net.dln:3:{col}: error[type-mismatch]: {message}" in run.stderr


def test_full_like_needs_its_value(tmp_path):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, "network N {\n    input x: [4]\n    output y = full_like(x)\n}\n")
    assert (info.value.code, info.value.span.line) == ("missing-argument", 3)


def test_full_like_keeps_a_large_integer_exact(tmp_path):
    """An integer value stays an integer (a float of 2**63 - 1 would round up and overflow int64); int32 tensors
    refuse what they cannot hold (found by the spec fuzzer)."""
    path = tmp_path / "net.dln"
    path.write_text("network Ids {\n    input tokens: [T] int64\n"
                    "    output ids = full_like(tokens, 9223372036854775807)\n}\n", encoding="utf-8")
    assert "torch.full_like(tokens, 9223372036854775807)" in dlc.compile(path).source
    y = dlc.load(path)(torch.zeros(2, 3, dtype=torch.int64))
    assert y.dtype == torch.int64 and (y == 2**63 - 1).all()
    path.write_text("network Ids {\n    input tokens: [T] int32\n    output ids = full_like(tokens, 2147483648)\n}\n",
                    encoding="utf-8")
    with pytest.raises(DlcError, match="cannot hold 2147483648"):
        dlc.compile(path)
