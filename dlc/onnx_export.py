"""``dlc export`` and ``dlc.export``: a spec's network as an ONNX file.

The network is instantiated in eval mode (so outputs of training mode only are not part of the file), captured
by ``torch.export`` with every input's batch axis and every symbolic dimension of the spec (``T``, ``H``, ...)
dynamic, converted by ``torch.onnx`` (onnxscript) and checked by ``onnx.checker``. The ONNX inputs and outputs
carry the spec's names, and the dynamic axes are named ``batch`` and after the spec's symbols.

The dimensions are captured as ``Dim.DYNAMIC`` rather than ``Dim("T")``: torch then infers the range the
network allows (a convolution needs a few pixels), where a named ``Dim`` would fail on any such bound. The names
are put on the ONNX file's axes afterwards. This is the one command that imports torch; it needs the optional
``onnx`` and ``onnxscript`` packages (``pip install "dlc[onnx]"``).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlc.diagnostics import DlcError, Span, display
from dlc.files import write_output

if TYPE_CHECKING:
    from dlc.api import Compiled
    from dlc.compiler.ir import Graph

INSTALL_HINT = 'install the ONNX extra: pip install "dlc[onnx]"'
BATCH = 2  # the example batch: torch.export treats sizes 0 and 1 as fixed, so every example size is 2 or more
FIRST_SYMBOL = 8  # the example sizes of the spec's symbols: 8, 9, 10, ... (distinct, so none is taken for another)
MIN_OPSET = 18  # the oldest opset torch.onnx's dynamo exporter writes


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, the opset, and each input's and output's name and shape (the
    batch axis included; a dynamic axis by its name, ``batch`` or the spec's symbol)."""

    path: Path
    opset: int
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]


def require() -> None:
    """Import what exporting needs, or say which package is missing and how to install it."""
    for package in ("onnx", "onnxscript", "torch"):  # torch last: the slowest import, and always installed
        try:
            __import__(package)
        except ImportError as exc:
            raise DlcError("missing-dependency", f"`dlc export` needs the `{package}` package, which cannot be "
                                                 f"imported ({display(exc, 200)})", hint=INSTALL_HINT) from None


def export_onnx(compiled: Compiled, output: str | Path, opset: int | None = None,
                sizes: dict[str, int] | None = None, state_dict: Mapping[str, Any] | None = None) -> OnnxExport:
    """Write ``compiled``'s network to ``output`` as ONNX (see the module's docstring), with the weights of
    ``state_dict`` (a trained module's; default: a new instance's initial weights). ``sizes`` gives example
    values for the spec's symbols (any value the network accepts; the file stays dynamic in them). Raises
    DlcError for a network or option that cannot be exported, OSError / OutputRefused for the file."""
    require()
    import onnx
    import torch

    latest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= latest:
        raise DlcError("export-opset", f"cannot write ONNX opset {opset}",
                       hint=f"the exporter writes opsets {MIN_OPSET} to {latest}")
    graph = compiled.graph
    args, dynamic, axis_names = example_inputs(graph, sizes or {})
    model = compiled.instantiate().eval()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    names = [name for name, _ in graph.outputs if name not in graph.training_outputs]
    with _quiet():
        try:
            program = torch.export.export(model, args, dynamic_shapes=dynamic)
        except Exception as exc:  # torch's capture raises many types; the first line of each says what happened
            raise capture_failed(graph, exc, axis_names) from None
        try:
            onnx_program = torch.onnx.export(program, args, input_names=[n for n, _ in graph.inputs],
                                             output_names=names, opset_version=opset, dynamo=True,
                                             verbose=False)
        except Exception as exc:  # a torch.onnx.OnnxExporterError, whatever the node that failed
            raise unsupported(compiled, program, exc) from None
    proto = onnx_program.model_proto
    _name_axes(proto, axis_names)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:  # a bug of the exporter's: say so rather than write the file
        raise DlcError("export-failed", f"torch.onnx made a file for network `{graph.name}` that onnx.checker "
                                        f"rejects: {_first_line(exc)}", graph.span) from None
    write_output(Path(output), proto.SerializeToString())
    return OnnxExport(Path(output), proto.opset_import[0].version if opset is None else opset,
                      _shapes(proto.graph.input), _shapes(proto.graph.output))


