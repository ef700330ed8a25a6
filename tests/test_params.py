"""Learnable tensors (``param``), initialisers (``weight_init=``, ``bias_init=``, ``param ... = init``), weight tying
(``tie=``) and ``prelu``: generated code, state_dicts and values against torch.nn twins built by hand with the
same seed, parameter counts, and the diagnostics of bad specs (CLI exit 1, code, line:col)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import dlc
from dlc.backends.graphviz import to_dot
from dlc.backends.summary import summarize
from dlc.diagnostics import DlcError


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str, **params) -> nn.Module:
    return dlc.load(_spec(tmp_path, text), **params)


# ---- learnable tensors ------------------------------------------------------------------------------------------

VIT_HEAD = """
network Head(d: int = 8, n: int = 4) {
    input patches: [n, d]
    param class_token: [1, d]
    param pos: [n + 1, d] = normal(std=0.02)
    z = concat(class_token, patches, dim=0) + pos
    output y = z -> ln: layernorm
}
"""


def test_param_is_stored_with_a_leading_axis_of_one_like_torchvision_vit(tmp_path):
    m = _load(tmp_path, VIT_HEAD)
    sd = m.state_dict()
    assert sd["class_token"].shape == (1, 1, 8) and sd["pos"].shape == (1, 5, 8)
    assert torch.count_nonzero(sd["class_token"]) == 0  # zeros unless given
    code = dlc.compile(_spec(tmp_path, VIT_HEAD)).source
    assert "self.class_token = nn.Parameter(torch.zeros(1, 1, 8))" in code
    assert "nn.init.normal_(self.pos, std=0.02)" in code
    assert "class_token = self.class_token.expand(patches.shape[0], -1, -1)" in code


def test_param_concat_and_add_match_a_torch_twin_forward_and_backward(tmp_path):
    m = _load(tmp_path, VIT_HEAD)
    ln = nn.LayerNorm(8)
    ln.load_state_dict({k[3:]: v for k, v in m.state_dict().items() if k.startswith("ln.")})
    x = torch.randn(3, 4, 8)
    cls = m.class_token.detach().clone().requires_grad_()
    pos = m.pos.detach().clone().requires_grad_()
    want = ln(torch.cat([cls.expand(3, -1, -1), x], dim=1) + pos)
    got = m(x)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    want.backward(g)
    got.backward(g)
    torch.testing.assert_close(m.class_token.grad, cls.grad)  # summed over the batch
    torch.testing.assert_close(m.pos.grad, pos.grad)


def test_param_inside_a_block_is_named_by_the_instance(tmp_path):
    m = _load(tmp_path, """
block Embed(n: int) {
    input x
    param pos: [n, 4] = trunc_normal(std=1.0, a=-0.5, b=0.5)
    return x + pos
}
network N {
    input x: [3, 4]
    output y = x -> encoder: Embed(3)
}
""")
    assert list(m.state_dict()) == ["encoder.pos"]
    assert m.state_dict()["encoder.pos"].shape == (1, 3, 4)
    assert m.state_dict()["encoder.pos"].abs().max() <= 0.5  # truncated at a and b


def test_param_is_counted_in_summary_and_drawn(tmp_path):
    compiled = dlc.compile(_spec(tmp_path, VIT_HEAD))
    table = summarize(compiled.graph)
    assert "class_token" in table and "pos" in table
    assert f"total parameters: {8 + 40 + 16:,}" in table
    m = _load(tmp_path, VIT_HEAD)
    assert sum(p.numel() for p in m.parameters()) == 64
    dot = to_dot(compiled.graph)
    assert "param [5, 8]" in dot and "40 params" in dot


def test_param_fans_are_those_of_the_declared_shape(tmp_path):
    spec = """
