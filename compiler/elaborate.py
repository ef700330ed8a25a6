"""Elaboration and lowering: AST -> IR graph.

Blocks are instantiated with their arguments bound, compile-time expressions are
evaluated, repeats unrolled and pipelines applied; every layer application becomes
an IR node whose type comes from its op's shape rule at once, so a shape error is
reported at the spec line that caused it, with the chain of block instances.
"""

from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from dlc.compiler.ir import Graph, Node, Scope
from dlc.compiler.names import RESERVED_ATTRS as _MODULE_ATTRS
from dlc.compiler.names import check_identifier, check_network_name
from dlc.compiler.ops.registry import MAX_FLOAT_ARG, REQUIRED, Attr, OpDef, ShapeError, all_ops, get
from dlc.compiler.program import Program, pick_network
from dlc.limits import limit
from dlc.compiler.types import MAX_ELEMENTS, TensorType, Type, size_problem
from dlc.compiler.values import Instance, Layer, Symbol, Tensor, describe
from dlc.diagnostics import SOURCES, DlcError, Span, suggest
from dlc.grammar import ast
from dlc.grammar.build import NUMBER_HINT, number_problem
from dlc.grammar.parser import MAX_NESTING

PARAM_TYPES = ("int", "float", "bool", "str", "list")
# One repeat (`x -> layer * n`) is at most this long; the work of a whole compile is bounded by the limits
# MAX_STEPS and MAX_NODES (dlc.limits), which a big but sane network can reach and a user can raise.
MAX_REPEAT = 10_000
# Text that every command writes again for each layer or block instance (a module path, a block's str and list
# arguments in the IR and the diagram) costs a step per this many characters, so that the output of a command
# stays proportional to the steps a spec may take however long its names and arguments are.
TEXT_PER_STEP = 16
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
BUILTINS = ("channels", "size", "rank", "min", "max", "int", "float", "len")
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "//": operator.floordiv,
          "%": operator.mod}
# Ops whose module form cannot be an nn.Sequential child (tuple results, several arguments, per-step reshaping).
_NOT_IN_SEQ = frozenset({"timedistributed"})  # its module form needs the reshapes around it


@dataclass
class Container:
    """Where module attributes are created: a network, a block instance or a labelled group."""

    scope: tuple[Scope, ...]
    kind: str  # net | block | seq
    chain: tuple[str, ...]
    taken: dict[str, Span] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    index: int = 0

    def claim(self, name: str, span: Span) -> None:
        if name in self.taken:
            raise DlcError("duplicate-name", f"`{name}` already names a layer here", span,
                           chain=self.chain if len(self.chain) > 1 else (),
                           notes=[f"first used at {self.taken[name]}"])
        self.taken[name] = span

    def auto(self, base: str, span: Span) -> str:
        while True:
            n = self.counters.get(base, 0)
            self.counters[base] = n + 1
            name = f"{base}_{n}"
            if name not in self.taken:
                self.taken[name] = span
                return name

    def name_for(self, label: str | None, span: Span, auto: str | None) -> str | None:
        """The attribute name of a new layer or block here: its label, its index inside a labelled
        group, an automatic ``auto_N`` name, or None (a stateless layer needs no attribute)."""
        if self.kind == "seq":
            if label is None:
                return self.next_index(span)
            self.claim(label, span)
            self.index += 1
            return label
        if label is not None:
            self.claim(label, span)
            return label
        return self.auto(auto, span) if auto else None

    def next_index(self, span: Span) -> str:
        name = str(self.index)
        self.index += 1
        self.taken[name] = span
        return name


@dataclass
class Frame:
    """The evaluation environment of one network or block body."""

    defn: ast.BlockDef
    names: dict[str, Any]
    container: Container
    hint: str | None = None
    naming_call: ast.Call | None = None  # the call a single-name assignment applies (it names the layer)


