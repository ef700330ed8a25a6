"""The ``__init__`` statements after a module's constructor that a spec asks for: initialisers and tied weights.

A ``param`` with an initialiser, or a layer with ``weight_init=`` / ``bias_init=``, gets one ``nn.init`` call per
tensor (``nn.init.xavier_uniform_(self.fc.weight)``), right after the module is made, so a twin built the same
way in PyTorch draws the same random numbers. ``tie=embed`` makes the layer's weight the other layer's
(``self.head.weight = self.embed.weight``): the state_dict keeps both keys, ``parameters()`` yields it once.
A layer inside a labelled group is reached through the group (``nn.init.zeros_(self.layers[0].bias)``, after the
group's constructor), and so is a tied layer there (``self.head.weight = self.g.embed.weight``).
"""

from __future__ import annotations

from typing import Any

from dlc.compiler.ir import Node
from dlc.compiler.ops.initialisers import INITIALISERS, needs_fans
from dlc.compiler.ops.param import parameter_tensors, step_layer
from dlc.compiler.ops.pytorch import Filled, Var
from dlc.compiler.ops.registry import op_of
from dlc.compiler.types import Type


def init_call(init: dict[str, Any], tensor: str) -> Filled:
    """``nn.init.normal_(self.pos, std=0.02)``: the initialiser (IR form) applied to the tensor ``tensor``."""
    d = INITIALISERS[init["init"]]
    values: dict[str, Any] = {"tensor": Var(tensor)}
    defaults: dict[str, Any] = {}
    holes = ""
    for name, _, default in d.args:
        values[name] = init.get(name, default)
        if default is None:  # required (constant's val): written by position, as nn.init's docs do
            holes += f", {{{name}}}"
        else:
            defaults[name] = default
            holes += f"{{,{name}}}"
    return Filled(f"{d.torch_name}({{tensor}}{holes})", values, defaults)


def module_path(path: str) -> str:
    """``self.g[1].embed``: the module at the dotted ``path`` from ``self``, numbered children of an
    nn.Sequential indexed (``g.1`` is no Python attribute)."""
    return "self" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path.split("."))


def after_constructor(node: Node, ins: list[Type], declared: set[str], path: str | None = None) -> list[Filled]:
    """The statements that follow the constructor of ``node``'s module, at ``path`` from the class (its name unless
    it is inside a labelled group); ``declared``: the class's attributes so far."""
    a = node.attrs
    mod = module_path(path or str(node.name))
    if op_of(node.op).declared:  # a `param`: the tensor is the attribute
        init = a["init"]
        if init is None or init["init"] in ("zeros", "ones"):
            return []  # made by torch.zeros / torch.ones
        # fans are the declared (batch-less) tensor's, not those of the stored one with its leading 1
        return [init_call(init, f"{mod}[0]" if needs_fans(init) else mod)]
    cell = a["layer"] if isinstance(a.get("layer"), dict) else a  # bidirectional: the wrapped layer's arguments
    lines: list[Filled] = []
    tensors = None
    for key, which in (("weight_init", 0), ("bias_init", 1)):
        init = cell.get(key)
        if init is None:
            continue
        tensors = tensors or parameter_tensors(node.op, a, ins)
        assert tensors is not None, "checked when bound"
        lines += [init_call(init, f"{mod}.{t}") for t in tensors[which]]
    tie = step_layer(node.op, a, ins)[1].get("tie")  # timedistributed's module is its wrapped layer
    if tie is not None:
        assert tie.split(".")[0] in declared, "tie names a layer made before"
        lines.append(Filled("{mine}.weight = {theirs}.weight", {"mine": Var(mod), "theirs": Var(module_path(tie))}))
    return lines
