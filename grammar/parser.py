"""The parser front: .dln text -> AST, with syntax errors as diagnostics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from dlc.limits import limit, raise_hint
from dlc.diagnostics import SOURCES, DlcError, Span, suggest
from dlc.files import FileProblem, read_text, resolve_spec, spec_error
from dlc.grammar import ast
from dlc.grammar.build import build

GRAMMAR = Path(__file__).with_name("dln.lark")

# Readable names for the grammar's terminals, used in "expected ..." messages.
_TERMINALS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "DTYPE": "a dtype",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "COMMA": "`,`",
    "COLON": "`:`",
    "EQUAL": "`=`",
    "__ANON_0": "`->`",
    "MINUS": "`-`",
    "STAR": "`*`",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/`, `//` or `%`",
    "COMP_OP": "a comparison",
    "ELLIPSIS": "`...`",
    "VBAR": "`|`",
    "LABEL_PATTERN": "a label pattern (`name_{i}`)",
    "$END": "end of file",
}
# Tokens that can start a value (an expression), a statement, or continue an expression as an operator.
_VALUE_START = {"LPAR", "MINUS", "LSQB", "NAME", "NUMBER", "STRING", "TRUE", "FALSE", "IF", "NOT"}
_STATEMENT_START = {"INPUT", "OUTPUT", "RETURN", "PARAM"}
_OPERATORS = {"ADD_OP", "MUL_OP", "COMP_OP", "AND", "OR"}
KEYWORDS = ("import", "block", "network", "input", "output", "return", "if", "then", "else", "and", "or", "not",
            "true", "false", "param", "extern")
# Expressions (and pipeline groups) nested deeper than this are rejected: nobody writes them, and
# walking them would exhaust Python's recursion limit.
MAX_NESTING = 100

# Example bad inputs and the message they stand for (Lark's match_examples).
_EXAMPLES: dict[str, list[str]] = {
    "a pipeline stage after `->` (a layer, a block or a parenthesised pipeline)": [
        "network N { input x: [4] output y = x -> }",
        "network N { input x: [4] output y = x -> 3 }",
        "network N { input x: [4] output y = x -> -> relu }",
    ],
    "a closing `)`": [
        "network N { input x: [4] output y = x -> linear(3 }",
        "network N { input x: [4] output y = x -> linear(3, k=1 }",
    ],
    "a statement (`input`, `output`, `return` or `name = value`) or `}`": [
        "network N { input x: [4] 3 }",
        "network N { input x: [4] output y = x -> linear(3) ) }",
    ],
}


class _TooManyTokens(Exception):
    def __init__(self, token: Token) -> None:
        super().__init__(token)
        self.token = token


class _TokenBudget:
    """Lark's post-lexer: every token the parser reads passes through it (comments and whitespace never reach
    it), so a text with too many stops while it is read, not after.

    A post-lexer rather than lexer callbacks: the contextual lexer types a keyword such as `input` or `checkpoint`
    by a callback of its own on NAME, and a callback chained after it is skipped for the retyped token, so
    callbacks missed keywords and, depending on the lexer state, names."""

    always_accept: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.left = 0

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        for token in stream:
            self.left -= 1
            if self.left < 0:
                raise _TooManyTokens(token)
            yield token


_BUDGET = _TokenBudget()


@lru_cache(maxsize=None)
def _parser() -> Lark:
    grammar = GRAMMAR.read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True, postlex=_BUDGET)


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse .dln ``text`` (from ``file``) into an AST, raising :class:`DlcError` on bad syntax."""
    if text.startswith("\ufeff"):  # a byte-order mark (editors on Windows) is not part of the text
        text = text[1:]
    SOURCES.add(file, text)
    parser = _parser()
    _BUDGET.left = limit("MAX_TOKENS")
    try:
        tree = parser.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, file) from None
    except _TooManyTokens as exc:
        tok = exc.token
        span = Span(file, tok.line or 1, tok.column or 1, tok.line or 1, (tok.column or 1) + max(1, len(tok)))
        raise DlcError("too-large", f"the file has more than {limit('MAX_TOKENS'):,} tokens", span,
                       hint=raise_hint("MAX_TOKENS")) from None
    _check_nesting(tree, file)
    try:
        return build(tree, file)
    except VisitError as exc:  # the builder reports bad literals as DlcError; lark wraps them
        if isinstance(exc.orig_exc, DlcError):
            raise exc.orig_exc from None
        raise


def _check_nesting(tree: Tree, file: str) -> None:
    """Reject trees deeper than MAX_NESTING (iteratively, so the check itself cannot overflow)."""
    stack = [(tree, 0)]
    while stack:
        t, depth = stack.pop()
        if depth > MAX_NESTING:
            meta = t.meta
            line = getattr(meta, "line", 1)
            col = getattr(meta, "column", 1)
            span = Span(file, line, col, getattr(meta, "end_line", line), getattr(meta, "end_column", col + 1))
            raise DlcError("too-deep", f"expressions nest more than {MAX_NESTING} levels deep here", span,
                           hint="split the expression with intermediate names (`a = ...`)")
        stack.extend((c, depth + 1) for c in t.children if isinstance(c, Tree))


def parse_file(path: str | Path) -> ast.Module:
    """Parse one spec file (its imports are not followed); it must be a regular `.dln` file within the size
    limit, checked before anything is read."""
    path = Path(path)
    try:
        text = read_text(resolve_spec(path), limit("MAX_SPEC_BYTES"))
    except FileProblem as problem:
        raise spec_error(problem, path) from None
    return parse(text, str(path))


