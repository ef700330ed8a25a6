"""The fused recurrent runtime (backends/triton/runtime/recurrent.py) against nn.LSTM / nn.GRU.

The Triton kernels run under the interpreter on CPU tensors. Every comparison uses the same module
(the same parameters) for the reference. Gradients are checked in float64, where the kernels compute in
float64 too: outputs, states and gradients agree to 1e-9 (relative and absolute). float32 forward
agrees to 1e-5; bfloat16 (gate math in float32 inside the kernels) to a few percent of a float32 run.
Sizes are ragged (B=3, T=5, F=7, H=6) so every kernel block is masked. Each fused run also counts its step
kernel launches (the runtime's ``LAUNCHES``): one per layer, direction and time step, forward and backward, so a
run that fell back to the module itself fails even though its results would agree.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dlc.backends.triton.runtime import embedded  # noqa: E402
from dlc.backends.triton.runtime import recurrent as R  # noqa: E402

B, T, FEAT, H = 3, 5, 7, 6
TOL64 = {"atol": 1e-9, "rtol": 1e-9}
MERGES = ("concat", "sum", "mul", "ave")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors are tiny: one torch thread is as fast, and does not spin when other work shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _module(cls, *, layers=1, bi=False, bias=True, dropout=0.0, dtype=torch.float64, feat=FEAT, hidden=H, seed=0):
    torch.manual_seed(seed)
    return cls(feat, hidden, num_layers=layers, bias=bias, batch_first=True, bidirectional=bi,
               dropout=dropout).to(dtype)


def _inputs(module, *, state, dtype=torch.float64, batch=B, steps=T, seed=1):
    """x [B, T, F] and hx (None, h0, or (h0, c0)) with grads, plus the leaf tensors."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, module.input_size, generator=gen, dtype=dtype).requires_grad_()
    if not state:
        return x, None, [x]
    rows = module.num_layers * (2 if module.bidirectional else 1)
    h0 = torch.randn(rows, batch, module.hidden_size, generator=gen, dtype=dtype).requires_grad_()
    if isinstance(module, nn.LSTM):
        c0 = torch.randn(rows, batch, module.hidden_size, generator=gen, dtype=dtype).requires_grad_()
        return x, (h0, c0), [x, h0, c0]
    return x, h0, [x, h0]


def _keras(y, module, merge, return_sequences):
    """The reference output shaping, written out on the module's own output."""
    h = module.hidden_size
    if not module.bidirectional or merge is None:
        return y if return_sequences else y[:, -1]
    fwd, bwd = (y[..., :h], y[..., h:]) if return_sequences else (y[:, -1, :h], y[:, 0, h:])
    return {"concat": lambda: torch.cat([fwd, bwd], -1), "sum": lambda: fwd + bwd, "mul": lambda: fwd * bwd,
            "ave": lambda: (fwd + bwd) / 2}[merge]()


def _states(state):
    return list(state) if isinstance(state, tuple) else [state]


def _loss(y, state, seed=2):
    """A loss touching every output element and every state element with distinct weights."""
    gen = torch.Generator().manual_seed(seed)
    total = (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum()
    for s in _states(state):
        total = total + (s * torch.randn(s.shape, generator=gen, dtype=s.dtype)).sum()
    return total


def _steps(module, steps: int, backward: bool) -> dict[str, int]:
    """The step-kernel launches of one fused run: one per layer, direction and time step (and as many backward)."""
    cell = "lstm" if isinstance(module, nn.LSTM) else "gru"
    n = module.num_layers * (2 if module.bidirectional else 1) * steps
    return {f"_rnn_{cell}_fwd_kernel": n, f"_rnn_{cell}_bwd_kernel": n} if backward else {f"_rnn_{cell}_fwd_kernel": n}


def _check(module, *, state, merge=None, return_sequences=True, tol=TOL64, **sizes):
    """Forward, state and gradients (x, h0/c0, every parameter) of recurrent_forward against the module, and the
    step kernels launched for every layer, direction and time step."""
    x, hx, leaves = _inputs(module, state=state, **sizes)
    assert R.use_triton(x), "the Triton interpreter is off: the fused path would not run"
    R.LAUNCHES.clear()
    y, st = R.recurrent_forward(module, x, hx, merge, return_sequences)
    assert R.LAUNCHES == _steps(module, x.shape[1], backward=False)
    y_ref, st_ref = module(x, hx)
    y_ref = _keras(y_ref, module, merge, return_sequences)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, **tol)
    assert len(_states(st)) == len(_states(st_ref))
    for a, b in zip(_states(st), _states(st_ref), strict=True):
        torch.testing.assert_close(a, b, **tol)
    names = [n for n, _ in module.named_parameters()]
    wrt = leaves + [p for _, p in module.named_parameters()]
    grads = torch.autograd.grad(_loss(y, st), wrt)
    grads_ref = torch.autograd.grad(_loss(y_ref, st_ref), wrt)
    assert R.LAUNCHES == _steps(module, x.shape[1], backward=True)
    for name, g, g_ref in zip(["x", "h0", "c0"][:len(leaves)] + names, grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, **tol, msg=lambda m, name=name: f"grad of {name}: {m}")
    return y


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bi", [False, True])
@pytest.mark.parametrize("state", [False, True])
def test_matches_module_forward_and_grads(cls, layers, bi, state):
    y = _check(_module(cls, layers=layers, bi=bi), state=state)
    assert y.shape == (B, T, (2 if bi else 1) * H)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("merge", MERGES)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_merges(cls, merge, return_sequences):
    layers = 2 if merge in ("sum", "mul") else 1  # the fused merge sits on the last of several layers too
    y = _check(_module(cls, layers=layers, bi=True), state=True, merge=merge, return_sequences=return_sequences)
    width = 2 * H if merge == "concat" else H
    assert y.shape == ((B, T, width) if return_sequences else (B, width))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bi", [False, True])
