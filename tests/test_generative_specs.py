"""Semantic tests of the generative reference specs, each against a twin written with torch.nn below.

- specs/vae.dln against the PyTorch examples' VAE (github.com/pytorch/examples, vae/main.py): the same module
  names, so state_dicts load strictly both ways; under one seed both draw the same ``torch.randn_like`` sample,
  so the outputs (reconstruction, mu, logvar) are equal in training and eval mode, plain and fused; the sample
  (z - mu) / std, read at fc3's input, is standard normal; the VAE loss (BCE + KL) gives equal gradients.
- specs/denoising_autoencoder.dln against a conv denoising autoencoder twin (Chollet's Keras design): equal
  outputs under one seed, the corruption's statistics, and at ``noise=0`` a deterministic module that draws
  nothing.

Each spec also goes through the CLI, with the diagnostics of bad parameters (exit 1, file:line:col, code).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import SPECS_DIR, assert_kernels_ran
from torch import nn

import dlc

VAE_SPEC = SPECS_DIR / "vae.dln"
DAE_SPEC = SPECS_DIR / "denoising_autoencoder.dln"
MODES = [{}, {"fuse": True}]
MODE_IDS = ["plain", "fused"]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlc", *args], capture_output=True, text=True, check=False)


def assert_same_gradients(a: nn.Module, b: nn.Module) -> None:
    grads = dict(b.named_parameters())
    for name, p in a.named_parameters():
        assert p.grad is not None and grads[name].grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-6, msg=name)


# ---- VAE ----------------------------------------------------------------------------------------------------


class VAETwin(nn.Module):
    """The PyTorch examples' VAE (vae/main.py): encode, reparameterise with ``torch.randn_like``, decode."""

    def __init__(self, hidden: int = 400, latent: int = 20):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The example's loss: reconstruction BCE summed over pixels and batch, plus the KL divergence to N(0, 1)."""
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def vae_pair(**options) -> tuple[nn.Module, VAETwin]:
    torch.manual_seed(0)
    model = dlc.load(VAE_SPEC, **options)
    twin = VAETwin()
    twin.load_state_dict(model.state_dict(), strict=True)
    return model, twin


def test_vae_has_the_examples_modules_and_parameters():
    model, twin = vae_pair()
    assert n_params(model) == n_params(twin) == 652_824
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in twin.state_dict().items()}
    model.load_state_dict(VAETwin().state_dict(), strict=True)  # and the other way round
    assert type(model).output_names == ("recon", "mu", "logvar")


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
def test_vae_equals_twin_under_one_seed_in_train_and_eval(options):
    """Both draw eps with torch.randn_like at the same point: equal outputs, in eval mode too (the spec samples
    always, as the example's reparameterize does)."""
    model, twin = vae_pair(**options)
    x = torch.rand(8, 1, 28, 28)
    for train in (True, False):
        model.train(train)
        twin.train(train)
        torch.manual_seed(11)
        got = model(x)
        torch.manual_seed(11)
        want = twin(x)
        assert [t.shape for t in got] == [(8, 784), (8, 20), (8, 20)]
        for g, w, what in zip(got, want, ("recon", "mu", "logvar"), strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=what)
        # a fresh draw on the next call changes the reconstruction, not the KL term's inputs
        again = model(x)
        assert not torch.equal(again[0], got[0])
        assert torch.equal(again[1], got[1]) and torch.equal(again[2], got[2])
    if options.get("fuse"):
        assert_kernels_ran(model)


def test_vae_sample_is_standard_normal_around_mu():
    """(z - mu) / std, with z read at fc3's input, has mean ~0 and std ~1 over 4096 x 20 draws, and is eps."""
    model, _ = vae_pair()
    model.eval()
    seen = []
    model.fc3.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    torch.manual_seed(3)
    x = torch.rand(4096, 1, 28, 28)
    with torch.no_grad():
        torch.manual_seed(5)
        _, mu, logvar = model(x)
    eps = (seen[0] - mu) / torch.exp(0.5 * logvar)
    assert eps.shape == (4096, 20)
    assert abs(eps.mean().item()) < 0.01  # the mean of 81,920 N(0, 1) draws: sd 0.0035
    assert abs(eps.std().item() - 1.0) < 0.01
    assert eps.mean(dim=0).abs().max().item() < 0.07  # every latent dimension (sd 0.016 each)
    torch.manual_seed(5)
    torch.testing.assert_close(eps, torch.randn(4096, 20), rtol=1e-4, atol=1e-4)  # the draw is torch's


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
def test_vae_training_step_matches_twin(options):
    """BCE + KL on the outputs: equal loss, equal gradients, and equal parameters after an SGD step."""
    model, twin = vae_pair(**options)
    model.train()
    twin.train()
    x = torch.rand(16, 1, 28, 28)
    losses = []
    for m in (model, twin):
        torch.manual_seed(21)
        recon, mu, logvar = m(x)
        loss = vae_loss(recon, x, mu, logvar)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-3)
    assert_same_gradients(model, twin)
    for m in (model, twin):
        torch.optim.SGD(m.parameters(), lr=1e-3).step()
    twin_params = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, twin_params[name], rtol=1e-5, atol=1e-6, msg=name)


