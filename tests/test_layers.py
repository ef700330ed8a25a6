"""The layers of issue 10's layer part: pad, crop, pixel_shuffle/unshuffle, groupnorm, instancenorm, conv3d,
conv_transpose1d/3d, 3-d pooling, embedding's max_norm and weightnorm.

Each layer is compiled alone in a small network, its module is loaded strictly from the state_dict of a twin
written with torch.nn (or torchvision / torch.nn.functional for the stateless ones), and both must give the same
outputs (and the same gradients, training-mode batch statistics and running buffers where they have them); the
parameter count dlc reports must equal the twin's. Bad arguments must give positioned diagnostics, exit code 1
from the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from dlc.compiler.passes import count_params
from dlc.compiler.types import TensorType
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

import dlc
from dlc.diagnostics import DlcError

ROOT = Path(__file__).resolve().parent.parent


def _compile(tmp_path: Path, text: str, **options) -> dlc.Compiled:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return dlc.compile(path, **options)


def _net(shape: str, call: str, dtype: str = "") -> str:
    return f"network N {{\n    input x: [{shape}]{dtype}\n    output y = x -> {call}\n}}\n"


def _randomise(module: nn.Module) -> nn.Module:
    """Every parameter and float buffer of ``module`` random (norms' default weights of 1 and biases of 0 would
    hide a weight applied to the wrong axis)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            t.copy_(torch.rand_like(t) + 0.5)
    return module


# ---- layers with parameters, against their torch.nn twins -------------------------------------------------------

# (input shape, the spec's layer labelled `m`, the twin, a float input shape with the batch)
TWINS = [
    ("2, 5, 6, 7", "m: conv3d(4, k=[3, 2, 3], stride=[1, 2, 1], pad=1, dilation=[1, 1, 2])",
     lambda: nn.Conv3d(2, 4, (3, 2, 3), stride=(1, 2, 1), padding=1, dilation=(1, 1, 2))),
    ("4, 3, 4, 5", "m: conv3d(6, k=3, groups=2, bias=false, pad=same)",
     lambda: nn.Conv3d(4, 6, 3, groups=2, bias=False, padding="same")),
    ("3, 9", "m: conv_transpose1d(4, k=4, stride=2, pad=1, output_pad=1)",
     lambda: nn.ConvTranspose1d(3, 4, 4, stride=2, padding=1, output_padding=1)),
    ("4, 3, 4, 5", "m: conv_transpose3d(2, k=2, stride=2, groups=2, bias=false)",
     lambda: nn.ConvTranspose3d(4, 2, 2, stride=2, groups=2, bias=False)),
    ("6, 5, 5", "m: groupnorm(3, eps=1e-3)", lambda: nn.GroupNorm(3, 6, eps=1e-3)),
    ("6", "m: groupnorm(2)", lambda: nn.GroupNorm(2, 6)),
    ("4, 2, 3, 5", "m: groupnorm(4, affine=false)", lambda: nn.GroupNorm(4, 4, affine=False)),
    ("7, 3", "permute([1, 0]) -> m: instancenorm", lambda: nn.InstanceNorm1d(3)),  # [3, 7] channels-first
    ("3, 5, 6", "m: instancenorm(affine=true, track_running_stats=true, momentum=0.3)",
     lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True, momentum=0.3)),
    ("2, 3, 4, 5", "m: instancenorm(eps=0.01, track_running_stats=true)",
     lambda: nn.InstanceNorm3d(2, eps=0.01, track_running_stats=True)),
    ("7", "m: weightnorm(linear(5))", lambda: weight_norm(nn.Linear(7, 5))),
    ("3, 10", "m: weightnorm(conv1d(4, k=3, dilation=2, bias=false))",
     lambda: weight_norm(nn.Conv1d(3, 4, 3, dilation=2, bias=False))),
    ("3, 6, 6", "m: weightnorm(conv2d(5, k=3, stride=2, pad=1))",
     lambda: weight_norm(nn.Conv2d(3, 5, 3, stride=2, padding=1))),
    ("4, 5, 5", "m: weightnorm(conv_transpose2d(2, k=2, stride=2))",
     lambda: weight_norm(nn.ConvTranspose2d(4, 2, 2, stride=2))),
]


