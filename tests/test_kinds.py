"""Argument kinds (dlc.compiler.kinds): names resolve to kind objects, and the new kinds report what the shape
rules report today, byte for byte, so an op can switch to them and drop its own check.

Each switch below replaces an op in the registry by a copy whose argument has the new kind and whose shape rule
checks nothing (it returns its input's type): the diagnostic must then come from the kind alone, and equal the
one the real op gives.
"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from dlc.compiler.kinds import KIND_NAMES, Axis, Enum, Int, IntOrInts, Padding, TokenId, kind_named
from dlc.compiler.ops import registry
from dlc.compiler.ops.registry import Attr, all_ops
from dlc.diagnostics import DlcError, render
from dlc.pipeline import build_graph


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "net.dln"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(DlcError) as info:
        build_graph(path)
    return render(info.value)


def _switch(monkeypatch, op: str, attr: str, kind: str, keep_rule: bool = False) -> None:
    """Give ``op``'s argument ``attr`` the kind ``kind``; unless ``keep_rule``, its shape rule checks nothing."""
    old = all_ops()[op]
    attrs = tuple(dataclasses.replace(a, kind=kind) if a.name == attr else a for a in old.attrs)
    new = dataclasses.replace(old, attrs=attrs)
    if not keep_rule:
        new = dataclasses.replace(new, infer=lambda attrs, ins: (ins[0],))
    monkeypatch.setitem(registry.OPS, op, new)


SWITCHES = [  # op, argument, new kind, the network's input, its output expression
    ("softmax", "dim", "axis", "[4, 5]", "x -> softmax(dim=2)"),
    ("log_softmax", "dim", "axis", "[4]", "x -> log_softmax(-2)"),
    ("concat", "dim", "axis", "[4, 5]", "concat(x, x, dim=-3)"),
    ("embedding", "padding_idx", "token_id", "[7] int64", "x -> embedding(5, 8, padding_idx=5)"),
    ("dropout", "p", "probability", "[4]", "x -> dropout(1.5)"),
    ("attention", "dropout", "probability", "[6, 8]", "x -> attention(heads=2, dropout=1)"),
    ("lstm", "dropout", "probability", "[6, 8]", "x -> lstm(4, dropout=1.0)"),
    ("batchnorm", "momentum", "fraction", "[3, 4, 4]", "x -> batchnorm(momentum=1.5)"),
    ("batchnorm", "eps", "epsilon", "[3, 4, 4]", "x -> batchnorm(eps=0)"),
    ("layernorm", "eps", "epsilon", "[4]", "x -> layernorm(eps=-1e-5)"),
    ("upsample", "scale", "positive", "[3, 4, 4]", "x -> upsample(scale=0)"),
]


@pytest.mark.parametrize("op,attr,kind,shape,expr", SWITCHES, ids=[f"{s[0]}.{s[1]}" for s in SWITCHES])
def test_a_new_kind_reports_what_the_shape_rule_does(tmp_path, monkeypatch, op, attr, kind, shape, expr):
    spec = f"""
        network N {{
            input x: {shape}
            output y = {expr}
        }}
    """
    today = _error(tmp_path, spec)
    assert "error[bad-argument]" in today, today
    _switch(monkeypatch, op, attr, kind)
    assert _error(tmp_path, spec) == today


WRAPPERS = [  # op, new kind, a call the kind refuses
    ("bidirectional", "recurrent_layer", "bidirectional(linear(4))"),
    ("bidirectional", "recurrent_layer", "bidirectional(bidirectional(lstm(4)))"),
    ("bidirectional", "recurrent_layer", "bidirectional(3)"),
    ("timedistributed", "step_layer", "timedistributed(timedistributed(relu))"),
    ("timedistributed", "step_layer", "timedistributed(lstm(4))"),
    ("timedistributed", "step_layer", "timedistributed(add)"),
]


@pytest.mark.parametrize("op,kind,call", WRAPPERS, ids=[w[2] for w in WRAPPERS])
def test_a_wrapper_that_names_its_kind_refuses_the_same_layers(tmp_path, monkeypatch, op, kind, call):
    spec = f"""
        network N {{
            input x: [6, 8]
            output y = x -> {call}
        }}
    """
    today = _error(tmp_path, spec)
    assert "error[bad-argument]" in today, today
    _switch(monkeypatch, op, "layer", kind, keep_rule=True)
    assert _error(tmp_path, spec) == today


def test_attr_resolves_a_kind_name_with_its_bounds():
    assert Attr("k", "int2", min=1).kind == IntOrInts(min=1)
    assert Attr("pad", "pad", 0, min=0).kind == Padding(min=0)
    assert Attr("dim", "axis", -1).kind == Axis()
    assert Attr("mode", "enum", "a", ("a", "b")).kind == Enum(("a", "b"))
    token = TokenId(vocabulary="size", min=0)
    assert Attr("padding_idx", token, None).kind is token  # a kind object is kept as given
    assert isinstance(Attr("units", "int", min=1).kind, Int)


@pytest.mark.parametrize("name,options", [
    ("integer", {}), ("enum", {}), ("enum", {"choices": ("a",), "min": 0}), ("bool", {"min": 1}),
    ("int", {"choices": ("a",)}),
])
def test_a_mistaken_kind_is_refused_where_the_op_is_defined(name, options):
    with pytest.raises(ValueError):
        kind_named(name, **options)


def test_every_kind_name_makes_a_kind_with_that_name():
    for name in KIND_NAMES:
        kind = kind_named(name, choices=("a",)) if name == "enum" else kind_named(name)
        assert kind.name == name


def test_integer_kinds_describe_their_range():
    assert IntOrInts(min=1).range_text() == "a positive integer"
    assert Int(min=0).range_text(plural=True) == "non-negative integers"
    assert Int(min=1, max=1024).range_text() == "an integer from 1 to 1024"
    assert Int(min=2).range_text(values=(2**40,)) == "an integer from 2 to 2147483647"
    assert Int().out_of_range(2**31) and not Int().out_of_range(-(2**40))
