"""The Python API: ``dlc.compile`` and ``dlc.load``."""

from __future__ import annotations

import builtins
import linecache
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlc.compiler import Graph, build_graph
from dlc.diagnostics import DlcError


@dataclass
class Compiled:
    """The result of compiling a spec: its IR and the generated PyTorch source."""

    graph: Graph
    source: str

    @property
    def class_name(self) -> str:
        return self.graph.name

    def module(self) -> types.ModuleType:
        """Import the generated source as a fresh Python module."""
        name = f"dlc_generated_{self.graph.name}_{id(self):x}"
        filename = f"<dlc:{Path(self.graph.file).name}:{self.graph.name}>"
        # register the text so tracebacks through generated code show its lines
        linecache.cache[filename] = (len(self.source), None, self.source.splitlines(True), filename)
        mod = types.ModuleType(name)
        mod.__file__ = filename
        exec(builtins.compile(self.source, filename, "exec"), mod.__dict__)
        sys.modules[name] = mod
        return mod

    def instantiate(self) -> Any:
        """A new instance of the network's ``nn.Module`` (needs torch)."""
        return getattr(self.module(), self.graph.name)()


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Network parameter overrides from a YAML mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DlcError("params-file", f"cannot read parameter file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise DlcError("params-file", f"parameter file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise DlcError("params-file", f"parameter file {path} must be a mapping of names to values")
    return data


def compile(path: str | Path, *, params_file: str | Path | None = None, network: str | None = None,
            fuse: bool = False, optimize: str | None = None, fused_recurrent: bool = False,
            **params: Any) -> Compiled:
    """Compile the spec at ``path`` with parameter overrides; raises :class:`DlcError` for spec errors.

    ``fuse=True`` emits the fused module (Triton kernels on CUDA, PyTorch ops elsewhere);
    ``optimize="inference"`` applies the inference rewrites (batchnorm folding, channels-last);
    ``fused_recurrent=True`` runs LSTM/GRU layers with dlc's gate kernels instead of nn.LSTM/cuDNN.
    """
    from dlc.backends.torch.emit import emit_module
    from dlc.compiler.passes import optimize_graph

    overrides = read_params_file(params_file) if params_file else {}
    overrides.update(params)
    graph = optimize_graph(build_graph(path, overrides, network), optimize)
    return Compiled(graph, emit_module(graph, fuse=fuse, channels_last=optimize == "inference",
                                       fused_recurrent=fused_recurrent))


def load(path: str | Path, *, params_file: str | Path | None = None, network: str | None = None,
         fuse: bool = False, optimize: str | None = None, fused_recurrent: bool = False, **params: Any) -> Any:
    """Compile the spec at ``path`` and return a new instance of its network (a ``torch.nn.Module``)."""
    return compile(path, params_file=params_file, network=network, fuse=fuse, optimize=optimize,
                   fused_recurrent=fused_recurrent, **params).instantiate()
