"""`dlc compile --explain-fusion` says why each chain of fusible ops stays unfused, from the plan's own decisions.

One small spec per rule of the fusion plan (compiler/fusion.py) that keeps two fusible ops apart, checked through
the plan's records (the chain's ops and the rule) and through the CLI's text; then every spec in specs/, plain and
with the inference rewrites: every unfused chain has a reason, and `dlc summary` and the diagram show the groups.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SPECS_DIR, write_spec
from dlc.backends.graphviz import FUSION_FILL, to_dot
from dlc.backends.summary import summarize
from dlc.cli import main
from dlc.compiler.fusion import fusion_plan
from dlc.compiler.fusion_reasons import label, unfused_chains
from dlc.pipeline import build_graph

SPECS = sorted(SPECS_DIR.glob("*.dln"))

# rule -> (spec text, the unfused chain's ops as labels, a phrase of its reason)
CASES = {
    "shared": ("""
network Shared {
    input x: [16]
    h = x -> linear(16) -> relu
    output y = h -> sigmoid
    output z = h * h
}""", ["(relu)", "(sigmoid)"], "is read by 2 ops ((sigmoid), (mul))"),
    "returned": ("""
network Returned {
    input x: [16]
    output h = x -> fc: linear(16) -> relu
    output y = h -> sigmoid
}""", ["(relu)", "(sigmoid)"], "the output of (relu) is returned by the network"),
    "scope": ("""
block Act {
    input x
    return x -> tanh -> relu
}
network Scope {
    input x: [16]
    output y = x -> fc: linear(16) -> act: Act
}""", ["fc", "act.(tanh)"], "crosses the boundary between the network and act"),
    "reduced": ("""
network Reduced {
    input x: [T, 16]
    output y = x -> exp -> sum(dim=-1) -> log
}""", ["(sum)", "(log)"], "nothing after a reduction joins its kernel"),
    "statistics": ("""
network Stats {
    input x: [8, 4, 4]
    output y = x -> relu -> bn: batchnorm
}""", ["(relu)", "bn"], "computes batch statistics of its input"),
    "dropout": ("""
network Drops {
    input x: [16]
    output y = x -> relu -> dropout(0.1) -> dropout(0.2, always=true)
}""", ["(dropout)", "(dropout)"], "dropouts with different always= never share a kernel"),
    "broadcast": ("""
network Broadcast {
    input x: [4, 16]
    input s: [1, 16]
    output y = (s -> sigmoid) * (x -> relu)
}""", ["(sigmoid)", "(mul)"], "broadcasts the chain's value up to a larger shape"),
    "row-input": ("""
network RowInput {
    input x: [T, 16]
    output y = x -> relu -> act: prelu -> softmax
}""", ["act", "(softmax)"], "act before the row op (softmax) is a batchnorm or prelu"),
    "row-epilogue": ("""
network RowEpilogue {
    input x: [16]
    output y = x -> fc: linear(16) -> softmax
}""", ["fc", "(softmax)"], "does not join the epilogue of fc"),
    "one-row": ("""
network TwoRows {
    input x: [T, 16]
    output y = x -> softmax -> log_softmax
}""", ["(softmax)", "(log_softmax)"], "would be a second row op in one kernel"),
    "row-axes": ("""
network RowAxes {
    input x: [T, 16]
    output y = x -> relu -> softmax(dim=0)
}""", ["(relu)", "(softmax)"], "not trailing axes of known size"),
    "lone-epilogue": ("""
network Lone {
    input x: [3, 8, 8]
    output y = x -> conv: conv2d(4, k=3, bias=false) -> relu
}""", ["conv", "(relu)"], "conv has no bias: a kernel after it would run one op alone"),
    "taken": ("""
network Gate {
    input x: [16]
    output y = tanh(x) * sigmoid(x)
}""", ["(sigmoid)", "(mul)"], "already runs in kernel #0, which follows the chain of another of its operands"),
    "epilogue-input": ("""
network Epilogue {
    input x: [4, 8]
    input s: [4, 1]
    output y = (x -> fc: linear(16)) + s -> relu
}""", ["fc", "(add)"], "neither the matmul's shape nor one value per unit"),
    "dtype": ("""
network Ints {
    input t: [8] int64
    input x: [8]
    output y = x -> relu -> mul(t)
}""", ["(relu)", "(mul)"], "reads an integer tensor"),
    "bool": ("""
network Bools {
    input x: [8]
    h = x -> relu
    output m = not (h > 0.5)
}""", ["(relu)", "(gt)", "(logical_not)"], "gives a bool tensor, which kernels never store"),
}


def chains_of(path: Path, optimize: str | None = None) -> list[tuple[list[str], str, str]]:
    g = build_graph(path, optimize=optimize)
    plan = fusion_plan(g)
    out = []
    for chain in unfused_chains(g, plan):
        assert chain.reason is not None, f"{path.name}: unfused chain without a reason: {chain.nodes}"
        out.append(([label(g.nodes[i]) for i in chain.nodes], chain.reason.rule, chain.reason.text))
    return out


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_names_its_chain_and_reason(tmp_path, capsys, rule):
    text, ops, phrase = CASES[rule]
    path = write_spec(tmp_path, text)
    found = [c for c in chains_of(path) if c[0] == ops]
    assert found, f"no unfused chain {ops} in {chains_of(path)}"
    assert found[0][1] == rule and phrase in found[0][2]
    assert main(["compile", str(path), "--fuse", "--explain-fusion", "-o", str(tmp_path / "net.py")]) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith(f"  {' -> '.join(ops)} "))
    assert "(net.dln:" in line and phrase in line


def test_a_labelled_group_fuses_inside_but_not_across_its_boundary(tmp_path):
    path = write_spec(tmp_path, """
