"""Warnings: what a careful reviewer would flag in a spec that compiles.

:func:`lint` reads the elaborated graph (before dead code is removed) and the definitions it was built from,
and returns warnings as :class:`~dlc.diagnostics.Diagnostic` objects (severity ``"warning"``), each at the
place to change:

- ``unused-layer``: a layer, branch or block instance whose result reaches no network output (it is not
  computed, and its parameters are not in the module: see :mod:`dlc.compiler.passes.dead`);
- ``unused-input``: a network input no output depends on;
- ``shadowed-param``: a network or block parameter with the name of a block (``Name(...)`` calls the block,
  ``Name`` alone is the parameter). A label with a parameter's name is not flagged: labels name modules, not
  values (``dropout: dropout(dropout)`` is how torchvision's names are matched);
- ``dropout-zero`` (an op's ``advice``): ``dropout(0)`` does nothing. Only arguments written as numbers are
  judged: ``dropout(p)`` with a parameter ``p = 0.0`` is a setting;
- ``repeated-activation``: an idempotent activation applied to its own result (``relu -> relu``) in the same
  body (a block ending in ``relu`` followed by ``relu`` is the block's business);
- ``repeat-once``: a repeat written ``* 1``.

The command line prints them (``--Werror`` makes them errors); the Python API issues them as
:class:`dlc.api.DlcWarning` and keeps them in ``Compiled.warnings``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from dlc.compiler.ir import Graph, Node, Scope, call_key
from dlc.compiler.ops.registry import get, op_of
from dlc.compiler.passes.dead import live_nodes
from dlc.compiler.program import Program
from dlc.grammar import ast

from dlc.diagnostics import Diagnostic, Span

UNUSED_HINT = "use it in an output or remove it; it is not computed, and its parameters are not in the module"


def warning(*, code: str, message: str, span: Span | None, hint: str | None = None,
            chain: tuple[str, ...] = ()) -> Diagnostic:
    """A warning diagnostic."""
    return Diagnostic("warning", code, message, span, hint, chain=chain)


def lint(program: Program, g: Graph) -> list[Diagnostic]:
    """The warnings for network ``g`` elaborated from ``program``, in source order, one per place and code."""
    found = [*_graph_warnings(g), *_definition_warnings(program, g)]
    seen: set[tuple[str, Span | None]] = set()
    out: list[Diagnostic] = []
    for w in found:
        if (w.code, w.span) not in seen:
            seen.add((w.code, w.span))
            out.append(w)
    return sorted(out, key=lambda w: (w.span.file, w.span.line, w.span.col) if w.span else ("", 0, 0))


def _chain(g: Graph, scopes: tuple[Scope, ...]) -> tuple[str, ...]:
    """The ``= in:`` chain of block instances, as errors show it (empty directly in the network)."""
    if not scopes:
        return ()
    return (g.name, *(f"{s.name} ({s.block})" if s.kind == "block" and s.block else s.name for s in scopes))


def _graph_warnings(g: Graph) -> Iterator[Diagnostic]:
    live, live_calls = live_nodes(g)
    users = g.users()
    outputs = {v for _, v in g.outputs}
    producer = g.producer()
    for n in g.nodes:
        op = op_of(n.op)
        used = any(v in users or v in outputs for v in n.outputs)
        if op.declared:
            if n.id not in live:
                name = n.attrs.get("name", "?")
                yield warning(code="unused-input", message=f"input `{name}` is not used by any output",
                              span=n.span, hint="remove it, or use it; `forward` still takes it")
            continue
        if n.id not in live:
            if not used:  # the end of a dead branch: one warning for the branch
                yield _unused(g, n, live_calls)
            continue
        before = producer.get(n.inputs[0]) if op.idempotent and n.inputs else None
        if before is not None and before.op == n.op and before.attrs == n.attrs and before.scope == n.scope:
            yield warning(code="repeated-activation", message=f"`{n.op}` is applied to its own result: the second "
                          "does nothing", span=n.span, chain=_chain(g, n.scope), hint=f"remove one `{n.op}`")


def _unused(g: Graph, n: Node, live_calls: set) -> Diagnostic:
    """The warning for a dead branch ending at ``n``: at the outermost block instance that is wholly unused,
    or at the layer itself."""
    for i, scope in enumerate(n.scope):
        if call_key(scope) not in live_calls:
            what = f"block instance `{scope.name}` ({scope.block})" if scope.kind == "block" else \
                f"group `{scope.name}`"
            return warning(code="unused-layer", message=f"the result of {what} reaches no output", span=scope.span,
                           hint=UNUSED_HINT, chain=_chain(g, n.scope[:i]))
    named = f"`{n.hint}` (`{n.op}`)" if n.hint else f"`{n.op}`"
    return warning(code="unused-layer", message=f"the result of {named} reaches no output", span=n.span,
                   hint=UNUSED_HINT, chain=_chain(g, n.scope))


def _definition_warnings(program: Program, g: Graph) -> Iterator[Diagnostic]:
    """Warnings read from the network's definition and the blocks it uses (each definition once)."""
    for name in dict.fromkeys([g.name, *g.blocks]):
        d = program.defs.get(name)
        if not isinstance(d, ast.BlockDef):
            continue
        for p in d.params:
            if p.name in program.defs:
                yield warning(code="shadowed-param", message=f"parameter `{p.name}` has the name of block "
                              f"`{p.name}`: `{p.name}(...)` calls the block, `{p.name}` alone is the parameter",
                              span=p.span, hint="rename the parameter")
        for node in _walk(d.body):
            if not isinstance(node, ast.Stage):
                continue
            if isinstance(node.core, ast.StageCall) and node.core.name not in program.defs:
                yield from _advice(node.core)
            count = node.repeat
            if isinstance(count, ast.Number) and count.value == 1:
                yield warning(code="repeat-once", message="`* 1` repeats the group once: it runs as without it",
                              span=count.span, hint="remove `* 1`")


def _advice(call: ast.StageCall) -> Iterator[Diagnostic]:
    """The op's ``advice`` on a call whose arguments are all written as numbers or booleans."""
    op = get(call.name)
    if op is None or op.advice is None:
        return
    attrs = {a.name: a.default for a in op.attrs}
    names = [a.name for a in op.attrs]
    for i, arg in enumerate(call.args):
        if not isinstance(arg.value, (ast.Number, ast.Bool)):
            return
        name = arg.name if arg.name is not None else names[i] if i < len(names) else None
        if name not in attrs:
            return  # a mistake the elaborator reported already
        attrs[name] = arg.value.value
    advice = op.advice(attrs)
    if advice is not None:
        yield warning(code=advice[0], message=advice[1], span=call.span, hint="remove it, or give the value meant")


def _walk(root: Any) -> Iterator[Any]:
    """Every AST node under ``root`` (tuples and dataclasses), without recursion (expressions nest deeply)."""
    stack = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack.extend(reversed(item))
        elif dataclasses.is_dataclass(item) and not isinstance(item, (type, Span)):
            yield item
            stack.extend(reversed([getattr(item, f.name) for f in dataclasses.fields(item)]))