def example_inputs(graph: Graph, sizes: dict[str, int]) -> tuple[tuple[Any, ...], dict[str, dict[int, Any]],
                                                                   dict[tuple[str, int], str]]:
    """Example tensors for the network's inputs (zeros: the capture never reads their values), their dynamic
    axes for ``torch.export``, and the name of each dynamic axis by (input, axis)."""
    import torch
    from torch.export import Dim

    symbols = sorted({d for _, v in graph.inputs for d in graph.types[v].shape if isinstance(d, str)})
    unknown = sorted(set(sizes) - set(symbols))
    if unknown:
        raise DlcError("export-size", f"`{display(unknown[0], 100)}` is not a symbolic dimension of an input of "
                                      f"network `{graph.name}`", graph.span,
                       hint=f"its symbols: {', '.join(symbols)}" if symbols else "its inputs have fixed sizes")
    values = {s: sizes.get(s, FIRST_SYMBOL + i) for i, s in enumerate(symbols)}
    batch = "batch"
    while batch in values:  # a spec symbol named `batch` keeps its name; the batch axis takes another
        batch += "_"
    args, dynamic, axis_names = [], {}, {}
    for name, v in graph.inputs:
        t = graph.types[v]
        shape = [BATCH] + [values[d] if isinstance(d, str) else d for d in t.shape]
        args.append(torch.zeros(shape, dtype=getattr(torch, t.dtype)))
        axes = {0: batch, **{i + 1: d for i, d in enumerate(t.shape) if isinstance(d, str)}}
        dynamic[name] = {axis: Dim.DYNAMIC for axis in axes}
        axis_names.update({(name, axis): label for axis, label in axes.items()})
    return tuple(args), dynamic, axis_names


def _name_axes(proto: Any, axis_names: dict[tuple[str, int], str]) -> None:
    """Rename torch's symbols (``s17``) to the spec's names on every shape of the model, inputs first."""
    renames = {}
    for value in proto.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if (value.name, axis) in axis_names and dim.dim_param:
                renames[dim.dim_param] = axis_names[value.name, axis]
    if not renames:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(s) for s in sorted(renames, key=len, reverse=True)) + r")\b")
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: renames[m.group(1)], dim.dim_param)


def _shapes(values: Any) -> dict[str, list[int | str]]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def unsupported(compiled: Compiled, program: Any, exc: Exception) -> DlcError:
    """The diagnostic for a network torch.onnx cannot convert: the ATen op and the spec's layer that made it,
    found from the exported node the converter names (its module path, else the line of generated code)."""
    reason = _first_line(_innermost(exc))
    failed = _failed_node(program, exc)
    if failed is None:
        return DlcError("export-unsupported", f"network `{compiled.graph.name}` cannot be converted to ONNX: "
                                              f"{reason}", compiled.graph.span)
    target = str(getattr(failed.target, "_overloadpacket", failed.target))
    node = _spec_node(compiled, failed)
    where = "a layer"
    if node is not None:
        from dlc.compiler.ops.registry import op_of

        what = op_of(node.op).describe(node.attrs)  # the diagram's label: an external layer's class
        where = f"`{node.module_path}` ({what})" if node.module_path else f"`{what}`"
    span: Span | None = node.span if node is not None else compiled.graph.span
    return DlcError("export-unsupported", f"ONNX cannot express {where}: no ONNX conversion of `{target}`", span,
                    hint=f"torch.onnx says: {reason}")


def _innermost(exc: BaseException) -> BaseException:
    """The first error of the chain torch.onnx raised (it wraps the converter's in its own)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _failed_node(program: Any, exc: BaseException) -> Any:
    """The node of ``program``'s graph the converter failed on, from its message (``translating node %name``)."""
    seen: BaseException | None = exc
    while seen is not None:
        match = re.search(r"translating node %(\w+)", str(seen))
        if match:
            return next((n for n in program.graph.nodes if n.name == match.group(1)), None)
        seen = seen.__cause__ or seen.__context__
    return None


