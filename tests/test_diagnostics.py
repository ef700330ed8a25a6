"""Diagnostics: every spec error is a DlcError with a stable code, the exact `line:col`, a caret, a hint
where one helps, and the chain of block instances for errors inside blocks.

Each case is a small spec written to ``tmp_path``; positions are 1-based `line:col` of the span start.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dlc.pipeline import build_graph
from dlc.diagnostics import DlcError, render
from dlc.grammar import parse


def write(tmp_path: Path, text: str, name: str = "net.dln") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error(tmp_path: Path, text: str, *, files: dict[str, str] | None = None, overrides=None,
          network: str | None = None) -> DlcError:
    for name, body in (files or {}).items():
        write(tmp_path, body, name)
    path = write(tmp_path, text)
    with pytest.raises(DlcError) as info:
        build_graph(path, overrides=overrides, network=network)
    return info.value


def where(err: DlcError) -> str:
    assert err.span is not None, f"{err} has no span"
    return f"{err.span.line}:{err.span.col}"


def check(err: DlcError, code: str, pos: str, *, file: Path | None = None, message: str | None = None,
          hint: str | None = None) -> None:
    text = render(err)
    assert err.code == code, text
    assert where(err) == pos, text
    if file is not None:
        assert Path(err.span.file).name == file.name, text
    if message is not None:
        assert message in err.message, text
    if hint is not None:
        assert err.hint is not None and hint in err.hint, text


NET = """
network N {
    input x: [4]
    output y = x -> %s
}
"""


# ---- syntax ------------------------------------------------------------------------------


def test_syntax_missing_paren_says_what_was_expected(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            output y = x -> linear(3
        }
    """)
    check(err, "syntax", "4:1", message="unexpected `}`; expected a closing `)`")


def test_syntax_missing_stage_after_arrow(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            y = x -> -> relu
            output z = y
        }
    """)
    check(err, "syntax", "3:14", message="expected a pipeline stage after `->`")


def test_syntax_unexpected_end_of_file(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            output y = x -> relu
    """)
    # just after the last token
    check(err, "syntax", "3:25", message="unexpected end of file; expected")
    assert "`}`" in err.message and "`->`" in err.message


def test_syntax_expected_list_names_tokens_not_grammar_terminals(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            output y = x -> linear(3) + x
        }
    """)
    check(err, "syntax", "3:31", message="unexpected `+`; expected `*`, `->`, `if`, `}` or a statement")


def test_syntax_misspelt_keyword_gets_a_hint(tmp_path):
    err = error(tmp_path, """
        netwrk N {
            input x: [4]
            output y = x
        }
    """)
    check(err, "syntax", "1:1", message="expected `block`, `extern`, `import`, `network`",
          hint="did you mean `network`?")
    err = error(tmp_path, """
        network N {
            inptu x: [4]
            output y = x
        }
    """)
    check(err, "syntax", "2:11", hint="did you mean `input`?")


def test_syntax_unterminated_string(tmp_path):
    err = error(tmp_path, """
        import "blocks.dln
        network N {
            input x: [4]
            output y = x
        }
    """)
    check(err, "syntax", "1:8", message="unterminated string")


def test_syntax_bad_escape_in_string(tmp_path):
    err = error(tmp_path, r"""
        import "a\x.dln"
        network N {
            input x: [4]
            output y = x
        }
    """)
    check(err, "syntax", "1:8", message="bad string literal")


def test_number_too_large(tmp_path):
    err = error(tmp_path, NET % "linear(1e999)")
    check(err, "bad-number", "3:28", message="the number 1e999 is too large")
    err = error(tmp_path, NET % ("linear(" + "9" * 40 + ")"))
    check(err, "bad-number", "3:28", message="the number 99999999999999999999... is too large")


def test_unexpected_character(tmp_path):
    err = error(tmp_path, NET % "linear(3) $ relu")
    check(err, "syntax", "3:31", message="unexpected character `$`")


def test_parse_api_raises_dlc_error():
    with pytest.raises(DlcError) as info:
        parse("network N { input x: [4] output y = x -> }", "inline.dln")
    check(info.value, "syntax", "1:42", message="expected a pipeline stage")


# ---- names, layers, arguments -------------------------------------------------------------


def test_unknown_layer_with_suggestion_and_caret(tmp_path):
    err = error(tmp_path, NET % "lineer(3)")
    check(err, "unknown-layer", "3:21", message="unknown layer or block `lineer`", hint="did you mean `linear`?")
    assert render(err) == (
        f"{tmp_path / 'net.dln'}:3:21: error[unknown-layer]: unknown layer or block `lineer`\n"
        " 3 |     output y = x -> lineer(3)\n"
        "   |                     ^^^^^^\n"
        "  = hint: did you mean `linear`?"
    )


def test_unknown_name_with_suggestion(tmp_path):
    err = error(tmp_path, """
        network N {
            input image: [4]
            output y = imgae -> linear(3)
        }
    """)
    check(err, "unknown-name", "3:16", message="unknown name `imgae`", hint="did you mean `image`?")


def test_misspelt_tensor_argument_is_an_unknown_name(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            output y = relu(xs)
        }
    """)
    check(err, "unknown-name", "3:21", message="`xs`", hint="did you mean `x`?")


