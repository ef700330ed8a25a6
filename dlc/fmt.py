"""``dlc fmt``: rewrite .dln specs in one canonical layout, keeping every comment (docs/fmt.md).

The layout: one statement per line, 4 spaces inside ``{}``, one space around ``->``, ``=`` (but ``k=3`` for keyword
arguments, as in Python) and binary operators and after ``,`` and ``:`` (none in slices, ``x[1:]``), one blank
line between top-level definitions (imports and externs may stay together) and at most one anywhere else.

Line breaks inside a statement are the author's to choose, but only before a ``->``, after a ``,``, before
``then`` / ``else`` and just after an open bracket; any other break is joined. A line longer than
:data:`LINE_LIMIT` is broken at those places (not before the first ``->`` of a pipeline), outermost first. A
continuation lines up with what it continues, as the specs were written by hand: a ``->`` under the first ``->``
of its pipeline (in parentheses: under the pipeline's first stage; after a break before the first ``->``: 4 spaces
in from the line of the first stage), ``then`` and ``else`` under their ``if``, anything
else inside brackets just after the open bracket, or, when the line breaks just after the bracket, 4 spaces in
with the closing bracket on a line of its own. Trailing comments stay trailing; those of consecutive lines are
aligned two spaces after the longest of those lines.

The text is parsed by the compiler's own parser first, so a spec with a syntax error gets the usual diagnostic
and is never rewritten; then by the same grammar keeping every token, with comments collected by a lexer
callback. Tokens are written exactly as they were (``1e-5`` stays ``1e-5``), so the formatted spec means the same.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

from lark import Lark, Token, Tree

from dlc.diagnostics import DlcError, display, render
from dlc.files import FileProblem, SPEC_SUFFIX, read_text, replacing, resolve_spec, spec_error, tracking_inputs
from dlc.grammar.parser import GRAMMAR, parse
from dlc.limits import limit

LINE_LIMIT = 120
INDENT = 4
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}
# Rules whose `(` or `[` follows a name without a space: calls, parameter lists, subscripts, `list[int]`.
_TIGHT_OPEN = {"call", "stage_call", "param_list", "subscript", "type_atom"}


@dataclass
class _Comment:
    text: str
    line: int
    blank: int = 0  # blank lines before it in the source (at most 1 kept)


@dataclass
class _Tok:
    text: str
    kind: str  # the lark terminal name
    rule: str  # the rule of the concrete syntax tree it belongs to
    line: int
    group: int = 0  # `->`: its pipeline; `if`, `then`, `else`: its conditional
    first_arrow: bool = False
    heads: list[int] = field(default_factory=list)  # the pipelines it is the first token of
    blank: int = 0
    before: list[_Comment] = field(default_factory=list)  # comments on their own lines just before it
    after: _Comment | None = None  # a comment on the same line, after it


@lru_cache(maxsize=None)
def _concrete_parser() -> tuple[Lark, list[Token]]:
    """The grammar keeping every token (``keep_all_tokens``); comments are collected by a lexer callback."""
    comments: list[Token] = []
    parser = Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                  maybe_placeholders=True, keep_all_tokens=True, lexer_callbacks={"COMMENT": comments.append})
    return parser, comments


def format_text(text: str, file: str = "<string>") -> str:
    """``text`` in the canonical layout; raises :class:`DlcError` (the compiler's diagnostic) if it does not parse."""
    if text.startswith("\ufeff"):
        text = text[1:]
    parse(text, file)  # the diagnostics (syntax, too deep, too many tokens, bad literals) are the compiler's
    parser, comments = _concrete_parser()
    comments.clear()
    tree = parser.parse(text)
    found = [_Comment(str(c).rstrip(), c.line) for c in comments]
    comments.clear()
    items = [(str(child.data), *_tokens(child)) for child in tree.children if isinstance(child, Tree)]
    eof = _attach([tok for _, toks, _ in items for tok in toks], found)
    return _Printer().module(items, eof)


def _tokens(item: Tree) -> tuple[list[_Tok], list[int]]:
    """The tokens of one top-level item, each with the rule it belongs to and its pipeline or conditional, and
    the index of the first token of each statement of its body."""
    out: list[_Tok] = []
    starts: list[int] = []
    counter = iter(range(1, 1 << 30))

    def walk(t: Tree) -> None:
        group = next(counter) if t.data in ("pipe", "stage_group", "cond") else 0
        first, start = True, len(out)
        for child in t.children:
            if isinstance(child, Tree):
                if t.data in ("block_def", "network_def", "extern_body") and child.data != "param_list":
                    starts.append(len(out))
                walk(child)
            elif isinstance(child, Token):
                tok = _Tok(str(child), child.type, str(t.data), child.line or 0)
                if child == "->" and group:
                    tok.group, tok.first_arrow, first = group, first, False
                elif t.data == "cond":
                    tok.group = group
                out.append(tok)
        if t.data in ("pipe", "stage_group"):
            out[start + (t.data == "stage_group")].heads.append(group)

    walk(item)
    return out, starts


def _attach(tokens: list[_Tok], comments: list[_Comment]) -> list[_Comment]:
    """Hang each comment on a token (trailing: after the token on its line; else before the next token) and
    count the blank lines before every token and comment; returns the comments after the last token."""
    eof: list[_Comment] = []
    events: list[tuple[int, int, object]] = [(t.line, 1, t) for t in tokens] + [(c.line, 0, c) for c in comments]
    # Sorting by line only would lose the order of tokens on one line: tokens keep theirs (sort is stable), and a
    # comment, which ends its line, comes after them.
    order = sorted(range(len(events)), key=lambda i: (events[i][0], events[i][1] == 0, i))
    last_line = 0
    prev: _Tok | None = None
    pending: list[_Comment] = []
    for i in order:
        line, _, thing = events[i]
        blank = min(1, max(0, line - last_line - 1)) if last_line else 0
        if isinstance(thing, _Comment):
            thing.blank = blank
            if prev is not None and prev.line == line and prev.after is None and not pending:
                prev.after = thing
            else:
                pending.append(thing)
        else:
            thing.blank = blank
            thing.before, pending = pending, []
            prev = thing
        last_line = line
    eof.extend(pending)
    return eof


def _space(prev: _Tok, tok: _Tok) -> bool:
    """Whether one space separates ``prev`` and ``tok`` on a line."""
    p, t = prev.text, tok.text
    if p == ",":
        return t not in _CLOSE
    if t in (",", ")", "]") or p in ("(", "["):
        return False
    if t == ":":
        return False
    if p == ":":
        return prev.rule != "slice"
    if t in ("(", "[") and tok.rule in _TIGHT_OPEN:
        return False
    if prev.rule == "neg":  # unary minus: `-x`
        return False
    if "=" in (p, t) and (prev.rule == "kwarg" if p == "=" else tok.rule == "kwarg"):
        return False
    return True


def _keepable(toks: list[_Tok], i: int, author: bool = True) -> bool:
    """Whether a line break before ``toks[i]`` is one the author may choose (``author``) or the formatter may add
    to shorten a line (the same, but for a break before the first `->` of a pipeline)."""
    tok = toks[i]
    if tok.text == "->" and tok.group > 0:
        return not tok.first_arrow or tok.rule == "stage_group" or author
    return toks[i - 1].text in (",", "(", "[") or tok.kind in ("THEN", "ELSE")


def _matches(toks: list[_Tok]) -> dict[int, int]:
    """The index of the closing bracket of every `(` and `[`."""
    out, stack = {}, []
    for i, t in enumerate(toks):
        if t.text in _OPEN:
            stack.append(i)
        elif t.text in _CLOSE and stack:
            out[stack.pop()] = i
    return {i: j for i, j in out.items() if toks[i].text != "{"}


def _hang(toks: list[_Tok], breaks: list[bool], matches: dict[int, int], i: int) -> None:
    """Break after the open bracket ``i`` and before its closing one: the contents go on lines of their own. A
    comment after the closing bracket stays with the last line of the contents."""
    j = matches[i]
    breaks[i + 1] = breaks[j] = True
    last = toks[j - 1]
    if toks[j].after and not last.after and last.text not in _CLOSE and last.line == toks[j].line:
        last.after, toks[j].after = toks[j].after, None


@dataclass
class _Line:
    indent: int
    code: str
    comment: str | None = None
    blank: int = 0


class _Printer:
    """Builds the output line by line: items, their statements, the lines of each statement."""

    def __init__(self) -> None:
        self.lines: list[_Line] = []

    def module(self, items: list[tuple[str, list[_Tok], list[int]]], eof: list[_Comment]) -> str:
        prev = None
        for kind, toks, starts in items:
            # one blank line between definitions at least; imports, and externs, may stay together
            together = prev is None or (prev == kind and kind in ("import_stmt", "extern_def"))
            self._item(kind, toks, starts, 0 if together else 1)
            prev = kind
        for c in eof:
            self.lines.append(_Line(0, "", c.text, self._blank(c.blank, -1)))
        return self._text()

    def _item(self, kind: str, toks: list[_Tok], starts: list[int], at_least: int) -> None:
        texts = [t.text for t in toks]
        if "{" not in texts:  # an import, or an extern without a body
            self._unit(toks, 0, at_least)
            return
        brace = texts.index("{")
        if kind == "extern_def" and toks[brace].line == toks[-1].line \
                and not any(t.before or t.after for t in toks[brace:-1]):
            self._unit(toks, 0, at_least)  # `extern Pick(dim: int) = "torch.nn.Softmax" { shape = x }`
            return
        self._unit(toks[:brace + 1], 0, at_least)
        bounds = starts + [len(toks) - 1]
        for a, b in zip(bounds, bounds[1:]):
            self._unit(toks[a:b], INDENT, -1)
        self._unit(toks[-1:], 0, -1, comment_indent=INDENT)

    def _unit(self, toks: list[_Tok], indent: int, at_least: int, comment_indent: int | None = None) -> None:
        """Lay out one statement (or a header, or a `}`) at ``indent``, after ``at_least`` blank lines (-1: as
        many as the source has, at most one)."""
        first = toks[0]
        for k, c in enumerate(first.before):
            head = indent if comment_indent is None else comment_indent
            self.lines.append(_Line(head, "", c.text, self._blank(c.blank, -1 if k else at_least)))
        blank = 0 if first.text == "}" else self._blank(first.blank, -1 if first.before else at_least)
        breaks = [False] + [bool(t.before) or bool(toks[i - 1].after)
                            or (_keepable(toks, i) and t.line > toks[i - 1].line) for i, t in enumerate(toks) if i]
        depth, matches = _depths(toks), _matches(toks)
        for i, j in matches.items():
            if j > i + 1 and breaks[i + 1]:  # the author broke the line after `(`: `features: (` ... `)`
                _hang(toks, breaks, matches, i)
            elif j > i + 1 and not (toks[j].before or toks[j - 1].after):  # (a comment keeps its line break)
                breaks[j] = False
        while True:
            lines, cols = _render(toks, breaks, indent, matches)
            cut = next((k for ln in lines if ln[1] > LINE_LIMIT
                        for k in [_best_break(toks, breaks, depth, cols, ln[0], ln[4])] if k is not None), None)
            if cut is None:
                break
            if toks[cut - 1].text in ("(", "["):
                _hang(toks, breaks, matches, cut - 1)
            else:
                breaks[cut] = True
        for n, (start, _, col0, text, end) in enumerate(lines):
            if n:
                self.lines.extend(_Line(col0, "", c.text) for c in toks[start].before)
            after = toks[end - 1].after
            self.lines.append(_Line(col0, text, after.text if after else None, blank if n == 0 else 0))

    def _blank(self, source: int, at_least: int) -> int:
        """Blank lines before the next line: none at the top or just after a `{`."""
        if not self.lines or self.lines[-1].code.endswith("{"):
            return 0
        return max(source, at_least)

    def _text(self) -> str:
        out: list[str] = []
        lines = self.lines
        i = 0
        while i < len(lines):
            # consecutive lines of code with trailing comments: the comments line up, two spaces after the longest
            j = i
            while j < len(lines) and lines[j].code and lines[j].comment and (j == i or not lines[j].blank):
                j += 1
            group = lines[i:j] or [lines[i]]
            col = max(ln.indent + len(ln.code) for ln in group) + 2
            for ln in group:
                out.extend([""] * ln.blank)
                code = " " * ln.indent + ln.code
                out.append(code.ljust(col) + ln.comment if ln.code and ln.comment else
                           (code if ln.code else " " * ln.indent + (ln.comment or "")))
            i += len(group)
        return "\n".join(out) + "\n" if out else ""


def _depths(toks: list[_Tok]) -> list[int]:
    """How many brackets are open around each token."""
    out, depth = [], 0
    for t in toks:
        depth -= t.text in _CLOSE
        out.append(depth)
        depth += t.text in _OPEN
    return out


def _render(toks: list[_Tok], breaks: list[bool], indent: int, matches: dict[int, int]
            ) -> tuple[list[tuple[int, int, int, str, int]], list[int]]:
    """The lines ``(first token, end column, start column, text, end token)`` of ``toks`` broken before every
    ``breaks[i]``, and the column of every token."""
    lines: list[tuple[int, int, int, str, int]] = []
    cols: list[int] = []
    # each open bracket: the column just after it, and for one whose contents hang, the column its line starts at
    stack: list[tuple[int, int | None]] = []
    arrows: dict[int, int] = {}  # where each pipeline's continuation lines start
    ifs: dict[int, int] = {}  # the column of the `if` of each conditional
    starts: dict[int, int] = {}  # the column the line of each pipeline's first stage starts at
    parts: list[str] = []
    start, col0, col = 0, indent, indent
    for i, t in enumerate(toks):
        if i and breaks[i]:
            lines.append((start, col, col0, "".join(parts), i))
            parts, start = [], i
            col = col0 = _continuation(t, stack, arrows, ifs, indent)
            if t.first_arrow and t.group in starts:
                col = col0 = starts[t.group] + INDENT
        elif i and _space(toks[i - 1], t):
            parts.append(" ")
            col += 1
        cols.append(col)
        parts.append(t.text)
        for group in t.heads:  # a `->` lines up under the first stage of a parenthesised pipeline
            if t.rule == "stage_group" or (i and toks[i - 1].text == "(" and toks[i - 1].rule == "stage_group"):
                arrows[group] = col
            else:  # or, when the author broke the line before its first `->`, 4 spaces in
                starts[group] = col0
        if t.first_arrow and t.group not in arrows:  # else under its first `->`
            arrows[t.group] = col
        elif t.kind == "IF" and t.group:
            ifs[t.group] = col
        col += len(t.text)
        if t.text in _OPEN:
            stack.append((col + (t.text == "{"), col0 if i in matches and breaks[i + 1] else None))
        elif t.text in _CLOSE and stack:
            stack.pop()
    lines.append((start, col, col0, "".join(parts), len(toks)))
    return lines, cols


def _continuation(tok: _Tok, stack: list[tuple[int, int | None]], arrows: dict[int, int], ifs: dict[int, int],
                  indent: int) -> int:
    """The column a line starting with ``tok`` starts at (see the module's docstring)."""
    hanging = stack[-1][1] if stack else None
    if tok.text in _CLOSE and hanging is not None:
        return hanging
    if tok.text == "->" and tok.group in arrows:
        return arrows[tok.group]
    if tok.kind in ("THEN", "ELSE") and tok.group in ifs:
        return ifs[tok.group]
    if hanging is not None:
        return hanging + INDENT
    return stack[-1][0] if stack else indent + INDENT


def _best_break(toks: list[_Tok], breaks: list[bool], depth: list[int], cols: list[int], start: int,
                end: int) -> int | None:
    """Where to break the too-long line of ``toks[start:end]``: at the outermost level that has a place to
    break whose text before it fits, the last such place; None if there is none."""
    places = [k for k in range(start + 1, end) if not breaks[k] and _keepable(toks, k, author=False)
              and cols[k - 1] + len(toks[k - 1].text) <= LINE_LIMIT]
    if not places:
        return None
    outer = min(depth[k] for k in places)
    return max(k for k in places if depth[k] == outer)


def spec_files(paths: list[str]) -> Iterator[str]:
    """The files named by ``paths``: a folder stands for the `.dln` files under it, sorted; `-` for stdin."""
    for p in paths:
        path = Path(p)
        if p != "-" and path.is_dir():
            yield from sorted(str(f) for f in path.rglob(f"*{SPEC_SUFFIX}") if f.is_file())
        else:
            yield p


def fmt_command(paths: list[str], check: bool, diff: bool, stdin: Callable[[], str], out: Callable[[str], None],
                report: Callable[[str], None]) -> int:
    """``dlc fmt``: format ``paths`` in place (or only list them with ``check``, or print a unified diff with
    ``diff``); returns the exit status: 0, or 1 if a spec does not parse or, with check/diff, would change."""
    status = 0
    for name in spec_files(paths):
        try:
            text = _read_stdin(stdin) if name == "-" else _read(Path(name))
            new = format_text(text, "<stdin>" if name == "-" else name)
        except DlcError as err:
            report(render(err))
            status = 1
            continue
        if check or diff:
            if new != text:
                status = 1
                out(f"{display(name)}\n" if check else _unified(text, new, name))
        elif name == "-":
            out(new)
        elif new != text:
            try:
                with replacing(Path(name)) as (fd, _tmp), open(fd, "w", encoding="utf-8", closefd=False) as f:
                    f.write(new)
            except OSError as exc:
                report(f"dlc: error: cannot write {display(name)}: {exc.strerror or exc}")
                status = max(status, 1)
                continue
            report(f"reformatted {display(name)}")
    return status


def _read(path: Path) -> str:
    """A spec's text (its own tracking: this command writes the files it reads)."""
    with tracking_inputs():
        try:
            return read_text(resolve_spec(path), limit("MAX_SPEC_BYTES"))
        except FileProblem as problem:
            raise spec_error(problem, path) from None


def _read_stdin(stdin: Callable[[], str]) -> str:
    """Standard input's text, within the size limit of a spec file."""
    text = stdin()
    if len(text.encode("utf-8", "surrogateescape")) > limit("MAX_SPEC_BYTES"):
        raise spec_error(FileProblem("too-large", f"larger than {limit('MAX_SPEC_BYTES'):,} bytes"), Path("<stdin>"))
    return text


def _unified(old: str, new: str, name: str) -> str:
    shown = "-" if name == "-" else display(name)
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), shown, shown))
