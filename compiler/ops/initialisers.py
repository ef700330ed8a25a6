"""Initialisers: the values of ``weight_init=``, ``bias_init=`` and a ``param``'s ``= ...``, one per ``nn.init``
function.

A spec writes an initialiser as a bare name (``xavier_uniform``) or a call (``normal(std=0.02)``, ``constant(-2)``);
its arguments are ``nn.init``'s, by position or keyword. The IR keeps it as plain data, a dict ``{"init": name,
**given arguments}`` (so serialised IR and the IR text stay plain), and the torch backend writes it as the
``nn.init`` call on a tensor: ``nn.init.normal_(self.pos, std=0.02)``.

Which tensors of a layer ``weight_init`` and ``bias_init`` reach is PyTorch's naming: every parameter whose own
name holds ``weight`` or ``bias`` (``weight_ih_l0`` and ``weight_hh_l0`` of an LSTM, ``in_proj_weight`` and
``out_proj.weight`` of attention), as a PyTorch user initialising "the weights" of a module means it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# nn.init.calculate_gain's nonlinearities, which kaiming_* take
NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
                  "sigmoid", "tanh", "relu", "leaky_relu", "selu")
MODES = ("fan_in", "fan_out")


@dataclass(frozen=True)
class InitDef:
    """One initialiser: its arguments (name, what they take: ``float``, ``mode`` or ``nonlinearity``, and the
    default, None where required), and whether it reads fans (a tensor of at least two dimensions)."""

    name: str
    args: tuple[tuple[str, str, Any], ...] = ()
    fans: bool = False

    @property
    def torch_name(self) -> str:
        return f"nn.init.{self.name}_"


_GAIN = (("gain", "float", 1.0),)
_KAIMING = (("a", "float", 0.0), ("mode", "mode", "fan_in"), ("nonlinearity", "nonlinearity", "leaky_relu"))
INITIALISERS: dict[str, InitDef] = {d.name: d for d in (
    InitDef("xavier_uniform", _GAIN, fans=True),
    InitDef("xavier_normal", _GAIN, fans=True),
    InitDef("kaiming_uniform", _KAIMING, fans=True),
    InitDef("kaiming_normal", _KAIMING, fans=True),
    InitDef("orthogonal", _GAIN, fans=True),
    InitDef("normal", (("mean", "float", 0.0), ("std", "float", 1.0))),
    InitDef("uniform", (("a", "float", 0.0), ("b", "float", 1.0))),
    InitDef("trunc_normal", (("mean", "float", 0.0), ("std", "float", 1.0), ("a", "float", -2.0), ("b", "float", 2.0))),
    InitDef("constant", (("val", "float", None),)),
    InitDef("zeros"),
    InitDef("ones"),
)}


class InitError(Exception):
    """An initialiser written wrong; ``index`` is the argument it is about (None: the whole call)."""

    def __init__(self, message: str, index: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.hint = hint


def signature(d: InitDef) -> str:
    """``normal(mean=0.0, std=1.0)``: how the initialiser is called, for hints."""
    parts = [a if default is None else f"{a}={default}" for a, _, default in d.args]
    return f"{d.name}({', '.join(parts)})"


def make_init(name: str, args: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """The IR form of the initialiser ``name`` called with ``args`` (keyword or None, value), each already
    evaluated; a bare name is called with none. Bare words (``mode=fan_out``) arrive as strings."""
    d = INITIALISERS[name]
    given: dict[str, Any] = {}
    names = [a for a, _, _ in d.args]
    for i, (kw, v) in enumerate(args):
        if kw is None:
            if given.keys() - set(names[:i]) or i >= len(names):
                raise InitError(f"`{name}` takes {len(names)} positional argument(s)" if i >= len(names) else
                                "positional arguments come before keyword arguments", i, hint=signature(d))
            kw = names[i]
        if kw not in names:
            raise InitError(f"`{name}` has no argument `{kw}`", i, hint=signature(d))
        if kw in given:
            raise InitError(f"argument `{kw}` given twice", i)
        given[kw] = _value(name, kw, {a: k for a, k, _ in d.args}[kw], v, i)
    for a, _, default in d.args:
        if default is None and a not in given:
            raise InitError(f"`{name}` needs the argument `{a}`", hint=signature(d))
    if name == "uniform" and given.get("a", 0.0) >= given.get("b", 1.0):
        raise InitError("`uniform`: `a` must be below `b`", hint="e.g. `uniform(-0.1, 0.1)`")
    if name in ("normal", "trunc_normal") and given.get("std", 1.0) <= 0:
        raise InitError(f"`{name}`: `std` must be above 0", hint=f"e.g. `{name}(std=0.02)`")
    return {"init": name, **given}


def _value(name: str, arg: str, kind: str, v: Any, index: int) -> Any:
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InitError(f"`{name}`: `{arg}` must be a number", index)
        if abs(v) > 3.4028234663852886e38:
            raise InitError(f"`{name}`: `{arg}` must fit a float32", index)
        return float(v)
    choices = MODES if kind == "mode" else NONLINEARITIES
    if v not in choices:
        raise InitError(f"`{name}`: `{arg}` must be one of {', '.join(choices)}", index)
    return v


def needs_fans(init: dict[str, Any]) -> bool:
    """Whether the initialiser (IR form) computes fans, so its tensor needs at least two dimensions."""
    return INITIALISERS[init["init"]].fans


def describe_init(init: dict[str, Any]) -> str:
    """The initialiser as the spec writes it: ``normal(std=0.02)``."""
    args = ", ".join(f"{k}={v}" for k, v in init.items() if k != "init")
    return f"{init['init']}({args})" if args else init["init"]
