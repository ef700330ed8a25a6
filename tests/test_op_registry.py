"""The op registry: every op carries every facet each backend needs, the docs list it, and no backend or
pass decides anything by an op's name.

The facets are exercised on a sample network that uses every registered op (a new op joins it): each
node's PyTorch module and functional forms render to Python, its kernel facet to Triton expressions
(one derivative per operand), its PyTorch reference with no shapes (kernels are shape-generic), and its
diagram label and doc line exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import dlc
from dlc.backends.graphviz import FAMILY_COLOURS
from dlc.compiler.ops.kernel import Anchor, Attention, ChannelAffine, Elementwise, Recurrent, Row
from dlc.compiler.ops.pytorch import Ctx, Filled, Var, code_names
from dlc.compiler.ops.registry import all_ops, op_of, registered
from dlc.diagnostics import DlcError

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = """
extern Swish = "torch.nn.SiLU"
network Sample {
    input img: [3, 12, 12]
    input seq: [6, 8]
    input tok: [6] int64
    input v: [10]
    a = img -> c: conv2d(4, k=3, pad=1) -> bn: batchnorm -> relu -> relu6 -> hardtanh
        -> hardswish -> hardsigmoid -> softplus -> softsign -> leaky_relu(0.2) -> elu -> selu
    b = a -> gelu -> silu -> mish -> tanh -> sigmoid -> abs -> scale(2.0) -> shift(1.0) -> dropout(0.1)
        -> stochastic_depth(0.1) -> exp -> log -> sqrt -> rsqrt -> clamp(min=0.5)
    p = b -> maxpool(2) -> avgpool(global) -> flatten -> reshape([2, 2]) -> permute([1, 0]) -> flatten
    q = img -> adaptive_avgpool(3) -> upsample(2) -> ct: conv_transpose2d(2, k=2)
    r = seq -> c1: conv1d(4, k=3)
    s = seq -> ln: layernorm -> softmax -> log_softmax -> l1: lstm(5) -> g1: gru(5) -> r1: rnn(5)
    t = seq -> bi: bidirectional(lstm(3)) -> at: attention -> td: timedistributed(linear(2))
    e = tok -> em: embedding(20, 4)
    w = v -> fc: linear(10)
    output o1 = p
    output o2 = q
    output o3 = r
    output o4 = concat(s, s)
    output o5 = t
    output o6 = e
    output o7 = mean(w, v) + sub(w, v) * mul(w, v) / div(w, v)
    output o8 = v -> glu
    param pk: [10]
    output o9 = (v -> prelu) + pk
    output r1 = sum(img, dim=0) + mean(img, dim=[0]) + max(img, dim=-3) + min(img, dim=[0], keepdim=false)
    output r2 = img -> prod(dim=0) -> logsumexp(dim=1, keepdim=true)
    output r3 = concat(seq -> argmax(dim=1), seq -> argmin(dim=0))
    output r4 = (seq @ (seq -> permute([1, 0]))) -> pow(3.0)
    m1 = (v == w) or (v != 0) and not (v < w)
    m2 = (v <= 1) and (v > w) or (v >= 2)
    output n1 = v -> randn_like -> rand_like
    output c1 = where(m1, v, 0.0) + where(m2, 1, w) + masked_fill(v, m1, -1)
    h1, h2 = seq[1:, ..., ::2] -> transpose(0, 1) -> chunk(2)
    s1, s2 = v -> split([4, 6])
    output o11 = concat(s1, s2)
    output o12 = h1 + h2
    output l1 = img -> pad([1, 1, 2, 0], mode=reflect) -> crop([10, 10]) -> pixel_unshuffle(2) -> pixel_shuffle(2)
        -> gn: groupnorm(3) -> inn: instancenorm -> reshape([3, 2, 5, 10]) -> c3: conv3d(2, k=1)
    output l2 = img -> crop(like=q) -> wn: weightnorm(conv2d(2, k=1)) -> reshape([2, 1, 7, 7])
        -> ct3: conv_transpose3d(2, k=1)
    output l3 = seq -> ct1: conv_transpose1d(2, k=2)
    output p1 = (tok -> positions -> pe: embedding(6, 8)) + seq -> positional_encoding
    output t1 = img -> timedistributed((relu -> abs))
    output x1 = v -> sw: Swish()
    output k1 = zeros_like(v) + (v -> ones_like) + full_like(v, 0.5)
}
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("ops") / "sample.dln"
    path.write_text(SAMPLE, encoding="utf-8")
    return dlc.compile(path).graph


def _python(text: str, mode: str = "eval") -> None:
    ast.parse(text, mode=mode)


def test_the_sample_uses_every_registered_op(sample):
    assert {n.op for n in sample.nodes} == set(registered())