def test_bad_argument_type(tmp_path):
    err = error(tmp_path, NET % "linear(true)")
    check(err, "bad-argument", "3:28", message="`linear`: `units` must be an integer, got the boolean true")


def test_misspelt_parameter_as_argument_value(tmp_path):
    err = error(tmp_path, """
        network N(hidden: int = 8) {
            input x: [4]
            output y = x -> linear(hiden)
        }
    """)
    check(err, "bad-argument", "3:28", message="got the name `hiden`", hint="did you mean `hidden`?")


def test_missing_argument(tmp_path):
    err = error(tmp_path, NET % "linear(bias=false)")
    check(err, "missing-argument", "3:21", message="`linear` needs the argument `units`",
          hint="linear(units, bias=true)")


def test_unknown_argument_with_suggestion(tmp_path):
    err = error(tmp_path, NET % "linear(3, bais=false)")
    check(err, "unknown-argument", "3:31", message="`linear` has no argument `bais`", hint="did you mean `bias`?")


def test_unknown_tensor_input(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [3, 8]
            output y = attention(qeury=x, key=x, value=x)
        }
    """)
    check(err, "unknown-argument", "3:26", message="`attention` has no tensor input `qeury`",
          hint="did you mean `query`?")


def test_too_many_arguments(tmp_path):
    err = error(tmp_path, NET % "linear(3, true, 5)")
    check(err, "too-many-arguments", "3:37", message="at most 2 positional")
    err = error(tmp_path, NET % "relu(3)")
    check(err, "too-many-arguments", "3:26", message="`relu` takes no positional arguments")


def test_duplicate_argument(tmp_path):
    err = error(tmp_path, NET % "linear(3, units=4)")
    check(err, "duplicate-argument", "3:28", message="`units` given twice")


def test_bad_merge_mode(tmp_path):
    err = error(tmp_path, """
        network N {
            input t: [T] int64
            output y = t -> embedding(10, 8) -> bidirectional(lstm(8), merge=avg)
        }
    """)
    check(err, "bad-argument", "3:70", message="`merge` must be one of concat, sum, mul, ave, none; got `avg`",
          hint="did you mean `ave`?")


def test_merge_mode_named_like_a_builtin(tmp_path):
    # `max` is a compile-time function too; as an argument value it is just a (bad) mode name
    err = error(tmp_path, """
        network N {
            input t: [T] int64
            output y = t -> embedding(10, 8) -> bidirectional(lstm(8), merge=max)
        }
    """)
    check(err, "bad-argument", "3:70", message="got `max`")


def test_bidirectional_of_non_recurrent_layer(tmp_path):
    err = error(tmp_path, """
        network N {
            input t: [T, 8]
            output y = t -> bidirectional(linear(8))
        }
    """)
    check(err, "bad-argument", "3:35", message="`bidirectional` wraps rnn, lstm or gru, not `linear`")


def test_not_a_layer_and_not_callable(tmp_path):
    err = error(tmp_path, NET % "x")
    check(err, "not-a-layer", "3:21", message="`x` is a tensor [4] float32, not a layer")
    err = error(tmp_path, """
        network N {
            input x: [4]
            output y = x(3)
        }
    """)
    check(err, "not-callable", "3:16", message="cannot be called")


# ---- shapes and types -------------------------------------------------------------------------


def test_add_shape_mismatch_shows_both_shapes(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [3, 8, 8]
            a = x -> conv2d(4, k=1)
            output y = a + x
        }
    """)
    check(err, "shape-mismatch", "4:16", message="got [4, 8, 8] and [3, 8, 8]")


