"""Gaps closed in issue-10 features: initialisers and weight tying inside labelled groups, repeats and
``timedistributed``; symbolic arithmetic in compile-time sizes (slice bounds ``T-1``, extern shape rules); the
tied-weight drawing and summary; label patterns naming the copies of a labelled repeat. Values are compared with
torch.nn twins built by hand with the same seed; bad specs get a positioned diagnostic (CLI exit 1)."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import dlc
from dlc.diagnostics import DlcError


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.dln"
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str, **params) -> nn.Module:
    return dlc.load(_spec(tmp_path, text), **params)


def _source(tmp_path: Path, text: str) -> str:
    return dlc.compile(_spec(tmp_path, text)).source


def _cli_error(tmp_path: Path, text: str) -> str:
    """Compile ``text`` with the CLI, which must fail with exit 1; its stderr."""
    spec = _spec(tmp_path, text)
    r = subprocess.run([sys.executable, "-m", "dlc", "compile", str(spec), "-o", str(tmp_path / "o.py")],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr


# ---- initialisers and ties inside labelled groups, repeats and timedistributed ----------------------------------

GROUPED = """
network Grouped {
    input x: [T, 8]
    h = x -> layers: (linear(8, weight_init=xavier_uniform, bias_init=constant(-2)) -> relu)
    p = h -> pairs: (linear(8, weight_init=kaiming_normal(nonlinearity=relu)) -> tanh) * 2
    output y = p -> td: timedistributed((linear(6, bias_init=ones) -> relu))
}
"""


def test_initialisers_in_groups_address_the_child_and_match_a_twin_with_the_same_seed(tmp_path):
    code = _source(tmp_path, GROUPED)
    assert "nn.init.xavier_uniform_(self.layers[0].weight)" in code
    assert "nn.init.constant_(self.layers[0].bias, -2.0)" in code
    assert "nn.init.kaiming_normal_(self.pairs[1][0].weight, nonlinearity=\"relu\")" in code
    assert "nn.init.ones_(self.td[0].bias)" in code
    torch.manual_seed(3)
    m = _load(tmp_path, GROUPED)
    # the twin makes and initialises its modules in the order the spec writes them
    torch.manual_seed(3)
    layers = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    nn.init.xavier_uniform_(layers[0].weight)
    nn.init.constant_(layers[0].bias, -2.0)
    pairs = nn.Sequential(nn.Sequential(nn.Linear(8, 8), nn.Tanh()), nn.Sequential(nn.Linear(8, 8), nn.Tanh()))
    for k in range(2):
        nn.init.kaiming_normal_(pairs[k][0].weight, nonlinearity="relu")
    td = nn.Sequential(nn.Linear(8, 6), nn.ReLU())
    nn.init.ones_(td[0].bias)
    twin = nn.ModuleDict({"layers": layers, "pairs": pairs, "td": td})
    assert m.state_dict().keys() == twin.state_dict().keys()
    for k, v in twin.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    x = torch.randn(2, 5, 8)
    assert torch.allclose(m(x), td(pairs(layers(x))), atol=1e-6)


def test_initialisers_reach_the_layer_timedistributed_wraps(tmp_path):
    text = """
network Td {
    input x: [T, 4, 6]
    output y = x -> timedistributed(conv1d(8, k=3, weight_init=orthogonal, bias_init=constant(0.5)))
}
"""
    assert "nn.init.orthogonal_(self.timedistributed_0.weight)" in _source(tmp_path, text)
    torch.manual_seed(0)
    m = _load(tmp_path, text)
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 8, 3)
    nn.init.orthogonal_(conv.weight)
    nn.init.constant_(conv.bias, 0.5)
    assert torch.equal(m.state_dict()["timedistributed_0.weight"], conv.weight.detach())
    assert torch.equal(m.state_dict()["timedistributed_0.bias"], conv.bias.detach())
    x = torch.randn(2, 3, 4, 6)
    want = conv(x.flatten(0, 1)).unflatten(0, (2, 3))
    assert torch.allclose(m(x), want, atol=1e-6)


def test_initialisers_in_a_block_inside_a_group_stay_in_the_block_class(tmp_path):
    text = """
