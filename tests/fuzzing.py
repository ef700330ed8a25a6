"""A grammar-aware mutation fuzzer for dlc: every spec and docs example, mutated, through every stage.

Each case is a seed spec (``specs/*.dln`` with the files it imports, or a ```dln example from
docs/language.md) changed by one to three mutations that know the language's tokens: token deletions,
duplications and swaps, numbers set to 0, -1, huge values or floats, names replaced by keywords, builtins,
reserved and unicode names, lines duplicated or spliced from another seed, unicode inserted, the file cut
short. Imported files are mutated too.

A case fails (a *finding*) when:

- any stage raises anything but :class:`DlcError`: parsing and elaboration, the plain, fused and
  inference-optimised module source, the summary, the diagram's DOT text, the IR dump;
- a :class:`DlcError` is malformed: no position, a position outside the file, or a rendering that is not
  ``file:line:col: error[code]: ...``;
- a stage after the check rejects what the check accepted (``dlc check`` and ``dlc compile`` disagree);
- it hangs: the compile stages take longer than ``--hang`` seconds;
- it is a *wrong acceptance*: the check accepts it, but the generated module fails to import, to
  construct, or to run a forward pass on random inputs of the declared shapes (batch 2, symbolic sizes 8,
  integer inputs 0, sequence lengths 1), or returns outputs of other shapes than the compiler inferred.
  Symbolic sizes are 8, or 32 or 224 where 8 leaves an inferred dimension below 1. Networks too large to
  build here (by parameters or activation size) are counted as ``ok-not-run``; specs with an ``extern`` as
  ``ok-extern`` (their rules are claims about code dlc does not see), and position ids past a position
  table's size at the chosen lengths as ``ok-data``.

Cases run in a worker process, so that a hang can be stopped and a crash of the interpreter is seen; the
worker is restarted after either. Findings are written to ``--out`` (one folder each, with the files, the
mutation and the error), deduplicated by where they failed.

Run it for longer than CI does::

    python tests/fuzzing.py --seconds 3600 --out build/fuzz

``tests/test_fuzz.py`` runs it for a bounded time in CI (``DLC_FUZZ_SECONDS``, default 30) and replays
the cases in ``tests/fuzz_regressions/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = ROOT / "specs"
DOC = ROOT / "docs" / "language.md"

BATCH = 2
SYMBOLIC_SIZE = 8
MAX_RUN_PARAMS = 30_000_000  # networks above this are compiled but not built and run
MAX_RUN_ELEMENTS = 20_000_000  # nor networks with a value larger than this (batch included)

# ---- seeds ---------------------------------------------------------------------------------------------------


@dataclass
class Seed:
    """A spec to mutate: the main file's text, the files it imports (relative name -> text), parameters."""

    name: str
    text: str
    files: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(error|file|params)\s*:\s*(.*?)\s*-->\s*$")


def _doc_seeds(doc: Path) -> list[Seed]:
    """The ```dln examples of the language reference, with the ``<!-- file: -->`` blocks before each."""
    import yaml

    seeds: list[Seed] = []
    files: dict[str, str] = {}
    pending: dict[str, str] = {}
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m and m.group(1):
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            text = "\n".join(body) + "\n"
            if m.group(1) == "dln":
                if "file" in pending:
                    files = {**files, pending["file"]: text}
                else:
                    params = yaml.safe_load(pending["params"]) if "params" in pending else {}
                    seeds.append(Seed(f"language.md:{start + 1}", text, dict(files), params or {}))
            pending = {}
        else:
            d = _DIRECTIVE.match(lines[i].strip())
            if d:
                pending[d.group(1)] = d.group(2)
        i += 1
    return seeds


def load_seeds() -> list[Seed]:
    """Every spec in specs/ (with every file under specs/ it may import) and every docs example."""
    shared = {str(p.relative_to(SPECS_DIR)): p.read_text(encoding="utf-8")
              for p in sorted(SPECS_DIR.rglob("*.dln")) if p.parent != SPECS_DIR}
    seeds = [Seed(p.name, p.read_text(encoding="utf-8"), dict(shared)) for p in sorted(SPECS_DIR.glob("*.dln"))]
    if DOC.exists():
        seeds += _doc_seeds(DOC)
    return seeds


# ---- mutations -----------------------------------------------------------------------------------------------

TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|[^\W\d]\w*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|->|//|[=!<>]=|\S')
NUMBERS = ["0", "-1", "1", "2", "3", "7", "0.5", "1.0", "1e-9", "1e308", "1e999", "-0.0", "9223372036854775807",
           "18446744073709551616", "2147483648", "4294967296", "1" + "0" * 30, "9" * 50, "1" + "0" * 4400, "(2*3)",
           "(1/0)", "(0-5)", ".5", "5.", "1e3", "65536", "100000"]
NAMES = [
    # keywords of both languages and names the generated code uses
    "if", "then", "else", "input", "output", "return", "network", "block", "import", "true", "false", "not",
    "and", "or", "class", "lambda", "def", "None", "self", "super", "torch", "nn", "F", "OrderedDict", "os",
    # builtins and nn.Module attributes
    "len", "range", "list", "tuple", "zip", "isinstance", "getattr", "print", "type", "object", "id", "hash",
    "forward", "training", "compile", "output_names", "_modules", "_apply", "_call_impl", "_version",
    "register_forward_hook", "state_dict", "parameters", "eval", "train", "cuda", "to", "float", "int",
    # odd identifiers
    "__x", "__init__", "_", "_x", "x_", "é", "ñame", "名前", "x٣", "ǅ", "Ⅸ", "int64_copy", "float32x", "Reshape",
    "FoldingSequential", "Scale", "fused_relu", "conv2d_0", "linear_0", "x_channels", "arg1",
    # ops, blocks and builtins of the language
    "relu", "linear", "conv2d", "lstm", "gru", "bidirectional", "timedistributed", "attention", "embedding",
    "reshape", "concat", "add", "sub", "mul", "dropout", "batchnorm", "layernorm", "softmax", "flatten",
    "global", "same", "channels", "size", "rank", "min", "max", "T", "N",
]
PUNCT = ["(", ")", "[", "]", "{", "}", ",", "->", "=", ":", "*", "-", "+", "/", "//", "%", "<", "==", "#", '"',
         "\\", "`", "$", ";", "@", "."]
UNICODE = ["\u00a0", "\u2028", "\u200b", "\ufeff", "\x00", "\x1b[2J", "\r", "\t", "\x0c", "é", "名", "\U0001f600",
           "\ud7ff", "\u0301", "\x7f", "\\", "\n"]
SNIPPETS = [
    " * 3", " * 100000", " -> relu", " -> m: sub(x)", " -> g: (relu -> relu)", " -> reshape([-1])",
    " -> linear(9223372036854775807 * 4)", " -> embedding(10, -3)", " -> lstm(4, layers=2147483648)",
    " -> dropout(0)", " + x", " * 0.5", "[0]", " int64", " bool", ": [3, 8, 8]", '"a\\x00b"',
]


# How often each mutation is picked: mostly ones that keep the text parseable, so that cases reach the
# elaborator, the backends and the generated module rather than stopping at the parser.
KINDS = {"number": 5, "name": 4, "snippet": 3, "line-dup": 2, "splice": 2, "duplicate": 1, "delete": 1, "swap": 1,
         "punct": 1, "unicode": 1, "line-del": 1, "line-swap": 0.5, "truncate": 0.5, "char": 0.5}


def _tokens(text: str) -> list[re.Match]:
    return list(TOKEN.finditer(text))


def _replace(text: str, m: re.Match, new: str) -> str:
    return text[:m.start()] + new + text[m.end():]


