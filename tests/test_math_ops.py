"""Reductions, matmul, pow, abs, tensor comparisons, where, masked_fill and random samples (compiler/ops/reduce.py,
compare.py, random.py, arith.py): each against torch's own function, forward and backward in float64, plain and
fused; their shapes and dtypes as the compiler infers them; and their diagnostics, through the CLI too."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import assert_kernels_ran

import dlc
from dlc.diagnostics import DlcError


def _compile(tmp_path, text: str, **options) -> dlc.Compiled:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return dlc.compile(path, **options)


def _net(inputs: str, body: str) -> str:
    lines = [f"    input {i}" for i in inputs.split(";")] + [f"    {b}" for b in body.split(";")]
    return "network T {\n" + "\n".join(lines) + "\n}\n"


def _error(tmp_path, text: str) -> DlcError:
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, text)
    return info.value


def _cli(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "dlc", "compile", str(path), "-o", str(tmp_path / "out.py")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)


def _output_type(compiled: dlc.Compiled, i: int = 0):
    g = compiled.graph
    return g.types[g.outputs[i][1]]


def _grad_check(model, inputs: list[torch.Tensor], reference) -> None:
    """``model(*inputs)`` equals ``reference(*inputs)`` in float64, and so do the inputs' gradients."""
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    refs = [x.detach().clone().requires_grad_() for x in inputs]
    got, want = model(*xs), reference(*refs)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    w = torch.randn_like(want)
    (got * w).sum().backward()
    (want * w).sum().backward()
    for x, r in zip(xs, refs):
        torch.testing.assert_close(x.grad, r.grad, atol=1e-12, rtol=1e-12)


# ---- reductions ------------------------------------------------------------------------------------------------

# the call as the spec writes it on x: [3, 4, 5], the output shape, torch's function on the batched x
REDUCTIONS = [
    ("x -> sum(dim=1)", (3, 5), lambda x: x.sum(2)),
    ("sum(x, dim=[0, -1])", (4,), lambda x: x.sum((1, 3))),
    ("x -> sum(dim=2, keepdim=true)", (3, 4, 1), lambda x: x.sum(3, keepdim=True)),
    ("x -> mean(dim=0)", (4, 5), lambda x: x.mean(1)),
    ("mean(x, dim=[1, 2], keepdim=true)", (3, 1, 1), lambda x: x.mean((2, 3), keepdim=True)),
    ("x -> max(dim=-1)", (3, 4), lambda x: torch.max(x, dim=3).values),
    ("max(x, dim=[0, 2])", (4,), lambda x: x.amax((1, 3))),
    ("x -> min(dim=1)", (3, 5), lambda x: torch.min(x, dim=2).values),
    ("x -> prod(dim=2)", (3, 4), lambda x: x.prod(3)),
    ("x -> logsumexp(dim=[1, 2])", (3,), lambda x: torch.logsumexp(x, (2, 3))),
    ("x -> r: logsumexp(dim=0, keepdim=true)", (1, 4, 5), lambda x: torch.logsumexp(x, 1, keepdim=True)),
]


@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("call, shape, reference", REDUCTIONS, ids=[c[0] for c in REDUCTIONS])
def test_reductions_match_torch(tmp_path, call, shape, reference, fuse):
    compiled = _compile(tmp_path, _net("x: [3, 4, 5]", f"output y = {call}"), fuse=fuse)
    assert _output_type(compiled).shape == shape
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _grad_check(compiled.instantiate().double(), [x], reference)


def test_a_reduction_inside_a_fused_chain(tmp_path):
    """The elementwise ops around a reduction still fuse; the reduction runs in PyTorch between the kernels."""
    compiled = _compile(tmp_path, _net("x: [6, 8];r: [6, 8]", "output y = (x + r) -> relu -> sum(dim=1) -> tanh"),
                        fuse=True)
    model = compiled.instantiate().double()
    x, r = (torch.randn(2, 6, 8, dtype=torch.float64) for _ in range(2))
    _grad_check(model, [x, r], lambda x, r: torch.tanh(torch.relu(x + r).sum(2)))
    assert_kernels_ran(model, backward=True)


def test_a_symbolic_axis_reduces_away(tmp_path):
    compiled = _compile(tmp_path, _net("x: [T, 6]", "output y = x -> mean(dim=0) -> linear(3);output z = sum(x, "
                                                    "dim=1, keepdim=true)"))
    assert _output_type(compiled, 0).shape == (3,)
    assert _output_type(compiled, 1).shape == ("T", 1)
    model = compiled.instantiate()
    y, z = model(torch.randn(2, 7, 6))
    assert y.shape == (2, 3) and z.shape == (2, 7, 1)