def test_concat_shape_mismatch_shows_both_shapes(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [3, 8, 8]
            a = x -> conv2d(4, k=3)
            output y = concat(a, x)
        }
    """)
    check(err, "shape-mismatch", "4:16", message="got [4, 6, 6] and [3, 8, 8]")


def test_flatten_of_symbolic_dimension(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [T, 4]
            output y = x -> flatten
        }
    """)
    check(err, "symbolic-dim", "3:21", message="symbolic dimension `T`", hint="give `T` a number")


def test_embedding_of_float_input(tmp_path):
    err = error(tmp_path, NET % "embedding(10, 4)")
    check(err, "type-mismatch", "3:21", message="`embedding` needs integer token ids, got float32",
          hint="int64")


def test_conv_on_wrong_rank(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4, 4]
            output y = x -> conv2d(8, k=3)
        }
    """)
    check(err, "shape-mismatch", "3:21", message="`conv2d` expects [C, H, W] (batch not counted), got a rank-2")


def test_groups_not_dividing_channels_points_at_groups(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [6, 8, 8]
            output y = x -> conv2d(8, k=3, groups=4)
        }
    """)
    check(err, "bad-argument", "3:43", message="groups=4 must divide both input channels (6)")


def test_reshape_element_mismatch(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [6, 8, 8]
            output y = x -> reshape([5, 7])
        }
    """)
    check(err, "shape-mismatch", "3:29", message="(384 elements) into [5, 7] (35 elements)")


def test_initial_state_mismatch(tmp_path):
    err = error(tmp_path, """
        network N {
            input s: [T] int64
            e, st = s -> embedding(10, 8) -> lstm(16, return_state=true)
            output y = s -> embedding(10, 8) -> lstm(32, initial_state=st)
        }
    """)
    check(err, "shape-mismatch", "4:64", message="initial_state is state(lstm, layers=1, dirs=1, hidden=16)")
    assert "hidden=32" in err.message


def test_window_larger_than_input(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [3, 4, 4]
            output y = x -> maxpool(5)
        }
    """)
    check(err, "shape-mismatch", "3:21", message="does not fit an input of size 4")


@pytest.mark.parametrize("layer, pos, message", [
    ("conv2d(3, k=[1, 2, 3])", "3:33", "`conv2d`: `k` needs 2 values here (one per spatial axis), got 3"),
    ("maxpool(2, pad=[1])", "3:36", "`maxpool`: `pad` needs 2 values here"),
    ("adaptive_avgpool([2, 2, 2])", "3:38", "`adaptive_avgpool`: `size` needs 2 values here"),
    ("conv_transpose2d(3, k=2, stride=2, output_pad=2)", "3:67", "output_pad (2) must be smaller than the stride"),
    ("upsample(-2)", "3:30", "`upsample`: scale must be positive"),
    ("upsample(0.1)", "3:30", "shrinks a dimension of size 8 to nothing"),
    ("reshape([3, x])", "3:29", "must be a list of integers, got a list whose item 1 is a tensor"),
])
def test_bad_spatial_arguments(tmp_path, layer, pos, message):
    err = error(tmp_path, """
        network N {
            input x: [3, 8, 8]
            output y = x -> %s
        }
    """ % layer)
    check(err, "bad-argument", pos, message=message)


def test_recurrent_and_embedding_arguments(tmp_path):
    spec = """
        network N {
            input t: [T] int64
            output y = t -> %s
        }
    """
    err = error(tmp_path, spec % "embedding(10, 8) -> lstm(4, dropout=1.5)")
    check(err, "bad-argument", "3:57", message="`lstm`: dropout must be in [0, 1)")
    err = error(tmp_path, spec % "embedding(10, 8, padding_idx=10)")
    check(err, "bad-argument", "3:50", message="padding_idx 10 is not a token id of a vocabulary of 10")


