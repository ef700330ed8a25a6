"""The Python API: ``dlc.compile`` and ``dlc.load`` for a spec file, ``dlc.compile_string`` and ``dlc.loads`` for
a spec held in a string, ``dlc.api.diagnose`` for every error and warning of a text (what an editor shows),
``dlc.summary``, ``dlc.render`` and ``dlc.export``.

A :class:`Compiled` network shows as its diagram in Jupyter (``_repr_svg_``), drawn by Graphviz's ``dot`` within
the time limit of ``dlc render``; :meth:`Compiled.diagram` gives it as a ``graphviz.Source`` to save or view. Its
``repr`` and ``str`` are a short text summary. Warnings about the spec (:mod:`dlc.compiler.lint`) are issued as
:class:`DlcWarning` through Python's ``warnings`` module and kept in ``Compiled.warnings``.
"""

from __future__ import annotations

import builtins
import linecache
import sys
import types
import warnings as pywarnings
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dlc.compiler.ir import Graph
from dlc.compiler.passes import total_params
from dlc.diagnostics import Diagnostic, DlcError, DlcWarning, display
from dlc.files import FileProblem, read_text
from dlc.limits import limit, raise_hint
from dlc.pipeline import Options, run, torch_source

if TYPE_CHECKING:
    import graphviz


@dataclass
class Compiled:
    """The result of compiling a spec: its IR and the generated PyTorch source."""

    graph: Graph
    source: str

    @property
    def class_name(self) -> str:
        return self.graph.name

    @property
    def warnings(self) -> list[Diagnostic]:
        """The warnings about the spec (unused layers and inputs, ...), in source order."""
        return list(self.graph.warnings)

    def _io(self, which: list[tuple[str, int]]) -> str:
        return ", ".join(f"{name}: {self.graph.types[v]}" for name, v in which)

    def __repr__(self) -> str:
        g = self.graph
        args = ", ".join(f"{k}={v!r}" for k, v in g.params.items())
        return (f"<Compiled {display(g.name)}({display(args, 200)}) from {display(g.file)}: inputs "
                f"{self._io(g.inputs)}; outputs {self._io(g.outputs)}; {total_params(g):,} parameters>")

    def __str__(self) -> str:
        g = self.graph
        lines = [f"network {display(g.name)} from {display(g.file)}"]
        if g.params:
            lines.append("  parameters: " + display(", ".join(f"{k}={v!r}" for k, v in g.params.items()), 500))
        lines += [f"  inputs:  {self._io(g.inputs)}", f"  outputs: {self._io(g.outputs)}",
                  f"  {total_params(g):,} trainable parameters, {len(g.nodes)} nodes"]
        if g.warnings:
            lines.append(f"  {len(g.warnings)} warning(s): " + ", ".join(sorted({w.code for w in g.warnings})))
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's text display: the summary of :meth:`__str__`."""
        printer.text(str(self))

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

    def summary(self, batch: int = 1, format: str = "table", dtype: str = "float32", **sizes: int) -> str:
        """The text of ``dlc summary``: layers, shapes, parameters, MACs, activation memory at ``batch``; ``sizes``
        give symbolic sizes numbers (``T=128``). External layers are counted by constructing their classes (this
        imports torch and their modules); "unknown" where that fails."""
        from dlc.backends.summary import summarize

        _check_summary_options(batch, format, dtype)
        return summarize(self.graph, True, batch, dtype, sizes, format)

    def diagram(self, depth: int | None = None, roll: bool = True, fusion: bool = False,
                rankdir: str = "TB", **options: Any) -> graphviz.Source:
        """The network's diagram (the options of ``dlc render``: ``style="paper"``, ``shapes``, ``width``) as a
        ``graphviz.Source``: ``.render()``, ``.view()`` and ``.pipe()`` draw it with Graphviz's ``dot``, without
        dlc's time limit."""
        import graphviz

        from dlc.backends.graphviz import to_dot

        return graphviz.Source(to_dot(self.graph, depth, roll, fusion, rankdir, **options), format="svg")

    def _repr_svg_(self) -> str:
        """The diagram as SVG, which Jupyter shows for the object. ``dot`` runs at most ``DOT_SECONDS`` (as for
        ``dlc render``); ``DotFailed`` says why nothing could be drawn."""
        from dlc.backends.graphviz import render_svg

        return render_svg(self.graph)


