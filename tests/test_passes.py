"""The pass manager and what passes decide: pipelines as ordered, named data, verification after each pass, the
typed fields each pass sets (``Node.fold``, ``Node.in_place``, ``Graph.calls``), and the fusion plan computed
once per graph as an analysis that a pass invalidates."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from dlc.compiler import fusion
from dlc.backends.graphviz import FUSION_FILL, to_dot
from dlc.backends.summary import summarize
from dlc.backends.triton.spec import AffineArg, BiasArg, RowWeightsArg, ValueArg, kernel_for
from dlc.cli import main
from dlc.compiler.fusion import fusion_plan
from dlc.compiler.ir import BlockCall, FoldedNorm, Graph, print_graph
from dlc.compiler.ops.registry import op_of, registered
from dlc.compiler.passes import (OPTIMIZATIONS, PIPELINES, Pass, PassManager, PassRun, VerifyError, compute_in_place,
                                 fold_batchnorm, pipeline, verify)
from dlc.compiler.passes.manager import FOLD_BATCHNORM, IN_PLACE, INFER_SHAPES
from dlc.compiler.serialize import dump_yaml, load_yaml
from dlc.pipeline import build_graph

from conftest import SPECS_DIR

CASES = Path(__file__).resolve().parent / "fused_cases"
RESNET = SPECS_DIR / "resnet18.dln"


def elaborated(path: Path) -> Graph:
    """The IR before the inference passes (elaborated and verified)."""
    return build_graph(path)


# ---- the manager -----------------------------------------------------------------------------------------------


def test_each_level_is_an_ordered_list_of_named_documented_passes():
    assert OPTIMIZATIONS == (None, "inference")
    assert [p.name for p in pipeline(None)] == ["infer-shapes", "dead-code"]
    assert [p.name for p in pipeline("inference")] == ["infer-shapes", "dead-code", "fold-batchnorm", "in-place"]
    for passes in PIPELINES.values():
        for p in passes:
            assert p.doc and "\n" not in p.doc and p.doc.endswith("."), p.name
    with pytest.raises(ValueError, match="unknown optimisation level 'fast'"):
        pipeline("fast")


def test_the_manager_logs_what_ran_and_calls_the_hook_after_each_pass():
    g = elaborated(RESNET)
    seen = []
    manager = PassManager(pipeline("inference"), after=lambda p, graph: seen.append(
        (p.name, graph is g, sum(n.op == "batchnorm" for n in graph.nodes), sum(n.in_place for n in graph.nodes))))
    assert manager.run(g) is g
    assert manager.log == [PassRun("infer-shapes", False), PassRun("dead-code", False), PassRun("fold-batchnorm", True),
                           PassRun("in-place", True)]
    assert seen == [("infer-shapes", True, 20, 0), ("dead-code", True, 20, 0), ("fold-batchnorm", True, 0, 0),
                    ("in-place", True, 0, 25)]


def _drop_last_node(g: Graph) -> bool:
    """Break the IR: the network's output loses its producer."""
    g.nodes.pop()
    return True


BREAKS = Pass("drop-last-node", _drop_last_node)


def test_verify_after_each_pass_names_the_pass_that_broke_the_ir():
    with pytest.raises(VerifyError, match=r"^after pass drop-last-node: output y is undefined"):
        PassManager([BREAKS, INFER_SHAPES], verify_each=True).run(elaborated(CASES / "linbn.dln"))
    # without it the broken IR is still caught, after the last pass (infer-shapes fails on the missing value)
    with pytest.raises(VerifyError) as info:
        PassManager([BREAKS], verify_each=False).run(elaborated(CASES / "linbn.dln"))
    assert not str(info.value).startswith("after pass")


def test_verify_after_each_pass_is_on_by_default_where_the_environment_asks(monkeypatch):
    monkeypatch.setenv("DLC_VERIFY_PASSES", "1")
    assert PassManager([]).verify_each
    monkeypatch.setenv("DLC_VERIFY_PASSES", "0")
    assert not PassManager([]).verify_each
    monkeypatch.delenv("DLC_VERIFY_PASSES")
    assert not PassManager([]).verify_each and PassManager([], verify_each=True).verify_each


# ---- typed fields -------------------------------------------------------------------------------------------------


