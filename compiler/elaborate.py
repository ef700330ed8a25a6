"""Elaboration: AST -> IR graph. The entry point, and the statements of network and block bodies.

Blocks are instantiated with their arguments bound, compile-time expressions are evaluated, repeats unrolled and
pipelines applied; every layer application becomes an IR node whose type comes from its op's shape rule at once,
so a shape error is reported at the spec line that caused it, with the chain of block instances.

The work is split by job, each module using only those below it:

- :mod:`.elaborate` (here): :func:`elaborate`, and the statements of a body (inputs, assignments, outputs).
- :mod:`.lowering`: applying layers (calls, pipelines, labelled groups, block instances) as IR nodes.
- :mod:`.binding`: definitions checked; block, network and call arguments bound; argument kinds applied.
- :mod:`.expressions`: evaluating expressions.
- :mod:`.nodes`: adding a node to the graph (shape rules, size limits).
- :mod:`.naming`, :mod:`.context`: module attribute names; the shared state of one elaboration.

Two calls go back up, each through an interface handed down when the pieces are built: the evaluator applies
the layers of calls and pipelines through :class:`~.expressions.LayerCalls` (the lowering), and the lowering
elaborates a block instance's body through :class:`~.lowering.Bodies` (the :class:`Elaborator` here).
"""

from __future__ import annotations

from typing import Any

from dlc.compiler.binding import Binder
from dlc.compiler.context import Context, Frame
from dlc.compiler.expressions import Evaluator
from dlc.compiler.ir import Graph
from dlc.compiler.learnable import declare_param
from dlc.compiler.lowering import Lowerer
from dlc.compiler.names import check_identifier, check_network_name
from dlc.compiler.naming import Container
from dlc.compiler.nodes import Nodes
from dlc.compiler.program import Program, pick_network
from dlc.compiler.types import TensorType
from dlc.compiler.values import Instance, Layer, Tensor, describe
from dlc.diagnostics import SOURCES, DlcError, Span, suggest
from dlc.grammar import ast


