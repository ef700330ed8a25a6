"""Fusion inside labelled groups and repeats (docs/fusion.md, "Fusion groups").

A labelled group keeps torchvision's or a tutorial's state_dict names (``features.0.weight``, ``main.3.weight``);
with ``fuse=True`` a group whose members fuse becomes a generated ``nn.Sequential`` subclass with the same
children and a forward calling the group's kernels. Checked here: specs/vgg16.dln and specs/alexnet.dln load
torchvision's state_dicts strictly and compute what torchvision computes; the fused modules of the specs written
in such layouts take the Triton path (launches counted by the module's runtime, kernels under TRITON_INTERPRET=1)
and equal the plain ones; the unfused modules keep plain ``nn.Sequential``; identical groups share one class.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import dlc
from dlc.backends.torch.fused import KERNEL_GROUPS
from dlc.compiler.fusion import describe_group, fusion_plan
from dlc.compiler.ops.kernel import ChannelAffine
from dlc.compiler.ops.registry import op_of
from conftest import ROOT, SPECS_DIR, assert_kernels_ran, generated_module, write_spec
from test_fused_specs import NO_DROPOUT, SMALL, randomise_batchnorm


@pytest.mark.parametrize("name, size", [("vgg16", 32), ("alexnet", 64)])
def test_torchvision_state_dict_loads_and_outputs_match(name, size):
    """The spec's module takes torchvision's state_dict (random weights) with strict=True and gives its outputs."""
    import torchvision

    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    model = dlc.load(SPECS_DIR / f"{name}.dln", size=size).eval()
    assert type(model.features) is nn.Sequential  # unfused: plain nn.Sequential, as before
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-4)
    # and the fused module loads the same state_dict into its generated group classes
    fused = dlc.load(SPECS_DIR / f"{name}.dln", size=size, fuse=True).eval()
    assert isinstance(fused.features, nn.Sequential) and type(fused.features) is not nn.Sequential
    assert type(fused.features[0]) is nn.Conv2d
    fused.load_state_dict(reference.state_dict(), strict=True)
    assert list(fused.state_dict()) == list(reference.state_dict())


# The specs written in a labelled-group layout (torchvision's, the DCGAN tutorial's), and the U-Net, whose fused
# forward took the Triton path 0 times before groups fused.
LAYOUT_SPECS = ["vgg16", "alexnet", "dcgan_generator", "dcgan_discriminator", "mobilenet_v2", "unet"]


def _small(name: str) -> dict:
    return {**SMALL.get(name, {}), **NO_DROPOUT.get(name, {})}


def _input(graph) -> torch.Tensor:
    """A batch of 2 for the network's one input."""
    (_, v), = graph.inputs
    return torch.randn(2, *graph.types[v].shape)


@pytest.mark.parametrize("name", LAYOUT_SPECS)
def test_fused_groups_launch_kernels_every_forward(name):
    """Kernel launches per forward, counted by the module's runtime: more than zero, every kernel of the module
    among them, the same count in every forward; and the outputs are the plain module's."""
    path = SPECS_DIR / f"{name}.dln"
    torch.manual_seed(0)
    plain = dlc.load(path, **_small(name))
    randomise_batchnorm(plain)
    fused = dlc.load(path, **_small(name), fuse=True)
    fused.load_state_dict(plain.state_dict())
    plain.eval()
    fused.eval()
    graph = dlc.compile(path, **_small(name)).graph
    x = _input(graph)
    ns = generated_module(fused)
    counts = []
    for _ in range(2):
        ns.LAUNCHES.clear()
        with torch.no_grad():
            y = fused(x)
        counts.append(sum(ns.LAUNCHES.values()))
    assert_kernels_ran(fused)
    # one launch per kernel group (a convolution's epilogue, a linear layer with its epilogue) and forward
    plan = fusion_plan(graph)
    assert counts == [len([grp for grp in plan.groups if grp.kind in KERNEL_GROUPS])] * 2
    assert counts[0] > 0
    with torch.no_grad():
        torch.testing.assert_close(y, plain(x), atol=1e-4, rtol=1e-4)


