"""External PyTorch layers: the op ``external``, one node per application of an ``extern`` a spec declares.

``extern Bilin(in1_features: int, in2_features: int, out_features: int) = "torch.nn.Bilinear" { shape =
[out_features] }`` declares the layer (see :mod:`dlc.compiler.external`, which binds its arguments and evaluates
its shape rule); each application becomes a node of this op, whose attributes hold all of it: the dotted
``path`` of the class (checked to be dotted identifiers, so it is safe as code), the constructor's keyword
arguments and the output types the spec's rule gave. The generated module imports the path's module and
constructs the class with those keywords: ``torch.nn.Bilinear(in1_features=16, in2_features=12,
out_features=8)``. The op is internal: a spec calls the extern by its declared name, never ``external``.
"""

from __future__ import annotations

from typing import Any

from dlc.compiler.cost import unknown
from dlc.compiler.kinds import Kind, Site
from dlc.compiler.ops.pytorch import CallSite, Filled, Form, Torch, assign
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.types import TensorType, Type


class Given(Kind):
    """An attribute the compiler fills in itself (the op is never called by name, so no spec binds it)."""

    name = "given"

    def coerce(self, v: Any, site: Site) -> Any:
        return v


def module_of(path: str) -> str:
    """The module part of a class's dotted path: ``torch.nn`` of ``torch.nn.SiLU``."""
    return path.rpartition(".")[0]


def class_of(path: str) -> str:
    """The class part of a dotted path: ``SiLU`` of ``torch.nn.SiLU``."""
    return path.rpartition(".")[2]


def output_types(attrs: dict[str, Any]) -> tuple[TensorType, ...]:
    """The output types an external node's attributes record (its shape rule's result)."""
    return tuple(TensorType(tuple(shape), dtype, layout) for shape, dtype, layout in attrs["outputs"])


def _infer(attrs: dict[str, Any], ins: list[Type]) -> tuple[Type, ...]:
    if len(ins) != attrs["inputs"]:
        raise ShapeError(f"`{class_of(attrs['path'])}` was declared for {attrs['inputs']} input(s), got {len(ins)}",
                         code="wrong-inputs")
    return output_types(attrs)


def _template(attrs: dict[str, Any]) -> str:
    # the path is dotted identifiers and the keywords are identifiers (both checked where the spec declares
    # them), so they are safe as template text; each value goes through a hole named after its keyword
    # `external_layer` (runtime) constructs the class only if it is an nn.Module class: a spec cannot make the
    # generated module call a function it names (`subprocess.call(args=..., shell=True)`)
    return "external_layer(" + ", ".join([attrs["path"]] + [f"{k}={{{k}}}" for k, _ in attrs["kwargs"]]) + ")"


def _fill(attrs: dict[str, Any], ins: list[Type], outs: list[Type]) -> dict[str, Any]:
    return dict(attrs["kwargs"])


def _call(site: CallSite) -> list[Filled]:
    # every result the shape rule declares: several unpack the tuple the module returns
    return [assign(site.outs, site.call())]


register(OpDef(
    "external", (A("path", "str"), A("kwargs", Given()), A("inputs", Given()), A("outputs", Given())), _infer,
    inputs=(), variadic=True, outputs=lambda a: len(a["outputs"]), stateful=True, internal=True,
    torch=Torch(module=Form(_template, _fill), call=_call, imports=lambda a: (module_of(a["path"]),)),
    family="external", label=lambda a: class_of(a["path"]),
    doc="An external PyTorch layer a spec declares with `extern` (see External layers): its class constructed "
        "with the call's arguments as keywords, its output shapes from the spec's rule."))


set_costs({"external": unknown})  # only its class knows what it computes