def test_every_default_argument_can_be_written_explicitly():
    """`maxpool(3, pad=0)` says what the default says: no argument kind may reject an op's own default."""
    from dlc.compiler.kinds import Enum, LayerArg, Site
    from dlc.compiler.ops.registry import REQUIRED, all_ops
    from dlc.compiler.values import Symbol
    from dlc.diagnostics import Span

    span = Span("net.dln", 1, 1, 1, 2)
    for op in all_ops().values():
        given = {a.name: a.default for a in op.attrs}
        for a in op.attrs:
            if a.default is REQUIRED or a.default is None or isinstance(a.kind, LayerArg):
                continue
            value = Symbol(a.default, span) if isinstance(a.kind, Enum) else a.default
            site = Site(op, a.name, known_names=list, bind_layer=lambda layer: {})
            assert a.kind.coerce(value, site) == a.default, (op.name, a.name)
            assert a.kind.check(a.default, op.name, a.name, given, []) is None, (op.name, a.name)


def test_explicit_zero_padding_compiles(tmp_path):
    path = write(tmp_path, """
        network N {
            input x: [3, 32, 32]
            output y = x -> maxpool(3, stride=2, pad=0) -> avgpool(2, pad=[0, 1])
                         -> conv_transpose2d(3, k=2, stride=2, output_pad=0) -> conv2d(3, k=3, pad=[0, 1], dilation=1)
        }
    """)
    g = build_graph(path)
    assert g.types[g.outputs[0][1]].shape == (3, 12, 16)


def test_dropout_probability_out_of_range(tmp_path):
    err = error(tmp_path, NET % "dropout(1.5)")
    check(err, "bad-argument", "3:29", message="p must be in [0, 1)")


def test_tensor_compared_at_compile_time(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            k = if x > 3 then 1 else 2
            output y = x
        }
    """)
    check(err, "type-mismatch", "3:12", message="cannot compare a tensor")


# ---- statements, definitions, repeats --------------------------------------------------------


def test_duplicate_name_in_a_body(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            y = x -> linear(3)
            y = x -> linear(3)
            output z = y
        }
    """)
    check(err, "duplicate-name", "4:5", message="`y` is already defined in `N`")


def test_duplicate_layer_label(tmp_path):
    err = error(tmp_path, NET % "fc: linear(3) -> fc: linear(2)")
    check(err, "duplicate-name", "3:38", message="`fc` already names a layer here")
    (first,) = err.diagnostic.related
    assert (first.span.line, first.span.col, first.message) == (3, 25, "`fc` first names a layer here")  # the layer


def test_duplicate_output(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            output y = x -> linear(3)
            output y = x -> linear(2)
        }
    """)
    check(err, "duplicate-name", "4:12", message="output `y` is declared twice")


def test_duplicate_block_across_files(tmp_path):
    block = """
        block B {
            input x
            return x
        }
    """
    err = error(tmp_path, """
        import "lib.dln"
        block B {
            input x
            return x
        }
        network N {
            input x: [4]
            output y = x -> B
        }
    """, files={"lib.dln": block})
    check(err, "duplicate-name", "2:7", message="`B` is defined twice")
    (first,) = err.related  # the other definition, a related place (dlc check --format json, dlc lsp)
    assert (Path(first.span.file).name, first.span.line, first.span.col) == ("lib.dln", 1, 7)
    assert first.message == "`B` is first defined here"
    assert f"= note: {first.span}: `B` is first defined here" in str(err)


def test_block_named_like_a_builtin_layer(tmp_path):
    err = error(tmp_path, """
        block linear {
            input x
            return x
        }
        network N {
            input x: [4]
            output y = x
        }
    """)
    check(err, "duplicate-name", "1:7", message="has the name of a built-in layer")


@pytest.mark.parametrize("count, pos, shown", [
    ("0", "3:33", "the integer 0"),
    ("2.5", "3:33", "the number 2.5"),
    ("(1 - 3)", "3:34", "the integer -2"),
    ("(1 > 0)", "3:34", "the boolean true"),
    ("x", "3:33", "a tensor [4] float32"),
])
def test_repeat_count_not_a_positive_int(tmp_path, count, pos, shown):
    err = error(tmp_path, NET % f"linear(3) * {count}")
    check(err, "bad-repeat", pos, message=f"repeat count must be a positive integer, got {shown}")


def test_wrong_block_inputs(tmp_path):
    err = error(tmp_path, """
        block Pair {
            input a
            input b
            return a + b
        }
        network N {
            input x: [4]
            output y = x -> Pair
        }
    """)
    check(err, "wrong-inputs", "8:21", message="block `Pair` takes 2 input(s) (a, b), got 1")


def test_tuple_unpack_mismatch(tmp_path):
    err = error(tmp_path, """
        network N {
            input s: [T] int64
            a, b, c = s -> embedding(10, 8) -> lstm(16, return_state=true)
            output y = a
        }
    """)
    check(err, "tuple-mismatch", "3:15", message="3 names on the left but the value has 2 part(s)")


def test_single_name_for_a_tuple(tmp_path):
    err = error(tmp_path, """
        network N {
            input s: [T] int64
            output y = s -> embedding(10, 8) -> lstm(16, return_state=true)
        }
    """)
    check(err, "tuple-mismatch", "3:16", message="an output must be one tensor, got 2 values",
          hint="unpack it first")


@pytest.mark.parametrize("label, why", [
    ("class", "it is a Python keyword"),
    ("__x", "names starting with `__` are reserved"),
    ("héllo", "names must be ASCII"),
])
def test_bad_identifier_as_label(tmp_path, label, why):
    err = error(tmp_path, NET % f"{label}: linear(3)")
    check(err, "bad-name", "3:21", message=f"`{label}` cannot be used as a layer name: {why}")


def test_bad_identifier_as_assignment_points_at_the_name(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            lambda = x -> linear(3)
            output y = lambda
        }
    """)
    check(err, "bad-name", "3:5", message="`lambda` cannot be used as a name")
    assert render(err).splitlines()[2] == "   |     ^^^^^^"