class Elaborator:
    """Elaborates one network of a program: builds the pieces and runs the bodies' statements."""

    def __init__(self, program: Program) -> None:
        self.ctx = Context(program)
        self.nodes = Nodes(self.ctx)
        self.ev = Evaluator(self.ctx, self.nodes)
        self.binder = Binder(self.ctx, self.ev)
        self.lowerer = Lowerer(self.ctx, self.ev, self.binder, self.nodes, self)
        self._output_names: set[str] = set()  # the network's outputs so far (a set: a spec may have very many)

    def network(self, name: str | None, overrides: dict[str, Any]) -> Graph:
        """The IR graph of the network ``name`` (None: the root file's first) with parameter ``overrides``."""
        net = pick_network(self.ctx.program, name)
        check_network_name(net.name, net.name_span)
        self.binder.check_defs()
        container = Container((), "net", (net.name,))
        frame = Frame(net, {}, container)
        params = self.binder.bind_network_params(net, overrides, frame)
        self.ctx.graph = Graph(net.name, net.span.file, net.span, params)
        self._body(frame, [], is_network=True)
        if not self.ctx.g.outputs:
            raise DlcError("no-output", f"network `{net.name}` has no `output`", net.name_span,
                           hint="add e.g. `output y = x -> linear(10)`")
        if len(self.ctx.g.training_outputs) == len(self.ctx.g.outputs):
            raise DlcError("no-output", f"network `{net.name}` has outputs in training mode only", net.name_span,
                           hint="at least one output is computed in eval mode too: drop its `if training`")
        return self.ctx.g

    def block_body(self, frame: Frame, inputs: list[Tensor]) -> list[Tensor]:
        """Elaborate the body of a block instance (see :class:`~.lowering.Bodies`)."""
        return self._body(frame, inputs, is_network=False)

    def _body(self, frame: Frame, inputs: list[Tensor], is_network: bool) -> list[Any]:
        d = frame.defn
        n_inputs = 0
        returned: list[Any] | None = None
        for stmt in d.body:
            self.ctx.where = (stmt.span, frame)
            if returned is not None:
                raise self.ctx.err("misplaced-statement", "statement after `return`", stmt.span, frame)
            if isinstance(stmt, ast.Input):
                check_identifier(stmt.name, stmt.span, "an input name")
                self._declare(frame, stmt.name, stmt.span)
                if is_network:
                    frame.names[stmt.name] = self._network_input(stmt, frame)
                else:
                    frame.names[stmt.name] = self._block_input(stmt, frame, inputs, n_inputs)
                n_inputs += 1
            elif isinstance(stmt, ast.ParamDecl):
                self._declare(frame, stmt.name, stmt.span)
                like = inputs if not is_network else [Tensor(v, self.ctx.g.types[v]) for _, v in self.ctx.g.inputs]
                frame.names[stmt.name] = declare_param(self.ctx, self.ev, self.nodes, stmt, frame, like)
            elif isinstance(stmt, ast.Assign):
                # several targets: a comma-separated hint names each output of the last layer
                frame.hint = ",".join(stmt.targets)
                frame.naming_call = stmt.value if isinstance(stmt.value, ast.Call) else None
                value = self.ev.eval(stmt.value, frame)
                frame.hint = frame.naming_call = None
                self._assign(frame, stmt.targets, value, stmt.value.span, _name_spans(stmt.targets, stmt.span))
            elif isinstance(stmt, ast.Output):
                self._output(frame, stmt)
            elif isinstance(stmt, ast.Return):
                returned = [self.ev.tensor(self.ev.eval(v, frame), v.span, frame, "a returned value")
                            for v in stmt.values]
        if not is_network:
            if n_inputs != len(inputs):
                raise self.ctx.err("wrong-inputs", f"block `{d.name}` takes {n_inputs} input(s), got {len(inputs)}",
                                   frame.container.scope[-1].span if frame.container.scope else d.span, frame)
            if returned is None:
                raise DlcError("no-return", f"block `{d.name}` has no `return`", d.name_span)
            return returned
        return []

    def _declare(self, frame: Frame, name: str, span: Span) -> None:
        if name in frame.names:
            raise self.ctx.err("duplicate-name", f"`{name}` is already defined in `{frame.defn.name}`", span, frame)

    def _network_input(self, stmt: ast.Input, frame: Frame) -> Tensor:
        if stmt.shape is None:
            raise self.ctx.err("missing-shape", f"network input `{stmt.name}` needs a shape", stmt.span, frame,
                               hint=f"e.g. `input {stmt.name}: [3, 224, 224]` (batch not counted)")
        dims: list[int | str] = []
        for e in stmt.shape:
            if isinstance(e, ast.Name) and e.id not in frame.names:
                check_identifier(e.id, e.span, "a dimension name")
                dims.append(e.id)
                continue
            v = self.ev.eval(e, frame)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise self.ctx.err("bad-shape", f"a dimension must be a positive integer or a name, got {describe(v)}",
                                   e.span, frame)
            dims.append(v)
        dtype = stmt.dtype or "float32"
        t = TensorType(tuple(dims), dtype, "cf" if len(dims) >= 3 else "fl")
        node = self.nodes.node("input", [], {"name": stmt.name}, (t,), stmt.span, frame.container, None, stmt.name)
        self.ctx.g.inputs.append((stmt.name, node.outputs[0]))  # type: ignore[union-attr]
        return Tensor(node.outputs[0], t)

    def _block_input(self, stmt: ast.Input, frame: Frame, inputs: list[Tensor], index: int) -> Tensor:
        if index >= len(inputs):
            raise self.ctx.err("wrong-inputs", f"block `{frame.defn.name}` needs an input for `{stmt.name}`",
                               stmt.span, frame)
        t = inputs[index]
        if stmt.shape is not None and isinstance(t.type, TensorType):
            want = []
            for e in stmt.shape:
                want.append(e.id if isinstance(e, ast.Name) and e.id not in frame.names else self.ev.eval(e, frame))
            ok = len(want) == t.type.rank and all(
                isinstance(w, str) or w == d for w, d in zip(want, t.type.shape))
            if not ok:
                raise self.ctx.err("shape-mismatch",
                                   f"input `{stmt.name}` of `{frame.defn.name}` is declared "
                                   f"[{', '.join(map(str, want))}] but receives {t.type}", stmt.span, frame)
        return t

    def _assign(self, frame: Frame, targets: tuple[str, ...], value: Any, span: Span,
                name_spans: list[Span] | None = None) -> None:
        spans = name_spans or [span] * len(targets)
        for t, sp in zip(targets, spans):
            check_identifier(t, sp, "a name")
        if len(targets) > 1:
            if not isinstance(value, tuple) or len(value) != len(targets):
                n = len(value) if isinstance(value, tuple) else 1
                raise self.ctx.err("tuple-mismatch", f"{len(targets)} names on the left but the value has {n} part(s)",
                                   span, frame,
                                   hint="a recurrent layer returns (sequence, state) with `return_state=true`")
            for t, v, sp in zip(targets, value, spans):
                self._declare(frame, t, sp)
                frame.names[t] = v
            return
        name = targets[0]
        self._declare(frame, name, spans[0])
        if isinstance(value, Layer):
            check_identifier(name, spans[0], "a layer name", module_attr=True)
            frame.container.claim(name, spans[0])
            value = Instance(name, value, frame.container, span)
        frame.names[name] = value

    def _output(self, frame: Frame, stmt: ast.Output) -> None:
        g = self.ctx.g
        spans = _name_spans(stmt.targets, stmt.span, skip=len("output"))
        if stmt.value is None:
            values = [frame.names.get(t) for t in stmt.targets]
            for t, v, sp in zip(stmt.targets, values, spans):
                if v is None:
                    raise self.ctx.err("unknown-name", f"unknown name `{t}`", sp, frame,
                                       hint=suggest(t, frame.names))
        else:
            frame.hint = stmt.targets[0] if len(stmt.targets) == 1 else None
            frame.naming_call = stmt.value if isinstance(stmt.value, ast.Call) else None
            value = self.ev.eval(stmt.value, frame)
            frame.hint = frame.naming_call = None
            if len(stmt.targets) > 1:
                if not isinstance(value, tuple) or len(value) != len(stmt.targets):
                    raise self.ctx.err("tuple-mismatch", f"{len(stmt.targets)} outputs named but the value has "
                                       f"{len(value) if isinstance(value, tuple) else 1} part(s)", stmt.span, frame)
                values = list(value)
            else:
                values = [value]
        for t, v, sp in zip(stmt.targets, values, spans):
            check_identifier(t, sp, "an output name")
            tv = self.ev.tensor(v, stmt.value.span if stmt.value else sp, frame, "an output")
            if t in self._output_names:
                raise self.ctx.err("duplicate-name", f"output `{t}` is declared twice", sp, frame)
            if stmt.value is not None:
                self._declare(frame, t, sp)
                frame.names[t] = tv
            self._output_names.add(t)
            g.outputs.append((t, tv.vid))
            if stmt.training:
                g.training_outputs.add(t)


