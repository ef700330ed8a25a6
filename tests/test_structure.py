"""Structure of networks: block parameter types (`int2`, `list[int]`, unions), outputs computed only in training
(`output aux = ... if training`), and specs/inception_v3.dln against torchvision's Inception v3 (strict load, equal
outputs in eval at 299 and 75, in training with batch statistics and the aux output at 299).

Errors are checked as a user sees them: the CLI's exit code 1 and the diagnostic with its ``line:col``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import dlc
from conftest import SPECS_DIR, cli_rejects, write_spec


# ---- block parameter types ---------------------------------------------------------------------------------------

TYPED = """
block Conv(c: int, k: int2 = 3, pad: int | list[int] = 0, scale: list[float] = [1, 2], act: str = relu) {
    input x
    return x -> conv: conv2d(c, k=k, pad=pad, bias=false)
}
network N {
    input x: [3, 16, 16]
    output y = x -> a: Conv(4, k=[1, 3], pad=[0, 1]) -> b: Conv(4, scale=[0.5, 1]) -> c: Conv(2, act="gelu")
}
"""


def test_int2_and_list_parameters_compile_and_run(tmp_path: Path) -> None:
    compiled = dlc.compile(write_spec(tmp_path, TYPED))
    # one class: the int2 parameters are its arguments (tests/test_sharing.py)
    assert "kernel_size=k, padding=pad" in compiled.source
    assert "Conv(c=4, k=(1, 3), x_channels=3, pad=(0, 1))" in compiled.source
    m = compiled.instantiate()
    assert m.a.conv.weight.shape == (4, 3, 1, 3)
    assert m.b.conv.weight.shape == (4, 4, 3, 3)
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 2, 12, 12)


@pytest.mark.parametrize("ptype,arg,ok", [
    ("int2", "3", True), ("int2", "[1, 7]", True), ("int2", "[]", False), ("int2", "2.5", False),
    ("list[int]", "[1, 2, 3]", True), ("list[int]", "[1, 2.5]", False), ("list[int]", "3", False),
    ("list[float]", "[1, 2.5]", True), ("list[float]", "[true]", False),
    ("int | list[int]", "[4, 4]", True), ("int | str", "max", True), ("int | str", "1.5", False),
    ("list[str]", "[\"a\", 1]", False), ("list[str]", "[\"a\", \"b\"]", True), ("bool", "true", True),
    ("bool", "1", False), ("str", "\"x\"", True), ("list[list[int]]", "[[1], [2, 3]]", True),
])
def test_parameter_types_accept_and_refuse(tmp_path: Path, ptype: str, arg: str, ok: bool) -> None:
    text = f"block B(v: {ptype}) {{\n    input x\n    return x\n}}\nnetwork N {{\n    input x: [4]\n" \
           f"    output y = x -> B(v={arg})\n}}\n"
    if ok:
        dlc.compile(write_spec(tmp_path, text))
    else:
        cli_rejects(tmp_path, text, "type-mismatch", "7:25", f"parameter `v` is {ptype}, got")


def test_int_parameter_given_a_pair_hints_int2(tmp_path: Path) -> None:
    err = cli_rejects(tmp_path, "block B(k: int) {\n    input x\n    return x -> conv2d(4, k=k)\n}\n"
                 "network N {\n    input x: [3, 8, 8]\n    output y = x -> B(k=[1, 7])\n}\n",
                 "type-mismatch", "7:25", "parameter `k` is int, got a list")
    assert "declare `k: int2`" in err


def test_unknown_parameter_type(tmp_path: Path) -> None:
    err = cli_rejects(tmp_path, "block B(k: list[nt]) {\n    input x\n    return x\n}\n"
                 "network N {\n    input x: [4]\n    output y = x -> B(k=[1])\n}\n",
                 "unknown-type", "1:9", "unknown parameter type `list[nt]`")
    assert "did you mean `int`?" in err


def test_network_parameter_of_list_type_from_set(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "network N(sizes: list[int] = [2, 4]) {\n    input x: [8]\n"
                            "    output y = x -> reshape(sizes)\n}\n")
    assert dlc.load(path, sizes=[4, 2])(torch.randn(3, 8)).shape == (3, 4, 2)
    with pytest.raises(dlc.diagnostics.DlcError) as e:
        dlc.load(path, sizes=[5, 3.5])
    assert e.value.code == "type-mismatch" and "(from --set/--params)" in e.value.message


# ---- outputs computed only in training ---------------------------------------------------------------------------

AUX = """
network Aux {
    input x: [3, 16, 16]
    h = x -> stem: conv2d(8, k=3, pad=1) -> relu
    side = h -> aux_head: (avgpool(global) -> flatten -> linear(5))
    output logits = h -> avgpool(global) -> flatten -> fc: linear(5)
    output aux = side -> relu if training
}
"""


def test_training_output_is_computed_and_returned_in_training_only(tmp_path: Path) -> None:
    compiled = dlc.compile(write_spec(tmp_path, AUX))
    assert "        if self.training:  # the outputs of training mode only\n" \
           "            side = self.aux_head(h)" in compiled.source
    assert "aux: [B, 5] (training mode only)" in compiled.source
    m = compiled.instantiate()
    x = torch.randn(2, 3, 16, 16)
    logits, aux = m.train()(x)
    with torch.no_grad():
        side = m.aux_head(torch.relu(m.stem(x)))
        torch.testing.assert_close(aux, torch.relu(side))
        eval_logits = m.eval()(x)
    assert isinstance(eval_logits, torch.Tensor)
    torch.testing.assert_close(eval_logits, logits.detach())


def test_training_output_in_the_ir_and_summary(tmp_path: Path) -> None:
    path = write_spec(tmp_path, AUX)
    ir = subprocess.run([sys.executable, "-m", "dlc", "ir", str(path)], capture_output=True, text=True, timeout=120)
    assert ir.returncode == 0 and "- {name: aux, value: 9, training: true}" in ir.stdout, ir.stdout
    s = subprocess.run([sys.executable, "-m", "dlc", "summary", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert s.returncode == 0 and "aux [B, 5] (training only)" in s.stdout


def test_output_condition_other_than_training(tmp_path: Path) -> None:
    cli_rejects(tmp_path, "network N {\n    input x: [4]\n    output y = x -> relu if eval\n}\n",
           "syntax", "3:29", "an output's condition is `if training`, not `if eval`")


def test_every_output_training_only(tmp_path: Path) -> None:
    cli_rejects(tmp_path, "network N {\n    input x: [4]\n    output y = x -> relu if training\n}\n",
           "no-output", "1:9", "has outputs in training mode only")


# ---- Inception v3 against torchvision ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inception_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, dropout=0.0)
    m = dlc.load(SPECS_DIR / "inception_v3.dln", dropout=0.0)
    m.load_state_dict(tv.state_dict(), strict=True)
    return m, tv


def test_inception_v3_parameters_and_names(inception_pair) -> None:
    m, tv = inception_pair
    assert sum(p.numel() for p in m.parameters()) == 27_161_264 == sum(p.numel() for p in tv.parameters())
    assert list(m.state_dict()) == list(tv.state_dict())


@pytest.mark.parametrize("size", [299, 75])
def test_inception_v3_eval_matches_torchvision(inception_pair, size: int) -> None:
    m, tv = inception_pair
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        got, want = m.eval()(x), tv.eval()(x)
    assert isinstance(got, torch.Tensor)  # eval: logits alone, as torchvision
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_inception_v3_training_matches_torchvision_with_aux(inception_pair) -> None:
    m, tv = inception_pair
    x = torch.randn(2, 3, 299, 299)
    with torch.no_grad():
        logits, aux = m.train()(x)
        want = tv.train()(x)
    torch.testing.assert_close(logits, want.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(aux, want.aux_logits, atol=1e-4, rtol=1e-4)
    for a, b in zip(m.buffers(), tv.buffers()):  # the same batch statistics were folded into the running ones
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---- repeats carrying several tensors ----------------------------------------------------------------------------

WAVE = """
block WaveLayer(c: int) {
    input x
    input skip
    h = x -> filter: conv1d(c, k=3, pad=1) -> tanh
    return x + (h -> res: conv1d(c, k=1)), skip + (h -> out: conv1d(c, k=1))
}
network Wave {
    input x: [8, 16]
    h = x -> conv1d(8, k=1)
    res, skip = (h, h * 0) -> WaveLayer(8) * 3
    output y = skip -> relu
}
"""


def test_repeat_carries_residual_and_skip(tmp_path: Path) -> None:
    compiled = dlc.compile(write_spec(tmp_path, WAVE))
    assert "res, skip = self.wave_layer_1(res, skip)" in compiled.source
    m = compiled.instantiate()
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        h = m.conv1d_0(x)
        res, skip = h, h * 0
        for layer in (m.wave_layer_0, m.wave_layer_1, m.wave_layer_2):  # the same stack written with torch
            g = torch.tanh(layer.filter(res))
            res, skip = res + layer.res(g), skip + layer.out(g)
        torch.testing.assert_close(m(x), torch.relu(skip))


def test_repeat_whose_carried_value_changes_shape(tmp_path: Path) -> None:
    cli_rejects(tmp_path, "block Grow {\n    input x\n    input skip\n    return x, concat(skip, skip)\n}\n"
                     "network N {\n    input x: [4, 6]\n    a, b = (x, x) -> Grow * 2\n    output y = b\n}\n",
           "shape-mismatch", "8:29", "the repeat carries `skip` as [4, 6] float32 but a copy of `Grow` returns it "
           "as [4, 12] float32")


def test_repeat_whose_copy_returns_fewer_values(tmp_path: Path) -> None:
    cli_rejects(tmp_path, "block One {\n    input x\n    input y\n    return x + y\n}\n"
                     "network N {\n    input x: [4]\n    output z = (x, x) -> One * 2\n}\n",
           "shape-mismatch", "8:32", "a repeat carrying 2 tensors needs a stage returning 2, `One` returns 1")


def test_labelled_repeat_cannot_carry(tmp_path: Path) -> None:
    cli_rejects(tmp_path, WAVE.replace("-> WaveLayer(8) * 3", "-> stack: WaveLayer(8) * 3"), "bad-group", "11:31",
           "a labelled repeat cannot carry several tensors")
