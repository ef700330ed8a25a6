#!/usr/bin/env python3
"""How dlc's commands scale with the size of a spec: generated specs of n layers, timed at two sizes.

The shapes of network, each generated with about n layers (IR nodes):

- ``pipe``: one deep pipeline, ``x -> linear(8) -> relu -> linear(8) -> relu -> ...``;
- ``residual``: a block with a skip connection, ``relu(x + (x -> linear(c)))``, as a labelled repeat
  ``blocks: Res(8) * depth`` (one nn.Sequential of ``n / 3`` block instances, three layers each);
- ``wide``: ``n / 2`` branches ``bI = x -> linear(4) -> relu`` joined by one ``concat(b0, b1, ...)``;
- ``bidirectional`` (not run by default): a chain of ``bidirectional(lstm(4), merge=sum)``, each needing
  temporaries in ``forward``;
- ``kernels`` (not run by default): ``n / 2`` statements ``hI = (h -> linear(8)) * c`` with a different ``c``
  each, so ``--fuse`` writes ``n / 2`` different kernels of one name, ``fused_linear_scale_N``.

Every command (``check``, ``compile`` plain, ``--fuse``, ``--optimize inference`` and ``--explain-fusion``,
``summary``, ``ir`` as YAML and text, ``render`` to .dot and, when Graphviz's ``dot`` is installed, to .svg) runs
in this process through :func:`dlc.cli.main`, writing into a temporary folder. A time is the CPU time of one run
(user + system, and the children's: ``dot``), the minimum of ``--repeat`` runs; each command runs once untimed
on the small spec first, so that imports are not counted. The .svg rows are one run each (their time is mostly
``dot``'s, in a child process) and show "-" where ``dot`` took longer than ``DLC_DOT_SECONDS``. For each shape
and command the table gives both times, their ratio and the exponent ``log(t_large / t_small) /
log(large / small)``: 1.0 is linear, 2.0 quadratic.

An 8,000-layer pipe or concat is over the default token limit of one file (``MAX_TOKENS``, 20,000 tokens;
see dlc/limits.py): while it measures, this script sets the variables in :data:`BENCH_ENV` that are not set
already (``DLC_MAX_TOKENS``, and ``DLC_DOT_SECONDS`` so that a drawing Graphviz cannot finish costs a minute).

    python benchmarks/scaling.py                      # 1,000 and 8,000 layers: pipe, residual, wide
    python benchmarks/scaling.py --sizes 500,4000 --shapes wide,kernels --commands check,"compile --fuse"
    python benchmarks/scaling.py --write-specs DIR    # only write the specs (for cProfile, say)
    python benchmarks/scaling.py --record docs/benchmarks.md   # append the results, dated, with the machine
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlc import __version__ as dlc_version
from dlc.cli import main as dlc_main

SIZES = (1000, 8000)
DEFAULT_SHAPES = ("pipe", "residual", "wide")
BENCH_ENV = {"DLC_MAX_TOKENS": "1000000", "DLC_DOT_SECONDS": "60"}


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


def bidirectional_spec(n: int) -> str:
    """A chain of ``n`` bidirectional LSTMs whose directions are summed."""
    stages = " -> ".join(["bidirectional(lstm(4), merge=sum)"] * n)
    return f"network Bidirectional {{\n    input x: [T, 4]\n    output y = x -> {stages}\n}}\n"


def kernels_spec(n: int) -> str:
    """``n // 2`` linear layers each scaled by its own constant: as many different fused kernels."""
    k = max(1, n // 2)
    steps = "".join(f"    h{i + 1} = (h{i} -> linear(8)) * {i + 2}\n" for i in range(k))
    return f"network Kernels {{\n    input x: [8]\n    h0 = x\n{steps}    output y = h{k}\n}}\n"


SHAPES: dict[str, Callable[[int], str]] = {
    "pipe": pipe_spec, "residual": residual_spec, "wide": wide_spec,
    "bidirectional": bidirectional_spec, "kernels": kernels_spec,
}


@dataclass(frozen=True)
class Command:
    """One dlc command line: ``argv`` with ``{spec}`` and ``{out}`` (a path in the work folder) filled in.
    ``draws``: it runs Graphviz's ``dot``, so it needs the program and is timed by a single run."""

    name: str
    argv: tuple[str, ...]
    draws: bool = False

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
    Command("render .svg", ("render", "{spec}", "-o", "{out}.svg"), draws=True),
)


