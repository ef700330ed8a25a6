"""The PyTorch backend: op coverage, class sharing, module forms inside nn.Sequential, and the helper runtime."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import dlc
from dlc.backends.torch.runtime import closure, definitions, folding, layers
from dlc.backends.torch.runtime import recurrent as rnn_runtime

SPECS = "specs"


def _classes(source: str) -> list[str]:
    return [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]


def test_block_instances_differing_only_in_numbers_share_a_class():
    src = dlc.compile(f"{SPECS}/resnet18.dln").source
    classes = _classes(src)
    # BasicBlock with and without the downsample branch: two code shapes, eight instances
    assert sorted(c for c in classes if c.startswith("BasicBlock")) == ["BasicBlock", "BasicBlock_2"]
    assert "def __init__(self, c):" in src
    assert src.count("BasicBlock(c=") == 5 and src.count("BasicBlock_2(c=") == 3


def test_parametrised_class_reproduces_every_instance():
    m = dlc.load(f"{SPECS}/resnet18.dln", classes=10)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["layer3.0.conv1.weight"] == (256, 128, 3, 3)
    assert shapes["layer3.0.downsample.0.weight"] == (256, 128, 1, 1)
    assert shapes["layer4.1.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["fc.weight"] == (10, 512)


def _spec(tmp_path, text: str) -> str:
    p = tmp_path / "net.dln"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("seqs", ["true", "false"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recurrent_layers_inside_a_group_equal_the_inline_form(tmp_path, merge, seqs, cell):
    layer = f"bidirectional({cell}(5, return_sequences={seqs}), merge={merge})"
    grouped = _spec(tmp_path, f"""
network G {{
    input t: [T] int64
    output y = t -> enc: (embedding(20, 8) -> {cell}(6) -> {layer})
}}""")
    inline = str(tmp_path / "inline.dln")
    with open(inline, "w") as f:
        f.write(f"""
network I {{
    input t: [T] int64
    output y = t -> e: embedding(20, 8) -> r: {cell}(6) -> b: {layer}
}}""")
    torch.manual_seed(0)
    g, i = dlc.load(grouped), dlc.load(inline)
    sd = {re.sub(r"^enc\.(\d)\.", lambda m: {"0": "e.", "1": "r.", "2": "b."}[m.group(1)], k): v
          for k, v in g.state_dict().items()}
    i.load_state_dict(sd, strict=True)
    t = torch.randint(0, 20, (3, 7))
    torch.testing.assert_close(g(t), i(t), rtol=0, atol=0)


def test_self_attention_inside_a_group_equals_the_inline_form(tmp_path):
    grouped = _spec(tmp_path, """
network G {
    input x: [T, 8]
    output y = x -> blk: (attention(heads=2, causal=true) -> layernorm)
}""")
    inline = str(tmp_path / "inline.dln")
    with open(inline, "w") as f:
        f.write("""
network I {
    input x: [T, 8]
    output y = x -> a: attention(heads=2, causal=true) -> n: layernorm
}""")
    torch.manual_seed(0)
    g, i = dlc.load(grouped), dlc.load(inline)
    i.load_state_dict({k.replace("blk.0.", "a.").replace("blk.1.", "n."): v for k, v in g.state_dict().items()})
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(g(x), i(x))
    # causal: the first output position must not depend on later positions
    x2 = x.clone()
    x2[:, 3:] += 1.0
    torch.testing.assert_close(g(x2)[:, :3], g(x)[:, :3])


@pytest.mark.parametrize("spec", sorted(__import__("glob").glob(f"{SPECS}/*.dln")))
def test_generated_source_is_tidy(spec):
    """Lines of at most 120 characters, no trailing spaces, only the imports it uses."""
    src = dlc.compile(spec).source
    tree = ast.parse(src)
    for i, line in enumerate(src.splitlines(), 1):
        assert len(line) <= 120, f"line {i} is {len(line)} characters long"
        assert line == line.rstrip(), f"line {i} has trailing whitespace"
    assert src.endswith("\n") and not src.endswith("\n\n")
    imported = {a.asname or a.name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert imported <= used, f"unused imports: {imported - used}"


def test_a_block_that_uses_itself_compiles_and_runs(tmp_path):
    spec = _spec(tmp_path, """
