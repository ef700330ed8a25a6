"""`timedistributed` over blocks and pipelines: the time axis folded into the batch, the block (or the group, an
nn.Sequential) applied to every step, batch and time split again.

Each network is compared with a torch loop over the time steps applying the same module (the generated block or
group, so the weights are the same), forward and gradient, in training mode (no layer here uses batch statistics).
Errors are checked as a user sees them: the CLI's exit code 1 and the diagnostic with its ``line:col``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dlc
from conftest import cli_rejects, write_spec


def _loop(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module`` applied to each time step of ``x`` ([B, T, ...]) in turn, the results stacked on axis 1."""
    return torch.stack([module(x[:, t]) for t in range(x.shape[1])], dim=1)


def _same_as_loop(model: torch.nn.Module, module: torch.nn.Module, x: torch.Tensor) -> None:
    """The network's output and input gradient equal those of a loop over the time steps applying ``module``."""
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    ya = model(xa)
    yb = _loop(module, xb)
    assert ya.shape == yb.shape
    torch.testing.assert_close(ya, yb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad)


BLOCK = """
block Step(c: int) {
    input x
    return x -> conv: conv2d(c, k=3, pad=1) -> relu -> maxpool(2) -> flatten -> head: linear(5)
}
network Video {
    input frames: [T, 3, 8, 8]
    output y = frames -> td: timedistributed(Step(4))
}
"""


def test_a_block_at_every_step_matches_a_loop_over_time(tmp_path: Path) -> None:
    compiled = dlc.compile(write_spec(tmp_path, BLOCK))
    assert "steps = frames.flatten(0, 1)" in compiled.source
    assert "y = y.unflatten(0, frames.shape[:2])" in compiled.source
    model = compiled.instantiate()
    # the state_dict names are the block's under the label, as Keras' TimeDistributed(model) keeps them
    assert sorted(model.state_dict()) == ["td.conv.bias", "td.conv.weight", "td.head.bias", "td.head.weight"]
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 8, 8)
    _same_as_loop(model, model.td, x)
    # the symbolic time axis takes any length
    assert model(torch.randn(3, 7, 3, 8, 8)).shape == (3, 7, 5)
    assert compiled.graph.types[compiled.graph.outputs[0][1]].shape == ("T", 5)


GROUP = """
network Video {
    input frames: [6, 3, 8, 8]
    output y = frames -> td: timedistributed((conv2d(4, k=3) -> relu -> maxpool(2)))
}
"""


def test_a_group_is_an_nn_sequential_named_like_one(tmp_path: Path) -> None:
    compiled = dlc.compile(write_spec(tmp_path, GROUP))
    model = compiled.instantiate()
    assert isinstance(model.td, torch.nn.Sequential)
    assert sorted(model.state_dict()) == ["td.0.bias", "td.0.weight"]
    torch.manual_seed(1)
    x = torch.randn(2, 6, 3, 8, 8)
    _same_as_loop(model, model.td, x)
    out = compiled.graph.types[compiled.graph.outputs[0][1]]
    assert out.shape == (6, 4, 3, 3) and out.layout == "tcf"  # channels on axis 1, after time


SEQUENCES = """
block Mlp(h: int) {
    input x
    return x -> fc1: linear(h) -> gelu -> fc2: linear(3)
}
network Words {
    input chars: [T, 12, 16]                     # [T, characters, features]
    a = chars -> timedistributed(Mlp(8))         # unlabelled: timedistributed_0
    b = timedistributed((lstm(6, return_sequences=false) -> linear(3)), chars)
    output y = a -> timedistributed((layernorm -> l: linear(2) -> flatten))
    output z = b
}
"""


def test_unlabelled_and_call_forms_and_sequence_steps(tmp_path: Path) -> None:
    compiled = dlc.compile(write_spec(tmp_path, SEQUENCES))
    model = compiled.instantiate()
    keys = set(model.state_dict())
    assert {"timedistributed_0.fc1.weight", "timedistributed_0.fc2.bias", "b.0.weight_ih_l0", "b.1.weight",
            "timedistributed_1.0.weight", "timedistributed_1.l.weight"} <= keys
    torch.manual_seed(2)
    x = torch.randn(2, 4, 12, 16)
    y, z = model(x)
    assert y.shape == (2, 4, 24) and z.shape == (2, 4, 3)
    steps = torch.stack([model.timedistributed_0(x[:, t]) for t in range(4)], dim=1)
    torch.testing.assert_close(y, torch.stack([model.timedistributed_1(steps[:, t]) for t in range(4)], dim=1))
    torch.testing.assert_close(z, _loop(model.b, x))


