"""Kernel tier: every generated Triton kernel against its PyTorch reference, under the interpreter.

Each test compiles a small spec with ``fuse=True`` and compares the fused module (its kernels run on
CPU tensors because conftest.py sets ``TRITON_INTERPRET=1``) with the unfused module, which is plain
torch.nn: outputs and the gradients of every input and parameter. Sizes are ragged (not multiples of
the block sizes, which the tests make small) so that masks and broadcast strides are exercised.
Tolerances by dtype are ``KERNEL_ATOL`` in conftest.py. Every run also checks, with the launch counts of the
module's runtime (``LAUNCHES``), that each generated kernel ran: a fused module falls back to PyTorch ops
wherever the kernels cannot run, and that fallback would compare equal too.
"""

from __future__ import annotations

import pytest
import torch

import dlc
from dlc.compiler.fusion import group_fusions

from conftest import KERNEL_ATOL, assert_kernels_ran, assert_no_kernels, generated_module

ACTIVATIONS = ["relu", "relu6", "leaky_relu(0.2)", "elu(0.7)", "selu", "gelu", "gelu(approximate=tanh)", "silu", "mish",
               "tanh", "sigmoid", "abs"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def compile_pair(tmp_path, text: str):
    """The unfused and the fused module of a spec, with the same parameters, and the fused module's namespace."""
    path = tmp_path / "k.dln"
    path.write_text(text, encoding="utf-8")
    plain = dlc.compile(path).instantiate()
    fused_c = dlc.compile(path, fuse=True)
    ns = fused_c.module()
    fused = getattr(ns, fused_c.graph.name)()
    fused.load_state_dict(plain.state_dict())
    # small blocks: several programs per tensor and partial last blocks
    ns.ELEMENTWISE_BLOCK = 64
    ns.LINEAR_TILES = (16, 16, 16)
    return plain, fused, ns, fused_c.graph


def check(plain, fused, inputs, dtype, train=False, kernels=True):
    """Outputs and the gradients of every input and parameter agree; every generated kernel of ``fused`` ran
    forward and backward (none ran, with ``kernels=False``)."""
    generated_module(fused).LAUNCHES.clear()
    plain.to(dtype)
    fused.to(dtype)
    plain.train(train)
    fused.train(train)
    a = [t.to(dtype).requires_grad_() if t.is_floating_point() else t for t in inputs]
    b = [t.detach().clone().requires_grad_() if t.is_floating_point() else t for t in a]
    ya, yb = plain(*a), fused(*b)
    atol = KERNEL_ATOL[str(dtype).removeprefix("torch.")]
    assert ya.dtype == yb.dtype
    assert (ya - yb).abs().max().item() <= atol * max(1.0, ya.abs().max().item())
    w = torch.randn_like(ya.float()).to(dtype)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    for ta, tb in zip(a, b, strict=True):
        if ta.is_floating_point():
            assert (ta.grad - tb.grad).abs().max().item() <= atol * max(1.0, ta.grad.abs().max().item())
    pb = dict(fused.named_parameters())
    for name, p in plain.named_parameters():
        assert (p.grad - pb[name].grad).abs().max().item() <= atol * max(1.0, p.grad.abs().max().item()), name
    if kernels:
        assert_kernels_ran(fused, backward=True)
    else:
        assert_no_kernels(fused)
    return ya, yb


def test_interpreter_is_on():
    import dlc.backends.triton.runtime.common as common

    assert common.TRITON_INTERPRET and common.triton is not None


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_elementwise_chain(tmp_path, act, dtype):
    spec = f"""
network T {{
    input x: [6, 7, 5]
    input r: [6, 7, 5]
    input c: [6, 1, 1]
    output y = (x * c + r) -> {act} -> scale(0.5) -> shift(-0.25)
}}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    plan = group_fusions(g)
    assert [grp.kind for grp in plan.groups] == ["elementwise"]
    assert len(plan.groups[0].nodes) == 5  # mul, add, activation, scale, shift: one kernel
    x = torch.randn(3, 6, 7, 5) * 3
    check(plain, fused, [x, torch.randn(3, 6, 7, 5), torch.randn(3, 6, 1, 1)], dtype)


def test_merge_ops_and_mean(tmp_path):
    spec = """
network T {
    input a: [13, 9]
    input b: [13, 9]
    input c: [1, 9]
    output y = mean(b, a - b, c * a) -> relu
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    assert len(group_fusions(g).groups) == 1
    check(plain, fused, [torch.randn(2, 13, 9), torch.randn(2, 13, 9), torch.randn(2, 1, 9)], torch.float64)


def test_bfloat16_chain(tmp_path):
    spec = """
network T {
    input x: [6, 7, 5]
    input r: [6, 7, 5]
    output y = (x + r) -> gelu -> scale(2.0)
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    check(plain, fused, [torch.randn(2, 6, 7, 5), torch.randn(2, 6, 7, 5)], torch.bfloat16)


@pytest.mark.parametrize("train", [False, True])
def test_conv_epilogue_with_bias_and_residual(tmp_path, train):
    spec = """
network T {
    input x: [3, 9, 11]
    input r: [5, 9, 11]
    a = x -> conv: conv2d(5, k=3, pad=1) -> silu
    output y = relu(a + r)
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    assert [grp.kind for grp in group_fusions(g).groups] == ["anchor"]
    assert "conv_without_bias(self.conv" in dlc.compile(tmp_path / "k.dln", fuse=True).source
    check(plain, fused, [torch.randn(2, 3, 9, 11), torch.randn(2, 5, 9, 11)], torch.float64, train=train)


@pytest.mark.parametrize("train", [False, True])
def test_conv_batchnorm_epilogue(tmp_path, train):
    spec = """
network T {
    input x: [3, 9, 11]
    output y = x -> conv: conv2d(5, k=3, stride=2) -> bn: batchnorm -> leaky_relu(0.1)
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    fused.load_state_dict(plain.state_dict())
    check(plain, fused, [torch.randn(3, 3, 9, 11)], torch.float64, train=train)
    bn_a, bn_b = plain.bn, fused.bn
    # training updates the running statistics exactly as nn.BatchNorm2d does
    assert torch.allclose(bn_a.running_mean, bn_b.running_mean) and torch.allclose(bn_a.running_var, bn_b.running_var)
    assert int(bn_a.num_batches_tracked) == int(bn_b.num_batches_tracked)


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_matmul_epilogue(tmp_path, act, dtype):
    spec = f"""
network T {{
    input x: [5, 37]
    input r: [5, 19]
    a = x -> fc: linear(19) -> {act}
    output y = a + r
}}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    assert [grp.kind for grp in group_fusions(g).groups] == ["anchor"]
    assert "LinearKernel(" in dlc.compile(tmp_path / "k.dln", fuse=True).source
    check(plain, fused, [torch.randn(2, 5, 37), torch.randn(2, 5, 19)], dtype)


def test_linear_without_bias(tmp_path):
    spec = """
network T {
    input x: [21]
    output y = x -> fc: linear(33, bias=false) -> sigmoid
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    check(plain, fused, [torch.randn(7, 21)], torch.float64)


@pytest.mark.parametrize("row", ["softmax", "log_softmax", "layernorm", "layernorm(affine=false)"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_row_kernels_with_residual_and_epilogue(tmp_path, row, dtype):
    layer = f"ln: {row}" if row.startswith("layernorm") else row  # layernorm has parameters: a module name
    spec = f"""
network T {{
    input x: [4, 37]
    input r: [4, 37]
    output y = (x + r) -> {layer} -> scale(3.0)
}}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    if row == "layernorm":  # non-trivial affine parameters
        plain.ln.weight.data.uniform_(0.5, 1.5)
        plain.ln.bias.data.uniform_(-1, 1)
        fused.load_state_dict(plain.state_dict())
    assert [grp.kind for grp in group_fusions(g).groups] == ["row"]
    check(plain, fused, [torch.randn(3, 4, 37) * 2, torch.randn(3, 4, 37)], dtype)


def test_layernorm_over_two_axes(tmp_path):
    spec = """
network T {
    input x: [3, 5, 6]
    output y = x -> ln: layernorm(dims=2)
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    plain.ln.weight.data.uniform_(0.5, 1.5)
    fused.load_state_dict(plain.state_dict())
    check(plain, fused, [torch.randn(2, 3, 5, 6)], torch.float64)


def test_dropout_mask_forward_and_backward_agree(tmp_path):
    spec = """
network T {
    input x: [300]
    output y = x -> fc: linear(257) -> dropout(0.3)
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    fused.train()
    x = torch.randn(4, 300, requires_grad=True)
    y = fused(x)
    z = torch.nn.functional.linear(x, fused.fc.weight, fused.fc.bias)
    kept = y != 0
    # kept elements are scaled by 1/(1-p); about p of them are dropped
    assert torch.allclose(y[kept], z[kept] / 0.7, atol=1e-5)
    assert 0.25 < 1 - kept.float().mean().item() < 0.35
    y.sum().backward()
    assert_kernels_ran(fused, backward=True)
    # the backward kernel redraws the same mask from the same seed
    want = (kept.float() / 0.7).t() @ x.detach()
    assert torch.allclose(fused.fc.weight.grad, want, atol=1e-4)
    # eval mode: no dropout at all
    fused.eval()
    assert torch.allclose(fused(x), z, atol=1e-5)
    # the seed comes from torch's generator: the same seed gives the same mask
    fused.train()
    torch.manual_seed(5)
    m1 = fused(x) != 0
    torch.manual_seed(5)
    assert torch.equal(m1, fused(x) != 0)


def test_always_dropout_stays_on_in_eval(tmp_path):
    spec = """
network T {
    input x: [500]
    output y = x -> relu -> dropout(0.5, always=true)
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    fused.eval()
    y = fused(torch.rand(4, 500) + 0.1)
    assert 0.4 < (y == 0).float().mean().item() < 0.6
    assert_kernels_ran(fused)


def test_fallback_without_interpreter_equals_plain(tmp_path, monkeypatch):
    spec = """
network T {
    input x: [3, 9, 11]
    output y = x -> conv: conv2d(5, k=3) -> bn: batchnorm -> relu
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    monkeypatch.setattr(ns, "TRITON_INTERPRET", False)  # CPU tensors now take the PyTorch path
    assert not ns.use_triton(torch.zeros(1))
    for train in (False, True):
        check(plain, fused, [torch.randn(2, 3, 9, 11)], torch.float32, train=train, kernels=False)


def test_channels_last_inputs(tmp_path):
    spec = """
network T {
    input x: [4, 6, 7]
    input c: [4, 1, 1]
    output y = (x * c) -> relu
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    x = torch.randn(2, 4, 6, 7).contiguous(memory_format=torch.channels_last)
    ya, yb = check(plain, fused, [x, torch.randn(2, 4, 1, 1)], torch.float64)
    assert torch.equal(ya, yb)


def test_identical_chains_share_one_kernel(tmp_path):
    spec = """
block B(c: int) {
    input x
    return x -> conv: conv2d(c, k=3, pad=1) -> bn: batchnorm -> relu
}
network T {
    input x: [3, 8, 8]
    output y = x -> b1: B(4) -> b2: B(6)
}"""
    path = tmp_path / "k.dln"
    path.write_text(spec, encoding="utf-8")
    src = dlc.compile(path, fuse=True).source
    assert src.count("= ElementwiseKernel(") == 1
    assert "#   b1: conv conv2d -> bn batchnorm -> relu" in src and "#   b2: conv" in src


def test_cached_batchnorm_affine_follows_new_statistics(tmp_path):
    spec = """
network T {
    input x: [3, 9, 11]
    output y = x -> conv: conv2d(5, k=3) -> bn: batchnorm -> relu
}"""
    plain, fused, ns, g = compile_pair(tmp_path, spec)
    plain.eval()
    fused.eval()
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        assert torch.allclose(plain(x), fused(x), atol=1e-6)
        for model in (plain, fused):  # in place, as load_state_dict and optimizers change tensors
            model.bn.running_mean.add_(0.5)
            model.bn.weight.mul_(2.0)
        assert torch.allclose(plain(x), fused(x), atol=1e-6)
        plain.bn.running_var.fill_(3.0)
        fused.load_state_dict(plain.state_dict())
        assert torch.allclose(plain(x), fused(x), atol=1e-6)
    assert_kernels_ran(fused)


@pytest.mark.parametrize("fuse", [False, True])
def test_relu6_matches_torch_relu6(tmp_path, fuse):
    spec = """
network T {
    input x: [4, 9]
    input r: [4, 9]
    output y = (x + r) -> relu6 -> scale(0.5)
}"""
    path = tmp_path / "k.dln"
    path.write_text(spec, encoding="utf-8")
    compiled = dlc.compile(path, fuse=fuse)
    assert ("fused_add_relu6_scale = ElementwiseKernel(" in compiled.source) == fuse
    assert ("F.relu6(" in compiled.source) and "nn.ReLU6" not in compiled.source
    ns = compiled.module()
    if fuse:  # the Triton kernel (under the interpreter) computes it: its PyTorch fallback must not run
        def no_fallback(*args, **kwargs):
            raise AssertionError("the PyTorch reference ran instead of the kernel")
        ns.fused_add_relu6_scale.reference = no_fallback
    model = getattr(ns, compiled.graph.name)().double()
    # both corners (0 and 6) and values on either side of them
    x = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 3.0, 6.0 - 1e-3, 6.0, 6.0 + 1e-3, 9.0], dtype=torch.float64)
    x = x.repeat(2, 4, 1).requires_grad_()
    r = torch.zeros_like(x).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    want = torch.nn.ReLU6()(xr) * 0.5
    got = model(x, r)
    assert torch.equal(got, want)
    w = torch.randn_like(want)
    (got * w).sum().backward()
    (want * w).sum().backward()
    assert torch.equal(x.grad, xr.grad) and torch.equal(r.grad, xr.grad)


def test_relu6_labelled_is_nn_relu6(tmp_path):
    path = tmp_path / "k.dln"
    path.write_text("network T {\n    input x: [5]\n    output y = x -> cap: relu6\n}\n", encoding="utf-8")
    compiled = dlc.compile(path)
    assert "self.cap = nn.ReLU6()" in compiled.source
    x = torch.linspace(-3, 9, 10).reshape(2, 5)
    assert torch.equal(compiled.instantiate()(x), torch.nn.functional.relu6(x))
