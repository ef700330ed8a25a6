"""Lowering layer applications to IR nodes: calls, pipelines, labelled groups, block instances.

An op applied to tensors becomes one node (:mod:`.nodes`); a block instance gets a module attribute
(:mod:`.naming`), its parameters bound (:mod:`.binding`) and its body elaborated by the :class:`Bodies` it was
given (the statements, :mod:`.elaborate`); a labelled group or a repeat becomes a container of its own. Each
application of a block or group is recorded in ``graph.calls`` with its inputs and outputs.
"""

from __future__ import annotations

from typing import Any, Protocol

from dlc.compiler.binding import Binder
from dlc.compiler.context import TEXT_PER_STEP, Context, Frame, short_chain
from dlc.compiler.expressions import Evaluator
from dlc.compiler.external import Externs
from dlc.compiler.ir import BlockCall, Scope, call_key
from dlc.compiler.kinds import applies_per_step
from dlc.compiler.names import RESERVED_ATTRS, check_identifier
from dlc.compiler.naming import Container, snake
from dlc.compiler.nodes import Nodes
from dlc.compiler.ops.initialisers import INITIALISERS, InitError, make_init
from dlc.compiler.ops.registry import known_as
from dlc.compiler.values import Init, Instance, Layer, Symbol, Tensor, describe
from dlc.diagnostics import DlcError, Span, suggest
from dlc.grammar import ast

# One repeat (`x -> layer * n`) is at most this long; the work of a whole compile is bounded by the limits
# MAX_STEPS and MAX_NODES (dlc.limits), which a big but sane network can reach and a user can raise.
MAX_REPEAT = 10_000
# In a label, the number of the copy of a repeat: `encoder_layer_{i}: Block(8) * n`.
PATTERN = "{i}"


class Bodies(Protocol):
    """What elaborates a block instance's body for the lowering."""

    def block_body(self, frame: Frame, inputs: list[Tensor]) -> list[Tensor]:
        """Elaborate the body of ``frame``'s block with ``inputs``; its returned tensors."""


