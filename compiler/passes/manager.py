"""The pass manager: each optimisation level is an ordered list of named passes, run in order on a graph.

A pass is a function that changes a :class:`Graph` in place and returns whether it changed anything. What it
decides is a typed field of the IR (``Node.fold``, ``Node.in_place``, ``Graph.calls``), never a mark in
``attrs``. The manager verifies the elaborated IR before the first pass and the result after the last, and
after every pass when ``verify_each`` is on (the ``DLC_VERIFY_PASSES=1`` environment variable turns it on by
default; the tests set it). A pass that changed the graph invalidates its analyses (``Graph.analyses``, such
as the fusion plan). The manager keeps a log of the passes that ran, and calls ``after(pass, graph)`` after
each, for dumping the IR between passes.

Adding a pass: write ``def my_pass(g: Graph) -> bool`` with a one-line docstring, wrap it in a :class:`Pass`
and list it in the pipelines that should run it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

from dlc.compiler.ir import Graph
from dlc.compiler.passes.dead import remove_dead_code
from dlc.compiler.passes.fold_batchnorm import fold_batchnorm
from dlc.compiler.passes.in_place import compute_in_place
from dlc.compiler.passes.verify import VerifyError, infer_shapes, verify


@dataclass(frozen=True)
class Pass:
    """A named pass: ``run(graph)`` changes the graph in place and returns True if it changed anything."""

    name: str
    run: Callable[[Graph], bool]

    @property
    def doc(self) -> str:
        """What the pass does: the first line of its function's docstring."""
        return (self.run.__doc__ or "").strip().split("\n", 1)[0]


@dataclass(frozen=True)
class PassRun:
    """One entry of :attr:`PassManager.log`: a pass that ran and whether it changed the graph."""

    name: str
    changed: bool


INFER_SHAPES = Pass("infer-shapes", infer_shapes)
FOLD_BATCHNORM = Pass("fold-batchnorm", fold_batchnorm)
IN_PLACE = Pass("in-place", compute_in_place)
DEAD_CODE = Pass("dead-code", remove_dead_code)

# The passes of each optimisation level (the values of `optimize`, `dlc compile --optimize`), in order. The
# emitter adds what is not a rewrite of the IR (channels-last memory order for "inference").
PIPELINES: dict[str | None, tuple[Pass, ...]] = {
    None: (INFER_SHAPES, DEAD_CODE),
    "inference": (INFER_SHAPES, DEAD_CODE, FOLD_BATCHNORM, IN_PLACE),
}
OPTIMIZATIONS = tuple(PIPELINES)


def pipeline(level: str | None) -> tuple[Pass, ...]:
    """The passes of optimisation level ``level``; a ValueError names the levels there are."""
    if level not in PIPELINES:
        raise ValueError(f"unknown optimisation level {level!r}; expected one of {OPTIMIZATIONS}")
    return PIPELINES[level]


def verify_each_default() -> bool:
    """Whether managers verify after every pass unless told: ``DLC_VERIFY_PASSES`` set and not ``0``."""
    return os.environ.get("DLC_VERIFY_PASSES", "0") not in ("", "0")


class PassManager:
    """Runs ``passes`` in order (see the module docstring)."""

    def __init__(self, passes: Sequence[Pass], verify_each: bool | None = None,
                 after: Callable[[Pass, Graph], None] | None = None) -> None:
        self.passes = tuple(passes)
        self.verify_each = verify_each_default() if verify_each is None else verify_each
        self.after = after
        self.log: list[PassRun] = []

    def run(self, g: Graph) -> Graph:
        """Verify ``g``, run every pass on it, verify the result; returns ``g``. A :class:`VerifyError` after a
        pass names the pass."""
        verify(g)
        for p in self.passes:
            changed = p.run(g)
            if changed:
                g.analyses.invalidate()
            self.log.append(PassRun(p.name, changed))
            if self.verify_each:
                try:
                    verify(g)
                except VerifyError as exc:
                    raise VerifyError(f"after pass {p.name}: {exc}") from None
            if self.after is not None:
                self.after(p, g)
        if self.passes and not self.verify_each:
            verify(g)
        return g