def test_argmax_and_argmin_give_int64_indices(tmp_path):
    compiled = _compile(tmp_path, _net("x: [4, 5]", "output a = x -> argmax(dim=1);output b = argmin(x, dim=0, "
                                                    "keepdim=true)"))
    assert _output_type(compiled, 0).dtype == "int64" and _output_type(compiled, 0).shape == (4,)
    assert _output_type(compiled, 1).shape == (1, 5)
    x = torch.randn(3, 4, 5)
    a, b = compiled.instantiate()(x)
    assert a.dtype == torch.int64
    torch.testing.assert_close(a, x.argmax(2))
    torch.testing.assert_close(b, x.argmin(1, keepdim=True))


def test_integer_sums_are_int64(tmp_path):
    compiled = _compile(tmp_path, _net("t: [6] int32", "output s = t -> sum(dim=0);output m = t -> max(dim=0)"))
    assert (_output_type(compiled, 0).dtype, _output_type(compiled, 1).dtype) == ("int64", "int32")
    t = torch.randint(0, 9, (2, 6), dtype=torch.int32)
    s, m = compiled.instantiate()(t)
    assert s.dtype == torch.int64 and torch.equal(s, t.sum(1)) and torch.equal(m, t.amax(1))


def test_labelled_reduction_is_a_module(tmp_path):
    compiled = _compile(tmp_path, _net("x: [3, 4]", "output y = x -> s: sum(dim=1, keepdim=true)"))
    assert "self.s = Apply(torch.sum, dim=2, keepdim=True)" in compiled.source
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(compiled.instantiate()(x), x.sum(2, keepdim=True))


def test_mean_min_and_max_keep_their_meaning_without_dim(tmp_path):
    """`mean(a, b)` is still the merge and `max(a, b)` still compares numbers: only `dim=` makes a reduction."""
    compiled = _compile(tmp_path, _net("a: [4];b: [4]", "n = max(2, 3) + min(5, 1);output y = mean(a, b) -> "
                                                        "linear(n)"))
    assert "(a + b) / 2" in compiled.source and "nn.Linear(4, 4)" in compiled.source


@pytest.mark.parametrize("body, code, col, message", [
    ("output y = x -> sum(dim=2)", "bad-argument", 29, "`sum`: axis 2 is out of range for a rank-2 tensor [4, T]"),
    ("output y = mean(x, dim=-3)", "bad-argument", 28, "`mean`: axis -3 is out of range for a rank-2 tensor [4, T]"),
    ("output y = x -> max(dim=[1, -1])", "bad-argument", 29, "`max`: axis -1 is given twice"),
    ("output y = x -> prod(dim=[0, 1])", "bad-argument", 30, "`prod` reduces one axis, got 2"),
    ("output y = x -> argmax(dim=[0, 1])", "bad-argument", 32, "`argmax` reduces one axis, got 2"),
    ("output y = x -> sum(dim=1.5)", "bad-argument", 29,
     "`sum`: `dim` must be an integer or a list of integers, got the number 1.5"),
    ("output y = x -> sum", "missing-argument", 21, "`sum` needs the argument `dim`"),
    ("output y = t -> mean(dim=0)", "type-mismatch", 21, "`mean` needs a floating-point input, got int64"),
    ("output y = t -> logsumexp(dim=0)", "type-mismatch", 21, "`logsumexp` needs a floating-point input, got int64"),
    ("output y = max(x, x)", "type-mismatch", 16, "`max` takes numbers"),
])
def test_reduction_errors(tmp_path, body, code, col, message):
    err = _error(tmp_path, _net("x: [4, T];t: [5] int64", body))
    assert (err.code, err.message, err.span.line, err.span.col) == (code, message, 4, col)


def test_max_of_tensors_hints_at_dim(tmp_path):
    err = _error(tmp_path, _net("x: [4]", "output y = max(x, x)"))
    assert err.hint == "to reduce a tensor over an axis, give it: `max(x, dim=1)`"


def test_a_missing_axis_is_a_cli_diagnostic(tmp_path):
    run = _cli(tmp_path, _net("x: [8, 16]", "output y = x -> sum(dim=2)"))
    assert run.returncode == 1
    assert "net.dln:3:29: error[bad-argument]: `sum`: axis 2 is out of range for a rank-2 tensor [8, 16]" in run.stderr
    assert "^" in run.stderr and "Traceback" not in run.stderr


