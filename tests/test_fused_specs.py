"""Every spec in specs/: the fused module (kernels under the Triton interpreter) equals the unfused one.

For each spec, ``dlc.load(spec, fuse=True)`` and ``dlc.load(spec)`` get the same weights (batchnorm
statistics randomised so that eval mode is not an identity) and small random inputs (batch 2; symbolic
sizes 5; token ids below every vocabulary; images smaller than the specs' own where they allow it, see
``IMAGE_SIZE``). Compared: outputs in eval mode, outputs in train mode, and the gradients of a loss with
respect to every parameter and every float input. Specs in ``RANDOM`` draw samples (``randn_like``) from
torch's global generator, so each forward of them starts from one seed.
Dropout draws its mask from another random stream in the fused kernels, so train-mode comparisons set the
specs' dropout parameters to 0 (tests/test_kernels.py checks the fused dropout itself). Also:
``optimize="inference"`` (batchnorm folding, channels-last) against the plain module, fused or not. A fused
module falls back to PyTorch ops where its kernels cannot run, so every fused comparison also checks, with
the launch counts of the module's runtime, that each of its kernels ran (forward in eval mode, forward and
backward in train mode; a kernel that reads only inputs and random samples runs backward for the inputs'
gradients).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import dlc

from conftest import SPECS_DIR, assert_kernels_ran, assert_no_kernels, generated_module

SPECS = sorted(p.stem for p in SPECS_DIR.glob("*.dln"))
# Parameters that make the heavier specs small enough for the interpreter, and switch dropout off in training.
SMALL = {"densenet121": {"size": 64}, "unet": {"size": 32}, "mobilenet_v2": {"size": 64},
         "dcgan_generator": {"ngf": 8}, "dcgan_discriminator": {"ndf": 8},
         "vgg16": {"size": 32, "hidden": 64, "classes": 10}, "alexnet": {"size": 64, "hidden": 64, "classes": 10},
         "transformer": {"d_model": 32, "nhead": 4, "num_layers": 2, "dim_feedforward": 64},
         "wavenet": {"channels": 8, "head_channels": 16, "stacks": 1}, "efficientnet_b0": {"size": 64},
         "vit_b_16": {"image_size": 16, "patch_size": 8, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
         "gpt": {"vocab_size": 50, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4},
         # pad_token_id 49: the token ids drawn (below the smallest vocabulary, 2 segment types) are never padding
         "bert": {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 64, "max_position_embeddings": 16, "pad_token_id": 49}}
# Specs that declare a fixed image size and end in adaptive pooling: a smaller image runs the same layers and kernels
# (the interpreter's time grows with the pixels). Inception v3's auxiliary classifier, in training mode only, needs
# its full 299x299 (a 17x17 grid for its 5x5 pooling and 5x5 conv); in eval, 75x75 is its smallest input.
IMAGE_SIZE = {"resnet18": 64, "resnet50": 64, "googlenet": 64}
EVAL_IMAGE_SIZE = {"inception_v3": 75}
NO_DROPOUT = {"mlp": {"dropout": 0.0}, "mobilenet_v2": {"dropout": 0.0},
              "googlenet": {"dropout": 0.0, "dropout_aux": 0.0}, "inception_v3": {"dropout": 0.0},
              "transformer": {"p": 0.0}, "efficientnet_b0": {"dropout": 0.0}, "gpt": {"dropout": 0.0},
              "bert": {"dropout": 0.0}, "vgg16": {"dropout": 0.0}, "alexnet": {"dropout": 0.0}}
ATOL = 1e-4  # whole networks in float32: summation orders differ between fused and unfused
ATOL64 = 1e-9  # the same in float64
# Specs that draw from torch's generator in forward: both modules of a comparison must draw the same numbers.
RANDOM = {"vae", "denoising_autoencoder", "efficientnet_b0"}  # efficientnet_b0: stochastic depth in training
SLOW = {"resnet18", "resnet50", "googlenet", "densenet121", "siamese", "unet", "inception_v3"}


def inputs(graph, batch: int = 2, image: int | None = None) -> list[torch.Tensor]:
    """Random inputs of the graph's input types: symbolic sizes 5; with ``image``, [C, H, W] images H = W = image."""
    out = []
    vocab = min([n.attrs["vocab"] for n in graph.nodes if n.op == "embedding"], default=100)
    for _, v in graph.inputs:
        t = graph.types[v]
        shape = [batch] + [d if isinstance(d, int) else 5 for d in t.shape]
        if image is not None and len(shape) == 4:
            shape[2:] = [image, image]
        if t.dtype == "bool":  # padding masks: nothing masked (a fully masked row is NaN in both)
            out.append(torch.zeros(shape, dtype=torch.bool))
        else:
            out.append(torch.randint(0, vocab, shape) if t.dtype.startswith("int") else torch.randn(shape))
    return out


