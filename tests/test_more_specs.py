"""Semantic tests of two more reference specs: dense connectivity and U-Net skips.

- specs/densenet121.dln against torchvision.models.densenet121 (dense layers chained by a labelled
  repeat, each returning ``concat(x, new_features)``);
- specs/unet.dln against a hand-written ``torch.nn`` U-Net below (encoder features concatenated into
  the decoder), plus the compile-time diagnostic for an input size the skips cannot match.

Weights are copied from one model to the other, so any difference is a difference in the
computation. float32 forward passes must agree to max abs diff <= 1e-4 (DenseNet-121: 120 layers
of float32 rounding; in practice ~1e-6) and 1e-5 (U-Net). Tests taking more than ~5 s are ``slow``.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlc
from dlc.compiler.passes import total_params
from dlc.diagnostics import DlcError

try:
    import reference_models as ref
except ImportError:  # pytest run with --import-mode=importlib: tests/ is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference_models as ref

SPECS = Path(__file__).resolve().parent.parent / "specs"
DENSENET = SPECS / "densenet121.dln"
UNET = SPECS / "unet.dln"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


n_params = ref.n_params


assert_close = ref.assert_close
randomize_batchnorm = ref.randomize_batchnorm


# ---- DenseNet-121 vs torchvision ----------------------------------------------------------------

_DENSELAYER = re.compile(r"\.denselayer(\d+)(?=\.|$)")


def dlc_name(name: str) -> str:
    """torchvision's ``features.denseblockN.denselayerK...`` is dlc's ``features.denseblockN.{K-1}...``."""
    return _DENSELAYER.sub(lambda m: f".{int(m.group(1)) - 1}", name)


def torchvision_to_dlc(state: dict) -> dict:
    return {dlc_name(k): v for k, v in state.items()}


@pytest.fixture(scope="module")
def densenet_pair():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    tv = torchvision.models.densenet121(weights=None)
    randomize_batchnorm(tv)
    m = dlc.load(DENSENET)
    m.load_state_dict(torchvision_to_dlc(tv.state_dict()), strict=True)
    return m, tv


def test_densenet121_parameter_count(densenet_pair):
    m, tv = densenet_pair
    assert n_params(tv) == 7_978_856
    assert n_params(m) == n_params(tv)
    assert total_params(dlc.compile(DENSENET).graph) == n_params(tv)


def test_densenet121_names_differ_only_in_layer_numbering(densenet_pair):
    """Every torchvision module (ReLUs and pools included) has a dlc twin of the same class."""
    m, tv = densenet_pair
    ours = {name: type(mod) for name, mod in m.named_modules()}
    for name, mod in tv.named_modules():
        if not name:
            continue
        key = dlc_name(name)
        assert key in ours, f"torchvision module {name} has no twin {key}"
        if type(mod).__module__.startswith("torch.nn"):    # not _DenseBlock, _DenseLayer, _Transition
            assert ours[key] is type(mod), f"{key}: {ours[key].__name__} vs torchvision {type(mod).__name__}"


@pytest.mark.slow
def test_densenet121_eval_matches_torchvision(densenet_pair):
    """At 224x224 (about 5 s on two CPU cores, mostly the first forward pass of each model)."""
    m, tv = densenet_pair
    m.eval(), tv.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, want = m(x), tv(x)
    assert got.shape == (2, 1000)
    assert_close(got, want, atol=1e-4, what="densenet121 logits")


def test_densenet121_train_mode_matches_torchvision_at_a_smaller_size(densenet_pair):
    """`size` is a network parameter: at 32x32 (the final feature map is 1x1) in train mode (batch
    statistics) the outputs and the updated running statistics equal torchvision's."""
    _, tv = densenet_pair
    m = dlc.load(DENSENET, size=32)
    m.load_state_dict(torchvision_to_dlc(tv.state_dict()), strict=True)
    tv = copy.deepcopy(tv)
    m.train(), tv.train()
    x = torch.randn(4, 3, 32, 32)
    got, want = m(x), tv(x)
    assert_close(got, want, atol=1e-4, what="densenet121 logits (train mode)")
    tv_buffers = torchvision_to_dlc(dict(tv.named_buffers()))
    for k, b in m.named_buffers():
        assert torch.allclose(b.double(), tv_buffers[k].double(), atol=1e-5), f"buffer {k} after a training step"


def test_densenet169_is_an_override():
    """block_config (6, 12, 32, 32) through --set-style overrides: torchvision's parameter count."""
    torchvision = pytest.importorskip("torchvision")
    g = dlc.compile(DENSENET, layers3=32, layers4=32).graph
    assert total_params(g) == n_params(torchvision.models.densenet169(weights=None)) == 14_149_480