def mutate(text: str, rng: random.Random, donors: list[str]) -> tuple[str, str]:
    """One random mutation of ``text``; returns (description, new text)."""
    toks = [t for t in _tokens(text) if not t.group().startswith("#")]
    lines = text.split("\n")
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    if not toks:
        kind = "unicode"
    if kind == "delete":
        m = rng.choice(toks)
        return f"delete token {m.group()!r}@{m.start()}", _replace(text, m, "")
    if kind == "duplicate":
        m = rng.choice(toks)
        return f"duplicate token {m.group()!r}@{m.start()}", text[:m.end()] + " " + m.group() + text[m.end():]
    if kind == "swap":
        i = rng.randrange(len(toks))
        j = min(len(toks) - 1, i + 1) if rng.random() < 0.6 else rng.randrange(len(toks))
        a, b = sorted((toks[i], toks[j]), key=lambda t: t.start())
        if a.start() == b.start():
            return "swap nothing", text
        new = text[:a.start()] + b.group() + text[a.end():b.start()] + a.group() + text[b.end():]
        return f"swap tokens {a.group()!r}@{a.start()} and {b.group()!r}@{b.start()}", new
    if kind == "number":
        nums = [t for t in toks if t.group()[0].isdigit()] or toks
        m, r = rng.choice(nums), rng.choice(NUMBERS)
        return f"number {m.group()!r}@{m.start()} -> {r[:20]!r}", _replace(text, m, r)
    if kind == "name":
        names = [t for t in toks if t.group()[0].isalpha() or t.group()[0] == "_"] or toks
        m = rng.choice(names)
        own = sorted({t.group() for t in names})
        r = rng.choice(NAMES + own)
        return f"name {m.group()!r}@{m.start()} -> {r!r}", _replace(text, m, r)
    if kind == "punct":
        m, r = rng.choice(toks), rng.choice(PUNCT)
        return f"token {m.group()!r}@{m.start()} -> {r!r}", _replace(text, m, r)
    if kind in ("unicode", "char"):
        i = rng.randrange(len(text) + 1)
        r = rng.choice(UNICODE) if kind == "unicode" else chr(rng.randrange(32, 127))
        return f"insert {r!r}@{i}", text[:i] + r + text[i:]
    if kind == "truncate":
        i = rng.randrange(len(text) + 1)
        return f"truncate@{i}", text[:i]
    if kind == "line-dup":
        i = rng.randrange(len(lines))
        return f"duplicate line {i + 1}", "\n".join(lines[:i + 1] + lines[i:])
    if kind == "line-del":
        i = rng.randrange(len(lines))
        return f"delete line {i + 1}", "\n".join(lines[:i] + lines[i + 1:])
    if kind == "line-swap":
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return f"swap lines {i + 1} and {j + 1}", "\n".join(lines)
    if kind == "splice":
        donor = rng.choice(donors).split("\n")
        k = rng.randrange(len(donor))
        i = rng.randrange(len(lines) + 1)
        return f"splice donor line {donor[k][:40]!r} at line {i + 1}", "\n".join(lines[:i] + [donor[k]] + lines[i:])
    m, r = rng.choice(toks), rng.choice(SNIPPETS)
    return f"insert {r!r} after {m.group()!r}@{m.start()}", text[:m.end()] + r + text[m.end():]


@dataclass
class Case:
    """One fuzz case: files to write (the main one is ``main``), parameters, and how it was made."""

    seed: str
    how: list[str]
    files: dict[str, str]
    main: str
    params: dict[str, Any]


def make_case(seeds: list[Seed], rng: random.Random) -> Case:
    seed = rng.choice(seeds)
    main = "net.dln"
    files = {main: seed.text, **seed.files}
    donors = [s.text for s in seeds]
    how: list[str] = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        # mostly the main file; sometimes a file it imports
        target = main
        imported = [f for f in seed.files if Path(f).name in files[main] or f in files[main]]
        if imported and rng.random() < 0.15:
            target = rng.choice(imported)
        what, files[target] = mutate(files[target], rng, donors)
        how.append(f"{target}: {what}")
    return Case(seed.name, how, files, main, dict(seed.params))


# ---- running one case -----------------------------------------------------------------------------------------


def _check_error(err: Any, files: dict[str, Path]) -> str | None:
    """Why a DlcError is malformed, or None."""
    from dlc.diagnostics import render

    span = err.span
    rendered = render(err)
    if span is None:
        return None if rendered.startswith(f"error[{err.code}]") or ": error[" in rendered.split("\n")[0] \
            else f"unpositioned error renders as {rendered[:200]!r}"
    texts = {str(p): p for p in files.values()}
    path = texts.get(span.file)
    if path is None:
        return None  # a position in a file that is not ours (e.g. an import outside) is checked elsewhere
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")  # no newline translation
    if not 1 <= span.line <= len(lines):
        return f"line {span.line} outside the file ({len(lines)} lines): {rendered[:300]}"
    if not 1 <= span.col <= len(lines[span.line - 1].rstrip("\r")) + 1:
        return f"column {span.col} outside line {span.line}: {rendered[:300]}"
    if not rendered.startswith(f"{span.file}:{span.line}:{span.col}: error[{err.code}]: "):
        return f"bad rendering: {rendered[:300]!r}"
    if "Traceback" in rendered:
        return "a traceback in the message"
    return None


_SYMBOL = re.compile(r"[^\W\d]\w*")


