"""Naming module attributes: where the layers and block instances of a spec get their attribute names.

Every network, block instance and labelled group is a :class:`Container`: a label names a layer
(``conv1: conv2d(...)``), an unlabelled stateful layer gets ``conv2d_0``, ``conv2d_1``, ..., a block instance
the block's name in snake case (``basic_block_0``), and inside a labelled group (an ``nn.Sequential``)
layers are numbered ``0``, ``1``, ... These names are state_dict keys, so they never depend on anything but
the spec.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from dlc.compiler.ir import Scope
from dlc.diagnostics import DlcError, Related, Span


@dataclass
class Container:
    """Where module attributes are created: a network, a block instance or a labelled group."""

    scope: tuple[Scope, ...]
    kind: str  # net | block | seq
    chain: tuple[str, ...]  # the block instances that led here, for diagnostics
    taken: dict[str, Span] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    index: int = 0
    # a labelled group whose blocks all receive these tensors besides the piped one (value ids), or None
    side: tuple[int, ...] | None = None

    def claim(self, name: str, span: Span) -> None:
        """Take ``name`` (a label); taking one twice is error[duplicate-name]."""
        if name in self.taken:
            raise DlcError("duplicate-name", f"`{name}` already names a layer here", span,
                           chain=self.chain if len(self.chain) > 1 else (),
                           related=(Related(self.taken[name], f"`{name}` first names a layer here"),))
        self.taken[name] = span

    def auto(self, base: str, span: Span) -> str:
        """The first free ``base_N`` (a label may already have taken one)."""
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
        """The next position in a labelled group, as a name."""
        name = str(self.index)
        self.index += 1
        self.taken[name] = span
        return name

    def path_of(self, name: str) -> str:
        """The module path of the attribute ``name`` here (``layer1.0.conv1``)."""
        return ".".join([s.name for s in self.scope] + [name])

    def enter(self, scope: Scope, kind: str, link: str) -> Container:
        """The container inside the new ``scope`` (a block instance or a group); ``link`` extends the chain."""
        return Container(self.scope + (scope,), kind, self.chain + (link,))


@functools.lru_cache(maxsize=None)  # once per block name, not once per instance
def snake(name: str) -> str:
    """`BasicBlock` -> `basic_block`, `ConvBNReLU` -> `conv_bn_re_lu` (an acronym stays one word)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
