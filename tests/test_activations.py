"""The activations added after relu6 (hardtanh, hardswish, hardsigmoid, softplus, softsign; one definition each in
compiler/ops/activation.py) and the elementwise math functions (exp, log, sqrt, rsqrt, clamp; compiler/ops/arith.py):
the plain module and the fused Triton kernel (run under the interpreter, see conftest.py) against torch.nn's module
or torch's function, forward and backward in float64, on values that include each corner."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_kernels_ran, assert_no_kernels

import dlc
from dlc.diagnostics import DlcError

# op as the spec writes it, the torch.nn module it must equal, its module form when labelled
CASES = [
    ("hardtanh", torch.nn.Hardtanh(), "nn.Hardtanh()"),
    ("hardtanh(min=-2, max=0.5)", torch.nn.Hardtanh(-2.0, 0.5), "nn.Hardtanh(-2.0, 0.5)"),
    ("hardswish", torch.nn.Hardswish(), "nn.Hardswish()"),
    ("hardsigmoid", torch.nn.Hardsigmoid(), "nn.Hardsigmoid()"),
    ("softplus", torch.nn.Softplus(), "nn.Softplus()"),
    ("softplus(beta=2, threshold=5)", torch.nn.Softplus(2.0, 5.0), "nn.Softplus(beta=2.0, threshold=5.0)"),
    ("softsign", torch.nn.Softsign(), "nn.Softsign()"),
]
# every corner of the functions above (-3, 3, -2, -1, 0, 0.5, 1, the softplus thresholds), values on both sides
POINTS = [-30.0, -4.0, -3.0, -2.999, -2.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 2.5, 2.999, 3.0, 3.001, 4.0,
          9.9, 10.0, 19.9, 21.0, 30.0]


def _compile(tmp_path, text: str, **options) -> dlc.Compiled:
    path = tmp_path / "act.dln"
    path.write_text(text, encoding="utf-8")
    return dlc.compile(path, **options)


def _check_elementwise(tmp_path, call: str, reference, points: list[float], fuse: bool, rtol: float) -> None:
    """``(x + r) -> call -> scale(0.5)`` equals ``reference`` on ``points`` in float64, forward and backward; fused,
    its one kernel (add, the op and scale) ran both ways, and plain, no kernel did."""
    n = len(points)
    compiled = _compile(tmp_path, f"network T {{\n    input x: [{n}]\n    input r: [{n}]\n"
                                  f"    output y = (x + r) -> {call} -> scale(0.5)\n}}\n", fuse=fuse)
    model = compiled.instantiate().double()
    x = torch.tensor(points, dtype=torch.float64).repeat(3, 1).requires_grad_()
    r = torch.zeros_like(x).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    want = reference(xr) * 0.5
    got = model(x, r)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=rtol)
    w = torch.randn_like(want)
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-12, rtol=rtol)
    torch.testing.assert_close(r.grad, xr.grad, atol=1e-12, rtol=rtol)
    if fuse:
        assert_kernels_ran(model, backward=True)
    else:
        assert_no_kernels(model)


@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("call, reference, module", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_forward_and_backward(tmp_path, call, reference, module, fuse):
    # rtol 1e-7, not less: PyTorch's hardsigmoid backward multiplies by 1/6 rounded to float32 (3e-8 relative)
    _check_elementwise(tmp_path, call, reference, POINTS, fuse, rtol=1e-7)


@pytest.mark.parametrize("call, reference, module", CASES, ids=[c[0] for c in CASES])
def test_labelled_is_the_torch_module(tmp_path, call, reference, module):
    compiled = _compile(tmp_path, f"network T {{\n    input x: [5]\n    output y = x -> act: {call}\n}}\n")
    assert f"self.act = {module}" in compiled.source
    x = torch.linspace(-5, 25, 10).reshape(2, 5)
    torch.testing.assert_close(compiled.instantiate()(x), reference(x))


@pytest.mark.parametrize("call, col, message", [
    ("hardtanh(min=1, max=1)", 41, "`hardtanh`: min (1.0) must be below max (1.0)"),
    ("softplus(beta=0)", 35, "`softplus`: beta must be positive, got 0.0"),
])
def test_bad_arguments(tmp_path, call, col, message):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, f"network T {{\n    input x: [5]\n    output y = x -> {call}\n}}\n")
    err = info.value
    assert err.code == "bad-argument" and err.message == message
    assert (err.span.line, err.span.col) == (3, col)


# op as the spec writes it, torch's function it must equal, its module form when labelled (positive inputs)
MATH = [
    ("exp", torch.exp, "Apply(torch.exp)"),
    ("log", torch.log, "Apply(torch.log)"),
    ("sqrt", torch.sqrt, "Apply(torch.sqrt)"),
    ("rsqrt", torch.rsqrt, "Apply(torch.rsqrt)"),
    ("clamp(min=0.5, max=2)", lambda x: torch.clamp(x, 0.5, 2.0), "Apply(torch.clamp, min=0.5, max=2.0)"),
    ("clamp(min=1)", lambda x: torch.clamp(x, min=1.0), "Apply(torch.clamp, min=1.0)"),
    ("clamp(max=1)", lambda x: torch.clamp(x, max=1.0), "Apply(torch.clamp, max=1.0)"),
]
POSITIVE = [1e-3, 0.1, 0.4999, 0.5, 0.5001, 0.9, 1.0, 1.1, 1.9999, 2.0, 2.0001, 3.0, 7.5]


# the interpreter evaluates the kernel on the block's padding lanes too (0, where rsqrt divides by zero); those
# lanes are masked out of every load and store, so numpy's warnings about them say nothing about the result
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("call, reference, module", MATH, ids=[c[0] for c in MATH])
def test_math_matches_torch_forward_and_backward(tmp_path, call, reference, module, fuse):
    _check_elementwise(tmp_path, call, reference, POSITIVE, fuse, rtol=1e-12)  # clamp: 0 at its bounds, as torch's


@pytest.mark.parametrize("call, reference, module", MATH, ids=[c[0] for c in MATH])
def test_math_labelled_is_a_module(tmp_path, call, reference, module):
    compiled = _compile(tmp_path, f"network T {{\n    input x: [5]\n    output y = x -> f: {call}\n}}\n")
    assert f"self.f = {module}" in compiled.source
    x = torch.linspace(0.1, 3, 10).reshape(2, 5)
    torch.testing.assert_close(compiled.instantiate()(x), reference(x))


@pytest.mark.parametrize("call, code, col, message", [
    ("clamp", "missing-argument", 21, "`clamp` needs `min`, `max` or both"),
    ("clamp(min=2, max=1)", "bad-argument", 38, "`clamp`: min (2.0) must not be above max (1.0)"),
])
def test_clamp_needs_a_bound_below_the_other(tmp_path, call, code, col, message):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, f"network T {{\n    input x: [5]\n    output y = x -> {call}\n}}\n")
    err = info.value
    assert (err.code, err.message) == (code, message)
    assert (err.span.line, err.span.col) == (3, col)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # 0 / 0 on padding lanes (see above)
@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
def test_tensor_division_matches_torch(tmp_path, fuse):
    """`a / b` between tensors divides elementwise (with broadcasting over size-1 axes), forward and backward."""
    compiled = _compile(tmp_path, "network T {\n    input a: [3, 4]\n    input b: [1, 4]\n"
                                  "    output y = (a / b) -> relu\n}\n", fuse=fuse)
    assert ("fused_div_relu = ElementwiseKernel(" in compiled.source) == fuse
    # the plain module divides in PyTorch; the fused one in its kernel, and in PyTorch only where no kernel can run
    assert "a / b" in compiled.source
    assert ("y = fused_div_relu(a, b)" in compiled.source) == fuse
    model = compiled.instantiate().double()
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64).requires_grad_()
    b = (torch.rand(2, 1, 4, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    ar, br = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    want = torch.relu(ar / br)
    got = model(a, b)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    w = torch.randn_like(want)
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(a.grad, ar.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(b.grad, br.grad, atol=1e-12, rtol=1e-12)
    if fuse:
        assert_kernels_ran(model, backward=True)


def test_integer_tensors_do_not_divide(tmp_path):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, "network T {\n    input a: [4] int64\n    input b: [4] int64\n    output y = a / b\n}\n")
    assert info.value.code == "type-mismatch" and "div" in info.value.message
    assert (info.value.span.line, info.value.span.col) == (4, 16)


@pytest.mark.parametrize("call, dim, shape", [("glu", -1, [6, 8]), ("glu(dim=0)", 0, [4, 5]), ("g: glu(1)", 1, [3, 6])])
def test_glu_matches_torch(tmp_path, call, dim, shape):
    compiled = _compile(tmp_path, f"network T {{\n    input x: {shape}\n    output y = x -> {call}\n}}\n")
    out_shape = list(shape)
    out_shape[dim] //= 2
    assert compiled.graph.types[compiled.graph.outputs[0][1]].shape == tuple(out_shape)
    model = compiled.instantiate().double()
    x = torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    want = torch.nn.functional.glu(xr, dim=dim + 1 if dim >= 0 else dim)
    got = model(x)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, atol=0, rtol=0)


@pytest.mark.parametrize("shape, call, col, message", [
    ("[6, 7]", "glu", 21, "`glu` halves axis -1, but its size 7 is odd"),
    ("[T, 4]", "glu(dim=0)", 29, "`glu` halves axis 0, whose size `T` is not known"),
    ("[6, 8]", "glu(dim=2)", 29, "`glu`: axis 2 is out of range for a rank-2 tensor"),
])
def test_glu_needs_an_even_known_axis(tmp_path, shape, call, col, message):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, f"network T {{\n    input x: {shape}\n    output y = x -> {call}\n}}\n")
    assert info.value.message == message
    assert (info.value.span.line, info.value.span.col) == (3, col)
