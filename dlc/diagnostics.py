"""One diagnostic type for everything a spec can get wrong.

A :class:`DlcError` carries a stable code, a message, the source span it is about,
an optional hint, and the chain of block instances that led to it. ``render``
prints it the way a compiler does::

    net.dln:4:19: error[unknown-layer]: unknown layer `lineer`
      4 |     output y = x -> lineer(3)
        |                     ^^^^^^
      = in: MLP > head (Head)
      = hint: did you mean `linear`?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based, ``end_col`` exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass
class DlcError(Exception):
    """A problem in a spec, reported at a source position."""

    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    chain: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        where = f"{self.span}: " if self.span else ""
        return f"{where}error[{self.code}]: {self.message}"


class SourceCache:
    """Remembers source texts by file name so diagnostics can show the offending line."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}
        self._lines: dict[str, list[str]] = {}  # split once: the elaborator asks for a line per statement

    def add(self, file: str, text: str) -> None:
        self._texts[file] = text
        self._lines.pop(file, None)

    def line(self, file: str, line: int) -> str | None:
        text = self._texts.get(file)
        if text is None:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
            self._texts[file] = text
        # the parser counts lines by "\n" only; splitlines() would also split at \f, \x1c, \u2028 ...
        lines = self._lines.get(file) or self._lines.setdefault(file, text.split("\n"))
        if 1 <= line <= len(lines):
            return lines[line - 1].rstrip("\r")
        return None


SOURCES = SourceCache()


def render(err: DlcError, sources: SourceCache = SOURCES) -> str:
    """Format a diagnostic: header, source line, caret under the span, chain and hint."""
    out = [str(err)]
    span = err.span
    if span is not None:
        text = sources.line(span.file, span.line)
        if text is not None:
            # one column per character: tabs and other control characters print as a space
            text = "".join(c if c.isprintable() else " " for c in text)
            gutter = str(span.line)
            pad = " " * len(gutter)
            end = span.end_col if span.end_line == span.line else len(text) + 1
            width = max(1, min(end, len(text) + 1) - span.col)
            out.append(f" {gutter} | {text}")
            out.append(f" {pad} | {' ' * (span.col - 1)}{'^' * width}")
    if err.chain:
        out.append(f"  = in: {' > '.join(err.chain)}")
    for note in err.notes:
        out.append(f"  = note: {note}")
    if err.hint:
        out.append(f"  = hint: {err.hint}")
    return "\n".join(out)


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None
