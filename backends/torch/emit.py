"""IR -> readable PyTorch source.

One ``nn.Module`` class per block (block instances that compile to the same code
share a class), the network class named after the network, labelled groups and
repeats as ``nn.Sequential`` (with ``--fuse``, a group with fused members as a
generated ``nn.Sequential`` subclass with the same children and a forward calling
its kernels), module attributes named as in the spec, and a ``# file.dln:LINE``
comment on every layer. The file imports only torch.
"""

from __future__ import annotations

import functools
import heapq
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from dlc import __version__
from dlc.backends.torch.classes import (ChildCall, ClassDef, Code, Instance, Line, location, node_statements,
                                        result_hints)
from dlc.backends.torch.fused import FusedEmitter
from dlc.backends.torch.initialise import after_constructor, module_path
from dlc.backends.torch.layout import layout, signature
from dlc.backends.torch.namespace import Namespace
from dlc.backends.torch.runtime import closure, definitions, names_read
from dlc.backends.torch.sharing import ClassSharing, resolve
from dlc.compiler.ir import Graph, Node, Scope, call_key
from dlc.compiler.names import KERNEL_PREFIX, MODULE_RESERVED
from dlc.compiler.ops.pytorch import OMIT, Ctx, Filled, Var, assign, lit, safe_text, variables
from dlc.compiler.ops.registry import op_of
from dlc.compiler.passes import total_params
from dlc.compiler.types import TensorType, batched_str
from dlc.diagnostics import DlcError
from dlc.distributed import shard_units

TEMPLATES = Path(__file__).with_name("templates")
_Method = TypeVar("_Method", bound=Callable[..., Any])


@dataclass
class _Suffixes:
    """The suffixes of one base name that a :class:`Namer` has tried: those in use (by the step after which they
    are free again), those free again, and the next never tried."""

    busy: list[tuple[int, int]] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    next: int = 0


class Namer:
    """Local variable names for one ``forward``: spec names where possible, reused once dead.

    None shadows a name of the module's namespace ``module`` (builtins, imports, helpers, kernels).
    """

    def __init__(self, last_use: dict[int, int], module: Namespace, only: str | None = None,
                 returned: frozenset[int] = frozenset()) -> None:
        self.last_use = last_use
        self.module = module
        self.only = only  # the one base name every value gets (a labelled group's forward: x = self[0](x))
        self.returned = returned  # the values forward returns
        self.bound: dict[str, int] = {}  # name -> value id (or -1 for a temporary)
        self.names: dict[int, str] = {}
        self.temp_until: dict[str, int] = {}
        self._suffixes: dict[str, _Suffixes] = {}
        self._temps_from: dict[str, int] = {}  # base -> the first number whose name was never a temporary

    def _until(self, name: str) -> int:
        """The last step at which the value bound to ``name`` is read."""
        vid = self.bound[name]
        return self.temp_until.get(name, self.last_use.get(vid, -1)) if vid < 0 else self.last_use.get(vid, -1)

    def _free(self, name: str, step: int) -> bool:
        if self.module.reserved(name):
            return False
        return name not in self.bound or self._until(name) <= step

    def bind(self, vid: int, hint: str, step: int) -> str:
        """The first free name of ``base``, ``base_1``, ``base_2``, ... for value ``vid``, bound at ``step``."""
        base = self.module.preferred(self.only or (hint if hint.isidentifier() else "x"))
        name = self._first_free(base, step)
        self.bound[name] = vid
        self.names[vid] = name
        return name

    def _first_free(self, base: str, step: int) -> str:
        """What a scan of ``base``, ``base_1``, ... for the first free name finds, without the scan: every suffix
        tried so far is remembered with the step after which it is free again, so a network where thousands of
        values share a name (the branches of a wide concat) costs a heap operation per name, not a scan."""
        s = self._suffixes.setdefault(base, _Suffixes())
        while s.busy and s.busy[0][0] <= step:
            heapq.heappush(s.free, heapq.heappop(s.busy)[1])
        while True:
            if s.free:
                k = heapq.heappop(s.free)
            else:
                k, s.next = s.next, s.next + 1
            name = base if k == 0 else f"{base}_{k}"
            if self._free(name, step):
                break
            if name in self.bound:  # read later than now (bound through another base, say): try it again then
                heapq.heappush(s.busy, (self._until(name), k))
            # a reserved name stays reserved: dropped
        heapq.heappush(s.busy, (step, k))  # its new value's last use is not known here: checked when popped
        return name

    def passed_on(self, inputs: Sequence[int], outputs: Sequence[int], step: int) -> str | None:
        """The name of the first of ``inputs`` when ``step`` reads it for the last time and makes one result.

        That result takes the name over (``x = self.conv1(x)``, ``out = out + skip``, as one writes by hand) unless
        the spec names it: a name bound to a dead tensor keeps it allocated to the end of ``forward``, and a chain
        of layers named after their labels (``conv1 = self.conv1(x)``, ``bn1 = self.bn1(conv1)``) held every
        intermediate of a block at once: more memory, and on the CPU more page faults per call than the
        hand-written module. A result of several inputs that is only returned keeps its own name (``y =
        torch.cat([branch1, branch2], dim=1)``): its inputs die at the return anyway.
        """
        if not inputs or len(outputs) != 1 or self.last_use.get(inputs[0]) != step:
            return None
        if len(inputs) > 1 and outputs[0] in self.returned:
            return None
        return self.names.get(inputs[0])

    def temp(self, hint: str, step: int) -> str:
        base = self.module.preferred(hint)
        # a temporary's name is never reused, so the scan starts past the run of them at the front: from 0, a
        # chain of thousands of bidirectional layers (temporaries fwd, fwd_1, ...) was quadratic
        k = self._temps_from.get(base, 0)
        while (name := base if k == 0 else f"{base}_{k}") in self.temp_until:
            k += 1
        self._temps_from[base] = k
        while not self._free(name, step) or name in self.temp_until:
            k += 1
            name = f"{base}_{k}"
        self.bound[name] = -1
        self.temp_until[name] = step
        return name


