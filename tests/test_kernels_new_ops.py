"""Kernel facets of the ops issue 10 added: comparisons, logical ops, ``where`` and ``masked_fill`` (bool values inside
elementwise and row kernels) and the reductions over trailing axes (reducing row kernels).

Each case compiles a small spec plain and fused (``fuse=True``) and compares outputs and the gradients of every
float input, float32 and float64, under the Triton interpreter (conftest.py), checking that every generated kernel
ran both ways and that the fusion plan has the groups the docs promise. Sizes are ragged (rows of 13 with blocks of
16, several elementwise programs) so that masks matter; values are small integers where ties matter (``==``,
``max``). The last test compiles every kernel these specs generate with the real Triton compiler for a CUDA target
(no GPU needed).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import KERNEL_ATOL, assert_kernels_ran, assert_no_kernels, generated_module

import dlc
from dlc.compiler.fusion import fusion_plan

DTYPES = [torch.float64, torch.float32]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _pair(tmp_path, text: str):
    """The plain module, the fused module (small elementwise blocks: several programs, a partial last one) and the
    fused compile's graph."""
    path = tmp_path / "k.dln"
    path.write_text(text, encoding="utf-8")
    plain = dlc.compile(path).instantiate()
    fused_c = dlc.compile(path, fuse=True)
    ns = fused_c.module()
    ns.ELEMENTWISE_BLOCK = 16
    return plain, getattr(ns, fused_c.graph.name)(), fused_c.graph


def _groups(graph) -> list[tuple[str, list[str]]]:
    return [(grp.kind, [graph.nodes[i].op for i in grp.nodes]) for grp in fusion_plan(graph).groups]