def test_label_clashing_with_nn_module_attribute(tmp_path):
    err = error(tmp_path, NET % "forward: linear(3)")
    check(err, "bad-name", "3:21", message="torch.nn.Module already uses that name")
    # inside a labelled group too: nn.Sequential.add_module refuses it just the same
    err = error(tmp_path, NET % "g: (linear(4) -> eval: relu)")
    check(err, "bad-name", "3:38", message="`eval` cannot name a layer")


def test_duplicate_block_input(tmp_path):
    err = error(tmp_path, """
        block B {
            input x
            input x
            return x
        }
        network N {
            input x: [4]
            output y = x -> B
        }
    """)
    check(err, "duplicate-name", "3:5", message="input `x` is declared twice in `B`")


def test_language_keyword_as_a_name(tmp_path):
    err = error(tmp_path, """
        network N {
            input true: [4]
            output y = true
        }
    """)
    check(err, "bad-name", "2:5", message="`true` cannot be used as an input name: it is a keyword of the language")


def test_network_without_output(tmp_path):
    err = error(tmp_path, """
        network N {
            input x: [4]
            y = x -> linear(3)
        }
    """)
    check(err, "no-output", "1:9", message="network `N` has no `output`")


def test_block_without_return_and_misplaced_statements(tmp_path):
    err = error(tmp_path, """
        block B {
            input x
            y = x -> relu
        }
        network N {
            input x: [4]
            output y = x -> B
        }
    """)
    check(err, "no-return", "1:7", message="block `B` has no `return`")
    err = error(tmp_path, """
        block B {
            input x
            output y = x -> relu
        }
        network N {
            input x: [4]
            output y = x -> B
        }
    """)
    check(err, "misplaced-statement", "3:5", message="a block ends with `return`, not `output`")


def test_network_input_shape(tmp_path):
    err = error(tmp_path, """
        network N {
            input x
            output y = x
        }
    """)
    check(err, "missing-shape", "2:5", message="network input `x` needs a shape")
    err = error(tmp_path, """
        network N {
            input x: [3, 0]
            output y = x
        }
    """)
    check(err, "bad-shape", "2:18", message="got the integer 0")


def test_unknown_parameter_type(tmp_path):
    err = error(tmp_path, """
        network N(width: integer = 3) {
            input x: [4]
            output y = x
        }
    """)
    check(err, "unknown-type", "1:11", message="unknown parameter type `integer`", hint="did you mean `int`?")


def test_block_argument_type(tmp_path):
    err = error(tmp_path, """
        block B(c: int) {
            input x
            return x -> linear(c)
        }
        network N {
            input x: [4]
            output y = x -> B(c=2.5)
        }
    """)
    check(err, "type-mismatch", "7:25", message="parameter `c` is int, got the number 2.5")


def test_block_missing_argument_and_unknown_argument(tmp_path):
    block = """
        block B(c: int) {
            input x
            return x -> linear(c)
        }
        network N {
            input x: [4]
            output y = x -> %s
        }
    """
    check(error(tmp_path, block % "B()"), "missing-argument", "7:21", message="block `B` needs the argument `c`")
    check(error(tmp_path, block % "B(3, d=4)"), "unknown-argument", "7:26", message="`B` has no argument `d`")


