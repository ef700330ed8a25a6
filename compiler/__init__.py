"""The compiler: AST -> IR (elaboration, shape inference, verification, passes).

The steps, in order, are driven by :func:`dlc.pipeline.run` (and :func:`dlc.pipeline.build_graph` for the IR).
"""

from __future__ import annotations

from dlc.compiler.elaborate import elaborate
from dlc.compiler.ir import Graph, print_graph
from dlc.compiler.passes import PassManager
from dlc.compiler.program import load_program

__all__ = ["Graph", "PassManager", "elaborate", "load_program", "print_graph"]
