"""IR -> readable PyTorch source.

One ``nn.Module`` class per block (block instances that compile to the same code
share a class), the network class named after the network, labelled groups and
repeats as ``nn.Sequential``, module attributes named as in the spec, and a
``# file.dln:LINE`` comment on every layer. The file imports only torch.
"""

from __future__ import annotations

import functools
import heapq
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from dlc import __version__
from dlc.backends.text import safe_text
from dlc.backends.torch.fused import FusedEmitter
from dlc.backends.torch.helpers import HELPER_OF, HELPERS
from dlc.backends.torch.namespace import Namespace
from dlc.backends.torch.ops import TABLE, Ctx, lit
from dlc.compiler.ir import Graph, Node, Scope
from dlc.compiler.names import KERNEL_PREFIX, MODULE_RESERVED, RESERVED_ATTRS
from dlc.compiler.passes import total_params
from dlc.compiler.types import TensorType, batched_str
from dlc.diagnostics import DlcError, Span

TEMPLATES = Path(__file__).with_name("templates")
LINE_LENGTH = 120
_Method = TypeVar("_Method", bound=Callable[..., Any])


@dataclass
class Line:
    code: str
    comment: str | None = None


@dataclass
class ClassDef:
    name: str
    doc: str
    init: list[Line]
    args: list[str]
    body: list[Line]
    params: list[str] = field(default_factory=list)  # constructor arguments
    attrs: set[str] = field(default_factory=set)  # the module attributes __init__ assigns (spec names)


@dataclass
class _Instance:
    """One block instance waiting to be given a class."""

    iid: int
    scope: Scope
    cls: ClassDef
    input_types: list
    input_names: list[str]
    span: Span


_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
# A number standing alone (not part of a name, a string or another number).
_NUMBER = re.compile(r"(?<![\w.'\"])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w.'\"])")


def _placeholders(cls: ClassDef) -> list[int]:
    return [int(m) for ln in cls.init for m in _PLACEHOLDER.findall(ln.code)]