def test_identical_groups_share_one_generated_class():
    """ResNet-18's three `downsample` groups (conv -> batchnorm) are one class whose channels are arguments; the
    unfused module keeps nn.Sequential."""
    source = dlc.compile(SPECS_DIR / "resnet18.dln", fuse=True).source
    assert source.count("class Downsample(nn.Sequential):") == 1
    # BasicBlock_2 (layer2.0, layer3.0, layer4.0) builds it with its own channels
    assert source.count("self.downsample = Downsample(") == 1
    assert "self.downsample = Downsample(out_channels=c, x_channels=x_channels)  # resnet.dln:9" in source
    for layer in (2, 3, 4):
        assert f"#   layer{layer}.0.downsample: 0 conv2d -> 1 batchnorm\n" in source
    assert "x = fused_bn(x, *batchnorm_affine(self[1], x))  # resnet.dln:9: conv2d -> batchnorm" in source
    plain = dlc.compile(SPECS_DIR / "resnet18.dln").source
    assert "class Downsample" not in plain and "self.downsample = nn.Sequential(" in plain


def test_group_class_named_apart_from_a_block(tmp_path):
    """A group whose class name would be a block's gets another (`FeaturesGroup`); named children stay named."""
    path = write_spec(tmp_path, """
block Features {
    input x
    return x -> conv2d(4, k=3, pad=1) -> relu
}
network Net {
    input x: [3, 8, 8]
    y = x -> Features
    output z = y -> features: (conv: conv2d(4, k=3, pad=1) -> bn: batchnorm -> relu) -> flatten -> linear(2)
}
""")
    compiled = dlc.compile(path, fuse=True)
    assert "class FeaturesGroup(nn.Sequential):" in compiled.source
    assert "class Features(nn.Module):" in compiled.source
    assert "x = fused_bn_relu(x, *batchnorm_affine(self.bn, x))" in compiled.source
    torch.manual_seed(0)
    plain = dlc.load(path)
    randomise_batchnorm(plain)
    fused = dlc.load(path, fuse=True)
    fused.load_state_dict(plain.state_dict(), strict=True)
    assert type(fused.features.conv) is nn.Conv2d
    x = torch.randn(2, 3, 8, 8)
    plain.eval()
    fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x))
    assert_kernels_ran(fused)


@pytest.mark.parametrize("name", ["dcgan_discriminator", "mobilenet_v2"])
def test_fused_inference_rewrites_inside_groups(name):
    """fuse=True with optimize="inference": batchnorms folded inside generated group classes, outputs equal to the
    plain module in eval mode; the unfused rewrite keeps FoldingSequential."""
    path = SPECS_DIR / f"{name}.dln"
    torch.manual_seed(0)
    plain = dlc.load(path, **_small(name))
    randomise_batchnorm(plain)
    plain.eval()
    x = _input(dlc.compile(path, **_small(name)).graph)
    with torch.no_grad():
        expected = plain(x)
    for fuse in (False, True):
        other = dlc.load(path, **_small(name), fuse=fuse, optimize="inference")
        other.load_state_dict(plain.state_dict(), strict=True)
        other.eval()
        if fuse:
            generated_module(other).LAUNCHES.clear()
        with torch.no_grad():
            torch.testing.assert_close(other(x), expected, atol=1e-4, rtol=1e-4)
        if fuse:
            assert_kernels_ran(other)
    source = dlc.compile(path, **_small(name), optimize="inference").source
    assert "FoldingSequential(" in source


def test_explain_fusion_lists_groups_inside_labelled_groups(tmp_path):
    """`dlc compile --fuse --explain-fusion` on VGG-16: the convolutions of `features` and the linear layers of
    `classifier` with their epilogues."""
    out = tmp_path / "vgg16.py"
    r = subprocess.run([sys.executable, "-m", "dlc", "compile", str(SPECS_DIR / "vgg16.dln"), "--fuse",
                        "--explain-fusion", "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("VGG16: 15 fusion groups\n")
    assert "#0   anchor      features: 0 conv2d -> 1 relu  (vgg16.dln:11;" in r.stderr
    assert "#13  anchor      classifier: 0 linear -> 1 relu -> 2 dropout  (vgg16.dln:21;" in r.stderr


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "inception_v3", "googlenet", "densenet121"])
def test_folded_layers_keep_their_epilogues(name):
    """optimize="inference" folds each batchnorm into its convolution; the folded convolution keeps its epilogue
    (the folded shift as its bias, residual add, activation) as a group. The only groups lost are those that were
    a convolution and its batchnorm alone (folded, nothing is left for a kernel to do)."""
    path = SPECS_DIR / f"{name}.dln"
    graph = dlc.compile(path).graph
    before = fusion_plan(graph).groups
    after = fusion_plan(dlc.compile(path, optimize="inference").graph).groups
    only_norm = [grp for grp in before if grp.kind == "anchor" and len(grp.nodes) == 2
                 and isinstance(op_of(graph.nodes[grp.nodes[1]].op).kernel, ChannelAffine)]
    assert len(after) == len(before) - len(only_norm) > 0