block Gate(c: int) {
    input x
    return x -> fc: linear(c, bias_init=constant(-2)) -> sigmoid
}
network Stack {
    input x: [8]
    output y = x -> gates: Gate(8) * 2
}
"""
    code = _source(tmp_path, text)
    assert "nn.init.constant_(self.fc.bias, -2.0)" in code
    m = _load(tmp_path, text)
    assert all(torch.equal(m.state_dict()[f"gates.{k}.fc.bias"], torch.full((8,), -2.0)) for k in range(2))


TIED = """
network TiedGroups(vocab: int = 30, d: int = 8) {
    input tokens: [T] int64
    h = tokens -> enc: (embed: embedding(vocab, d) -> relu) -> lstm(d)
    logits = h -> dec: (linear(d) -> tanh -> head: linear(vocab, bias=false, tie=embed))
    output y = logits
    output z = h -> timedistributed(linear(vocab, tie=embed))
}
"""


class _TiedTwin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(OrderedDict([("embed", nn.Embedding(30, 8)), ("1", nn.ReLU())]))
        self.lstm_0 = nn.LSTM(8, 8, batch_first=True)
        self.dec = nn.Sequential(OrderedDict([("0", nn.Linear(8, 8)), ("1", nn.Tanh()),
                                              ("head", nn.Linear(8, 30, bias=False))]))
        self.dec.head.weight = self.enc.embed.weight
        self.timedistributed_0 = nn.Linear(8, 30)
        self.timedistributed_0.weight = self.enc.embed.weight

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, _ = self.lstm_0(self.enc(t))
        return self.dec(h), self.timedistributed_0(h)


def test_tie_reaches_layers_inside_groups_and_timedistributed(tmp_path):
    code = _source(tmp_path, TIED)
    assert "self.dec.head.weight = self.enc.embed.weight" in code
    assert "self.timedistributed_0.weight = self.enc.embed.weight" in code
    m = _load(tmp_path, TIED)
    assert m.dec.head.weight is m.enc.embed.weight and m.timedistributed_0.weight is m.enc.embed.weight
    twin = _TiedTwin()
    assert m.state_dict().keys() == twin.state_dict().keys()
    m.load_state_dict(twin.state_dict(), strict=True)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in twin.parameters())
    t = torch.randint(0, 30, (2, 5))
    for got, want in zip(m(t), twin(t)):
        assert torch.allclose(got, want, atol=1e-6)
    summary = dlc.compile(_spec(tmp_path, TIED)).summary()
    total = sum(p.numel() for p in twin.parameters())
    assert f"{total:,}" in summary
    assert "(weight tied to enc.embed)" in summary  # a path from the network through the labelled group


BAD_TIES = [
    ("outside-block", """
block Head(v: int) {
    input x
    return x -> head: linear(v, tie=embed)
}
network Bad {
    input tokens: [T] int64
    output y = tokens -> embed: embedding(20, 8) -> Head(20)
}
""", "unknown-name", "4:37", "is not one of block `Head`"),
    ("ambiguous", """
network Bad {
    input tokens: [T] int64
    h = tokens -> a: (embed: embedding(20, 8) -> relu) -> b: (embed: linear(8) -> relu)
    output y = h -> linear(20, tie=embed)
}
""", "bad-argument", "5:36", "several layers are called `embed` (a.embed, b.embed)"),
    ("td-fans", """