def test_densenet_dense_connectivity_shapes():
    """Each dense layer appends `growth` channels; a transition halves channels and resolution."""
    g = dlc.compile(DENSENET, growth=12, init=24, layers1=3, layers2=3, layers3=3, layers4=3, size=64).graph
    shapes = {}
    for n in g.nodes:
        if n.scope:
            shapes[n.scope[-1].path if len(n.scope) > 1 else n.name] = g.types[n.outputs[0]].shape
    assert list(shapes["features.denseblock1.0"]) == [24 + 12, 16, 16]
    assert list(shapes["features.denseblock1.2"]) == [24 + 3 * 12, 16, 16]
    assert list(shapes["features.transition1"]) == [30, 8, 8]
    assert list(shapes["features.denseblock4.2"]) == [(((60 // 2 + 36) // 2 + 36) // 2) + 36, 2, 2]


# ---- U-Net vs a hand-written twin ---------------------------------------------------------------


class DoubleConv(nn.Module):
    def __init__(self, cin: int, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(x)))


class Up(nn.Module):
    def __init__(self, cin: int, cskip: int, c: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, c, 2, stride=2)
        self.conv = DoubleConv(c + cskip, c)

    def forward(self, x, skip):
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """Ronneberger's U-Net with padded convolutions and batchnorm, depth 3."""

    def __init__(self, in_channels: int = 1, classes: int = 2, base: int = 16):
        super().__init__()
        c1, c2, c3, c4 = base, 2 * base, 4 * base, 8 * base
        self.enc1 = DoubleConv(in_channels, c1)
        self.enc2 = DoubleConv(c1, c2)
        self.enc3 = DoubleConv(c2, c3)
        self.bottleneck = DoubleConv(c3, c4)
        self.dec3 = Up(c4, c3, c3)
        self.dec2 = Up(c3, c2, c2)
        self.dec1 = Up(c2, c1, c1)
        self.head = nn.Conv2d(c1, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        b = self.bottleneck(F.max_pool2d(e3, 2))
        return self.head(self.dec1(self.dec2(self.dec3(b, e3), e2), e1))


@pytest.mark.parametrize("params", [{}, {"in_channels": 3, "classes": 5, "base": 8, "size": 32}],
                         ids=["defaults", "rgb-small"])
def test_unet_matches_reference(params):
    m = dlc.load(UNET, **params)
    kw = {k: v for k, v in params.items() if k != "size"}
    ref = UNet(**kw)
    randomize_batchnorm(ref)
    m.load_state_dict(ref.state_dict(), strict=True)        # same names: enc1.conv1.weight, dec3.up.bias, ...
    assert n_params(m) == n_params(ref) == total_params(dlc.compile(UNET, **params).graph)
    m.eval(), ref.eval()
    size, cin, classes = params.get("size", 64), params.get("in_channels", 1), params.get("classes", 2)
    x = torch.randn(2, cin, size, size)
    with torch.no_grad():
        got, want = m(x), ref(x)
    assert got.shape == (2, classes, size, size)
    assert_close(got, want, atol=1e-5, what="unet logits")


def test_unet_gradients_match_reference():
    """Train mode, float64: gradients through the skip concatenations equal the twin's."""
    m, ref = dlc.load(UNET, base=4, size=16).double(), UNet(base=4).double()
    m.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    w = torch.randn(2, 2, 16, 16, dtype=torch.float64)
    (m(x) * w).sum().backward()
    (ref(x) * w).sum().backward()
    want = dict(ref.named_parameters())
    for k, p in m.named_parameters():
        assert torch.allclose(p.grad, want[k].grad, atol=1e-8, rtol=1e-6), f"gradient of {k}"
    assert m.enc1.conv1.weight.grad.abs().max() > 0      # the first skip carries gradient back


def test_unet_skip_shapes():
    g = dlc.compile(UNET).graph
    concats = [(n.scope[-1].path, [list(g.types[v].shape) for v in n.inputs], list(g.types[n.outputs[0]].shape))
               for n in g.nodes if n.op == "concat"]
    assert concats == [
        ("dec3", [[64, 16, 16], [64, 16, 16]], [128, 16, 16]),
        ("dec2", [[32, 32, 32], [32, 32, 32]], [64, 32, 32]),
        ("dec1", [[16, 64, 64], [16, 64, 64]], [32, 64, 64]),
    ]


def test_unet_size_not_divisible_by_8_is_a_concat_shape_mismatch():
    """62 -> 31 -> 15 -> 7 on the way down, 7 -> 14 on the way up: the skip from enc3 is 15x15."""
    with pytest.raises(DlcError) as info:
        dlc.compile(UNET, size=62)
    err = info.value
    assert err.code == "shape-mismatch"
    assert "[64, 14, 14]" in err.message and "[64, 15, 15]" in err.message
    assert "concat" in err.message
    assert err.span.file.endswith("unet.dln")
    assert "dec3" in " ".join(err.chain)


def test_unet_size_not_divisible_by_8_cli():
    """The same through the CLI: `dlc check specs/unet.dln --set size=62` renders file:line:col."""
    proc = subprocess.run([sys.executable, "-m", "dlc", "check", str(UNET), "--set", "size=62"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert re.search(r"unet\.dln:\d+:\d+: error\[shape-mismatch\]", proc.stderr), proc.stderr
    assert "[64, 14, 14] and [64, 15, 15]" in proc.stderr
    assert "Traceback" not in proc.stderr
