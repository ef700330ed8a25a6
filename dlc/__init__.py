"""dlc: a declarative graph-spec compiler for neural networks."""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, *, params_file=None, network=None, **params):
    """Compile the spec at ``path`` and return an instance of its network as a ``torch.nn.Module``.

    Keyword arguments override the network's parameters: ``dlc.load("resnet18.dln", classes=10)``.
    """
    from dlc.api import load as _load

    return _load(path, params_file=params_file, network=network, **params)


def compile(path, *, params_file=None, network=None, **params):
    """Compile the spec at ``path``; returns a :class:`dlc.api.Compiled` with ``.source`` and ``.graph``."""
    from dlc.api import compile as _compile

    return _compile(path, params_file=params_file, network=network, **params)


def export(spec, output, **options):
    """Export a spec's network (a path or a compiled network) to an ONNX file: ``dlc.export("net.dln",
    "net.onnx", classes=10)``. Needs ``pip install "dlc[onnx]"``; see :func:`dlc.api.export`."""
    from dlc.api import export as _export

    return _export(spec, output, **options)


__all__ = ["load", "compile", "export", "__version__"]
