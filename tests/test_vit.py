"""specs/vit_b_16.dln against torchvision's Vision Transformer.

The spec mirrors torchvision.models.vit_b_16 module for module (``conv_proj``, ``class_token``,
``encoder.pos_embedding``, ``encoder.layers.encoder_layer_{i}``, ``encoder.ln``, ``heads.head``), so torchvision's
state_dict loads with ``strict=True`` and every output difference is a difference in the computation. Both models
call the same PyTorch functions in the same order (even the dropout draws), so outputs agree to the last bit on
the CPU; the tolerances (1e-5 in float32, 1e-9 in float64) only leave room for a backend that picks other kernels
for the same call (``nn.MultiheadAttention``'s fast path, a BLAS with another blocking).

The full model at 224x224 (86.6M parameters) takes several seconds per forward on a CPU, so its checks are slow;
the structure checks build both models on the meta device (no memory, no initialisation), and a small
configuration (32x32 images, hidden 32) checks outputs and gradients against
``torchvision.models.VisionTransformer`` built with the same arguments.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dlc
from dlc.compiler.passes import total_params

torchvision = pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parent.parent
VIT = ROOT / "specs" / "vit_b_16.dln"
ATOL = 1e-5
ATOL64 = 1e-9
# A small configuration in torchvision's argument names (12 layers, the default of the spec's `num_layers`).
SMALL = {"image_size": 32, "patch_size": 8, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64, "num_classes": 10}


def torchvision_vit(**config) -> torch.nn.Module:
    """torchvision's VisionTransformer with 12 layers and ``config``."""
    return torchvision.models.VisionTransformer(num_layers=12, **config)


def randomise_zero_init(tv: torch.nn.Module) -> None:
    """torchvision starts the class token and the classifier at zero: give them values, so that comparing
    logits compares the whole network (with a zero head every logit would be 0 in both)."""
    with torch.no_grad():
        tv.class_token.normal_(std=0.5)
        tv.heads.head.weight.normal_(std=0.5)
        tv.heads.head.bias.normal_(std=0.5)


