"""Reading a spec and everything it imports into one table of definitions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dlc.limits import limit, raise_hint
from dlc.diagnostics import DlcError, Related, Span, suggest
from dlc.files import FileProblem, read_text, resolve_spec, spec_error
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
    """Parse ``path`` (or ``text`` given for it) and its imports, relative to each importing file.

    Files are loaded depth first with an explicit stack (a long chain of imports cannot exhaust Python's
    recursion limit); each file's definitions are added after those of the files it imports.
    """
    path = Path(path)
    prog = Program(str(path))
    loader = _Loader(prog)
    stack = [loader.open(path, text, None)]
    while stack:
        top = stack[-1]
        if top.next_import < len(top.module.imports):
            imp = top.module.imports[top.next_import]
            top.next_import += 1
            child = top.path.parent / imp.path
            key = loader.resolve(child, imp)
            on_stack = [f.key for f in stack]
            if key in on_stack:
                cycle = " -> ".join(p.name for p in on_stack[on_stack.index(key):] + [key])
                raise DlcError("import-cycle", f"import cycle: {cycle}", imp.span,
                               hint="move the shared blocks into a file that both can import")
            if str(key) not in prog.files:
                stack.append(loader.open(child, None, imp, key))
            continue
        stack.pop()
        _add_defs(prog, top.module, is_root=not stack)
    return prog


@dataclass
class _File:
    """A parsed file on the loading stack, and how many of its imports have been followed."""

    path: Path
    key: Path
    module: ast.Module
    next_import: int = 0


class _Loader:
    """Reads and parses the files of one program within the limits of dlc.limits."""

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        self.total_bytes = 0

    def resolve(self, path: Path, importer: ast.Import | None) -> Path:
        """The real path of a spec file (what tells files apart), or a diagnostic saying why it is not one."""
        try:
            return resolve_spec(path)
        except FileProblem as problem:
            raise spec_error(problem, path, importer) from None

    def open(self, path: Path, text: str | None, importer: ast.Import | None, key: Path | None = None) -> _File:
        """Read (unless ``text`` is given) and parse one file."""
        most = limit("MAX_SPEC_FILES")
        if len(self.prog.files) >= most:
            raise DlcError("too-many-files", f"the spec and its imports are more than {most} files",
                           importer.span if importer else None, hint=raise_hint("MAX_SPEC_FILES"))
        if text is None:
            key = key or self.resolve(path, importer)
            try:
                text = read_text(key, limit("MAX_SPEC_BYTES"))
            except FileProblem as problem:
                raise spec_error(problem, path, importer) from None
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit("MAX_SPEC_BYTES"):  # text handed to the API for a name: the limit read_text applies to files
            reason = f"{size:,} bytes, more than the limit of {limit('MAX_SPEC_BYTES'):,}"
            raise spec_error(FileProblem("too-large", reason), path, importer)
        if key is None:  # text given: the name need not exist (or be a spec); it only tells files apart
            key = Path(os.path.realpath(path)) if "\x00" not in str(path) else path
        self.total_bytes += size
        total = limit("MAX_TOTAL_BYTES")
        if self.total_bytes > total:
            raise DlcError("file-too-large", f"the spec and its imports are more than {total:,} bytes",
                           importer.span if importer else None, hint=raise_hint("MAX_TOTAL_BYTES"))
        module = parse(text, str(path))
        self.prog.files.append(str(key))
        return _File(path, key, module)


def _add_defs(prog: Program, module: ast.Module, is_root: bool) -> None:
    for d in module.defs:
        if d.name in prog.defs:
            other = prog.defs[d.name]
            raise DlcError("duplicate-name", f"`{d.name}` is defined twice", d.name_span,
                           related=(Related(other.name_span, f"`{d.name}` is first defined here"),))
        prog.defs[d.name] = d
        if is_root and d.is_network:
            prog.networks.append(d)


def pick_network(prog: Program, name: str | None) -> ast.BlockDef:
    """The network to compile: ``name`` (a network of the root file) or the root file's first network."""
    if name is not None:
        for d in prog.networks:
            if d.name == name:
                return d
        imported = prog.defs.get(name)
        note = ["networks of imported files are never compiled"] if imported is not None and imported.is_network \
            else []
        raise DlcError("unknown-network", f"no network named `{name}` in {prog.root}",
                       hint=suggest(name, [n.name for n in prog.networks]), notes=note)
    if not prog.networks:
        raise DlcError("no-network", f"{prog.root} defines no `network`",
                       Span(prog.root, 1, 1, 1, 2), hint="a spec needs a `network Name { ... }` to compile")
    return prog.networks[0]
