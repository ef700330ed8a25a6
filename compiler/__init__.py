"""The compiler: AST -> IR (elaboration, shape inference, verification, passes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlc.compiler.elaborate import elaborate
from dlc.compiler.ir import Graph, print_graph
from dlc.compiler.passes import run_passes
from dlc.compiler.program import load_program


def build_graph(path: str | Path, overrides: dict[str, Any] | None = None, network: str | None = None,
                text: str | None = None) -> Graph:
    """Parse, elaborate and check the spec at ``path``; returns the verified IR."""
    program = load_program(path, text)
    return run_passes(elaborate(program, network, overrides))


__all__ = ["Graph", "build_graph", "elaborate", "load_program", "print_graph", "run_passes"]
