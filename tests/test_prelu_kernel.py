"""prelu's kernel facet (compiler/ops/param.py): `conv -> batchnorm -> prelu(C)`, `linear -> prelu`, features-last
`prelu(F)` chains fuse, and the fused module (kernels under the Triton interpreter) equals the plain one (nn.PReLU)
forward and backward, the slopes' gradient (summed over the batch and the positions) included, in float32 and
float64, with every kernel run; a prelu never joins a row kernel; every kernel compiles for a CUDA target."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_kernels_ran, generated_module
from test_kernels_new_ops import COMPILE_ALL

import dlc

# each network's lines, and the text its fused forward passes the slopes as
NETWORKS = {
    # batchnorm's statistics need the convolution materialised: the kernel is bn -> prelu -> residual add
    "conv_bn_prelu": (["input x: [3, 6, 7]", "y = x -> conv2d(4, k=3, pad=1) -> batchnorm -> act: prelu(4)",
                       "output z = y + (x -> conv2d(4, k=1))"], "self.act.weight.view(4, 1, 1)"),
    "conv_prelu_one_slope": (["input x: [3, 6, 7]",
                              "output y = x -> conv2d(4, k=3, pad=1) -> act: prelu(init=0.1) -> scale(2.0)"],
                             "self.act.weight"),
    "linear_prelu_per_unit": (["input x: [5, 12]", "output y = x -> fc: linear(8) -> act: prelu(8)"],
                              "fused_linear_prelu(x, self.fc.weight, self.fc.bias, self.act.weight)"),
    "linear_prelu_one_slope": (["input x: [12]", "output y = x -> fc: linear(8) -> act: prelu -> tanh"],
                               "self.act.weight"),
    # features last: one slope per feature on the last axis, in a chain with no anchor
    "features_last": (["input x: [5, 6]", "input r: [5, 6]", "output y = (x + r) -> act: prelu(6) -> sigmoid"],
                      "self.act.weight"),
}


def _network(lines: list[str]) -> str:
    return "network N {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def _pair(tmp_path, text: str) -> tuple[dlc.Compiled, torch.nn.Module, torch.nn.Module]:
    path = tmp_path / "p.dln"
    path.write_text(text, encoding="utf-8")
    plain = dlc.load(path)
    compiled = dlc.compile(path, fuse=True)
    fused = compiled.instantiate()
    with torch.no_grad():  # slopes of both signs and sizes, so each slope's gradient differs
        for m in plain.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.copy_(torch.linspace(-0.5, 0.7, m.weight.numel()))
    fused.load_state_dict(plain.state_dict())
    return compiled, plain, fused


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_fused_equals_plain_forward_and_backward(tmp_path, name, dtype):
    lines, call = NETWORKS[name]
    compiled, plain, fused = _pair(tmp_path, _network(lines))
    assert call in compiled.source and "prelu" in compiled.source.split("def forward")[1]
    plain.to(dtype).train()
    fused.to(dtype).train()
    gen = torch.Generator().manual_seed(0)
    shapes = [[3] + [d for d in compiled.graph.types[v].shape] for _, v in compiled.graph.inputs]
    xs = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    xa = [x.clone().requires_grad_() for x in xs]
    xb = [x.clone().requires_grad_() for x in xs]
    generated_module(fused).LAUNCHES.clear()
    ya, yb = plain(*xa), fused(*xb)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(yb, ya, **tol)
    w = torch.randn(ya.shape, generator=gen, dtype=dtype)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    for a, b in zip(xa, xb, strict=True):
        torch.testing.assert_close(b.grad, a.grad, **tol)
    grads = dict(fused.named_parameters())
    for pname, p in plain.named_parameters():
        torch.testing.assert_close(grads[pname].grad, p.grad, **tol, msg=pname)
    assert plain.act.weight.grad.abs().min() > 0  # every slope got a gradient
    assert_kernels_ran(fused, backward=True)


def test_a_prelu_stays_out_of_row_kernels(tmp_path):
    """A row kernel loads its extra inputs row by row: prelu's slopes per channel are not, so `prelu -> softmax`
    is the elementwise kernel before it and the softmax on its own (which stays in PyTorch)."""
    compiled, plain, fused = _pair(tmp_path, _network(["input x: [5, 6]", "input r: [5, 6]",
                                                       "output y = (x + r) -> act: prelu(6) -> softmax"]))
    assert "y = fused_add_prelu(x, r, self.act.weight)" in compiled.source and "y = fused_softmax(y)" in compiled.source
    x, r = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    torch.testing.assert_close(fused(x, r), plain(x, r))
    assert_kernels_ran(fused)


def test_every_prelu_kernel_compiles_for_a_cuda_target(tmp_path):
    path = tmp_path / "k.dln"
    # (the script reads the module's RowKernel: the softmax makes one)
    path.write_text(_network(["input x: [3, 6, 7]", "input v: [12]",
                              "output a = x -> conv2d(4, k=3, pad=1) -> batchnorm -> act: prelu(4)",
                              "output b = (v * 2.0) -> act2: prelu -> tanh", "output c = (v * 2.0) -> softmax"]),
                    encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", COMPILE_ALL, str(path)], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    names = r.stdout.split()
    # the prelu kernels (per channel, one slope) both ways
    assert {"fused_bn_prelu_forward", "fused_bn_prelu_backward", "fused_scale_prelu_tanh_forward",
            "fused_scale_prelu_tanh_backward"} <= set(names), names
