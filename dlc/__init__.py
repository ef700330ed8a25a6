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


__all__ = ["load", "compile", "__version__"]


def loads(text, *, name="<string>", base=None, **params):
    """Compile a spec held in a string and return an instance of its network (see :func:`dlc.api.loads`)."""
    from dlc.api import loads as _loads

    return _loads(text, name=name, base=base, **params)


def compile_string(text, *, name="<string>", base=None, **params):
    """Compile a spec held in a string; returns a :class:`dlc.api.Compiled` (see :func:`dlc.api.compile_string`)."""
    from dlc.api import compile_string as _compile_string

    return _compile_string(text, name=name, base=base, **params)


__all__ += ["loads", "compile_string"]