def _at_node(method: _Method) -> _Method:
    """A DlcError without a position, raised while emitting a node (a value :func:`lit` refuses), gets the node's."""
    @functools.wraps(method)
    def wrapper(self: "ModuleEmitter", node: Node, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, node, *args, **kwargs)
        except DlcError as exc:
            if exc.span is None:
                exc.span = node.span
            raise
    return wrapper  # type: ignore[return-value]


class ModuleEmitter:
    def __init__(self, g: Graph, fuse: bool = False, channels_last: bool = False,
                 fused_recurrent: bool = False) -> None:
        self.g = g
        self.channels_last = channels_last and any(op_of(n.op).torch.channels_last for n in g.nodes)
        self.fused = FusedEmitter(g, recurrent=fused_recurrent) if fuse else None
        self.instances: list[Instance] = []
        # the module's top-level names: kernels own the fused_ prefix where there are kernels
        self.globals = Namespace(MODULE_RESERVED, (KERNEL_PREFIX,) if fuse else ())
        self.globals.claim(g.name)
        self.sharing = ClassSharing(self.instances, self.globals, g.blocks)
        # the module-level names the code uses (imports, helpers), recorded as each piece is written
        self.used: set[str] = {"nn"}
        # the modules external layers come from (`import mypkg.layers`); their top-level names are the module's
        self.modules: set[str] = set()
        for node in g.nodes:
            imports = op_of(node.op).torch.imports
            for module in imports(node.attrs) if imports is not None else ():
                self.modules.add(module)
                self.globals.claim(module.split(".")[0])

    # ---- structure -----------------------------------------------------------------------------

    def _record(self, code: Filled | str) -> None:
        """Record the module-level names (imports, helpers) that ``code``, an op facet's statement, reads: its
        templates say which (:meth:`Filled.names`). The fused backend's own lines (``str``) read only names of
        the kernel section, which it records itself."""
        if isinstance(code, Filled):
            self.used |= code.names() & _MODULE_NAMES

    def _steps(self, nodes: list[Node], depth: int) -> list[tuple[Scope | None, list[Node]]]:
        """Split an instance's nodes into direct nodes and contiguous calls of child instances."""
        steps: list[tuple[Scope | None, list[Node]]] = []
        for n in nodes:
            if op_of(n.op).declared and not op_of(n.op).stateful:
                continue  # a network input: an argument of forward (a declared `param` is a module attribute)
            child = n.scope[depth] if len(n.scope) > depth else None
            if child is not None and steps and steps[-1][0] == child:
                steps[-1][1].append(n)
            else:
                steps.append((child, [n]))
        return steps

    @_at_node
    def _module_init(self, node: Node, in_sequential: bool = False) -> Filled:
        ins = [self.g.types[v] for v in node.inputs]
        expr = op_of(node.op).torch.constructor(node.attrs, ins, list(node.types), in_sequential, node.in_place)
        expr.text()  # written now, so a value it cannot write is reported at the node
        self._record(expr)
        return expr

    def _child_init(self, child: Scope, nodes: list[Node], depth: int) -> Code:
        """The constructor call of a child block or group."""
        if child.kind == "block":
            return self._block_class(child, nodes, depth + 1)
        if self.fused is not None and any(self.fused.plan.group_of.get(n.id) is not None
                                          for n in nodes if len(n.scope) == depth + 1):
            return self._sequential_class(child, nodes, depth)
        return self._sequential(child, nodes, depth)

    def _sequential(self, child: Scope, nodes: list[Node], depth: int, base: str | None = None) -> Filled:
        """The ``nn.Sequential`` (or ``LayerStack``, ``FoldingSequential``) call building a labelled group's
        children; with ``base``, that call's class is ``base`` and folds are left to its forward."""
        items: list[tuple[str, Code]] = []
        seq = "nn.Sequential"
        if len(self.g.call_of(child).inputs) > 1:  # its blocks also receive the same extra inputs
            seq = "LayerStack"
            self.used.add(seq)
        folds: list[str] = []
        for sub, sub_nodes in self._steps(nodes, depth + 1):
            if sub is None:
                (node,) = sub_nodes
                items.append((node.name or "", self._module_init(node, in_sequential=True)))
                for line in self.folded_init(node, set()):
                    assert node.fold is not None
                    items.append((node.fold.name, line.code))
                    folds.append(node.name or "")
                    if base is None:
                        seq = "FoldingSequential"
                        self.used.add(seq)
            else:
                items.append((sub.name, self._child_init(sub, sub_nodes, depth + 1)))
        fold = tuple(folds) if folds and base is None else OMIT
        seq = base or seq
        if all(name == str(i) for i, (name, _) in enumerate(items)):
            return Filled(seq + "({*items}{,fold})", {"items": tuple(expr for _, expr in items), "fold": fold})
        # the spec names some children: keep its names (nn.Sequential takes an OrderedDict)
        self.used.add("OrderedDict")
        pairs = tuple(Filled("({name}, {module})", {"name": name, "module": expr}) for name, expr in items)
        return Filled(seq + "(OrderedDict([{*pairs}]){,fold})", {"pairs": pairs, "fold": fold})

    def _sequential_class(self, child: Scope, nodes: list[Node], depth: int) -> ChildCall:
        """A labelled group with fused members: an ``nn.Sequential`` subclass whose ``__init__`` builds the same
        children as the plain group (names, order and state_dict unchanged) and whose ``forward``, generated
        like a block's, calls the group's kernels. Groups with the same structure share the class."""
        site = self.g.call_of(child)
        build = self._sequential(child, nodes, depth, base="super().__init__")
        # every child is built by the constructor call above: forward only calls them (or their kernels)
        names = {n.name for n in nodes if len(n.scope) == depth + 1 and n.name is not None}
        names |= {n.fold.name for n in nodes if len(n.scope) == depth + 1 and n.fold is not None}
        names |= {n.scope[depth + 1].name for n in nodes if len(n.scope) > depth + 1}
        cls = self._class(nodes, depth + 1, list(zip(site.input_names, site.inputs)), list(site.outputs), "",
                          declared=names)
        cls.init = [Line(build)]
        cls.base = "nn.Sequential"
        where = location(child.span.file, child.span.line)
        cls.doc = f"Group `{safe_text(child.name)}` ({where}): nn.Sequential's children, with a fused forward."
        name = "".join(part[:1].upper() + part[1:] for part in child.name.split("_")) if child.name.isidentifier() \
            else "Group"
        if name in self.g.blocks or not name.isidentifier():
            name += "Group"
        # a number varying between instances that is the group's output channels is named so (`Downsample(x_channels,
        # out_channels)`), as a block's parameter would name it
        out = self.g.types[site.outputs[0]]
        bound: tuple[tuple[str, Any], ...] = ()
        if isinstance(out, TensorType) and out.feature_axis is not None and out.rank > 0:
            bound = (("out_channels", out.shape[out.feature_axis]),)
        rec = Instance(len(self.instances), replace(child, block=name), cls, [self.g.types[v] for v in site.inputs],
                       list(site.input_names), child.span, bound)
        self.instances.append(rec)
        return ChildCall(rec.iid)

    # ---- classes -------------------------------------------------------------------------------

    def _block_class(self, scope: Scope, nodes: list[Node], depth: int) -> ChildCall:
        """Record one block instance; its constructor call is known once it has its class (see ``sharing.py``)."""
        site = self.g.call_of(scope)
        cls = self._class(nodes, depth, list(zip(site.input_names, site.inputs)), list(site.outputs), "")
        rec = Instance(len(self.instances), scope, cls, [self.g.types[v] for v in site.inputs], list(site.input_names),
                        nodes[0].span if nodes else scope.span, site.bound)
        self.instances.append(rec)
        return ChildCall(rec.iid)

    def _class(self, nodes: list[Node], depth: int, inputs: list[tuple[str, int]], outputs: list[int],
               doc: str, training: tuple[bool, ...] = (), declared: set[str] | None = None) -> ClassDef:
        """The class computing ``outputs`` from ``inputs`` with ``nodes``; where ``training`` marks some outputs
        as training-only (the network's), the steps only they need run last, under ``if self.training:``.
        ``declared``: children made elsewhere (a labelled group's, by its constructor call), called as they are."""
        steps = self._steps(nodes, depth)
        order = list(range(len(steps)))  # the steps in the order forward runs them
        n_eval = len(steps)
        if any(training):
            order, n_eval = self._training_last(steps, [v for v, t in zip(outputs, training) if not t])
            steps = [steps[i] for i in order]
        last_use: dict[int, int] = {}
        for i, (child, step_nodes) in enumerate(steps):
            used = self._step_inputs(child, step_nodes)
            for v in used:
                last_use[v] = i
        for v in outputs:
            last_use[v] = len(steps) + 1
        # a labelled group's values are named as nn.Sequential's forward names them, so identical groups share a
        # class whatever the spec calls their results
        namer = Namer(last_use, self.globals, "x" if declared is not None else None, frozenset(outputs))
        args = [namer.bind(vid, name, -1) for name, vid in inputs]
        inits: dict[int, list[Line]] = {}  # by the step's place in the spec: modules are declared in that order
        body: list[Line] = []
        sequential = declared is not None
        declared = set() if declared is None else set(declared)
        for i, (child, step_nodes) in enumerate(steps):
            if i == n_eval:
                body.append(Line("if self.training:", "the outputs of training mode only"))
            lines: list[Line] = []
            init = inits[order[i]] = []
            if child is None:
                (node,) = step_nodes
                self._node(node, i, namer, init, lines, declared, sequential)
            else:
                self._call(child, step_nodes, depth, i, namer, init, lines, declared)
            body.extend(replace(ln, indent=ln.indent + int(i >= n_eval)) for ln in lines)
        init = [ln for i in sorted(inits) for ln in inits[i]]
        rets = [namer.names[v] for v in outputs]
        if any(training):
            if n_eval == len(steps):  # nothing is computed for training alone: an output is returned twice
                body.append(Line("if self.training:", "the outputs of training mode only"))
            body.append(Line(Filled("return {*values}", {"values": variables(rets)}), indent=1))
            rets = [r for r, t in zip(rets, training) if not t]
        body.append(Line(Filled("return {*values}", {"values": variables(rets)})))
        return ClassDef("", doc, init, args, body, attrs=declared)

    def _training_last(self, steps: list[tuple[Scope | None, list[Node]]],
                       needed: list[int]) -> tuple[list[int], int]:
        """The indices of ``steps`` with those that no eval-mode output (value ids ``needed``) depends on moved to
        the end, in their order, and how many steps come first. Moving them is safe: no eval step reads what
        they make."""
        made = {}  # value id -> the step making it
        for i, (child, step_nodes) in enumerate(steps):
            outs = self.g.call_of(child).outputs if child is not None else step_nodes[0].outputs
            for v in outs:
                made[v] = i
        keep: set[int] = set()
        todo = [made[v] for v in needed if v in made]
        while todo:
            i = todo.pop()
            if i not in keep:
                keep.add(i)
                child, step_nodes = steps[i]
                todo.extend(made[v] for v in self._step_inputs(child, step_nodes) if v in made)
        first = [i for i in range(len(steps)) if i in keep]
        return first + [i for i in range(len(steps)) if i not in keep], len(first)

    def _step_inputs(self, child: Scope | None, nodes: list[Node]) -> list[int]:
        if child is None:
            if self.fused is not None:
                return self.fused.step_inputs(nodes[0])
            return list(nodes[0].inputs)
        return list(self.g.call_of(child).inputs)

    @_at_node
    def _node(self, node: Node, step: int, namer: Namer, init: list[Line], body: list[Line],
              declared: set[str], sequential: bool = False) -> None:
        """``node``'s module (into ``init``) and its statements (into ``body``); ``sequential``: a member of a
        labelled group, whose module (built by the group) is called as nn.Sequential would call it."""
        where = location(node.span.file, node.span.line)
        mod = None
        if node.name is not None:
            mod = module_path(node.name)
            if node.name not in declared:
                declared.add(node.name)
                init.append(Line(self._module_init(node), where, attr=node.name))
                init.extend(self.folded_init(node, declared))
                for code in after_constructor(node, [self.g.types[v] for v in node.inputs], declared):
                    self._record(code)
                    init.append(Line(code, where))
        if self.fused is not None:
            if self.fused.absorbed(node):
                return  # its work happens in its group's kernel, called at the group's last node
            if self.fused.kernel_group(node) is not None:
                self.fused.emit_group(node, step, namer, body, self.used)
                return
        args = [namer.names[v] for v in node.inputs]
        hint = node.hint or namer.passed_on(node.inputs, node.outputs, step) or (
            node.name if node.name and node.name.isidentifier() else None)
        outs = [namer.bind(v, h, step) for v, h in zip(node.outputs, result_hints(hint, len(node.outputs)))]
        ctx = Ctx(lambda base: namer.temp(base, step))
        if self.fused is not None and self.fused.own_forward(node):
            lines = self.fused.forward(node, args, mod, outs, ctx)
        elif sequential and node.fold is None:
            assert mod is not None
            lines = [assign(outs, Filled("{mod}({*args})", {"mod": Var(mod), "args": variables(args)}))]
        else:
            lines = node_statements(self.g, node, args, mod, outs, ctx, self.used)
        for j, code in enumerate(lines):
            if isinstance(code, Filled):
                code.text()  # written now, so a value it cannot write is reported at the node
            self._record(code)
            body.append(Line(code, where if j == len(lines) - 1 else None))  # on the line giving the results

    def _group_after(self, nodes: list[Node], depth: int, declared: set[str]) -> list[Line]:
        """The initialisers and ties of the layers of a labelled group (made by its constructor, so they follow it),
        each reached through the group: ``nn.init.zeros_(self.layers[0].bias)``. A block inside the group
        initialises its own layers in its class."""
        lines: list[Line] = []
        for node in nodes:
            if node.name is None or any(s.kind != "seq" for s in node.scope[depth:]):
                continue
            path = ".".join([s.name for s in node.scope[depth:]] + [node.name])
            for code in after_constructor(node, [self.g.types[v] for v in node.inputs], declared, path):
                self._record(code)
                lines.append(Line(code, location(node.span.file, node.span.line)))
        return lines

    @_at_node
    def folded_init(self, node: Node, declared: set[str]) -> list[Line]:
        """The batchnorm module folded into ``node`` (kept, so state_dicts load as before)."""
        fold = node.fold
        if fold is None or fold.name in declared:
            return []
        declared.add(fold.name)
        init = op_of(fold.op).torch.constructor(dict(fold.attrs), list(node.types), list(node.types))
        init.text()  # written now, so a value it cannot write is reported at the node
        where = f"{location(node.span.file, node.span.line)} (folded into {node.name} in eval mode)"
        return [Line(init, where, attr=fold.name)]

    def _call(self, child: Scope, nodes: list[Node], depth: int, step: int, namer: Namer, init: list[Line],
              body: list[Line], declared: set[str]) -> None:
        where = location(child.span.file, child.span.line)
        if child.name not in declared:
            declared.add(child.name)
            init.append(Line(self._child_init(child, nodes, depth), where, attr=child.name))
            if child.kind == "seq":
                init.extend(self._group_after(nodes, depth, declared))
        site = self.g.call_of(child)
        args = variables([namer.names[v] for v in site.inputs])
        hint = site.hint or namer.passed_on(site.inputs, site.outputs, step) or (
            child.name if child.name.isidentifier() else None)
        outs = [namer.bind(v, h, step) for v, h in zip(site.outputs, result_hints(hint, len(site.outputs)))]
        mod = Var(module_path(child.name))
        call = assign(outs, Filled("{mod}({*args})", {"mod": mod, "args": args}))
        if call_key(child) not in self.g.checkpointed:
            body.append(Line(call, where))
            return
        # `checkpoint`: in training, backward recomputes the child's activations instead of keeping them
        self.used.add("checkpoint")
        recompute = assign(outs, Filled("torch.utils.checkpoint.checkpoint({mod}, {*args}, use_reentrant=False)",
                                        {"mod": mod, "args": args}))
        body.extend([Line("if self.training:", "checkpoint: backward recomputes its activations"),
                     Line(recompute, where, indent=1), Line("else:"), Line(call, where, indent=1)])

    # ---- entry ---------------------------------------------------------------------------------

    def network(self) -> ClassDef:
        g = self.g
        cls = self._class(g.nodes, 0, list(g.inputs), [v for _, v in g.outputs], "",
                          tuple(n in g.training_outputs for n, _ in g.outputs))
        cls.name = g.name
        if self.channels_last:
            note = "optimize=inference: channels-last convolutions"
            cls.init.append(Line("self.to(memory_format=torch.channels_last)", note))
            users = g.users()
            images = [arg for arg, (_, v) in zip(cls.args, g.inputs)  # forward's names for the inputs
                      if any(op_of(n.op).torch.channels_last for n in users.get(v, [])) and g.types[v].rank == 3]
            cls.body[:0] = [Line(f"{x} = {x}.contiguous(memory_format=torch.channels_last)", note) for x in images]
            self.used.add("torch")
        self.sharing.share()
        resolve(cls, self.sharing.calls)
        return cls