def test_last_step_without_merge(cls, bi):
    """No merge: the module's output at the last time step (both directions side by side when bidirectional)."""
    y = _check(_module(cls, layers=2, bi=bi), state=True, return_sequences=False)
    assert y.shape == (B, (2 if bi else 1) * H)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_one_row_one_unit_one_step(cls):
    """Blocks of size 1 (B = H = 1) and a single time step."""
    _check(_module(cls, bi=True, hidden=1), state=True, merge="sum", batch=1, steps=1)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_without_bias(cls):
    _check(_module(cls, layers=2, bi=True, bias=False), state=True, merge="ave")


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_several_programs_per_step(cls, monkeypatch):
    """Blocks smaller than the batch and the hidden size: a 3 x 3 grid of programs, ragged at both ends."""
    monkeypatch.setattr(R, "_RNN_BLOCK_B", 2)
    monkeypatch.setattr(R, "_RNN_BLOCK_H", 4)
    assert R._rnn_grid(5, 10) == ((3, 3), 2, 4)
    _check(_module(cls, bi=True, hidden=10), state=True, merge="mul", batch=5)


def test_fused_merge_is_written_by_the_last_layer(monkeypatch):
    """With return_sequences a sum/mul/ave merge is the last layer's output ([B, T, H]), not a torch op after it."""
    calls = []
    apply = R._RnnLayerFn.apply

    def spy(cell, merge, *args):
        out = apply(cell, merge, *args)
        calls.append((cell, merge, tuple(out[0].shape)))
        return out

    monkeypatch.setattr(R._RnnLayerFn, "apply", spy)
    module = _module(nn.GRU, layers=2, bi=True)
    y = _check(module, state=False, merge="ave")
    assert calls[:2] == [("gru", R._RNN_OWN, (B, T, 2 * H)), ("gru", R._RNN_AVE, (B, T, H))]
    assert y.shape == (B, T, H)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bi", [False, True])
