"""Identifiers for generated code, handed out so that none collides with another or with a reserved name.

As torch.fx's ``_Namespace`` does, the backend asks a :class:`Namespace` for every name it writes whose
text comes from a spec: block classes, constructor arguments and the attributes that keep them (local
variables go through :class:`dlc.backends.torch.emit.Namer`, which asks :meth:`Namespace.preferred`;
kernels, all in the ``fused_`` prefix, are numbered around the network's class in ``fused.py``). A name
that would collide is renamed, deterministically and the same way in every role:

- a reserved name (a Python keyword or builtin, a name the module imports or defines: ``tuple``,
  ``Scale``, ``OrderedDict``) gets a trailing underscore, PEP 8's convention: ``tuple_``;
- a name in a reserved prefix gets ``v_`` in front: ``fused_`` belongs to the kernels under ``--fuse``,
  and a class body would mangle a name starting with ``__`` (``_`` plus ``_channels`` is ``__channels``);
- a name already handed out gets a number: ``BasicBlock_2`` is the second class of block ``BasicBlock``,
  ``tuple_2`` the second of block ``tuple``.

Names that are state_dict keys (layer labels) are never renamed: they are checked in the front end
(``dlc.compiler.names``) and :meth:`Namespace.claim`-ed here as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import count


class Namespace:
    """The names of one Python scope; ``parent``'s names are avoided too (a constructor's arguments
    must not shadow the module's classes and imports)."""

    def __init__(self, reserved: Iterable[str] = (), prefixes: tuple[str, ...] = (),
                 parent: Namespace | None = None) -> None:
        self._reserved = frozenset(reserved)
        self._prefixes = ("__",) + prefixes
        self._parent = parent
        self._names: set[str] = set()
        self._numbered: dict[str, int] = {}  # stem -> the number to try first for its next numbered name

    def reserved(self, name: str) -> bool:
        """Never handed out as it is: reserved here, in a reserved prefix, or taken in the parent scope."""
        return (name in self._reserved or name.startswith(self._prefixes)
                or (self._parent is not None and self._parent.taken(name)))

    def taken(self, name: str) -> bool:
        """Reserved, or already handed out or claimed."""
        return name in self._names or self.reserved(name)

    def claim(self, name: str) -> None:
        """Record a name that is fixed (a layer attribute, the network's class)."""
        self._names.add(name)

    def _root(self, base: str) -> str:
        return "v_" + base if base.startswith(self._prefixes) else base

    def preferred(self, base: str) -> str:
        """``base`` renamed away from what is reserved (but not from what was handed out)."""
        name = self._root(base)
        return self._root(name + "_") if self.reserved(name) else name  # `_` -> `__` -> `v___`

    def fresh(self, base: str) -> str:
        """Hand out ``base`` or its first free renamed form (see the module docstring)."""
        first = self.preferred(base)
        stem = first.rstrip("_") or first  # `tuple_` is followed by `tuple_2`
        if self.taken(first):
            # no name is ever given back, so numbers below the last one handed out for this stem are still
            # taken: resuming there finds what a scan from 2 would (and block classes by the thousand stay linear)
            k = next(k for k in count(self._numbered.get(stem, 2)) if not self.taken(self._root(f"{stem}_{k}")))
            self._numbered[stem] = k + 1
            first = self._root(f"{stem}_{k}")  # `_` numbered is `__2`, in the reserved prefix: `v___2`
        self._names.add(first)
        return first
