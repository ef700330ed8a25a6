"""Specs that stress the fusion pass, the kernels and the inference rewrites (tests/fused_cases/*.dln).

Most came from a review that looked for ways to break the fused backend; each one that broke it is
pinned by a test below. Every case is compared in float64 (eval and train: outputs, gradients of every
input and parameter, batchnorm buffers) for ``fuse=True``, ``optimize="inference"`` and both. Wherever a fused
module runs, the launch counts of its runtime show that each of its kernels ran (conftest.assert_kernels_ran):
the PyTorch fallback would compute the same values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import dlc
from dlc.cli import main as cli_main

from conftest import assert_kernels_ran, assert_no_kernels, expected_kernels, generated_module

CASES = Path(__file__).resolve().parent / "fused_cases"
VARIANTS = {"fused": {"fuse": True, "fused_recurrent": True}, "inference": {"optimize": "inference"},
            "both": {"fuse": True, "optimize": "inference"}}
# Fused variants with no Triton kernel to run, which the test checks too: attention runs PyTorch's
# scaled_dot_product_attention; inplace1 and ret_min fuse nothing (no chain inside a block, single ops);
# fold_into_block folds its batchnorms into the convolutions, which leaves no chain either.
KERNEL_FREE = {("attn", "fused"), ("attn", "both"), ("inplace1", "fused"), ("inplace1", "both"),
               ("ret_min", "fused"), ("ret_min", "both"), ("fold_into_block", "both")}


def make_inputs(graph, batch: int = 3, size: int = 5) -> list[torch.Tensor]:
    xs = []
    for _, v in graph.inputs:
        t = graph.types[v]
        shape = [batch] + [d if isinstance(d, int) else size for d in t.shape]
        xs.append(torch.randn(shape, dtype=torch.float64))
    return xs


def as_tuple(y):
    return y if isinstance(y, tuple) else (y,)


def run(model, xs, train: bool, fused: bool = False):
    """Outputs, input gradients and parameter gradients of a weighted sum of the outputs; with ``fused``, also
    checks that every kernel of the module ran forward and backward."""
    if fused:
        generated_module(model).LAUNCHES.clear()
    model.train(train)
    xs = [x.clone().requires_grad_() for x in xs]
    ys = as_tuple(model(*xs))
    w = [torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(i)) for i, y in enumerate(ys)]
    sum((y * wi).sum() for y, wi in zip(ys, w, strict=True)).backward()
    if fused:
        assert_kernels_ran(model, backward=True)
    return ys, [x.grad for x in xs], {n: p.grad for n, p in model.named_parameters()}


def close(a, b, what: str) -> None:
    assert (a is None) == (b is None), what
    if a is not None:
        assert a.shape == b.shape, what
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-9), f"{what}: max diff {(a - b).abs().max().item():.3g}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("case", sorted(p.stem for p in CASES.glob("*.dln")))
def test_case_matches_unfused(case, variant):
    path = CASES / f"{case}.dln"
    torch.manual_seed(0)
    plain = dlc.load(path).double()
    for m in plain.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    other = dlc.load(path, **VARIANTS[variant]).double()
    other.load_state_dict(plain.state_dict())
    xs = make_inputs(dlc.compile(path).graph)
    fused = VARIANTS[variant].get("fuse", False) and (case, variant) not in KERNEL_FREE
    for train in (False, True):
        ya, gxa, gpa = run(plain, xs, train)
        yb, gxb, gpb = run(other, xs, train, fused=fused)
        for i, (a, b) in enumerate(zip(ya, yb, strict=True)):
            close(a, b, f"output {i} (train={train})")
        for i, (a, b) in enumerate(zip(gxa, gxb, strict=True)):
            close(a, b, f"gradient of input {i} (train={train})")
        assert gpa.keys() == gpb.keys()
        for name in gpa:
            close(gpa[name], gpb[name], f"gradient of {name} (train={train})")
    if not fused:  # no kernel defined, none launched
        assert expected_kernels(other, backward=True) == set()
        assert_no_kernels(other)
    for (name, a), (name_b, b) in zip(plain.named_buffers(), other.named_buffers(), strict=True):
        assert name == name_b
        close(a.double(), b.double(), name)


def test_parameters_keep_their_order():
    """Optimizer state follows parameter order: fused and unfused modules must list them alike."""
    path = CASES / "order.dln"
    plain, fused = dlc.load(path), dlc.load(path, fuse=True)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in fused.named_parameters()]


def test_in_place_never_touches_a_callers_tensor():
    path = CASES / "inplace1.dln"
    model = dlc.load(path, optimize="inference").eval()
    x = torch.randn(2, 8)
    before = x.clone()
    with torch.no_grad():
        model(x)
    assert torch.equal(x, before)


def test_mixed_dropouts_keep_their_own_switch(tmp_path):
    path = tmp_path / "drop.dln"
    path.write_text("""