def _syntax_error(exc: UnexpectedInput, text: str, file: str) -> DlcError:
    line, col, width = exc.line, exc.column, 1
    at_end = isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END")
    if at_end:
        line, col = _end_position(exc, text)
        what = "unexpected end of file"
    elif isinstance(exc, UnexpectedToken):
        width = max(1, len(str(exc.token)))
        what = f"unexpected `{exc.token}`"
    elif isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream]
        if ch == '"':
            what = "unterminated string"
            width = max(1, len(text[exc.pos_in_stream:].split("\n", 1)[0]))
        else:
            what = f"unexpected character `{ch}`" if ch.isprintable() else f"unexpected character {ch!r}"
    else:
        what = "unexpected input"
    if line < 1 or col < 1:
        line, col = _end_position(None, text)
    label = _match_example(exc)
    acceptable = _acceptable(exc)
    expected = label or _expected(acceptable)
    if what == "unterminated string":
        message = "unterminated string: a string ends with `\"` on the same line"
    else:
        message = f"{what}; expected {expected}" if expected else what
    span = Span(file, line, col, line, col + width)
    hint = _keyword_hint(exc, text, acceptable)
    if isinstance(exc, UnexpectedToken) and re.search(r"(->|\()\s*if\s*$", text[:exc.token.start_pos or 0]):
        # `x -> (if c then a else b)`: the word `if` was read as a stage name
        message = f"{what}; a conditional `if ... then ... else ...` cannot be written as a pipeline stage"
        hint = "bind the conditional layer first: `l = if c then relu else gelu`, then `-> l`"
    return DlcError("syntax", message, span, hint=hint)


@lru_cache(maxsize=None)
def _example_errors() -> tuple:
    """The parse error of every example in _EXAMPLES, computed once (lark's match_examples re-parses each time)."""
    out = []
    for label, examples in _EXAMPLES.items():
        for text in examples:
            _BUDGET.left = len(text)  # examples are short; the file being reported may have spent the budget
            try:
                _parser().parse(text)
            except UnexpectedInput as ut:
                accepts = frozenset(ut.accepts) if isinstance(ut, UnexpectedToken) else None
                out.append((label, _state_id(ut), accepts, getattr(ut, "token", None)))
    return tuple(out)


def _match_example(exc: UnexpectedInput) -> str | None:
    """Like lark's ``match_examples(use_accepts=True)``: same LALR state and accepted tokens (but at any
    stack depth, so an example written inside `output` also covers an assignment)."""
    try:
        candidate = None
        for label, state, accepts, token in _example_errors():
            if state is None or state != _state_id(exc):
                continue
            if accepts is not None and isinstance(exc, UnexpectedToken) and accepts != frozenset(exc.accepts):
                continue
            if token is not None and getattr(exc, "token", None) == token:
                return label
            candidate = candidate or label
        return candidate
    except Exception:  # never let the nicer message mask the real error
        return None


def _state_id(exc: UnexpectedInput):
    state = getattr(exc, "state", None)
    return getattr(state, "position", state)


def _end_position(exc: UnexpectedInput | None, text: str) -> tuple[int, int]:
    """Just after the last token (lark's $END token borrows the last token's position)."""
    tok = getattr(exc, "token", None)
    if tok is not None and getattr(tok, "end_line", None) and tok.end_line >= 1 and tok.end_column >= 1:
        return tok.end_line, tok.end_column
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def _acceptable(exc: UnexpectedInput) -> set[str]:
    """The terminals the parser would accept here (exact, via the interactive parser when there is one)."""
    ip = getattr(exc, "interactive_parser", None)
    if ip is not None:
        try:
            return set(ip.accepts())
        except Exception:
            pass
    return set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())


def _keyword_hint(exc: UnexpectedInput, text: str, acceptable: set[str]) -> str | None:
    """'did you mean `network`?' for a misspelt keyword at (or just before) the error."""
    tok = getattr(exc, "token", None)
    wanted = [t.lower() for t in acceptable if t.lower() in KEYWORDS]
    if isinstance(tok, Token) and tok.type == "NAME" and wanted:
        return suggest(str(tok), wanted)
    # `nput x: [4]` parses `nput` as the start of an assignment and fails at `x`
    if acceptable and acceptable <= {"EQUAL", "COMMA"}:
        pos = getattr(exc, "pos_in_stream", None)
        if pos is None and isinstance(tok, Token):
            pos = tok.start_pos
        if isinstance(pos, int) and pos >= 0:
            m = re.search(r"(?:^|[{}()\[\]\s])(\w+)\s*$", text[max(0, pos - 200):pos])
            if m:
                return suggest(m.group(1), ("input", "output", "return"))
    return None


def _expected(terms: set[str]) -> str:
    terms = set(terms)
    if "NAME" in terms:
        terms.discard("LABEL_PATTERN")  # a label pattern (`layer_{i}`) is a name too: "a name" says it
    groups = []
    if len(terms & _VALUE_START) >= 4:
        groups.append("a value")
        terms -= _VALUE_START
    if terms & _STATEMENT_START:
        groups.append("a statement")
        terms -= _STATEMENT_START | {"NAME"}
    if len(terms & _OPERATORS) >= 2:
        groups.append("an operator")
        terms -= _OPERATORS
    names = []
    for t in terms:
        if t in _TERMINALS:
            names.append(_TERMINALS[t])
        elif t.isupper() and len(t) > 1 and not t.startswith("__"):
            names.append(f"`{t.lower()}`")
    names = sorted(set(names), key=lambda n: (not n.startswith("`"), n)) + groups
    if not names:
        return ""
    return ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1]
