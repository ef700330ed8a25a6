"""Shape and type rules that guard against modules which compile but fail or miscompute at run time."""

from __future__ import annotations

import pytest
import torch

import dlc
from dlc.pipeline import build_graph
from dlc.diagnostics import DlcError


def _spec(tmp_path, text: str) -> str:
    p = tmp_path / "net.dln"
    p.write_text(text)
    return str(p)


def _error(tmp_path, text: str) -> DlcError:
    with pytest.raises(DlcError) as exc:
        build_graph(_spec(tmp_path, text))
    return exc.value


def test_symbolic_sizes_reached_by_different_windows_do_not_merge(tmp_path):
    err = _error(tmp_path, """
network N {
    input x: [3, H, W]
    c = x -> conv2d(8, k=3, stride=2, pad=1)
    e = x -> maxpool(2) -> conv2d(8, k=1)
    output y = c + e
}""")
    assert err.code == "shape-mismatch" and (err.span.line, err.span.col) == (6, 16)
    assert "(H-1)//2+1" in err.message and "(H-2)//2+1" in err.message
    # for H = 15 the two branches really differ: PyTorch gives 8 and 7
    x = torch.randn(1, 3, 15, 15)
    assert torch.nn.Conv2d(3, 8, 3, 2, 1)(x).shape[-1] != torch.nn.functional.max_pool2d(x, 2).shape[-1]


def test_symbolic_sizes_reached_the_same_way_merge_and_run(tmp_path):
    spec = _spec(tmp_path, """
network N {
    input x: [3, H, W]
    a = x -> conv2d(8, k=3, stride=2, pad=1)
    b = x -> conv2d(8, k=3, stride=2, pad=1)
    output y = concat(a, b) -> upsample(2)
}""")
    g = build_graph(spec)
    assert g.types[g.outputs[0][1]].shape == (16, "((H-1)//2+1)*2", "((W-1)//2+1)*2")
    for size in (15, 16):
        assert dlc.load(spec)(torch.randn(1, 3, size, size)).shape[-1] == ((size - 1) // 2 + 1) * 2


def test_merges_promote_dtypes_like_pytorch(tmp_path):
    g = build_graph(_spec(tmp_path, """
network N {
    input ids: [4, 6] int64
    input f: [4, 6]
    input h: [4, 6] float64
    output a = concat(ids, f)
    output m = mean(ids, f)
    output d = ids * f
    output w = f + h
    output i = ids + ids
}"""))
    got = {name: g.types[v].dtype for name, v in g.outputs}
    assert got == {"a": "float32", "m": "float32", "d": "float32", "w": "float64", "i": "int64"}
    x, f, h = torch.zeros(1, 4, 6, dtype=torch.int64), torch.zeros(1, 4, 6), torch.zeros(1, 4, 6, dtype=torch.float64)
    assert (torch.cat([x, f], 1).dtype, (x * f).dtype, (f + h).dtype) == (torch.float32, torch.float32, torch.float64)


@pytest.mark.parametrize("layer", ["maxpool(2)", "avgpool(global)", "upsample(2)", "adaptive_avgpool(2)"])
def test_pooling_rejects_integer_tensors(tmp_path, layer):
    err = _error(tmp_path, f"network N {{ input x: [3, 8, 8] int64  output y = x -> {layer} }}")
    assert err.code == "type-mismatch"


@pytest.mark.parametrize("layer, attr", [("batchnorm(eps=0)", "eps"), ("layernorm(eps=-2)", "eps"),
                                         ("batchnorm(momentum=-5)", "momentum")])
def test_normalisation_needs_a_positive_eps_and_a_momentum_in_range(tmp_path, layer, attr):
    err = _error(tmp_path, f"network N {{ input x: [3, 8, 8]  output y = x -> {layer} }}")
    assert err.code == "bad-argument" and attr in err.message


def test_timedistributed_cannot_nest(tmp_path):
    err = _error(tmp_path, """network N {
    input x: [2, 3, 4, 8, 8]
    output y = x -> timedistributed(timedistributed(conv2d(5, k=3)))
}""")
    assert err.code == "bad-argument" and err.span.line == 3


def test_a_repeat_of_a_block_with_two_results_is_reported_at_the_repeat(tmp_path):
    err = _error(tmp_path, "block Two { input x  return x, relu(x) }\n"
                           "network N { input x: [6]  output y = x -> Two * 2 }\n")
    assert err.code == "tuple-mismatch" and (err.span.line, err.span.col) == (2, 43)


@pytest.mark.parametrize("text, at", [("x -> if", "if"), ("x -> (if true then relu else relu)", "true")])
def test_a_conditional_is_not_a_pipeline_stage(tmp_path, text, at):
    line = f"input x: [6]  output y = {text} }}"
    err = _error(tmp_path, "network N {\n" + line)
    assert err.code == "syntax" and (err.span.line, err.span.col) == (2, line.index(f" {at}") + 2)
    assert "bind the conditional layer first" in (err.hint or "")


def test_a_byte_order_mark_is_accepted(tmp_path):
    p = tmp_path / "bom.dln"
    p.write_bytes("\ufeffnetwork N { input x: [4]  output y = x -> lineer(2) }\n".encode("utf-8"))
    with pytest.raises(DlcError) as exc:
        build_graph(p)
    # the mark is invisible in an editor, so columns do not count it
    assert exc.value.code == "unknown-layer" and exc.value.span.col == 43
