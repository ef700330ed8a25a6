"""`stochastic_depth(p, mode=row)` (compiler/ops/regularize.py) against torchvision.ops.stochastic_depth: the same
numbers under one seed in training (both modes, as a function and as a labelled StochasticDepth module), the
identity in eval mode and with p = 0, gradients alike, and its diagnostics."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

import dlc
from dlc.diagnostics import DlcError


def _compile(tmp_path, text: str, **options) -> dlc.Compiled:
    path = tmp_path / "sd.dln"
    path.write_text(text, encoding="utf-8")
    return dlc.compile(path, **options)


def _network(stage: str) -> str:
    return f"network T {{\n    input x: [4, 3, 3]\n    output y = x -> {stage}\n}}\n"


@pytest.mark.parametrize("labelled", [False, True], ids=["function", "module"])
@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("p", [0.0, 0.4, 1.0])
def test_matches_torchvision_under_one_seed(tmp_path, p, mode, labelled):
    label = "sd: " if labelled else ""
    compiled = _compile(tmp_path, _network(f"{label}stochastic_depth({p}, mode={mode})"))
    if labelled:
        assert f'self.sd = StochasticDepth({p}, "{mode}")' in compiled.source
    else:
        assert f'stochastic_depth(x, {p}, "{mode}", training=self.training)' in compiled.source
    model = compiled.instantiate()
    x = torch.randn(64, 4, 3, 3)
    model.train()
    for seed in range(3):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        torch.manual_seed(seed)
        got = model(xa)
        after = torch.random.get_rng_state()
        torch.manual_seed(seed)
        want = torchvision.ops.stochastic_depth(xb, p, mode, training=True)
        assert torch.equal(torch.random.get_rng_state(), after)  # the generator advanced alike
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        got.sum().backward()
        want.sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    model.eval()
    state = torch.random.get_rng_state()
    torch.testing.assert_close(model(x), x, rtol=0, atol=0)  # eval: the identity, drawing nothing
    assert torch.equal(torch.random.get_rng_state(), state)


def test_row_mode_drops_whole_samples_and_scales_the_rest(tmp_path):
    model = _compile(tmp_path, _network("stochastic_depth(0.5)")).instantiate().train()
    torch.manual_seed(1)
    y = model(torch.ones(400, 4, 3, 3))
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # kept samples are scaled by 1 / (1 - p)
    assert (per_sample.min(dim=1).values == per_sample.max(dim=1).values).all()  # one draw per sample
    assert 150 < int((per_sample[:, 0] == 0).sum()) < 250


def test_module_repr_and_attributes_are_torchvisions(tmp_path):
    compiled = _compile(tmp_path, _network("stochastic_depth: stochastic_depth(0.1)"))
    sd = compiled.instantiate().stochastic_depth
    ref = torchvision.ops.StochasticDepth(0.1, "row")
    assert (sd.p, sd.mode) == (ref.p, ref.mode)
    assert "p=0.1, mode=row" in repr(sd)
    assert not list(sd.parameters()) and not list(sd.buffers())


@pytest.mark.parametrize("stage, code, col, message", [
    ("stochastic_depth(1.5)", "bad-argument", 38, "`stochastic_depth`: p must be in [0, 1], got 1.5"),
    ("stochastic_depth(0.1, mode=col)", "bad-argument", 48,
     "`stochastic_depth`: `mode` must be one of row, batch; got `col`"),
    ("stochastic_depth", "missing-argument", 21, "`stochastic_depth` needs the argument `p`"),
])
def test_bad_arguments(tmp_path, stage, code, col, message):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, _network(stage))
    err = info.value
    assert (err.code, err.message) == (code, message)
    assert (err.span.line, err.span.col) == (3, col)


def test_cli_reports_a_bad_probability(tmp_path):
    path = tmp_path / "sd.dln"
    path.write_text(_network("stochastic_depth(p=-0.1)"), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "dlc", "compile", str(path)], check=False, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    assert "sd.dln:3:" in r.stderr and "error[bad-argument]" in r.stderr and "p must be in [0, 1]" in r.stderr


def test_integer_input_is_refused(tmp_path):
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, "network T {\n    input x: [4] int64\n    output y = x -> stochastic_depth(0.1)\n}\n")
    err = info.value
    assert (err.code, err.message) == ("type-mismatch", "`stochastic_depth` needs a floating-point input, got int64")
    assert (err.span.line, err.span.col) == (3, 21)