network N {
    input x: [6, 10]
    param w: [6, 10] = xavier_uniform
    output y = x * w
}
"""
    torch.manual_seed(0)
    m = _load(tmp_path, spec)
    torch.manual_seed(0)
    want = torch.empty(6, 10)
    nn.init.xavier_uniform_(want)
    torch.testing.assert_close(m.w.detach()[0], want)
    assert "nn.init.xavier_uniform_(self.w[0])" in dlc.compile(_spec(tmp_path, spec)).source


# ---- initialisers -----------------------------------------------------------------------------------------------

INITS = """
network N {
    input x: [8]
    input seq: [5, 8]
    h = x -> fc: linear(16, weight_init=kaiming_normal(mode=fan_out, nonlinearity=relu), bias_init=constant(-2))
    g = h -> gate: linear(4, weight_init=xavier_uniform(gain=2.0), bias_init=uniform(-0.1, 0.1))
    s = seq -> rec: lstm(6, layers=2, weight_init=orthogonal, bias_init=zeros)
    b = seq -> bi: bidirectional(gru(3, weight_init=xavier_normal, bias_init=ones))
    output y = g
    output z = s
    output w = b
}
"""


def _twin() -> dict[str, nn.Module]:
    """The network's modules built by hand in the same order, each initialised right after it is made."""
    fc = nn.Linear(8, 16)
    nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
    nn.init.constant_(fc.bias, -2.0)
    gate = nn.Linear(16, 4)
    nn.init.xavier_uniform_(gate.weight, gain=2.0)
    nn.init.uniform_(gate.bias, -0.1, 0.1)
    rec = nn.LSTM(8, 6, num_layers=2, batch_first=True)
    for name in ("weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"):
        nn.init.orthogonal_(getattr(rec, name))
    for name in ("bias_ih_l0", "bias_hh_l0", "bias_ih_l1", "bias_hh_l1"):
        nn.init.zeros_(getattr(rec, name))
    bi = nn.GRU(8, 3, batch_first=True, bidirectional=True)
    for name in ("weight_ih_l0", "weight_hh_l0", "weight_ih_l0_reverse", "weight_hh_l0_reverse"):
        nn.init.xavier_normal_(getattr(bi, name))
    for name in ("bias_ih_l0", "bias_hh_l0", "bias_ih_l0_reverse", "bias_hh_l0_reverse"):
        nn.init.ones_(getattr(bi, name))
    return {"fc": fc, "gate": gate, "rec": rec, "bi": bi}


def test_initialisers_give_the_values_nn_init_gives_a_twin_with_the_same_seed(tmp_path):
    torch.manual_seed(1234)
    m = _load(tmp_path, INITS)
    torch.manual_seed(1234)
    twin = _twin()
    sd = m.state_dict()
    want = {f"{k}.{n}": v for k, mod in twin.items() for n, v in mod.state_dict().items()}
    assert set(sd) == set(want)
    for k in want:
        torch.testing.assert_close(sd[k], want[k], rtol=0, atol=0, msg=k)


def test_initialisers_have_the_statistics_they_promise(tmp_path):
    torch.manual_seed(0)
    m = _load(tmp_path, INITS)
    assert torch.all(m.fc.bias == -2.0)
    std = (2.0 / 16) ** 0.5  # kaiming normal, fan_out = 16 outputs, relu gain sqrt(2)
    assert abs(m.fc.weight.std().item() - std) < 0.1
    assert m.gate.bias.abs().max() <= 0.1
    bound = 2.0 * (6.0 / (16 + 4)) ** 0.5
    assert m.gate.weight.abs().max() <= bound
    w = m.rec.weight_hh_l0  # [4 * 6, 6]: orthogonal columns
    torch.testing.assert_close(w.T @ w, torch.eye(6), atol=1e-5, rtol=0)
    assert all(torch.all(getattr(m.rec, n) == 0) for n in ("bias_ih_l0", "bias_hh_l1"))
    assert torch.all(m.bi.bias_hh_l0_reverse == 1)


def test_initialiser_lines_are_readable_and_point_at_the_spec(tmp_path):
    code = dlc.compile(_spec(tmp_path, INITS)).source
    assert 'nn.init.kaiming_normal_(self.fc.weight, mode="fan_out", nonlinearity="relu")  # net.dln:5' in code
    assert "nn.init.constant_(self.fc.bias, -2.0)  # net.dln:5" in code
    assert "nn.init.orthogonal_(self.rec.weight_hh_l1)" in code
    assert "nn.init.xavier_normal_(self.bi.weight_hh_l0_reverse)" in code


# ---- weight tying -----------------------------------------------------------------------------------------------

TIED = """
network LM(vocab: int = 30, d: int = 8) {
    input tokens: [T] int64
    h = tokens -> embed: embedding(vocab, d) -> fc: linear(d) -> tanh
    output logits = h -> head: linear(vocab, bias=false, tie=embed)
}
"""


def test_tied_weights_are_one_tensor_with_both_state_dict_keys(tmp_path):
    m = _load(tmp_path, TIED)
    assert m.head.weight is m.embed.weight
    assert {"embed.weight", "head.weight"} <= set(m.state_dict())
    assert sum(p.numel() for p in m.parameters()) == 30 * 8 + 8 * 8 + 8
    assert "self.head.weight = self.embed.weight" in dlc.compile(_spec(tmp_path, TIED)).source