def test_float32_forward(cls, bi):
    module = _module(cls, layers=2, bi=bi, dtype=torch.float32)
    x, hx, _ = _inputs(module, state=True, dtype=torch.float32)
    assert R.use_triton(x)
    R.LAUNCHES.clear()
    with torch.no_grad():
        y, st = R.recurrent_forward(module, x, hx, "sum" if bi else None)
        y_ref, st_ref = module(x, hx)
    assert R.LAUNCHES == _steps(module, T, backward=False)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, _keras(y_ref, module, "sum" if bi else None, True), atol=1e-5, rtol=1e-5)
    for a, b in zip(_states(st), _states(st_ref), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_bfloat16_forward_and_grads(cls):
    """bfloat16 in and out; compared with the same parameters run in float32."""
    module = _module(cls, layers=2, bi=True, dtype=torch.bfloat16)
    ref = copy.deepcopy(module).float()
    x, _, _ = _inputs(module, state=False, dtype=torch.bfloat16)
    x_ref = x.detach().float().requires_grad_()
    assert R.use_triton(x)
    R.LAUNCHES.clear()
    y, st = R.recurrent_forward(module, x, None, "concat")
    y_ref, st_ref = ref(x_ref)
    assert y.dtype == torch.bfloat16 and all(s.dtype == torch.bfloat16 for s in _states(st))

    def close(a, b, what):
        err, scale = (a.float() - b).abs().max().item(), max(1.0, b.abs().max().item())
        assert err <= 0.03 * scale, f"{what}: error {err} at scale {scale}"

    close(y, y_ref, "output")
    for a, b in zip(_states(st), _states(st_ref), strict=True):
        close(a, b, "state")
    _loss(y.float(), ()).backward()
    _loss(y_ref, ()).backward()
    assert R.LAUNCHES == _steps(module, T, backward=True)
    close(x.grad, x_ref.grad, "grad of x")
    for (name, p), p_ref in zip(module.named_parameters(), ref.parameters(), strict=True):
        assert p.grad.dtype == torch.bfloat16
        close(p.grad, p_ref.grad, f"grad of {name}")


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_dropout_between_layers(cls):
    """Training mode drops the inter-layer input as the module does: with p=1 both give layer 2 zeros; in eval
    mode dropout is off in both."""
    module = _module(cls, layers=2, bi=True, dropout=1.0)
    module.train()
    y = _check(module, state=True)
    assert y.abs().max() > 0
    module = _module(cls, layers=2, dropout=0.5)
    module.eval()
    _check(module, state=False)


@pytest.mark.parametrize("merge", [None, *MERGES])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_torch_path_when_triton_is_off(merge, return_sequences, monkeypatch):
    """Without Triton the module itself runs: bit-identical results, and no fused layer is built."""
    monkeypatch.setattr(R, "use_triton", lambda *tensors: False)

    def refuse(*args):
        raise AssertionError("the fused path ran")

    monkeypatch.setattr(R._RnnLayerFn, "apply", refuse)
    R.LAUNCHES.clear()
    for cls in (nn.LSTM, nn.GRU):
        module = _module(cls, layers=2, bi=True, dtype=torch.float32)
        x, hx, _ = _inputs(module, state=True, dtype=torch.float32)
        y, st = R.recurrent_forward(module, x, hx, merge, return_sequences)
        y_ref, st_ref = module(x, hx)
        assert torch.equal(y, _keras(y_ref, module, merge, return_sequences))
        assert all(torch.equal(a, b) for a, b in zip(_states(st), _states(st_ref), strict=True))
    assert R.LAUNCHES == {}


def test_rnn_module_runs_unfused():
    """nn.RNN has no fused kernels: recurrent_forward still returns the module's result, Keras-shaped."""
    torch.manual_seed(0)
    module = nn.RNN(FEAT, H, batch_first=True, bidirectional=True).double()
    x = torch.randn(B, T, FEAT, dtype=torch.float64)
    R.LAUNCHES.clear()
    y, st = R.recurrent_forward(module, x, None, "sum", False)
    assert R.LAUNCHES == {}
    y_ref, st_ref = module(x)
    torch.testing.assert_close(y, y_ref[:, -1, :H] + y_ref[:, 0, H:], **TOL64)
    torch.testing.assert_close(st, st_ref, **TOL64)


def test_bad_arguments():
    module = _module(nn.LSTM)
    x = torch.randn(B, T, FEAT, dtype=torch.float64)
    with pytest.raises(ValueError, match="merge"):
        R.recurrent_forward(module, x, merge="max")
    with pytest.raises(ValueError, match="batch_first"):
        R.recurrent_forward(nn.LSTM(FEAT, H).double(), x)


def test_embedded_part_runs_on_its_own():
    """The embedded text, after common's, defines only prefixed names and computes the same thing."""
    import torch.nn.functional as F

    from dlc.backends.torch.runtime.recurrent import merge_directions

    # merge_directions is a helper generated modules embed beside this part (see test_golden)
    namespace = {"os": os, "torch": torch, "nn": nn, "F": F, "merge_directions": merge_directions}
    exec(compile(embedded("common"), "<common>", "exec"), namespace)
    before = set(namespace)
    exec(compile(embedded("recurrent"), "<recurrent>", "exec"), namespace)
    defined = set(namespace) - before
    assert "recurrent_forward" in defined
    assert all(n == "recurrent_forward" or n.lower().startswith(("_rnn_", "_rnnlayer")) for n in defined), defined
    module = _module(nn.LSTM, bi=True)
    x = torch.randn(B, T, FEAT, dtype=torch.float64)
    y, (h, c) = namespace["recurrent_forward"](module, x, None, "mul")
    assert namespace["LAUNCHES"] == _steps(module, T, backward=False)  # its own count, not the package's
    y_ref, (h_ref, c_ref) = module(x)
    torch.testing.assert_close(y, y_ref[..., :H] * y_ref[..., H:], **TOL64)
    torch.testing.assert_close(c, c_ref, **TOL64)