def dim_value(d: Any, sizes: dict[str, int]) -> int | None:
    """The value of a dimension (an int, a symbol or a formula such as ``(H-1)//2+1``) with symbols bound."""
    import ast as pyast

    if isinstance(d, int):
        return d

    def ev(node: Any) -> int:
        if isinstance(node, pyast.Expression):
            return ev(node.body)
        if isinstance(node, pyast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, pyast.Name):
            return sizes[node.id]
        if isinstance(node, pyast.UnaryOp) and isinstance(node.op, pyast.USub):
            return -ev(node.operand)
        if isinstance(node, pyast.BinOp):
            ops = {pyast.Add: lambda a, b: a + b, pyast.Sub: lambda a, b: a - b, pyast.Mult: lambda a, b: a * b,
                   pyast.FloorDiv: lambda a, b: a // b, pyast.Mod: lambda a, b: a % b}
            return ops[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"not a dimension formula: {d!r}")

    try:
        return ev(pyast.parse(str(d), mode="eval"))
    except (SyntaxError, KeyError, ValueError, ZeroDivisionError):
        return None


def choose_sizes(g: Any) -> tuple[dict[str, int] | None, str]:
    """Sizes for the symbolic dimensions at which every inferred dimension is positive and the network small
    enough to run here; (None, why) when there are none. Symbolic sizes are tried at 8, then 32, then 224 (a
    network with a symbolic image size may need a large image, like torchvision's models)."""
    from dlc.compiler.passes import total_params
    from dlc.compiler.types import TensorType

    params = total_params(g)
    if params > MAX_RUN_PARAMS:
        return None, f"{params:,} parameters"
    types = [t for t in g.types.values() if isinstance(t, TensorType)]
    symbols = {m.group() for t in types for d in t.shape if isinstance(d, str) for m in _SYMBOL.finditer(d)}
    why = "no symbolic size makes every dimension positive"
    least = _slice_minimum(g)
    for size in ((SYMBOLIC_SIZE, 32, 224) if symbols else (SYMBOLIC_SIZE,)):
        sizes = {name: size for name in symbols}
        if any(size < least.get(name, 0) for name in symbols):
            # docs/language.md: a slice of a symbolic axis assumes the size large enough for its bounds (`x[:100]`
            # on `T` is [100]); at smaller sizes the module's shapes differ from the inferred ones, as documented
            why = "a slice assumes a symbolic size larger than the sizes tried: " + ", ".join(
                f"{name} >= {n}" for name, n in sorted(least.items()))
            continue
        dims = [[dim_value(d, sizes) for d in t.shape] for t in types]
        if any(v is None or v < 1 for ds in dims for v in ds):
            continue
        largest = max((BATCH * math.prod(ds) for ds in dims), default=0)
        if largest > MAX_RUN_ELEMENTS:
            return None, f"a value of {largest:,} elements"
        return sizes, ""
    return None, why


def _slice_minimum(g: Any) -> dict[str, int]:
    """For each symbolic size, the largest number in the bounds of a slice of a value with that size in its shape
    (conservative: any axis of the value, any bound): the size the slice assumes the axis to have at least."""
    from dlc.compiler.types import TensorType

    least: dict[str, int] = {}
    for node in g.nodes:
        entries = node.attrs.get("entries")
        t = g.types[node.inputs[0]] if node.inputs else None
        if not entries or not isinstance(t, TensorType):
            continue
        names = {m.group() for d in t.shape if isinstance(d, str) for m in _SYMBOL.finditer(d)}
        numbers = [int(n) for n in re.findall(r"\d+", str(entries))]
        for name in names:
            least[name] = max([least.get(name, 0), *numbers])
    return least


def _random_inputs(g: Any, sizes: dict[str, int]) -> list:
    import torch

    out = []
    for _, vid in g.inputs:
        t = g.types[vid]
        shape = [BATCH] + [dim_value(d, sizes) for d in t.shape]
        if t.dtype in ("int64", "int32") and not t.shape:  # one integer per sequence: a length, which is >= 1
            out.append(torch.ones(shape, dtype=getattr(torch, t.dtype)))
        elif t.dtype in ("int64", "int32"):
            out.append(torch.zeros(shape, dtype=getattr(torch, t.dtype)))
        elif t.dtype == "bool":
            out.append(torch.rand(shape) > 0.5)
        else:
            out.append(torch.randn(shape, dtype=getattr(torch, t.dtype)))
    return out


def _check_outputs(g: Any, result: Any, sizes: dict[str, int]) -> str | None:
    from dlc.compiler.types import TensorType

    results = result if isinstance(result, tuple) else (result,)
    outputs = [(name, vid) for name, vid in g.outputs if name not in g.training_outputs]  # the model runs in eval
    if len(results) != len(outputs):
        return f"{len(results)} results for {len(outputs)} outputs (in eval mode)"
    for (name, vid), got in zip(outputs, results, strict=True):
        want = g.types[vid]
        if not isinstance(want, TensorType):
            continue
        shape = tuple(got.shape)
        expect = (BATCH,) + tuple(dim_value(d, sizes) for d in want.shape)
        if shape != expect:
            return f"output `{name}` has shape {shape}, the compiler inferred {expect} ({want}, sizes {sizes})"
    return None


def run_case(case: Case, workdir: Path, run_forward: bool = True, report: Any = None) -> dict[str, Any]:
    """Run every stage on one case in this process. Returns {'outcome': ..., 'finding': ...}.

    ``report(stage)`` is called when a stage starts (the worker tells the parent, which times stages).
    """
    from dlc import api
    from dlc.backends.graphviz import to_dot
    from dlc.backends.summary import summarize
    from dlc.backends.torch.emit import emit_module
    from dlc.compiler.ops.registry import op_of
    from dlc.compiler.serialize import dump_yaml
    from dlc.diagnostics import DlcError
    from dlc.pipeline import build_graph

    def stage(name: str) -> None:
        if report is not None:
            report(name)

    for old in workdir.rglob("*"):
        if old.is_file():
            old.unlink()
    paths: dict[str, Path] = {}
    for rel, text in case.files.items():
        p = workdir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        paths[rel] = p
    main = paths[case.main]
    where = "check"
    try:
        stage("check")
        g = build_graph(main, dict(case.params))
    except DlcError as err:
        bad = _check_error(err, paths)
        return {"outcome": err.code, "finding": f"malformed diagnostic: {bad}" if bad else None}
    except BaseException as exc:  # noqa: BLE001 - the point of the fuzzer
        return {"outcome": "crash", "finding": _crash(where, exc)}
    stages = [("compile", lambda: emit_module(g)),
              ("compile --fuse", lambda: emit_module(g, fuse=True)),
              ("summary", lambda: summarize(g)),
              ("render", lambda: to_dot(g)),
              ("ir", lambda: dump_yaml(g)),
              ("compile --optimize inference",
               lambda: emit_module(build_graph(main, dict(case.params), optimize="inference"), fuse=True,
                                   channels_last=True))]
    outputs: dict[str, str] = {}
    try:
        for where, make in stages:
            stage(where)
            outputs[where] = make()
    except DlcError as err:
        return {"outcome": "disagree", "finding": f"`{where}` rejects what the check accepted: {err}"}
    except BaseException as exc:  # noqa: BLE001
        return {"outcome": "crash", "finding": _crash(where, exc)}
    if not run_forward:
        return {"outcome": "ok", "finding": None}
    if any(op_of(n.op).torch.imports is not None for n in g.nodes):
        # an extern's shape rule and arguments are the spec's claims about code dlc does not see: a mutated rule
        # or argument fails in that code, which is the spec's mistake, not a wrong acceptance
        return {"outcome": "ok-extern", "finding": None}
    sizes, why = choose_sizes(g)
    if sizes is None:
        return {"outcome": "ok-not-run", "finding": None, "why": why}
    stage("forward")
    try:
        import torch

        where = "import"
        compiled = api.Compiled(g, outputs["compile"])
        where = "construct"
        model = compiled.instantiate()
        model.eval()
        where = "forward"
        with torch.no_grad():
            result = model(*_random_inputs(g, sizes))
        wrong = _check_outputs(g, result, sizes)
    except IndexError as exc:
        if where == "forward" and "index out of range in self" in str(exc) and _looks_up_positions(g):
            # positions over a symbolic length index a table of a fixed size: valid for lengths up to that size,
            # which the spec does not say; the sizes chosen here are beyond it (a fact about the data, as token ids)
            return {"outcome": "ok-data", "finding": None}
        return {"outcome": "wrong-acceptance", "finding": "wrong acceptance: " + _crash(where, exc)}
    except BaseException as exc:  # noqa: BLE001
        return {"outcome": "wrong-acceptance", "finding": "wrong acceptance: " + _crash(where, exc)}
    if wrong:
        return {"outcome": "wrong-acceptance", "finding": f"wrong acceptance: {wrong}"}
    return {"outcome": "ok", "finding": None}


def _looks_up_positions(g: Any) -> bool:
    """Whether an embedding of ``g`` reads position ids (``positions`` over a symbolic length)."""
    from dlc.compiler.ops.registry import op_of

    made = {v: n.op for n in g.nodes for v in n.outputs}
    return any(op_of(n.op).family == "embedding" and made.get(n.inputs[0]) == "positions" for n in g.nodes)


def _crash(where: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "site-packages" not in f.filename or "/dlc" in f.filename] or frames
    top = own[-1] if own else None
    loc = f"{Path(top.filename).name}:{top.lineno} in {top.name}" if top else "?"
    return f"{where}: {type(exc).__name__}: {str(exc)[:300]} (at {loc})"


# ---- the worker process and the loop --------------------------------------------------------------------------


def _worker(conn: Any, workdir: str, run_forward: bool) -> None:
    import warnings

    os.environ.setdefault("TRITON_INTERPRET", "1")
    warnings.simplefilter("ignore")  # torch's advice about odd but legal layers (padding='same' with even k, ...)
    import torch

    torch.set_num_threads(1)
    wd = Path(workdir)
    while True:
        case = conn.recv()
        if case is None:
            return
        result = run_case(case, wd, run_forward, report=lambda s: conn.send(("stage", s)))
        conn.send(("done", result))


class Runner:
    """Runs cases in a worker process, restarting it after a hang or a crash of the interpreter."""

    def __init__(self, workdir: Path, hang: float, forward_timeout: float, run_forward: bool = True) -> None:
        self.workdir, self.hang, self.forward_timeout, self.run_forward = workdir, hang, forward_timeout, run_forward
        self.ctx = mp.get_context("spawn")
        self.proc: Any = None
        self.conn: Any = None

    def _start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, str(self.workdir), self.run_forward), daemon=True)
        self.proc.start()
        self.conn = parent

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None

    def run(self, case: Case) -> dict[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send(case)
        stage, started = "start", time.monotonic()
        while True:
            limit = self.forward_timeout if stage == "forward" else self.hang
            # the first case after a (re)start also waits for the worker to import torch
            if not self.conn.poll(max(0.0, started + limit - time.monotonic())):
                if stage == "start":
                    started, stage = time.monotonic(), "starting"
                    continue
                self.stop()
                outcome = "slow-forward" if stage == "forward" else "hang"
                finding = None if stage == "forward" else f"hang: `{stage}` took more than {limit:g} s"
                return {"outcome": outcome, "finding": finding}
            try:
                kind, value = self.conn.recv()
            except (EOFError, OSError):
                code = self.proc.exitcode if self.proc else None
                self.stop()
                return {"outcome": "crash", "finding": f"{stage}: the worker died (exit code {code})"}
            if kind == "done":
                return value
            stage, started = value, time.monotonic()


@dataclass
class Report:
    cases: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)  # signature -> first case

    @property
    def per_hour(self) -> float:
        return self.cases * 3600 / self.seconds if self.seconds else 0.0

    def text(self) -> str:
        top = sorted(self.outcomes.items(), key=lambda kv: -kv[1])
        lines = [f"{self.cases} cases in {self.seconds:.0f} s ({self.per_hour:,.0f} cases/hour), "
                 f"{len(self.findings)} distinct findings",
                 "outcomes: " + ", ".join(f"{k} {v}" for k, v in top)]
        for sig, f in self.findings.items():
            lines.append(f"FINDING {sig}: {f['finding']}\n    seed {f['seed']}; " + "; ".join(f["how"])
                         + (f"\n    saved in {f['saved']}" if f.get("saved") else ""))
        return "\n".join(lines)