block Stack(n: int, u: int) {
    input x
    return if n == 0 then x else x -> linear(u) -> relu -> Stack(n - 1, u)
}
network N {
    input x: [4]
    output y = x -> Stack(3, 5)
}""")
    m = dlc.load(spec)
    assert sum(p.numel() for p in m.parameters()) == (4 * 5 + 5) + 2 * (5 * 5 + 5)
    # three nested levels: stack_0.stack_0.linear_0 is the innermost linear layer
    assert "stack_0.stack_0.linear_0.weight" in m.state_dict()
    x = torch.randn(2, 4)
    inner = m.stack_0
    expected = torch.relu(inner.stack_0.stack_0.linear_0(
        torch.relu(inner.stack_0.linear_0(torch.relu(inner.linear_0(x))))))
    torch.testing.assert_close(m(x), expected)


def test_timedistributed_convolutions_keep_channels_after_the_time_axis(tmp_path):
    spec = _spec(tmp_path, """
network V {
    input frames: [6, 3, 16, 16]
    f = frames -> a: timedistributed(conv2d(8, k=3, pad=1))
    g = frames -> b: timedistributed(conv2d(4, k=3, pad=1))
    output y = concat(f, g) -> timedistributed(maxpool(global)) -> flatten(start=1)
}""")
    m = dlc.load(spec)
    x = torch.randn(2, 6, 3, 16, 16)
    steps = x.flatten(0, 1)
    want = torch.cat([m.a(steps), m.b(steps)], dim=1).amax(dim=(2, 3)).unflatten(0, (2, 6))
    torch.testing.assert_close(m(x), want)  # [B, T, 12]: concatenated along channels, per time step


def test_varying_numbers_that_no_parameter_explains_are_named_after_their_constructor_slot(tmp_path):
    spec = _spec(tmp_path, """