def test_tied_weights_are_counted_once_in_summary_and_diagram(tmp_path):
    compiled = dlc.compile(_spec(tmp_path, TIED))
    assert f"total parameters: {30 * 8 + 8 * 8 + 8:,}" in summarize(compiled.graph)
    assert f"Parameters: {30 * 8 + 8 * 8 + 8:,}" in compiled.source
    head = next(line for line in summarize(compiled.graph).splitlines() if line.startswith("head "))
    # no parameters of its own, but its product is computed: 8 x 30 MACs per time step
    assert head.split()[-8:] == ["0", "(weight", "tied", "to", "embed)", "240*T", "120*T", "B"]
    dot = to_dot(compiled.graph)
    assert "head: linear 30\\nweight tied to embed" in dot
    embed = next(line.split()[0] for line in dot.splitlines() if "embed: embedding" in line)
    head_id = next(line.split()[0] for line in dot.splitlines() if "head: linear" in line)
    assert f'{embed} -> {head_id} [style=dashed' in dot and 'label="tied weight"' in dot


def test_tied_model_matches_a_torch_twin_and_loads_its_state_dict_strictly(tmp_path):
    m = _load(tmp_path, TIED)

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(30, 8)
            self.fc = nn.Linear(8, 8)
            self.head = nn.Linear(8, 30, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.fc(self.embed(t))))

    twin = Twin()
    m.load_state_dict(twin.state_dict(), strict=True)
    assert m.head.weight is m.embed.weight  # still one tensor after the load
    t = torch.randint(0, 30, (2, 7))
    torch.testing.assert_close(m(t), twin(t))
    m(t).sum().backward()
    twin(t).sum().backward()
    torch.testing.assert_close(m.embed.weight.grad, twin.embed.weight.grad)  # both uses' gradients, summed


# ---- prelu ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,n,spec_shape", [
    ((2, 3, 5, 5), 3, "[3, 5, 5]"),  # channels first: nn.PReLU's axis 1
    ((2, 7, 4), 4, "[T, 4]"),  # features last: the slopes are the feature axis's
    ((2, 6), 1, "[6]"),
])
def test_prelu_matches_nn_prelu_forward_and_backward(tmp_path, shape, n, spec_shape):
    arg = f"{n}, init=0.1" if n > 1 else ""
    m = _load(tmp_path, f"network N {{\n    input x: {spec_shape}\n    output y = x -> act: prelu({arg})\n}}\n")
    ref = nn.PReLU(n, init=0.1 if n > 1 else 0.25)
    assert m.act.weight.shape == ref.weight.shape
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(-0.5, 0.5, n))
        m.act.weight.copy_(ref.weight)
    x = torch.randn(*shape)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = ref(x2.movedim(-1, 1)).movedim(1, -1) if spec_shape.startswith("[T") else ref(x2)
    got = m(x1)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    got.backward(g)
    want.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(m.act.weight.grad, ref.weight.grad)


def test_prelu_default_is_one_slope_of_a_quarter(tmp_path):
    m = _load(tmp_path, "network N {\n    input x: [3, 4, 4]\n    output y = x -> prelu\n}\n")
    (mod,) = [c for c in m.modules() if isinstance(c, nn.PReLU)]
    assert mod.weight.shape == (1,) and mod.weight.item() == 0.25


# ---- diagnostics ------------------------------------------------------------------------------------------------

