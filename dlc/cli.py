"""The command line: ``dlc compile | check | summary | ir | render``.

Exit codes: 0 success, 1 an error in the spec (diagnostics on stderr), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

import yaml

from dlc import __version__
from dlc.diagnostics import DlcError, render


class UsageError(Exception):
    pass


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from dlc.api import read_params_file

    values: dict[str, Any] = {}
    if args.params:
        if not Path(args.params).is_file():
            raise UsageError(f"--params: no such file: {args.params}")
        values.update(read_params_file(args.params))
    for item in args.set or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            values[key.strip()] = text
    return values


def _graph(args: argparse.Namespace):
    from dlc.compiler import build_graph

    spec = Path(args.spec)
    if not spec.is_file():
        raise UsageError(f"not a file: {spec}" if spec.exists() else f"no such file: {spec}")
    from dlc.compiler.passes import optimize_graph

    return optimize_graph(build_graph(spec, _overrides(args), args.network), getattr(args, "optimize", None))


def cmd_compile(args: argparse.Namespace) -> int:
    from dlc.backends.torch.emit import emit_module
    from dlc.compiler.fusion import explain

    g = _graph(args)
    if args.explain_fusion:
        sys.stderr.write(explain(g, recurrent=args.fused_recurrent))
        if not args.fuse:
            print("note: without --fuse the module runs none of these as kernels", file=sys.stderr)
    source = emit_module(g, fuse=args.fuse, channels_last=args.optimize == "inference",
                         fused_recurrent=args.fused_recurrent)
    _write(args.output, source)
    return 0


def _write(output: str | None, text: str) -> None:
    """Write to a file (creating its folder) or to stdout for None / '-'."""
    if output in (None, "-"):
        sys.stdout.write(text)
        return
    path = Path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    print(f"wrote {output}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    from dlc.compiler.passes import total_params

    g = _graph(args)
    print(f"{args.spec}: ok: network {g.name}, {len(g.nodes)} nodes, {total_params(g):,} parameters")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from dlc.backends.summary import summarize

    sys.stdout.write(summarize(_graph(args)))
    return 0


def cmd_ir(args: argparse.Namespace) -> int:
    from dlc.compiler.ir import print_graph
    from dlc.compiler.serialize import dump_yaml

    g = _graph(args)
    _write(args.output, print_graph(g) if args.text else dump_yaml(g))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from dlc.backends.graphviz import render_file

    out = Path(args.output)
    if out.suffix.lower() not in (".svg", ".png", ".pdf", ".dot"):
        raise UsageError(f"render: output must end in .svg, .png, .pdf or .dot, got {out.name}")
    g = _graph(args)
    if args.depth is not None and args.depth < 0:
        raise UsageError("--depth must be 0 or more")
    options = {"depth": args.depth, "roll": True if args.roll else None, "fusion": not args.no_fusion,
               "rankdir": args.rankdir}
    try:
        message = render_file(g, out, **options)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    if message:
        print(message, file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlc", description="Compile .dln network specs to PyTorch and diagrams.")
    p.add_argument("--version", action="version", version=f"dlc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("spec", help="the .dln file")
        sp.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="override a network parameter (repeatable); VALUE is read as YAML")
        sp.add_argument("--params", metavar="FILE.yaml", help="network parameter overrides from a YAML mapping")
        sp.add_argument("--network", metavar="NAME", help="which network to compile when a file has several")

    c = sub.add_parser("compile", help="write the PyTorch module")
    common(c)
    c.add_argument("-o", "--output", metavar="OUT.py", help="output file (default: stdout)")
    c.add_argument("--fuse", action="store_true",
                   help="run fusion groups as Triton kernels on CUDA (PyTorch ops elsewhere)")
    c.add_argument("--fused-recurrent", action="store_true",
                   help="with --fuse: LSTM/GRU layers run dlc's gate kernels instead of nn.LSTM/cuDNN")
    c.add_argument("--explain-fusion", action="store_true",
                   help="list the fusion groups, their ops and the bytes they save (on stderr)")
    c.add_argument("--optimize", choices=["inference"],
                   help="inference rewrites: batchnorm folded into the conv/linear before it, channels-last")
    c.set_defaults(func=cmd_compile)
    c = sub.add_parser("check", help="check a spec and report its size")
    common(c)
    c.set_defaults(func=cmd_check)
    c = sub.add_parser("summary", help="print layers, output shapes and parameter counts")
    common(c)
    c.set_defaults(func=cmd_summary)
    c = sub.add_parser("ir", help="dump the IR as YAML (or --text)")
    common(c)
    c.add_argument("--text", action="store_true", help="the readable text form instead of YAML")
    c.add_argument("-o", "--output", metavar="OUT")
    c.set_defaults(func=cmd_ir)
    c = sub.add_parser("render", help="draw the network with Graphviz")
    common(c)
    c.add_argument("-o", "--output", required=True, metavar="OUT.{svg,png,pdf,dot}")
    c.add_argument("--depth", type=int, metavar="N",
                   help="draw block instances nested deeper than N as single nodes (default: all, or what keeps a "
                        "large network readable)")
    c.add_argument("--roll", action="store_true", help="draw each repeat (Block * N) once, marked ×N")
    c.add_argument("--no-fusion", action="store_true", help="do not shade the fusion groups")
    c.add_argument("--rankdir", choices=["TB", "LR"], default="TB", help="top to bottom (default) or left to right")
    c.set_defaults(func=cmd_render)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DlcError as err:
        print(render(err), file=sys.stderr)
        return 1
    except UsageError as err:
        parser.print_usage(sys.stderr)
        print(f"dlc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug in dlc, not in the spec: say so plainly
        if os.environ.get("DLC_DEBUG"):
            traceback.print_exc()
        else:
            etype, value, _ = sys.exc_info()
            print(f"dlc: internal error ({etype.__name__}: {value}); this is a bug in dlc, please report it "
                  f"with the spec (set DLC_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
