"""The command line: ``dlc compile | check | summary | ir | render | export | fmt | diff | lsp``.

Exit codes: 0 success (also when the reader of stdout goes away; warnings on stderr), 1 an error in the spec
(diagnostics on stderr), a warning under --Werror, or Graphviz's dot failing, 2 a usage error or an output that
cannot be written (a -o file, or standard output: closed, or a full disk), 3 a bug in dlc. A closed or failing
stderr loses the messages but not the exit status. Text from outside (file names, --set names) is printed escaped
(dlc.diagnostics.display).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import yaml

from dlc import __version__
from dlc.collector import fewer_collections
from dlc.diagnostics import MAX_MESSAGE, DlcError, display, render
from dlc.files import FileProblem, OutputRefused, check_regular, tracking_inputs, write_output

if TYPE_CHECKING:  # the compiler loads when a command runs, not for --help
    from dlc.compiler.ir import Graph
    from dlc.pipeline import Options

T = TypeVar("T")


class UsageError(Exception):
    """A mistake in the command line (exit 2)."""


class ToolError(Exception):
    """A helper program (Graphviz's dot) failed (exit 1)."""


class OutputError(Exception):
    """An output that cannot be written: a -o file (exit 2, like a usage error, but without the usage line)."""


class StdoutError(OutputError):
    """Standard output cannot be written (closed, a full disk). Raised past the commands to :func:`main`, which
    owns the final flush where most such failures appear."""


class _ClosedStdout:
    """Stands for ``sys.stdout`` while Python has none (the command ran with ``>&-``): writing to it, which
    argparse's --help does too, is a :class:`StdoutError`."""

    def write(self, text: str) -> int:
        raise StdoutError("cannot write to standard output: it is closed")

    def flush(self) -> None:
        """Nothing was written, so there is nothing to flush."""


class _NoStderr:
    """Stands for ``sys.stderr`` while Python has none (``2>&-``): messages are lost, the exit status is kept.
    Without it ``print(file=sys.stderr)`` would print to stdout, into the generated module."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        """Nothing to flush: the text is dropped."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with the arguments it quotes in its messages shown escaped."""

    def error(self, message: str):  # type: ignore[override]
        super().error(display(message))

    def _print_message(self, message: str, file=None) -> None:  # type: ignore[no-untyped-def]
        # argparse's own version drops write errors: --help or --version into a full disk would exit 0
        if message and file is sys.stdout:
            _out(message)
        elif message:
            _err(message)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from dlc.api import ParamsLimitError, parse_param_value, read_params_file

    values: dict[str, Any] = {}
    if args.params:
        try:  # a path that names no regular file is a mistake in the command line (as for the spec)
            check_regular(Path(args.params))
        except FileProblem as problem:
            raise UsageError(f"--params: {problem.reason}: {display(args.params)}") from None
        values.update(read_params_file(args.params))
    for item in args.set or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects NAME=VALUE, got {display(item, 200)}")
        if not key.isidentifier():
            raise UsageError(f"--set: `{display(key, 200)}` is not a parameter name")
        try:
            values[key] = parse_param_value(text) if text.strip() else ""
        except ParamsLimitError as exc:
            raise UsageError(f"--set {key}: {exc.problem}") from None
        except yaml.YAMLError:  # not YAML: the text itself (`--set act=gelu` reads as a string anyway)
            values[key] = text
    return values


def _compile(args: argparse.Namespace, backend: Callable[[Graph, Options], T], warn: bool = True
             ) -> tuple[Graph, T]:
    """Run the pipeline on the command's spec with its options; ``backend`` makes the command's output. The
    spec's warnings are printed first (with ``warn``); under --Werror they stop the command (exit 1)."""
    from dlc.pipeline import Options, run

    def checked(g: Graph, options: Options) -> T:
        if warn:
            for w in g.warnings:
                _report(render(w))
            if args.werror and g.warnings:
                raise ToolError(f"{len(g.warnings)} warning(s) treated as errors (--Werror)")
        return backend(g, options)

    spec = Path(args.spec)
    if not spec.is_file():
        raise UsageError(f"not a file: {display(spec)}" if spec.exists() else f"no such file: {display(spec)}")
    options = Options(network=args.network, overrides=_overrides(args), optimize=getattr(args, "optimize", None),
                      fuse=getattr(args, "fuse", False), fused_recurrent=getattr(args, "fused_recurrent", False))
    return run(spec, options, checked)


def cmd_compile(args: argparse.Namespace) -> int:
    from dlc.compiler.fusion import explain
    from dlc.pipeline import torch_source

    if args.check_kernels and not args.fuse:
        raise UsageError("--check-kernels compiles the kernels --fuse generates: add --fuse")

    def backend(g: Graph, options: Options) -> str:
        if args.explain_fusion:
            _err(explain(g, recurrent=args.fused_recurrent))
            if not args.fuse:
                _report("note: without --fuse the module runs none of these as kernels")
        if args.check_kernels:
            _err(_check_kernels(g, options))
        return torch_source(g, options)

    _write(args.output, _compile(args, backend)[1])
    return 0


def _check_kernels(g: Graph, options: Options) -> str:
    """The table of ``--check-kernels`` (a kernel that does not compile is a DlcError, exit 1)."""
    from dlc.backends.triton.check import NoTriton, check_kernels

    try:
        return check_kernels(g, channels_last=options.optimize == "inference", fused_recurrent=options.fused_recurrent)
    except NoTriton as exc:
        raise ToolError(str(exc)) from None


def _write(output: str | None, text: str) -> None:
    """Write to a file (creating its folder; atomically, never over an input) or to stdout for None / '-'."""
    if output in (None, "-"):
        _out(text)
        return
    try:
        write_output(Path(output), text.encode("utf-8"))
    except OutputRefused as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise OutputError(f"cannot write {display(output)}: {exc.strerror or exc}") from None
    _report(f"wrote {display(output)}")


def _out(text: str) -> None:
    """Write ``text`` to stdout (see :func:`_on_stdout`)."""
    _on_stdout(lambda: sys.stdout.write(text))


def _on_stdout(action: Callable[[], object]) -> None:
    """Write to or flush stdout; a failure is a :class:`StdoutError` (a closed pipe stays a BrokenPipeError)."""
    try:
        action()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a stream closed in this process
        raise StdoutError(f"cannot write to standard output: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    return display(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc, 200)


def cmd_check(args: argparse.Namespace) -> int:
    from dlc.compiler.passes import total_params

    if args.format == "json":
        from dlc.check_json import check_json

        text, status = check_json(args.spec, lambda: _compile(args, lambda g, _: total_params(g), warn=False),
                                  args.werror)
        _out(text)
        return status
    g, params = _compile(args, lambda g, _: total_params(g))
    warned = f", {len(g.warnings)} warning(s)" if g.warnings else ""
    _out(f"{display(args.spec)}: ok: network {g.name}, {len(g.nodes)} nodes, {params:,} parameters{warned}\n")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from dlc.backends.summary import split_sizes, summarize

    if args.batch < 1:
        raise UsageError(f"--batch must be 1 or more, got {args.batch}")
    args.set, sizes = split_sizes(args.spec, args.network, args.set or [])  # --set T=128: a symbolic size
    _out(_compile(args, lambda g, _: summarize(g, True, args.batch, args.dtype, sizes, args.format))[1])
    return 0


def cmd_ir(args: argparse.Namespace) -> int:
    from dlc.compiler.ir import print_graph
    from dlc.compiler.serialize import dump_yaml

    _write(args.output, _compile(args, lambda g, _: print_graph(g) if args.text else dump_yaml(g))[1])
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from dlc.backends.graphviz import FORMATS, DotFailed, render_file

    out = Path(args.output)
    if out.suffix.lower().lstrip(".") not in FORMATS:
        raise UsageError(f"render: output must end in .svg, .png, .pdf, .dot or .tex, got {display(out.name)}")

    def backend(g: Graph, _: Options) -> str | None:
        if args.depth is not None and args.depth < 0:
            raise UsageError("--depth must be 0 or more")
        options = {"depth": args.depth, "roll": args.roll, "fusion": args.fusion, "rankdir": args.rankdir,
                   "style": args.style, "shapes": args.shapes, "width": args.width}
        try:
            return render_file(g, out, **options)
        except OutputRefused as exc:
            raise UsageError(str(exc)) from None
        except DotFailed as exc:
            raise ToolError(str(exc)) from None
        except OSError as exc:
            raise OutputError(f"cannot write {display(out)}: {exc.strerror or exc}") from None

    message = _compile(args, backend)[1]
    if message:
        _report(message)
    return 0


def cmd_lsp(args: argparse.Namespace) -> int:
    from dlc.lsp import serve

    return serve()


def cmd_fmt(args: argparse.Namespace) -> int:
    from dlc.fmt import fmt_command

    return fmt_command(args.paths, args.check, args.diff, sys.stdin.read, _out, _report)


def cmd_diff(args: argparse.Namespace) -> int:
    from dlc.diff import diff_command

    a, b = (_overrides(argparse.Namespace(params=None, set=(args.set or []) + (extra or [])))
            for extra in (args.set_a, args.set_b))
    return diff_command(args.spec, args.other or args.spec, (a, b), args.network, args.format, _out, _report)


def _width(text: str) -> float:
    from dlc.backends.diagram_output import parse_width

    try:
        return parse_width(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _render_options(c: argparse.ArgumentParser) -> None:
    """The options of ``dlc render`` (docs/diagrams.md shows each)."""
    c.add_argument("-o", "--output", required=True, metavar="OUT.{svg,png,pdf,dot,tex}",
                   help="the file to draw; .tex is a TikZ picture scaled to the column")
    c.add_argument("--depth", type=int, metavar="N",
                   help="draw block instances nested deeper than N as single nodes (default: all, or what keeps a "
                        "large network readable)")
    c.add_argument("--roll", action=argparse.BooleanOptionalAction, default=True,
                   help="draw runs of identical block instances (Block * N, or written out) once, marked ×N "
                        "(default); --no-roll draws every instance")
    c.add_argument("--fusion", action=argparse.BooleanOptionalAction, default=False,
                   help="shade the groups `dlc compile --fuse` runs as one kernel (default: not shaded)")
    c.add_argument("--style", choices=["default", "paper"], default="default",
                   help="paper: serif font, greys, no legend, op and key attributes only")
    c.add_argument("--shapes", action=argparse.BooleanOptionalAction, default=True,
                   help="tensor shapes on edges, inputs and outputs (default); --no-shapes leaves them out")
    c.add_argument("--width", type=_width, metavar="W",
                   help="scale the drawing to this width: 3.5in, 8.5cm, 85mm, 252pt (for a paper's column)")
    c.add_argument("--rankdir", choices=["TB", "LR"], default="TB",
                   help="top to bottom (default) or left to right, a long network wrapped into rows")


def cmd_export(args: argparse.Namespace) -> int:
    from dlc.api import Compiled
    from dlc.onnx_export import describe, export_onnx, require, sizes_of
    from dlc.pipeline import torch_source

    try:
        sizes = sizes_of(args.dim or [])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    require()  # before compiling: a missing package is the first thing to say
    graph, source = _compile(args, torch_source)
    try:
        done = export_onnx(Compiled(graph, source), args.output, args.opset, sizes)
    except OutputRefused as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise OutputError(f"cannot write {display(args.output)}: {exc.strerror or exc}") from None
    _report(f"wrote {display(args.output)} ({describe(done)})")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="dlc", description="Compile .dln network specs to PyTorch and diagrams.")
    p.add_argument("--version", action="version", version=f"dlc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("spec", help="the .dln file")
        sp.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="override a network parameter (repeatable); VALUE is read as YAML")
        sp.add_argument("--params", metavar="FILE.yaml", help="network parameter overrides from a YAML mapping")
        sp.add_argument("--network", metavar="NAME", help="which network to compile when a file has several")
        sp.add_argument("--Werror", dest="werror", action="store_true", help="treat warnings as errors (exit 1)")

    c = sub.add_parser("compile", help="write the PyTorch module")
    common(c)
    c.add_argument("-o", "--output", metavar="OUT.py", help="output file (default: stdout)")
    c.add_argument("--fuse", action="store_true",
                   help="run fusion groups as Triton kernels on CUDA (PyTorch ops elsewhere)")
    c.add_argument("--fused-recurrent", action="store_true",
                   help="with --fuse: LSTM/GRU layers run dlc's gate kernels instead of nn.LSTM/cuDNN")
    c.add_argument("--explain-fusion", action="store_true",
                   help="list the fusion groups (ops, spec lines, bytes saved) and the unfused chains of "
                        "fusible ops with the reason for each (on stderr)")
    c.add_argument("--check-kernels", action="store_true",
                   help="with --fuse: compile every kernel, forward and backward, for fp32/fp16/bf16 and CUDA "
                        "capability 8.0 and 9.0 with the Triton compiler (no GPU needed) and print registers, "
                        "spills, shared memory and programs per launch at batch 32 (on stderr); exit 1 if one "
                        "fails")
    c.add_argument("--optimize", choices=["inference"],
                   help="inference rewrites: batchnorm folded into the conv/linear before it, channels-last")
    c.set_defaults(func=cmd_compile)
    c = sub.add_parser("check", help="check a spec and report its size")
    common(c)
    c.add_argument("--format", choices=["text", "json"], default="text",
                   help="json: the diagnostics (errors and warnings) as one JSON document on stdout")
    c.set_defaults(func=cmd_check)
    c = sub.add_parser("summary", help="print layers, shapes, parameters, MACs/FLOPs and activation memory")
    common(c)
    c.add_argument("--batch", type=int, default=1, metavar="N", help="batch size of MACs and memory (default 1)")
    c.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "float64"], default="float32",
                   help="element type of parameters and float activations for the memory columns")
    c.add_argument("--format", choices=["table", "csv", "json", "markdown"], default="table",
                   help="aligned table (default), CSV, JSON or a Markdown table (docs/summary.md)")
    c.set_defaults(func=cmd_summary)
    c = sub.add_parser("ir", help="dump the IR as YAML (or --text)")
    common(c)
    c.add_argument("--text", action="store_true", help="the readable text form instead of YAML")
    c.add_argument("-o", "--output", metavar="OUT")
    c.set_defaults(func=cmd_ir)
    c = sub.add_parser("render", help="draw the network with Graphviz")
    common(c)
    _render_options(c)
    c.set_defaults(func=cmd_render)
    c = sub.add_parser("lsp", help="run the language server (diagnostics, hover) on stdin/stdout; needs dlc[lsp]")
    c.set_defaults(func=cmd_lsp)
    c = sub.add_parser("fmt", help="rewrite specs in the canonical layout, in place")
    c.add_argument("paths", nargs="+", metavar="FILE",
                   help=".dln files or folders of them; - reads stdin and writes stdout")
    c.add_argument("--check", action="store_true", help="write nothing; list the files that would change (exit 1)")
    c.add_argument("--diff", action="store_true", help="write nothing; print the changes as a unified diff (exit 1)")
    c.set_defaults(func=cmd_fmt)
    c = sub.add_parser("diff", help="layers, shapes and parameters that differ between two specs (exit 1 if any)")
    c.add_argument("spec", metavar="A.dln", help="the first spec")
    c.add_argument("other", nargs="?", metavar="B.dln", help="the second spec (default: A.dln again)")
    c.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a parameter of both (repeatable)")
    c.add_argument("--set-a", action="append", metavar="NAME=VALUE", help="override a parameter of A only")
    c.add_argument("--set-b", action="append", metavar="NAME=VALUE", help="override a parameter of B only")
    c.add_argument("--network", metavar="NAME", help="which network to compare when a file has several")
    c.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or JSON")
    c.set_defaults(func=cmd_diff)
    c = sub.add_parser("export", help="write the network as an ONNX file (needs dlc[onnx])")
    common(c)
    c.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    c.add_argument("--opset", type=int, metavar="N", help="the ONNX opset to write (default: torch.onnx's)")
    c.add_argument("--dim", action="append", metavar="NAME=SIZE",
                   help="example size of a symbolic dimension while capturing (the file stays dynamic in it)")
    c.add_argument("--optimize", choices=["inference"], help="inference rewrites first: batchnorm folded")
    c.set_defaults(func=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    for stream in (sys.stdout, sys.stderr):  # a file name the terminal's encoding cannot show is escaped
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    # Python has no sys.stdout / sys.stderr when it started with that descriptor closed: stand-ins make writing
    # to a closed stdout an error, and to a closed stderr nothing, for this run
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stdout if sys.stdout is not None else _ClosedStdout()  # type: ignore[assignment]
    sys.stderr = sys.stderr if sys.stderr is not None else _NoStderr()  # type: ignore[assignment]
    try:
        try:
            return _run(_parser(), argv)
        finally:  # flushed here, not at exit (also after --help), so that a failed write is noticed below
            _on_stdout(sys.stdout.flush)
    except BrokenPipeError:
        # the reader went away (`dlc ir net.dln | head`): stop quietly, like any filter
        _drop(sys.stdout)
        return 0
    except StdoutError as err:  # `>/dev/full`, `>&-`
        _drop(sys.stdout)
        _report(f"dlc: error: {err}")
        return 2
    finally:
        if saved[0] is None or saved[1] is None:
            sys.stdout, sys.stderr = saved  # type: ignore[assignment]


def _drop(stream: Any) -> None:
    """Point a failed stdout or stderr at /dev/null: text still buffered would fail again when Python flushes
    at exit (exit status 120, whatever the command returned)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no descriptor: a stand-in, or in-process
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        # tracking: so that no output replaces a file this command read; fewer collections: see dlc/collector.py
        with tracking_inputs(), fewer_collections():
            return args.func(args)
    except DlcError as err:
        _report(render(err))
        return 1
    except UsageError as err:
        parser.print_usage(sys.stderr)
        _report(f"dlc: error: {err}")
        return 2
    except StdoutError:
        raise
    except OutputError as err:
        _report(f"dlc: error: {err}")
        return 2
    except ToolError as err:
        _report(f"dlc: error: {err}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception:  # a bug in dlc, not in the spec: say so plainly
        if os.environ.get("DLC_DEBUG"):
            _err(traceback.format_exc())
        else:
            etype, value, _ = sys.exc_info()
            _report(f"dlc: internal error ({etype.__name__}: {display(value, MAX_MESSAGE)}); this is a bug in dlc, "
                    f"please report it with the spec (set DLC_DEBUG=1 for the traceback)")
        return 3


def _report(text: str) -> None:
    """Print a line to stderr (see :func:`_err`)."""
    _err(text + "\n")


def _err(text: str) -> None:
    """Write to stderr; a closed or failing stderr (`2>&-`, `2>/dev/full`) loses the text, not the exit status."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        _drop(sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
