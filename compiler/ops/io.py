"""``input``: a network input, declared by ``input NAME: [shape] dtype`` rather than called.

Its node carries the declared name (``attrs["name"]``) and type; it has no module, no parameters and
no kernel, and is drawn as the diagram's entry point.
"""

from __future__ import annotations

from dlc.compiler.cost import free
from dlc.compiler.ops.registry import OpDef, ShapeError, register, set_costs


def _declared(attrs, ins):
    raise ShapeError("an input's type is its declaration's")  # never asked: declared ops keep their types


register(OpDef(
    "input", (), _declared, inputs=(), declared=True, family="io", draw="input",
    label=lambda a: f"input {a['name']}",
    doc="A network input: `input x: [C, H, W]` (dtype float32 unless given, e.g. `input ids: [T] int64`).",
))


# none of these multiplies matrices: FlopCounterMode counts nothing for them (dlc.compiler.cost)
set_costs(dict.fromkeys(("input",), free))
