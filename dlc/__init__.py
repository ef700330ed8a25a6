"""dlc: a declarative graph-spec compiler for neural networks."""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, *, params_file=None, **params):
    """Compile the spec at ``path`` and return an instance of its network as a ``torch.nn.Module``."""
    from dlc.api import load as _load

    return _load(path, params_file=params_file, **params)


def compile(path, *, params_file=None, **params):
    """Compile the spec at ``path``; returns a :class:`dlc.api.Compiled` (source, IR, ...)."""
    from dlc.api import compile as _compile

    return _compile(path, params_file=params_file, **params)


__all__ = ["load", "compile", "__version__"]