def test_the_summary_and_the_diagram_show_the_steps(tmp_path: Path) -> None:
    path = write_spec(tmp_path, BLOCK)
    r = subprocess.run([sys.executable, "-m", "dlc", "summary", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "td.conv" in r.stdout and "[B*T, 4, 8, 8]" in r.stdout and "[B, T, 5]" in r.stdout
    dot = dlc.compile(path).diagram().source
    assert "time into batch" in dot and "batch into time" in dot


@pytest.mark.parametrize("text, code, where, parts", [
    ("""
block Two {
    input a
    input b
    return a + b
}
network N {
    input x: [4, 8]
    output y = x -> timedistributed(Two)
}
""", "bad-argument", "9:21", ["one input", "`Two` takes 2 (a, b)"]),
    ("""
block Split {
    input a
    h1, h2 = a -> chunk(2)
    return h1, h2
}
network N {
    input x: [4, 8]
    output y = x -> timedistributed(Split)
}
""", "bad-argument", "9:21", ["one result", "returns 2"]),
    ("""
network N {
    input x: [8]
    output y = x -> timedistributed((linear(4) -> relu))
}
""", "shape-mismatch", "4:21", ["expects [T, ...]"]),
    ("""
network N {
    input x: [4, 3, 8, 8]
    output y = x -> g: (relu -> timedistributed((conv2d(4, k=3) -> relu)))
}
""", "bad-group", "4:33", ["cannot be part of a labelled group"]),
    ("""
block Step(c: int) {
    input x
    return x -> linear(c)
}
network N {
    input x: [4, 8]
    output y = x -> timedistributed(Step(x))
}
""", "bad-argument", "8:37", ["compile-time arguments only"]),
    ("""
network N {
    input x: [4, 6, 8]
    output y = x -> timedistributed((linear(8) -> lstm(4, return_state=true)))
}
""", "bad-group", "4:51", ["`lstm` gives a tuple of outputs"]),
    ("""
block Step(c: int) {
    input x
    return x -> linear(c)
}
network N {
    input x: [4, 8]
    s = timedistributed(Step(8))
    output y = x -> s
}
""", "bad-argument", "8:25", ["wraps a built-in layer, not the block `Step`", "`x -> timedistributed(s)`"]),
    ("""
network N {
    input x: [4, 8]
    p = linear(8)
    output y = x -> td: timedistributed(p)
}
""", "bad-name", "5:21", ["shared instance", "cannot be labelled"]),
])
def test_bad_uses_are_positioned_diagnostics(tmp_path: Path, text: str, code: str, where: str,
                                             parts: list[str]) -> None:
    cli_rejects(tmp_path, text, code, where, *parts)


SHARED = """
block Step(c: int) {
    input x
    return x -> conv: conv2d(c, k=3, pad=1) -> relu
}
network Shared {
    input clip: [5, 3, 8, 8]
    input still: [3, 8, 8]
    s = Step(4)
    p = linear(2)
    frames = clip -> timedistributed(s)               # the instance at every time step
    output y = frames -> flatten(start=1) -> timedistributed(p)
    output z = still -> s -> flatten -> p             # the same modules once more
}
"""


def test_a_shared_instance_at_every_step_and_elsewhere_is_one_module(tmp_path: Path) -> None:
    """`timedistributed(s)` applies the shared instance `s` to the folded steps: one module, applied per step and
    directly, with the same weights (so with the same results for the same image)."""
    m = dlc.load(write_spec(tmp_path, SHARED))
    assert sorted(k for k in m.state_dict()) == ["p.bias", "p.weight", "s.conv.bias", "s.conv.weight"]
    clip, still = torch.randn(2, 5, 3, 8, 8), torch.randn(2, 3, 8, 8)
    clip[:, 3] = still
    y, z = m(clip, still)
    assert y.shape == (2, 5, 2) and z.shape == (2, 2)
    step = torch.nn.Sequential(m.s, torch.nn.Flatten(), m.p)
    torch.testing.assert_close(y, _loop(step, clip))
    torch.testing.assert_close(y[:, 3], z)
