"""Binding blocks and arguments: definitions checked, parameters and call arguments bound to their values.

A call such as ``conv2d(16, k=3, stride=2)`` binds its arguments to the op's attributes (by position, then by
keyword; tensors to its inputs); each attribute's value is coerced by its kind (:mod:`dlc.compiler.kinds`). A
block's parameters are bound from the arguments of its instance or their defaults, a network's from --set and
--params or their defaults, each checked against its declared type.
"""

from __future__ import annotations

from typing import Any

from dlc.compiler.context import Context, Frame
from dlc.compiler.expressions import Evaluator
from dlc.compiler.external import check_extern
from dlc.compiler.kinds import ArgumentError, Site, refuse
from dlc.compiler.names import check_identifier
from dlc.compiler.ops.param import LAYER_PARAM_ARGS, names_parameters
from dlc.compiler.ops.registry import REQUIRED, Attr, OpDef, get
from dlc.compiler.values import Instance, Layer, Symbol, Tensor, describe
from dlc.diagnostics import DlcError, Span, suggest
from dlc.grammar import ast
from dlc.grammar.build import NUMBER_HINT, number_problem
from dlc.grammar.parser import MAX_NESTING

# The parameter types a block or network declares (`k: int`); `list[T]` of any of them but `list`, and unions
# `int | list[int]`, are built from these. `int2` is short for `int | list[int]`: a size per spatial axis.
PARAM_TYPES = ("int", "float", "bool", "str", "list", "int2")


def type_alternatives(text: str) -> list[str] | None:
    """The alternatives of the parameter type ``text`` (as the parser normalises it: `int | list[int]`), or
    None when one of them names no type."""
    alts = text.split(" | ")
    for t in alts:
        inner = t
        while inner.startswith("list[") and inner.endswith("]"):
            inner = inner[len("list["):-1]
        if inner not in PARAM_TYPES:
            return None
    return alts


def _coerce_type(t: str, v: Any) -> tuple[bool, Any]:
    """Whether ``v`` is a value of the single (non-union) type ``t``, and the value to keep (`3` -> `3.0` for a
    float, a bare name -> its text for a str)."""
    if t == "int":
        return isinstance(v, int) and not isinstance(v, bool), v
    if t == "float":
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        return ok, float(v) if ok else v
    if t == "bool":
        return isinstance(v, bool), v
    if t == "str":
        if isinstance(v, Symbol):
            v = v.name
        elif isinstance(v, Layer) and not v.config and not v.has_tensors:
            v = v.name
        return isinstance(v, str), v
    if t == "list":
        return isinstance(v, list), v
    if t == "int2":
        ok, v = _coerce_type("int", v)
        return (True, v) if ok else _coerce_type("list[int]", v) if isinstance(v, list) and v else (False, v)
    assert t.startswith("list[")
    if not isinstance(v, list):
        return False, v
    items = []
    for x in v:
        ok, x = _coerce_type(t[len("list["):-1], x)
        if not ok:
            return False, v
        items.append(x)
    return True, items


