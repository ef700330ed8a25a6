#!/usr/bin/env python3
"""How dlc's commands scale with the size of a spec: generated specs of n layers, timed at two sizes.

Three shapes of network, each generated with about n layers (IR nodes):

- ``pipe``: one deep pipeline, ``x -> linear(8) -> relu -> linear(8) -> relu -> ...``;
- ``residual``: a block with a skip connection, ``relu(x + (x -> linear(c)))``, as a labelled repeat
  ``blocks: Res(8) * depth`` (one nn.Sequential of ``depth`` block instances, three layers each);
- ``wide``: ``n / 2`` branches ``bI = x -> linear(4) -> relu`` joined by one ``concat(b0, b1, ...)``.

Every command (``check``, ``compile`` plain, ``--fuse``, ``--optimize inference`` and ``--explain-fusion``,
``summary``, ``ir`` as YAML and text, ``render`` to .dot and, when Graphviz's ``dot`` is installed, to .svg) runs
in this process through :func:`dlc.cli.main`, writing its output into a temporary folder. Each time is the
process CPU time of one run (user + system, plus the children's for ``dot``), the minimum of ``--repeat`` runs;
the first run of every command is a warm-up, so imports are not counted. For each shape and command the table
gives the time at both sizes, their ratio and the exponent ``log(t_large / t_small) / log(large / small)``:
1.0 is linear, 2.0 quadratic.

An 8,000-layer pipe or concat is over the default token limit of one file (``MAX_TOKENS``, 20,000 tokens;
see dlc/limits.py), so while it measures this script sets ``DLC_MAX_TOKENS`` (unless it is already set).

    python benchmarks/scaling.py                      # 1,000 and 8,000 layers, every shape and command
    python benchmarks/scaling.py --sizes 500,4000 --shapes wide --commands check,compile
    python benchmarks/scaling.py --write-specs DIR    # only write the specs (e.g. for cProfile)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from dlc.cli import main as dlc_main

SIZES = (1000, 8000)
# The limits (dlc/limits.py) a large generated spec needs raised: 8,000 layers of `wide` are about 80,000 tokens.
LIMITS_ENV = {"DLC_MAX_TOKENS": "1000000"}


def pipe_spec(n: int) -> str:
    """A pipeline of ``n`` layers, linear(8) and relu alternating."""
    stages = " -> ".join("linear(8)" if i % 2 == 0 else "relu" for i in range(n))
    return f"network Pipe {{\n    input x: [8]\n    output y = x -> {stages}\n}}\n"


def residual_spec(n: int) -> str:
    """A residual block (linear, add, relu) repeated ``n // 3`` times as one labelled repeat."""
    return ("block Res(c: int) {\n    input x\n    return relu(x + (x -> linear(c)))\n}\n\n"
            f"network Residual(depth: int = {max(1, n // 3)}) {{\n    input x: [8]\n"
            "    output y = x -> blocks: Res(8) * depth\n}\n")