@functools.lru_cache(maxsize=None)  # once per block name, not once per instance
def snake(name: str) -> str:
    """`BasicBlock` -> `basic_block`, `ConvBNReLU` -> `conv_bn_re_lu` (an acronym stays one word)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Elaborator:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.graph: Graph | None = None
        self.depth = 0
        self.blocks: list[str] = []  # names of the block instances being elaborated, outermost first
        self.where: tuple[Span, Frame] | None = None  # the statement being elaborated (for too-deep errors)
        self.max_nodes = limit("MAX_NODES")
        self.max_steps = limit("MAX_STEPS")
        self.steps = 0
        # How often each module path (a block instance, a labelled group) has been applied: a shared instance is
        # applied more than once, and so is everything inside it; graph.calls keys each application `path#n`.
        self.uses: dict[str, int] = {}
        self.inputs_of: dict[str, tuple[str, ...]] = {}  # block name -> its input names
        self.output_names: set[str] = set()  # the network's outputs so far (a set: a spec may have very many)

    # ---- entry -----------------------------------------------------------------------------

    def network(self, name: str | None, overrides: dict[str, Any]) -> Graph:
        net = pick_network(self.program, name)
        check_network_name(net.name, net.name_span)
        self._check_defs()
        container = Container((), "net", (net.name,))
        frame = Frame(net, {}, container)
        params = self._bind_network_params(net, overrides, frame)
        self.graph = Graph(net.name, net.span.file, net.span, params)
        self._body(frame, [], is_network=True)
        if not self.graph.outputs:
            raise DlcError("no-output", f"network `{net.name}` has no `output`", net.name_span,
                           hint="add e.g. `output y = x -> linear(10)`")
        return self.graph

    def _check_defs(self) -> None:
        for d in self.program.defs.values():
            check_identifier(d.name, d.name_span, "a block name", class_name=True)
            if get(d.name) is not None:
                raise DlcError("duplicate-name", f"block `{d.name}` has the name of a built-in layer", d.name_span)
            seen: set[str] = set()
            for p in d.params:
                check_identifier(p.name, p.span, "a parameter name")
                if p.name in seen:
                    raise DlcError("duplicate-name", f"parameter `{p.name}` is declared twice", p.span)
                seen.add(p.name)
                if p.type not in PARAM_TYPES:
                    raise DlcError("unknown-type", f"unknown parameter type `{p.type}`", p.span,
                                   hint=suggest(p.type, PARAM_TYPES) or f"types are {', '.join(PARAM_TYPES)}")
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

    def _bind_network_params(self, net: ast.BlockDef, overrides: dict[str, Any], frame: Frame) -> dict[str, Any]:
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
                value = self._coerce_param(p, self.eval(p.default, frame), p.default.span)
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
            self.steps += 1
            if self.steps > self.max_steps:
                raise DlcError("too-large", f"the value of `{p.name}` (from --set/--params) has more than "
                               f"{self.max_steps:,} items", p.span)
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

    # ---- bodies -------------------------------------------------------------------------------

    def _body(self, frame: Frame, inputs: list[Tensor], is_network: bool) -> list[Any]:
        d = frame.defn
        n_inputs = 0
        returned: list[Any] | None = None
        for stmt in d.body:
            self.where = (stmt.span, frame)
            if returned is not None:
                raise self.err("misplaced-statement", "statement after `return`", stmt.span, frame)
            if isinstance(stmt, ast.Input):
                check_identifier(stmt.name, stmt.span, "an input name")
                self._declare(frame, stmt.name, stmt.span)
                if is_network:
                    frame.names[stmt.name] = self._network_input(stmt, frame)
                else:
                    frame.names[stmt.name] = self._block_input(stmt, frame, inputs, n_inputs)
                n_inputs += 1
            elif isinstance(stmt, ast.Assign):
                # several targets: a comma-separated hint names each output of the last layer
                frame.hint = ",".join(stmt.targets)
                frame.naming_call = stmt.value if isinstance(stmt.value, ast.Call) else None
                value = self.eval(stmt.value, frame)
                frame.hint = frame.naming_call = None
                self._assign(frame, stmt.targets, value, stmt.value.span, _name_spans(stmt.targets, stmt.span))
            elif isinstance(stmt, ast.Output):
                self._output(frame, stmt)
            elif isinstance(stmt, ast.Return):
                returned = [self.tensor(self.eval(v, frame), v.span, frame, "a returned value")
                            for v in stmt.values]
        if not is_network:
            if n_inputs != len(inputs):
                raise self.err("wrong-inputs", f"block `{d.name}` takes {n_inputs} input(s), got {len(inputs)}",
                               frame.container.scope[-1].span if frame.container.scope else d.span, frame)
            if returned is None:
                raise DlcError("no-return", f"block `{d.name}` has no `return`", d.name_span)
            return returned
        return []

    def _declare(self, frame: Frame, name: str, span: Span) -> None:
        if name in frame.names:
            raise self.err("duplicate-name", f"`{name}` is already defined in `{frame.defn.name}`", span, frame)

    def _network_input(self, stmt: ast.Input, frame: Frame) -> Tensor:
        if stmt.shape is None:
            raise self.err("missing-shape", f"network input `{stmt.name}` needs a shape", stmt.span, frame,
                           hint=f"e.g. `input {stmt.name}: [3, 224, 224]` (batch not counted)")
        dims: list[int | str] = []
        for e in stmt.shape:
            if isinstance(e, ast.Name) and e.id not in frame.names:
                check_identifier(e.id, e.span, "a dimension name")
                dims.append(e.id)
                continue
            v = self.eval(e, frame)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise self.err("bad-shape", f"a dimension must be a positive integer or a name, got {describe(v)}",
                               e.span, frame)
            dims.append(v)
        dtype = stmt.dtype or "float32"
        t = TensorType(tuple(dims), dtype, "cf" if len(dims) >= 3 else "fl")
        node = self.emit_node("input", [], {"name": stmt.name}, (t,), stmt.span, frame.container, None, stmt.name)
        self.graph.inputs.append((stmt.name, node.outputs[0]))  # type: ignore[union-attr]
        return Tensor(node.outputs[0], t)

    def _block_input(self, stmt: ast.Input, frame: Frame, inputs: list[Tensor], index: int) -> Tensor:
        if index >= len(inputs):
            raise self.err("wrong-inputs", f"block `{frame.defn.name}` needs an input for `{stmt.name}`",
                           stmt.span, frame)
        t = inputs[index]
        if stmt.shape is not None and isinstance(t.type, TensorType):
            want = []
            for e in stmt.shape:
                want.append(e.id if isinstance(e, ast.Name) and e.id not in frame.names else self.eval(e, frame))
            ok = len(want) == t.type.rank and all(
                isinstance(w, str) or w == d for w, d in zip(want, t.type.shape))
            if not ok:
                raise self.err("shape-mismatch",
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
                raise self.err("tuple-mismatch", f"{len(targets)} names on the left but the value has {n} part(s)",
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
        g = self.graph
        assert g is not None
        spans = _name_spans(stmt.targets, stmt.span, skip=len("output"))
        if stmt.value is None:
            values = [frame.names.get(t) for t in stmt.targets]
            for t, v, sp in zip(stmt.targets, values, spans):
                if v is None:
                    raise self.err("unknown-name", f"unknown name `{t}`", sp, frame,
                                   hint=suggest(t, frame.names))
        else:
            frame.hint = stmt.targets[0] if len(stmt.targets) == 1 else None
            frame.naming_call = stmt.value if isinstance(stmt.value, ast.Call) else None
            value = self.eval(stmt.value, frame)
            frame.hint = frame.naming_call = None
            if len(stmt.targets) > 1:
                if not isinstance(value, tuple) or len(value) != len(stmt.targets):
                    raise self.err("tuple-mismatch", f"{len(stmt.targets)} outputs named but the value has "
                                   f"{len(value) if isinstance(value, tuple) else 1} part(s)", stmt.span, frame)
                values = list(value)
            else:
                values = [value]
        for t, v, sp in zip(stmt.targets, values, spans):
            check_identifier(t, sp, "an output name")
            tv = self.tensor(v, stmt.value.span if stmt.value else sp, frame, "an output")
            if t in self.output_names:
                raise self.err("duplicate-name", f"output `{t}` is declared twice", sp, frame)
            if stmt.value is not None:
                self._declare(frame, t, sp)
                frame.names[t] = tv
            self.output_names.add(t)
            g.outputs.append((t, tv.vid))

    # ---- expressions ------------------------------------------------------------------------

    def step(self, span: Span, frame: Frame | None, cost: int = 1) -> None:
        """Count ``cost`` steps of elaboration; too many is a runaway spec (a recursion that doubles, say)."""
        self.steps += cost
        if self.steps > self.max_steps:
            e = self.err("too-large", f"elaborating the network takes more than {self.max_steps:,} steps "
                         "(expressions evaluated, block instances, repeat iterations)", span, frame,
                         hint="check recursive blocks and repeat counts; if the network really is that large, "
                              "raise the limit with the environment variable DLC_MAX_STEPS")
            raise _short_chain(e)

    def eval(self, e: ast.Expr, frame: Frame) -> Any:
        self.step(e.span, frame)
        if isinstance(e, (ast.Number, ast.String, ast.Bool)):
            return e.value
        if isinstance(e, ast.Name):
            return self._lookup(e.id, e.span, frame)
        if isinstance(e, ast.ListExpr):
            return [self.eval(x, frame) for x in e.items]
        if isinstance(e, ast.Cond):
            test = self.eval(e.test, frame)
            if not isinstance(test, bool):
                raise self.err("type-mismatch", f"the condition of `if` must be true or false, got {describe(test)}",
                               e.test.span, frame)
            return self.eval(e.then if test else e.orelse, frame)
        if isinstance(e, ast.BoolOp):
            left = self._bool(e.left, frame)
            if e.op == "and" and not left:
                return False
            if e.op == "or" and left:
                return True
            return self._bool(e.right, frame)
        if isinstance(e, ast.Not):
            return not self._bool(e.operand, frame)
        if isinstance(e, ast.Compare):
            return self._compare(e, frame)
        if isinstance(e, ast.Neg):
            v = self.eval(e.operand, frame)
            if isinstance(v, Tensor):
                return self.emit("scale", [v], {"factor": -1.0}, e.span, frame)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v
            raise self.err("type-mismatch", f"cannot negate {describe(v)}", e.span, frame)
        if isinstance(e, ast.BinOp):
            return self._binop(e, frame)
        if isinstance(e, ast.Call):
            return self._call(e, frame)
        if isinstance(e, ast.Pipe):
            v = self.eval(e.head, frame)
            for stage in e.stages:
                v = self._stage(v, e.head.span if v is None else stage.span, stage, frame, frame.container)
            return v
        raise AssertionError(f"unknown expression {type(e).__name__}")

    def _bool(self, e: ast.Expr, frame: Frame) -> bool:
        v = self.eval(e, frame)
        if not isinstance(v, bool):
            raise self.err("type-mismatch", f"expected true or false, got {describe(v)}", e.span, frame)
        return v

    def _lookup(self, name: str, span: Span, frame: Frame, callee: bool = False) -> Any:
        if name in frame.names:
            v = frame.names[name]
            # In call / stage position a plain compile-time value (e.g. a parameter `dropout: float`)
            # does not hide the layer of the same name: `dropout(dropout)` means the op.
            plain = isinstance(v, (int, float, str, list))
            if not (callee and plain and (name in self.program.defs or get(name) is not None)):
                return v
        if name in self.program.defs:
            d = self.program.defs[name]
            if d.is_network:
                raise self.err("bad-reference", f"`{name}` is a network; only blocks can be used inside others",
                               span, frame, hint=f"declare it as `block {name}(...)`")
            return Layer(None, d, {}, [], {}, [], span)
        op = get(name)
        if op is not None:
            return Layer(op, None, {}, [], {}, [], span)
        if name in BUILTINS:
            return ("builtin", name)
        return Symbol(name, span)

    def _known_names(self, frame: Frame) -> list[str]:
        return list(frame.names) + list(self.program.defs) + list(all_ops()) + list(BUILTINS)

    def _compare(self, e: ast.Compare, frame: Frame) -> bool:
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        for v, sub in ((a, e.left), (b, e.right)):
            if isinstance(v, (Tensor, Layer, Instance, tuple)):
                raise self.err("type-mismatch", f"cannot compare {describe(v)} at compile time", sub.span, frame,
                               hint="shape queries such as `channels(x)` give numbers to compare")
            if isinstance(v, Symbol):
                raise self.unknown_name(v, frame)
        try:
            return {"==": a == b, "!=": a != b}[e.op] if e.op in ("==", "!=") else \
                {"<": lambda: a < b, ">": lambda: a > b, "<=": lambda: a <= b, ">=": lambda: a >= b}[e.op]()
        except TypeError:
            raise self.err("type-mismatch", f"cannot compare {describe(a)} with {describe(b)}", e.span,
                           frame) from None

    def _binop(self, e: ast.BinOp, frame: Frame) -> Any:
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        for v, sub in ((a, e.left), (b, e.right)):
            if isinstance(v, Symbol):
                raise self.unknown_name(v, frame)
        num = (int, float)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            hint_save = frame.hint
            if isinstance(a, Tensor) and isinstance(b, Tensor):
                op = {"+": "add", "-": "sub", "*": "mul"}.get(e.op)
                if op is None:
                    raise self.err("type-mismatch", f"`{e.op}` is not defined between tensors", e.span, frame,
                                   hint="tensors combine with +, - and *")
                return self.emit(op, [a, b], {}, e.span, frame)
            t, c = (a, b) if isinstance(a, Tensor) else (b, a)
            if not isinstance(c, num) or isinstance(c, bool):
                raise self.err("type-mismatch", f"cannot combine a tensor with {describe(c)} using `{e.op}`",
                               e.span, frame)
            frame.hint = hint_save
            c = float(c)  # a scale or offset is a float; |c| <= MAX_INT converts without overflow
            if e.op == "+":
                return self.emit("shift", [t], {"offset": c}, e.span, frame)
            if e.op == "*":
                return self.emit("scale", [t], {"factor": c}, e.span, frame)
            if e.op == "-" and t is a:
                return self.emit("shift", [t], {"offset": -c}, e.span, frame)
            if e.op == "-":
                neg = self.emit("scale", [t], {"factor": -1.0}, e.span, frame)
                return self.emit("shift", [neg], {"offset": c}, e.span, frame)
            if e.op == "/" and t is a:
                if c == 0:
                    raise self.err("bad-argument", "division by zero", e.right.span, frame)
                return self.emit("scale", [t], {"factor": self.number(1.0 / c, e.span, frame)}, e.span, frame)
            raise self.err("type-mismatch", f"`{e.op}` between a tensor and a number is not supported", e.span,
                           frame)
        if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
            try:
                result = _ARITH[e.op](a, b)
            except ZeroDivisionError:
                raise self.err("bad-argument", "division by zero", e.right.span, frame) from None
            # checked after every operation, so no value ever grows large enough to make the next one slow
            return self.number(result, e.span, frame)
        if e.op == "*" and isinstance(a, Layer | Instance):
            raise self.err("bad-repeat", "repeating a layer with `*` works only as a pipeline stage", e.span, frame,
                           hint="write `x -> layer * 3`")
        raise self.err("type-mismatch", f"cannot apply `{e.op}` to {describe(a)} and {describe(b)}", e.span, frame)

    def number(self, v: int | float, span: Span, frame: Frame | None) -> int | float:
        """``v``, if it is within the bounds every number has (see ``MAX_INT``); else error[bad-number]."""
        problem = number_problem(v)
        if problem is not None:
            raise self.err("bad-number", f"the result is out of range: {problem}", span, frame, hint=NUMBER_HINT)
        return v

    def _call(self, e: ast.Call, frame: Frame) -> Any:
        f = self._lookup(e.func.id, e.func.span, frame, callee=True) if isinstance(e.func, ast.Name) \
            else self.eval(e.func, frame)
        if isinstance(f, Symbol):
            raise self.err("unknown-layer", f"unknown layer or block `{f.name}`", f.span, frame,
                           hint=suggest(f.name, self._known_names(frame)))
        if isinstance(f, tuple) and f and f[0] == "builtin":
            return self._builtin(f[1], e, frame)
        if isinstance(f, Instance):
            if not all(a.name is None for a in e.args):
                raise self.err("bad-argument", f"instance `{f.name}` is already configured; pass only tensors",
                               e.span, frame)
            tensors = [self.tensor(self.eval(a.value, frame), a.span, frame, "an argument") for a in e.args]
            return self.apply_instance(f, tensors, e.span, frame, frame.container)
        if not isinstance(f, Layer):
            raise self.err("not-callable", f"{describe(f)} cannot be called", e.func.span, frame)
        if f.config or f.tensors or f.pos_tensors:
            raise self.err("not-callable", f"`{f.name}(...)` is already configured", e.span, frame,
                           hint="bind it to a name first: `l = layer(...)`, then `l(x)`")
        layer = self._bind_args(f, e.args, e.span, frame)
        if layer.has_tensors:
            return self.apply(layer, [], e.span, frame, frame.container, self._assigned_name(e, layer, frame))
        return layer

    def _assigned_name(self, e: ast.Call, layer: Layer, frame: Frame) -> str | None:
        """`ctx = attention(query=q, key=k, value=v)`: the assignment names the layer it applies."""
        if e is not frame.naming_call or frame.hint is None or frame.container.kind == "seq" or "," in frame.hint:
            return None
        if layer.op is not None and not layer.op.stateful:
            return None
        name = frame.hint
        if name in frame.container.taken or name in _MODULE_ATTRS:
            return None
        return name

    def _bind_args(self, f: Layer, args: tuple[ast.Arg, ...], span: Span, frame: Frame) -> Layer:
        layer = Layer(f.op, f.block, {}, [], {}, [], span)
        kw_spans: dict[str, Span] = {}  # `name=value` spans, to underline an unknown keyword itself
        for a in args:
            v = self.eval(a.value, frame)
            if isinstance(v, tuple) and v and v[0] == "builtin":
                v = Symbol(v[1], a.value.span)  # `merge=max`: a bare name, checked against the argument's kind
            if a.name is None:
                if isinstance(v, Tensor):
                    layer.pos_tensors.append(v)
                else:
                    layer.positional.append((v, a.value.span))
                continue
            if a.name in layer.config or a.name in layer.tensors:
                raise self.err("duplicate-argument", f"argument `{a.name}` given twice", a.span, frame)
            kw_spans[a.name] = a.span
            if isinstance(v, Tensor):
                layer.tensors[a.name] = v
            else:
                layer.config[a.name] = (v, a.value.span)
        # match positional config now so errors point at the call
        names = self._positional_names(layer)
        if len(layer.positional) > len(names):
            extra = layer.positional[len(names)]
            if isinstance(extra[0], Symbol):  # `relu(xs)`: most likely a misspelt tensor
                raise self.unknown_name(extra[0], frame)
            many = f"at most {len(names)} positional argument(s)" if names else "no positional arguments"
            raise self.err("too-many-arguments", f"`{layer.name}` takes {many}", extra[1], frame,
                           hint=f"its arguments are {self._signature(layer)}")
        for (v, sp), n in zip(layer.positional, names):
            if n in layer.config:
                raise self.err("duplicate-argument", f"argument `{n}` given twice", sp, frame)
            layer.config[n] = (v, sp)
        layer.positional = []
        valid = self._config_names(layer)
        inputs = self._input_names(layer)
        for n, (v, sp) in layer.config.items():
            if n not in valid:
                raise self.err("unknown-argument", f"`{layer.name}` has no argument `{n}`", kw_spans.get(n, sp),
                               frame,
                               hint=suggest(n, valid + inputs) or f"its arguments are {self._signature(layer)}")
        for n in layer.tensors:
            if n not in inputs:
                hint = suggest(n, valid + inputs) or f"its arguments are {self._signature(layer)}"
                if n in valid:
                    hint = f"`{n}` takes a compile-time value, not a tensor"
                raise self.err("unknown-argument", f"`{layer.name}` has no tensor input `{n}`",
                               kw_spans.get(n, span), frame, hint=hint)
        return layer

    def _positional_names(self, layer: Layer) -> list[str]:
        if layer.op:
            return [a.name for a in layer.op.attrs if not a.keyword_only]
        return [p.name for p in layer.block.params]  # type: ignore[union-attr]

    def _config_names(self, layer: Layer) -> list[str]:
        if layer.op:
            return [a.name for a in layer.op.attrs]
        return [p.name for p in layer.block.params]  # type: ignore[union-attr]

    def _input_names(self, layer: Layer) -> list[str]:
        if layer.op:
            return list(layer.op.inputs)
        return list(self._block_inputs(layer.block))  # type: ignore[arg-type]

    def _block_inputs(self, block: ast.BlockDef) -> tuple[str, ...]:
        """The input names of ``block``, found once per block rather than once per instance."""
        names = self.inputs_of.get(block.name)
        if names is None:
            names = self.inputs_of[block.name] = tuple(s.name for s in block.body if isinstance(s, ast.Input))
        return names

    def _signature(self, layer: Layer) -> str:
        if layer.op:
            parts = []
            for a in layer.op.attrs:
                parts.append(a.name if a.default is REQUIRED else f"{a.name}={_fmt_default(a.default)}")
            return f"{layer.name}({', '.join(parts)})"
        ps = [p.name for p in layer.block.params]  # type: ignore[union-attr]
        return f"{layer.name}({', '.join(ps)})"

    def _builtin(self, name: str, e: ast.Call, frame: Frame) -> Any:
        args = [self.eval(a.value, frame) for a in e.args]
        if any(a.name for a in e.args):
            raise self.err("bad-argument", f"`{name}` takes no keyword arguments", e.span, frame)

        def want(n: int) -> None:
            if len(args) != n:
                raise self.err("bad-argument", f"`{name}` takes {n} argument(s), got {len(args)}", e.span, frame)

        if name in ("channels", "rank", "size"):
            want(1 if name != "size" else 2)
            t = args[0]
            if not isinstance(t, Tensor) or not isinstance(t.type, TensorType):
                if isinstance(t, Symbol):
                    raise self.unknown_name(t, frame)
                raise self.err("type-mismatch", f"`{name}` needs a tensor, got {describe(t)}", e.args[0].span, frame)
            if name == "rank":
                return t.type.rank
            if name == "channels":
                if t.type.rank == 0:
                    raise self.err("type-mismatch", "a scalar has no channels", e.args[0].span, frame)
                return t.type.features
            i = args[1]
            if isinstance(i, bool) or not isinstance(i, int):
                raise self.err("bad-argument", f"`size`: the axis must be an integer, got {describe(i)}",
                               e.args[1].span, frame)
            if not -t.type.rank <= i < t.type.rank:
                raise self.err("bad-argument", f"`size`: axis {i} out of range for {t.type}", e.args[1].span, frame)
            return t.type.shape[i]
        if name in ("min", "max"):
            if len(args) < 1 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise self.err("type-mismatch", f"`{name}` takes numbers", e.span, frame)
            return min(args) if name == "min" else max(args)
        if name in ("int", "float"):
            want(1)
            if not isinstance(args[0], (int, float)) or isinstance(args[0], bool):
                raise self.err("type-mismatch", f"`{name}` takes a number, got {describe(args[0])}", e.span, frame)
            return self.number(int(args[0]) if name == "int" else float(args[0]), e.span, frame)
        want(1)
        if not isinstance(args[0], list):
            raise self.err("type-mismatch", f"`len` takes a list, got {describe(args[0])}", e.span, frame)
        return len(args[0])

    # ---- pipelines ----------------------------------------------------------------------------

    def _stage(self, value: Any, span: Span, stage: ast.Stage, frame: Frame, container: Container) -> Any:
        x = self.tensor(value, span, frame, "the input of a pipeline stage")
        count = 1
        if stage.repeat is not None:
            n = self.eval(stage.repeat, frame)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise self.err("bad-repeat", f"repeat count must be a positive integer, got {describe(n)}",
                               stage.repeat.span, frame)
            if n > MAX_REPEAT:
                raise self.err("bad-repeat", f"repeat count {n} is too large (at most {MAX_REPEAT})",
                               stage.repeat.span, frame)
            count = n
        if stage.label is not None:
            check_identifier(stage.label, stage.label_span, "a layer name", module_attr=True)
            if stage.label in container.taken:
                container.claim(stage.label, stage.label_span)  # raises duplicate-name at the label
        if stage.label is not None and (stage.repeat is not None or isinstance(stage.core, ast.StageGroup)):
            seq = self._open_seq(stage.label, stage.label_span, stage.span, container)
            first = x
            for _ in range(count):
                self.step(stage.span, frame)
                x = self.tensor(x, stage.span, frame, "the input of a repeated stage")
                if stage.repeat is not None and isinstance(stage.core, ast.StageGroup) and len(stage.core.stages) > 1:
                    inner = self._open_seq(None, stage.span, stage.span, seq)
                    before = x
                    x = self._core(x, stage.core, frame, inner, None)
                    self._record_seq(inner, before, x, frame.hint)
                else:
                    x = self._core(x, stage.core, frame, seq, None)
            self._record_seq(seq, first, x, frame.hint)
            return x
        for _ in range(count):
            self.step(stage.span, frame)
            x = self.tensor(x, stage.span, frame, "the input of a repeated stage")
            if container.kind == "seq" and isinstance(stage.core, ast.StageGroup) and len(stage.core.stages) > 1:
                inner = self._open_seq(stage.label, stage.label_span or stage.span, stage.span, container)
                before = x
                x = self._core(x, stage.core, frame, inner, None)
                self._record_seq(inner, before, x, frame.hint)
            else:
                x = self._core(x, stage.core, frame, container, stage.label, label_span=stage.label_span)
        return x

    def _record_seq(self, seq: Container, x: Any, y: Any, hint: str | None) -> None:
        if not isinstance(y, Tensor):
            raise self.err("bad-group", "a labelled group must produce one tensor", seq.scope[-1].span, None)
        scope = seq.scope[-1]
        self.graph.calls[f"{scope.path}#{scope.call}"] = ((x.vid,), (y.vid,), ("x",), hint)  # type: ignore[union-attr]

    def _use(self, path: str) -> int:
        """The number of this application of the module at ``path``: 0, or more inside a shared instance."""
        n = self.uses.get(path, 0)
        self.uses[path] = n + 1
        return n

    def _open_seq(self, label: str | None, label_span: Span, span: Span, parent: Container) -> Container:
        name = parent.name_for(label, label_span if label is not None else span, "seq")
        assert name is not None
        path = ".".join([s.name for s in parent.scope] + [name])
        scope = Scope(name, path, "seq", None, (), self._use(path), span)
        return Container(parent.scope + (scope,), "seq", parent.chain + (path,))

    def _core(self, x: Tensor, core: Any, frame: Frame, container: Container, label: str | None,
              label_span: Span | None = None) -> Any:
        if isinstance(core, ast.StageGroup):
            if label is not None and len(core.stages) == 1 and core.stages[0].label is None \
                    and core.stages[0].repeat is None:
                return self._core(x, core.stages[0].core, frame, container, label, label_span=label_span)
            v: Any = x
            for s in core.stages:
                v = self._stage(v, s.span, s, frame, container)
            return v
        if isinstance(core, ast.StageName):
            target = self._lookup(core.name, core.span, frame, callee=True)
            if isinstance(target, Instance):
                if label is not None:
                    raise self.err("bad-name", f"instance `{target.name}` already has a name", label_span or core.span,
                                   frame, hint="a label names a new layer; shared instances keep their own name")
                return self.apply_instance(target, [x], core.span, frame, container)
            if isinstance(target, Layer):
                self._check_label(target, label, label_span or core.span, frame)
                layer = Layer(target.op, target.block, {}, [], {}, [], core.span)
                return self.apply(layer, [x], core.span, frame, container, label)
            if isinstance(target, Symbol):
                raise self.err("unknown-layer", f"unknown layer or block `{core.name}`", core.span, frame,
                               hint=suggest(core.name, self._known_names(frame)))
            raise self.err("not-a-layer", f"`{core.name}` is {describe(target)}, not a layer", core.span, frame,
                           hint="a pipeline stage is a layer, a block or a named instance")
        assert isinstance(core, ast.StageCall)
        target = self._lookup(core.name, core.name_span, frame, callee=True)
        if isinstance(target, Symbol):
            raise self.err("unknown-layer", f"unknown layer or block `{core.name}`", core.name_span, frame,
                           hint=suggest(core.name, self._known_names(frame)))
        if isinstance(target, Instance):
            raise self.err("not-callable", f"instance `{core.name}` is already configured", core.span, frame,
                           hint=f"use `-> {core.name}` to apply it")
        if not isinstance(target, Layer):
            raise self.err("not-a-layer", f"`{core.name}` is {describe(target)}, not a layer", core.name_span, frame)
        self._check_label(target, label, label_span or core.name_span, frame)
        layer = self._bind_args(target, core.args, core.span, frame)
        return self.apply(layer, [x], core.span, frame, container, label)

    def _check_label(self, target: Layer, label: str | None, span: Span, frame: Frame) -> None:
        """A label names a module; a merge (`add`, `concat`, ...) has none, it is an expression in `forward`."""
        if label is not None and target.op is not None and not target.op.module:
            raise self.err("bad-name", f"`{target.op.name}` makes no module, so the label `{label}` cannot name it",
                           span, frame, hint="drop the label; to name the result, assign it: "
                                             f"`{label} = ...`")

    # ---- application -----------------------------------------------------------------------

    def apply(self, layer: Layer, piped: list[Tensor], span: Span, frame: Frame, container: Container,
              label: str | None, instance: Instance | None = None) -> Any:
        if layer.block is not None:
            return self._apply_block(layer, piped, span, frame, container, label, instance)
        op = layer.op
        assert op is not None
        attrs = self._resolve_attrs(layer, frame)
        inputs = list(piped) + list(layer.pos_tensors)
        if op.variadic:
            if layer.tensors:
                raise self.err("unknown-argument", f"`{op.name}` takes its tensors by position", span, frame)
            if len(inputs) < 2:
                raise self.err("wrong-inputs", f"`{op.name}` needs at least two tensors, got {len(inputs)}",
                               span, frame)
        else:
            names = list(op.inputs)
            bound: dict[str, Tensor] = {}
            for n, t in zip(names, inputs):
                bound[n] = t
            if len(inputs) > len(names):
                raise self.err("wrong-inputs", f"`{op.name}` takes {len(names)} tensor input(s), got "
                               f"{len(inputs)}", span, frame)
            for n, t in layer.tensors.items():
                if n in bound:
                    raise self.err("duplicate-argument", f"tensor input `{n}` of `{op.name}` given twice", span,
                                   frame)
                bound[n] = t
            missing = [n for n in names if n not in bound and n not in op.optional_inputs]
            if missing:
                raise self.err("wrong-inputs", f"`{op.name}` needs the tensor input `{missing[0]}`", span, frame)
            inputs = []
            for n in names:
                if n in bound:
                    inputs.append(bound[n])
                elif any(m in bound for m in names[names.index(n) + 1:]):
                    raise self.err("wrong-inputs", f"`{op.name}`: give `{n}` too when giving later inputs", span,
                                   frame)
        if instance is not None:
            name: str | None = instance.name
        else:
            name = container.name_for(label, span, op.name if op.stateful else None)
        if container.kind == "seq" and len(inputs) != 1:
            raise self.err("bad-group", f"`{op.name}` with several inputs cannot be part of a labelled group",
                           span, frame, hint="labelled groups and repeats become nn.Sequential: one input each")
        if container.kind == "seq" and op.name in _NOT_IN_SEQ:
            # their torch modules return tuples or need several arguments, so nn.Sequential cannot chain them
            raise self.err("bad-group", f"`{op.name}` cannot be part of a labelled group", span, frame,
                           hint="labelled groups and repeats become nn.Sequential; apply it outside the group")
        node = self.emit_node(op.name, inputs, attrs, None, span, container, name, frame.hint, frame,
                              attr_spans={k: sp for k, (_, sp) in layer.config.items()})
        outs = [Tensor(v, t) for v, t in zip(node.outputs, node.types)]
        if container.kind == "seq" and len(outs) != 1:
            raise self.err("bad-group", f"`{op.name}` with several outputs cannot be part of a labelled group",
                           span, frame)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def apply_instance(self, inst: Instance, tensors: list[Tensor], span: Span, frame: Frame,
                       container: Container) -> Any:
        if container is not inst.container:
            raise self.err("bad-group", f"shared instance `{inst.name}` cannot be applied inside a labelled group",
                           span, frame, hint="apply it outside the group, or use a fresh layer inside")
        types = [t.type for t in tensors]
        if inst.input_types is not None and types != inst.input_types:
            got = ", ".join(map(str, types))
            first = ", ".join(map(str, inst.input_types))
            raise self.err("shape-mismatch", f"shared instance `{inst.name}` was first applied to {first}, "
                           f"now to {got}", span, frame,
                           hint="one set of weights needs inputs of one shape")
        inst.input_types = types
        return self.apply(inst.layer, tensors, span, frame, container, None, instance=inst)

    def _apply_block(self, layer: Layer, piped: list[Tensor], span: Span, frame: Frame, container: Container,
                     label: str | None, instance: Instance | None) -> Any:
        block = layer.block
        assert block is not None
        # an instance builds its scope path and chain, as long as it is deep: it costs a step per level
        self.step(span, frame, cost=1 + self.depth)
        if self.depth > 64:
            if block.name in self.blocks:
                first = self.blocks.index(block.name)
                cycle = " > ".join(self.blocks[first:first + self.blocks[first + 1:].index(block.name) + 1]
                                   if block.name in self.blocks[first + 1:] else self.blocks[first:])
                msg = f"block `{block.name}` keeps instantiating itself ({cycle} > {block.name} > ...)"
            else:
                msg = f"blocks nest more than 64 deep at `{block.name}`"
            raise _short_chain(self.err("recursion", msg, span, frame, hint="a block may use itself only under an "
                                        "`if` whose condition ends the recursion"))
        names = self._block_inputs(block)
        inputs = list(piped) + list(layer.pos_tensors)
        for n, t in layer.tensors.items():
            if n not in names:
                raise self.err("unknown-argument", f"block `{block.name}` has no input `{n}`", span, frame)
            idx = names.index(n)
            while len(inputs) <= idx:
                inputs.append(None)  # type: ignore[arg-type]
            if inputs[idx] is not None:
                raise self.err("duplicate-argument", f"input `{n}` given twice", span, frame)
            inputs[idx] = t
        if len(inputs) != len(names) or any(t is None for t in inputs):
            raise self.err("wrong-inputs", f"block `{block.name}` takes {len(names)} input(s) "
                           f"({', '.join(names)}), got {len([t for t in inputs if t is not None])}", span, frame)
        if container.kind == "seq" and len(inputs) != 1:
            raise self.err("bad-group", f"block `{block.name}` with several inputs cannot be part of a labelled group",
                           span, frame, hint="labelled groups and repeats become nn.Sequential: one input each")
        name = instance.name if instance is not None else container.name_for(label, span, snake(block.name))
        assert name is not None
        inner_frame = Frame(block, {}, Container((), "block", ()))
        args = self._bind_block_params(layer, inner_frame, frame)
        self.step(span, frame, cost=sum(_weight(v) for v in args.values()))  # the instance keeps its arguments
        path = ".".join([s.name for s in container.scope] + [name])
        call = self._use(path)
        scope = Scope(name, path, "block", block.name, tuple(args.items()), call, span)
        inner_frame.container = Container(container.scope + (scope,), "block",
                                          container.chain + (f"{path} ({block.name})",))
        self.depth += 1
        self.blocks.append(block.name)
        try:
            result = self._body(inner_frame, inputs, is_network=False)
        finally:
            self.depth -= 1
            self.blocks.pop()
        if container.kind == "seq" and len(result) != 1:
            raise self.err("bad-group", f"block `{block.name}` with several results cannot be part of a labelled "
                           "group", span, frame,
                           hint="labelled groups and repeats become nn.Sequential: one result each")
        self.graph.blocks.setdefault(block.name, block.name_span)
        self.graph.calls[f"{path}#{call}"] = (tuple(t.vid for t in inputs), tuple(t.vid for t in result),
                                              tuple(names), frame.hint)
        return result[0] if len(result) == 1 else tuple(result)

    def _bind_block_params(self, layer: Layer, inner: Frame, outer: Frame) -> dict[str, Any]:
        block = layer.block
        assert block is not None
        bound: dict[str, Any] = {}
        for p in block.params:
            if p.name in layer.config:
                v, sp = layer.config[p.name]
                value = self._coerce_param(p, v, sp, frame=outer)
            elif p.default is not None:
                value = self._coerce_param(p, self.eval(p.default, inner), p.default.span, frame=inner)
            else:
                raise self.err("missing-argument", f"block `{block.name}` needs the argument `{p.name}`",
                               layer.span, outer, hint=f"its parameters are {self._signature(layer)}")
            inner.names[p.name] = value
            bound[p.name] = value
        return bound

    def _coerce_param(self, p: ast.Param, v: Any, span: Span, frame: Frame | None = None,
                      source: str = "argument") -> Any:
        ok = False
        if p.type == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif p.type == "float":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            v = float(v) if ok else v
        elif p.type == "bool":
            ok = isinstance(v, bool)
        elif p.type == "str":
            if isinstance(v, Symbol):
                v = v.name
            elif isinstance(v, Layer) and not v.config and not v.has_tensors:
                v = v.name
            ok = isinstance(v, str)
        elif p.type == "list":
            ok = isinstance(v, list)
        if not ok:
            msg = f"parameter `{p.name}` is {p.type}, got {describe(v)}"
            chain = frame.container.chain if frame else ()
            raise DlcError("type-mismatch", msg if source == "argument" else f"{msg} (from --set/--params)", span,
                           chain=chain if len(chain) > 1 else ())
        return v

    def _resolve_attrs(self, layer: Layer, frame: Frame) -> dict[str, Any]:
        op = layer.op
        assert op is not None
        out: dict[str, Any] = {}
        for a in op.attrs:
            if a.name in layer.config:
                v, sp = layer.config[a.name]
                out[a.name] = self._coerce_attr(op, a, v, sp, frame)
            elif a.default is REQUIRED:
                raise self.err("missing-argument", f"`{op.name}` needs the argument `{a.name}`", layer.span, frame,
                               hint=f"its arguments are {self._signature(layer)}")
            else:
                out[a.name] = a.default
        return out

    def _coerce_attr(self, op: OpDef, a: Attr, v: Any, span: Span, frame: Frame) -> Any:
        def bad(expected: str) -> DlcError:
            hint = suggest(v.name, self._known_names(frame)) if isinstance(v, Symbol) else None
            got = describe(v)
            if isinstance(v, list):  # say which item is wrong, or show the numbers
                odd = next(((i, x) for i, x in enumerate(v) if not is_int(x)), None)
                if not v:
                    got = "an empty list"
                elif odd is not None:
                    got = f"a list whose item {odd[0]} is {describe(odd[1])}"
                else:
                    got = f"the list [{', '.join(map(str, v))}]" if len(v) <= 8 else f"a list of {len(v)} integers"
            return self.err("bad-argument", f"`{op.name}`: `{a.name}` must be {expected}, got {got}",
                            span, frame, hint=hint)

        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if isinstance(v, tuple) and v and v[0] == "builtin":
            raise bad("a value")
        if v is None and a.default is None:
            return None
        kind = a.kind
        if kind == "int":
            if not is_int(v):
                raise bad("an integer")
            if a.out_of_range(v):
                raise bad(a.range_text(values=(v,)))
            return v
        if kind == "float":
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise bad("a number")
            if abs(v) > MAX_FLOAT_ARG:
                raise bad(f"a number of magnitude at most {MAX_FLOAT_ARG:.4g} (a float32)")
            return float(v)
        if kind == "bool":
            if not isinstance(v, bool):
                raise bad("true or false")
            return v
        if kind == "enum":
            name = v.name if isinstance(v, (Symbol, Layer)) and not (isinstance(v, Layer) and v.config) else v
            if not isinstance(name, str) or name not in a.choices:
                given = f"`{name}`" if isinstance(name, str) else describe(v)
                raise self.err("bad-argument", f"`{op.name}`: `{a.name}` must be one of "
                               f"{', '.join(a.choices)}; got {given}", span, frame,
                               hint=suggest(name, a.choices) if isinstance(name, str) else None)
            return name
        if kind in ("int2", "pad", "pool_size"):
            if kind == "pad" and isinstance(v, (Symbol, str)) and (v.name if isinstance(v, Symbol) else v) == "same":
                return "same"
            if kind == "pool_size" and isinstance(v, (Symbol, str)) and \
                    (v.name if isinstance(v, Symbol) else v) == "global":
                return "global"
            if is_int(v):
                if a.out_of_range(v):
                    raise bad(a.range_text(values=(v,)))
                return v
            if isinstance(v, list) and v and all(is_int(x) for x in v):
                if any(a.out_of_range(x) for x in v):
                    raise bad(f"a list of {a.range_text(plural=True, values=tuple(v))}")
                return list(v)
            extra = {"pad": " or `same`", "pool_size": " or `global`"}.get(kind, "")
            raise bad(f"an integer or a list of integers{extra}")
        if kind == "ints":
            if not isinstance(v, list) or not all(is_int(x) for x in v):
                raise bad("a list of integers")
            if any(a.out_of_range(x) for x in v):
                raise bad(f"a list of {a.range_text(plural=True, values=tuple(v))}")
            return list(v)
        if kind == "str":
            if isinstance(v, Symbol):
                return v.name
            if not isinstance(v, str):
                raise bad("a string")
            return v
        if kind == "layer":
            if isinstance(v, Layer) and v.block is not None:
                raise self.err("bad-argument", f"`{op.name}` wraps a built-in layer, not the block `{v.name}`", span,
                               frame)
            if not isinstance(v, Layer) or v.op is None or v.has_tensors:
                raise bad(f"a layer such as `{'lstm(64)' if op.name == 'bidirectional' else 'linear(64)'}`")
            allowed = ("rnn", "lstm", "gru") if op.name == "bidirectional" else None
            if allowed and v.op.name not in allowed:
                raise self.err("bad-argument", f"`bidirectional` wraps rnn, lstm or gru, not `{v.op.name}`", span,
                               frame)
            if op.name == "timedistributed" and v.op.name == "timedistributed":
                raise self.err("bad-argument", "`timedistributed` cannot wrap another `timedistributed`", span,
                               frame, hint="fold the extra axis first, e.g. with `reshape`")
            if op.name == "timedistributed" and (not v.op.stateful and v.op.family not in ("activation", "pool")
                                                 or len(v.op.inputs) != 1 or v.op.variadic):
                raise self.err("bad-argument", f"`timedistributed` wraps a single-input layer, not `{v.op.name}`",
                               span, frame)
            inner = self._resolve_attrs(v, frame)
            return {"op": v.op.name, **inner}
        raise AssertionError(kind)

    # ---- nodes ---------------------------------------------------------------------------------

    def emit(self, op: str, inputs: list[Tensor], attrs: dict[str, Any], span: Span, frame: Frame) -> Tensor:
        opdef = get(op)
        assert opdef is not None
        full = {a.name: a.default for a in opdef.attrs if a.default is not REQUIRED}
        full.update(attrs)
        node = self.emit_node(op, inputs, full, None, span, frame.container, None, frame.hint, frame)
        return Tensor(node.outputs[0], node.types[0])

    def emit_node(self, op: str, inputs: list[Tensor], attrs: dict[str, Any], types: tuple[Type, ...] | None,
                  span: Span, container: Container, name: str | None, hint: str | None,
                  frame: Frame | None = None, attr_spans: dict[str, Span] | None = None) -> Node:
        g = self.graph
        assert g is not None
        if types is None:
            opdef = get(op)
            assert opdef is not None
            try:
                types = tuple(opdef.infer(attrs, [t.type for t in inputs]))
            except ShapeError as exc:
                # underline the argument the problem is about when the spec wrote it
                where = (attr_spans or {}).get(exc.attr, span) if exc.attr else span
                chain = container.chain + ((name,) if name else ())
                raise DlcError(exc.code, exc.message, where, hint=exc.hint,
                               chain=chain if len(chain) > 1 else ()) from None
        if len(g.nodes) >= self.max_nodes:
            raise _short_chain(DlcError(
                "too-large", f"the network has more than {self.max_nodes:,} layers", span,
                chain=container.chain if len(container.chain) > 1 else (),
                hint="check repeat counts (`* n`) and recursive blocks; if the network really is that large, "
                     "raise the limit with the environment variable DLC_MAX_NODES"))
        if container.scope:  # every command writes a layer's module path: a long one costs steps to match
            self.step(span, frame, cost=len(container.scope[-1].path) // TEXT_PER_STEP)
        for t in types:
            problem = size_problem(t)
            if problem is not None:
                raise self._too_large(problem, span, container, name)
        opdef = get(op)
        if opdef is not None and opdef.stateful and name is not None:
            count = opdef.count_params(attrs, [t.type for t in inputs])
            if count > MAX_ELEMENTS:
                raise self._too_large(f"`{op}` would have more than {MAX_ELEMENTS} parameters", span, container,
                                      name)
        first = next(reversed(g.types)) + 1 if g.types else 0  # values are numbered in order: O(1), not max()
        outs = tuple(range(first, first + len(types)))
        node = Node(len(g.nodes), op, tuple(t.vid for t in inputs), outs, attrs, types, span, container.scope, name,
                    hint)
        for v, t in zip(outs, types):
            g.types[v] = t
        g.nodes.append(node)
        return node

    def _too_large(self, problem: str, span: Span, container: Container, name: str | None) -> DlcError:
        chain = container.chain + ((name,) if name else ())
        return _short_chain(DlcError("too-large", problem, span, chain=chain if len(chain) > 1 else (),
                                     hint="sizes and parameter counts must fit in 64 bits"))

    # ---- helpers ---------------------------------------------------------------------------------

    def tensor(self, v: Any, span: Span, frame: Frame, what: str) -> Tensor:
        if isinstance(v, Tensor):
            return v
        if isinstance(v, Symbol):
            raise self.unknown_name(v, frame)
        if isinstance(v, tuple) and len(v) > 1 and isinstance(v[0], Tensor):
            raise self.err("tuple-mismatch", f"{what} must be one tensor, got {len(v)} values", span, frame,
                           hint="unpack it first: `a, b = ...`")
        if isinstance(v, (Layer, Instance)):
            raise self.err("type-mismatch", f"{what} must be a tensor, got {describe(v)}", span, frame,
                           hint="apply the layer to a tensor: `x -> layer` or `layer(x)`")
        raise self.err("type-mismatch", f"{what} must be a tensor, got {describe(v)}", span, frame)

    def unknown_name(self, sym: Symbol, frame: Frame) -> DlcError:
        return self.err("unknown-name", f"unknown name `{sym.name}`", sym.span, frame,
                        hint=suggest(sym.name, self._known_names(frame)))

    def err(self, code: str, message: str, span: Span | None, frame: Frame | None, hint: str | None = None
            ) -> DlcError:
        chain = frame.container.chain if frame is not None else ()
        return DlcError(code, message, span, hint=hint, chain=chain if len(chain) > 1 else ())


def _short_chain(e: DlcError) -> DlcError:
    """Keep a deep chain of block instances readable: its first three and its last."""
    if len(e.chain) > 6:
        e.chain = e.chain[:3] + ("...",) + e.chain[-1:]
    return e


def _weight(v: Any) -> int:
    """Steps to copy a block argument into an instance (and into every output that lists the instance)."""
    if isinstance(v, str):
        return len(v) // TEXT_PER_STEP
    if isinstance(v, list):
        return len(v) + sum(_weight(x) for x in v)
    return 0


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


def _fmt_default(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def elaborate(program: Program, network: str | None = None, overrides: dict[str, Any] | None = None) -> Graph:
    """Elaborate the chosen network of ``program`` into an IR graph."""
    el = Elaborator(program)
    try:
        return el.network(network, overrides or {})
    except RecursionError:
        span, frame = el.where if el.where else (None, None)
        raise el.err("too-deep", "the spec nests too deeply to compile (blocks within blocks within deep "
                     "expressions)", span, frame, hint="flatten deep expressions with intermediate names") from None
    except OverflowError:  # numbers are bounded where they are made (MAX_INT); kept so a slip is no traceback
        span, frame = el.where if el.where else (None, None)
        raise el.err("bad-number", "a number in this statement is too large", span, frame) from None