# ---- matmul and pow --------------------------------------------------------------------------------------------

# the operands' batch-less shapes, the spec's expression, the output shape
MATMULS = [
    ("[4, 3]", "[3, 5]", "a @ b", (4, 5)),
    ("[2, 4, 3]", "[2, 3, 5]", "matmul(a, b)", (2, 4, 5)),
    ("[2, 1, 4, 3]", "[1, 6, 3, 5]", "a @ b", (2, 6, 4, 5)),
    ("[T, 3]", "[3, T]", "a @ b", ("T", "T")),
]


@pytest.mark.parametrize("sa, sb, expr, shape", MATMULS, ids=[f"{c[0]}@{c[1]}" for c in MATMULS])
def test_matmul_matches_torch(tmp_path, sa, sb, expr, shape):
    compiled = _compile(tmp_path, _net(f"a: {sa};b: {sb}", f"output y = {expr}"))
    assert _output_type(compiled).shape == shape
    gen = torch.Generator().manual_seed(2)
    a, b = (torch.randn(3, *[5 if d == "T" else int(d) for d in s.strip("[]").split(", ")], dtype=torch.float64,
                        generator=gen) for s in (sa, sb))
    _grad_check(compiled.instantiate().double(), [a, b], torch.matmul)


def test_attention_scores_by_matmul(tmp_path):
    """softmax(q kᵀ / √d) v written with `@`, against torch's scaled_dot_product_attention."""
    compiled = _compile(tmp_path, _net("q: [T, 8];k: [T, 8];v: [T, 8]",
                                       "w = (q @ (k -> permute([1, 0]))) * 0.3535533905932738 -> softmax(dim=-1)"
                                       ";output y = w @ v"))
    q, k, v = (torch.randn(2, 7, 8, dtype=torch.float64) for _ in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(compiled.instantiate().double()(q, k, v), want)


@pytest.mark.parametrize("sa, sb, message", [
    ("[4, 3]", "[4, 3]", "`matmul`: the inner sizes differ: [4, 3] @ [4, 3] multiplies [..., N, K] by [..., K, M], "
                         "but 3 != 4"),
    ("[3]", "[3, 2]", "`matmul` multiplies matrices: each operand needs at least 2 batch-less axes, got [3] and "
                      "[3, 2]"),
    ("[2, 4, 3]", "[3, 5]", "`matmul` needs operands of equal rank, got [2, 4, 3] and [3, 5]"),
    ("[2, 4, 3]", "[3, 3, 5]", "`matmul` needs matching shapes, got [2] and [3]"),
])
def test_matmul_shape_errors(tmp_path, sa, sb, message):
    err = _error(tmp_path, _net(f"a: {sa};b: {sb}", "output y = a @ b"))
    assert (err.code, err.message, err.span.line, err.span.col) == ("shape-mismatch", message, 4, 16)


def test_matmul_needs_float_tensors_and_at_needs_tensors(tmp_path):
    err = _error(tmp_path, _net("a: [2, 2] int64;b: [2, 2] int64", "output y = a @ b"))
    assert (err.code, err.message) == ("type-mismatch", "`matmul` needs a floating-point input, got int64")
    err = _error(tmp_path, _net("a: [2, 2]", "n = 2 @ 3;output y = a"))
    assert (err.code, err.span.line, err.span.col) == ("type-mismatch", 3, 9)
    err = _error(tmp_path, _net("a: [2, 2]", "output y = a @ 2"))
    assert (err.code, err.message) == ("type-mismatch", "`@` between a tensor and a number is not supported")


POWERS = [2.0, 3.0, -1.0, 0.0, 0.5, -1.5, 7.0, 6.0, 2.5]


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("e", POWERS, ids=[str(e) for e in POWERS])
def test_pow_matches_torch(tmp_path, e, fuse):
    """(x + r) -> pow(e) -> scale(0.5), forward and backward, on negative values too for integer exponents."""
    compiled = _compile(tmp_path, _net("x: [8];r: [8]", f"output y = (x + r) -> pow({e}) -> scale(0.5)"), fuse=fuse)
    low = -2.0 if float(e).is_integer() else 0.1
    x = torch.linspace(low, 2.5, 8, dtype=torch.float64).repeat(3, 1)
    r = torch.zeros_like(x)
    model = compiled.instantiate().double()
    _grad_check(model, [x, r], lambda x, r: torch.pow(x + r, e) * 0.5)
    if fuse:
        assert_kernels_ran(model, backward=True)


def test_labelled_pow_is_a_module(tmp_path):
    compiled = _compile(tmp_path, _net("x: [4]", "output y = x -> p: pow(3)"))
    assert "self.p = Apply(torch.pow, exponent=3.0)" in compiled.source
    x = torch.randn(2, 4)
    torch.testing.assert_close(compiled.instantiate()(x), x ** 3)


# ---- comparisons, logical ops, where, masked_fill -------------------------------------------------------------

def test_comparisons_give_bool_tensors_as_torch(tmp_path):
    body = ("output o1 = tokens != pad;output o2 = x > 0;output o3 = 0.5 <= x;output o4 = x == y;output o5 = x < y"
            ";output o6 = x >= y")
    compiled = _compile(tmp_path, "network T(pad: int = 0) {\n    input tokens: [T] int64\n    input x: [3, 4]\n"
                                  "    input y: [1, 4]\n" + "".join(f"    {b}\n" for b in body.split(";")) + "}\n")
    assert "o1 = tokens != 0" in compiled.source and "o3 = x >= 0.5" in compiled.source
    assert [compiled.graph.types[v].dtype for _, v in compiled.graph.outputs] == ["bool"] * 6
    tokens = torch.tensor([[3, 0, 5, 0], [0, 1, 1, 1]])
    x, y = torch.randn(2, 3, 4), torch.randn(2, 1, 4)
    x[0, 0, :2] = y[0, 0, :2]
    got = compiled.instantiate()(tokens, x, y)
    want = (tokens != 0, x > 0, x >= 0.5, x == y, x < y, x >= y)
    for g, w in zip(got, want):
        assert g.dtype == torch.bool and torch.equal(g, w)


def test_compile_time_comparisons_are_unchanged(tmp_path):
    compiled = _compile(tmp_path, _net("x: [4]", "n = if 3 > 2 and not (1 == 2) then 5 else 6;output y = x -> "
                                                 "linear(n)"))
    assert "nn.Linear(4, 5)" in compiled.source


def test_logical_ops_on_bool_tensors(tmp_path):
    compiled = _compile(tmp_path, _net("x: [6];y: [6]", "output m = (x > 0) and not (y > 0) or x == y"))
    x, y = torch.randn(2, 6), torch.randn(2, 6)
    y[:, 0] = x[:, 0]
    assert torch.equal(compiled.instantiate()(x, y), ((x > 0) & ~(y > 0)) | (x == y))


@pytest.mark.parametrize("expr, reference", [
    ("where(x > 0, x, y)", lambda x, y: torch.where(x > 0, x, y)),
    ("where(x > 0, x, 0.0)", lambda x, y: torch.where(x > 0, x, 0.0)),
    ("where(y < x, -1, y)", lambda x, y: torch.where(y < x, -1.0, y)),
    ("where(x > y, 2.0, 3.0) * x", lambda x, y: torch.where(x > y, 2.0, 3.0) * x),
    ("x -> masked_fill(x < y, -1e9)", lambda x, y: x.masked_fill(x < y, -1e9)),
    ("masked_fill(x, y > 0.5, 0)", lambda x, y: x.masked_fill(y > 0.5, 0.0)),
], ids=["tensors", "number-b", "number-a", "numbers", "masked_fill-pipe", "masked_fill-broadcast"])
def test_where_and_masked_fill_match_torch(tmp_path, expr, reference):
    compiled = _compile(tmp_path, _net("x: [3, 4];y: [1, 4]", f"output z = {expr}"))
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen), torch.randn(2, 1, 4, dtype=torch.float64,
                                                                                  generator=gen)
    _grad_check(compiled.instantiate().double(), [x, y], reference)