def test_labelled_group_with_several_inputs(tmp_path):
    err = error(tmp_path, NET % "seq: (linear(4) -> concat(x))")
    check(err, "bad-group", "3:40", message="cannot be part of a labelled group")


# ---- imports ------------------------------------------------------------------------------------


def test_import_not_found(tmp_path):
    err = error(tmp_path, """
        import "blocks/missing.dln"
        network N {
            input x: [4]
            output y = x
        }
    """)
    check(err, "import-not-found", "1:1", message="cannot find imported file `blocks/missing.dln`",
          hint="relative to the importing file")


def test_import_not_found_inside_an_imported_file(tmp_path):
    err = error(tmp_path, """
        import "blocks/a.dln"
        network N {
            input x: [4]
            output y = x
        }
    """, files={"blocks/a.dln": '# helpers\nimport "b.dln"\n'})
    check(err, "import-not-found", "2:1", file=tmp_path / "blocks" / "a.dln")
    assert str(tmp_path / "blocks" / "b.dln") in err.message


def test_import_cycle(tmp_path):
    err = error(tmp_path, """
        import "a.dln"
        network N {
            input x: [4]
            output y = x
        }
    """, files={"a.dln": 'import "b.dln"\n', "b.dln": '\n\nimport "c.dln"\n', "c.dln": 'import "a.dln"\n'})
    check(err, "import-cycle", "1:1", file=tmp_path / "c.dln", message="a.dln -> b.dln -> c.dln -> a.dln")


def test_import_of_the_root_file(tmp_path):
    err = error(tmp_path, """
        import "lib.dln"
        network N {
            input x: [4]
            output y = x
        }
    """, files={"lib.dln": 'import "net.dln"\n'})
    check(err, "import-cycle", "1:1", file=tmp_path / "lib.dln", message="net.dln -> lib.dln -> net.dln")


def test_syntax_error_in_an_imported_file(tmp_path):
    err = error(tmp_path, """
        import "lib.dln"
        network N {
            input x: [4]
            output y = x
        }
    """, files={"lib.dln": "block B {\n    input x\n    return x ->\n}\n"})
    check(err, "syntax", "4:1", file=tmp_path / "lib.dln", message="expected a pipeline stage")


# ---- parameters and overrides -------------------------------------------------------------------

PARAMS = """
network N(width: int = 4, p: float = 0.1) {
    input x: [4]
    output y = x -> linear(width) -> dropout(p)
}
"""


def test_unknown_override(tmp_path):
    err = error(tmp_path, PARAMS, overrides={"widht": 8})
    check(err, "unknown-param", "1:9", message="network `N` has no parameter `widht`", hint="did you mean `width`?")


def test_bad_override_type(tmp_path):
    err = error(tmp_path, PARAMS, overrides={"width": "wide"})
    check(err, "type-mismatch", "1:11", message="parameter `width` is int, got the string 'wide' (from --set")
    err = error(tmp_path, PARAMS, overrides={"width": 2.5})
    check(err, "type-mismatch", "1:11", message="got the number 2.5")


def test_override_value_checked_by_the_layer(tmp_path):
    err = error(tmp_path, PARAMS, overrides={"p": 2})
    check(err, "bad-argument", "3:46", message="p must be in [0, 1), got 2.0")


def test_missing_network_parameter(tmp_path):
    err = error(tmp_path, """
        network N(width: int) {
            input x: [4]
            output y = x -> linear(width)
        }
    """)
    check(err, "missing-param", "1:11", hint="--set width=")


def test_no_network_and_unknown_network(tmp_path):
    err = error(tmp_path, """
        block B {
            input x
            return x
        }
    """)
    check(err, "no-network", "1:1")
    err = error(tmp_path, PARAMS, network="M")
    assert err.code == "unknown-network"


def test_missing_root_file(tmp_path):
    with pytest.raises(DlcError) as info:
        build_graph(tmp_path / "nope.dln")
    assert info.value.code == "file-not-found"


# ---- chains of block instances -------------------------------------------------------------------

NESTED = """
block Inner(c: int, g: int = 1) {
    input x
    return x -> conv1: conv2d(c, k=3, pad=1, groups=g)
}
block Basic(c: int, g: int = 1) {
    input x
    y = x -> inner: Inner(c, g=g)
    return y + x
}
network Res {
    input x: [3, 8, 8]
    output y = x -> layer1: Basic(3) -> layer2: (Basic(3) -> Basic(%s))
}
"""