def test_folded_epilogue_adds_the_folded_shift_in_the_kernel():
    """A folded convolution runs without its bias; the kernel adds the folded shift and the activation."""
    source = dlc.compile(SPECS_DIR / "dcgan_discriminator.dln", fuse=True, optimize="inference").source
    assert "x, bias = folded_without_bias(self[2], self[3], x)  # dcgan_discriminator.dln:11" in source
    assert "x = fused_bias_leaky_relu(x, bias.view(-1, 1, 1))  # dcgan_discriminator.dln:11: conv2d -> leaky_relu" \
        in source


def _groups(name: str) -> set[tuple[str, str]]:
    """(kind, ops) of every fusion group of a spec, as --explain-fusion describes them."""
    graph = dlc.compile(SPECS_DIR / f"{name}.dln", **SMALL.get(name, {})).graph
    return {(grp.kind, describe_group(graph, grp)) for grp in fusion_plan(graph).groups}


@pytest.mark.parametrize("name, expected", [
    # post-norm: the attention's dropout, the residual add and the layernorm are one row kernel
    ("transformer", {("row", "dropout -> add -> norm1 layernorm"), ("anchor", "linear1 linear -> relu -> dropout"),
                     ("anchor", "linear2 linear -> dropout -> add")}),
    ("bert", {("row", "dropout dropout -> add -> LayerNorm layernorm"),
              ("anchor", "dense linear -> intermediate_act_fn gelu"),
              ("anchor", "dense linear -> dropout dropout -> add")}),
    # pre-norm: the residual sum is read again by the next residual add, so it is stored and the layernorm reads it
    ("gpt", {("elementwise", "dropout -> add"), ("anchor", "c_fc linear -> gelu"),
             ("anchor", "c_proj linear -> dropout")}),
    ("vit_b_16", {("elementwise", "dropout dropout -> add"), ("anchor", "0 linear -> 1 gelu -> 2 dropout"),
                  ("anchor", "3 linear -> 4 dropout")}),
])
def test_transformer_epilogues(name, expected):
    """Attention blocks fuse their residual add with the layernorm after it (post-norm), and the feed-forward
    linear layers take their activation and dropout (and residual add) as epilogue, in blocks and in labelled
    groups (ViT's `mlp` is an nn.Sequential)."""
    assert expected <= _groups(name)


def test_dropout_before_a_row_op_trains():
    """A dropout inside a row kernel (dropout -> add -> layernorm): in train mode it drops and rescales (the output
    differs from eval mode's, the same under the same seed, and gradients reach every input); in eval mode it is
    the identity."""
    path = SPECS_DIR / "transformer.dln"
    params = {**SMALL["transformer"], "p": 0.5}
    torch.manual_seed(0)
    plain = dlc.load(path, **params)
    fused = dlc.load(path, **params, fuse=True)
    fused.load_state_dict(plain.state_dict())
    graph = dlc.compile(path, **params).graph
    xs = [torch.randn(2, *[d if isinstance(d, int) else 5 for d in graph.types[v].shape]) for _, v in graph.inputs]
    plain.eval()
    fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(*xs), plain(*xs), atol=1e-4, rtol=1e-4)
    fused.train()
    generated_module(fused).LAUNCHES.clear()
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        runs.append(fused(*[x.clone().requires_grad_() for x in xs]))
    torch.testing.assert_close(runs[0], runs[1])
    with torch.no_grad():
        assert not torch.allclose(runs[0], fused.eval()(*xs), atol=1e-3)
    runs[0].sum().backward()
    assert_kernels_ran(fused, backward=True)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fused.parameters() if p.requires_grad)


