"""specs/wavenet.dln against a WaveNet written with torch.nn here, with the same module names: the spec's
state_dict loads into it strictly, and the two agree on outputs at two lengths (T is symbolic), on gradients, and
on causality (output t never depends on inputs after t). Also its parameter count at the defaults and the
diagnostic for a bad stack count through the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import SPECS_DIR
from torch import nn

import dlc

SPEC = SPECS_DIR / "wavenet.dln"
DILATIONS = [2 ** i for i in range(10)]  # one stack: 1, 2, 4, ..., 512
SMALL = {"channels": 8, "head_channels": 16, "stacks": 2}


class TwinLayer(nn.Module):
    """A gated residual layer: causal dilated conv to 2C, tanh(filter) * sigmoid(gate), residual and skip 1x1."""

    def __init__(self, c: int, dilation: int, k: int):
        super().__init__()
        self.left = dilation * (k - 1)
        self.dilated = nn.Conv1d(c, 2 * c, k, dilation=dilation)
        self.residual = nn.Conv1d(c, c, 1)
        self.skip_out = nn.Conv1d(c, c, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filt, gate = self.dilated(F.pad(x, (self.left, 0))).chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        return x + self.residual(z), skip + self.skip_out(z)


class TwinStack(nn.Module):
    def __init__(self, c: int, k: int):
        super().__init__()
        for i, d in enumerate(DILATIONS):
            self.add_module(f"residual_layer_{i}", TwinLayer(c, d, k))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.children():
            x, skip = layer(x, skip)
        return x, skip


class TwinWaveNet(nn.Module):
    def __init__(self, quantization: int = 256, channels: int = 32, head_channels: int = 256, stacks: int = 3,
                 k: int = 2):
        super().__init__()
        self.k = k
        self.causal = nn.Conv1d(quantization, channels, k)
        for i in range(stacks):
            self.add_module(f"dilation_stack_{i}", TwinStack(channels, k))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, head_channels, 1), nn.ReLU(),
                                  nn.Conv1d(head_channels, quantization, 1))
        self.stacks = stacks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.causal(F.pad(x, (self.k - 1, 0)))
        skip = torch.zeros_like(h)
        for i in range(self.stacks):
            h, skip = self.get_submodule(f"dilation_stack_{i}")(h, skip)
        return torch.log_softmax(self.head(skip), dim=1)


def one_hot(batch: int, length: int) -> torch.Tensor:
    """A batch of one-hot mu-law sequences [B, 256, T], as WaveNet reads its input."""
    ids = torch.randint(0, 256, (batch, length))
    return F.one_hot(ids, 256).permute(0, 2, 1).double()


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = dlc.load(SPEC, **SMALL).double()
    twin = TwinWaveNet(**SMALL).double()
    twin.load_state_dict(model.state_dict(), strict=True)
    return model, twin


@pytest.mark.parametrize("length", [9, 40])
def test_outputs_match_the_torch_twin_at_two_lengths(pair, length):
    model, twin = pair
    x = one_hot(3, length)
    got = model(x)
    assert got.shape == (3, 256, length)
    torch.testing.assert_close(got, twin(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.exp().sum(dim=1), torch.ones(3, length, dtype=torch.float64))


def test_gradients_match_the_torch_twin(pair):
    model, twin = pair
    x = one_hot(2, 17)
    targets = torch.randint(0, 256, (2, 17))
    for m in (model, twin):
        m.zero_grad()
        F.nll_loss(m(x), targets).backward()
    grads = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-10, atol=1e-12, msg=name)


def test_outputs_never_depend_on_later_inputs(pair):
    model, _ = pair
    x = one_hot(2, 30)
    t0 = 12
    later = x.clone()
    later[..., t0 + 1:] = one_hot(2, 30 - t0 - 1)
    assert not torch.equal(later, x)
    a, b = model(x), model(later)
    torch.testing.assert_close(a[..., :t0 + 1], b[..., :t0 + 1], rtol=0, atol=0)
    assert not torch.allclose(a[..., t0 + 1:], b[..., t0 + 1:])


def test_parameter_count_at_the_defaults():
    compiled = dlc.compile(SPEC)
    want = sum(p.numel() for p in TwinWaveNet().parameters())
    assert want == 278_816
    assert "Parameters: 278,816" in compiled.source
    assert list(compiled.instantiate().state_dict()) == list(TwinWaveNet().state_dict())


def test_a_stack_count_of_zero_is_a_diagnostic(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dlc", "compile", str(SPEC), "--set", "stacks=0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "wavenet.dln:38:68: error[bad-repeat]: repeat count must be a positive integer, got the integer 0" \
        in run.stderr
