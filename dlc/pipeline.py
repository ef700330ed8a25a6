"""The one driver: from a spec to what a backend makes of it. The CLI and the Python API both call :func:`run`.

``dlc compile net.dln -o net.py`` goes through six files, each step one call here:

1. ``dlc/cli.py`` reads the command line and calls :func:`run` with the torch backend;
2. ``dlc/pipeline.py`` (this file) runs the steps in order;
3. ``compiler/program.py`` parses the spec (``grammar/``) and the files it imports into one program;
4. ``compiler/elaborate.py`` elaborates the chosen network into the IR (the modules it lists do the work);
5. ``compiler/passes/manager.py`` verifies the IR and runs the passes of the optimisation level;
6. ``backends/torch/emit.py`` writes the PyTorch source, which ``cli.py`` writes to the file.

Steps 4 and 6 are each one entry point over a few modules of one job (``elaborate.py`` over expressions,
binding, lowering, nodes and naming; ``emit.py`` over the classes as data, their sharing and their layout);
none of them imports the module that imports it (tests/test_pipeline.py checks).

Nothing here imports torch or triton: ``dlc compile`` never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from dlc.compiler.elaborate import elaborate
from dlc.compiler.ir import Graph
from dlc.compiler.lint import lint
from dlc.compiler.passes import PassManager, pipeline
from dlc.compiler.program import load_program
from dlc.diagnostics import DlcError

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """How to compile a spec: which network, its parameters, the optimisation level and the torch backend's
    switches."""

    network: str | None = None  # None: the spec's first network
    overrides: Mapping[str, Any] = field(default_factory=dict)  # network parameters (--set, --params)
    optimize: str | None = None  # None, or "inference" (batchnorm folding, in-place ops, channels-last)
    fuse: bool = False  # Triton kernels for the fusion groups
    fused_recurrent: bool = False  # with fuse: LSTM/GRU layers run dlc's gate kernels


def build_graph(path: str | Path, overrides: Mapping[str, Any] | None = None, network: str | None = None,
                text: str | None = None, optimize: str | None = None) -> Graph:
    """The front end: parse ``path`` (or ``text`` given for it) and its imports, elaborate ``network`` with
    ``overrides``, lint it (``graph.warnings``), verify the IR and run the passes of ``optimize``. Raises DlcError
    for a mistake in the spec."""
    program = load_program(path, text)
    graph = elaborate(program, network, dict(overrides or {}))
    graph.warnings = lint(program, graph)
    try:
        return passes(graph, optimize)
    except DlcError as err:  # the warnings found so far go with the error (DlcError.diagnostics)
        err.warnings = [*graph.warnings, *err.warnings]
        raise


def passes(graph: Graph, optimize: str | None) -> Graph:
    """Every pass the IR goes through: the pipeline of the optimisation level, verified (see
    :mod:`dlc.compiler.passes.manager`)."""
    return PassManager(pipeline(optimize)).run(graph)


def run(path: str | Path, options: Options, backend: Callable[[Graph, Options], T],
        text: str | None = None) -> tuple[Graph, T]:
    """Compile the spec at ``path`` (or ``text`` given for it): the verified, optimised IR, and what ``backend``
    makes of it."""
    graph = build_graph(path, options.overrides, options.network, text=text, optimize=options.optimize)
    try:
        return graph, backend(graph, options)
    except DlcError as err:  # the warnings go with the error (DlcError.diagnostics)
        err.warnings = [*graph.warnings, *err.warnings]
        raise


def torch_source(graph: Graph, options: Options) -> str:
    """The torch backend: the generated PyTorch module's source."""
    from dlc.backends.torch.emit import emit_module  # the backends load only for the commands that use them

    return emit_module(graph, fuse=options.fuse, channels_last=options.optimize == "inference",
                       fused_recurrent=options.fused_recurrent)