def test_folded_without_bias_leaves_the_folded_shift_to_the_kernel():
    """The runtime helper of a folded layer's epilogue: the layer with folded weights and no bias, plus the folded
    bias, add up to bn(layer(x)) in eval mode; in training mode it is bn(layer(x)) and a bias of zeros."""
    from dlc.backends.torch.runtime import folding

    torch.manual_seed(0)
    for layer, bn, x in ((nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), torch.randn(2, 3, 6, 6)),
                         (nn.Linear(5, 4, bias=False), nn.BatchNorm1d(4), torch.randn(3, 5))):
        randomise_batchnorm(bn)
        bn.eval()
        y, bias = folding.folded_without_bias(layer, bn, x)
        shape = (-1,) + (1,) * (x.dim() - 2)
        torch.testing.assert_close(y + bias.view(shape), bn(layer(x)))
        bn.train()
        twin = copy.deepcopy(bn)
        y, bias = folding.folded_without_bias(layer, bn, x)
        assert torch.equal(bias, torch.zeros(4))
        torch.testing.assert_close(y, twin(layer(x)))  # batch statistics, running ones updated alike
        torch.testing.assert_close(bn.running_var, twin.running_var)


NESTED = """
block Res(c: int) {
    input x
    return x + (x -> linear(c) -> relu)
}
network T {
    input x: [4, 8]
    a = x -> stack: (linear(8) -> relu) * 2
    b = a -> blocks: Res(8) * 2
    c = b -> mixed: (linear(8) -> gelu -> Res(8) -> linear(8) -> tanh -> inner: (linear(8) -> relu))
    output y = c -> twice: (linear(8) -> sigmoid) * 2
}
"""


def test_repeats_nested_groups_and_blocks_inside_groups(tmp_path):
    """Repeats of groups, a repeat of blocks (plain nn.Sequential: nothing of its own to fuse), a group holding a
    block, a labelled group and fused layers: the same state_dict keys, outputs and gradients as the plain module,
    every kernel run forward and backward."""
    path = write_spec(tmp_path, NESTED)
    source = dlc.compile(path, fuse=True).source
    assert "self.blocks = nn.Sequential(Res(), Res())" in source
    assert "class Mixed(nn.Sequential):" in source and "class Inner(nn.Sequential):" in source
    assert "        x = self.inner(x)  # net.dln:10\n" in source
    torch.manual_seed(0)
    plain = dlc.load(path)
    fused = dlc.load(path, fuse=True)
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 4, 8)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    generated_module(fused).LAUNCHES.clear()
    ya, yb = plain(xa), fused(xb)
    torch.testing.assert_close(yb, ya)
    ya.sum().backward()
    yb.sum().backward()
    assert_kernels_ran(fused, backward=True)
    torch.testing.assert_close(xb.grad, xa.grad)
    grads = dict(fused.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_v3", "resnet50"])
def test_fused_and_optimised_equals_plain_eval(name):
    """fuse=True with optimize="inference" (folded batchnorms whose shift the epilogue kernels add, channels-last)
    computes the plain module's eval outputs, and every kernel ran."""
    path = SPECS_DIR / f"{name}.dln"
    torch.manual_seed(0)
    plain = dlc.load(path, **_small(name))
    randomise_batchnorm(plain)
    plain.eval()
    fast = dlc.load(path, **_small(name), fuse=True, optimize="inference")
    fast.load_state_dict(plain.state_dict(), strict=True)
    fast.eval()
    graph = dlc.compile(path, **_small(name)).graph
    x = torch.randn(1, *graph.types[graph.inputs[0][1]].shape)
    generated_module(fast).LAUNCHES.clear()
    with torch.no_grad():
        expected, got = plain(x), fast(x)
    for a, b in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,), strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    assert_kernels_ran(fast)


DROPOUT_ROW = """network R {
    input x: [4, 16]
    input y: [4, 16]
    s = (x -> dropout(0.1)) + y
    output z = s -> layernorm
}
"""


def test_dropout_row_kernel_compiles_for_a_cuda_target(tmp_path):
    """The row kernel with a dropout before its row op (dropout -> add -> layernorm), forward and backward, through
    the real Triton compiler for sm_90 (no GPU needed; a process without the interpreter)."""
    from test_kernels_new_ops import COMPILE_ALL

    path = write_spec(tmp_path, DROPOUT_ROW)
    graph = dlc.compile(path).graph
    assert [(grp.kind, describe_group(graph, grp)) for grp in fusion_plan(graph).groups] == [
        ("row", "dropout -> add -> layernorm_0 layernorm")]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", COMPILE_ALL, str(path)], env=env, capture_output=True, text=True,
                       cwd=ROOT / "tests", timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["fused_dropout_add_layernorm_forward", "fused_dropout_add_layernorm_backward"]
