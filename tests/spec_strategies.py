"""Hypothesis strategies for well-formed .dln specs: built from the op registry, not from a fixed list.

The specs parse by construction (names are fresh identifiers, every value is defined before use, calls
are written with the op's own arguments), so whatever dlc decides about them is a decision about meaning:
either a positioned diagnostic (a shape that does not fit, an argument out of range) or a network that
must then build and run with the shapes the compiler inferred. Blocks with parameters, labelled groups,
repeats, shared instances, merges and tensor arithmetic are all drawn.
"""

from __future__ import annotations

from hypothesis import strategies as st

from dlc.compiler.ops.registry import all_ops

# Ops written through syntax of their own (`x * 2`, `x + 1`) or that the generator draws separately.
_SKIP = {"scale", "shift", "index"}
_WRAPPABLE = ["lstm(4)", "gru(3)", "rnn(2)", "linear(4)", "relu", "conv2d(2, k=1)"]


def _attr_value(draw, op, a) -> str:
    kind = a.kind.name
    if kind == "axis" or kind == "int" and a.name in ("dim", "start", "dims"):
        return str(draw(st.integers(-3, 3)))
    if kind in ("int", "token_id"):
        return str(draw(st.sampled_from([1, 1, 2, 3, 4, 8, 16, 0])))
    if kind in ("float", "probability", "fraction", "positive", "epsilon"):
        return draw(st.sampled_from(["0.0", "0.1", "0.5", "1.0", "2.0", "1e-5"]))
    if kind == "number":
        return draw(st.sampled_from(["0", "1", "3", "0.5", "2.0", "-1"]))
    if kind == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if kind == "enum":
        return draw(st.sampled_from(list(a.choices)))
    if kind == "int2":
        if draw(st.booleans()):
            return str(draw(st.integers(1, 4)))
        return f"[{draw(st.integers(1, 3))}, {draw(st.integers(1, 3))}]"
    if kind == "pad":
        return draw(st.sampled_from(["0", "1", "2", "same", "[1, 0]"]))
    if kind == "pool_size":
        return draw(st.sampled_from(["1", "2", "3", "global", "[2, 1]"]))
    if kind == "ints":
        items = draw(st.lists(st.integers(-1, 6), min_size=1, max_size=4))
        return "[" + ", ".join(map(str, items)) + "]"
    if kind in ("layer", "recurrent_layer", "step_layer", "weighted_layer"):
        return draw(st.sampled_from(_WRAPPABLE))
    if kind == "str":
        return '"x"'
    raise AssertionError(f"no values drawn for attribute kind {kind!r} ({op.name}.{a.name})")


@st.composite
def layer_call(draw, ops: list) -> tuple[str, object]:
    """`conv2d(4, k=3, stride=2)`: an op with its required arguments and some optional ones."""
    op = draw(st.sampled_from(ops))
    parts: list[str] = []
    positional = True
    for a in op.attrs:
        required = a.default.__class__ is object  # REQUIRED is a bare object()
        if not required and not draw(st.integers(0, 3)) == 0:
            positional = False
            continue
        value = _attr_value(draw, op, a)
        if positional and required and not a.keyword_only:
            parts.append(value)
        else:
            parts.append(f"{a.name}={value}")
            positional = False
    text = f"{op.name}({', '.join(parts)})" if parts else op.name
    return text, op


_INPUTS = [
    ("[16]", "float32"), ("[3, 8, 8]", "float32"), ("[4, 12, 12]", "float32"), ("[T, 6]", "float32"),
    ("[5, 10]", "float32"), ("[2, 16]", "float32"), ("[T]", "int64"), ("[3, 6]", "float32"), ("[8, 4, 4]", "float32"),
]


@st.composite
def specs(draw) -> str:
    """A complete spec: maybe a block, one network with one or two inputs, a few statements, outputs."""
    ops = [op for name, op in sorted(all_ops().items()) if name not in _SKIP and name != "input"]
    single = [op for op in ops if not op.variadic and len(op.inputs) - len(op.optional_inputs) <= 1]
    lines: list[str] = []
    block = None
    if draw(st.booleans()):
        call, _ = draw(layer_call(single))
        second, _ = draw(layer_call(single))
        residual = draw(st.booleans())
        lines += ["block B(c: int = 4) {", "    input x",
                  f"    y = x -> {call} -> inner: {second}",
                  "    return y + x" if residual else "    return y -> linear(c)", "}"]
        block = "B"
    shape, dtype = draw(st.sampled_from(_INPUTS))
    lines.append("network Net {")
    lines.append(f"    input x: {shape}" + (" int64" if dtype == "int64" else ""))
    values = ["x"]
    n = 0
    for _ in range(draw(st.integers(1, 5))):
        src = draw(st.sampled_from(values[-2:]))
        form = draw(st.integers(0, 9))
        n += 1
        name = f"v{n}"
        if form <= 4:
            stages = [draw(layer_call(single))[0] for _ in range(draw(st.integers(1, 3)))]
            if draw(st.integers(0, 3)) == 0:
                stages[0] = f"l{n}: {stages[0]}"
            lines.append(f"    {name} = {src} -> " + " -> ".join(stages))
        elif form == 5:
            inner = " -> ".join(draw(layer_call(single))[0] for _ in range(draw(st.integers(1, 2))))
            reps = draw(st.sampled_from(["", " * 2"]))
            lines.append(f"    {name} = {src} -> g{n}: ({inner}){reps}")
        elif form == 6 and len(values) >= 2:
            a, b = draw(st.sampled_from(values)), draw(st.sampled_from(values))
            merge = draw(st.sampled_from([f"{a} + {b}", f"{a} * {b}", f"{a} - {b}", f"concat({a}, {b})",
                                          f"concat({a}, {b}, dim=-1)", f"mean({a}, {b})", f"add({a}, {b}, {a})"]))
            lines.append(f"    {name} = {merge}")
        elif form == 7:
            lines.append(f"    {name} = {src} * {draw(st.sampled_from(['2', '0.5', '-1']))} + 1")
        elif form == 8 and block:
            lines.append(f"    {name} = {src} -> b{n}: {block}({draw(st.sampled_from(['', 'c=2', '8']))})")
        else:
            call, _ = draw(layer_call(single))
            lines.append(f"    shared{n} = {call}")
            lines.append(f"    {name} = shared{n}({src}) + shared{n}({src})")
        values.append(name)
    lines.append(f"    output y = {values[-1]}")
    if len(values) > 2 and draw(st.booleans()):
        lines.append(f"    output z = {values[-2]}")
    lines.append("}")
    return "\n".join(lines) + "\n"