@pytest.mark.parametrize("shape,call,twin", TWINS, ids=[c[1].split(": ", 1)[1] for c in TWINS])
def test_layer_loads_its_twin_and_matches_it(tmp_path, shape, call, twin):
    compiled = _compile(tmp_path, _net(shape, call))
    model = compiled.instantiate().double()
    ref = _randomise(twin().double())
    model.m.load_state_dict(ref.state_dict(), strict=True)
    assert set(model.state_dict()) == {f"m.{k}" for k in ref.state_dict()}
    n_ref = sum(p.numel() for p in ref.parameters())
    assert count_params(compiled.graph) == {"m": n_ref}
    assert sum(p.numel() for p in model.parameters()) == n_ref
    x = torch.randn(3, *(int(d) for d in shape.split(", ")), dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    for train in (True, False):  # batch statistics and running buffers first, then eval
        model.train(train)
        ref.train(train)
        got, want = model(x), ref(xr if "permute" not in call else xr.transpose(1, 2))
        assert got.shape[1:] == compiled.graph.types[compiled.graph.outputs[0][1]].shape
        torch.testing.assert_close(got, want)
        w = torch.randn_like(want)
        (got * w).sum().backward()
        (want * w).sum().backward()
        torch.testing.assert_close(x.grad, xr.grad)
        for (name, a), b in zip(model.m.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)


def test_weightnorm_state_dict_names_and_the_summary(tmp_path):
    compiled = _compile(tmp_path, _net("3, 10", "wn: weightnorm(conv1d(4, k=3))"))
    model = compiled.instantiate()
    assert list(model.state_dict()) == ["wn.bias", "wn.parametrizations.weight.original0",
                                        "wn.parametrizations.weight.original1"]
    assert "nn.utils.parametrizations.weight_norm(nn.Conv1d(3, 4, kernel_size=3))" in compiled.source
    # weight 4·3·3 as its direction, one norm per output channel, the bias
    assert count_params(compiled.graph) == {"wn": 36 + 4 + 4}


def test_embedding_max_norm_renormalises_like_torch(tmp_path):
    compiled = _compile(tmp_path, _net("6", "m: embedding(10, 4, max_norm=1.5, norm_type=1.0)", " int64"))
    model = compiled.instantiate()
    ref = _randomise(nn.Embedding(10, 4, max_norm=1.5, norm_type=1.0))
    with torch.no_grad():
        ref.weight.mul_(3)  # rows of norm above max_norm
    model.m.load_state_dict(ref.state_dict(), strict=True)
    ids = torch.tensor([[0, 3, 3, 9, 1, 2], [5, 5, 6, 7, 8, 0]])
    torch.testing.assert_close(model(ids), ref(ids))
    torch.testing.assert_close(model.m.weight, ref.weight)  # both renormalised the rows looked up, in place
    assert ref.weight.detach().norm(p=1, dim=1)[ids.flatten()].max() <= 1.5 + 1e-5
    assert "nn.Embedding(10, 4, max_norm=1.5, norm_type=1.0)" in compiled.source


# ---- stateless layers, against torch.nn.functional, torch.nn and torchvision ---------------------------------------

STATELESS = [
    ("4, 10", "pad([4, 0])", lambda x: F.pad(x, (4, 0))),
    ("3, 5, 6", "pad([1, 2, 3, 0], value=-1.5)", lambda x: F.pad(x, (1, 2, 3, 0), value=-1.5)),
    ("3, 5, 6", "pad([1, -2, -1, 0])", lambda x: F.pad(x, (1, -2, -1, 0))),
    ("3, 5, 6", "pad([0, 1, 0, 0, 2, 2])", lambda x: F.pad(x, (0, 1, 0, 0, 2, 2))),
    ("3, 5, 6", "pad([2, 3, 4, 1], mode=reflect)", lambda x: F.pad(x, (2, 3, 4, 1), mode="reflect")),
    ("3, 5, 6", "pad([2, 3, 0, 1], mode=replicate)", lambda x: F.pad(x, (2, 3, 0, 1), mode="replicate")),
    ("3, 5", "pad([2, 3], mode=replicate)", lambda x: F.pad(x, (2, 3), mode="replicate")),
    ("2, 3, 4, 5", "pad([1, 2, 3, 4, 2, 1], mode=circular)", lambda x: F.pad(x, (1, 2, 3, 4, 2, 1), mode="circular")),
    ("3, 10, 12", "crop([6, 8])", lambda x: TF.center_crop(x, [6, 8])),
    ("3, 9, 12", "crop([4])", lambda x: x[..., 4:8]),
    ("3, 9, 8", "crop([6, 7])", lambda x: x[..., 1:7, 0:7]),  # odd leftovers: the extra row is cut at the end
    ("8, 3, 4", "pixel_shuffle(2)", nn.PixelShuffle(2)),
    ("2, 6, 9", "pixel_unshuffle(3)", nn.PixelUnshuffle(3)),
    ("2, 6, 8, 8", "maxpool(2)", nn.MaxPool3d(2)),
    ("2, 6, 8, 7", "avgpool([3, 2, 3], stride=2, pad=1, ceil=true)",
     nn.AvgPool3d((3, 2, 3), stride=2, padding=1, ceil_mode=True)),
    ("2, 6, 8, 7", "maxpool(global)", nn.AdaptiveMaxPool3d(1)),
    ("2, 6, 8, 7", "adaptive_avgpool([2, 3, 4])", nn.AdaptiveAvgPool3d((2, 3, 4))),
]


@pytest.mark.parametrize("labelled", [False, True], ids=["function", "module"])
@pytest.mark.parametrize("shape,call,reference", STATELESS, ids=[c[1] for c in STATELESS])
def test_stateless_layer_matches_torch(tmp_path, shape, call, reference, labelled):
    # labelled, the layer is a module inside a labelled group (nn.Sequential); else a function call in forward
    spec = _net(shape, f"g: ({call} -> relu)" if labelled else f"{call} -> relu")
    compiled = _compile(tmp_path, spec)
    if labelled:
        assert "nn.Sequential(" in compiled.source
    model = compiled.instantiate().double()
    x = torch.randn(2, *(int(d) for d in shape.split(", ")), dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    got, want = model(x), torch.relu(reference(xr))
    assert got.shape[1:] == compiled.graph.types[compiled.graph.outputs[0][1]].shape
    torch.testing.assert_close(got, want)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)


def test_crop_like_the_unet_skip(tmp_path):
    # the original U-Net: the contracting path's 64×64 map cropped to the expanding path's 56×56
    text = """network Skip {
    input x: [4, 64, 64]
    up = x -> conv2d(4, k=5) -> conv2d(4, k=5)          # [4, 56, 56]
    output y = concat(x -> crop(like=up), up)
}
"""
    compiled = _compile(tmp_path, text)
    assert "x[..., 4:60, 4:60]" in compiled.source
    model = compiled.instantiate()
    x = torch.randn(2, 4, 64, 64)
    y = model(x)
    torch.testing.assert_close(y[:, :4], TF.center_crop(x, [56, 56]))


def test_causal_conv_keeps_symbolic_lengths_and_never_looks_ahead(tmp_path):
    text = """network Causal(d: int = 2) {
    input audio: [4, T]
    output y = audio -> pad([2 * d, 0]) -> conv: conv1d(6, k=3, dilation=d)
}
"""
    compiled = _compile(tmp_path, text)
    g = compiled.graph
    padded = next(n for n in g.nodes if n.op == "pad")
    assert g.types[padded.outputs[0]].shape == (4, "T+4")
    assert g.types[g.outputs[0][1]].shape == (6, "T")
    model = compiled.instantiate()
    ref = nn.Conv1d(4, 6, 3, dilation=2)
    model.load_state_dict({f"conv.{k}": v for k, v in ref.state_dict().items()}, strict=True)
    for t in (5, 11):
        x = torch.randn(2, 4, t)
        torch.testing.assert_close(model(x), ref(F.pad(x, (4, 0))))
        later = x.clone()
        later[..., t // 2 + 1:] = torch.randn_like(later[..., t // 2 + 1:])
        torch.testing.assert_close(model(later)[..., :t // 2 + 1], model(x)[..., :t // 2 + 1])


def test_pad_and_crop_labelled_are_torch_modules(tmp_path):
    text = """network Pads {
    input x: [3, 8, 8]
    output a = x -> z: pad([1, 1, 1, 1])
    output b = x -> c: pad([1, 1], value=2.0)
    output d = x -> r: pad([1, 1, 1, 1], mode=reflect)
    output e = x -> k: crop([4, 5])
}
"""
    compiled = _compile(tmp_path, text)
    for line in ("self.z = nn.ZeroPad2d((1, 1, 1, 1))", "self.c = nn.ConstantPad1d((1, 1), 2.0)",
                 "self.r = nn.ReflectionPad2d((1, 1, 1, 1))", "self.k = nn.ZeroPad2d((-1, -2, -2, -2))"):
        assert line in compiled.source
    x = torch.randn(2, 3, 8, 8)
    a, b, d, e = compiled.instantiate()(x)
    torch.testing.assert_close(a, F.pad(x, (1, 1, 1, 1)))
    torch.testing.assert_close(b, F.pad(x, (1, 1), value=2.0))
    torch.testing.assert_close(d, F.pad(x, (1, 1, 1, 1), mode="reflect"))
    torch.testing.assert_close(e, x[..., 2:6, 1:6])


def test_new_layers_fused_equal_unfused(tmp_path):
    text = """network Mixed {
    input v: [2, 4, 8, 8]
    input s: [3, 12]
    a = v -> conv3d(4, k=3, pad=1) -> relu -> groupnorm(2) -> maxpool(2) -> flatten
    b = s -> pad([2, 0]) -> conv1d(4, k=3) -> relu -> instancenorm(affine=true) -> conv_transpose1d(2, k=2, stride=2)
    output y = a -> linear(5) -> relu
    output z = b -> wn: weightnorm(conv1d(3, k=1)) -> sigmoid
}
"""
    plain = _compile(tmp_path, text).instantiate()
    fused = _compile(tmp_path, text, fuse=True).instantiate()
    fused.load_state_dict(plain.state_dict(), strict=True)
    v, s = torch.randn(2, 2, 4, 8, 8), torch.randn(2, 3, 12)
    for got, want in zip(fused(v, s), plain(v, s)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# ---- diagnostics ---------------------------------------------------------------------------------------------

# (input shape, the layer, the code, the column the caret points at, a piece of the message)
BAD = [
    ("4, 10", "pad([3, 0, 1])", "bad-argument", "takes 2, 4 or 6 amounts"),
    ("4, 10", "pad([1, 1, 1, 1, 1, 1])", "bad-argument", "pad 3 axes, but the input has 2"),
    ("4, 10", "pad([10, 0], mode=reflect)", "bad-argument", "smaller than the padded axis"),
    ("4, 10", "pad([11, 0], mode=circular)", "bad-argument", "at most the padded axis"),
    ("4, 10", "pad([-1, 0], mode=replicate)", "bad-argument", "cannot crop"),
    ("4, 10", "pad([1, 0], mode=reflect, value=1)", "bad-argument", "`value` is the fill of `mode=constant`"),
    ("4, 10", "pad([-5, -5])", "bad-argument", "leaves nothing"),
    ("4, 10", "pad([-2147483648, 0])", "bad-argument", "a list of integers of at least -2147483647"),
    ("2, 4, 10", "pad([1, 1], mode=reflect)", "bad-argument", "pads the last 1 axes of a rank-2 input"),
    ("4, 10", "pad([1, 1, 1, 1, 1, 1], mode=circular)", "bad-argument", "pads the last 3 axes of a rank-4"),
    ("4, 10", "pad([1, 0], mode=mirror)", "bad-argument", "must be one of constant, reflect"),
    ("4, 10, 10", "crop([12, 12])", "shape-mismatch", "cannot crop an axis of size 10 to the larger size 12"),
    ("4, 10, 10", "crop([1, 1, 1, 1])", "bad-argument", "crops 1 to 3 trailing axes"),
    ("4, 10, 10", "crop", "bad-argument", "takes a size"),
    ("4, H, W", "crop([8, 8])", "symbolic-dim", "needs known sizes"),
    ("10, 8, 8", "pixel_shuffle(2)", "bad-argument", "must be a multiple of 2² = 4"),
    ("4, 9, 8", "pixel_unshuffle(2)", "bad-argument", "multiples of 2"),
    ("4, 8", "pixel_shuffle(2)", "shape-mismatch", "expects [C, H, W]"),
    ("6, 10, 10", "groupnorm(4)", "bad-argument", "the groups must divide the channels (6)"),
    ("10, 6", "groupnorm(2)", "shape-mismatch", "normalises channels-first data"),
    ("6", "instancenorm", "shape-mismatch", "expects [C, L], [C, H, W] or [C, D, H, W]"),
    ("6, 10", "instancenorm(eps=0)", "bad-argument", "eps must be positive"),
    ("6, 10", "weightnorm(layernorm)", "bad-argument", "wraps `linear` or a convolution, not `layernorm`"),
    ("6, 10", "weightnorm(weightnorm(linear(3)))", "bad-argument", "not `weightnorm`"),
    ("3, 8, 8", "conv3d(4, k=3)", "shape-mismatch", "expects [C, D, H, W]"),
    ("3, 8, 8, 8", "conv3d(4, k=[3, 3])", "bad-argument", "needs 3 values here"),
    ("3, 8", "conv_transpose1d(4, k=3, stride=2, output_pad=2)", "bad-argument", "must be smaller than the stride"),
    ("3, 8, 8, 8", "maxpool(2, pad=2)", "bad-argument", "at most half the kernel size"),
]


@pytest.mark.parametrize("shape,call,code,message", BAD, ids=[c[1] for c in BAD])
def test_bad_arguments_are_positioned_diagnostics(tmp_path, shape, call, code, message):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, _net(shape, call))
    err = info.value
    assert err.code == code, str(err)
    assert message in err.message, err.message
    assert err.span is not None and err.span.line == 3 and err.span.col >= len("    output y = x -> ") + 1


def test_embedding_max_norm_must_be_positive(tmp_path):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, _net("6", "embedding(10, 4, max_norm=-1.0)", " int64"))
    assert info.value.code == "bad-argument" and "max_norm must be positive" in info.value.message


def test_cli_reports_a_bad_pad_with_its_caret(tmp_path):
    spec = tmp_path / "bad.dln"
    spec.write_text(_net("4, 10", "pad([10, 0], mode=reflect)"), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "dlc", "compile", str(spec)], capture_output=True, text=True, check=False,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 1
    assert "bad.dln:3:25: error[bad-argument]: `pad(mode=reflect)`: amounts must be smaller than the padded axis, " \
           "got 10 for an axis of size 10" in r.stderr
    assert "^" in r.stderr and "Traceback" not in r.stderr


def test_shapes_are_inferred_with_symbolic_dims(tmp_path):
    text = """network S {
    input x: [8, H, W]
    a = x -> pixel_shuffle(2) -> pad([1, 0, 0, 3])
    output y = a -> crop(like=a)
}
"""
    g = _compile(tmp_path, text).graph
    y = g.types[g.outputs[0][1]]
    assert isinstance(y, TensorType) and y.shape == (2, "H*2+3", "W*2+1")


# ---- DCGAN, against the PyTorch DCGAN tutorial's layout ------------------------------------------------------------


def _tutorial_generator(nz: int = 100, ngf: int = 64, nc: int = 3) -> nn.Sequential:
    """The `main` of the PyTorch DCGAN tutorial's Generator."""
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


def _tutorial_discriminator(ndf: int = 64, nc: int = 3) -> nn.Sequential:
    """The `main` of the PyTorch DCGAN tutorial's Discriminator."""
    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())


@pytest.mark.parametrize("spec,twin,shape", [
    ("dcgan_generator", _tutorial_generator, (100, 1, 1)),
    ("dcgan_discriminator", _tutorial_discriminator, (3, 64, 64)),
], ids=["generator", "discriminator"])
def test_dcgan_loads_the_tutorial_weights_and_matches_it(spec, twin, shape):
    compiled = dlc.compile(ROOT / "specs" / f"{spec}.dln")
    model = compiled.instantiate()
    main = _randomise(twin())
    ref = nn.Module()
    ref.main = main  # the tutorial's nets keep the layers in `self.main`
    model.load_state_dict(ref.state_dict(), strict=True)
    n_ref = sum(p.numel() for p in main.parameters())
    assert sum(count_params(compiled.graph).values()) == n_ref
    assert n_ref == (3_576_704 if spec == "dcgan_generator" else 2_765_568)  # the tutorial's printed counts
    torch.manual_seed(0)
    x = torch.randn(4, *shape)
    for train in (True, False):  # batch statistics (running buffers updated alike), then eval
        model.train(train)
        main.train(train)
        got, want = model(x), main(x)
        assert got.shape == want.shape == (4, *compiled.graph.types[compiled.graph.outputs[0][1]].shape)
        torch.testing.assert_close(got, want)
    mine = model.state_dict()
    for key, value in main.state_dict().items():  # the running statistics moved alike in training
        torch.testing.assert_close(mine[f"main.{key}"], value, msg=key)