def available_commands() -> list[Command]:
    """The commands this machine can run (.svg needs Graphviz's ``dot``)."""
    return [c for c in COMMANDS if not c.draws or shutil.which("dot")]


class CommandFailed(Exception):
    """A dlc command exited with a status other than 0; the message has the command line and its output."""


def cpu_seconds() -> float:
    """CPU seconds of this process (``process_time``: finer than os.times' 10 ms ticks) and of its finished
    children (``dot``), user + system."""
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


@contextlib.contextmanager
def bench_env() -> Iterator[None]:
    """:data:`BENCH_ENV`'s variables that are not set already, for the duration of the block."""
    added = {name: value for name, value in BENCH_ENV.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def run_once(command: Command, spec: Path, workdir: Path) -> float:
    """CPU seconds of one run of ``command`` on ``spec``; a failure is a :class:`CommandFailed`."""
    argv = command.args(spec, workdir / spec.stem)
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        start = cpu_seconds()
        status = dlc_main(argv)
        elapsed = cpu_seconds() - start
    if status != 0:
        last = (output.getvalue().strip().splitlines()[-1:] or [""])[0]
        first_sentence = last.split(". ")[0][:300]  # the rest names temporary files
        raise CommandFailed(f"dlc {command.name} {spec.name} exited {status}: {first_sentence}")
    return elapsed


def best_time(command: Command, spec: Path, workdir: Path, repeat: int) -> float:
    """The minimum of ``repeat`` timed runs (one for a drawing)."""
    return min(run_once(command, spec, workdir) for _ in range(1 if command.draws else repeat))


def write_specs(shape: str, sizes: Sequence[int], folder: Path) -> dict[int, Path]:
    """The spec of ``shape`` at every size, written to ``folder/{shape}{n}.dln``."""
    paths = {}
    for n in sizes:
        paths[n] = folder / f"{shape}{n}.dln"
        paths[n].write_text(SHAPES[shape](n), encoding="utf-8")
    return paths


@dataclass(frozen=True)
class Timing:
    """One shape and command at two sizes: CPU seconds, or None where the command failed (``note`` says why)."""

    shape: str
    command: str
    sizes: tuple[int, int]
    small: float | None
    large: float | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times longer the large spec took."""
        if self.small is None or self.large is None:
            return None
        return self.large / max(self.small, 1e-9)

    @property
    def exponent(self) -> float | None:
        """The power k with ``t_large / t_small = (n_large / n_small) ** k``."""
        ratio = self.ratio
        return None if ratio is None else math.log(max(ratio, 1e-9)) / math.log(self.sizes[1] / self.sizes[0])

    def row(self) -> str:
        """This timing as a row of :func:`table_header`'s Markdown table."""
        def cell(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)
        return (f"| {self.shape} | `{self.command}` | {cell(self.small, '.3f')} | {cell(self.large, '.3f')} | "
                f"{cell(self.ratio, '.1f')}{'' if self.ratio is None else '×'} | {cell(self.exponent, '.2f')} |")


def table_header(sizes: tuple[int, int]) -> str:
    """The Markdown table's header for ``sizes``."""
    small, large = sizes
    return (f"| shape | command | {small:,} layers, s | {large:,} layers, s | ratio | exponent |\n"
            "| --- | --- | ---: | ---: | ---: | ---: |")


def time_pair(shape: str, command: Command, specs: dict[int, Path], workdir: Path, repeat: int) -> Timing:
    """``command`` on the small and the large spec of ``shape``, the minimum of ``repeat`` runs of each (one for a
    drawing), the runs of the two sizes taken in turn so that both meet the same load on a busy machine; a
    failure is kept as a note."""
    sizes = (min(specs), max(specs))
    runs: list[list[float]] = [[], []]
    try:
        for _ in range(1 if command.draws else repeat):
            for i, n in enumerate(sizes):
                runs[i].append(run_once(command, specs[n], workdir))
    except CommandFailed as exc:
        return Timing(shape, command.name, sizes, None, None, str(exc))
    return Timing(shape, command.name, sizes, min(runs[0]), min(runs[1]), "")


def measure(shapes: Sequence[str], commands: Sequence[Command], sizes: tuple[int, int], repeat: int,
            progress: Callable[[Timing], None] = lambda t: None) -> list[Timing]:
    """Time every command on every shape at both sizes, in a temporary folder (removed afterwards)."""
    timings = []
    with tempfile.TemporaryDirectory(prefix="dlc-scaling-") as tmp, bench_env():
        folder = Path(tmp)
        for shape in shapes:
            specs = write_specs(shape, sizes, folder)
            for command in commands:
                if not command.draws:  # the warm-up: imports, lark's parser
                    with contextlib.suppress(CommandFailed):
                        run_once(command, specs[sizes[0]], folder)
                timings.append(time_pair(shape, command, specs, folder, repeat))
                progress(timings[-1])
    return timings


def machine() -> str:
    """The CPU model and its logical core count."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} logical cores"


def graphviz_version() -> str:
    """What ``dot -V`` says (the .svg rows are mostly its time), or that it is missing."""
    try:
        done = subprocess.run(["dot", "-V"], capture_output=True, text=True, timeout=30, check=False)
        return done.stderr.strip() or "dot"
    except (OSError, subprocess.SubprocessError):
        return "no Graphviz"


def git_revision() -> str:
    """The checkout's commit, with ``+changes`` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+changes" if dirty else "")


def record(file: Path, body: str, argv: Sequence[str]) -> None:
    """Append one dated section with the machine, versions, commit, command line and ``body`` to ``file``."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"## {now}: scaling, {machine()}\n\n"
              f"- versions: dlc {dlc_version}, Python {platform.python_version()}, {graphviz_version()}\n"
              f"- commit: {git_revision()}\n"
              f"- command: `python benchmarks/scaling.py {shlex.join(argv)}`".rstrip() + "\n")
    prefix = "" if file.exists() else "# Benchmarks\n"
    with file.open("a", encoding="utf-8") as f:
        f.write(f"{prefix}\n{header}\n{body}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="two layer counts (default: 1000,8000)")
    p.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help=f"a subset of {','.join(SHAPES)} (default: "
                                                                      f"{','.join(DEFAULT_SHAPES)})")
    p.add_argument("--commands", help="command names, comma-separated (default: every one this machine can run: "
                                      + ", ".join(c.name for c in COMMANDS) + ")")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the minimum is kept")
    p.add_argument("--write-specs", type=Path, metavar="DIR", help="write the specs to DIR and stop")
    p.add_argument("--record", type=Path, metavar="FILE", help="append the results to FILE (Markdown)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (or write the specs); 2 for a bad command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    sizes_list = [int(s) for s in args.sizes.split(",") if s.strip().isdigit()]
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
    intro = (f"CPU seconds, the minimum of {args.repeat} runs (.svg: one run, mostly Graphviz's dot); "
             f"exponent = log(ratio) / log({sizes[1]:,} / {sizes[0]:,}).\n\n{table_header(sizes)}\n")
    print(intro, end="", flush=True)
    timings = measure(shapes, [by_name[n] for n in names], sizes, args.repeat,
                      progress=lambda t: print(t.row(), flush=True))
    notes = [f"- {t.shape} `{t.command}`: {t.note}" for t in timings if t.note]
    tail = "\nNotes:\n\n" + "\n".join(notes) + "\n" if notes else ""
    print(tail, end="")
    if args.record:
        record(args.record, intro + "".join(t.row() + "\n" for t in timings) + tail, argv)
        print(f"recorded in {args.record}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