def _format_lines(lines: list[Line], indent: int) -> list[str]:
    return [text for ln in lines for text in layout(indent + 4 * ln.indent, ln.text(), ln.comment)]


# The imports a generated module may need, by the name it uses, in the order isort (ruff's I rules) keeps them:
# standard library, then torch; `import x` before `from x import y` within each group.
_IMPORTS = {
    "os": (0, "import os"),
    "OrderedDict": (0, "from collections import OrderedDict"),
    "torch": (1, "import torch"),
    "F": (1, "import torch.nn.functional as F"),
    "checkpoint": (1, "import torch.utils.checkpoint"),
    "nn": (1, "from torch import nn"),
}


# What generated code may read from the module's top level besides its own classes and kernels.
_MODULE_NAMES = frozenset(_IMPORTS) | frozenset(definitions())


def _imports(used: set[str], modules: Iterable[str] = ()) -> str:
    """The import statements for the names ``used`` and the ``modules`` of external layers, one blank line between
    the groups, sorted as isort sorts them: `import x` before `from x import y`, each by module name."""
    statements = {statement: group for name, (group, statement) in _IMPORTS.items() if name in used}
    for module in modules:  # the standard library's group, or the third-party one, torch's
        statements.setdefault(f"import {module}", 0 if module.split(".")[0] in sys.stdlib_module_names else 1)
    groups: dict[int, list[str]] = {}
    for statement in sorted(statements, key=_import_order):
        groups.setdefault(statements[statement], []).append(statement)
    return "\n\n".join("\n".join(groups[g]) for g in sorted(groups))