def test_fold_batchnorm_sets_node_fold_and_leaves_attrs_alone():
    g = elaborated(RESNET)
    bns = {n.name: dict(n.attrs) for n in g.nodes if n.op == "batchnorm" and len(n.scope) == 0}
    attrs_before = {n.module_path: dict(n.attrs) for n in g.nodes if n.op == "conv2d"}
    assert fold_batchnorm(g)
    stem = next(n for n in g.nodes if n.module_path == "conv1")
    assert stem.fold == FoldedNorm("batchnorm", "bn1", bns["bn1"])
    folded = [n for n in g.nodes if n.fold is not None]
    assert len(folded) == 20 and {n.op for n in folded} == {"conv2d"}
    assert all(op_of(n.fold.op).folds for n in folded)
    assert {n.module_path: dict(n.attrs) for n in g.nodes if n.op == "conv2d"} == attrs_before
    assert not fold_batchnorm(g)  # nothing left to fold
    verify(g)


def test_in_place_sets_node_in_place_only_where_the_op_allows_it():
    g = elaborated(RESNET)
    fold_batchnorm(g)
    attrs_before = [dict(n.attrs) for n in g.nodes]
    assert compute_in_place(g)
    marked = [n for n in g.nodes if n.in_place]
    assert {n.op for n in marked} == {"relu", "add"}
    assert all(op_of(n.op).in_place for n in marked)
    assert [dict(n.attrs) for n in g.nodes] == attrs_before
    assert not compute_in_place(g)  # a second run decides nothing new


def test_ops_that_may_work_in_place_have_an_in_place_pytorch_form():
    for name in registered():
        op = op_of(name)
        if op.in_place:
            forms = [f for f in (op.torch.module, op.torch.function) if f is not None]
            assert forms and all(f.in_place is not None for f in forms), name


def test_verify_refuses_decisions_the_op_does_not_allow():
    g = build_graph(RESNET, optimize="inference")
    conv = next(n for n in g.nodes if n.fold is not None)
    relu = next(n for n in g.nodes if n.op == "relu")
    bad = copy.deepcopy(g)
    bad.nodes[conv.id].in_place = True
    with pytest.raises(VerifyError, match="works in place, which its op does not allow"):
        verify(bad)
    bad = copy.deepcopy(g)
    bad.nodes[relu.id].fold = conv.fold
    with pytest.raises(VerifyError, match="cannot fold one"):
        verify(bad)
    bad = copy.deepcopy(g)
    bad.nodes[conv.id].fold = FoldedNorm("relu", "bn1", {})
    with pytest.raises(VerifyError, match="folds relu, which does not fold"):
        verify(bad)


def test_the_text_and_yaml_forms_carry_the_decisions():
    plain = build_graph(RESNET)
    assert "fold" not in dump_yaml(plain) and "in_place" not in dump_yaml(plain)
    g = build_graph(RESNET, optimize="inference")
    text = print_graph(g)
    assert "[folds bn1 = batchnorm{eps=1e-05, momentum=0.1, affine=true}]" in text
    assert text.count("[in place]") == 25
    back = load_yaml(dump_yaml(g))
    assert back == g
    assert [(n.fold, n.in_place) for n in back.nodes] == [(n.fold, n.in_place) for n in g.nodes]
    assert print_graph(back) == text


def test_block_calls_are_keyed_by_path_and_application():
    g = build_graph(CASES / "inplace1.dln")  # the block instance `t` is applied twice
    assert set(g.calls) == {("t", 0), ("t", 1)}
    assert all(isinstance(c, BlockCall) for c in g.calls.values())
    scopes = {n.scope[0] for n in g.nodes if n.scope}
    assert {(s.path, s.call) for s in scopes} == set(g.calls)
    first, second = (g.call_of(s) for s in sorted(scopes, key=lambda s: s.call))
    assert first.input_names == second.input_names == ("x",)
    assert first.inputs != second.inputs and first.outputs != second.outputs
    assert second.inputs == (g.inputs[0][1],)  # `t(x)`: the network's input


def test_fold_batchnorm_renames_the_values_block_calls_read():
    g = elaborated(CASES / "fold_into_block.dln")
    dropped = {n.outputs[0] for n in g.nodes if n.op == "batchnorm"}
    assert any(set(c.inputs) & dropped for c in g.calls.values())
    assert fold_batchnorm(g)
    assert not any(set(c.inputs + c.outputs) & dropped for c in g.calls.values())
    verify(g)


def test_kernel_call_arguments_are_typed():
    g = build_graph(RESNET)
    plan = fusion_plan(g)
    kinds = {type(arg) for grp in plan.groups if grp.kind in ("anchor", "elementwise", "row")
             for arg in kernel_for(g, grp).call}
    assert kinds == {ValueArg, AffineArg}
    g = build_graph(CASES / "rows.dln")
    kinds = {type(arg) for grp in fusion_plan(g).groups for arg in kernel_for(g, grp).call}
    assert RowWeightsArg in kinds
    g = build_graph(SPECS_DIR / "mlp.dln")  # linear -> relu: the bias is added in the matmul's epilogue
    kinds = {type(arg) for grp in fusion_plan(g).groups for arg in kernel_for(g, grp).call}
    assert BiasArg in kinds