class Lowerer:
    """Applies layers for one elaboration; the evaluator's calls and pipelines come here."""

    def __init__(self, ctx: Context, ev: Evaluator, binder: Binder, nodes: Nodes, bodies: Bodies) -> None:
        self.ctx = ctx
        self.ev = ev
        self.binder = binder
        self.nodes = nodes
        self.bodies = bodies
        self.externs = Externs(ctx, ev, binder, nodes)
        ev.layers = self

    def call(self, e: ast.Call, frame: Frame) -> Any:
        """The value of a call: a configured layer, or (given tensors) what applying it gives."""
        f = self.ev.lookup(e.func.id, e.func.span, frame, callee=True, args=e.args) if isinstance(e.func, ast.Name) \
            else self.ev.eval(e.func, frame)
        if isinstance(f, Symbol) and f.name in INITIALISERS:
            return self._initialiser(f.name, e, frame)
        if isinstance(f, Symbol):
            raise self._unknown_layer(f.name, f.span, frame)
        if isinstance(f, tuple) and f and f[0] == "builtin":
            return self.ev.builtin(f[1], e, frame)
        if isinstance(f, Instance):
            if not all(a.name is None for a in e.args):
                raise self.ctx.err("bad-argument", f"instance `{f.name}` is already configured; pass only tensors",
                                   e.span, frame)
            tensors = [self.ev.tensor(self.ev.eval(a.value, frame), a.span, frame, "an argument") for a in e.args]
            return self.apply_instance(f, tensors, e.span, frame, frame.container)
        if not isinstance(f, Layer):
            raise self.ctx.err("not-callable", f"{describe(f)} cannot be called", e.func.span, frame)
        if f.config or f.tensors or f.pos_tensors:
            raise self.ctx.err("not-callable", f"`{f.name}(...)` is already configured", e.span, frame,
                               hint="bind it to a name first: `l = layer(...)`, then `l(x)`")
        body = self._step_body(f, e.args[:1], frame) if len(e.args) == 2 and e.args[1].name is None else None
        if body is not None:  # `timedistributed(Block(8), x)`
            x = self.ev.tensor(self.ev.eval(e.args[1].value, frame), e.args[1].span, frame, "an argument")
            return self._time_distributed(x, body, e.span, frame, frame.container, self._assigned_name(e, f, frame))
        layer = self.binder.bind_args(f, e.args, e.span, frame)
        if layer.has_tensors:
            return self.apply(layer, [], e.span, frame, frame.container, self._assigned_name(e, layer, frame))
        return layer

    def _initialiser(self, name: str, e: ast.Call, frame: Frame) -> Init:
        """An initialiser call (``normal(std=0.02)``): a value for ``weight_init=`` or a ``param``."""
        args = []
        for a in e.args:
            v = self.ev.eval(a.value, frame)
            # `mode=fan_out`, `nonlinearity=relu`: a bare word (a name, or an op's without arguments)
            word = isinstance(v, Symbol) or (isinstance(v, Layer) and not v.config and not v.has_tensors)
            args.append((a.name, v.name if word else v))
        try:
            return Init(tuple(make_init(name, args).items()))
        except InitError as exc:
            where = e.args[exc.index].span if exc.index is not None else e.span
            raise self.ctx.err("bad-argument", exc.message, where, frame, hint=exc.hint) from None

    def _assigned_name(self, e: ast.Call, layer: Layer, frame: Frame) -> str | None:
        """`ctx = attention(query=q, key=k, value=v)`: the assignment names the layer it applies."""
        if e is not frame.naming_call or frame.hint is None or frame.container.kind == "seq" or "," in frame.hint:
            return None
        if layer.op is not None and not layer.op.stateful:
            return None
        name = frame.hint
        if name in frame.container.taken or name in RESERVED_ATTRS:
            return None
        return name

    def pipe(self, e: ast.Pipe, frame: Frame) -> Any:
        """The value of a pipeline `head -> stage -> ...`: each stage applied to the value before it."""
        v = self.ev.eval(e.head, frame)
        for stage in e.stages:
            v = self._stage(v, e.head.span if v is None else stage.span, stage, frame, frame.container)
        return v

    def _stage(self, value: Any, span: Span, stage: ast.Stage, frame: Frame, container: Container) -> Any:
        if stage.checkpoint is not None:
            return self._checkpointed(value, span, stage, frame, container)
        return self._plain_stage(value, span, stage, frame, container)

    def _checkpointed(self, value: Any, span: Span, stage: ast.Stage, frame: Frame, container: Container) -> Any:
        """A stage marked `checkpoint`: the block instances or labelled group it makes, the modules of
        ``container`` that generated code calls, are recorded for recomputation in backward."""
        assert stage.checkpoint is not None
        if container.kind == "seq":  # nn.Sequential calls its children itself: no forward of ours to wrap them
            raise self.ctx.err("bad-checkpoint", "`checkpoint` inside a labelled group: nn.Sequential calls its "
                               "members itself", stage.checkpoint, frame,
                               hint="mark the whole group: `name: checkpoint (...)`, or make the member a block")
        g = self.ctx.g
        first = len(g.nodes)
        result = self._plain_stage(value, span, stage, frame, container)
        depth = len(container.scope)
        made = g.nodes[first:]
        loose = next((n for n in made if len(n.scope) == depth), None)
        if loose is not None or not made:
            what = f"`{loose.op}` is a layer" if loose is not None else "it makes no layer"
            raise self.ctx.err("bad-checkpoint", f"`checkpoint` recomputes a block instance, a labelled group or a "
                               f"repeat of them; {what}", stage.checkpoint, frame,
                               hint="wrap the layers in a labelled group: `name: checkpoint (conv2d(64, k=3) -> "
                                    "relu)`, or in a block")
        g.checkpointed.update(call_key(n.scope[depth]) for n in made)
        return result

    def _plain_stage(self, value: Any, span: Span, stage: ast.Stage, frame: Frame, container: Container) -> Any:
        if self._carried(value) and not isinstance(stage.core, ast.StageGroup):
            return self._carry(value, stage, frame, container)
        x = self.ev.tensor(value, span, frame, "the input of a pipeline stage")
        count = self._count(stage, frame)
        if stage.label is not None and PATTERN in stage.label:
            return self._named_copies(x, stage, count, frame, container)
        if stage.label is not None:
            check_identifier(stage.label, stage.label_span, "a layer name", module_attr=True, label=True)
            if stage.label in container.taken:
                container.claim(stage.label, stage.label_span)  # raises duplicate-name at the label
        if stage.label is not None and (stage.repeat is not None or isinstance(stage.core, ast.StageGroup)):
            seq = self._open_seq(stage.label, stage.label_span, stage.span, container)
            first = x
            for _ in range(count):
                self.ctx.step(stage.span, frame)
                x = self.ev.tensor(x, stage.span, frame, "the input of a repeated stage")
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
            self.ctx.step(stage.span, frame)
            x = self.ev.tensor(x, stage.span, frame, "the input of a repeated stage")
            # inside a labelled group, parentheses make a nested Sequential, around one stage too (a stage of
            # torchvision's EfficientNet holds one MBConv: `features.1.0`)
            if container.kind == "seq" and isinstance(stage.core, ast.StageGroup):
                inner = self._open_seq(stage.label, stage.label_span or stage.span, stage.span, container)
                before = x
                x = self._core(x, stage.core, frame, inner, None)
                self._record_seq(inner, before, x, frame.hint)
            else:
                x = self._core(x, stage.core, frame, container, stage.label, label_span=stage.label_span)
        return x

    def _named_copies(self, x: Tensor, stage: ast.Stage, count: int, frame: Frame, container: Container) -> Any:
        """``encoder_layer_{i}: Block(8) * n``: the copies of a repeat as layers of ``container`` named by the
        pattern (``encoder_layer_0``, ...), as torchvision names ViT's layers; a group's copies are Sequentials."""
        if stage.repeat is None:
            raise self.ctx.err("bad-name", f"`{{i}}` in the label `{stage.label}` numbers the copies of a repeat, "
                               "but this stage is not repeated", stage.label_span, frame,
                               hint=f"repeat it: `{stage.label}: layer * n`")
        core = stage.core
        v: Any = x
        for i in range(count):
            self.ctx.step(stage.span, frame)
            label = self._copy_label(stage, i)
            v = self.ev.tensor(v, stage.span, frame, "the input of a repeated stage")
            if isinstance(core, ast.StageGroup) and len(core.stages) > 1:
                inner = self._open_seq(label, stage.label_span or stage.span, stage.span, container)
                before = v
                v = self._core(v, core, frame, inner, None)
                self._record_seq(inner, before, v, frame.hint)
            else:
                v = self._core(v, core, frame, container, label, label_span=stage.label_span)
        return v

    @staticmethod
    def _copy_label(stage: ast.Stage, i: int) -> str:
        """The label of copy ``i`` of a repeat labelled by a pattern, checked as a module name."""
        assert stage.label is not None and stage.label_span is not None
        label = stage.label.replace(PATTERN, str(i))
        check_identifier(label, stage.label_span, "a layer name", module_attr=True, label=True)
        return label

    @staticmethod
    def _carried(value: Any) -> bool:
        """Whether ``value`` is several tensors that a stage receives as its first inputs (`(x, skip) -> B`)."""
        return isinstance(value, tuple) and len(value) > 1 and all(isinstance(t, Tensor) for t in value)

    def _carry(self, value: tuple, stage: ast.Stage, frame: Frame, container: Container) -> Any:
        """Apply ``stage`` to several tensors: they are its first inputs; repeated, each copy's results are the
        next copy's inputs, so they must keep their number and types."""
        if stage.label is not None and stage.repeat is not None:
            raise self.ctx.err("bad-group", "a labelled repeat cannot carry several tensors", stage.label_span,
                               frame, hint="labelled repeats become nn.Sequential: one tensor from copy to copy; "
                                           "drop the label to unroll it")
        count = self._count(stage, frame)
        first, v = value, value
        core = stage.core
        for i in range(count):
            self.ctx.step(stage.span, frame)
            if i > 0:
                self._check_carried(first, v, core, stage.repeat.span if stage.repeat else stage.span, frame)
            label = self._copy_label(stage, i) if stage.label is not None and PATTERN in stage.label else stage.label
            v = self._core(v, core, frame, container, label, label_span=stage.label_span)
        return v

    def _check_carried(self, first: tuple, now: Any, core: Any, span: Span, frame: Frame) -> None:
        """The results of a repeated stage's copy must be the tensors it received, in number and types."""
        target = self.ev.lookup(core.name, core.span, frame, callee=True)
        names = self.binder.block_inputs(target.block) if isinstance(target, Layer) and target.block else ()
        if not isinstance(now, tuple) or len(now) != len(first):
            n = len(now) if isinstance(now, tuple) else 1
            raise self.ctx.err("shape-mismatch", f"a repeat carrying {len(first)} tensors needs a stage returning "
                               f"{len(first)}, `{core.name}` returns {n}", span, frame)
        for i, (a, b) in enumerate(zip(first, now)):
            if a.type != b.type:
                what = f"`{names[i]}`" if i < len(names) else f"value {i + 1}"
                raise self.ctx.err("shape-mismatch", f"the repeat carries {what} as {a.type} but a copy of "
                                   f"`{core.name}` returns it as {b.type}", span, frame,
                                   hint="each copy's results are the next copy's inputs: they must keep their shapes")

    def _count(self, stage: ast.Stage, frame: Frame) -> int:
        """How many times ``stage`` is applied: its repeat count, checked, else 1."""
        if stage.repeat is None:
            return 1
        n = self.ev.eval(stage.repeat, frame)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise self.ctx.err("bad-repeat", f"repeat count must be a positive integer, got {describe(n)}",
                               stage.repeat.span, frame)
        if n > MAX_REPEAT:
            raise self.ctx.err("bad-repeat", f"repeat count {n} is too large (at most {MAX_REPEAT})",
                               stage.repeat.span, frame)
        return n

    def _record_seq(self, seq: Container, x: Any, y: Any, hint: str | None) -> None:
        if not isinstance(y, Tensor):
            raise self.ctx.err("bad-group", "a labelled group must produce one tensor", seq.scope[-1].span, None)
        scope = seq.scope[-1]
        side = seq.side or ()
        self.ctx.g.add_call(scope, BlockCall((x.vid,) + side, (y.vid,),  # type: ignore[union-attr]
                                             ("x",) + tuple(f"side{i}" for i in range(len(side))), hint))

    def _open_seq(self, label: str | None, label_span: Span, span: Span, parent: Container) -> Container:
        name = parent.name_for(label, label_span if label is not None else span, "seq")
        assert name is not None
        return self._enter_seq(name, span, parent)

    def _enter_seq(self, name: str, span: Span, parent: Container) -> Container:
        """The container of a new labelled group (an nn.Sequential) called ``name`` in ``parent``."""
        path = parent.path_of(name)
        return parent.enter(Scope(name, path, "seq", None, (), self.ctx.use(path), span), "seq", path)

    def _core(self, x: Tensor | tuple, core: Any, frame: Frame, container: Container, label: str | None,
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
            target = self.ev.lookup(core.name, core.span, frame, callee=True)
            if isinstance(target, Instance):
                if label is not None:
                    raise self.ctx.err("bad-name", f"instance `{target.name}` already has a name",
                                       label_span or core.span, frame,
                                       hint="a label names a new layer; shared instances keep their own name")
                return self.apply_instance(target, _piped(x), core.span, frame, container)
            if isinstance(target, Layer):
                self._check_label(target, label, label_span or core.span, frame)
                layer = Layer(target.op, target.block, {}, [], {}, [], core.span)
                return self.apply(layer, _piped(x), core.span, frame, container, label)
            if isinstance(target, Symbol):
                raise self._unknown_layer(core.name, core.span, frame)
            raise self.ctx.err("not-a-layer", f"`{core.name}` is {describe(target)}, not a layer", core.span, frame,
                               hint="a pipeline stage is a layer, a block or a named instance")
        assert isinstance(core, ast.StageCall)
        target = self.ev.lookup(core.name, core.name_span, frame, callee=True, args=core.args)
        if isinstance(target, Symbol):
            raise self._unknown_layer(core.name, core.name_span, frame)
        if isinstance(target, Instance):
            raise self.ctx.err("not-callable", f"instance `{core.name}` is already configured", core.span, frame,
                               hint=f"use `-> {core.name}` to apply it")
        if not isinstance(target, Layer):
            raise self.ctx.err("not-a-layer", f"`{core.name}` is {describe(target)}, not a layer", core.name_span,
                               frame)
        self._check_label(target, label, label_span or core.name_span, frame)
        body = self._step_body(target, core.args, frame)
        if body is not None:
            return self._time_distributed(x, body, core.span, frame, container, label, label_span)
        layer = self.binder.bind_args(target, core.args, core.span, frame)
        return self.apply(layer, _piped(x), core.span, frame, container, label)

    # ---- timedistributed over a block or a group ----------------------------------------------------------------

    def _step_body(self, wrapper: Layer, args: tuple[ast.Arg, ...],
                   frame: Frame) -> Layer | Instance | list[ast.Stage] | None:
        """What a per-step wrapper (``timedistributed``) given ``args`` applies, when it is not one built-in layer:
        a block (the block as a layer, its arguments bound), a shared instance or a group (its stages). None
        otherwise: the wrapper
        is an op with its layer as an argument. Only names are looked up here, so nothing is evaluated twice."""
        if wrapper.op is None or not applies_per_step(wrapper.op) or len(args) != 1 \
                or args[0].name not in (None, wrapper.op.attrs[0].name):
            return None
        e = args[0].value
        if isinstance(e, ast.Pipe):
            head = _as_stage(e.head)
            return [head, *e.stages] if head is not None else None
        stage = _as_stage(e)
        if stage is None:
            return None
        core = stage.core
        target = self.ev.lookup(core.name, core.span, frame, callee=True)
        if isinstance(target, Instance) and isinstance(core, ast.StageName):
            return target  # a shared instance: the same module at every step, and wherever else it is applied
        if not isinstance(target, Layer) or target.block is None:
            return None
        call_args = core.args if isinstance(core, ast.StageCall) else ()
        block = self.binder.bind_args(target, call_args, core.span, frame)
        if block.has_tensors:
            raise self.ctx.err("bad-argument", f"`{wrapper.op.name}` applies the block `{block.name}` to each time "
                               "step: give it compile-time arguments only", core.span, frame,
                               hint=f"the steps are its input: `x -> {wrapper.op.name}({block.name}(...))`")
        return block

    def _time_distributed(self, x: Any, body: Layer | Instance | list[ast.Stage], span: Span, frame: Frame,
                          container: Container, label: str | None, label_span: Span | None = None) -> Tensor:
        """``timedistributed`` of a block or group on ``x`` ([T, ...]): the time axis folded into the batch, the
        block (or the group, as an nn.Sequential) applied to every step at once, batch and time split again. The
        module is named by ``label`` (else ``timedistributed_N``), so its state_dict names are the block's or the
        group's under that name."""
        if container.kind == "seq":
            raise self.ctx.err("bad-group", "`timedistributed` cannot be part of a labelled group", span, frame,
                               hint="labelled groups and repeats become nn.Sequential; apply it outside the group")
        x = self.ev.tensor(x, span, frame, "the input of `timedistributed`")
        if isinstance(body, Layer) and not isinstance(body.block, ast.ExternDef):
            inputs = self.binder.block_inputs(body.block)  # type: ignore[arg-type]
            if len(inputs) != 1:
                raise self.ctx.err("bad-argument", f"`timedistributed` applies a block with one input to each time "
                                   f"step; `{body.name}` takes {len(inputs)} ({', '.join(inputs)})", span, frame)
        if isinstance(body, Instance) and label is not None:
            raise self.ctx.err("bad-name", f"`{body.name}` is a shared instance: it already has a name, so "
                               f"`timedistributed({body.name})` cannot be labelled", label_span or span, frame)
        fold = self.nodes.node("fold_time", [x], {}, None, span, container, None, "steps", frame)
        steps = Tensor(fold.outputs[0], fold.types[0])
        if isinstance(body, Instance):
            y = self.apply_instance(body, [steps], span, frame, container)
            if not isinstance(y, Tensor):
                raise self.ctx.err("bad-argument", f"`timedistributed` applies a layer with one result to each time "
                                   f"step; `{body.name}` gives {len(y)}", span, frame)
            unfold = self.nodes.node("unfold_time", [y, x], {}, None, span, container, None, frame.hint, frame)
            return Tensor(unfold.outputs[0], unfold.types[0])
        name = container.name_for(label, label_span or span, "timedistributed")
        assert name is not None
        if isinstance(body, Layer):
            apply = self._apply_extern if isinstance(body.block, ast.ExternDef) else self._apply_block
            y = apply(body, [steps], span, frame, container, None, None, name=name)
            if not isinstance(y, Tensor):
                raise self.ctx.err("bad-argument", f"`timedistributed` applies a block with one result to each time "
                                   f"step; `{body.name}` returns {len(y)}", span, frame)
        else:
            seq = self._enter_seq(name, span, container)
            y = steps
            for stage in body:
                y = self._stage(y, stage.span, stage, frame, seq)
            self._record_seq(seq, steps, y, frame.hint)
        unfold = self.nodes.node("unfold_time", [y, x], {}, None, span, container, None, frame.hint, frame)
        return Tensor(unfold.outputs[0], unfold.types[0])

    def _unknown_layer(self, name: str, span: Span, frame: Frame) -> DlcError:
        """error[unknown-layer] for ``name``: the hint names the op PyTorch or Keras would call so (`arange` is
        `positions`), else the closest known name."""
        op = known_as(name)
        hint = (f"`{name}` is `{op.name}` here: {op.doc[0].lower() + op.doc[1:]}" if op is not None
                else suggest(name, self.ev.known_names(frame)))
        return self.ctx.err("unknown-layer", f"unknown layer or block `{name}`", span, frame, hint=hint)

    def _check_label(self, target: Layer, label: str | None, span: Span, frame: Frame) -> None:
        """A label names a module; a merge (`add`, `concat`, ...) has none, it is an expression in `forward`."""
        if label is not None and target.op is not None and not target.op.module:
            raise self.ctx.err("bad-name", f"`{target.op.name}` makes no module, so the label `{label}` cannot name it",
                               span, frame, hint="drop the label; to name the result, assign it: "
                                                 f"`{label} = ...`")

    def apply(self, layer: Layer, piped: list[Tensor], span: Span, frame: Frame, container: Container,
              label: str | None, instance: Instance | None = None) -> Any:
        """Apply ``layer`` to the tensors ``piped`` (and those bound in the call) in ``container``; ``label``
        names it, ``instance`` is the shared instance being applied. The result: a tensor or a tuple."""
        if isinstance(layer.block, ast.ExternDef):
            return self._apply_extern(layer, piped, span, frame, container, label, instance)
        if layer.block is not None:
            return self._apply_block(layer, piped, span, frame, container, label, instance)
        op = layer.op
        assert op is not None
        attrs = self.binder.resolve_attrs(layer, frame)
        inputs = list(piped) + list(layer.pos_tensors)
        if op.variadic:
            if layer.tensors:
                raise self.ctx.err("unknown-argument", f"`{op.name}` takes its tensors by position", span, frame)
            if len(inputs) < 2:
                raise self.ctx.err("wrong-inputs", f"`{op.name}` needs at least two tensors, got {len(inputs)}",
                                   span, frame)
        else:
            names = list(op.inputs)
            bound: dict[str, Tensor] = {}
            for n, t in zip(names, inputs):
                bound[n] = t
            if len(inputs) > len(names):
                raise self.ctx.err("wrong-inputs", f"`{op.name}` takes {len(names)} tensor input(s), got "
                                   f"{len(inputs)}", span, frame,
                                   hint="several results piped on become several inputs; to use one, unpack them "
                                        "first: `a, b = ...`")
            for n, t in layer.tensors.items():
                if n in bound:
                    raise self.ctx.err("duplicate-argument", f"tensor input `{n}` of `{op.name}` given twice", span,
                                       frame)
                if n in op.keyword_inputs:
                    continue  # appended below
                bound[n] = t
            missing = [n for n in names if n not in bound and n not in op.optional_inputs]
            if missing:
                raise self.ctx.err("wrong-inputs", f"`{op.name}` needs the tensor input `{missing[0]}`", span, frame)
            inputs = []
            for n in names:
                if n in bound:
                    inputs.append(bound[n])
                elif any(m in bound for m in names[names.index(n) + 1:]):
                    raise self.ctx.err("wrong-inputs", f"`{op.name}`: give `{n}` too when giving later inputs", span,
                                       frame)
            keyword = tuple(n for n in op.keyword_inputs if n in layer.tensors)
            if keyword:  # the shape rule and the PyTorch facet read which of them were given
                inputs.extend(layer.tensors[n] for n in keyword)
                attrs = {**attrs, "keyword_inputs": list(keyword)}
        if instance is not None:
            name: str | None = instance.name
        else:
            name = container.name_for(label, span, op.name if op.stateful else None)
        if container.kind == "seq" and len(inputs) != 1:
            raise self.ctx.err("bad-group", f"`{op.name}` with several inputs cannot be part of a labelled group",
                               span, frame, hint="labelled groups and repeats become nn.Sequential: one input each")
        if container.side:
            raise self.ctx.err("bad-group", f"`{op.name}` cannot join a labelled group of blocks that take extra "
                               "inputs", span, frame, hint="each member receives the extra inputs: make it a block")
        if container.kind == "seq" and applies_per_step(op):
            # their torch modules return tuples or need several arguments, so nn.Sequential cannot chain them
            raise self.ctx.err("bad-group", f"`{op.name}` cannot be part of a labelled group", span, frame,
                               hint="labelled groups and repeats become nn.Sequential; apply it outside the group")
        node = self.nodes.node(op.name, inputs, attrs, None, span, container, name, frame.hint, frame,
                               attr_spans={**{k: sp for k, (_, sp) in layer.config.items()}, **layer.tensor_spans})
        outs = [Tensor(v, t) for v, t in zip(node.outputs, node.types)]
        if container.kind == "seq" and (len(outs) != 1 or op.torch.tuple_result):
            # (a module giving a tuple of one piece, `chunk(1)`, would pass the tuple on too)
            raise self.ctx.err("bad-group", f"`{op.name}` gives a tuple of outputs, so it cannot be part of a labelled "
                               "group", span, frame, hint="labelled groups and repeats become nn.Sequential: one "
                               "tensor from each member to the next")
        return outs[0] if len(outs) == 1 else tuple(outs)

    def apply_instance(self, inst: Instance, tensors: list[Tensor], span: Span, frame: Frame,
                       container: Container) -> Any:
        """Apply the shared instance ``inst`` again: same weights, so inputs of the same types."""
        if container is not inst.container:
            raise self.ctx.err("bad-group", f"shared instance `{inst.name}` cannot be applied inside a labelled group",
                               span, frame, hint="apply it outside the group, or use a fresh layer inside")
        types = [t.type for t in tensors]
        if inst.input_types is not None and types != inst.input_types:
            got = ", ".join(map(str, types))
            first = ", ".join(map(str, inst.input_types))
            raise self.ctx.err("shape-mismatch", f"shared instance `{inst.name}` was first applied to {first}, "
                               f"now to {got}", span, frame,
                               hint="one set of weights needs inputs of one shape")
        inst.input_types = types
        return self.apply(inst.layer, tensors, span, frame, container, None, instance=inst)

    def _apply_extern(self, layer: Layer, piped: list[Tensor], span: Span, frame: Frame, container: Container,
                      label: str | None, instance: Instance | None, name: str | None = None) -> Any:
        """Apply an external layer (``extern``): one module named by ``name``, the instance's, the label or
        after the extern (``swish_0``)."""
        d = layer.block
        assert d is not None
        inputs = list(piped) + list(layer.pos_tensors)
        if container.kind == "seq" and len(inputs) != 1:
            raise self.ctx.err("bad-group", f"`{d.name}` with several inputs cannot be part of a labelled group",
                               span, frame, hint="labelled groups and repeats become nn.Sequential: one input each")
        if name is None:
            name = instance.name if instance is not None else container.name_for(label, span, snake(d.name))
        assert name is not None
        result = self.externs.apply(layer, inputs, span, frame, container, name)
        if container.kind == "seq" and isinstance(result, tuple):
            raise self.ctx.err("bad-group", f"`{d.name}` with several outputs cannot be part of a labelled group",
                               span, frame)
        return result

    def _apply_block(self, layer: Layer, piped: list[Tensor], span: Span, frame: Frame, container: Container,
                     label: str | None, instance: Instance | None, name: str | None = None) -> Any:
        block = layer.block
        assert block is not None
        # an instance builds its scope path and chain, as long as it is deep: it costs a step per level
        self.ctx.step(span, frame, cost=1 + self.ctx.depth)
        if self.ctx.depth > 64:
            if block.name in self.ctx.blocks:
                first = self.ctx.blocks.index(block.name)
                cycle = " > ".join(self.ctx.blocks[first:first + self.ctx.blocks[first + 1:].index(block.name) + 1]
                                   if block.name in self.ctx.blocks[first + 1:] else self.ctx.blocks[first:])
                msg = f"block `{block.name}` keeps instantiating itself ({cycle} > {block.name} > ...)"
            else:
                msg = f"blocks nest more than 64 deep at `{block.name}`"
            raise short_chain(self.ctx.err("recursion", msg, span, frame, hint="a block may use itself only under an "
                                            "`if` whose condition ends the recursion"))
        names = self.binder.block_inputs(block)
        inputs = list(piped) + list(layer.pos_tensors)
        for n, t in layer.tensors.items():
            if n not in names:
                raise self.ctx.err("unknown-argument", f"block `{block.name}` has no input `{n}`", span, frame)
            idx = names.index(n)
            while len(inputs) <= idx:
                inputs.append(None)  # type: ignore[arg-type]
            if inputs[idx] is not None:
                raise self.ctx.err("duplicate-argument", f"input `{n}` given twice", span, frame)
            inputs[idx] = t
        if len(inputs) != len(names) or any(t is None for t in inputs):
            raise self.ctx.err("wrong-inputs", f"block `{block.name}` takes {len(names)} input(s) "
                               f"({', '.join(names)}), got {len([t for t in inputs if t is not None])}", span, frame)
        if container.kind == "seq":
            # every block of the group receives the same extra inputs after the piped one (a LayerStack)
            side = tuple(t.vid for t in inputs[1:])
            if container.side is None and container.index > 0 and side:
                raise self.ctx.err("bad-group", f"block `{block.name}` takes extra inputs, but the layers before it "
                                   "in this labelled group do not", span, frame,
                                   hint="every member of a labelled group receives the same inputs")
            if container.side is not None and side != container.side:
                raise self.ctx.err("bad-group", f"block `{block.name}` must receive the same extra inputs as the "
                                   "blocks before it in this labelled group", span, frame,
                                   hint="every member of a labelled group receives the same inputs")
            if side:
                container.side = side
        if name is None:  # a name chosen by the caller (timedistributed's), else the instance's or a new one
            name = instance.name if instance is not None else container.name_for(label, span, snake(block.name))
        assert name is not None
        inner_frame = Frame(block, {}, Container((), "block", ()))
        args = self.binder.bind_block_params(layer, inner_frame, frame)
        self.ctx.step(span, frame, cost=sum(_weight(v) for v in args.values()))  # the instance keeps its arguments
        path = container.path_of(name)
        call = self.ctx.use(path)
        scope = Scope(name, path, "block", block.name, tuple(args.items()), call, span)
        inner_frame.container = container.enter(scope, "block", f"{path} ({block.name})")
        self.ctx.depth += 1
        self.ctx.blocks.append(block.name)
        try:
            result = self.bodies.block_body(inner_frame, inputs)
        finally:
            self.ctx.depth -= 1
            self.ctx.blocks.pop()
        if container.kind == "seq" and len(result) != 1:
            raise self.ctx.err("bad-group", f"block `{block.name}` with several results cannot be part of a labelled "
                               "group", span, frame,
                               hint="labelled groups and repeats become nn.Sequential: one result each")
        self.ctx.g.blocks.setdefault(block.name, block.name_span)
        self.ctx.g.add_call(scope, BlockCall(tuple(t.vid for t in inputs), tuple(t.vid for t in result),
                                             tuple(names), frame.hint, _bound_numbers(inner_frame, args)))
        return result[0] if len(result) == 1 else tuple(result)


def _as_stage(e: ast.Expr) -> ast.Stage | None:
    """The expression ``e`` (``relu``, ``conv2d(8, k=3)``, ``Block(8)``) as the pipeline stage it spells, if it
    spells one: the first layer of a group written as a pipeline, ``(conv2d(8, k=3) -> relu)``."""
    if isinstance(e, ast.Name):
        return ast.Stage(None, None, ast.StageName(e.id, e.span), None, e.span)
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Name):
        return ast.Stage(None, None, ast.StageCall(e.func.id, e.func.span, e.args, e.span), None, e.span)
    return None


def _piped(x: Tensor | tuple) -> list[Tensor]:
    """The tensors a stage receives first: one piped tensor, or the several a pipeline carries."""
    return list(x) if isinstance(x, tuple) else [x]


def _bound_numbers(frame: Frame, params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The numbers (and lists of numbers) a block body bound to names of its own, in the order it bound them."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    return tuple((n, v) for n, v in frame.names.items() if n not in params
                 and (number(v) or (isinstance(v, list) and bool(v) and all(number(x) for x in v))))


def _weight(v: Any) -> int:
    """Steps to copy a block argument into an instance (and into every output that lists the instance)."""
    if isinstance(v, str):
        return len(v) // TEXT_PER_STEP
    if isinstance(v, list):
        return len(v) + sum(_weight(x) for x in v)
    return 0