def _check(plain, fused, inputs: list[torch.Tensor], dtype: torch.dtype, kernels: bool = True) -> list[torch.Tensor]:
    """Every output and every float input's gradient of ``fused`` equal ``plain``'s; its kernels ran both ways."""
    generated_module(fused).LAUNCHES.clear()
    a = [t.to(dtype).requires_grad_() if t.is_floating_point() else t for t in inputs]
    b = [t.detach().clone().requires_grad_() if t.is_floating_point() else t for t in a]
    ya, yb = plain(*a), fused(*b)
    ya, yb = (ya, yb) if isinstance(ya, tuple) else ((ya,), (yb,))
    atol = KERNEL_ATOL[str(dtype).removeprefix("torch.")]
    loss_a, loss_b = 0, 0
    for u, v in zip(ya, yb, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        torch.testing.assert_close(v, u, atol=atol, rtol=atol)
        if u.is_floating_point():
            w = torch.randn_like(u)
            loss_a, loss_b = loss_a + (u * w).sum(), loss_b + (v * w).sum()
    loss_a.backward()
    loss_b.backward()
    for ta, tb in zip(a, b, strict=True):
        if ta.is_floating_point():
            assert ta.grad is not None and tb.grad is not None
            torch.testing.assert_close(tb.grad, ta.grad, atol=atol, rtol=atol)
    if kernels:
        assert_kernels_ran(fused, backward=True)
    else:
        assert_no_kernels(fused)
    return list(yb)


def _ints(*shape: int) -> torch.Tensor:
    """Small integer values as floats: ties between tensors and within rows."""
    return torch.randint(-3, 4, shape).double()


# ---- bool values in elementwise kernels --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_where_of_a_comparison_is_one_kernel_and_equals_leaky_relu(tmp_path, dtype):
    plain, fused, graph = _pair(tmp_path, "network W {\n    input x: [5, 13]\n"
                                          "    output y = where(x > 0, x, 0.1 * x)\n}\n")
    assert _groups(graph) == [("elementwise", ["gt", "scale", "where"])]
    x = torch.randn(3, 5, 13)
    (y,) = _check(plain, fused, [x], dtype)
    torch.testing.assert_close(y, torch.nn.functional.leaky_relu(x.to(dtype), 0.1))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("symbol", ["==", "!=", "<", "<=", ">", ">="])
def test_comparisons_with_a_tensor_and_with_a_number(tmp_path, symbol, dtype):
    plain, fused, graph = _pair(tmp_path, f"network C {{\n    input x: [4, 13]\n    input y: [4, 13]\n"
                                          f"    output a = where(x {symbol} y, x * 2, y)\n"
                                          f"    output b = where((x + y) {symbol} 1, x, y - 1)\n}}\n")
    assert [kind for kind, _ in _groups(graph)] == ["elementwise", "elementwise"]
    _check(plain, fused, [_ints(2, 4, 13), _ints(2, 4, 13)], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_logical_ops_and_a_broadcast_bool_input(tmp_path, dtype):
    # `not m` is [1, 13], broadcast over the rows: computed once in PyTorch (not per element in the kernel), then
    # read by the kernel through strides and loaded as int1
    plain, fused, graph = _pair(tmp_path, "network L {\n    input x: [4, 13]\n    input y: [4, 13]\n"
                                          "    input m: [1, 13] bool\n"
                                          "    output z = where(x > 0 and y < 0 or not m, x + y, x * y)\n}\n")
    ((kind, ops),) = _groups(graph)
    assert kind == "elementwise" and sorted(ops) == ["add", "gt", "logical_and", "logical_or", "lt", "mul", "where"]
    m = torch.rand(2, 1, 13) > 0.5
    _check(plain, fused, [_ints(2, 4, 13), _ints(2, 4, 13), m], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_masked_fill_with_a_broadcast_mask_and_where_with_a_number(tmp_path, dtype):
    plain, fused, graph = _pair(tmp_path, "network M {\n    input x: [4, 13]\n    input y: [4, 13]\n"
                                          "    input m: [1, 13] bool\n    input c: [4, 13] bool\n"
                                          "    output z = masked_fill(x * 2, m, -3.5) + y\n"
                                          "    output w = where(c, 1.5, x * y) -> tanh\n}\n")
    assert _groups(graph) == [("elementwise", ["scale", "masked_fill", "add"]),
                              ("elementwise", ["mul", "where", "tanh"])]
    _check(plain, fused, [torch.randn(2, 4, 13), torch.randn(2, 4, 13), torch.rand(2, 1, 13) > 0.5,
                          torch.rand(2, 4, 13) > 0.5], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_masked_fill_joins_the_softmax_row_kernel(tmp_path, dtype):
    plain, fused, graph = _pair(tmp_path, "network A {\n    input s: [6, 13]\n    input m: [6, 13] bool\n"
                                          "    output p = masked_fill(s * 0.5, m, -1e9) -> softmax\n}\n")
    assert _groups(graph) == [("row", ["scale", "masked_fill", "softmax"])]
    m = torch.rand(2, 6, 13) > 0.5
    m[..., 0] = False  # every row keeps a position, as attention masks do
    (p,) = _check(plain, fused, [torch.randn(2, 6, 13), m], dtype)
    assert (p[m] == 0).all()


def test_bool_results_end_a_group_before_them(tmp_path):
    # the comparison's bool result is returned: it is computed in PyTorch, and `x * 2` alone is no kernel
    _, fused, graph = _pair(tmp_path, "network B {\n    input x: [4, 13]\n    input y: [4, 13]\n"
                                      "    output b = (x * 2) > y\n    output k = where(y > 0, 1.0, 0.0)\n}\n")
    assert _groups(graph) == []  # `where` of two numbers: PyTorch gives the default dtype, not the inputs'
    x, y = torch.randn(2, 4, 13), torch.randn(2, 4, 13)
    b, k = fused(x, y)
    assert b.dtype == torch.bool and torch.equal(b, x * 2 > y)
    assert torch.equal(k, (y > 0).float())
    assert_no_kernels(fused)


def test_a_chain_ending_in_bool_leaves_its_side_branches_too(tmp_path):
    # `x * 2 > r` was taken in by the `and`; when the bool result ends the chain, the whole `and` goes, `x * 2` too
    plain, fused, graph = _pair(tmp_path, "network S {\n    input x: [4, 13]\n    input r: [4, 13]\n"
                                          "    output b = x > 0 and x * 2 > r\n}\n")
    assert _groups(graph) == []
    x, r = torch.randn(2, 4, 13), torch.randn(2, 4, 13)
    assert torch.equal(fused(x, r), plain(x, r)) and fused(x, r).dtype == torch.bool


def test_integer_comparisons_stay_in_pytorch(tmp_path):
    # float32 would round large integers: `tokens != 0` on int64 ids is not fused, the float chain after it is
    plain, fused, graph = _pair(tmp_path, "network I {\n    input tokens: [13] int64\n    input x: [13]\n"
                                          "    output y = where(tokens != 0, x -> relu, x * 3)\n}\n")
    assert _groups(graph) == [("elementwise", ["relu", "scale", "where"])]
    tokens = torch.randint(0, 3, (4, 13))
    _check(plain, fused, [tokens, torch.randn(4, 13)], torch.float64)


# ---- reductions over trailing axes -------------------------------------------------------------------------------

REDUCTIONS = ["sum", "mean", "max", "min", "logsumexp"]
IR_NAMES = {"sum": "sum", "mean": "reduce_mean", "max": "reduce_max", "min": "reduce_min", "logsumexp": "logsumexp"}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("keepdim", [False, True], ids=["drop", "keepdim"])
@pytest.mark.parametrize("op", REDUCTIONS)
def test_reductions_join_their_producers(tmp_path, op, keepdim, dtype):
    # dim=-1 and its positive spelling; the values are integers, so max and min have ties (shared gradients)
    keep = ", keepdim=true" if keepdim else ""
    plain, fused, graph = _pair(tmp_path, f"network R {{\n    input x: [5, 13]\n    input y: [5, 13]\n"
                                          f"    output a = (x + y) -> {op}(dim=-1{keep})\n"
                                          f"    output b = (x * y) -> abs -> {op}(dim=1{keep})\n}}\n")
    name = IR_NAMES[op]
    assert _groups(graph) == [("row", ["add", name]), ("row", ["mul", "abs", name])]
    a, _ = _check(plain, fused, [_ints(3, 5, 13), _ints(3, 5, 13)], dtype)
    assert a.shape == ((3, 5, 1) if keepdim else (3, 5))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_spelled_out_variance_and_exp_sum(tmp_path, dtype):
    # the issue's two examples (m: one value per row, loaded once per row, its gradient summed over the row), the
    # same in a softmax's prologue, and a reduction over the two trailing axes (one row of 4 * 13)
    plain, fused, graph = _pair(tmp_path, "network V {\n    input x: [4, 13]\n    input m: [4, 1]\n"
                                          "    output s = x -> exp -> sum(dim=-1)\n"
                                          "    output v = (x - m) -> pow(2.0) -> mean(dim=-1)\n"
                                          "    output p = (x - m) -> softmax\n"
                                          "    output t = x -> tanh -> max(dim=[0, 1], keepdim=true)\n}\n")
    assert _groups(graph) == [("row", ["exp", "sum"]), ("row", ["sub", "pow", "reduce_mean"]),
                              ("row", ["sub", "softmax"]), ("row", ["tanh", "reduce_max"])]
    _check(plain, fused, [torch.randn(3, 4, 13), torch.randn(3, 4, 1)], dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's NumPy says so when it makes -inf
def test_logsumexp_of_rows_of_minus_infinity(tmp_path):
    # torch.logsumexp gives -inf for a row of -inf (its shift is 0 there), not nan; -3e38 * 10 is -inf in float32
    plain, fused, _ = _pair(tmp_path, "network E {\n    input x: [13]\n    input m: [13] bool\n"
                                      "    output y = masked_fill(x, m, -3e38) -> scale(10) -> logsumexp(dim=-1)\n"
                                      "}\n")
    x, m = torch.randn(3, 13), torch.zeros(3, 13, dtype=torch.bool)
    m[0] = True
    y = fused(x, m)
    assert y[0] == float("-inf") and torch.equal(y, plain(x, m))
    assert_kernels_ran(fused)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's NumPy says so when it meets NaN
def test_max_and_min_of_a_row_with_nan_are_nan_as_in_torch(tmp_path):
    plain, fused, _ = _pair(tmp_path, "network N {\n    input x: [4, 13]\n    input y: [4, 13]\n"
                                      "    output a = (x + y) -> max(dim=-1)\n"
                                      "    output b = (x + y) -> min(dim=-1)\n}\n")
    x, y = torch.randn(2, 4, 13), torch.randn(2, 4, 13)
    x[0, 1, 3] = float("nan")
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = fused(xa, y), plain(xb, y)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, equal_nan=True)
        assert g[0, 1].isnan() and not g[0, 0].isnan()
    sum(t.sum() for t in got).backward()
    sum(t.sum() for t in want).backward()
    torch.testing.assert_close(xa.grad, xb.grad, equal_nan=True)  # NaN over that row, as torch.amax's backward
    assert_kernels_ran(fused, backward=True)


def test_other_axes_and_lone_reductions_stay_in_pytorch(tmp_path):
    plain, fused, graph = _pair(tmp_path, "network O {\n    input x: [4, 13]\n"
                                          "    output a = x -> exp -> sum(dim=0)\n"
                                          "    output b = x -> mean(dim=-1)\n"
                                          "    output c = x -> exp -> prod(dim=-1)\n}\n")
    assert _groups(graph) == []
    _check(plain, fused, [torch.randn(2, 4, 13)], torch.float64, kernels=False)


# ---- the real Triton compiler --------------------------------------------------------------------------------------

# Compiles every elementwise and row kernel of a fused module for an sm_90 target with the Triton compiler (no GPU
# needed). It runs in a process without TRITON_INTERPRET, which must be off before triton is imported for `@jit` to
# give compilable functions. Pointers are float32, bool inputs (loaded with `!= 0`) int1.
COMPILE_ALL = r"""
import re, sys
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
import dlc

compiled = dlc.compile(sys.argv[1], fuse=True)
ns = compiled.module()
done = []
for name, kernel in sorted(vars(ns).items()):
    if type(kernel) not in (ns.ElementwiseKernel, ns.RowKernel):
        continue
    for fn in (kernel.forward, kernel.backward):
        signature, constexprs = {}, {}
        for p in fn.params:
            if p.is_constexpr:
                value = {"BLOCK": 16, "COMPUTE": tl.float32, "NEED": 2 ** len(kernel.full) - 1}[p.name]
                signature[p.name], constexprs[p.name] = "constexpr", value
            elif p.name.endswith("_ptr"):
                boolean = re.search(rf"= tl.load\({p.name} \+ .*\) != 0$", fn.src, re.M)
                signature[p.name] = "*i1" if boolean else "*fp32"
            else:
                signature[p.name] = "i32"
        source = triton.compiler.ASTSource(fn, signature, constexprs)
        asm = triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm
        assert "ptx" in asm and "cubin" in asm, fn.__name__
        done.append(fn.__name__)
print(" ".join(done))
"""

ALL_NEW_KERNELS = """network K {
    input x: [4, 13]
    input y: [4, 13]
    input m: [4, 13] bool
    output a = where(x > 0 and not m or y <= 1, x, 0.1 * x)
    output b = masked_fill(x * y, m, -1e9) -> softmax
    output c = (x + y) -> sum(dim=-1)
    output d = (x - y) -> mean(dim=-1, keepdim=true)
    output e = (x * y) -> max(dim=-1)
    output f = (x / y) -> min(dim=-1)
    output g = (x * 2) -> logsumexp(dim=-1)
}
"""


def test_every_new_kernel_compiles_for_a_cuda_target(tmp_path):
    path = tmp_path / "k.dln"
    path.write_text(ALL_NEW_KERNELS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", COMPILE_ALL, str(path)], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    names = r.stdout.split()
    assert len(names) == 14 and all(n.endswith(("_forward", "_backward")) for n in names), names