network Bad {
    input x: [T, 8]
    output y = x -> timedistributed(linear(20, bias_init=xavier_uniform))
}
""", "bad-argument", "4:21", "computes fans"),
]


@pytest.mark.parametrize("name,text,code,where,words", BAD_TIES, ids=[b[0] for b in BAD_TIES])
def test_bad_ties_and_initialisers_get_a_positioned_diagnostic(tmp_path, name, text, code, where, words):
    with pytest.raises(DlcError) as info:
        dlc.compile(_spec(tmp_path, text))
    err = info.value
    assert err.code == code
    assert f"{err.span.line}:{err.span.col}" == where
    assert words in err.message
    stderr = _cli_error(tmp_path, text)
    assert f"net.dln:{where}: error[{code}]" in stderr and "^" in stderr


# ---- symbolic arithmetic in compile-time sizes -----------------------------------------------------------------

SLICES = """
network Slices {
    input x: [T, 8]
    input y: [8, S]
    a = x[:T-1] + x[1:T]                       # [T-1, 8]: neighbouring steps
    b = x[T-3:]                                # [3, 8]: the last three
    c = (y -> conv1d(8, k=3, pad=2))[..., 1:S+1]   # [8, S]: a centred crop of [8, S+2]
    output o1 = a
    output o2 = b
    output o3 = c
    output o4 = x[:T//2]
}
"""


def test_slice_bounds_with_symbolic_arithmetic_match_torch_slicing(tmp_path):
    code = _source(tmp_path, SLICES)
    assert "x[:, : x.shape[1] - 1]" in code
    assert "x[:, x.shape[1] - 3 :]" in code and "[..., 1 : y.shape[2] + 1]" in code
    m = _load(tmp_path, SLICES)
    conv = nn.Conv1d(8, 8, 3, padding=2)
    conv.load_state_dict({k.split(".", 1)[1]: v for k, v in m.state_dict().items()})
    for t in (4, 7):
        x, y = torch.randn(2, t, 8), torch.randn(2, 8, t + 1)
        o1, o2, o3, o4 = m(x, y)
        assert torch.equal(o1, x[:, :-1] + x[:, 1:])
        assert torch.equal(o2, x[:, -3:])
        assert torch.allclose(o3, conv(y)[..., 1:-1], atol=1e-6)
        assert torch.equal(o4, x[:, : t // 2])
    summary = dlc.compile(_spec(tmp_path, SLICES)).summary()
    assert "o1 [B, T-1, 8]" in summary and "o3 [B, 8, S]" in summary and "o4 [B, T//2, 8]" in summary


def test_equal_formulas_compare_equal_across_ops(tmp_path):
    # `T+2-2` folds to `T`, so the sum type-checks; conv1d(k=3) on T writes T-2, as the slice does
    text = """
network Fold {
    input x: [8, T]
    a = (x -> conv1d(8, k=3))                  # [8, T-2]
    output y = a + x[..., :T+2-4]
    output z = x[..., :T+2-2] + x
}
"""
    m = _load(tmp_path, text)
    y, z = m(torch.randn(1, 8, 6))
    assert y.shape == (1, 8, 4) and z.shape == (1, 8, 6)


def test_extern_shape_rules_compute_with_symbolic_sizes(tmp_path):
    text = """
extern Stretch(scale_factor: float) = "torch.nn.Upsample" { shape = [x[0], x[1] * 2] }
network Ext {
    input x: [4, T]
    output y = (x -> conv1d(4, k=3))[..., :T-2] -> Stretch(2.0)
}
"""
    comp = dlc.compile(_spec(tmp_path, text))
    assert "y [B, 4, (T-2)*2]" in comp.summary()
    m = _load(tmp_path, text)
    assert m(torch.randn(2, 4, 9)).shape == (2, 4, 14)


BAD_SIZES = [
    ("stop-past-end", "network Bad {\n    input x: [T, 8]\n    output y = x[:T+1]\n}\n", "bad-index", "3:18",
     "slice stop T+1 is past the end of an axis of size T"),
    ("start-past-end", "network Bad {\n    input x: [T, 8]\n    output y = x[T:]\n}\n", "bad-index", "3:18",
     "slice start T is past the end"),
    ("two-symbols", "network Bad {\n    input x: [T, 8]\n    input y: [S, 8]\n    output z = x[:T-S]\n}\n",
     "symbolic-dim", "4:19", "between the symbolic sizes `T` and `S`"),
    ("negated", "network Bad {\n    input x: [T, 8]\n    output y = x[:2-T]\n}\n", "symbolic-dim", "3:19",
     "`2 - T` is no size formula"),
    ("true-division", "network Bad {\n    input x: [T, 8]\n    output y = x[:T/2]\n}\n", "symbolic-dim", "3:19",
     "`T / 2` is no size formula"),
    ("index", "network Bad {\n    input x: [T, 8]\n    output y = x[T-1]\n}\n", "type-mismatch", "3:18",
     "an index must be an integer, got the symbolic size `T-1`"),
    ("unknown", "network Bad {\n    input x: [T, 8]\n    output y = x[:U-1]\n}\n", "unknown-name", "3:19",
     "unknown name `U`"),
]


@pytest.mark.parametrize("name,text,code,where,words", BAD_SIZES, ids=[b[0] for b in BAD_SIZES])
def test_bad_size_formulas_get_a_positioned_diagnostic(tmp_path, name, text, code, where, words):
    with pytest.raises(DlcError) as info:
        dlc.compile(_spec(tmp_path, text))
    err = info.value
    assert (err.code, f"{err.span.line}:{err.span.col}") == (code, where)
    assert words in err.message
    stderr = _cli_error(tmp_path, text)
    assert f"net.dln:{where}: error[{code}]" in stderr and "^" in stderr


# ---- label patterns: the copies of a repeat named by their number ----------------------------------------------

NAMED = """
block Layer(d: int) {
    input x
    return x + (x -> ln: layernorm -> fc: linear(d) -> gelu)
}
network Named(num_layers: int = 3) {
    input x: [T, 16]
    h = x -> layers: (encoder_layer_{i}: Layer(16) * num_layers)
    g = h -> blk_{i}: (linear(16) -> relu) * 2
    output y = g -> head_{i}: linear(16) * 2
}
"""


class _LayerTwin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln, self.fc = nn.LayerNorm(16), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.gelu(self.fc(self.ln(x)))


@pytest.mark.parametrize("n", [1, 4])
def test_label_pattern_names_each_copy_and_matches_a_twin(tmp_path, n):
    m = _load(tmp_path, NAMED, num_layers=n)
    twin = nn.Module()
    twin.layers = nn.Sequential(OrderedDict((f"encoder_layer_{i}", _LayerTwin()) for i in range(n)))
    twin.blk_0 = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    twin.blk_1 = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    twin.head_0, twin.head_1 = nn.Linear(16, 16), nn.Linear(16, 16)
    assert list(m.state_dict()) == list(twin.state_dict())
    m.load_state_dict(twin.state_dict(), strict=True)
    x = torch.randn(2, 5, 16)
    want = twin.head_1(twin.head_0(twin.blk_1(twin.blk_0(twin.layers(x)))))
    assert torch.allclose(m(x), want, atol=1e-6)


def test_a_pattern_repeat_of_one_block_rolls_in_the_diagram(tmp_path):
    from dlc.backends.graphviz import to_dot
    dot = to_dot(dlc.compile(_spec(tmp_path, NAMED)).graph, roll=True)
    assert "×3" in dot and "encoder_layer_0" in dot and "encoder_layer_2" not in dot


BAD_PATTERNS = [
    ("not-repeated", "network Bad {\n    input x: [8]\n    output y = x -> fc_{i}: linear(8)\n}\n", "bad-name",
     "3:21", "numbers the copies of a repeat"),
    ("duplicate", "network Bad {\n    input x: [8]\n    output y = x -> fc_{i}: linear(8) * 2 -> fc_1: relu\n}\n",
     "duplicate-name", "3:46", "`fc_1` already names a layer"),
]


@pytest.mark.parametrize("name,text,code,where,words", BAD_PATTERNS, ids=[b[0] for b in BAD_PATTERNS])
def test_bad_label_patterns_get_a_positioned_diagnostic(tmp_path, name, text, code, where, words):
    with pytest.raises(DlcError) as info:
        dlc.compile(_spec(tmp_path, text))
    err = info.value
    assert (err.code, f"{err.span.line}:{err.span.col}") == (code, where)
    assert words in err.message
    stderr = _cli_error(tmp_path, text)
    assert f"net.dln:{where}: error[{code}]" in stderr
