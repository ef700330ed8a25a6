"""Hostile input, bounded: every number, size, argument and amount of work has a limit, and going past one is a
diagnostic (exit 1, a code, `line:col`), never a hang, a traceback or nonsense in the generated code.

Numbers: integers fit in 64 bits and other numbers are finite, whether written, computed or given with --set.
Sizes: a tensor's elements and a layer's parameters fit in 64 bits. Arguments: each integer argument has the
range its op declares. Work: elaboration counts steps (MAX_STEPS), layers (MAX_NODES) and repeats (MAX_REPEAT).
Also here: dtypes lex only as whole words, a label cannot name a merge, and a shared block instance applied twice
keeps one key per application for everything inside it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlc.cli import main
from dlc.limits import limit
from dlc.pipeline import build_graph
from dlc.compiler.ops.registry import all_ops
from dlc.diagnostics import DlcError, render

HANG_GUARD_S = 60  # generous: each of these finishes in a second or two; a hang is what is being ruled out


def write(tmp_path: Path, text: str, name: str = "net.dln") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error(tmp_path: Path, text: str, overrides=None) -> DlcError:
    path = write(tmp_path, text)
    with pytest.raises(DlcError) as info:
        build_graph(path, overrides=overrides)
    return info.value


def layer_error(tmp_path: Path, shape: str, layer: str) -> DlcError:
    """The error of a network whose one input of ``shape`` goes through ``layer`` (on line 3, column 21)."""
    return error(tmp_path, """
        network N {
            input x: %s
            output y = x -> %s
        }
    """ % (shape, layer))


def check(err: DlcError, code: str, pos: str, message: str | None = None) -> None:
    text = render(err)
    assert err.code == code, text
    assert err.span is not None and f"{err.span.line}:{err.span.col}" == pos, text
    if message is not None:
        assert message in err.message, text


def cli(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess:
    """`dlc check` in a subprocess, for the cases that used to hang: the timeout is the assertion."""
    path = write(tmp_path, text)
    return subprocess.run([sys.executable, "-m", "dlc", "check", str(path), *args], capture_output=True,
                          text=True, timeout=HANG_GUARD_S)


NET = """
network N {
    input x: [4]
    output y = x -> %s
}
"""


# ---- numbers ------------------------------------------------------------------------------------------------


def test_a_4301_digit_literal_is_a_diagnostic(tmp_path, capsys):
    path = write(tmp_path, NET % f"linear({'1' * 4301})")
    assert main(["check", str(path)]) == 1
    assert f"{path}:3:28: error[bad-number]: the number 11111111111111111111... is too large" in capsys.readouterr().err


def test_the_largest_integer_literal_is_fine_and_one_more_is_not(tmp_path):
    err = error(tmp_path, NET % "linear(9223372036854775808)")
    check(err, "bad-number", "3:28")
    path = write(tmp_path, """
        network N(n: int = 9223372036854775807) {
            input x: [4]
            output y = x -> linear(n // 4611686018427387904)
        }
    """)
    assert build_graph(path).nodes[-1].attrs["units"] == 1


def test_repeated_squaring_stops_at_the_first_result_too_large(tmp_path):
    lines = ["a0 = 9223372036854775807"] + [f"a{i + 1} = a{i} * a{i}" for i in range(33)]
    text = "network N {\n    input x: [4]\n" + "".join(f"    {ln}\n" for ln in lines) + \
        "    output y = x -> linear(3)\n}\n"
    run = cli(tmp_path, text)
    assert run.returncode == 1, run.stderr
    assert ":4:10: error[bad-number]: the result is out of range: an integer of 38 digits does not fit " \
        "in 64 bits" in run.stderr


@pytest.mark.parametrize("expr, pos, message", [
    ("x * (1e308 * 10)", "3:21", "inf is not a finite number"),
    ("x * (1e308 + 1e308)", "3:21", "inf is not a finite number"),
    ("x / 1e-310", "3:16", "inf is not a finite number"),
    ("x -> linear(9223372036854775807 * 4)", "3:28", "the integer 36893488147419103228 does not fit in 64 bits"),
    ("x -> linear(-9223372036854775807 - 2)", "3:28", "does not fit in 64 bits"),
    ("x -> linear(int(1e300))", "3:28", "does not fit in 64 bits"),
    ("x -> linear(int(1e18 * 10))", "3:28", "the integer 10000000000000000000 does not fit in 64 bits"),
])
def test_computed_numbers_are_bounded(tmp_path, expr, pos, message):
    err = error(tmp_path, """
        network N {
            input x: [4]
            output y = %s
        }
    """ % expr)
    check(err, "bad-number", pos, message)


PARAMS = """
network N(n: int = 3, f: float = 1.0, l: list = [2]) {
    input x: [4]
    output y = x * f -> linear(n)
}
"""


@pytest.mark.parametrize("setting, pos, message", [
    ("f=.nan", "1:23", "parameter `f` (from --set/--params): nan is not a number"),
    ("f=.inf", "1:23", "inf is not a finite number"),
    ("f=-.inf", "1:23", "-inf is not a finite number"),
    (f"n={'9' * 50}", "1:11", "an integer of 50 digits does not fit in 64 bits"),
    ("n=-9223372036854775808", "1:11", "the integer -9223372036854775808 does not fit in 64 bits"),
    ("l=[1, [2, .nan]]", "1:39", "nan is not a number"),
])
def test_set_values_are_bounded(tmp_path, capsys, setting, pos, message):
    path = write(tmp_path, PARAMS)
    assert main(["check", str(path), "--set", setting]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{pos}: error[bad-number]: " in err and message in err, err


def test_override_lists_nest_and_expand_boundedly(tmp_path):
    deep: list = []
    for _ in range(200):
        deep = [deep]
    check(error(tmp_path, PARAMS, overrides={"l": deep}), "too-deep", "1:39")
    looped: list = []
    looped.append(looped)  # what a YAML alias can build: a list that contains itself
    check(error(tmp_path, PARAMS, overrides={"l": looped}), "too-deep", "1:39")
    laughs: list = [1] * 10
    for _ in range(9):  # ten references to the same list, nine levels deep: 10**9 items if expanded
        laughs = [laughs] * 10
    check(error(tmp_path, PARAMS, overrides={"l": laughs}), "too-large", "1:39")


def test_the_generated_code_never_holds_inf_or_nan(tmp_path):
    path = write(tmp_path, PARAMS)
    g = build_graph(path, overrides={"f": 1e308, "l": [0.5, [1e-300]]})
    assert [n.attrs["factor"] for n in g.nodes if n.op == "scale"] == [1e308]


# ---- sizes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, layer, pos, message", [
    ("[4294967296, 4294967296]", "relu", "2:5", "a tensor [4294967296, 4294967296] would have more than"),
    # arguments are at most 2**31-1, so counts overflow only through a large input
    ("[8589934592]", "linear(2147483647)", "3:21", "`linear` would have more than 9223372036854775807 parameters"),
    ("[3, 8]", "reshape([2147483647, 2147483647, 2147483647, -1])", "3:29", "the target shape has more than"),
    ("[3, 8, 8]", "upsample(1e30)", "3:30", "`upsample`: scale 1e+30 makes a dimension of size 8 too large"),
    ("[3, 8, 8]", "conv_transpose2d(4, k=3, stride=2147483647)", "3:21", "would have more than"),
    ("[3, 8, 8]", "conv2d(2147483647, k=2) -> conv2d(2147483647, k=2)", "3:48", "`conv2d` would have more than"),
])
def test_sizes_and_parameter_counts_fit_in_64_bits(tmp_path, shape, layer, pos, message):
    check(layer_error(tmp_path, shape, layer), "too-large", pos, message)


# ---- integer arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, layer, pos, message", [
    ("[5] int64", "embedding(10, -3)", "3:35", "`embedding`: `dim` must be a positive integer, got the integer -3"),
    ("[5] int64", "embedding(0, 3)", "3:31", "`vocab` must be a positive integer"),
    ("[5] int64", "embedding(10, 3, padding_idx=-1)", "3:50", "`padding_idx` must be a non-negative integer"),
    ("[256]", "reshape([-2, -128])", "3:29", "every dimension must be positive, or -1 (once) for the rest; "
                                            "got [-2, -128]"),
    ("[256]", "reshape([-1, -1])", "3:29", "every dimension must be positive, or -1 (once)"),
    ("[256]", "reshape([0, 256])", "3:29", "every dimension must be positive, or -1 (once)"),
    ("[6, 4]", "lstm(4, layers=2147483648)", "3:36", "`layers` must be an integer from 1 to 1024, got the "
                                                     "integer 2147483648"),
    ("[6, 4]", "gru(4, layers=0)", "3:35", "`layers` must be an integer from 1 to 1024"),
    ("[6, 4]", "bidirectional(rnn(4, layers=1025))", "3:49", "`layers` must be an integer from 1 to 1024"),
    ("[4]", "linear(0)", "3:28", "`units` must be a positive integer"),
    ("[3, 8, 8]", "conv2d(8, k=0)", "3:33", "`k` must be a positive integer"),
    ("[3, 8, 8]", "conv2d(8, k=[3, -1])", "3:33", "`k` must be a list of positive integers, got the list [3, -1]"),
    ("[3, 8, 8]", "conv2d(8, k=3, stride=0)", "3:43", "`stride` must be a positive integer"),
    ("[3, 8, 8]", "conv2d(8, k=3, pad=-1)", "3:40", "`pad` must be a non-negative integer"),
    ("[3, 8, 8]", "conv2d(8, k=3, dilation=0)", "3:45", "`dilation` must be a positive integer"),
    ("[3, 8, 8]", "conv2d(8, k=3, groups=-1)", "3:43", "`groups` must be a positive integer"),
    ("[3, 8, 8]", "conv_transpose2d(8, k=3, output_pad=-1)", "3:57", "`output_pad` must be a non-negative"),
    ("[3, 8, 8]", "maxpool(0)", "3:29", "`k` must be a positive integer"),
    ("[3, 8, 8]", "avgpool(2, stride=[1, 0])", "3:39", "`stride` must be a list of positive integers"),
    ("[3, 8, 8]", "adaptive_avgpool(-4)", "3:38", "`size` must be a positive integer"),
    ("[6, 4]", "attention(heads=0)", "3:37", "`heads` must be a positive integer"),
    ("[6, 4]", "layernorm(dims=0)", "3:36", "`dims` must be a positive integer"),
    ("[6, 4]", "permute([-1, 0])", "3:29", "`dims` must be a list of non-negative integers"),
    # no op takes a size, stride or count past 2**31-1 (PyTorch reads some as 32-bit ints; oneDNN fails on more)
    ("[3, 8, 8]", "conv2d(8, k=3, stride=9223372036854775807)", "3:43",
     "`stride` must be an integer from 1 to 2147483647, got the integer 9223372036854775807"),
    ("[3, 8, 8]", "maxpool(2, stride=[1, 2147483648])", "3:39", "`stride` must be a list of integers from 1 to "
                                                              "2147483647"),
    ("[4]", "linear(2147483648)", "3:28", "`units` must be an integer from 1 to 2147483647"),
    # number arguments reach PyTorch as float32 scalars (`leaky_relu(3.5e38)` failed in the forward pass)
    ("[6, 4]", "leaky_relu(3.5e38)", "3:32", "`slope` must be a number of magnitude at most 3.403e+38"),
    ("[6, 4]", "elu(-1e39)", "3:25", "`alpha` must be a number of magnitude at most 3.403e+38"),
    ("[6, 4]", "attention(heads=2, dropout=5.0)", "3:48", "`attention`: dropout must be in [0, 1), got 5.0"),
    ("[6, 4]", "attention(dropout=-1.0)", "3:39", "`attention`: dropout must be in [0, 1)"),
])
def test_integer_arguments_are_range_checked(tmp_path, shape, layer, pos, message):
    check(layer_error(tmp_path, shape, layer), "bad-argument", pos, message)


def test_every_integer_argument_declares_its_range():
    """Sizes, counts and strides have a lower bound; only axes (checked against the rank by the shape rule) and
    reshape's target (positive or one -1) have none."""
    from dlc.compiler.kinds import Integer

    unbounded = set()
    for op in all_ops().values():
        for a in op.attrs:
            if isinstance(a.kind, Integer) and a.kind.min is None:
                unbounded.add(f"{op.name}.{a.name}")
    assert unbounded == {"softmax.dim", "log_softmax.dim", "glu.dim", "flatten.start", "concat.dim", "reshape.shape",
                         # reductions' axes (an int or a list), checked against the rank by the shape rule
                         "sum.dim", "reduce_mean.dim", "reduce_max.dim", "reduce_min.dim", "prod.dim",
                         "logsumexp.dim", "argmax.dim", "argmin.dim",
                         "split.dim", "chunk.dim", "transpose.dim0", "transpose.dim1",
                         "positions.dim"}


def test_many_stacked_recurrent_layers_finish(tmp_path):
    run = cli(tmp_path, """
        network N {
            input x: [6, 4]
            output y = x -> lstm(4, layers=2147483648)
        }
    """)
    assert run.returncode == 1 and ":3:36: error[bad-argument]" in run.stderr, run.stderr


# ---- the lexer ----------------------------------------------------------------------------------------------


def test_a_dtype_is_only_a_whole_word(tmp_path):
    path = write(tmp_path, """
        network N {
            input t: [5]
            int64_copy = t
            float32x = t
            boolean = t
            input u: [5] int64
            output y = int64_copy -> linear(3)
            output z = float32x + boolean
            output w = u -> embedding(10, 4)
        }
    """)
    g = build_graph(path)
    assert [(name, g.types[v].dtype) for name, v in g.inputs] == [("t", "float32"), ("u", "int64")]


# ---- labels and shared instances ----------------------------------------------------------------------------


@pytest.mark.parametrize("merge", ["sub(d)", "add(d)", "mul(d)", "mean(d)", "concat(d)"])
def test_a_label_cannot_name_a_merge(tmp_path, merge):
    err = error(tmp_path, """
        network N {
            input x: [4]
            input d: [4]
            output y = x -> m: %s -> linear(3)
        }
    """ % merge)
    check(err, "bad-name", "4:21", "makes no module, so the label `m` cannot name it")


def test_only_merges_have_no_module_form():
    """`OpDef.module` says what the torch backend can build: a module for every op but the merges."""
    for op in all_ops().values():
        assert op.module == (op.draw != "merge"), op.name


SHARED = """
block Inner {
    input x
    return x -> linear(4) -> relu
}
block B {
    input x
    s = Inner
    return x -> g: (linear(4) -> relu) -> s -> Inner -> reps: (linear(4) -> tanh) * 2 -> s
}
network N {
    input x: [4]
    b = B
    output y = x -> b -> relu -> b
}
"""


def test_a_shared_instance_keeps_one_call_per_application_of_what_it_holds(tmp_path):
    g = build_graph(write(tmp_path, SHARED))
    # applied twice, and the shared `s` twice within each: every group, block and instance inside has a key for
    # each application, and the keys name different values
    for path, uses in [("b", 2), ("b.g", 2), ("b.s", 4), ("b.inner_0", 2), ("b.reps", 2), ("b.reps.0", 2)]:
        keys = [(path, i) for i in range(uses)]
        assert all(k in g.calls for k in keys) and (path, uses) not in g.calls, path
        assert len({g.calls[k].inputs for k in keys}) == uses, path


def test_a_shared_instance_with_a_labelled_group_compiles_runs_and_shares_weights(tmp_path):
    torch = pytest.importorskip("torch")
    from dlc.backends.torch.emit import emit_module

    source = emit_module(build_graph(write(tmp_path, SHARED)))
    (tmp_path / "shared_net.py").write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("shared_net", tmp_path / "shared_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.N()
    keys = list(net.state_dict())
    assert keys[:2] == ["b.g.0.weight", "b.g.0.bias"] and not any(k.startswith("b_") for k in keys)
    x = torch.randn(3, 4)
    assert torch.equal(net(x), net.b(torch.relu(net.b(x))))


# ---- bounded work -------------------------------------------------------------------------------------------


def _levels(n: int) -> str:
    """`n` levels of blocks that each apply the next twice and create no layer: 2**n block instances."""
    blocks = [f"block B{i} {{\n    input x\n    return x -> B{i + 1} -> B{i + 1}\n}}\n" for i in range(n - 1)]
    blocks.append(f"block B{n - 1} {{\n    input x\n    return x\n}}\n")
    return "".join(blocks) + "network N {\n    input x: [4]\n    output y = x -> B0 -> linear(2)\n}\n"


def test_doubling_blocks_without_layers_run_out_of_steps(tmp_path):
    run = cli(tmp_path, _levels(40))
    assert run.returncode == 1, run.stderr
    assert "error[too-large]: elaborating the network takes more than 500,000 steps" in run.stderr
    assert "DLC_MAX_STEPS" in run.stderr


def test_a_doubling_recursion_under_if_runs_out_of_steps(tmp_path):
    run = cli(tmp_path, """
        block R(n: int) {
            input x
            return if n == 0 then x else x -> R(n - 1) -> R(n - 1)
        }
        network N {
            input x: [4]
            output y = x -> R(40) -> linear(2)
        }
    """)
    assert run.returncode == 1, run.stderr
    assert "error[too-large]: elaborating the network takes more than 500,000 steps" in run.stderr


def test_the_step_limit_names_where_it_ran_out(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_MAX_STEPS", "100")
    err = error(tmp_path, _levels(10))
    check(err, "too-large", "31:23", "takes more than 100 steps")  # the second B8 of `x -> B8 -> B8` in B7
    assert err.chain[:2] == ("N", "b0_0 (B0)") and "..." in err.chain


def test_the_limits_can_be_raised_and_must_be_numbers(tmp_path, monkeypatch):
    path = write(tmp_path, _levels(10))
    assert len(build_graph(path).nodes) == 2  # 1,023 block instances: well within the default
    monkeypatch.setenv("DLC_MAX_NODES", "1")
    check(error(tmp_path, _levels(10)), "too-large", "43:27", "the network has more than 1 layers")
    monkeypatch.setenv("DLC_MAX_NODES", "lots")
    err = error(tmp_path, _levels(10))
    assert err.code == "bad-limit" and "DLC_MAX_NODES must be a positive integer" in err.message
    assert err.message.endswith("got 'lots'")


@pytest.mark.slow
def test_many_statements_take_linear_time(tmp_path, monkeypatch):
    """Each statement finds its source line in a cache, and each output checks for duplicates in a set: 40,000
    outputs (as many as the 1 MiB file limit allows) compile in seconds; both were quadratic (minutes)."""
    monkeypatch.setenv("DLC_MAX_TOKENS", "200000")  # 4 a statement
    body = "".join(f"    output y{i} = x\n" for i in range(40_000))
    run = cli(tmp_path, "network N {\n    input x: [4]\n" + body + "}\n")
    assert run.returncode == 0, run.stderr


def test_a_block_instance_costs_a_step_per_level_of_nesting(tmp_path, monkeypatch):
    """Building an instance's scope path and chain takes as long as the instance is deep, so deep doublings run
    out of steps after fewer instances (and as fast) as shallow ones; real networks nest a few levels at most."""
    from dlc.compiler.elaborate import Elaborator
    from dlc.compiler.program import load_program

    el = Elaborator(load_program(write(tmp_path, _levels(4))))
    el.network(None, {})
    # 1 + 2 + 4 + 8 instances at depths 0..3 cost 1, 2, 3, 4 steps each; expressions and the network add the rest
    instances = 1 * 1 + 2 * 2 + 4 * 3 + 8 * 4
    assert el.ctx.steps >= instances
    monkeypatch.setenv("DLC_MAX_STEPS", str(el.ctx.steps - 1))
    check(error(tmp_path, _levels(4)), "too-large", "19:34", "takes more than")  # the last step: `2`


def test_a_file_of_too_many_tokens_stops_while_it_is_read(tmp_path, monkeypatch):
    """Parsing costs time per token: a long file is cut off at MAX_TOKENS, where the token is, not parsed whole."""
    body = "relu -> " * 30_000
    run = cli(tmp_path, "network N {\n    input x: [4]\n    output y = x -> " + body + "relu\n}\n")
    assert run.returncode == 1, run.stderr
    # 9 tokens on lines 1-2, `output y = x ->` 5 more, then `relu` and `->` 8 columns apart from column 21: the
    # 20,001st token is the `relu` at column 21 + 8 * (20,001 - 15) / 2
    assert f":3:{21 + 4 * (20_001 - 15)}: error[too-large]: the file has more than 20,000 tokens" in run.stderr
    assert "DLC_MAX_TOKENS" in run.stderr
    monkeypatch.setenv("DLC_MAX_TOKENS", "70000")
    build_graph(write(tmp_path, "network N {\n    input x: [4]\n    output y = x -> " + body + "relu\n}\n"))


def test_a_syntax_error_after_many_tokens_still_gets_its_message(tmp_path):
    """The messages' example parses get a budget of their own, whatever the file spent."""
    from dlc.grammar import parser

    parser._example_errors.cache_clear()  # so that the examples are parsed after this file
    err = error(tmp_path, "network N {\n    input x: [4]\n    output y = x -> " + "relu -> " * 9_990 + "}\n")
    check(err, "syntax", f"3:{21 + 8 * 9_990}", "unexpected `}`; expected `(`, `checkpoint` or a name")


def test_long_block_arguments_cost_steps_in_every_instance(tmp_path):
    """A block's str and list arguments are kept by every instance and written again by `dlc ir` and the diagram:
    a 20,000-character string in 10,000 instances once made `dlc ir` write 204 MB (and 11 GB for 1 MiB)."""
    long = "a" * 20_000
    run = cli(tmp_path, """
        block B(s: str) {
            input x
            return x -> relu
        }
        network N(t: str = "%s") {
            input x: [4]
            output y = x -> (B(t) * 100) * 100
        }
    """ % long)
    assert run.returncode == 1 and "error[too-large]: elaborating the network takes more than" in run.stderr
    items = ", ".join(["1"] * 2000)
    run = cli(tmp_path, """
        block B(l: list) {
            input x
            return x -> relu
        }
        network N {
            input x: [4]
            output y = x -> (B([%s]) * 100) * 100
        }
    """ % items)
    assert run.returncode == 1 and "error[too-large]: elaborating the network takes more than" in run.stderr


def test_long_module_paths_cost_steps(tmp_path):
    """Every command writes each layer's module path: 62 levels of 128-character labels over 49,000 layers once
    made `dlc summary` write 394 MB. Short paths (a ResNet's `layer1.0.conv1`) cost nothing extra."""
    label = "a" * 128
    run = cli(tmp_path, """
        block R(n: int) {
            input x
            return if n == 0 then x -> ((linear(4) * 100) * 490) else x -> %s: R(n - 1)
        }
        network N {
            input x: [4]
            output y = x -> R(62)
        }
    """ % label)
    assert run.returncode == 1 and "error[too-large]: elaborating the network takes more than" in run.stderr


def test_the_token_budget_charges_every_token_the_parser_reads():
    """Every token is charged, keywords (`input`, `checkpoint`) and names in every lexer state included, and
    comments are not: the budget equals the count of lark's own tokenizer over the same text."""
    from lark import Lark

    from dlc.grammar import parser

    text = ("# a comment\nblock B(c: int) {\n    input x\n    return x -> linear(c) -> relu\n}\n"
            "network N {\n    input x: [4]\n    output y = x -> layer1: checkpoint B(8) * 2 -> relu  # two\n}\n")
    tokens = list(Lark(parser.GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="basic").lex(text))
    assert [t.value for t in tokens if t.type == "CHECKPOINT"] == ["checkpoint"]
    parser.parse(text, "net.dln")
    assert parser._BUDGET.left == limit("MAX_TOKENS") - len(tokens)