def _signature(finding: str) -> str:
    """Findings that failed at the same place count once (numbers and names inside messages vary)."""
    m = re.search(r"\(at ([^)]*)\)", finding)
    key = finding.split(":", 1)[0] + (m.group(1) if m else re.sub(r"[`'\"].*", "", finding)[:80])
    return hashlib.sha1(key.encode()).hexdigest()[:10]


_IMPORT = re.compile(r'import\s+"([^"\n]*)"')


def imported_files(files: dict[str, str], main: str) -> dict[str, str]:
    """The files of ``files`` that ``main`` imports, directly or through another, with ``main`` itself: a saved
    case keeps what it reads, not every file its seed could have read."""
    keep: dict[str, str] = {}
    todo = [main]
    while todo:
        rel = todo.pop()
        if rel in keep or rel not in files:
            continue
        keep[rel] = files[rel]
        base = Path(rel).parent
        todo.extend(str(base / name) for name in _IMPORT.findall(files[rel]))
    return keep


def _save(out: Path, sig: str, case: Case, finding: str) -> Path:
    folder = out / sig
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in imported_files(case.files, case.main).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8", errors="surrogatepass")
    (folder / "finding.json").write_text(json.dumps({"seed": case.seed, "how": case.how, "params": case.params,
                                                     "finding": finding}, indent=2, default=str) + "\n")
    return folder