class Binder:
    """Binds the definitions, parameters and call arguments of one elaboration."""

    def __init__(self, ctx: Context, ev: Evaluator) -> None:
        self.ctx = ctx
        self.ev = ev
        self._inputs_of: dict[str, tuple[str, ...]] = {}  # block name -> its input names

    def check_defs(self) -> None:
        """Check every definition of the program: names, parameters, inputs, statements in their place."""
        for d in self.ctx.program.defs.values():
            check_identifier(d.name, d.name_span, "a block name", class_name=True)
            if get(d.name) is not None:
                raise DlcError("duplicate-name", f"block `{d.name}` has the name of a built-in layer", d.name_span)
            seen: set[str] = set()
            for p in d.params:
                check_identifier(p.name, p.span, "a parameter name")
                if p.name in seen:
                    raise DlcError("duplicate-name", f"parameter `{p.name}` is declared twice", p.span)
                seen.add(p.name)
                if type_alternatives(p.type) is None:
                    odd = next((t for t in p.type.replace("[", " ").replace("]", " ").replace("|", " ").split()
                                if t not in PARAM_TYPES), p.type)
                    raise DlcError("unknown-type", f"unknown parameter type `{p.type}`", p.span,
                                   hint=suggest(odd, PARAM_TYPES) or f"types are {', '.join(PARAM_TYPES)}, "
                                   "`list[T]` of one of them and unions such as `int | list[int]`")
            if isinstance(d, ast.ExternDef):
                check_extern(d)
            inputs: set[str] = set()
            for s in d.body:
                if isinstance(s, ast.Input):
                    if s.name in inputs:
                        raise DlcError("duplicate-name", f"input `{s.name}` is declared twice in `{d.name}`", s.span)
                    inputs.add(s.name)
                if d.is_network and isinstance(s, ast.Return):
                    raise DlcError("misplaced-statement", "a network has `output` statements, not `return`", s.span)
                if not d.is_network and isinstance(s, ast.Output):
                    raise DlcError("misplaced-statement", "a block ends with `return`, not `output`", s.span)

    def bind_network_params(self, net: ast.BlockDef, overrides: dict[str, Any], frame: Frame) -> dict[str, Any]:
        """Bind the network's parameters in ``frame``: ``overrides`` (from --set/--params), else defaults."""
        declared = {p.name for p in net.params}
        for k in overrides:
            if k not in declared:
                raise DlcError("unknown-param", f"network `{net.name}` has no parameter `{k}`", net.name_span,
                               hint=suggest(k, declared) or
                               (f"its parameters are {', '.join(sorted(declared))}" if declared else
                                "it declares no parameters"))
        bound: dict[str, Any] = {}
        for p in net.params:
            if p.name in overrides:
                self._check_override(p, overrides[p.name])
                value = self._coerce_param(p, overrides[p.name], p.span, source="override")
            elif p.default is not None:
                value = self._coerce_param(p, self.ev.eval(p.default, frame), p.default.span)
            else:
                raise DlcError("missing-param", f"network parameter `{p.name}` has no default and was not set",
                               p.span, hint=f"pass it with `--set {p.name}=...`")
            frame.names[p.name] = value
            bound[p.name] = value
        return bound

    def _check_override(self, p: ast.Param, value: Any) -> None:
        """Hold a --set / --params value (any YAML) to what a spec could write: bounded numbers, lists nested at
        most MAX_NESTING deep. Every item counts as a step, so lists that share items (YAML aliases) cannot
        make the walk, or what later prints the value, take exponential time."""
        stack = [(value, 0)]
        while stack:
            v, depth = stack.pop()
            self.ctx.steps += 1
            if self.ctx.steps > self.ctx.max_steps:
                raise DlcError("too-large", f"the value of `{p.name}` (from --set/--params) has more than "
                               f"{self.ctx.max_steps:,} items", p.span)
            if isinstance(v, list):
                if depth >= MAX_NESTING:
                    raise DlcError("too-deep", f"the value of `{p.name}` (from --set/--params) nests lists more "
                                   f"than {MAX_NESTING} deep", p.span)
                stack.extend((x, depth + 1) for x in v)
            elif isinstance(v, (int, float)):
                problem = number_problem(v)
                if problem is not None:
                    raise DlcError("bad-number", f"parameter `{p.name}` (from --set/--params): {problem}", p.span,
                                   hint=NUMBER_HINT)

    def bind_args(self, f: Layer, args: tuple[ast.Arg, ...], span: Span, frame: Frame) -> Layer:
        """The layer ``f`` with the call arguments ``args`` bound: tensors, configuration by keyword and by
        position; unknown or repeated arguments are diagnosed at the call."""
        layer = Layer(f.op, f.block, {}, [], {}, [], span)
        kw_spans: dict[str, Span] = {}  # `name=value` spans, to underline an unknown keyword itself
        for a in args:
            v = self.ev.eval(a.value, frame)
            if isinstance(v, tuple) and v and v[0] == "builtin":
                v = Symbol(v[1], a.value.span)  # `merge=max`: a bare name, checked against the argument's kind
            if a.name is None:
                if isinstance(v, Tensor):
                    layer.pos_tensors.append(v)
                else:
                    layer.positional.append((v, a.value.span))
                continue
            if a.name in layer.config or a.name in layer.tensors:
                raise self.ctx.err("duplicate-argument", f"argument `{a.name}` given twice", a.span, frame)
            kw_spans[a.name] = a.span
            if isinstance(v, Tensor):
                layer.tensors[a.name] = v
                layer.tensor_spans[a.name] = a.value.span
            else:
                layer.config[a.name] = (v, a.value.span)
        # match positional config now so errors point at the call
        names = self._positional_names(layer)
        if len(layer.positional) > len(names):
            extra = layer.positional[len(names)]
            if isinstance(extra[0], Symbol):  # `relu(xs)`: most likely a misspelt tensor
                raise self.ev.unknown_name(extra[0], frame)
            many = f"at most {len(names)} positional argument(s)" if names else "no positional arguments"
            raise self.ctx.err("too-many-arguments", f"`{layer.name}` takes {many}", extra[1], frame,
                               hint=f"its arguments are {self.signature(layer)}")
        for (v, sp), n in zip(layer.positional, names):
            if n in layer.config:
                raise self.ctx.err("duplicate-argument", f"argument `{n}` given twice", sp, frame)
            layer.config[n] = (v, sp)
        layer.positional = []
        valid = self._config_names(layer)
        inputs = self._input_names(layer)
        for n, (v, sp) in layer.config.items():
            if n not in valid:
                raise self.ctx.err("unknown-argument", f"`{layer.name}` has no argument `{n}`", kw_spans.get(n, sp),
                                   frame,
                                   hint=suggest(n, valid + inputs) or f"its arguments are {self.signature(layer)}")
        for n in layer.tensors:
            if n not in inputs:
                hint = suggest(n, valid + inputs) or f"its arguments are {self.signature(layer)}"
                if n in valid:
                    hint = f"`{n}` takes a compile-time value, not a tensor"
                raise self.ctx.err("unknown-argument", f"`{layer.name}` has no tensor input `{n}`",
                                   kw_spans.get(n, span), frame, hint=hint)
        return layer

    def _positional_names(self, layer: Layer) -> list[str]:
        if layer.op:
            return [a.name for a in layer.op.attrs if not a.keyword_only]
        return [p.name for p in layer.block.params]  # type: ignore[union-attr]

    def _config_names(self, layer: Layer) -> list[str]:
        if layer.op:
            return [a.name for a in layer.op.attrs] + (list(LAYER_PARAM_ARGS) if layer.op.stateful else [])
        return [p.name for p in layer.block.params]  # type: ignore[union-attr]

    def _input_names(self, layer: Layer) -> list[str]:
        if layer.op:
            return list(layer.op.inputs) + list(layer.op.keyword_inputs)
        return list(self.block_inputs(layer.block))  # type: ignore[arg-type]

    def block_inputs(self, block: ast.BlockDef) -> tuple[str, ...]:
        """The input names of ``block``, found once per block rather than once per instance."""
        names = self._inputs_of.get(block.name)
        if names is None:
            names = self._inputs_of[block.name] = tuple(s.name for s in block.body if isinstance(s, ast.Input))
        return names

    def signature(self, layer: Layer) -> str:
        """`conv2d(channels, k, stride=1, ...)`: the arguments ``layer`` takes, for hints."""
        if layer.op:
            parts = []
            for a in layer.op.attrs:
                parts.append(a.name if a.default is REQUIRED else f"{a.name}={_fmt_default(a.default)}")
            return f"{layer.name}({', '.join(parts)})"
        ps = [p.name for p in layer.block.params]  # type: ignore[union-attr]
        return f"{layer.name}({', '.join(ps)})"

    def bind_block_params(self, layer: Layer, inner: Frame, outer: Frame) -> dict[str, Any]:
        """Bind a block instance's parameters in its ``inner`` frame: the arguments given in ``outer``, else
        the defaults (evaluated inside the block)."""
        block = layer.block
        assert block is not None
        bound: dict[str, Any] = {}
        for p in block.params:
            if p.name in layer.config:
                v, sp = layer.config[p.name]
                value = self._coerce_param(p, v, sp, frame=outer)
            elif p.default is not None:
                value = self._coerce_param(p, self.ev.eval(p.default, inner), p.default.span, frame=inner)
            else:
                raise self.ctx.err("missing-argument", f"block `{block.name}` needs the argument `{p.name}`",
                                   layer.span, outer, hint=f"its parameters are {self.signature(layer)}")
            inner.names[p.name] = value
            bound[p.name] = value
        return bound

    def _coerce_param(self, p: ast.Param, v: Any, span: Span, frame: Frame | None = None,
                      source: str = "argument") -> Any:
        ok = False
        for t in type_alternatives(p.type) or ():
            ok, value = _coerce_type(t, v)
            if ok:
                v = value
                break
        if not ok:
            msg = f"parameter `{p.name}` is {p.type}, got {describe(v)}"
            chain = frame.container.chain if frame else ()
            hint = None
            if isinstance(v, list) and p.type == "int":  # `k=[1, 7]` for a kernel size
                hint = f"to take an integer or a list of them, declare `{p.name}: int2`"
            raise DlcError("type-mismatch", msg if source == "argument" else f"{msg} (from --set/--params)", span,
                           chain=chain if len(chain) > 1 else (), hint=hint)
        return v

    def resolve_attrs(self, layer: Layer, frame: Frame) -> dict[str, Any]:
        """Every attribute of an op layer: the arguments given, coerced by their kinds, else the defaults."""
        op = layer.op
        assert op is not None
        out: dict[str, Any] = {}
        for a in op.attrs:
            if a.name in layer.config:
                v, sp = layer.config[a.name]
                out[a.name] = self.coerce_attr(op, a, v, sp, frame)
            elif a.default is REQUIRED:
                raise self.ctx.err("missing-argument", f"`{op.name}` needs the argument `{a.name}`", layer.span, frame,
                                   hint=f"its arguments are {self.signature(layer)}")
            else:
                out[a.name] = a.default
        for name in LAYER_PARAM_ARGS:
            if name in layer.config:
                v, sp = layer.config[name]
                out[name] = self._layer_param_arg(op, name, v, sp, frame)
        return out

    def _layer_param_arg(self, op: OpDef, name: str, v: Any, span: Span, frame: Frame) -> Any:
        """``weight_init=``, ``bias_init=`` (an initialiser) or ``tie=`` (a layer of this body), which every
        layer with parameters takes."""
        if not names_parameters(op):
            raise self.ctx.err("bad-argument", f"`{op.name}` wraps a layer: give `{name}` to the wrapped layer",
                               span, frame)
        if name != "tie":
            return self.coerce_attr(op, Attr(name, "initialiser"), v, span, frame)
        target = v.name if isinstance(v, (Symbol, Instance)) else None
        if target is None or (isinstance(v, Instance) and v.container is not frame.container):
            raise self.ctx.err("bad-argument", f"`{op.name}`: `tie` must name a layer of this "
                               f"{'network' if frame.defn.is_network else 'block'}, got {describe(v)}", span, frame,
                               hint="label the layer whose weight is shared: `embed: embedding(vocab, d)`, then "
                                    "`tie=embed`")
        return target

    def coerce_attr(self, op: OpDef, a: Attr, v: Any, span: Span, frame: Frame) -> Any:
        """The value of the argument ``a`` of ``op`` given as ``v`` (at ``span``), as its kind coerces it."""
        site = Site(op, a.name, lambda: self.ev.known_names(frame), lambda layer: self.resolve_attrs(layer, frame))
        try:
            if isinstance(v, tuple) and v and v[0] == "builtin":  # `k=max`: a builtin function is no argument
                raise refuse("a value", v, site)
            if v is None and a.default is None:
                return None
            return a.kind.coerce(v, site)
        except ArgumentError as e:
            raise self.ctx.err("bad-argument", e.message, span, frame, hint=e.hint) from None


def _fmt_default(v: Any) -> str:
    """A default value as the spec would write it."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