def randomise_batchnorm(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def outputs(y) -> tuple[torch.Tensor, ...]:
    return y if isinstance(y, tuple) else (y,)


def pair(name: str, **options):
    path = SPECS_DIR / f"{name}.dln"
    params = {**SMALL.get(name, {}), **NO_DROPOUT.get(name, {})}
    plain = dlc.load(path, **params)
    randomise_batchnorm(plain)
    if options.get("fuse") and name in ("bilstm_tagger", "seq2seq"):
        options = {**options, "fused_recurrent": True}  # cuDNN is the default; test dlc's recurrent kernels
    other = dlc.load(path, **params, **options)
    other.load_state_dict(plain.state_dict())
    graph = dlc.compile(path, **params).graph
    return plain, other, graph


def assert_outputs_close(ya, yb, atol: float = ATOL) -> None:
    for a, b in zip(outputs(ya), outputs(yb), strict=True):
        assert a.shape == b.shape
        scale = max(1.0, a.abs().max().item())
        assert (a - b).abs().max().item() <= atol * scale


def compare_eval_and_train(plain: torch.nn.Module, other: torch.nn.Module, xs: list[torch.Tensor],
                           fused: bool, seed: int | None = None, training_only: bool = False,
                           train_xs: list[torch.Tensor] | None = None) -> None:
    """Equal outputs in eval mode (float32), then equal outputs and parameter and input gradients in train mode; with
    ``fused``, every kernel of ``other`` ran in both (else it has none). With ``training_only`` (the network has
    outputs of training mode only), some kernels serve only those, so all must have run in train mode alone.

    Train mode runs in float64 (tolerance ``ATOL64``): through the batch statistics of a batch of 2,
    float32 rounding differences between fused and unfused reductions grow with depth to ~5e-4.
    With ``seed``, torch's generator is reseeded before each forward, so random draws in both modules are equal.
    ``train_xs`` (default ``xs``) are the inputs of the train-mode comparison.
    """
    def run(model: torch.nn.Module, args: list[torch.Tensor]):
        if seed is not None:
            torch.manual_seed(seed)
        return model(*args)

    plain.eval()
    other.eval()
    with torch.no_grad():
        assert_outputs_close(run(plain, xs), run(other, xs))
    if fused and not training_only:
        assert_kernels_ran(other)
    if fused:
        generated_module(other).LAUNCHES.clear()
    plain.double().train()
    other.double().train()
    # separate leaves for the two modules; an input's gradient is what runs a kernel that reads inputs only
    xa, xb = ([x.double().requires_grad_() if x.is_floating_point() else x for x in train_xs or xs]
              for _ in range(2))
    ya, yb = run(plain, xa), run(other, xb)
    assert_outputs_close(ya, yb, ATOL64)
    sum((y ** 2).mean() for y in outputs(ya)).backward()
    sum((y ** 2).mean() for y in outputs(yb)).backward()
    for a, b in zip(xa, xb, strict=True):
        if a.requires_grad:
            assert (a.grad - b.grad).abs().max().item() <= ATOL64 * max(1.0, a.grad.abs().max().item())
    grads = dict(other.named_parameters())
    for pname, p in plain.named_parameters():
        if p.grad is None:
            assert grads[pname].grad is None, pname
            continue
        scale = max(1.0, p.grad.abs().max().item())
        assert (p.grad - grads[pname].grad).abs().max().item() <= ATOL64 * scale, pname
    if fused:
        assert_kernels_ran(other, backward=True)
    else:
        assert_no_kernels(other)


def spec_inputs(name: str, graph) -> dict:
    """The inputs of spec ``name`` in eval mode (``xs``) and in train mode (``train_xs``)."""
    image = IMAGE_SIZE.get(name)
    xs = inputs(graph, image=EVAL_IMAGE_SIZE.get(name, image))
    return {"xs": xs, "train_xs": inputs(graph, image=image) if name in EVAL_IMAGE_SIZE else None}


def seed_of(name: str) -> int | None:
    """The seed each forward of spec ``name`` starts from in a comparison, or None where it draws nothing."""
    return 1 if name in RANDOM else None


def params_of(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


@pytest.mark.parametrize("name", [params_of(n) for n in SPECS])
def test_fused_equals_unfused(name):
    torch.manual_seed(0)
    plain, fused, graph = pair(name, fuse=True)
    compare_eval_and_train(plain, fused, fused=True, seed=seed_of(name),
                           training_only=bool(graph.training_outputs), **spec_inputs(name, graph))
    # training updated the batchnorm statistics the same way
    buffers = dict(fused.named_buffers())
    for bname, buf in plain.named_buffers():
        assert torch.allclose(buf.float(), buffers[bname].float(), atol=1e-5), bname


# The unfused rewrite on every spec; fused together with it on three.
REWRITES = [(n, False) for n in SPECS] + [(n, True) for n in ("resnet18", "lenet5", "autoencoder")]


@pytest.mark.parametrize("name,fuse", [pytest.param(n, f, marks=pytest.mark.slow) if n in SLOW else (n, f)
                                       for n, f in REWRITES])
def test_inference_rewrites_keep_outputs(name, fuse):
    torch.manual_seed(0)
    plain, fast, graph = pair(name, optimize="inference", fuse=fuse)
    # the rewritten module still trains: the same outputs and gradients in train mode
    compare_eval_and_train(plain, fast, fused=fuse, seed=seed_of(name),
                           training_only=bool(graph.training_outputs), **spec_inputs(name, graph))


def test_inference_rewrites_of_resnet18():
    compiled = dlc.compile(SPECS_DIR / "resnet18.dln", optimize="inference")
    ops = [n.op for n in compiled.graph.nodes]
    assert ops.count("batchnorm") == 0
    assert sum(n.fold is not None for n in compiled.graph.nodes) == 20
    # one call in the stem, two in each of the two BasicBlock classes (with and without downsample) ...
    assert compiled.source.count("folded_batchnorm(self.") == 5
    # ... and the downsample branches, nn.Sequential members, fold in a FoldingSequential
    assert compiled.source.count("self.downsample = FoldingSequential(") == 1
    # relu and the residual add overwrite values nothing else reads
    assert "out = out.add_(" in compiled.source and "F.relu(out, inplace=True)" in compiled.source
    assert "self.to(memory_format=torch.channels_last)" in compiled.source
    model = compiled.instantiate()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # the batchnorms are still there


def test_generated_fused_source_is_readable():
    src = dlc.compile(SPECS_DIR / "resnet18.dln", fuse=True).source
    assert max(len(line) for line in src.splitlines()) <= 120
    assert "# Kernel `fused_bn_add_relu`" in src
    assert "#   layer1.0: conv2 conv2d -> bn2 batchnorm -> add -> relu" in src
    assert "resnet.dln:7-11: conv2 -> bn2 -> add -> relu" in src
    assert "import triton" in src and "def fused_bn_relu_reference" in src
    compile(src, "resnet18_fused.py", "exec")


def test_compile_never_imports_triton(tmp_path):
    import subprocess
    import sys

    code = ("import sys, dlc; dlc.compile(sys.argv[1], fuse=True, optimize='inference'); "
            "print('torch' in sys.modules, 'triton' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(SPECS_DIR / "resnet18.dln")], capture_output=True, text=True,
                       check=True)
    assert r.stdout.split() == ["False", "False"]


def test_fused_module_runs_without_triton(tmp_path):
    """The generated file's PyTorch path works where triton cannot be imported."""
    import subprocess
    import sys

    out = tmp_path / "lenet.py"
    dlc_src = dlc.compile(SPECS_DIR / "lenet5.dln", fuse=True).source
    out.write_text(dlc_src, encoding="utf-8")
    code = ("import sys; sys.modules['triton'] = None; sys.path.insert(0, sys.argv[1]); import torch, lenet; "
            "m = lenet.LeNet5(); print(tuple(m(torch.randn(2, 1, 32, 32)).shape), lenet.triton, lenet.LAUNCHES)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                       env={**__import__("os").environ, "TRITON_INTERPRET": "1"})
    assert r.stdout.split("\n")[0] == "(2, 10) None {}"  # the PyTorch path: no kernel launched


def test_paths():
    assert Path(SPECS_DIR).is_dir() and SPECS


def test_folded_weights_follow_new_weights():
    torch.manual_seed(0)
    plain, fast, graph = pair("autoencoder", optimize="inference")
    x = inputs(graph)
    plain.eval()
    fast.eval()
    with torch.no_grad():
        assert_outputs_close(plain(*x), fast(*x))
        for model in (plain, fast):  # in place, as optimizers and load_state_dict change tensors
            model.enc1.conv.weight.mul_(1.5)
            model.enc1.bn.running_var.mul_(2.0)
        assert_outputs_close(plain(*x), fast(*x))
        plain.enc2.bn.bias.add_(1.0)
        fast.load_state_dict(plain.state_dict())
        assert_outputs_close(plain(*x), fast(*x))
