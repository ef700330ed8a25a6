"""`dlc summary`: MACs/FLOPs from the IR against torch.utils.flop_counter.FlopCounterMode on the generated module
for every spec, parameters and output shapes against torchinfo, the csv/json/markdown formats, --batch, --set of
symbolic sizes, and the diagnostics of bad options.

FlopCounterMode (CPU, training mode) counts the products of nn.Linear, convolutions, matmul, attention, nn.RNN and
nn.GRU as dlc does, but not nn.LSTM at all (its CPU kernel, aten.lstm, is not decomposed into matrix products)
nor the scores and value products of an attention without dropout (scaled_dot_product_attention then runs its CPU
flash kernel, which has no FLOP formula); docs/summary.md. The test asserts exactly that difference.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dlc
from conftest import SPECS_DIR
from dlc.backends.summary import summary_of, symbolic_sizes
from dlc.compiler.ops.attention import attention_core
from dlc.compiler.ops.registry import op_of
from test_fused_specs import SMALL, inputs

SPECS = sorted(p.stem for p in SPECS_DIR.glob("*.dln"))
SIZE = 5  # every symbolic size in the cross-check
BATCH = 2  # training mode: batchnorm after global pooling needs two items
FULL_SIZE_ONLY = {"inception_v3"}  # its image size is fixed at 299 (9 s on the 2-core machine)


def _uncounted(g, lstm: bool = True) -> int:
    """The MACs FlopCounterMode does not see on CPU in training mode: every LSTM's (``lstm``: nn.LSTM runs them),
    and the scores and value products of an attention without dropout (which runs scaled_dot_product_attention's
    flash kernel)."""
    total = 0
    for node in g.nodes:
        opdef = op_of(node.op)
        cell = node.attrs["layer"]["op"] if opdef.wraps and "layer" in node.attrs else node.op
        ins = [g.types[v] for v in node.inputs]
        if cell == "lstm" and lstm:
            total += opdef.cost(node.attrs, ins, tuple(g.types[v] for v in node.outputs)).evaluate(
                dict.fromkeys(symbolic_sizes(g), SIZE)).constant
        elif node.op == "attention" and node.attrs["dropout"] == 0:  # sdpa's CPU flash kernel: no FLOP formula
            total += attention_core(node.attrs, ins).evaluate(dict.fromkeys(symbolic_sizes(g), SIZE)).constant
    return total * BATCH


@pytest.mark.parametrize("spec", [pytest.param(s, marks=pytest.mark.slow) if s in FULL_SIZE_ONLY else s for s in SPECS])
def test_flops_equal_flop_counter_mode(spec):
    compiled = dlc.compile(SPECS_DIR / f"{spec}.dln", **SMALL.get(spec, {}))
    g = compiled.graph
    s = summary_of(g, batch=BATCH, sizes=dict.fromkeys(symbolic_sizes(g), SIZE))
    assert s.unknown == []
    model = compiled.instantiate().train()  # the summary counts training-only branches (auxiliary classifiers)
    torch.manual_seed(0)
    xs = inputs(g, batch=BATCH)
    with FlopCounterMode(display=False) as counter:
        model(*xs)
    assert counter.get_total_flops() == 2 * (s.macs.constant - _uncounted(g))


@pytest.mark.parametrize("spec", ["bilstm_tagger", "seq2seq"])
def test_lstm_flops_equal_flop_counter_mode_on_dlcs_recurrent_path(spec):
    """nn.LSTM's CPU kernel hides its products from FlopCounterMode; with ``fused_recurrent=True`` dlc runs each
    step as a matrix product plus its gate kernel, which FlopCounterMode sees: the LSTMs' MACs are then counted
    and equal the IR's (only attention's flash-kernel products stay unseen)."""
    compiled = dlc.compile(SPECS_DIR / f"{spec}.dln", fuse=True, fused_recurrent=True, **SMALL.get(spec, {}))
    g = compiled.graph
    s = summary_of(g, batch=BATCH, sizes=dict.fromkeys(symbolic_sizes(g), SIZE))
    model = compiled.instantiate().train()
    torch.manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        model(*inputs(g, batch=BATCH))
    assert counter.get_total_flops() == 2 * (s.macs.constant - _uncounted(g, lstm=False))


# The ops with a cost that no spec in specs/ calls: timedistributed (of a layer and of a block), rnn, a
# bidirectional gru, weightnorm, matmul, attention with other key and value sizes, grouped and dilated 1-d and 3-d
# convolutions and their transposes.
OPS_SPEC = """
block Step(c: int) {
    input x
    return x -> conv: conv2d(c, k=3, pad=1) -> relu
}