def test_every_op_has_a_diagram_label_family_and_doc_line(sample):
    for node in sample.nodes:
        op = op_of(node.op)
        assert op.describe(node.attrs).strip(), node.op
        assert op.family in FAMILY_COLOURS, f"{node.op}: family {op.family} has no colour in the diagram"
        assert op.draw in ("layer", "merge", "directions", "input"), node.op
        assert op.doc.strip().endswith("."), f"{node.op} has no doc line"


def test_every_op_renders_its_pytorch_forms(sample):
    ctx = Ctx(lambda base: base + "_t")
    for node in sample.nodes:
        op = op_of(node.op)
        if op.declared and not op.stateful:  # an input; a declared `param` is a module attribute
            assert op.torch.module is None and op.torch.function is None, node.op
            continue
        ins = [sample.types[v] for v in node.inputs]
        args = [f"x{i}" for i in range(len(ins))]
        outs = [f"y{i}" for i in range(len(node.outputs))]
        assert op.torch.module is not None or op.torch.function is not None, f"{node.op} has no PyTorch form"
        if op.stateful:
            assert op.torch.module is not None, f"{node.op} has parameters but no module constructor"
        if op.torch.module is not None:
            _python(op.torch.constructor(node.attrs, ins, list(node.types)).text())
            _python(op.torch.constructor(node.attrs, ins, list(node.types), in_sequential=True).text())
            lines = op.torch.forward(node.attrs, ins, list(node.types), args, "self.m", outs, ctx)
            _python("\n".join(line.text() for line in lines), "exec")
        if op.torch.function is not None:
            lines = op.torch.forward(node.attrs, ins, list(node.types), args, None, outs, ctx)
            _python("\n".join(line.text() for line in lines), "exec")


def test_a_keyword_equal_to_its_default_is_left_out(sample):
    conv = next(n for n in sample.nodes if n.name == "c")
    text = op_of("conv2d").torch.constructor(conv.attrs, [sample.types[conv.inputs[0]]], list(conv.types)).text()
    assert text == "nn.Conv2d(3, 4, kernel_size=3, padding=1)"
    filled = op_of("conv2d").torch.constructor(conv.attrs, [sample.types[conv.inputs[0]]], list(conv.types))
    assert filled.values["in_channels"] == 3 and filled.values["out_channels"] == 4  # holes say what they hold


def test_every_kernel_facet_is_consistent_with_its_fusion_kind(sample):
    seen: set[type] = set()
    for node in sample.nodes:
        op = op_of(node.op)
        kernel = op.kernel
        assert op.fusion == (kernel.kind if kernel is not None else "opaque"), node.op
        if kernel is None:
            continue
        seen.add(type(kernel))
        args = [f"x{i}" for i in range(len(node.inputs))]
        if isinstance(kernel, Elementwise):
            weight = ["w"] if kernel.weight is not None else []  # a module's weight (prelu's slopes) comes last
            operands = args + weight + (["keep"] if kernel.mask is not None else [])
            _python(kernel.expr(node.attrs, operands))
            grads = kernel.grads(node.attrs, operands, "y", "g")
            assert len(grads) == len(args + weight), f"{node.op}: one derivative per operand (none for the mask)"
            for grad in grads:
                if grad is not None:  # None: no gradient flows to that operand (a bool, a comparison's operands)
                    _python(grad)
            # the PyTorch reference is the functional form, filled without shapes
            given = {"weight": Var("w")} if weight else {}
            _python(op.torch.expression(node.attrs, args, training=Var("training"), **given))
        elif isinstance(kernel, Row):
            rank = sample.types[node.inputs[0]].rank
            # a reduction runs as a row kernel over trailing axes only (elsewhere in PyTorch)
            assert kernel.axes(node.attrs, rank) is not None or kernel.reduces, node.op
            operands = args + (["w", "b"] if kernel.weights(node.attrs) else [])
            _python("\n".join(kernel.forward(node.attrs, operands, "y")), "exec")
            _python("\n".join(kernel.backward(node.attrs, operands, "y", "g", "gx")), "exec")
            _python(op.torch.expression(node.attrs, args, **dict(zip(("weight", "bias"), map(Var, operands[1:])))))
        elif isinstance(kernel, (Anchor, Recurrent, Attention)):
            assert op.stateful and op.torch.module is not None, node.op
            if isinstance(kernel, Recurrent) and kernel.directions == 2:
                assert op.wraps, f"{node.op} runs a wrapped layer both ways"
        else:
            assert isinstance(kernel, ChannelAffine) and op.stateful and op.folds, node.op
    assert seen == {Elementwise, ChannelAffine, Row, Anchor, Recurrent, Attention}