# ---- the fusion plan as an analysis -------------------------------------------------------------------------------


@pytest.fixture
def plans(monkeypatch) -> list[tuple[str, bool]]:
    """Every computation of a fusion plan, as (network, recurrent)."""
    computed: list[tuple[str, bool]] = []
    compute = fusion.group_fusions

    def counting(g: Graph, recurrent: bool = False):
        computed.append((g.name, recurrent))
        return compute(g, recurrent=recurrent)

    monkeypatch.setattr(fusion, "group_fusions", counting)
    return computed


@pytest.mark.parametrize("extra", [[], ["--fused-recurrent"]])
def test_compile_fuse_explain_fusion_computes_the_plan_once(plans, capsys, extra):
    assert main(["compile", str(CASES / "fold_into_block.dln"), "--fuse", "--explain-fusion", *extra]) == 0
    out, err = capsys.readouterr()
    assert "fusion groups" in err and "fused_" in out
    assert plans == [("FoldIntoBlock", bool(extra))]


def test_summary_and_diagram_of_one_graph_compute_the_plan_once(plans):
    g = build_graph(RESNET)
    text = summarize(g)
    dot = to_dot(g, fusion=True)
    assert "groups run as kernels" in text and FUSION_FILL in dot
    assert plans == [("ResNet18", False)]
    fusion_plan(g, recurrent=True)  # another option is another analysis
    assert plans == [("ResNet18", False), ("ResNet18", True)]


def test_a_pass_that_changes_the_graph_invalidates_the_plan(plans):
    g = elaborated(RESNET)
    plan = fusion_plan(g)
    PassManager([INFER_SHAPES]).run(g)  # changes nothing: the plan stands
    assert fusion_plan(g) is plan
    PassManager([FOLD_BATCHNORM, IN_PLACE]).run(g)
    after = fusion_plan(g)
    assert after is not plan and len(plans) == 2
    assert not any(g.nodes[i].op == "batchnorm" for grp in after.groups for i in grp.nodes)


def test_a_copy_of_a_graph_computes_its_own_plan(plans):
    g = elaborated(RESNET)
    plan = fusion_plan(g)
    other = copy.deepcopy(g)
    assert fusion_plan(other) is not plan and fusion_plan(other) == plan
    assert fusion_plan(g) is plan and len(plans) == 2


# ---- optimize="inference" where a folded conv -> batchnorm feeds a block (was KeyError: 1) ------------------------

FOLD_VARIATIONS = {
    "issue": """block Act { input x
    return relu(x) }
network FoldIntoBlock { input x: [3, 8, 8]
    output y = x -> conv2d(4, k=3) -> batchnorm -> Act }
""",
    "two_inputs": """block Add2 {
    input a
    input b
    return relu(a + b)
}
network TwoInputs {
    input x: [3, 8, 8]
    a = x -> c1: conv2d(4, k=3) -> b1: batchnorm
    b = x -> c2: conv2d(4, k=3) -> b2: batchnorm
    output y = a -> Add2(b=b)
}
""",
    "labelled_group": """block Act {
    input x
    return relu(x)
}
network InGroup {
    input x: [3, 8, 8]
    output y = x -> features: (conv2d(4, k=3) -> batchnorm -> Act -> conv2d(4, k=1) -> batchnorm) -> Act
}
""",
    "shared_instance": """block Act {
    input x
    return x -> conv2d(4, k=1) -> relu
}
network Shared {
    input x: [3, 8, 8]
    act = Act
    a = x -> c1: conv2d(4, k=3) -> b1: batchnorm -> act
    b = x -> c2: conv2d(4, k=3) -> b2: batchnorm
    output y = act(b) + a
}
""",
}


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("case", sorted(FOLD_VARIATIONS))
def test_folded_batchnorm_into_a_block_loads_and_matches_the_plain_module(tmp_path, case, fuse):
    import torch

    import dlc

    path = tmp_path / f"{case}.dln"
    path.write_text(FOLD_VARIATIONS[case], encoding="utf-8")
    torch.manual_seed(0)
    plain = dlc.load(path).eval()
    for m in plain.modules():  # statistics that make folding matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    folded = dlc.load(path, optimize="inference", fuse=fuse)
    folded.load_state_dict(plain.state_dict())
    folded.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), plain(x), rtol=1e-4, atol=1e-5)
    out = tmp_path / "out.py"
    assert main(["compile", str(path), "--optimize", "inference", *(["--fuse"] if fuse else []), "-o", str(out)]) == 0
    assert "folded_batchnorm" in out.read_text(encoding="utf-8")