network Ops() {
    input clip: [T, 3, 8, 8]
    input seq: [T, 6]
    input vol: [2, 4, 6, 6]
    input sig: [4, 10]
    frames = clip -> timedistributed(conv2d(4, k=3, pad=1, groups=1)) -> td: timedistributed(Step(4))
    output a = frames
    output b = seq -> r: rnn(5, layers=2) -> g: bidirectional(gru(3), merge=sum) -> wl: weightnorm(linear(7))
    q = seq -> pq: linear(8)
    output c = matmul(q, q -> permute([1, 0])) + 0.0
    output d = q -> att: attention(key=seq -> pk: linear(4), value=seq -> pv: linear(5), heads=2, dropout=0.5)
    output e = vol -> c3: conv3d(6, k=3, groups=2) -> ct3: conv_transpose3d(2, k=2, stride=2)
    output f = sig -> c1: conv1d(8, k=3, dilation=2, groups=4) -> ct1: conv_transpose1d(4, k=4, stride=2, groups=2)
}
"""


def test_flops_of_the_other_costed_ops_equal_flop_counter_mode(tmp_path):
    path = tmp_path / "ops.dln"
    path.write_text(OPS_SPEC, encoding="utf-8")
    compiled = dlc.compile(path)
    s = summary_of(compiled.graph, batch=BATCH, sizes={"T": SIZE})
    model = compiled.instantiate().train()
    torch.manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        model(*inputs(compiled.graph, batch=BATCH))
    assert s.unknown == [] and _uncounted(compiled.graph) == 0
    assert counter.get_total_flops() == 2 * s.macs.constant == 2 * BATCH * 92_884


DOC = SPECS_DIR.parent / "docs" / "summary.md"
TAGGER = SPECS_DIR / "bilstm_tagger.dln"


def _dlc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlc.cli", *args], capture_output=True, text=True, timeout=120)


def test_docs_example_prints_the_documented_table(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    spec = text.split("```dln\n", 1)[1].split("```", 1)[0]
    table = text.split("```text\n", 1)[1].split("```", 1)[0]
    (tmp_path / "net.dln").write_text(spec, encoding="utf-8")
    r = _dlc("summary", str(tmp_path / "net.dln"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == table


@pytest.fixture(scope="module")
def lenet():
    return dlc.compile(SPECS_DIR / "lenet5.dln")


def test_formats_parse_back_and_agree(lenet):
    rows = list(csv.DictReader(io.StringIO(dlc.summary(lenet, format="csv"))))
    doc = json.loads(dlc.summary(lenet, format="json"))
    assert doc["version"] == 1 and doc["network"] == "LeNet5"
    assert [r["layer"] for r in rows[:-1]] == [layer["layer"] for layer in doc["layers"]]
    assert rows[-1]["layer"] == "(total)" and int(rows[-1]["params"]) == doc["totals"]["params"] == 61706
    conv1 = next(layer for layer in doc["layers"] if layer["layer"] == "conv1")
    assert conv1["macs"] == 6 * 28 * 28 * 25 and conv1["flops"] == 2 * conv1["macs"]
    assert conv1["outputs"] == [{"batch": "B", "shape": [6, 28, 28], "dtype": "float32"}]
    md = dlc.summary(lenet, format="markdown").splitlines()
    assert md[2].startswith("| layer | op | input shape | output shape | params | MACs |")
    assert "| `conv1` | `conv2d` | [B, 1, 32, 32] | [B, 6, 28, 28] | 156 | 117,600 |" in md[5]


def test_batch_scales_macs_and_activation_memory_exactly(lenet):
    one = json.loads(dlc.summary(lenet, format="json"))["totals"]
    eight = json.loads(dlc.summary(lenet, batch=8, format="json"))["totals"]
    assert eight["macs"] == 8 * one["macs"] and eight["activation_bytes"] == 8 * one["activation_bytes"]
    assert eight["params"] == one["params"] and eight["param_bytes"] == one["params"] * 4
    half = json.loads(dlc.summary(lenet, batch=8, dtype="float16", format="json"))["totals"]
    assert half["activation_bytes"] * 2 == eight["activation_bytes"]


def test_set_evaluates_symbolic_sizes():
    symbolic = json.loads(dlc.summary(TAGGER, format="json"))
    assert symbolic["totals"]["macs"] == "237824*T"
    r = _dlc("summary", str(TAGGER), "--set", "T=128", "--set", "tags=17", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["sizes"] == {"T": 128} and doc["totals"]["macs"] == 237824 * 128
    assert doc["outputs"][0]["shape"] == [128, 17]


@pytest.mark.parametrize("args, code, message", [
    (["--format", "xml"], 2, "invalid choice: 'xml'"),
    (["--batch", "0"], 2, "--batch must be 1 or more, got 0"),
    (["--set", "Q=3"], 1, "bilstm_tagger.dln:5:1: error[unknown-param]: network `Tagger` has no parameter or "
                          "symbolic size `Q`"),
    (["--set", "T=-2"], 1, "error[bad-argument]: the symbolic size `T` must be a positive integer"),
])
def test_bad_options_are_diagnostics(args, code, message):
    r = _dlc("summary", str(TAGGER), *args)
    assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr


def test_python_api_rejects_bad_options(lenet):
    for kwargs in ({"batch": 0}, {"format": "xml"}, {"dtype": "int8"}):
        with pytest.raises(ValueError):
            dlc.summary(lenet, **kwargs)


@pytest.mark.parametrize("spec", ["resnet18", "vgg16", "mobilenet_v2", "transformer"])
def test_params_and_output_shapes_equal_torchinfo(spec):
    """torchinfo's total and trainable parameters, and the output shape of every module it lists that is a row of
    the summary (by module path), for three CNNs and the Transformer (small parameters, symbolic sizes 5)."""
    torchinfo = pytest.importorskip("torchinfo", reason="torchinfo is in the test extra; without it nothing to compare")
    compiled = dlc.compile(SPECS_DIR / f"{spec}.dln", **SMALL.get(spec, {}))
    g = compiled.graph
    doc = json.loads(compiled.summary(format="json", **dict.fromkeys(symbolic_sizes(g), SIZE)))
    model = compiled.instantiate()
    stats = torchinfo.summary(model, input_data=inputs(g, batch=1), verbose=0, depth=99)
    assert doc["totals"]["params"] == stats.total_params == stats.trainable_params
    assert doc["totals"]["buffers"] == sum(b.numel() for b in model.buffers())  # batchnorm's running statistics
    names = {id(m): n for n, m in model.named_modules()}
    ours = {layer["layer"]: [1] + layer["outputs"][0]["shape"] for layer in doc["layers"]}
    checked = 0
    for info in stats.summary_list:
        name = names.get(id(info.module))
        if name in ours and info.output_size:
            assert list(info.output_size) == ours[name], name
            checked += 1
    assert checked > 10


def test_summary_never_imports_torch():
    script = (
        "import contextlib, io, sys\n"
        "import dlc.cli\n"
        "for fmt in ('table', 'csv', 'json', 'markdown'):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert dlc.cli.main(['summary', sys.argv[1], '--format', fmt, '--set', 'T=7', '--batch', '3']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton')))\n")
    r = subprocess.run([sys.executable, "-c", script, str(TAGGER)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[]\n"


SYMBOLIC_IMAGE = """
network Net() {
    input x: [3, H, W]
    output y = x -> conv: conv2d(8, k=3, stride=2) -> relu -> pool: maxpool(2) -> up: conv_transpose2d(4, k=2, stride=2)
}
"""


def test_size_formulas_stay_whole_factors_and_evaluate_like_a_fixed_shape(tmp_path):
    """A size that is not a polynomial (`(H-3)//2+1`) is one factor of the MACs; --set H= W= gives exactly the
    numbers of the same network with the image size written in."""
    (tmp_path / "sym.dln").write_text(SYMBOLIC_IMAGE, encoding="utf-8")
    (tmp_path / "fixed.dln").write_text(SYMBOLIC_IMAGE.replace("[3, H, W]", "[3, 33, 17]"), encoding="utf-8")
    symbolic = json.loads(dlc.summary(tmp_path / "sym.dln", format="json"))
    assert symbolic["layers"][1]["macs"] == "216*((H-3)//2+1)*((W-3)//2+1)"
    assert symbolic["totals"]["macs"] == "128*(((H-3)//2-1)//2+1)*(((W-3)//2-1)//2+1) + 216*((H-3)//2+1)*((W-3)//2+1)"
    evaluated = json.loads(dlc.summary(tmp_path / "sym.dln", batch=3, format="json", H=33, W=17))
    fixed = json.loads(dlc.summary(tmp_path / "fixed.dln", batch=3, format="json"))
    assert evaluated["sizes"] == {"H": 33, "W": 17}
    assert evaluated["layers"] == fixed["layers"] and evaluated["totals"] == fixed["totals"]
    assert fixed["totals"]["macs"] == 3 * (16 * 8 * 8 * 3 * 9 + 8 * 4 * 8 * 4 * 4)