def fuzz(seconds: float, seed: int = 0, out: Path | None = None, hang: float = 10.0, forward_timeout: float = 60.0,
         max_cases: int | None = None, run_forward: bool = True, workdir: Path | None = None,
         progress: bool = False) -> Report:
    """Fuzz for ``seconds`` (or ``max_cases``) from ``seed``; returns what happened."""
    import tempfile

    seeds = load_seeds()
    rng = random.Random(seed)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="dlc-fuzz-") as tmp:
        runner = Runner(Path(workdir or tmp), hang, forward_timeout, run_forward)
        start = time.monotonic()
        last = start
        try:
            while time.monotonic() - start < seconds and (max_cases is None or report.cases < max_cases):
                case = make_case(seeds, rng)
                result = runner.run(case)
                report.cases += 1
                report.outcomes[result["outcome"]] = report.outcomes.get(result["outcome"], 0) + 1
                finding = result.get("finding")
                if finding:
                    sig = _signature(finding)
                    if sig not in report.findings:
                        saved = _save(out, sig, case, finding) if out else None
                        report.findings[sig] = {"finding": finding, "seed": case.seed, "how": case.how,
                                                "saved": str(saved) if saved else None}
                        if progress:
                            print(f"FINDING {sig}: {finding}", file=sys.stderr, flush=True)
                if progress and time.monotonic() - last > 30:
                    last = time.monotonic()
                    print(f"... {report.cases} cases, {len(report.findings)} findings", file=sys.stderr, flush=True)
        finally:
            report.seconds = time.monotonic() - start
            runner.stop()
    return report


