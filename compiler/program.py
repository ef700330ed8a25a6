"""Reading a spec and everything it imports into one table of definitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dlc.diagnostics import DlcError, Span
from dlc.grammar import ast
from dlc.grammar.parser import parse


@dataclass
class Program:
    """All block and network definitions reachable from a root file."""

    root: str
    defs: dict[str, ast.BlockDef] = field(default_factory=dict)
    networks: list[ast.BlockDef] = field(default_factory=list)  # those of the root file, in order
    files: list[str] = field(default_factory=list)


def load_program(path: str | Path, text: str | None = None) -> Program:
    """Parse ``path`` (or ``text`` given for it) and its imports, relative to each importing file."""
    path = Path(path)
    prog = Program(str(path))
    _load(prog, path, text, stack=[], importer=None, is_root=True)
    return prog


def _load(prog: Program, path: Path, text: str | None, stack: list[Path], importer: ast.Import | None,
          is_root: bool) -> None:
    key = path.resolve()
    if key in stack:
        cycle = " -> ".join(p.name for p in stack[stack.index(key):] + [key])
        assert importer is not None
        raise DlcError("import-cycle", f"import cycle: {cycle}", importer.span,
                       hint="move the shared blocks into a file that both can import")
    if str(key) in prog.files:
        return
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if importer is None:
                raise DlcError("file-not-found", f"no such file: {path}") from None
            raise DlcError("import-not-found", f"cannot find imported file `{importer.path}` (looked for {path})",
                           importer.span, hint="imports are relative to the importing file") from None
        except (OSError, UnicodeDecodeError) as exc:
            span = importer.span if importer else None
            raise DlcError("file-unreadable", f"cannot read {path}: {exc}", span) from None
    module = parse(text, str(path))
    prog.files.append(str(key))
    stack = stack + [key]
    for imp in module.imports:
        _load(prog, path.parent / imp.path, None, stack, imp, is_root=False)
    for d in module.defs:
        if d.name in prog.defs:
            other = prog.defs[d.name]
            raise DlcError("duplicate-name", f"`{d.name}` is defined twice", d.name_span,
                           notes=[f"first defined at {other.name_span}"])
        prog.defs[d.name] = d
        if is_root and d.is_network:
            prog.networks.append(d)


def pick_network(prog: Program, name: str | None) -> ast.BlockDef:
    if name is not None:
        d = prog.defs.get(name)
        if d is None or not d.is_network:
            from dlc.diagnostics import suggest

            raise DlcError("unknown-network", f"no network named `{name}` in {prog.root}",
                           hint=suggest(name, [n.name for n in prog.networks]))
        return d
    if not prog.networks:
        raise DlcError("no-network", f"{prog.root} defines no `network`",
                       Span(prog.root, 1, 1, 1, 2), hint="a spec needs a `network Name { ... }` to compile")
    return prog.networks[0]