def test_vae_cli_and_diagnostics(tmp_path):
    ok = cli("compile", str(VAE_SPEC), "-o", str(tmp_path / "vae.py"))
    assert ok.returncode == 0, ok.stderr
    assert "z = torch.randn_like(std)" in (tmp_path / "vae.py").read_text(encoding="utf-8")
    bad = cli("check", str(VAE_SPEC), "--set", "latent=0")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "vae.dln:17:28: error[bad-argument]: `linear`: `units` must be a positive integer" in bad.stderr
    typo = cli("check", str(VAE_SPEC), "--set", "latnet=8")
    assert typo.returncode == 1 and "Traceback" not in typo.stderr
    assert "vae.dln:14:9: error[unknown-param]: network `VAE` has no parameter `latnet`" in typo.stderr
    assert "did you mean `latent`?" in typo.stderr


# ---- denoising autoencoder ----------------------------------------------------------------------------------


class DenoisingTwin(nn.Module):
    """Gaussian corruption clipped to [0, 1], conv encoder (relu, 2x2 max pool) and decoder (relu, 2x upsample)."""

    def __init__(self, noise: float = 0.1, c: int = 32):
        super().__init__()
        self.noise = noise
        self.enc1 = nn.Conv2d(1, c, 3, padding=1)
        self.enc2 = nn.Conv2d(c, c, 3, padding=1)
        self.dec1 = nn.Conv2d(c, c, 3, padding=1)
        self.dec2 = nn.Conv2d(c, c, 3, padding=1)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise:
            x = torch.clamp(x + self.noise * torch.randn_like(x), 0.0, 1.0)
        h = F.max_pool2d(F.relu(self.enc1(x)), 2)
        h = F.max_pool2d(F.relu(self.enc2(h)), 2)
        h = F.interpolate(F.relu(self.dec1(h)), scale_factor=2)
        h = F.interpolate(F.relu(self.dec2(h)), scale_factor=2)
        return torch.sigmoid(self.out(h))


def dae_pair(noise: float | None = None, **options) -> tuple[nn.Module, DenoisingTwin]:
    torch.manual_seed(0)
    params = {} if noise is None else {"noise": noise}
    model = dlc.load(DAE_SPEC, **params, **options)
    twin = DenoisingTwin(**params)
    twin.load_state_dict(model.state_dict(), strict=True)
    return model, twin


def test_denoising_parameters_match_twin():
    model, twin = dae_pair()
    assert n_params(model) == n_params(twin) == 28_353
    model.load_state_dict(DenoisingTwin().state_dict(), strict=True)


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("noise", [None, 0.5], ids=["default", "0.5"])
def test_denoising_equals_twin_under_one_seed(noise, options):
    model, twin = dae_pair(noise, **options)
    x = torch.rand(4, 1, 28, 28)
    for train in (True, False):
        model.train(train)
        twin.train(train)
        torch.manual_seed(4)
        got = model(x)
        torch.manual_seed(4)
        want = twin(x)
        assert got.shape == (4, 1, 28, 28)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert not torch.equal(model(x), got)  # the corruption draws afresh, in eval mode too
    if options.get("fuse"):
        assert_kernels_ran(model)


def test_denoising_corruption_is_gaussian_with_the_noise_level():
    """At a constant 0.5 input (clipping 5 sd away) the encoder sees 0.5 + 0.1 * eps, eps ~ N(0, 1)."""
    model, _ = dae_pair()
    seen = []
    model.enc1.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.full((64, 1, 28, 28), 0.5))
    eps = (seen[0] - 0.5) / 0.1
    assert abs(eps.mean().item()) < 0.01 and abs(eps.std().item() - 1.0) < 0.01


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
def test_denoising_without_noise_is_deterministic_and_draws_nothing(options):
    model, twin = dae_pair(0.0, **options)
    model.eval()
    twin.eval()
    x = torch.rand(4, 1, 28, 28)
    state = torch.get_rng_state()
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from the generator
    assert torch.equal(first, second)
    torch.testing.assert_close(first, twin(x), rtol=1e-5, atol=1e-6)


def test_denoising_training_step_matches_twin():
    """BCE of the reconstruction of a corrupted input against the clean one: equal gradients."""
    model, twin = dae_pair()
    x = torch.rand(4, 1, 28, 28)
    for m in (model, twin):
        m.train()
        torch.manual_seed(8)
        F.binary_cross_entropy(m(x), x).backward()
    assert_same_gradients(model, twin)


def test_denoising_cli_and_diagnostics(tmp_path):
    ok = cli("compile", str(DAE_SPEC), "--set", "noise=0", "-o", str(tmp_path / "dae.py"))
    assert ok.returncode == 0, ok.stderr
    source = (tmp_path / "dae.py").read_text(encoding="utf-8")
    assert "randn_like" not in source and "code = self.enc1(x)" in source
    bad = cli("check", str(DAE_SPEC), "--set", "noise=loud")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "denoising_autoencoder.dln:14:30: error[type-mismatch]: parameter `noise` is float" in bad.stderr
    narrow = cli("check", str(DAE_SPEC), "--set", "c=0")
    assert narrow.returncode == 1 and "Traceback" not in narrow.stderr
    want = "denoising_autoencoder.dln:18:25: error[bad-argument]: `conv2d`: `channels` must be a positive integer"
    assert want in narrow.stderr