# Parameter values are small: a few numbers, strings and short lists. These bounds keep a hostile YAML text
# (deep nesting, a huge document) from exhausting the stack, the memory or the clock while it is read.
MAX_PARAMS_DEPTH = 32
MAX_PARAMS_NODES = 10_000
MAX_INT_CHARS = 4300  # Python's default limit for int(str) (sys.get_int_max_str_digits)


class ParamsLimitError(yaml.MarkedYAMLError):
    """A parameter text that breaks one of the bounds above (or uses an alias)."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _ParamsLoader(yaml.SafeLoader):
    """YAML's JSON subset for parameter values: null, booleans, numbers, strings, lists and mappings.

    Aliases are refused (an alias is how a short text expands into a huge value, the "billion laughs"), and so
    are nesting deeper than MAX_PARAMS_DEPTH, more than MAX_PARAMS_NODES keys and values (lists and mappings
    count as values too) and integers longer than MAX_INT_CHARS characters. A mapping may not give a key twice
    (YAML forbids it; PyYAML would keep the last silently) nor use merge keys (``<<``). Dates read as strings;
    the tags !!binary, !!set, !!omap, !!pairs are errors.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    yaml_constructors = {
        tag: constructor for tag, constructor in yaml.SafeLoader.yaml_constructors.items()
        if tag not in {f"tag:yaml.org,2002:{t}" for t in ("binary", "timestamp", "omap", "pairs", "set")}
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ParamsLimitError(f"aliases (*{event.anchor}) are not allowed in parameter values",
                                   event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_PARAMS_NODES:
            raise ParamsLimitError(f"more than {MAX_PARAMS_NODES:,} keys and values", event.start_mark)
        if self._depth >= MAX_PARAMS_DEPTH:
            raise ParamsLimitError(f"values nest more than {MAX_PARAMS_DEPTH} levels deep", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise ParamsLimitError("merge keys (<<) are not allowed in parameter values",
                                           key_node.start_mark)
                key = self.construct_object(key_node, deep=True)  # kept: the base class reuses it below
                if not isinstance(key, Hashable):
                    continue  # the base class reports it
                if key in first:
                    raise ParamsLimitError(f"duplicate key `{display(str(key), 100)}`, first given on line "
                                           f"{first[key].line + 1}", key_node.start_mark)
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):  # type: ignore[no-untyped-def]
        # int() refuses (ValueError) texts over 4300 digits, and `1:2:3...` (base 60) would grow without bound
        if len(node.value) > MAX_INT_CHARS:
            raise ParamsLimitError(f"an integer of {len(node.value):,} characters (at most {MAX_INT_CHARS:,})",
                                   node.start_mark)
        return super().construct_yaml_int(node)


_ParamsLoader.add_constructor("tag:yaml.org,2002:int", _ParamsLoader.construct_yaml_int)


def parse_param_value(text: str) -> Any:
    """A parameter value written in YAML (``--set NAME=VALUE``); raises yaml.YAMLError, ParamsLimitError
    for the bounds of :class:`_ParamsLoader`."""
    return yaml.load(text, Loader=_ParamsLoader)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A one-line description of a YAML error: what is wrong and where (PyYAML's own text spans lines)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        context = f"{exc.context}: " if exc.context else ""
        return f"{context}{exc.problem}{where}"
    return str(exc).split("\n", 1)[0]


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Network parameter overrides from a YAML mapping (a regular file within the limit ``MAX_PARAMS_BYTES``)."""
    shown = display(path)
    try:
        data = parse_param_value(read_text(Path(path), limit("MAX_PARAMS_BYTES")))
    except FileProblem as problem:
        too_large = problem.kind == "too-large"
        hint = raise_hint("MAX_PARAMS_BYTES") if too_large else None
        raise DlcError("params-file", f"cannot read parameter file {shown}: {problem.reason}", hint=hint) from None
    except ParamsLimitError as exc:
        raise DlcError("params-file", f"parameter file {shown}: {yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise DlcError("params-file", f"parameter file {shown} is not valid YAML: {yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise DlcError("params-file", f"parameter file {shown} must be a mapping of names to values")
    return data


def compile(path: str | Path, *, params_file: str | Path | None = None, network: str | None = None,
            fuse: bool = False, optimize: str | None = None, fused_recurrent: bool = False,
            **params: Any) -> Compiled:
    """Compile the spec at ``path`` with parameter overrides; raises :class:`DlcError` for spec errors.

    ``fuse=True`` emits the fused module (Triton kernels on CUDA, PyTorch ops elsewhere);
    ``optimize="inference"`` applies the inference rewrites (batchnorm folding, channels-last);
    ``fused_recurrent=True`` runs LSTM/GRU layers with dlc's gate kernels instead of nn.LSTM/cuDNN.
    """
    options = _options(params_file, network, fuse, optimize, fused_recurrent, params)
    return _warned(Compiled(*run(path, options, torch_source)))


def _options(params_file: str | Path | None, network: str | None, fuse: bool, optimize: str | None,
             fused_recurrent: bool, params: dict[str, Any]) -> Options:
    overrides = read_params_file(params_file) if params_file else {}
    overrides.update(params)
    return Options(network=network, overrides=overrides, optimize=optimize, fuse=fuse,
                   fused_recurrent=fused_recurrent)


def _warned(compiled: Compiled) -> Compiled:
    """Issue the spec's warnings as :class:`DlcWarning`, attributed to the caller's line outside dlc (Python shows
    each place once by default)."""
    level, frame = 1, sys._getframe(0)
    package = str(Path(__file__).parent)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    for w in compiled.graph.warnings:
        pywarnings.warn(DlcWarning.of(w), stacklevel=level)
    return compiled


def _string_path(text: str, name: str, base: str | Path | None) -> Path:
    """The path a spec text stands for: ``name``, in ``base`` when given (imports resolve from its folder)."""
    if not isinstance(text, str):
        raise TypeError(f"a spec text must be a str, got {type(text).__name__}")
    return Path(base) / name if base is not None else Path(name)


def compile_string(text: str, *, name: str = "<string>", base: str | Path | None = None,
                   params_file: str | Path | None = None, network: str | None = None, fuse: bool = False,
                   optimize: str | None = None, fused_recurrent: bool = False, **params: Any) -> Compiled:
    """Compile a spec held in a string, as :func:`compile` compiles a file.

    Diagnostics name the text ``name`` (``base/name`` when ``base`` is given) and quote its lines; its imports
    resolve relative to ``base``, or to the current directory.
    """
    options = _options(params_file, network, fuse, optimize, fused_recurrent, params)
    return _warned(Compiled(*run(_string_path(text, name, base), options, torch_source, text=text)))


def loads(text: str, *, name: str = "<string>", base: str | Path | None = None, params_file: str | Path | None = None,
          network: str | None = None, fuse: bool = False, optimize: str | None = None,
          fused_recurrent: bool = False, **params: Any) -> Any:
    """Compile a spec held in a string and return a new instance of its network (see :func:`compile_string`)."""
    return compile_string(text, name=name, base=base, params_file=params_file, network=network, fuse=fuse,
                          optimize=optimize, fused_recurrent=fused_recurrent, **params).instantiate()


def diagnose(text: str, path: str | Path, **params: Any) -> tuple[Compiled | None, list[Diagnostic]]:
    """Compile ``text`` as the spec at ``path`` (imports resolve from its folder) and return the compiled network
    (None when it has an error) with every diagnostic: the error and the warnings, in that order. Nothing is
    issued through ``warnings``: this is what an editor shows (see :func:`dlc.diagnostics.to_json`)."""
    try:
        compiled = Compiled(*run(_string_path(text, str(path), None), Options(overrides=params), torch_source,
                                 text=text))
    except DlcError as err:
        return None, err.diagnostics
    return compiled, compiled.warnings


def load(path: str | Path, *, params_file: str | Path | None = None, network: str | None = None,
         fuse: bool = False, optimize: str | None = None, fused_recurrent: bool = False, **params: Any) -> Any:
    """Compile the spec at ``path`` and return a new instance of its network (a ``torch.nn.Module``)."""
    return compile(path, params_file=params_file, network=network, fuse=fuse, optimize=optimize,
                   fused_recurrent=fused_recurrent, **params).instantiate()


def render(spec: str | Path | Compiled, out: str | Path, *, params_file: str | Path | None = None,
           network: str | None = None, depth: int | None = None, roll: bool = True, fusion: bool = False,
           rankdir: str = "TB", style: str = "default", shapes: bool = True, width: float | str | None = None,
           **params: Any) -> Path:
    """Draw a network into ``out`` (.svg, .png, .pdf, .dot or .tex) as ``dlc render`` does; returns ``out``.

    ``spec`` is a spec's path (compiled with ``params_file``, ``network`` and ``**params``) or a
    :class:`Compiled`. ``width`` is inches or a text such as ``"3.5in"``/``"8.5cm"``. A bad option or output
    suffix raises :class:`DlcError` (``render-option``); ``dot`` failing raises ``DotFailed``, and a missing
    ``dot`` raises ``DotFailed`` with how to install it.
    """
    from dlc.backends.diagram_output import FORMATS, DotFailed, parse_width
    from dlc.backends.graphviz import render_file

    target = Path(out)
    if target.suffix.lower().lstrip(".") not in FORMATS:
        raise DlcError("render-option", f"the output must end in .svg, .png, .pdf, .dot or .tex, got "
                                        f"{display(target.name)}")
    if isinstance(width, str):
        try:
            width = parse_width(width)
        except ValueError as exc:
            raise DlcError("render-option", f"width: {exc}") from None
    compiled = spec if isinstance(spec, Compiled) else compile(spec, params_file=params_file, network=network,
                                                               **params)
    try:
        message = render_file(compiled.graph, target, depth=depth, roll=roll, fusion=fusion, rankdir=rankdir,
                              style=style, shapes=shapes, width=width)
    except ValueError as exc:  # a style or rankdir that does not exist
        raise DlcError("render-option", str(exc)) from None
    if message is not None:  # dot is not installed: nothing was drawn
        raise DotFailed(message)
    return target


def summary(spec: str | Path | Compiled, batch: int = 1, format: str = "table", dtype: str = "float32", *,
            params_file: str | Path | None = None, network: str | None = None, **params: Any) -> str:
    """The text of ``dlc summary`` for a spec's path or a :class:`Compiled` network.

    ``format`` is ``table``, ``csv``, ``json`` or ``markdown``; ``batch`` and ``dtype`` set the MACs and memory
    columns. Keyword arguments naming the network's parameters override them (a path only); the others give
    symbolic sizes numbers: ``dlc.summary("tagger.dln", T=128)``. Raises :class:`DlcError` for a spec error or
    an unknown name, ValueError for a bad ``batch``, ``format`` or ``dtype``.
    """
    _check_summary_options(batch, format, dtype)
    if isinstance(spec, Compiled):
        return spec.summary(batch, format, dtype, **params)
    from dlc.backends.summary import declared_params

    declared = declared_params(spec, network) or set()
    overrides = {k: v for k, v in params.items() if k in declared}
    sizes = {k: v for k, v in params.items() if k not in declared}
    return compile(spec, params_file=params_file, network=network, **overrides).summary(batch, format, dtype,
                                                                                         **sizes)


def _check_summary_options(batch: int, format: str, dtype: str) -> None:
    from dlc.compiler.types import FLOAT_DTYPES
    from dlc.backends.summary_format import FORMATS

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")


def export(spec: str | Path | Compiled, output: str | Path, *, opset: int | None = None,
           sizes: dict[str, int] | None = None, state_dict: Any = None, params_file: str | Path | None = None,
           network: str | None = None, optimize: str | None = None, **params: Any) -> Any:
    """Export the network of the spec at ``spec`` (or of a :class:`Compiled`) to the ONNX file ``output``, in
    eval mode, with the batch axis and the spec's symbolic dimensions dynamic; returns a
    :class:`dlc.onnx_export.OnnxExport` (the file's inputs and outputs with their shapes).

    ``state_dict``: the weights to export (``model.state_dict()`` of a trained ``dlc.load`` module; default: a
    new instance's initial weights). ``sizes``: example values for symbols (``{"T": 64}``) where the defaults
    are too small for the network. Needs the ``onnx`` extra (``pip install "dlc[onnx]"``); raises
    :class:`DlcError` for what cannot be exported."""
    from dlc.onnx_export import export_onnx

    if isinstance(spec, Compiled):
        if params or params_file or network or optimize:
            raise TypeError("export: parameters and options apply to a spec's path, not to a Compiled network")
        compiled = spec
    else:
        compiled = compile(spec, params_file=params_file, network=network, optimize=optimize, **params)
    return export_onnx(compiled, output, opset, sizes, state_dict)