def test_a_padding_mask_from_token_ids(tmp_path):
    """BERT's padding mask: pad positions' scores become -1e9 before the softmax, so they get no weight."""
    compiled = _compile(tmp_path, "network T(pad: int = 0) {\n    input tokens: [1, 5] int64\n    input s: [5, 5]\n"
                                  "    output w = s -> masked_fill(tokens == pad, -1e9) -> softmax(dim=-1)\n}\n")
    tokens = torch.tensor([[[7, 3, 9, 0, 0]]])
    w = compiled.instantiate()(tokens, torch.randn(1, 5, 5))
    assert torch.all(w[..., 3:] == 0) and torch.allclose(w.sum(-1), torch.ones(1, 5))


@pytest.mark.parametrize("body, code, col, message", [
    ("output y = masked_fill(x, tokens, 0)", "type-mismatch", 16, "`masked_fill` needs a bool mask, got int64"),
    ("output y = masked_fill(x, m > 0, 0)", "shape-mismatch", 16, "`masked_fill`: the mask [4, 3] does not "
                                                                  "broadcast to the tensor [4, 5]"),
    ("output y = masked_fill(x, m1 > 0, 0)",
     "shape-mismatch", 16, "`masked_fill`: the mask [8, 5] does not broadcast to the tensor [4, 5]"),
    ("output y = where(x, x, 0)", "type-mismatch", 16, "`where` needs a bool condition, got float32"),
    ("output y = where(x > 0, x)", "bad-argument", 16, "`where` takes 3 arguments (condition, a, b), got 2"),
    ("output y = (x > 0) and x", "type-mismatch", 16, "`and` needs bool tensors, got float32"),
    ("output y = x > \"a\"", "type-mismatch", 16, "cannot compare a tensor with the string 'a'"),
    ("output y = sum(x, dim=0) > m", "shape-mismatch", 16, "`gt` needs tensors of equal rank, got [5] and "
                                                                     "[4, 3]"),
])
def test_mask_errors(tmp_path, body, code, col, message):
    err = _error(tmp_path, _net("x: [4, 5];m: [4, 3];m1: [8, 5];tokens: [4, 5] int64", body))
    assert (err.code, err.message, err.span.line, err.span.col) == (code, message, 6, col)