def _resolve(code: str, calls: dict[int, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: calls[int(m.group(1))], code)


def _class_text(cls: ClassDef) -> list[str]:
    return [ln.code for ln in cls.init] + ["|".join(cls.args)] + [ln.code for ln in cls.body]


def _split_numbers(cls: ClassDef) -> tuple[tuple[str, ...], list[str]]:
    """The code with every number cut out (its shape), and the numbers in order."""
    skeleton: list[str] = []
    numbers: list[str] = []
    for text in _class_text(cls):
        parts = _NUMBER.split(text)
        skeleton.append("\x01".join(parts))
        numbers.extend(_NUMBER.findall(text))
    return tuple(skeleton), numbers


# Names of the leading positional arguments of the torch.nn constructors the backend writes.
_POSITIONAL = {
    "Linear": ("in_features", "out_features"),
    "Conv1d": ("in_channels", "out_channels"), "Conv2d": ("in_channels", "out_channels"),
    "ConvTranspose2d": ("in_channels", "out_channels"),
    "BatchNorm1d": ("num_features",), "BatchNorm2d": ("num_features",), "BatchNorm3d": ("num_features",),
    "LayerNorm": ("normalized_shape",), "Embedding": ("num_embeddings", "embedding_dim"),
    "LSTM": ("input_size", "hidden_size"), "GRU": ("input_size", "hidden_size"), "RNN": ("input_size", "hidden_size"),
    "MultiheadAttention": ("embed_dim", "num_heads"), "Dropout": ("p",),
}


def _slot_name(cls: ClassDef, pos: int) -> str | None:
    """``conv_out_channels`` for the number at ``pos`` in ``self.conv = nn.Conv2d(64, 128, ...)``."""
    seen = 0
    for text in _class_text(cls):
        matches = list(_NUMBER.finditer(text))
        if pos >= seen + len(matches):
            seen += len(matches)
            continue
        start = matches[pos - seen].start()
        attr = re.match(r"self\.(\w+) = (?:nn\.)?(\w+)\(", text)
        if attr is None:
            return None
        depth, commas, i = 0, 0, start - 1
        while i >= 0:  # walk back to the call that holds the number, counting its arguments
            ch = text[i]
            if ch in ")]":
                depth += 1
            elif ch in "([":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "," and depth == 0:
                commas += 1
            i -= 1
        keyword = re.search(r"(\w+)=\s*$", text[:start])
        if i != attr.end() - 1:
            return None  # inside a nested call or list
        if keyword:
            return f"{attr.group(1)}_{keyword.group(1)}"
        slots = _POSITIONAL.get(attr.group(2), ())
        return f"{attr.group(1)}_{slots[commas]}" if commas < len(slots) else None
    return None


def _number_text(value: object) -> str | None:
    """How the backend writes a number (``repr``, as :func:`lit` does); None for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return None


def _arg_name(column: tuple[str, ...], recs: list["_Instance"], cls: ClassDef, pos: int) -> tuple[int, str]:
    """The name a varying number asks for, with its rank (lower ranks are served first).

    0: the block parameter whose value is written exactly so in every instance (an int slot never
    takes a float parameter); 1: an input size (``x_channels``, ``x_size2``) equal in every instance;
    2: the constructor argument it fills (``conv_out_channels``); 3: none (a numbered ``argN``).
    """
    for pname, _ in recs[0].scope.args:
        if all(_number_text(dict(r.scope.args).get(pname)) == v for r, v in zip(recs, column)):
            return 0, pname
    for i, (iname, t) in enumerate(zip(recs[0].input_names, recs[0].input_types)):
        if not isinstance(t, TensorType):
            continue
        for axis, _ in enumerate(t.shape):
            if all(isinstance(r.input_types[i], TensorType) and len(r.input_types[i].shape) > axis
                   and _number_text(r.input_types[i].shape[axis]) == v for r, v in zip(recs, column)):
                return 1, f"{iname}_channels" if axis == t.feature_axis else f"{iname}_size{axis}"
    slot = _slot_name(cls, pos)
    return (2, slot) if slot else (3, "")


def _substitute(cls: ClassDef, names: dict[int, str]) -> None:
    """Replace the varying numbers by constructor arguments (kept as attributes for ``forward``).

    The attribute that keeps an argument is named after it unless the class already has that
    attribute: ``self.c_2 = c`` beside a layer ``c``, ``self.training_ = training`` (nn.Module's flag).
    """
    pos = 0
    attrs = Namespace(RESERVED_ATTRS)
    for name in cls.attrs:
        attrs.claim(name)
    kept: dict[str, str] = {}  # argument -> attribute

    def rewrite(text: str, in_forward: bool) -> str:
        nonlocal pos
        out = []
        last = 0
        for m in _NUMBER.finditer(text):
            out.append(text[last:m.start()])
            arg = names.get(pos)
            if arg is None:
                out.append(m.group(0))
            elif in_forward:
                if arg not in kept:
                    kept[arg] = attrs.fresh(arg)
                out.append(f"self.{kept[arg]}")
            else:
                out.append(arg)
            last = m.end()
            pos += 1
        out.append(text[last:])
        return "".join(out)

    cls.init = [Line(rewrite(ln.code, False), ln.comment) for ln in cls.init]
    rewrite("|".join(cls.args), False)
    cls.body = [Line(rewrite(ln.code, True), ln.comment) for ln in cls.body]
    cls.init = [Line(f"self.{attr} = {arg}") for arg, attr in kept.items()] + cls.init


def _where(span_file: str, line: int) -> str:
    return f"{safe_text(Path(span_file).name)}:{line}"


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

    def __init__(self, last_use: dict[int, int], module: Namespace) -> None:
        self.last_use = last_use
        self.module = module
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
        base = self.module.preferred(hint if hint.isidentifier() else "x")
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
        self.channels_last = channels_last and any(n.op == "conv2d" for n in g.nodes)
        self.fused = FusedEmitter(g, recurrent=fused_recurrent) if fuse else None
        self.classes: list[ClassDef] = []
        self.instances: list[_Instance] = []
        self.calls: dict[int, str] = {}  # instance id -> constructor call of its class
        self.identical: dict[tuple[str, str], str] = {}  # (block, code) -> call, for recursive blocks
        # the module's top-level names: kernels own the fused_ prefix where there are kernels
        self.globals = Namespace(MODULE_RESERVED, (KERNEL_PREFIX,) if fuse else ())
        self.globals.claim(g.name)
        self.held: set[str] = set()  # block names kept free for the block's first class
        self.helpers: set[str] = set()
        self.ordered_dict = False

    # ---- structure -----------------------------------------------------------------------------

    def _steps(self, nodes: list[Node], depth: int) -> list[tuple[Scope | None, list[Node]]]:
        """Split an instance's nodes into direct nodes and contiguous calls of child instances."""
        steps: list[tuple[Scope | None, list[Node]]] = []
        for n in nodes:
            if n.op == "input":
                continue
            child = n.scope[depth] if len(n.scope) > depth else None
            if child is not None and steps and steps[-1][0] == child:
                steps[-1][1].append(n)
            else:
                steps.append((child, [n]))
        return steps

    @_at_node
    def _module_init(self, node: Node, in_sequential: bool = False) -> str:
        entry = TABLE[node.op]
        init = entry.seq_init if in_sequential and entry.seq_init is not None else entry.init
        assert init is not None, f"{node.op} has no module form"
        expr = init(node, [self.g.types[v] for v in node.inputs])
        head = re.match(r"(\w+)\(", expr)
        if head and head.group(1) in HELPER_OF:
            self.helpers.add(HELPER_OF[head.group(1)])
        return expr

    def _child_init(self, child: Scope, nodes: list[Node], depth: int) -> list[str]:
        """Constructor lines (first line has no indent) for a child block or group."""
        if child.kind == "block":
            return [self._block_class(child, nodes, depth + 1)]
        items: list[tuple[str, list[str]]] = []
        seq = "nn.Sequential"
        folds: list[str] = []
        for sub, sub_nodes in self._steps(nodes, depth + 1):
            if sub is None:
                (node,) = sub_nodes
                items.append((node.name or "", [self._module_init(node, in_sequential=True)]))
                for line in self.folded_init(node, set()):
                    items.append((node.attrs["fold"]["name"], [line.code.split(" = ", 1)[1]]))
                    folds.append(node.name or "")
                    seq = "FoldingSequential"
                    self.helpers.update({"folded_batchnorm", "FoldingSequential"})
            else:
                items.append((sub.name, self._child_init(sub, sub_nodes, depth + 1)))
        positional = all(name == str(i) for i, (name, _) in enumerate(items))
        if not positional:
            # the spec names some children: keep its names (nn.Sequential takes an OrderedDict)
            self.ordered_dict = True
            lines = [f"{seq}(OrderedDict(["]
            for name, expr in items:
                lines.append(f"    ({lit(name)}, {expr[0]}")
                lines.extend("    " + e for e in expr[1:])
                lines[-1] += "),"
            return lines + ["])" + (f", fold={lit(folds)})" if folds else ")")]
        if len(items) == 1 and len(items[0][1]) == 1:
            return [f"{seq}({items[0][1][0]})"]
        lines = [f"{seq}("]
        for _, expr in items:
            lines.append(f"    {expr[0]}")
            lines.extend("    " + e for e in expr[1:])
            lines[-1] += ","
        if folds:
            lines.append(f"    fold={lit(folds)},")
        lines.append(")")
        return lines

    # ---- classes -------------------------------------------------------------------------------

    def _block_class(self, scope: Scope, nodes: list[Node], depth: int) -> str:
        """Record one block instance; returns a placeholder for its constructor call (see ``finalize``)."""
        key = f"{scope.path}#{scope.call}"
        inputs, outputs, names, _ = self.g.calls[key]
        cls = self._class(nodes, depth, list(zip(names, inputs)), list(outputs), "")
        rec = _Instance(len(self.instances), scope, cls, [self.g.types[v] for v in inputs], list(names),
                        nodes[0].span if nodes else scope.span)
        self.instances.append(rec)
        return f"\x00{rec.iid}\x00"

    def _class(self, nodes: list[Node], depth: int, inputs: list[tuple[str, int]], outputs: list[int],
               doc: str) -> ClassDef:
        steps = self._steps(nodes, depth)
        last_use: dict[int, int] = {}
        for i, (child, step_nodes) in enumerate(steps):
            used = self._step_inputs(child, step_nodes)
            for v in used:
                last_use[v] = i
        for v in outputs:
            last_use[v] = len(steps) + 1
        namer = Namer(last_use, self.globals)
        args = [namer.bind(vid, name, -1) for name, vid in inputs]
        init: list[Line] = []
        body: list[Line] = []
        declared: set[str] = set()
        for i, (child, step_nodes) in enumerate(steps):
            if child is None:
                (node,) = step_nodes
                self._node(node, i, namer, init, body, declared)
            else:
                self._call(child, step_nodes, depth, i, namer, init, body, declared)
        rets = [namer.names[v] for v in outputs]
        body.append(Line(f"return {', '.join(rets)}"))
        return ClassDef("", doc, init, args, body, attrs=declared)

    def _step_inputs(self, child: Scope | None, nodes: list[Node]) -> list[int]:
        if child is None:
            if self.fused is not None:
                return self.fused.step_inputs(nodes[0])
            return list(nodes[0].inputs)
        return list(self.g.calls[f"{child.path}#{child.call}"][0])

    @_at_node
    def _node(self, node: Node, step: int, namer: Namer, init: list[Line], body: list[Line],
              declared: set[str]) -> None:
        where = _where(node.span.file, node.span.line)
        mod = None
        if node.name is not None:
            mod = f"self.{node.name}"
            if node.name not in declared:
                declared.add(node.name)
                init.append(Line(f"self.{node.name} = {self._module_init(node)}", where))
                init.extend(self.folded_init(node, declared))
        if self.fused is not None:
            if self.fused.absorbed(node):
                return  # its work happens in its group's kernel, called at the group's last node
            if self.fused.kernel_group(node) is not None:
                self.fused.emit_group(self, node, step, namer, body)
                return
        ins = [self.g.types[v] for v in node.inputs]
        args = [namer.names[v] for v in node.inputs]
        hint = node.hint or (node.name if node.name and node.name.isidentifier() else None)
        outs = [namer.bind(v, h, step) for v, h in zip(node.outputs, _hints(hint, len(node.outputs)))]
        ctx = Ctx(lambda base: namer.temp(base, step))
        if self.fused is not None and self.fused.own_forward(node):
            lines = self.fused.forward(node, args, mod, outs, ctx)
        elif "fold" in node.attrs:
            lines = [f"{outs[0]} = {self.folded_call(node, args[0])}"]
        else:
            lines = TABLE[node.op].forward(node, ins, args, mod, outs, ctx)
        for j, code in enumerate(lines):
            body.append(Line(code, where if j == 0 else None))

    @_at_node
    def folded_init(self, node: Node, declared: set[str]) -> list[Line]:
        """The batchnorm module folded into ``node`` (kept, so state_dicts load as before)."""
        fold = node.attrs.get("fold")
        if fold is None or fold["name"] in declared:
            return []
        declared.add(fold["name"])
        bn = Node(node.id, "batchnorm", node.outputs, node.outputs,
                  {k: fold[k] for k in ("eps", "momentum", "affine")}, node.types, node.span, node.scope, fold["name"])
        init = TABLE["batchnorm"].init
        assert init is not None
        code = f"self.{fold['name']} = {init(bn, list(node.types))}"
        return [Line(code, f"{_where(node.span.file, node.span.line)} (folded into {node.name} in eval mode)")]

    def folded_call(self, node: Node, x: str) -> str:
        self.helpers.add("folded_batchnorm")
        return f"folded_batchnorm(self.{node.name}, self.{node.attrs['fold']['name']}, {x})"

    def _call(self, child: Scope, nodes: list[Node], depth: int, step: int, namer: Namer, init: list[Line],
              body: list[Line], declared: set[str]) -> None:
        where = _where(child.span.file, child.span.line)
        if child.name not in declared:
            declared.add(child.name)
            ctor = self._child_init(child, nodes, depth)
            init.append(Line(f"self.{child.name} = {ctor[0]}", where))
            init.extend(Line(c) for c in ctor[1:])
        inputs, outputs, _, hint = self.g.calls[f"{child.path}#{child.call}"]
        args = ", ".join(namer.names[v] for v in inputs)
        hint = hint or (child.name if child.name.isidentifier() else None)
        outs = [namer.bind(v, h, step) for v, h in zip(outputs, _hints(hint, len(outputs)))]
        body.append(Line(f"{', '.join(outs)} = self.{child.name}({args})", where))

    # ---- entry ---------------------------------------------------------------------------------

    def network(self) -> ClassDef:
        g = self.g
        cls = self._class(g.nodes, 0, list(g.inputs), [v for _, v in g.outputs], "")
        cls.name = g.name
        if self.channels_last:
            note = "optimize=inference: channels-last convolutions"
            cls.init.append(Line("self.to(memory_format=torch.channels_last)", note))
            users = g.users()
            images = [arg for arg, (_, v) in zip(cls.args, g.inputs)  # forward's names for the inputs
                      if any(n.op == "conv2d" for n in users.get(v, [])) and g.types[v].rank == 3]
            cls.body[:0] = [Line(f"{x} = {x}.contiguous(memory_format=torch.channels_last)", note) for x in images]
        self._finalize()
        cls.init = [Line(_resolve(ln.code, self.calls), ln.comment) for ln in cls.init]
        return cls

    # ---- one class per block ----------------------------------------------------------------------

    def _finalize(self) -> None:
        """Turn recorded block instances into classes: one per block and code shape.

        Instances of a block whose code differs only in numbers share a class; the numbers
        that differ become constructor arguments, named after the block parameter (or input
        size) that has the same value in every instance.
        """
        by_block: dict[str, list[_Instance]] = {}
        for rec in self.instances:
            by_block.setdefault(rec.scope.block or "Block", []).append(rec)
        for b in by_block:  # a block's first class keeps its name where it can: no other class takes it
            if not self.globals.taken(b):
                self.globals.claim(b)
                self.held.add(b)
        children: dict[str, set[str]] = {b: set() for b in by_block}
        for b, recs in by_block.items():
            for rec in recs:
                for iid in _placeholders(rec.cls):
                    children[b].add(self.instances[iid].scope.block or "Block")
        done: set[str] = set()
        order: list[str] = []
        progress = True
        while progress:
            progress = False
            for b in by_block:
                if b not in done and children[b] <= done:
                    done.add(b)
                    order.append(b)
                    progress = True
        # A block that uses itself (recursion ended by a compile-time `if`) has no such order: its
        # instances become classes one by one, deepest first, sharing a class only when identical.
        recursive = sorted((rec for b in by_block if b not in done for rec in by_block[b]),
                           key=lambda rec: -len(rec.scope.path.split(".")))
        for rec in recursive:
            rec.cls.init = [Line(_resolve(ln.code, self.calls), ln.comment) for ln in rec.cls.init]
            text = "\n".join(_class_text(rec.cls))
            block = rec.scope.block or "Block"
            if (block, text) in self.identical:
                self.calls[rec.iid] = self.identical[(block, text)]
            else:
                self._group_class(block, [(rec, _split_numbers(rec.cls)[1])])
                self.identical[(block, text)] = self.calls[rec.iid]
        for b in order:
            groups: dict[tuple[str, ...], list[tuple[_Instance, list[str]]]] = {}
            for rec in by_block[b]:
                rec.cls.init = [Line(_resolve(ln.code, self.calls), ln.comment) for ln in rec.cls.init]
                skeleton, numbers = _split_numbers(rec.cls)
                groups.setdefault(skeleton, []).append((rec, numbers))
            for members in groups.values():
                self._group_class(b, members)

    def _class_name(self, block: str) -> str:
        """``block`` for its first class if no reserved name is in the way; else ``tuple_``, ``BasicBlock_2``."""
        if block in self.held:
            self.held.remove(block)
            return block
        return self.globals.fresh(block)

    def _group_class(self, block: str, members: list[tuple["_Instance", list[str]]]) -> None:
        first = members[0][0]
        name = self._class_name(block)
        recs = [rec for rec, _ in members]
        # one constructor argument per distinct varying column: numbers share an argument only when
        # they are written the same in every instance (so `2` and `2.0` never do)
        positions: dict[tuple[str, ...], list[int]] = {}
        for pos, column in enumerate(zip(*(numbers for _, numbers in members))):
            if len(set(column)) > 1:
                positions.setdefault(column, []).append(pos)
        wanted = {column: _arg_name(column, recs, first.cls, pos[0]) for column, pos in positions.items()}
        # arguments are locals of __init__: they must not shadow the classes and imports it uses
        args = Namespace(parent=self.globals)
        arg_of: dict[tuple[str, ...], str] = {}
        unnamed = 0
        for column in sorted(positions, key=lambda c: (wanted[c][0], positions[c][0])):
            rank, base = wanted[column]
            if rank == 3:
                unnamed += 1
                base = f"arg{unnamed}"
            arg_of[column] = args.fresh(base)
        declared = [p for p, _ in first.scope.args]
        order = sorted(positions, key=lambda c: (0, declared.index(wanted[c][1])) if wanted[c][0] == 0
                       else (1, positions[c][0]))
        cls = first.cls
        cls.name = name
        cls.params = [arg_of[c] for c in order]
        where = self.g.blocks.get(first.scope.block or "", first.span)
        cls.doc = f"Block `{block}`, defined at {_where(where.file, where.line)}."
        _substitute(cls, {pos: arg_of[c] for c, ps in positions.items() for pos in ps})
        for i, rec in enumerate(recs):
            call_args = ", ".join(f"{arg_of[c]}={c[i]}" for c in order)
            self.calls[rec.iid] = f"{name}({call_args})"
        self.classes.append(cls)


def _hints(hint: str | None, n: int) -> list[str]:
    """Variable names for ``n`` results: ``a,b`` (from ``a, b = ...``) names each one."""
    parts = (hint or "y").split(",")
    if len(parts) == n:
        return parts
    return [parts[0]] + [f"{parts[0]}_{i}" for i in range(1, n)]


def _split_args(text: str) -> list[str]:
    """Split a call's argument text at top-level commas."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _format_line(indent: str, code: str, comment: str | None) -> list[str]:
    """One statement, with its comment, wrapped at the call's parentheses when too long (black style)."""
    tail = f"  # {comment}" if comment else ""
    if len(indent) + len(code) + len(tail) <= LINE_LENGTH or not code.endswith(")") or "(" not in code:
        return [indent + code + tail]
    head, inner = code[: code.index("(") + 1], code[code.index("(") + 1: -1]
    inside = indent + "    "
    if len(inside) + len(inner) <= LINE_LENGTH:
        return [indent + head, inside + inner, indent + ")" + tail]
    return [indent + head] + [f"{inside}{arg}," for arg in _split_args(inner)] + [indent + ")" + tail]


def _format_lines(lines: list[Line], indent: str) -> list[str]:
    out: list[str] = []
    for ln in lines:
        out.extend(_format_line(indent, ln.code, ln.comment))
    return out


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
    for cls in em.classes + [net]:
        classes.append({
            "name": cls.name,
            "doc": cls.doc,
            "init": _format_lines(cls.init, " " * 8),
            "args": cls.args,
            "params": cls.params,
            "body": _format_lines(cls.body, " " * 8),
        })
    helpers = [HELPERS[h].strip("\n") for h in sorted(em.helpers)]
    kernels = em.fused.section() if em.fused is not None else ""
    code = "\n".join(helpers + [ln for c in classes for ln in c["init"] + c["body"]])
    inputs = [(n, batched_str(g.types[v])) for n, v in g.inputs]
    outputs = [(n, batched_str(g.types[v])) for n, v in g.outputs]
    params = f" ({', '.join(f'{k}={v!r}' for k, v in g.params.items())})" if g.params else ""
    doc = textwrap.wrap(safe_text(f"Network `{g.name}` from {Path(g.file).name}{params}."), 112,
                        break_long_words=False, break_on_hyphens=False)
    # at most 120 columns: continuation lines indented like the docstring, closing quotes on their own line
    classes[-1]["doc"] = doc[0] if len(doc) == 1 else "\n    ".join(doc + [""])
    return template.render(
        version=__version__,
        source=safe_text(Path(g.file).name),
        network=g.name,
        params=f"{total_params(g):,}",
        inputs=inputs,
        outputs=outputs,
        helpers=helpers,
        uses_torch=re.search(r"\btorch\.", code) is not None or bool(kernels),
        uses_functional=re.search(r"\bF\.", code) is not None or bool(kernels),
        kernels=kernels,
        classes=classes,
        output_names=[n for n, _ in g.outputs],
        ordered_dict=em.ordered_dict,
    )