def load_case(folder: Path) -> Case:
    """A case saved by the fuzzer (its .dln files and ``finding.json``), to run again."""
    meta = json.loads((folder / "finding.json").read_text(encoding="utf-8"))
    files = {str(p.relative_to(folder)): p.read_bytes().decode("utf-8", errors="surrogateescape")
             for p in sorted(folder.rglob("*.dln"))}
    return Case(meta["seed"], meta["how"], files, "net.dln", meta.get("params", {}))


def replay(folders: list[Path], hang: float = 10.0) -> int:
    """Run saved cases again; prints each outcome, returns 1 if any still fails."""
    import tempfile

    failed = 0
    with tempfile.TemporaryDirectory(prefix="dlc-fuzz-") as tmp:
        runner = Runner(Path(tmp), hang, forward_timeout=120.0)
        try:
            for folder in folders:
                result = runner.run(load_case(folder))
                failed += result["finding"] is not None
                print(f"{folder.name}: {result['outcome']}" + (f": {result['finding']}" if result["finding"] else ""))
        finally:
            runner.stop()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=300, help="how long to fuzz (default 300)")
    p.add_argument("--cases", type=int, help="stop after this many cases")
    p.add_argument("--seed", type=int, default=0, help="random seed (a run is reproducible from it)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz", help="where findings are saved")
    p.add_argument("--hang", type=float, default=10.0, help="seconds the compile stages may take (default 10)")
    p.add_argument("--no-forward", action="store_true", help="skip building and running accepted networks")
    p.add_argument("--replay", nargs="+", type=Path, metavar="FOLDER",
                   help="run saved cases (folders as --out writes them) instead of fuzzing")
    args = p.parse_args(argv)
    if args.replay:
        return replay(args.replay, args.hang)
    report = fuzz(args.seconds, args.seed, args.out, args.hang, max_cases=args.cases,
                  run_forward=not args.no_forward, progress=True)
    print(report.text())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
