"""The state of one elaboration, shared by the modules that elaborate a network.

:class:`Context` holds the program, the graph being built and the budgets (steps, nodes) a spec may spend;
:class:`Frame` is the environment of one network or block body. Expressions (:mod:`.expressions`), argument
binding (:mod:`.binding`), node creation (:mod:`.nodes`), layer application (:mod:`.lowering`) and the
statements of bodies (:mod:`.elaborate`) all read and write these; none of them imports the others' callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlc.compiler.ir import Graph
from dlc.compiler.naming import Container
from dlc.compiler.program import Program
from dlc.diagnostics import DlcError, Span
from dlc.grammar import ast
from dlc.limits import limit

# Text that every command writes again for each layer or block instance (a module path, a block's str and list
# arguments in the IR and the diagram) costs a step per this many characters, so that the output of a command
# stays proportional to the steps a spec may take however long its names and arguments are.
TEXT_PER_STEP = 16


@dataclass
class Frame:
    """The evaluation environment of one network or block body."""

    defn: ast.BlockDef
    names: dict[str, Any]
    container: Container
    hint: str | None = None  # the name(s) the statement assigns: names the value in generated code
    naming_call: ast.Call | None = None  # the call a single-name assignment applies (it names the layer)


class Context:
    """One elaboration: the program, the graph being built, and what the spec has spent of its budgets."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.graph: Graph | None = None
        self.depth = 0
        self.blocks: list[str] = []  # names of the block instances being elaborated, outermost first
        self.where: tuple[Span, Frame] | None = None  # the statement being elaborated (for too-deep errors)
        self.max_nodes = limit("MAX_NODES")
        self.max_steps = limit("MAX_STEPS")
        self.steps = 0
        # How often each module path (a block instance, a labelled group) has been applied: a shared instance is
        # applied more than once, and so is everything inside it; graph.calls keys each application (path, n).
        self.uses: dict[str, int] = {}

    @property
    def g(self) -> Graph:
        """The graph being built (set once the network's parameters are bound)."""
        assert self.graph is not None
        return self.graph

    def err(self, code: str, message: str, span: Span | None, frame: Frame | None, hint: str | None = None
            ) -> DlcError:
        """A diagnostic at ``span``, with the chain of block instances of ``frame``."""
        chain = frame.container.chain if frame is not None else ()
        return DlcError(code, message, span, hint=hint, chain=chain if len(chain) > 1 else ())

    def step(self, span: Span, frame: Frame | None, cost: int = 1) -> None:
        """Count ``cost`` steps of elaboration; too many is a runaway spec (a recursion that doubles, say)."""
        self.steps += cost
        if self.steps > self.max_steps:
            e = self.err("too-large", f"elaborating the network takes more than {self.max_steps:,} steps "
                         "(expressions evaluated, block instances, repeat iterations)", span, frame,
                         hint="check recursive blocks and repeat counts; if the network really is that large, "
                              "raise the limit with the environment variable DLC_MAX_STEPS")
            raise short_chain(e)

    def use(self, path: str) -> int:
        """The number of this application of the module at ``path``: 0, or more inside a shared instance."""
        n = self.uses.get(path, 0)
        self.uses[path] = n + 1
        return n


def short_chain(e: DlcError) -> DlcError:
    """Keep a deep chain of block instances readable: its first three and its last."""
    if len(e.chain) > 6:
        e.chain = e.chain[:3] + ("...",) + e.chain[-1:]
    return e