network DropMin {
    input x: [2000]
    output y = x -> relu -> dropout(0.5, always=true) -> tanh -> dropout(0.5)
}""", encoding="utf-8")
    model = dlc.load(path, fuse=True).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 2000) + 0.1)
    # eval: the Monte-Carlo dropout stays on, the plain one is off
    assert 0.4 < (y == 0).float().mean().item() < 0.6
    assert_kernels_ran(model)


def test_linear_residual_backward_with_single_rows():
    path = CASES / "lin3.dln"
    plain, fused = dlc.load(path).double(), dlc.load(path, fuse=True).double()
    fused.load_state_dict(plain.state_dict())
    for shape in [(1, 5, 16), (2, 1, 16)]:
        x = torch.randn(shape, dtype=torch.float64)
        ya, _, ga = run(plain, [x], True)
        yb, _, gb = run(fused, [x], True, fused=True)
        close(ya[0], yb[0], "output")
        for name in ga:
            close(ga[name], gb[name], name)


def test_inference_mode_tensors():
    """Built and run under torch.inference_mode, whose tensors have no version counter (so the batchnorm affine
    cache is off), the variants compute what the plain module computes, on a second call too, with the kernels."""
    path = CASES / "convs.dln"
    torch.manual_seed(0)
    plain = dlc.load(path).eval()
    for m in plain.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    xs = [x.float() for x in make_inputs(dlc.compile(path).graph)]
    with torch.inference_mode():
        want = as_tuple(plain(*xs))
    for options in ({"fuse": True}, {"optimize": "inference"}, {"fuse": True, "optimize": "inference"}):
        with torch.inference_mode():
            model = dlc.load(path, **options).eval()
            model.load_state_dict(plain.state_dict())
            assert all(p.is_inference() for p in model.parameters())
            for call in (1, 2):
                got = as_tuple(model(*xs))
                for i, (a, b) in enumerate(zip(want, got, strict=True)):
                    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=f"{options}, call {call}, output {i}")
        if options.get("fuse"):
            assert_kernels_ran(model)
        else:
            assert_no_kernels(model)


def test_autocast_keeps_low_precision_outputs():
    path = CASES / "convs.dln"
    plain, fused = dlc.load(path), dlc.load(path, fuse=True)
    fused.load_state_dict(plain.state_dict())
    xs = [x.float() for x in make_inputs(dlc.compile(path).graph)]
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        ya, yb = as_tuple(plain.eval()(*xs)), as_tuple(fused.eval()(*xs))
    assert [y.dtype for y in ya] == [y.dtype for y in yb]
    assert_kernels_ran(fused)


@pytest.mark.parametrize("name, renamed", [("triton", "triton_"), ("tl", "tl_"), ("jit", "jit_"),
                                           ("ElementwiseKernel", "ElementwiseKernel_"), ("use_triton", "use_triton_"),
                                           ("fused_relu", "v_fused_relu"), ("batchnorm_affine", "batchnorm_affine_")])
def test_block_names_the_fused_module_defines_are_renamed(tmp_path, name, renamed):
    """A block's class is renamed away from the kernel section's names (the state_dict keeps the spec's)."""
    path = tmp_path / "n.dln"
    path.write_text(f"""
block {name}(c: int) {{
    input x
    return x -> linear(c) -> relu -> tanh
}}
network Net {{
    input x: [8]
    output y = x -> {name}(8) -> sigmoid
}}""", encoding="utf-8")
    compiled = dlc.compile(path, fuse=True)
    assert f"class {renamed}(nn.Module):" in compiled.source
    plain, fused = dlc.load(path), compiled.instantiate()
    fused.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 8)
    torch.testing.assert_close(fused.eval()(x), plain.eval()(x))
    assert_kernels_ran(fused)


def test_local_names_never_shadow_the_kernel_section(tmp_path):
    path = tmp_path / "locals.dln"
    path.write_text("""
network Locals {
    input fused_relu_tanh: [8]
    input batchnorm_affine: [4, 5, 5]
    a = fused_relu_tanh -> relu -> tanh
    b = batchnorm_affine -> conv2d(4, k=1) -> batchnorm -> relu
    conv_without_bias = batchnorm_affine -> conv2d(4, k=1, bias=false) -> relu
    output y = a
    output z = b + conv_without_bias
}""", encoding="utf-8")
    plain = dlc.load(path)
    fused = dlc.load(path, fuse=True)
    fused.load_state_dict(plain.state_dict())
    xs = [torch.randn(2, 8), torch.randn(2, 4, 5, 5)]
    for a, b in zip(plain.eval()(*xs), fused.eval()(*xs), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert_kernels_ran(fused)


def test_compile_with_explain_never_fails_internally(capsys):
    # in this process: the command's code path without an interpreter start per case (36 of them took 20 s)
    for path in sorted(CASES.glob("*.dln")):
        for flags in (["--fuse", "--explain-fusion"], ["--optimize", "inference", "--fuse"]):
            status = cli_main(["compile", str(path), *flags, "-o", "-"])
            out, err = capsys.readouterr()
            assert status == 0, err
            assert max(len(line) for line in out.splitlines()) <= 120, path.name


def test_a_long_chain_is_cut_into_kernels_of_bounded_size(tmp_path):
    """`x -> ((relu -> sigmoid) * 100) * 240` once became one 24,000-op kernel (10 MB of source, a 6 s import)."""
    from dlc.compiler.fusion import MAX_GROUP_OPS, group_fusions

    spec = tmp_path / "long.dln"
    spec.write_text("network Long {\n    input x: [8]\n    output y = x -> (relu -> sigmoid) * 200\n}\n")
    compiled = dlc.compile(spec, fuse=True)
    plan = group_fusions(compiled.graph)
    sizes = [len(grp.nodes) for grp in plan.groups]
    assert sum(sizes) == 400 and max(sizes) == MAX_GROUP_OPS, sizes
    assert len(compiled.source) < 200_000
    x = torch.randn(3, 8, dtype=torch.float64)
    expected = x
    for _ in range(200):
        expected = torch.sigmoid(torch.relu(expected))
    model = compiled.instantiate().double()
    assert torch.allclose(model(x), expected, atol=1e-12)
    assert_kernels_ran(model)