def _spec_node(compiled: Compiled, failed: Any) -> Any:
    """The IR node whose layer made the exported node ``failed``: by module path, else by the spec line in the
    ``# file.dln:LINE`` comment of the generated line the node's stack trace ends in."""
    stack = failed.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values()]
    by_path = {n.module_path: n for n in compiled.graph.nodes if n.module_path}
    for path in reversed(paths):
        if path in by_path:
            return by_path[path]
    lines = re.findall(r'File "<dlc:[^"]*>", line (\d+)', failed.meta.get("stack_trace") or "")
    source = compiled.source.splitlines()
    for number in reversed(lines):
        if int(number) <= len(source):
            comment = re.search(r"# ([^\s:]+\.dln):(\d+)", source[int(number) - 1])
            if comment:
                return next((n for n in compiled.graph.nodes if Path(n.span.file).name == comment.group(1)
                             and n.span.line == int(comment.group(2))), None)
    return None


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return display(re.sub(r"\x1b\[[0-9;]*m", "", text), 300)


def capture_failed(graph: Graph, exc: BaseException, axis_names: dict[tuple[str, int], str]) -> DlcError:
    """The diagnostic for a network torch.export cannot capture with its dynamic axes. A dimension it fixes
    (``specialized it to be a constant``) is named; where the network has recurrent layers, the first is blamed:
    torch.export captures ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` for the example's sequence length only."""
    from dlc.compiler.ops.registry import op_of

    text = str(exc)
    fixed = re.search(r"L\['(\w+)'\]\.size\(\)\[(\d+)\]\)?! .*?specialized it to be a constant", text, re.S)
    if fixed and (fixed.group(1), int(fixed.group(2))) in axis_names:
        symbol = axis_names[fixed.group(1), int(fixed.group(2))]
        recurrent = [n for n in graph.nodes if op_of(n.op).family == "recurrent"]
        if recurrent:
            names = ", ".join(f"`{n.module_path or n.op}`" for n in recurrent)
            return DlcError("export-unsupported", f"`{symbol}` cannot stay dynamic in ONNX: torch.export captures "
                                                  f"recurrent layers ({names}) for one sequence length",
                            recurrent[0].span,
                            hint="the dynamo ONNX exporter unrolls nn.LSTM, nn.GRU and nn.RNN over time")
        return DlcError("export-failed", f"`{symbol}` cannot stay dynamic in ONNX: torch.export fixes it to the "
                                         f"example size", graph.span, hint=_first_line(exc))
    too_small = re.search(r"(\w+) = Dim\('\w+', min=(\d+)", text)
    hint = None
    if too_small:
        hint = f"an example size is too small: give one with --dim NAME=SIZE (at least {too_small.group(2)})"
    return DlcError("export-failed", f"torch.export cannot capture network `{graph.name}`: {_first_line(exc)}",
                    graph.span, hint=hint)


@contextlib.contextmanager
def _quiet():
    """Keep the exporter's progress lines and warnings off the command's output."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def sizes_of(items: list[str]) -> dict[str, int]:
    """The ``--dim NAME=SIZE`` options as a mapping; ValueError for one that is not a name and a size >= 2."""
    sizes = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name.strip().isidentifier() or not value.strip().isdigit() or int(value) < 2:
            raise ValueError(f"--dim expects NAME=SIZE with a size of 2 or more, got {display(item, 200)}")
        sizes[name.strip()] = int(value)
    return sizes


def describe(done: OnnxExport) -> str:
    """What ``dlc export`` reports: the opset and every input's and output's shape."""
    shapes = ", ".join(f"{name}: [{', '.join(map(str, dims))}]"
                       for name, dims in [*done.inputs.items(), *done.outputs.items()])
    return f"ONNX opset {done.opset}; {shapes}"
