"""specs/efficientnet_b0.dln against torchvision.models.efficientnet_b0(weights=None): same parameter count, the
spec's state_dict loads into torchvision's model strictly, equal outputs in eval mode, and in training mode (batch
statistics) with stochastic depth on in both: under one seed they drop the same rows. Also the two language rules
the spec needs: a layer labelled `block` (torchvision's MBConv.block), and parentheses around one stage
inside a labelled group making a one-child Sequential (torchvision's `features.1.0`)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import SPECS_DIR

import dlc
from dlc.diagnostics import DlcError

SPEC = SPECS_DIR / "efficientnet_b0.dln"


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    model = dlc.load(SPEC)
    ref = torchvision.models.efficientnet_b0(weights=None)
    ref.load_state_dict(model.state_dict(), strict=True)
    for m in model.modules():  # statistics away from their initial 0 and 1, so eval mode is tested too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    ref.load_state_dict(model.state_dict(), strict=True)
    return model, ref


def test_parameter_count_and_names_match_torchvision():
    compiled = dlc.compile(SPEC)
    ref = torchvision.models.efficientnet_b0(weights=None)
    assert sum(p.numel() for p in ref.parameters()) == 5_288_548
    assert "Parameters: 5,288,548" in compiled.source
    assert list(compiled.instantiate().state_dict()) == list(ref.state_dict())


def test_eval_outputs_match_torchvision(pair):
    model, ref = pair
    model.eval()
    ref.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_stochastic_depth_probabilities_are_torchvisions(pair):
    """Each MBConv with a shortcut has torchvision's `stochastic_depth` module, p = 0.2 * block index / 16."""
    model, ref = pair
    got = {name: (m.p, m.mode) for name, m in model.named_modules() if type(m).__name__ == "StochasticDepth"}
    want = {name: (m.p, m.mode) for name, m in ref.named_modules()
            if isinstance(m, torchvision.ops.StochasticDepth) and ref.get_submodule(name[: -len(".stochastic_depth")])
            .use_res_connect}
    assert len(got) == 9 and got == want


def test_training_outputs_and_gradients_match_torchvision(pair):
    """Batch statistics and stochastic depth in training mode, drawing the same rows under one seed (classifier
    dropout off in both: stochastic depth is what is tested here), and not the identity (a batch of 8: some rows
    dropped)."""
    model, ref = pair
    model = dlc.load(SPEC, dropout=0.0, size=96)
    model.load_state_dict(pair[0].state_dict())
    ref.classifier[0].p = 0.0
    model.train()
    ref.train()
    x = torch.randn(8, 3, 96, 96)
    torch.manual_seed(5)
    got = model(x)
    torch.manual_seed(5)
    want = ref(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # stochastic depth did something: the same network without it gives other outputs
    plain = dlc.load(SPEC, dropout=0.0, size=96, stochastic_depth_prob=0.0)
    plain.load_state_dict(pair[0].state_dict())
    assert (plain.train()(x) - got).abs().max().item() > 1e-2
    g = torch.randn_like(want)
    (got * g).sum().backward()
    (want * g).sum().backward()
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-3, atol=1e-4, msg=name)
    for name, buf in model.named_buffers():  # running statistics updated alike
        torch.testing.assert_close(buf, ref.get_buffer(name).to(buf.dtype), rtol=1e-4, atol=1e-5, msg=name)


def _compile(tmp_path, text: str) -> dlc.Compiled:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return dlc.compile(path)


def test_one_stage_in_parentheses_is_a_nested_sequential(tmp_path):
    compiled = _compile(tmp_path, """
network N {
    input x: [8]
    output y = x -> g: (linear(8) -> (linear(8)) -> (block: linear(8) -> relu) -> (linear(4)) * 2)
}
""")
    keys = [k for k in compiled.instantiate().state_dict() if k.endswith("weight")]
    assert keys == ["g.0.weight", "g.1.0.weight", "g.2.block.weight", "g.3.0.weight", "g.4.0.weight"]


def test_labels_may_be_statement_keywords_but_names_may_not(tmp_path):
    compiled = _compile(tmp_path, "network N {\n    input x: [8]\n"
                                  "    output y = x -> input: linear(8) -> block: linear(8) -> network: linear(2)\n}\n")
    assert "self.block = nn.Linear(8, 8)" in compiled.source
    assert [k for k in compiled.instantiate().state_dict() if k.endswith("weight")] == [
        "input.weight", "block.weight", "network.weight"]
    with pytest.raises(DlcError) as info:
        _compile(tmp_path, "network N {\n    input x: [8]\n    output y = x -> then: linear(8)\n}\n")
    assert (info.value.code, info.value.span.line, info.value.span.col) == ("bad-name", 3, 21)
    assert "`then` cannot be used as a layer name: it is a keyword of the language" in info.value.message


def test_the_rolled_diagram_draws_every_edge():
    """Rolling `features.5` (three MBConv(112) instances, the first without the shortcut the others add) must not
    pair unlike nodes: the diagram renders with the roll on."""
    from dlc.backends.graphviz import to_dot

    dot = to_dot(dlc.compile(SPEC).graph, roll=True)
    assert "features.5" in dot and "->" in dot