BAD = [
    ("symbolic", "network N {\n    input x: [T, 8]\n    param p: [T, 8]\n    output y = x + p\n}\n",
     "bad-shape", "3:15", "known sizes"),
    ("int-dtype", "network N {\n    input x: [8]\n    param p: [8] int64\n    output y = x -> linear(2)\n}\n",
     "type-mismatch", "3:5", "float type"),
    ("before-input", "network N {\n    param p: [8]\n    input x: [8]\n    output y = x + p\n}\n",
     "misplaced-statement", "2:5", "before any input"),
    ("fans-of-vector", "network N {\n    input x: [8]\n    param p: [8] = xavier_uniform\n    output y = x + p\n}\n",
     "bad-argument", "3:20", "fans"),
    ("bias-fans", "network N {\n    input x: [8]\n    output y = x -> linear(4, bias_init=orthogonal)\n}\n",
     "bad-argument", "3:41", "fans"),
    ("unknown-init", "network N {\n    input x: [8]\n    output y = x -> linear(4, weight_init=glorot)\n}\n",
     "bad-argument", "3:43", "an initialiser"),
    ("init-arg", "network N {\n    input x: [8]\n    output y = x -> linear(4, weight_init=normal(sigma=1))\n}\n",
     "bad-argument", "3:50", "no argument `sigma`"),
    ("init-missing", "network N {\n    input x: [8]\n    output y = x -> linear(4, bias_init=constant)\n}\n",
     "bad-argument", "3:41", "needs the argument `val`"),
    ("init-mode",
     "network N {\n    input x: [8]\n    output y = x -> linear(4, weight_init=kaiming_uniform(mode=fan))\n}\n",
     "bad-argument", "3:59", "fan_in, fan_out"),
    ("uniform-bounds", "network N {\n    input x: [8]\n    output y = x -> linear(4, weight_init=uniform(1, 0))\n}\n",
     "bad-argument", "3:43", "`a` must be below `b`"),
    ("wrapper",
     "network N {\n    input x: [T, 8]\n    output y = x -> timedistributed(linear(4), weight_init=zeros)\n}\n",
     "bad-argument", "3:60", "wraps a layer"),
    ("no-bias", "network N {\n    input x: [8]\n    output y = x -> linear(4, bias=false, bias_init=zeros)\n}\n",
     "bad-argument", "3:53", "no bias"),
    ("tie-shape", "network N {\n    input t: [T] int64\n    h = t -> e: embedding(50, 16) -> linear(8)\n"
     "    output y = h -> linear(50, tie=e)\n}\n", "shape-mismatch", "4:36", "[50, 8]"),
    ("tie-unknown", "network N {\n    input t: [T] int64\n    h = t -> embedding(50, 16)\n"
     "    output y = h -> linear(50, tie=e)\n}\n", "unknown-name", "4:36", "no layer `e`"),
    ("tie-value", "network N {\n    input x: [8]\n    output y = x -> linear(8, tie=3)\n}\n",
     "bad-argument", "3:35", "must name a layer"),
    ("tie-no-weight", "network N {\n    input x: [3, 8, 8]\n    h = x -> b: batchnorm\n"
     "    output y = h -> conv2d(3, k=1, tie=b)\n}\n", "bad-argument", "4:40", "no weight to share"),
    ("prelu-channels", "network N {\n    input x: [3, 8, 8]\n    output y = x -> prelu(4)\n}\n",
     "shape-mismatch", "3:27", "4 slopes for 3 channels"),
]


@pytest.mark.parametrize("name,text,code,where,words", BAD, ids=[b[0] for b in BAD])
def test_bad_specs_get_a_positioned_diagnostic(tmp_path, name, text, code, where, words):
    with pytest.raises(DlcError) as info:
        dlc.compile(_spec(tmp_path, text))
    err = info.value
    assert err.code == code, err
    assert f"{err.span.line}:{err.span.col}" == where, err
    assert words in err.message, err.message


def test_cli_reports_a_bad_param_with_exit_1_and_a_caret(tmp_path):
    spec = _spec(tmp_path, BAD[0][1])
    r = subprocess.run([sys.executable, "-m", "dlc", "compile", str(spec), "-o", str(tmp_path / "o.py")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1
    assert "net.dln:3:15: error[bad-shape]: a parameter needs known sizes" in r.stderr
    assert "^" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("layer,shape,message", [
    ("prelu(bias_init=zeros)", "[3, 8, 8]", "`prelu` has no bias here to initialise"),
    ("embedding(10, 4, bias_init=zeros)", "[T] int64", "`embedding` has no bias here to initialise"),
    ("linear(4, bias=false, bias_init=zeros)", "[8]", "`linear` has no bias here to initialise"),
    ("prelu(3, weight_init=xavier_uniform)", "[3, 8, 8]", "computes fans"),
    ("batchnorm(weight_init=kaiming_normal)", "[3, 8, 8]", "computes fans"),
    ("layernorm(weight_init=xavier_normal)", "[8]", "computes fans"),
])
def test_what_a_layer_has_to_initialise_follows_its_definition(tmp_path, layer, shape, message):
    """Biases come from a layer's `bias` argument or a norm's affine shift; vector weights (norm scales, prelu
    slopes) have no fans."""
    with pytest.raises(DlcError, match=message):
        dlc.compile(_spec(tmp_path, f"network N {{\n    input x: {shape}\n    output y = x -> {layer}\n}}\n"))


def test_norm_biases_and_prelu_slopes_take_plain_initialisers(tmp_path):
    code = dlc.compile(_spec(tmp_path, "network N {\n    input x: [3, 8, 8]\n"
                                       "    output y = x -> bn: batchnorm(bias_init=constant(0.5), weight_init=ones)"
                                       " -> act: prelu(3, weight_init=constant(0.1))\n}\n")).source
    assert "nn.init.constant_(self.bn.bias, 0.5)" in code and "nn.init.ones_(self.bn.weight)" in code
    assert "nn.init.constant_(self.act.weight, 0.1)" in code