def test_a_bad_mask_is_a_cli_diagnostic(tmp_path):
    run = _cli(tmp_path, _net("tokens: [8] int64;x: [8]", "output y = masked_fill(x, tokens, 0)"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "net.dln:4:16: error[type-mismatch]: `masked_fill` needs a bool mask, got int64" in run.stderr


# ---- randomness ------------------------------------------------------------------------------------------------

VAE_STEP = ("h = x -> linear(8) -> tanh;mu = h -> linear(4);logvar = h -> linear(4)"
            ";output z = mu + randn_like(mu) * exp(logvar / 2);output m = mu;output lv = logvar")


@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
def test_randn_like_draws_from_torch_generator_in_train_and_eval(tmp_path, fuse):
    """Under one seed the reparameterised sample is mu + torch.randn_like(mu) * std, in eval mode as in training."""
    compiled = _compile(tmp_path, _net("x: [6]", VAE_STEP), fuse=fuse)
    model = compiled.instantiate()
    x = torch.randn(5, 6)
    for mode in (model.train, model.eval):
        mode()
        torch.manual_seed(7)
        z, mu, logvar = model(x)
        torch.manual_seed(7)
        eps = torch.randn_like(mu)
        torch.testing.assert_close(z, mu + eps * torch.exp(logvar / 2))
        assert not torch.equal(model(x)[0], z)  # a fresh sample on the next call
    if fuse:
        assert_kernels_ran(model)


def test_samples_have_the_right_statistics(tmp_path):
    compiled = _compile(tmp_path, _net("x: [200, 50]", "output n = randn_like(x);output u = x -> r: rand_like"))
    assert "self.r = Apply(torch.rand_like)" in compiled.source
    torch.manual_seed(0)
    n, u = compiled.instantiate().eval()(torch.zeros(10, 200, 50))
    assert n.shape == u.shape == (10, 200, 50)
    assert abs(n.mean().item()) < 0.01 and abs(n.std().item() - 1) < 0.01
    assert u.min().item() >= 0 and u.max().item() < 1 and abs(u.mean().item() - 0.5) < 0.01


def test_random_samples_need_float_tensors(tmp_path):
    err = _error(tmp_path, _net("t: [4] int64", "output y = randn_like(t)"))
    assert (err.code, err.message, err.span.line, err.span.col) == (
        "type-mismatch", "`randn_like` samples floats shaped like a float tensor, got int64", 3, 16)


@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
def test_abs_matches_torch(tmp_path, fuse):
    """`abs` (which existed before) against torch.abs, forward and backward, 0 included (gradient 0 there)."""
    compiled = _compile(tmp_path, _net("x: [7];r: [7]", "output y = (x + r) -> abs -> scale(0.5)"), fuse=fuse)
    x = torch.tensor([-3.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 3.0], dtype=torch.float64).repeat(2, 1)
    model = compiled.instantiate().double()
    _grad_check(model, [x, torch.zeros_like(x)], lambda x, r: torch.abs(x + r) * 0.5)
    if fuse:
        assert_kernels_ran(model, backward=True)