def pair(**config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(spec model, torchvision model) with torchvision's weights loaded strictly into the spec's."""
    tv = torchvision_vit(**config)
    randomise_zero_init(tv)
    m = dlc.load(VIT, **config)
    m.load_state_dict(tv.state_dict(), strict=True)
    return m, tv


def assert_close(got: torch.Tensor, want: torch.Tensor, atol: float, what: str) -> None:
    assert got.shape == want.shape, f"{what}: {tuple(got.shape)} != {tuple(want.shape)}"
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() <= atol * scale, what
    assert want.abs().max().item() > 100 * atol, f"{what}: the reference is ~0, the comparison would be trivial"


def test_parameter_count_is_torchvisions():
    assert total_params(dlc.compile(VIT).graph) == 86_567_656


def test_state_dict_names_and_shapes_are_torchvisions():
    """The same keys in the same order with the same shapes, and a strict load (both built on the meta device)."""
    with torch.device("meta"):
        tv = torchvision.models.vit_b_16(weights=None)
        m = dlc.load(VIT)
    ours, theirs = m.state_dict(), tv.state_dict()
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert tuple(ours["class_token"].shape) == (1, 1, 768)
    assert tuple(ours["encoder.pos_embedding"].shape) == (1, 197, 768)
    assert sum(p.numel() for p in m.parameters()) == 86_567_656
    m.load_state_dict(theirs, strict=True)


def test_modules_are_torchvisions():
    """Every torch.nn module of torchvision's model has a twin of the same class under the same name (its MLPBlock,
    a torchvision subclass of nn.Sequential, is an nn.Sequential here)."""
    with torch.device("meta"):
        tv = torchvision_vit(**SMALL)
        m = dlc.load(VIT, **SMALL)
    ours = dict(m.named_modules())
    for name, mod in tv.named_modules():
        if name and type(mod).__module__.startswith("torch.nn.modules"):
            assert type(ours[name]) is type(mod), f"{name}: {type(ours[name]).__name__} vs {type(mod).__name__}"
    assert isinstance(ours["encoder.layers.encoder_layer_11.mlp"], torch.nn.Sequential)
    assert ours["encoder.ln"].eps == 1e-6 and ours["encoder.layers.encoder_layer_0.ln_1"].eps == 1e-6


def test_generated_forward_takes_the_class_token_by_indexing():
    source = dlc.compile(VIT).source
    assert "self.class_token = nn.Parameter(torch.zeros(1, 1, 768))" in source
    assert "class_token = self.class_token.expand(x.shape[0], -1, -1)" in source
    assert "z = torch.cat([class_token, patches], dim=1)" in source
    assert "logits = z[:, 0]" in source
    assert "self.self_attention(h, h, h, need_weights=False)" in source
    assert '("encoder_layer_11", EncoderBlock())' in source


def test_initialisation_is_torchvisions_where_the_spec_sets_it():
    """class_token zeros, pos_embedding normal(std=0.02), conv_proj a truncated normal with std sqrt(1 / fan_in)
    and a zero bias, the MLPs xavier_uniform with normal(std=1e-6) biases and a zero head, as torchvision's
    VisionTransformer.__init__ does."""
    source = dlc.compile(VIT).source
    std = float(re.search(r"nn\.init\.trunc_normal_\(self\.conv_proj\.weight, std=([\d.e-]+)\)", source).group(1))
    assert std == pytest.approx(math.sqrt(1 / (3 * 16 * 16)), rel=1e-12)
    assert "nn.init.zeros_(self.conv_proj.bias)" in source
    torch.manual_seed(0)
    m = dlc.load(VIT, **SMALL)
    assert not m.class_token.detach().any() and not m.conv_proj.bias.detach().any()
    assert m.encoder.pos_embedding.std().item() == pytest.approx(0.02, rel=0.15)   # 17 * 32 samples
    assert m.conv_proj.weight.std().item() == pytest.approx(math.sqrt(1 / (3 * 8 * 8)), rel=0.15)
    assert "nn.init.xavier_uniform_(self.mlp[0].weight)" in source
    assert "nn.init.zeros_(self.heads.head.weight)" in source
    assert not m.heads.head.weight.detach().any() and not m.heads.head.bias.detach().any()
    mlp = m.encoder.layers.encoder_layer_0.mlp
    assert mlp[0].bias.abs().max().item() < 1e-4 and mlp[3].bias.abs().max().item() < 1e-4
    bound = math.sqrt(6 / (32 + 64))  # xavier_uniform of a [64, 32] weight
    assert mlp[0].weight.abs().max().item() <= bound and mlp[0].weight.abs().max().item() > 0.9 * bound


@pytest.mark.parametrize("layers", [1, 3])
def test_num_layers_names_the_layers_as_torchvision_and_matches_it(layers):
    tv = torchvision.models.VisionTransformer(num_layers=layers, **SMALL)
    randomise_zero_init(tv)
    m = dlc.load(VIT, num_layers=layers, **SMALL)
    assert [n for n, _ in m.encoder.layers.named_children()] == [f"encoder_layer_{i}" for i in range(layers)]
    m.load_state_dict(tv.state_dict(), strict=True)
    m.eval()
    tv.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(m(x), tv(x), 1e-5, f"logits with {layers} layers")


@pytest.mark.parametrize("patch_size", [16, 8])
def test_small_config_eval_matches_torchvision(patch_size):
    torch.manual_seed(0)
    m, tv = pair(**{**SMALL, "patch_size": patch_size})
    m.eval(), tv.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(m(x), tv(x), ATOL, f"logits, patch {patch_size}")


def test_small_config_train_mode_outputs_and_gradients_match_torchvision():
    """Training mode without dropout, in float64: equal logits and equal gradients for every parameter."""
    torch.manual_seed(1)
    m, tv = pair(**SMALL)
    m.double().train(), tv.double().train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    got, want = m(x), tv(x)
    assert_close(got, want, ATOL64, "logits in training")
    (got ** 2).mean().backward()
    (want ** 2).mean().backward()
    theirs = dict(tv.named_parameters())
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().max().item() > 0, name
        assert_close(p.grad, theirs[name].grad, ATOL64, f"gradient of {name}")


def test_small_config_dropout_draws_as_torchvision():
    """With dropout and attention dropout on, the spec's dropouts run in torchvision's order, so one seed gives
    both models the same masks and the same training-mode logits."""
    config = {**SMALL, "dropout": 0.2, "attention_dropout": 0.1}
    torch.manual_seed(2)
    m, tv = pair(**config)
    m.train(), tv.train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    want = tv(x)
    torch.manual_seed(3)
    got = m(x)
    assert_close(got, want, ATOL, "logits with dropout")
    m.eval()
    with torch.no_grad():
        assert not torch.allclose(m(x), got), "dropout changed nothing in training"


def run_dlc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlc", *args], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def position(text: str, offset: int = 0) -> str:
    """``line:col`` (1-based) of the first occurrence of ``text`` in the spec, ``offset`` columns further."""
    before = VIT.read_text().split(text)[0]
    return f"{before.count(chr(10)) + 1}:{len(before.split(chr(10))[-1]) + 1 + offset}"


def test_heads_not_dividing_hidden_is_a_diagnostic_at_the_attention():
    r = run_dlc("check", str(VIT), "--set", "num_heads=5")
    assert r.returncode == 1, r.stderr
    at = position("heads=heads", offset=len("heads="))   # the caret is under the value
    assert (f"vit_b_16.dln:{at}: error[bad-argument]: `attention`: heads=5 must divide the query features (768)"
            in r.stderr), r.stderr
    assert "= in: VisionTransformer > encoder (Encoder) > encoder.layers > encoder.layers.encoder_layer_0 " \
           "(EncoderBlock) > self_attention" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_patch_larger_than_image_is_a_diagnostic_at_the_patch_convolution():
    r = run_dlc("check", str(VIT), "--set", "image_size=8")
    assert r.returncode == 1, r.stderr
    assert (f"vit_b_16.dln:{position('conv2d(hidden_dim')}: error[shape-mismatch]: the window (kernel 16, stride 16, "
            "padding 0) does not fit an input of size 8") in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def vit_b_16_pair():
    torch.manual_seed(0)
    tv = torchvision.models.vit_b_16(weights=None)
    randomise_zero_init(tv)
    m = dlc.load(VIT)
    m.load_state_dict(tv.state_dict(), strict=True)
    return m, tv


@pytest.mark.slow
def test_vit_b_16_eval_matches_torchvision_at_224(vit_b_16_pair):
    m, tv = vit_b_16_pair
    m.eval(), tv.eval()
    assert sum(p.numel() for p in m.parameters()) == 86_567_656
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, want = m(x), tv(x)
    assert got.shape == (2, 1000)
    # 1e-4: twelve layers of 768-wide float32 sums; on the CPU the two agree exactly
    assert_close(got, want, 1e-4, "vit_b_16 logits")
