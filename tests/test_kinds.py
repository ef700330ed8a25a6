"""Argument kinds (dlc.compiler.kinds): names resolve to kind objects, and a kind checks its argument itself.

The ops below once checked these arguments in their shape rules, keyed on the argument's name; the argument's
kind now does it. Each case pins the op's kind and the diagnostic (its position is the argument's, its text the one
the shape rule gave), and checks it comes from the kind: with the op's shape rule replaced by one that checks
nothing, the diagnostic is the same.
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


def _without_rule(monkeypatch, op: str) -> None:
    """Replace ``op``'s shape rule by one that checks nothing (it returns its input's type)."""
    monkeypatch.setitem(registry.OPS, op, dataclasses.replace(all_ops()[op], infer=lambda attrs, ins: (ins[0],)))


KINDS = [  # op, argument, its kind, the network's input, its output expression, column, message
    ("softmax", "dim", "axis", "[4, 5]", "x -> softmax(dim=2)", 33,
     "`softmax`: axis 2 is out of range for a rank-2 tensor"),
    ("log_softmax", "dim", "axis", "[4]", "x -> log_softmax(-2)", 33,
     "`log_softmax`: axis -2 is out of range for a rank-1 tensor"),
    ("concat", "dim", "axis", "[4, 5]", "concat(x, x, dim=-3)", 33,
     "`concat`: axis -3 is out of range for a rank-2 tensor"),
    ("embedding", "padding_idx", "token_id", "[7] int64", "x -> embedding(5, 8, padding_idx=5)", 49,
     "`embedding`: padding_idx 5 is not a token id of a vocabulary of 5"),
    ("dropout", "p", "probability", "[4]", "x -> dropout(1.5)", 29, "`dropout`: p must be in [0, 1), got 1.5"),
    ("attention", "dropout", "probability", "[6, 8]", "x -> attention(heads=2, dropout=1)", 48,
     "`attention`: dropout must be in [0, 1), got 1.0"),
    ("lstm", "dropout", "probability", "[6, 8]", "x -> lstm(4, dropout=1.0)", 37,
     "`lstm`: dropout must be in [0, 1), got 1.0"),
    ("batchnorm", "momentum", "fraction", "[3, 4, 4]", "x -> batchnorm(momentum=1.5)", 40,
     "`batchnorm`: momentum must be in [0, 1], got 1.5"),
    ("batchnorm", "eps", "epsilon", "[3, 4, 4]", "x -> batchnorm(eps=0)", 35,
     "`batchnorm`: eps must be positive (it keeps the division finite), got 0.0"),
    ("layernorm", "eps", "epsilon", "[4]", "x -> layernorm(eps=-1e-5)", 35,
     "`layernorm`: eps must be positive (it keeps the division finite), got -1e-05"),
    ("upsample", "scale", "positive", "[3, 4, 4]", "x -> upsample(scale=0)", 36,
     "`upsample`: scale must be positive, got 0.0"),
]


@pytest.mark.parametrize("op,attr,kind,shape,expr,col,message", KINDS, ids=[f"{s[0]}.{s[1]}" for s in KINDS])
def test_the_kind_checks_the_argument(tmp_path, monkeypatch, op, attr, kind, shape, expr, col, message):
    assert all_ops()[op].attr(attr).kind.name == kind
    spec = f"""
        network N {{
            input x: {shape}
            output y = {expr}
        }}
    """
    first = _error(tmp_path, spec).splitlines()[0]
    assert first.endswith(f"net.dln:4:{col}: error[bad-argument]: {message}"), first
    _without_rule(monkeypatch, op)
    assert _error(tmp_path, spec).splitlines()[0] == first


WRAPPERS = [  # op, its argument's kind, a call the kind refuses, the message
    ("bidirectional", "recurrent_layer", "bidirectional(linear(4))",
     "`bidirectional` wraps rnn, lstm or gru, not `linear`"),
    ("bidirectional", "recurrent_layer", "bidirectional(bidirectional(lstm(4)))",
     "`bidirectional` wraps rnn, lstm or gru, not `bidirectional`"),
    ("bidirectional", "recurrent_layer", "bidirectional(3)",
     "`bidirectional`: `layer` must be a layer such as `lstm(64)`, got the integer 3"),
    ("timedistributed", "step_layer", "timedistributed(timedistributed(relu))",
     "`timedistributed` cannot wrap another `timedistributed`"),
    ("timedistributed", "step_layer", "timedistributed(lstm(4))",
     "`timedistributed` wraps a single-input layer, not `lstm`"),
    ("timedistributed", "step_layer", "timedistributed(add)",
     "`timedistributed` wraps a single-input layer, not `add`"),
]


@pytest.mark.parametrize("op,kind,call,message", WRAPPERS, ids=[w[2] for w in WRAPPERS])
def test_a_wrapper_refuses_by_its_argument_kind(tmp_path, monkeypatch, op, kind, call, message):
    assert all_ops()[op].attr("layer").kind.name == kind
    spec = f"""
        network N {{
            input x: [6, 8]
            output y = x -> {call}
        }}
    """
    first = _error(tmp_path, spec).splitlines()[0]
    col = 35 if op == "bidirectional" else 37  # the wrapped layer's position, inside the wrapper's parentheses
    assert first.endswith(f"net.dln:4:{col}: error[bad-argument]: {message}"), first
    _without_rule(monkeypatch, op)
    assert _error(tmp_path, spec).splitlines()[0] == first


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
