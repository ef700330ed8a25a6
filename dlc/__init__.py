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


def render(spec, out, **options):
    """Draw the network of ``spec`` (a path or a compiled network) into ``out`` (.svg, .png, .pdf, .dot, .tex)
    with the options of ``dlc render``: ``dlc.render("vit.dln", "vit.pdf", style="paper", width="3.5in")``."""
    from dlc.api import render as _render

    return _render(spec, out, **options)


def summary(spec, batch=1, format="table", dtype="float32", *, params_file=None, network=None, **params):
    """The text of ``dlc summary`` (``format``: table, csv, json, markdown) for a spec's path or a compiled
    network; keyword arguments override parameters or give symbolic sizes numbers (``T=128``)."""
    from dlc.api import summary as _summary

    return _summary(spec, batch, format, dtype, params_file=params_file, network=network, **params)


def loads(text, *, name="<string>", base=None, **params):
    """Compile a spec held in a string and return an instance of its network (see :func:`dlc.api.loads`)."""
    from dlc.api import loads as _loads

    return _loads(text, name=name, base=base, **params)


def compile_string(text, *, name="<string>", base=None, **params):
    """Compile a spec held in a string; returns a :class:`dlc.api.Compiled` (see :func:`dlc.api.compile_string`)."""
    from dlc.api import compile_string as _compile_string

    return _compile_string(text, name=name, base=base, **params)


def export(spec, output, **options):
    """Export a spec's network (a path or a compiled network) to an ONNX file: ``dlc.export("net.dln",
    "net.onnx", classes=10)``. Needs ``pip install "dlc[onnx]"``; see :func:`dlc.api.export`."""
    from dlc.api import export as _export

    return _export(spec, output, **options)


__all__ = ["load", "loads", "compile", "compile_string", "export", "render", "summary", "__version__"]