def _import_order(statement: str) -> tuple[bool, str]:
    """isort's order within a group: `import x` first, then `from x import y`; by module name, ignoring case."""
    return statement.startswith("from "), statement.split()[1].lower()


def emit_module(g: Graph, fuse: bool = False, channels_last: bool = False, fused_recurrent: bool = False) -> str:
    """The Python source of a module computing ``g``.

    With ``fuse``, fusion groups run as Triton kernels; ``channels_last`` makes a network with 2-d
    convolutions keep its parameters and image inputs in channels-last memory order. Recurrent
    layers keep nn.LSTM / nn.GRU (cuDNN) unless ``fused_recurrent``.
    """
    em = ModuleEmitter(g, fuse, channels_last, fused_recurrent)
    net = em.network()
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True)
    template = env.get_template("module.py.j2")
    classes = []
    for cls in em.sharing.classes + [net]:
        classes.append({
            "name": cls.name,
            "base": cls.base,
            "doc": cls.doc,
            "init_def": signature(4, "__init__", ["self"] + cls.params),
            "init": _format_lines(cls.init, 8),
            "forward_def": signature(4, "forward", ["self"] + cls.args),
            "body": _format_lines(cls.body, 8),
        })
    kernels = em.fused.section() if em.fused is not None else ""
    used = em.used | (names_read(kernels) if kernels else set())
    helpers = closure(used)
    for helper in helpers:
        used |= helper.uses
    inputs = [(n, batched_str(g.types[v])) for n, v in g.inputs]
    outputs = [(n, batched_str(g.types[v]) + (" (training mode only)" if n in g.training_outputs else ""))
               for n, v in g.outputs]
    params = f" ({', '.join(f'{k}={v!r}' for k, v in g.params.items())})" if g.params else ""
    text = safe_text(f"Network `{g.name}` from {Path(g.file).name}{params}.")
    doc = textwrap.wrap(text, 112, break_long_words=False, break_on_hyphens=False)
    if len(doc) == 1 and len(doc[0]) > 110:  # one line with its quotes and indent would pass 120 columns
        doc = textwrap.wrap(text, 110, break_long_words=False, break_on_hyphens=False)
    # at most 120 columns: continuation lines indented like the docstring, closing quotes on their own line
    classes[-1]["doc"] = doc[0] if len(doc) == 1 else "\n    ".join(doc + [""])
    return template.render(
        version=__version__,
        source=safe_text(Path(g.file).name),
        network=g.name,
        params=f"{total_params(g):,}" + (" + external layers (not counted)" if em.modules else ""),
        inputs=inputs,
        outputs=outputs,
        imports=_imports(used, em.modules),
        helpers=[h.text for h in helpers],
        kernels=kernels,
        classes=classes,
        output_names=layout(4, "output_names = " + lit(tuple(n for n, _ in g.outputs))),
        # FSDP2's units, innermost first, for dlc.distributed.shard
        shard_units=layout(4, "shard_units = " + lit(shard_units(g))),
    )