def wide_spec(n: int) -> str:
    """``n // 2`` branches of linear(4) and relu, merged by one concat."""
    k = max(2, n // 2)
    branches = "".join(f"    b{i} = x -> linear(4) -> relu\n" for i in range(k))
    merged = ", ".join(f"b{i}" for i in range(k))
    return f"network Wide {{\n    input x: [8]\n{branches}    output y = concat({merged})\n}}\n"


SHAPES: dict[str, Callable[[int], str]] = {"pipe": pipe_spec, "residual": residual_spec, "wide": wide_spec}


@dataclass(frozen=True)
class Command:
    """One dlc command line: ``argv`` with ``{spec}`` and ``{out}`` (a path in a temporary folder) filled in."""

    name: str
    argv: tuple[str, ...]
    needs_dot: bool = False

    def args(self, spec: Path, out: Path) -> list[str]:
        """The argument list for ``spec``, writing under the stem ``out``."""
        return [a.format(spec=spec, out=out) for a in self.argv]


COMMANDS: tuple[Command, ...] = (
    Command("check", ("check", "{spec}")),
    Command("compile", ("compile", "{spec}", "-o", "{out}.py")),
    Command("compile --fuse", ("compile", "{spec}", "--fuse", "-o", "{out}.py")),
    Command("compile --optimize inference", ("compile", "{spec}", "--optimize", "inference", "-o", "{out}.py")),
    Command("compile --explain-fusion", ("compile", "{spec}", "--explain-fusion", "-o", "{out}.py")),
    Command("summary", ("summary", "{spec}")),
    Command("ir", ("ir", "{spec}", "-o", "{out}.yaml")),
    Command("ir --text", ("ir", "{spec}", "--text", "-o", "{out}.txt")),
    Command("render .dot", ("render", "{spec}", "-o", "{out}.dot")),
    Command("render .svg", ("render", "{spec}", "-o", "{out}.svg"), needs_dot=True),
)


def available_commands() -> list[Command]:
    """The commands this machine can run (.svg needs Graphviz's ``dot``)."""
    return [c for c in COMMANDS if not c.needs_dot or shutil.which("dot")]


def cpu_seconds() -> float:
    """CPU time of this process (``process_time``: os.times counts in 10 ms ticks) and its finished children
    (``dot``), user + system."""
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


@contextlib.contextmanager
def large_spec_limits() -> Iterator[None]:
    """:data:`LIMITS_ENV` in the environment (where not set already) for the duration of the block."""
    added = {name: value for name, value in LIMITS_ENV.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """stdout and stderr into one buffer (the commands print the module, the summary, messages)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def run_once(command: Command, spec: Path, workdir: Path) -> float:
    """CPU seconds of one run of ``command`` on ``spec``; a failing command is a RuntimeError with its output."""
    argv = command.args(spec, workdir / spec.stem)
    with captured() as output:
        start = cpu_seconds()
        status = dlc_main(argv)
        elapsed = cpu_seconds() - start
    if status != 0:
        raise RuntimeError(f"dlc {' '.join(argv)} exited {status}:\n{output.getvalue()[-2000:]}")
    return elapsed


def best_time(command: Command, spec: Path, workdir: Path, repeat: int) -> float:
    """The minimum of ``repeat`` timed runs, after one untimed warm-up run."""
    run_once(command, spec, workdir)
    return min(run_once(command, spec, workdir) for _ in range(repeat))


def write_specs(shape: str, sizes: Sequence[int], folder: Path) -> dict[int, Path]:
    """The spec of ``shape`` at every size, written to ``folder/{shape}{n}.dln``."""
    paths = {}
    for n in sizes:
        paths[n] = folder / f"{shape}{n}.dln"
        paths[n].write_text(SHAPES[shape](n), encoding="utf-8")
    return paths


def exponent(t_small: float, t_large: float, n_small: int, n_large: int) -> float:
    """The power k with ``t_large / t_small = (n_large / n_small) ** k``."""
    return math.log(max(t_large, 1e-9) / max(t_small, 1e-9)) / math.log(n_large / n_small)


@dataclass(frozen=True)
class Timing:
    """One shape and command, timed at two sizes."""

    shape: str
    command: str
    small: float
    large: float

    @property
    def ratio(self) -> float:
        """How many times longer the large spec took."""
        return self.large / max(self.small, 1e-9)


def measure(shapes: Sequence[str], commands: Sequence[Command], sizes: tuple[int, int], repeat: int,
            progress: Callable[[Timing], None] = lambda t: None) -> list[Timing]:
    """Time every command on every shape at both sizes (in a temporary folder, removed afterwards)."""
    timings = []
    with tempfile.TemporaryDirectory(prefix="dlc-scaling-") as tmp, large_spec_limits():
        folder = Path(tmp)
        for shape in shapes:
            specs = write_specs(shape, sizes, folder)
            for command in commands:
                small, large = (best_time(command, specs[n], folder, repeat) for n in sizes)
                timings.append(Timing(shape, command.name, small, large))
                progress(timings[-1])
    return timings


def table_row(t: Timing, sizes: tuple[int, int]) -> str:
    """One Markdown row: shape, command, both times, ratio, exponent."""
    k = exponent(t.small, t.large, *sizes)
    return f"| {t.shape} | `{t.command}` | {t.small:.3f} | {t.large:.3f} | {t.ratio:.1f}× | {k:.2f} |"


def table_header(sizes: tuple[int, int]) -> str:
    """The Markdown table's header for ``sizes``."""
    small, large = sizes
    return (f"| shape | command | {small:,} layers, s | {large:,} layers, s | ratio | exponent |\n"
            "| --- | --- | ---: | ---: | ---: | ---: |")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="two layer counts (default: 1000,8000)")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"a subset of {','.join(SHAPES)}")
    p.add_argument("--commands", help="command names, comma-separated (default: every one this machine can run: "
                                      + ", ".join(c.name for c in COMMANDS) + ")")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the minimum is kept")
    p.add_argument("--write-specs", type=Path, metavar="DIR", help="write the specs to DIR and stop")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (or write the specs); 2 for a bad command line."""
    args = parse_args(argv)
    sizes_list = [int(s) for s in args.sizes.split(",")]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    by_name = {c.name: c for c in available_commands()}
    names = [s.strip() for s in args.commands.split(",")] if args.commands else list(by_name)
    problems = [f"unknown shape {s!r}" for s in shapes if s not in SHAPES]
    problems += [f"unknown or unavailable command {n!r}" for n in names if n not in by_name]
    if len(sizes_list) != 2 or not 0 < sizes_list[0] < sizes_list[1]:
        problems.append("--sizes takes two increasing layer counts")
    if args.repeat < 1:
        problems.append("--repeat must be at least 1")
    if problems:
        print("scaling: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    sizes = (sizes_list[0], sizes_list[1])
    if args.write_specs:
        args.write_specs.mkdir(parents=True, exist_ok=True)
        for shape in shapes:
            for path in write_specs(shape, sizes, args.write_specs).values():
                print(path)
        return 0
    print(f"CPU seconds, minimum of {args.repeat} runs after a warm-up; exponent = log(ratio) / "
          f"log({sizes[1]:,} / {sizes[0]:,})\n")
    print(table_header(sizes), flush=True)
    measure(shapes, [by_name[n] for n in names], sizes, args.repeat,
            progress=lambda t: print(table_row(t, sizes), flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
