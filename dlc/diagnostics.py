"""One diagnostic type for everything a spec can get wrong.

A :class:`DlcError` carries a stable code, a message, the source span it is about,
an optional hint, and the chain of block instances that led to it. ``render``
prints it the way a compiler does::

    net.dln:4:19: error[unknown-layer]: unknown layer `lineer`
      4 |     output y = x -> lineer(3)
        |                     ^^^^^^
      = in: MLP > head (Head)
      = hint: did you mean `linear`?

``str(err)`` is that whole text; ``err.headline`` its first line. A warning (:class:`Diagnostic` with severity
``"warning"``) renders the same way with ``warning[code]``. :func:`to_json` turns a diagnostic into the JSON
object that ``dlc check --format json`` prints and editors read (lines and columns 1-based, ``end`` exclusive).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

# A message longer than this is shown with its middle cut (it may quote a huge token from the spec).
MAX_MESSAGE = 1000
# Of a source line longer than this, only this many characters around the caret are shown.
SOURCE_WINDOW = 200


def display(text: object, limit: int | None = None) -> str:
    """``text`` made safe to print on a terminal: control characters (escape sequences, newlines, bidi
    overrides, unpaired surrogates from undecodable file names ...) shown as Python escapes such as ``\\x1b``,
    and, with ``limit``, the middle of a longer text replaced by `` ... ``.

    Everything dlc prints that came from outside (file names, import paths, --set names, messages that quote
    the spec) goes through this function, so no text from outside can move the cursor or forge a line.
    """
    s = str(text)
    if limit is not None and len(s) > limit:
        half = max(1, limit // 2)
        s = f"{s[:half]} ... {s[-half:]}"
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based, ``end_col`` exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{display(self.file)}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Related:
    """Another place a diagnostic is about (where a name was first defined, say)."""

    span: Span
    message: str


@dataclass(frozen=True)
class Diagnostic:
    """One structured diagnostic: an error or a warning, where it is and what would fix it.

    ``DlcError.diagnostics`` and ``Compiled.warnings`` hold these; :func:`render` prints one as text,
    :func:`to_json` as the JSON object of ``dlc check --format json``.
    """

    severity: str  # "error" or "warning"
    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: tuple[str, ...] = ()
    related: tuple[Related, ...] = ()
    chain: tuple[str, ...] = ()

    @property
    def file(self) -> str | None:
        """The file the diagnostic is in (None for one about no place in a spec, e.g. a bad parameter file)."""
        return self.span.file if self.span else None

    @property
    def headline(self) -> str:
        """The first line of the rendered diagnostic: ``file:line:col: severity[code]: message``."""
        where = f"{self.span}: " if self.span else ""
        return f"{where}{self.severity}[{self.code}]: {display(self.message, MAX_MESSAGE)}"

    def __str__(self) -> str:
        return render(self)


@dataclass
class DlcError(Exception):
    """A problem in a spec, reported at a source position.

    ``str(err)`` is the whole rendered diagnostic (source line, caret, chain, notes, hint); ``err.headline`` is
    its first line. ``err.diagnostics`` lists it as a :class:`Diagnostic`, followed by any warnings the compile
    had collected before it failed (``warnings``).
    """

    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    chain: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    related: tuple[Related, ...] = ()
    warnings: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        # an Exception pickles as cls(*self.args), and args holds only the message: rebuild from the fields
        return (DlcError, (self.code, self.message, self.span, self.hint, tuple(self.chain), list(self.notes),
                           tuple(self.related), list(self.warnings)))

    @property
    def headline(self) -> str:
        """The one-line form: ``file:line:col: error[code]: message``."""
        return self.diagnostic.headline

    @property
    def diagnostic(self) -> Diagnostic:
        """This error as a structured :class:`Diagnostic`."""
        return Diagnostic("error", self.code, self.message, self.span, self.hint, tuple(self.notes),
                          tuple(self.related), tuple(self.chain))

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """This error and the warnings collected before it, as structured diagnostics."""
        return [self.diagnostic, *self.warnings]

    def __str__(self) -> str:
        return render(self)


class DlcWarning(UserWarning):
    """The category of the warnings the Python API issues (``warnings.warn``): the message is the rendered
    warning, ``diagnostic`` the structured one. (Built from its text alone, as pytest-xdist rebuilds warnings,
    it has no ``diagnostic``.)"""

    def __init__(self, text: str, diagnostic: Diagnostic | None = None) -> None:
        super().__init__(text)
        self.diagnostic = diagnostic

    @classmethod
    def of(cls, diagnostic: Diagnostic) -> DlcWarning:
        """The warning for ``diagnostic``, its message the rendered text."""
        return cls(render(diagnostic), diagnostic)

    def __reduce__(self) -> tuple[Any, ...]:
        return (DlcWarning, (str(self), self.diagnostic))


class SourceCache:
    """Remembers source texts by file name so diagnostics can show the offending line.

    A file that was not parsed in this process is read only if it is a spec (a regular `.dln` file within the
    size limit): a diagnostic never quotes any other file.
    """

    def __init__(self) -> None:
        # each file's lines, split once: the elaborator asks for a line per multi-name statement
        self._lines: dict[str, list[str]] = {}

    def add(self, file: str, text: str) -> None:
        """Remember ``text`` as the source of ``file``."""
        # the parser counts lines by "\n" only; splitlines() would also split at \f, \x1c, \u2028 ...
        self._lines[file] = text.split("\n")

    def line(self, file: str, line: int) -> str | None:
        """Line ``line`` (1-based) of ``file``, or None when it is unknown or not a spec."""
        lines = self._lines.get(file)
        if lines is None:
            from dlc.files import FileProblem, read_text, resolve_spec
            from dlc.limits import limit

            try:
                self.add(file, read_text(resolve_spec(Path(file)), limit("MAX_SPEC_BYTES")))
            except FileProblem:
                return None
            lines = self._lines[file]
        if 1 <= line <= len(lines):
            return lines[line - 1].rstrip("\r")
        return None


SOURCES = SourceCache()


def render(err: DlcError | Diagnostic, sources: SourceCache = SOURCES) -> str:
    """Format a diagnostic: header, source line, caret under the span, chain, notes, related places and hint."""
    diag = err.diagnostic if isinstance(err, DlcError) else err
    out = [diag.headline]
    span = diag.span
    if span is not None:
        text = sources.line(span.file, span.line)
        if text is not None:
            out.extend(_source_lines(text, span))
    if diag.chain:
        out.append(f"  = in: {display(' > '.join(diag.chain), MAX_MESSAGE)}")
    for note in diag.notes:
        out.append(f"  = note: {display(note, MAX_MESSAGE)}")
    for rel in diag.related:
        out.append(f"  = note: {rel.span}: {display(rel.message, MAX_MESSAGE)}")
    if diag.hint:
        out.append(f"  = hint: {display(diag.hint, MAX_MESSAGE)}")
    return "\n".join(out)


def _source_lines(text: str, span: Span) -> list[str]:
    """The source line (at most SOURCE_WINDOW characters of it, around the span) and the caret line."""
    end = span.end_col if span.end_line == span.line else len(text) + 1
    first = span.col - 1  # 0-based first and (exclusive) last column of the caret
    last = max(first + 1, min(end, len(text) + 1) - 1)
    start, stop = 0, len(text)
    if len(text) > SOURCE_WINDOW:  # a very long line: a window that starts a little before the caret
        start = max(0, min(first - SOURCE_WINDOW // 4, len(text) - SOURCE_WINDOW))
        stop = start + SOURCE_WINDOW
    before = "... " if start > 0 else ""
    after = " ..." if stop < len(text) else ""
    # one column per character: tabs and other control characters print as a space
    shown = "".join(c if c.isprintable() else " " for c in text[start:stop])
    caret_from = len(before) + first - start
    width = max(1, min(last, stop + 1) - first)
    gutter = str(span.line)
    return [f" {gutter} | {before}{shown}{after}", f" {' ' * len(gutter)} | {' ' * caret_from}{'^' * width}"]


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def _range(span: Span) -> dict[str, dict[str, int]]:
    return {"start": {"line": span.line, "col": span.col}, "end": {"line": span.end_line, "col": span.end_col}}


def to_json(diag: Diagnostic | DlcError) -> dict[str, Any]:
    """A diagnostic as the JSON object of ``dlc check --format json`` (and of editor integrations): severity,
    code, message, file, range (1-based lines and columns, ``end`` exclusive; null without a position), hint,
    notes (the ``= in:`` chain first, as ``in: ...``) and related places ``{file, range, message}``."""
    d = diag.diagnostic if isinstance(diag, DlcError) else diag
    notes = ([f"in: {' > '.join(d.chain)}"] if d.chain else []) + list(d.notes)
    return {
        "severity": d.severity,
        "code": d.code,
        "message": d.message,
        "file": d.file,
        "range": _range(d.span) if d.span else None,
        "hint": d.hint,
        "notes": notes,
        "related": [{"file": r.span.file, "range": _range(r.span), "message": r.message} for r in d.related],
    }