def _name_spans(names: tuple[str, ...], span: Span, skip: int = 0) -> list[Span]:
    """Spans of the target names at the start of a statement (the AST keeps only the statement's span)."""
    text = SOURCES.line(span.file, span.line) or ""
    out, col = [], span.col - 1 + skip
    for n in names:
        start = _find_word(text, n, col)
        if start < 0:
            return [span] * len(names)
        col = start + len(n)
        out.append(Span(span.file, span.line, start + 1, span.line, col + 1))
    return out


def _find_word(text: str, word: str, start: int) -> int:
    """Where ``word`` first occurs in ``text`` from ``start`` as a whole word (no word character on either side),
    or -1. A search, not a regex per name: compiling one took 25 us, and past 512 names re's cache no longer held
    them (0.1 s of a 4,000-branch concat's compile)."""
    i = text.find(word, start)
    while i >= 0:
        end = i + len(word)
        if not _word_char(text[i - 1:i]) and not _word_char(text[end:end + 1]):
            return i
        i = text.find(word, i + 1)
    return -1


def _word_char(c: str) -> bool:
    """Whether ``c`` (one character, or empty at either end of the line) is what ``\\w`` matches."""
    return c.isalnum() or c == "_"


def elaborate(program: Program, network: str | None = None, overrides: dict[str, Any] | None = None) -> Graph:
    """Elaborate the chosen network of ``program`` into an IR graph."""
    el = Elaborator(program)
    try:
        return el.network(network, overrides or {})
    except RecursionError:
        span, frame = el.ctx.where if el.ctx.where else (None, None)
        raise el.ctx.err("too-deep", "the spec nests too deeply to compile (blocks within blocks within deep "
                         "expressions)", span, frame, hint="flatten deep expressions with intermediate names") from None
    except OverflowError:  # numbers are bounded where they are made (MAX_INT); kept so a slip is no traceback
        span, frame = el.ctx.where if el.ctx.where else (None, None)
        raise el.ctx.err("bad-number", "a number in this statement is too large", span, frame) from None