def test_chain_for_an_error_in_nested_blocks(tmp_path):
    err = error(tmp_path, NESTED % "4")
    check(err, "shape-mismatch", "8:12", message="got [4, 8, 8] and [3, 8, 8]")
    assert err.chain == ("Res", "layer2", "layer2.1 (Basic)")
    assert "  = in: Res > layer2 > layer2.1 (Basic)" in render(err).splitlines()


def test_chain_names_the_layer_inside_nested_blocks(tmp_path):
    err = error(tmp_path, NESTED % "3, g=2")
    check(err, "bad-argument", "3:53", message="groups=2 must divide")
    assert err.chain == ("Res", "layer2", "layer2.1 (Basic)", "layer2.1.inner (Inner)", "conv1")
    assert render(err) == (
        f"{tmp_path / 'net.dln'}:3:53: error[bad-argument]: `conv2d`: groups=2 must divide both input channels (3) "
        "and output channels (3)\n"
        " 3 |     return x -> conv1: conv2d(c, k=3, pad=1, groups=g)\n"
        "   |                                                     ^\n"
        "  = in: Res > layer2 > layer2.1 (Basic) > layer2.1.inner (Inner) > conv1"
    )


def test_top_level_error_has_no_chain(tmp_path):
    err = error(tmp_path, NET % "reshape([5])")
    assert err.chain == ()
    assert "= in:" not in render(err)


# ---- limits: recursion and nesting -----------------------------------------------------------------


def test_block_that_instantiates_itself(tmp_path):
    err = error(tmp_path, """
        block Loop(c: int) {
            input x
            return x -> linear(c) -> Loop(c)
        }
        network N {
            input x: [4]
            output y = x -> Loop(4)
        }
    """)
    check(err, "recursion", "3:30", message="block `Loop` keeps instantiating itself")
    assert len(err.chain) <= 6


def test_mutually_recursive_blocks(tmp_path):
    err = error(tmp_path, """
        block A {
            input x
            return x -> B
        }
        block B {
            input x
            return x -> relu -> A
        }
        network N {
            input x: [4]
            output y = x -> A
        }
    """)
    assert err.code == "recursion", render(err)
    assert "A > B > A" in err.message or "B > A > B" in err.message


def test_recursion_with_a_base_case_compiles(tmp_path):
    path = write(tmp_path, """
        block Stack(n: int) {
            input x
            return if n == 0 then x else x -> linear(4) -> Stack(n - 1)
        }
        network N {
            input x: [4]
            output y = x -> Stack(3)
        }
    """)
    g = build_graph(path)
    assert sum(1 for n in g.nodes if n.op == "linear") == 3


def test_repeat_count_too_large(tmp_path):
    err = error(tmp_path, NET % "linear(3) * 100000")
    check(err, "bad-repeat", "3:33", message="repeat count 100000 is too large")


def test_compile_time_overflow(tmp_path):
    err = error(tmp_path, NET % "linear(int(1e300 * 1e300))")
    check(err, "bad-number", "3:32", message="inf is not a finite number")  # at the product, before `int`


@pytest.mark.parametrize("expr", [
    "(" * 3000 + "x" + ")" * 3000 + " -> relu",
    "x -> " + "(" * 3000 + "relu" + ")" * 3000,
    "x * " + "-" * 3000 + "1",
    "x * (" + "1 + " * 3000 + "1)",
    "x * " + "[" * 3000 + "]" * 3000,
])
def test_deep_nesting_is_a_diagnostic_not_a_recursion_error(tmp_path, expr):
    path = write(tmp_path, "network N {\n    input x: [4]\n    output y = " + expr + "\n}\n")
    try:
        build_graph(path)
    except DlcError as err:
        assert err.code in ("too-deep", "type-mismatch"), render(err)
        assert err.span is not None and err.span.line == 3


def test_merge_of_different_ranks_is_an_error(tmp_path):
    """[6, 10] + [10] would broadcast the batch axis of the second tensor against the first's 6."""
    err = error(tmp_path, """
        network N {
            input a: [6, 10]
            input b: [10]
            output y = a + b
        }
        """)
    check(err, "shape-mismatch", "4:16", message="equal rank", hint="reshape")
