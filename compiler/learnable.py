"""Learnable tensors: the ``param NAME: [shape] dtype = initialiser`` statement of a network or block body.

A ``param`` becomes a node of the declared op ``param`` (``ops/param.py``), a module attribute named by the
spec (inside a block instance ``encoder`` it is ``encoder.pos``). Its one IR input is the body's first input:
in ``forward`` the parameter is expanded over that input's batch, so it is read after it.
"""

from __future__ import annotations

from typing import Any

from dlc.compiler.context import Context, Frame
from dlc.compiler.expressions import Evaluator
from dlc.compiler.kinds import ArgumentError, Initialiser, Site
from dlc.compiler.names import check_identifier
from dlc.compiler.nodes import Nodes
from dlc.compiler.ops.initialisers import describe_init, needs_fans
from dlc.compiler.ops.registry import op_of
from dlc.compiler.types import TensorType, is_float
from dlc.compiler.values import Tensor, describe
from dlc.grammar import ast


def declare_param(ctx: Context, ev: Evaluator, nodes: Nodes, stmt: ast.ParamDecl, frame: Frame,
                  inputs: list[Tensor]) -> Tensor:
    """The tensor a ``param`` statement declares in ``frame``; ``inputs``: a block's inputs (a network's are
    those it has declared so far)."""
    check_identifier(stmt.name, stmt.span, "a parameter name", module_attr=True)
    if not inputs:
        raise ctx.err("misplaced-statement", f"`param {stmt.name}` comes before any input", stmt.span, frame,
                      hint="declare the network's inputs first: a parameter is expanded over the batch of the "
                           "first input")
    dims: list[int] = []
    for e in stmt.shape:
        if isinstance(e, ast.Name) and e.id not in frame.names:
            raise ctx.err("bad-shape", f"a parameter needs known sizes, but `{e.id}` is a symbolic dimension",
                          e.span, frame, hint="use a number or a parameter of the block or network")
        v = ev.eval(e, frame)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ctx.err("bad-shape", f"a parameter's size must be a positive integer, got {describe(v)}", e.span,
                          frame)
        dims.append(v)
    dtype = stmt.dtype or "float32"
    if not is_float(dtype):
        raise ctx.err("type-mismatch", f"a parameter is learnt, so its dtype must be a float type, not {dtype}",
                      stmt.span, frame, hint="float32 (the default), float64, float16 or bfloat16")
    init = _initialiser(ctx, ev, stmt, frame, len(dims))
    frame.container.claim(stmt.name, stmt.span)
    t = TensorType(tuple(dims), dtype, "cf" if len(dims) >= 3 else "fl")
    attrs = {"name": stmt.name, "shape": dims, "dtype": dtype, "init": init}
    node = nodes.node("param", [inputs[0]], attrs, (t,), stmt.span, frame.container, stmt.name, stmt.name, frame)
    return Tensor(node.outputs[0], t)


def _initialiser(ctx: Context, ev: Evaluator, stmt: ast.ParamDecl, frame: Frame, rank: int) -> dict[str, Any] | None:
    if stmt.init is None:
        return None
    site = Site(op_of("param"), "initialiser", lambda: ev.known_names(frame), lambda layer: {})
    try:
        init = Initialiser().coerce(ev.eval(stmt.init, frame), site)
    except ArgumentError as e:
        raise ctx.err("bad-argument", e.message.replace("`param`: `initialiser` must", "a parameter's initialiser "
                      "must"), stmt.init.span, frame, hint=e.hint) from None
    if needs_fans(init) and rank < 2:
        raise ctx.err("bad-argument", f"`{describe_init(init)}` computes fans, which a parameter of {rank} "
                      "dimension(s) does not have", stmt.init.span, frame,
                      hint="give it at least two dimensions, or use e.g. `normal(std=0.02)`")
    return init
