"""The fused part of the PyTorch backend (``dlc compile --fuse``).

The module emitter asks this class what to do with each node: a node inside a fusion group only
declares its module (in its own place, so parameters keep the unfused order) until the group's
last node, where one call of the group's kernel is written; recurrent layers and attention get
forwards of their own. The kernels, with the runtime they need, form the last section of the
generated file (see :meth:`FusedEmitter.section`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dlc.backends.torch.classes import Line, folded_call, location, node_statements, result_hints
from dlc.backends.torch.initialise import module_path
from dlc.backends.triton.codegen import Source
from dlc.backends.triton.spec import AffineArg, BiasArg, KernelSpec, RowWeightsArg, ValueArg, WeightArg, kernel_for
from dlc.backends.triton.runtime import runtime_section
from dlc.compiler.fusion import FusionGroup, describe_group, fusion_plan
from dlc.compiler.ir import Graph, Node
from dlc.compiler.names import KERNEL_PREFIX
from dlc.compiler.ops.kernel import Anchor, Recurrent
from dlc.compiler.ops.pytorch import Ctx, check_finite, safe_text
from dlc.compiler.ops.registry import op_of
from dlc.compiler.types import TensorType

if TYPE_CHECKING:
    from dlc.backends.torch.emit import Namer

KERNEL_GROUPS = ("anchor", "elementwise", "row")


def _kernel_names(name: str) -> tuple[str, ...]:
    """The names one generated kernel defines (see backends/triton/codegen.py's ``Source``)."""
    return (name, f"{name}_forward", f"{name}_backward", f"{name}_reference")


class FusedEmitter:
    def __init__(self, g: Graph, recurrent: bool = False) -> None:
        self.g = g
        self.plan = fusion_plan(g, recurrent=recurrent)
        self.kernels: dict[tuple, KernelSpec] = {}
        self.names: set[str] = {g.name}
        self.last_number: dict[str, int] = {}  # kernel base name -> the number its last kernel got
        self.sections: set[str] = {"core"}
        self.recurrent = False

    # ---- questions the module emitter asks -------------------------------------------------------

    def kernel_group(self, node: Node) -> FusionGroup | None:
        grp = self.plan.group_of.get(node.id)
        if grp is not None and grp.kind in KERNEL_GROUPS and grp.last == node.id:
            return grp
        return None

    def absorbed(self, node: Node) -> bool:
        """A member of a kernel group other than its last: its work happens in the group's kernel."""
        grp = self.plan.group_of.get(node.id)
        return grp is not None and grp.kind in KERNEL_GROUPS and grp.last != node.id

    def step_inputs(self, node: Node) -> list[int]:
        if self.absorbed(node):
            return []
        grp = self.kernel_group(node)
        return list(node.inputs) if grp is None else list(grp.inputs)

    def own_forward(self, node: Node) -> bool:
        grp = self.plan.group_of.get(node.id)
        return grp is not None and grp.kind in ("recurrent", "attention")

    # ---- recurrent layers and attention -------------------------------------------------------------

    def forward(self, node: Node, args: list[str], mod: str | None, outs: list[str], ctx: Ctx) -> list[str]:
        grp = self.plan.group_of[node.id]
        if grp.kind == "attention":
            self.sections.add("attention")
            q = args[0]
            k = args[1] if len(args) > 1 else q
            v = args[2] if len(args) > 2 else k
            causal = ", causal=True" if node.attrs["causal"] else ""
            return [f"{outs[0]} = attention_sdpa({mod}, {q}, {k}, {v}{causal})  # scaled_dot_product_attention"]
        self.recurrent = True
        op = op_of(node.op)
        assert isinstance(op.kernel, Recurrent)
        cell = node.attrs["layer"] if op.wraps else node.attrs
        kw = ""
        if op.kernel.directions == 2:
            kw += f', merge="{node.attrs["merge"]}"'
        if not cell["return_sequences"]:
            kw += ", return_sequences=False"
        state = outs[1] if cell["return_state"] else "_"
        return [f"{outs[0]}, {state} = recurrent_forward({mod}, {', '.join(args)}{kw})  # fused gate kernels"]

    # ---- kernel groups --------------------------------------------------------------------------------

    def _register(self, grp: FusionGroup, spec: KernelSpec) -> KernelSpec:
        """The kernel that runs ``spec``: a new one, or an earlier group's with the same code."""
        where = self.g.nodes[grp.last].scope_path or self.g.name
        use = f"{where}: {describe_group(self.g, grp)}"
        known = self.kernels.get(spec.key())
        if known is None:
            # the other names in the fused_ prefix: earlier kernels and their functions, and the network's
            # class (the spec names every other class, variable and argument away from the prefix)
            base = KERNEL_PREFIX + spec.base_name()
            # names are never given back, so the scan resumes where the last one of this base stopped (from 1
            # every time, thousands of distinct kernels of one base were quadratic)
            k = self.last_number.get(base, 1)
            name = base if k == 1 else f"{base}_{k}"
            while any(n in self.names for n in _kernel_names(name)):
                k += 1
                name = f"{base}_{k}"
            self.last_number[base] = k
            spec.name = name
            self.names.update(_kernel_names(name))
            self.kernels[spec.key()] = spec
            self.sections.add({"linear": "linear", "row": "row", "elementwise": "core"}[spec.kind])
            known = spec
        known.uses[use] = None  # a dict: a list's `in` made thousands of groups of one kernel quadratic
        return known

    def emit_group(self, last: Node, step: int, namer: "Namer", body: list[Line], used: set[str]) -> None:
        """The call of ``last``'s group kernel (and of its anchor, when that runs in PyTorch) into ``body``;
        module-level names the lines read go into ``used``.

        The call sits under ``if use_triton(...)``; its ``else`` runs the group's layers as the unfused module
        does (``self.bn1(y)``, ``F.relu(y)``), so a module without a usable kernel (on a CPU, or while
        torch.compile or torch.export traces it) costs and captures what the plain module does.
        """
        grp = self.kernel_group(last)
        assert grp is not None
        nodes = [self.g.nodes[i] for i in grp.nodes]
        for n in nodes:
            check_finite(n.op, n.attrs, n.span)
        local = kernel_for(self.g, grp)  # this group's own call arguments (a shared kernel holds the first's)
        spec = self._register(grp, local)
        hint = last.hint or (last.name if last.name and last.name.isidentifier() else None)
        out = namer.bind(last.outputs[0], result_hints(hint, 1)[0], step)
        kernel: list[tuple[str, Node]] = []  # the kernel path's lines
        head = nodes[0]
        anchor_var = None
        first = ""  # the tensor whose device decides whether the kernel can run: its first tensor argument
        shared: Line | None = None  # the anchor's line when both paths run it alike
        bias_var = ""  # a folded layer's bias (its batchnorm's shift), which the kernel adds
        args: list[str] = []
        anchor = op_of(head.op).kernel
        matmul = isinstance(anchor, Anchor) and anchor.matmul
        materialised = not matmul or head.fold is not None  # the anchor runs in PyTorch
        in_kernel = any(isinstance(a, BiasArg) for a in local.call)  # the conv's bias is added by the kernel
        if grp.kind == "anchor" and materialised:
            later = {namer.names[v] for n in nodes[1:] for v in n.inputs if v in namer.names}
            anchor_var = out if out not in later else namer.temp("conv", step)
            x = namer.names[head.inputs[0]]
            if head.fold is not None:
                # the folded shift is the kernel's bias input (see kernel_for)
                used.add("folded_without_bias")
                bias_var = namer.temp("bias", step)
                call = folded_call(head, x, "folded_without_bias")
            elif in_kernel:
                self.sections.add("conv")
                call = f"conv_without_bias({module_path(head.name)}, {x})"
            else:
                call = f"{module_path(head.name)}({x})"
            if in_kernel:
                target = f"{anchor_var}, {bias_var}" if bias_var else anchor_var
                kernel.append((f"{target} = {call}", head))
            else:
                shared = Line(f"{anchor_var} = {call}", location(head.span.file, head.span.line))
            first = x if in_kernel else anchor_var
        elif grp.kind == "anchor":
            first = namer.names[head.inputs[0]]
            args += [first, f"{module_path(head.name)}.weight"]
        for arg in local.call:
            if isinstance(arg, ValueArg):
                if grp.kind == "anchor" and arg.value == head.outputs[0]:
                    if materialised:
                        args.append(anchor_var)
                    continue
                args.append(namer.names[arg.value])
                first = first or args[-1]
            elif isinstance(arg, BiasArg):
                t = self.g.types[head.outputs[0]]
                assert isinstance(t, TensorType)
                view = "" if matmul else ".view(-1" + ", 1" * (t.rank - 1) + ")"  # per channel, axis 0
                bias = bias_var if head.fold is not None else f"{module_path(head.name)}.bias"
                args.append(f"{bias}{view}")
            elif isinstance(arg, AffineArg):
                self.sections.add("batchnorm")
                bn = self.g.nodes[arg.node]
                src = anchor_var if (anchor_var and arg.value == head.outputs[0]) else namer.names[arg.value]
                args.append(f"*batchnorm_affine({module_path(bn.name)}, {src})")
            elif isinstance(arg, RowWeightsArg):
                ln = self.g.nodes[arg.node]
                args += [f"{module_path(ln.name)}.weight", f"{module_path(ln.name)}.bias"]
            elif isinstance(arg, WeightArg):
                layer = self.g.nodes[arg.node]
                view = "" if len(arg.shape) == 1 else f".view({', '.join(map(str, arg.shape))})"
                args.append(f"{module_path(layer.name)}.weight{view}")
        if spec.dropout == "train":
            args.append("training=self.training")
        elif spec.dropout == "always":
            args.append("training=True")
        kernel.append((f"{out} = {spec.name}({', '.join(args)})", last))
        if shared is not None:
            body.append(shared)
        assert first, "a kernel group reads no tensor"
        body.append(Line(f"if use_triton({first}):"))
        for j, (code, node) in enumerate(kernel):
            comment = location(node.span.file, node.span.line)
            if j == len(kernel) - 1:
                spec_lines = sorted({n.span.line for n in nodes})
                span = f"{spec_lines[0]}" if len(spec_lines) == 1 else f"{spec_lines[0]}-{spec_lines[-1]}"
                chain = [n.name if n.name and not n.name.isdigit() else n.op for n in nodes]
                if len(chain) > 5:
                    chain = chain[:2] + ["..."] + chain[-2:]
                comment = f"{safe_text(Path(last.span.file).name)}:{span}: {' -> '.join(chain)}"
            body.append(Line(code, comment, indent=1))
        body.append(Line("else:", "the unfused ops: on a CPU, or traced by torch.compile / torch.export"))
        plain = nodes[1:] if shared is not None else nodes
        known = {head.outputs[0]: anchor_var} if shared is not None else {}
        body += self._plain(plain, known, out, step, namer, used)

    def _plain(self, nodes: list[Node], known: dict[int, str], out: str, step: int, namer: "Namer",
               used: set[str]) -> list[Line]:
        """The unfused module's statements for ``nodes`` (a group's members, in order), the last one's result in
        ``out``; ``known`` names values made before them. An intermediate result is written to ``out`` too where
        nothing still to be read is there, so a chain reads ``y = self.bn1(y)``, ``y = F.relu(y)``."""
        names = dict(known)
        lines: list[Line] = []
        ctx = Ctx(lambda base: namer.temp(base, step))
        for i, node in enumerate(nodes):
            args = [names.get(v) or namer.names[v] for v in node.inputs]
            if i == len(nodes) - 1:
                target = out
            else:
                # the names later members read (values made inside the group from here on have none yet)
                pending = {names.get(v) or namer.names.get(v) for n in nodes[i + 1 :] for v in n.inputs}
                target = out if out not in pending else namer.temp(node.hint or node.op, step)
            names[node.outputs[0]] = target
            mod = module_path(node.name) if node.name is not None else None
            codes = node_statements(self.g, node, args, mod, [target], ctx, used)
            for j, code in enumerate(codes):
                used.update(code.names())
                where = location(node.span.file, node.span.line) if j == len(codes) - 1 else None
                lines.append(Line(code, where, indent=1))
        return lines

    # ---- the kernel section -----------------------------------------------------------------------------

    def section(self) -> str:
        """The kernel section: the runtime it needs, then one block per generated kernel."""
        parts = [
            "# ---- Fused kernels (dlc compile --fuse) " + "-" * 78,
            "# Each kernel below was generated from the fusion groups listed above it. On CUDA tensors (and on",
            "# CPU tensors under TRITON_INTERPRET=1) the module runs them; elsewhere, without triton, and while",
            "# torch.compile or torch.export traces the module, it runs the unfused layers' ops instead.",
            "",
            runtime_section("common", self.sections),
        ]
        if self.recurrent:
            parts += ["", "", runtime_section("recurrent")]
        for spec in self.kernels.values():
            parts += ["", "", Source(spec).text().rstrip("\n")]
        return "\n".join(parts)
