"""Block instances whose code differs only in numbers share one class: those numbers become constructor
arguments. The comparison works on the statements' text with the numbers cut out (regular expressions over
text the backend wrote), to be replaced by a comparison of the statements' structure once the op facets give it.
"""

from __future__ import annotations

import re

from dlc.backends.torch.classes import ClassDef, Instance, Line
from dlc.backends.torch.namespace import Namespace
from dlc.compiler.names import RESERVED_ATTRS
from dlc.compiler.types import TensorType

_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
# A number standing alone (not part of a name, a string or another number).
_NUMBER = re.compile(r"(?<![\w.'\"])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w.'\"])")


def placeholder(iid: int) -> str:
    """Stands for the constructor call of block instance ``iid`` until its class is known (see :func:`resolve`)."""
    return f"\x00{iid}\x00"


def placeholders(cls: ClassDef) -> list[int]:
    """The block instances whose constructor calls ``cls.__init__`` holds as placeholders."""
    return [int(m) for ln in cls.init for m in _PLACEHOLDER.findall(ln.code)]


def resolve(code: str, calls: dict[int, str]) -> str:
    """``code`` with its placeholders replaced by the constructor calls in ``calls``."""
    return _PLACEHOLDER.sub(lambda m: calls[int(m.group(1))], code)


def class_text(cls: ClassDef) -> list[str]:
    """What two instances must agree on, number for number, to be one class."""
    return [ln.code for ln in cls.init] + ["|".join(cls.args)] + [ln.code for ln in cls.body]


def split_numbers(cls: ClassDef) -> tuple[tuple[str, ...], list[str]]:
    """The code with every number cut out (its shape), and the numbers in order."""
    skeleton: list[str] = []
    numbers: list[str] = []
    for text in class_text(cls):
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
    for text in class_text(cls):
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


def arg_name(column: tuple[str, ...], recs: list["Instance"], cls: ClassDef, pos: int) -> tuple[int, str]:
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


def substitute(cls: ClassDef, names: dict[int, str]) -> None:
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