network Seq {
    input x: [16]
    output y = x -> fc: linear(16) -> body: (relu -> tanh)
}""")
    chains = chains_of(path)
    assert [c[0] for c in chains] == [["fc", "body.0"]]
    assert chains[0][1] == "scope" and "crosses the boundary between the network and body" in chains[0][2]


def test_a_value_read_by_several_ops_is_one_chain_with_every_reader(tmp_path, capsys):
    path = write_spec(tmp_path, CASES["shared"][0])
    assert main(["compile", str(path), "--fuse", "--explain-fusion", "-o", str(tmp_path / "net.py")]) == 0
    err = capsys.readouterr().err
    assert ("  (relu) -> (sigmoid) | (mul)  (net.dln:4-6): the output of (relu) is read by 2 ops ((sigmoid), (mul))"
            in err)
    assert "Shared: 1 chains fused, 1 unfused chains" in err


def test_a_chain_longer_than_one_kernel_is_cut_and_says_so(tmp_path):
    path = write_spec(tmp_path, "network Long {\n    input x: [8]\n    output y = x" + " -> relu" * 70 + "\n}\n")
    (chain,) = chains_of(path)
    assert chain[1] == "long" and "64 ops already" in chain[2] and len(chain[0]) == 2


def test_a_spec_that_fuses_everything_reports_no_unfused_chain(tmp_path, capsys):
    path = write_spec(tmp_path, "network Clean {\n    input x: [16]\n    output y = x -> linear(16) -> relu\n}\n")
    assert main(["compile", str(path), "--fuse", "--explain-fusion", "-o", str(tmp_path / "net.py")]) == 0
    err = capsys.readouterr().err
    assert "Clean: 0 unfused chains" in err and "Clean: 1 chains fused, 0 unfused chains" in err


def test_the_resnet_residual_value_read_twice_is_one_line_per_block(capsys, tmp_path):
    spec = SPECS_DIR / "resnet18.dln"
    assert main(["compile", str(spec), "--fuse", "--explain-fusion", "-o", str(tmp_path / "r.py")]) == 0
    err = capsys.readouterr().err
    assert ("  layer1.0.(relu) -> layer1.1.(add)  (resnet.dln:11): the output of layer1.0.(relu) is read by 2 ops "
            "(layer1.1.conv1, layer1.1.(add))") in err
    assert "ResNet18: 20 chains fused, 7 unfused chains" in err


@pytest.mark.parametrize("optimize", [None, "inference"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_unfused_chain_of_every_spec_has_a_reason(spec, optimize):
    g = build_graph(spec, optimize=optimize)
    plan = fusion_plan(g)
    chains = unfused_chains(g, plan)
    assert all(chain.reason is not None for chain in chains)
    # every link between two fusible ops outside one group belongs to exactly one reported chain
    in_chains = [(a, b) for chain in chains for a, b in zip(chain.nodes, chain.nodes[1:])]
    assert len(in_chains) == len(set(in_chains))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_summary_and_diagram_show_every_group(spec):
    g = build_graph(spec)
    plan = fusion_plan(g)
    text = summarize(g)
    column = [line.split()[-1] for line in text.splitlines() if line.split() and line.split()[-1].startswith("#")]
    assert sorted(set(column), key=lambda k: int(k[1:])) == [f"#{grp.id}" for grp in plan.groups]
    full = to_dot(g, depth=99, roll=False, fusion=True)  # every layer drawn: each group is one shaded cluster
    assert {f'label="kernel #{grp.id}"' for grp in plan.groups} == set(re.findall(r'label="kernel #\d+"', full))
    dot = to_dot(g, fusion=True)  # the default view: a group inside a collapsed block is counted on its box
    if plan.groups:
        assert f"{len(plan.groups)} groups run as kernels" in text
        assert FUSION_FILL in dot or "fused kernel" in dot
    else:
        assert "groups run as kernels" not in text and FUSION_FILL not in full


def _fusion_table():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fusion_table", SPECS_DIR.parent / "scripts" / "fusion_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fusion_table_counts_each_launch_of_one_forward():
    table = _fusion_table()
    groups, launches, ops = table.measure(SPECS_DIR / "mlp.dln", None)
    assert (groups, launches) == (2, 2) and ops > 0  # each group's kernel once per eval forward
    assert table.measure(SPECS_DIR / "mlp.dln", None, fuse=False)[1] == 0  # the plain module launches nothing