block Squeeze(f: float) {
    input x
    return x -> reduce: conv2d(int(channels(x) * f), k=1)
}
network N {
    input x: [16, 8, 8]
    output y = x -> a: Squeeze(0.5) -> b: Squeeze(0.25)
}""")
    src = dlc.compile(spec).source
    assert "def __init__(self, x_channels, reduce_out_channels):" in src
    assert "Squeeze(x_channels=16, reduce_out_channels=8)" in src
    assert "Squeeze(x_channels=8, reduce_out_channels=2)" in src
    assert dlc.load(spec)(torch.randn(2, 16, 8, 8)).shape == (2, 2, 8, 8)


# ---- the helper runtime (backends/torch/runtime), tested as the modules it is --------------------------------

_MERGES = {"concat": lambda f, b: torch.cat([f, b], dim=-1), "sum": torch.add, "mul": torch.mul,
           "ave": lambda f, b: (f + b) / 2}


@pytest.mark.parametrize("merge", sorted(_MERGES))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_merge_directions_is_the_keras_merge(merge, return_sequences):
    y = torch.randn(2, 5, 6)
    if return_sequences:
        fwd, bwd = y[..., :3], y[..., 3:]
    else:  # Keras: the backward direction's final output is the one at time step 0
        fwd, bwd = y[:, -1, :3], y[:, 0, 3:]
    got = rnn_runtime.merge_directions(y, merge, return_sequences)
    torch.testing.assert_close(got, _MERGES[merge](fwd, bwd), rtol=0, atol=0)


def test_merge_directions_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown merge mode 'max'"):
        rnn_runtime.merge_directions(torch.randn(1, 2, 4), "max")


@pytest.mark.parametrize("cls,base", [("SequenceLSTM", nn.LSTM), ("SequenceGRU", nn.GRU), ("SequenceRNN", nn.RNN)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_sequence_layers_return_the_keras_output(cls, base, bidirectional):
    torch.manual_seed(0)
    layer = getattr(rnn_runtime, cls)(4, 3, batch_first=True, bidirectional=bidirectional, return_sequences=False,
                                      merge="mul")
    plain = base(4, 3, batch_first=True, bidirectional=bidirectional)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 4)
    y, _ = plain(x)
    want = rnn_runtime.merge_directions(y, "mul", False) if bidirectional else y[:, -1]
    torch.testing.assert_close(layer(x), want, rtol=0, atol=0)


def test_stateless_helper_layers():
    x = torch.randn(2, 3, 4)
    assert layers.Reshape((12,))(x).shape == (2, 12)
    torch.testing.assert_close(layers.Permute((2, 1))(x), x.permute(0, 2, 1))
    torch.testing.assert_close(layers.Abs()(x), x.abs())
    torch.testing.assert_close(layers.Scale(2.5)(x), x * 2.5)
    torch.testing.assert_close(layers.Shift(-1.0)(x), x - 1.0)
    dropout = layers.AlwaysDropout(0.5).eval()
    torch.manual_seed(0)
    kept = dropout(torch.ones(1000))
    assert 300 < int((kept == 0).sum()) < 700 and set(kept.unique().tolist()) <= {0.0, 2.0}  # on in eval mode


def test_folded_batchnorm_equals_the_layer_then_its_batchnorm_in_eval_mode():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    conv.eval(), bn.eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(folding.folded_batchnorm(conv, bn, x), bn(conv(x)))
        bn.running_mean.add_(1.0)  # the cached folded weights are stale now: recomputed
        torch.testing.assert_close(folding.folded_batchnorm(conv, bn, x), bn(conv(x)))
        seq = folding.FoldingSequential(conv, bn, nn.ReLU(), fold=("0",)).eval()
        torch.testing.assert_close(seq(x), torch.relu(bn(conv(x))))


def test_a_generated_module_embeds_what_it_uses_with_what_that_uses():
    assert [d.name for d in closure(["SequenceLSTM", "torch"])] == ["merge_directions", "SequenceOutput",
                                                                   "SequenceLSTM"]
    assert [d.name for d in closure(["FoldingSequential"])] == ["folded_batchnorm", "folded_parameters", "apply_layer",
                                                                "FoldingSequential"]
    assert closure(["nn", "F", "x"]) == []
    assert set(definitions()) == {n for m in (layers, rnn_runtime, folding) for n in vars(m)
                                  if not n.startswith("_") and getattr(vars(m)[n], "__module__", "") == m.__name__}


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed (it comes with the test extra: pip install -e '.[test]')")
def test_statements_carrying_a_comment_are_laid_out_when_too_long(tmp_path):
    """A statement with a comment of its own (`# every time step`, `# fused gate kernels`) and its location: one
    trailing comment after the last bracket once split, as ruff formats it, within 120 columns."""
    spec = _spec(tmp_path, """
network LongNamesThroughout {
    input frames_of_the_video_clip: [6, 3, 8, 8]
    input tokens_of_the_sentence: [T, 5]
    per_frame_convolution_output = frames_of_the_video_clip -> timedistributed(conv2d(4, k=3, pad=1))
    sentence_summary_vector = tokens_of_the_sentence -> bidirectional(gru(4, return_sequences=false), merge=sum)
    output y = per_frame_convolution_output
    output z = sentence_summary_vector
}""")
    out = tmp_path / "out"
    out.mkdir()
    for name, options in {"plain": {}, "fused": {"fuse": True, "fused_recurrent": True}}.items():
        (out / f"{name}.py").write_text(dlc.compile(spec, **options).source, encoding="utf-8")
    text = (out / "plain.py").read_text() + (out / "fused.py").read_text()
    assert "# every time step  # net.dln:5" in text and "# fused gate kernels  # net.dln:6" in text
    assert max(len(line) for line in text.splitlines()) <= 120
    options = ["--isolated", "--line-length", "120", "--target-version", "py310"]
    check = subprocess.run([sys.executable, "-m", "ruff", "check", *options, "--select", "E,W,F,I,B", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    form = subprocess.run([sys.executable, "-m", "ruff", "format", *options, "--check", "--diff", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert form.returncode == 0, form.stdout + form.stderr