def _op_table() -> str:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    start = text.index("| Op | Arguments | Shape rule | PyTorch |")
    return text[start:text.index("\n\n", start)]


def test_the_docs_op_table_lists_every_registered_op():
    listed = set(re.findall(r"^\| `(\w+)` \|", _op_table(), re.MULTILINE))
    assert set(registered()) <= listed, f"missing from docs/language.md's op table: {set(registered()) - listed}"


def _mentions_op(expr: ast.AST) -> bool:
    """``node.op``, ``layer["op"]``, ``op.name``, ``op``: an expression holding an op's name."""
    if isinstance(expr, ast.Attribute) and expr.attr == "op":
        return True
    if isinstance(expr, ast.Attribute) and expr.attr == "name":
        return _mentions_op(expr.value) or (isinstance(expr.value, ast.Name) and expr.value.id == "opdef")
    if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant) and expr.slice.value == "op":
        return True
    return isinstance(expr, ast.Name) and expr.id == "op"


def _op_names(expr: ast.AST, names: set[str]) -> list[str]:
    """The registered op names written as string literals in ``expr`` (a literal, or a tuple/list/set of them)."""
    items = expr.elts if isinstance(expr, (ast.Tuple, ast.List, ast.Set)) else [expr]
    return [e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value in names]


def name_decisions(source: str) -> list[tuple[int, str]]:
    """Line and text of every comparison of an op (or its name) with an op name's literal in ``source``."""
    names = set(registered())
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_mentions_op(s) for s in sides) and any(_op_names(s, names) for s in sides):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith") and _mentions_op(node.func.value)):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_backend_or_pass_decides_by_an_op_name():
    found = {}
    for folder in ("backends", "compiler", "dlc"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("compiler/ops/"):
                continue  # the op definitions themselves
            hits = name_decisions(path.read_text(encoding="utf-8"))
            if hits:
                found[rel] = hits
    assert not found, f"decisions by op name (ask the op's facets instead): {found}"


def test_the_name_check_sees_the_forms_it_forbids():
    bad = 'if node.op == "relu": pass\nif n.op in ("softmax", "gelu"): pass\nok = n.op.startswith("conv")\n' \
          'x = v.op.name != "linear"\ny = inner["op"] == "lstm"\n' \
          'if e.op == "+": pass\nif s.kind == "linear": pass\nif op.draw == "input": pass\n'
    assert [line for line, _ in name_decisions(bad)] == [1, 2, 3, 4, 5]


def test_statements_say_which_names_they_read():
    """The emitter imports and embeds what a statement's templates and code values read, not what a parse of the
    written text finds: names after a dot, in strings and in comments are not read."""
    inner = Filled("merge_directions({seq}, {merge})", {"seq": Var("seq"), "merge": "torch"})
    stmt = Filled("{y} = torch.cat([{x}, {z}], dim=1)  # F is not read here", {
        "y": Var("y"), "x": inner, "z": Var("nn.Identity()(w)")})
    assert stmt.names() == {"y", "torch", "merge_directions", "seq", "nn", "w", "dim"}
    assert code_names("self.training") == {"self"}
    assert code_names('F.relu(x, "nn") + 1e-5') == {"F", "x"}


def test_names_from_pytorch_and_keras_point_at_the_op(tmp_path):
    """`aka` names (what PyTorch or Keras call an op) are no op's own name, belong to one op each, and the
    diagnostic for one names the op: `arange` is `positions`, `max_pool2d` is `maxpool`, `cat` is `concat`."""
    ops = all_ops()
    akas = [name for op in ops.values() for name in op.aka]
    assert akas and len(akas) == len(set(akas)) and not set(akas) & set(ops)
    for name, op in (("arange", "positions"), ("max_pool2d", "maxpool"), ("cat", "concat"), ("dense", "linear")):
        path = tmp_path / f"{name}.dln"
        path.write_text(f"network N {{\n    input t: [3, 8, 8]\n    output y = t -> {name}\n}}\n", encoding="utf-8")
        with pytest.raises(DlcError) as e:
            dlc.compile(path)
        assert e.value.code == "unknown-layer" and e.value.hint.startswith(f"`{name}` is `{op}` here: "), e.value.hint


def test_every_op_has_a_cost_facet_and_it_runs_on_the_sample(sample):
    """Each op says its MACs (dlc.compiler.cost; None from the facet only for an external layer), and every node
    of the sample network, which calls every op, gets a polynomial from it."""
    assert [name for name, op in registered().items() if op.cost is None] == []
    from dlc.backends.summary import summary_of

    rows = summary_of(sample).rows
    assert len(rows) == len(sample.nodes)
    assert {r.op.split("(")[0] for r in rows if r.macs is None} <= {"external"}
    assert any(r.macs is not None and r.macs.constant != 0 for r in rows)
