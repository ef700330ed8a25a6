"""The parser front: .dln text -> AST, with syntax errors as diagnostics."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lark import Lark, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dlc.diagnostics import SOURCES, DlcError, Span
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
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "an operator",
    "COMP_OP": "a comparison",
    "$END": "end of file",
}

# Example bad inputs and the message they stand for (Lark's match_examples).
_EXAMPLES: dict[str, list[str]] = {
    "a pipeline stage after `->` (a layer, a block or a parenthesised pipeline)": [
        "network N { input x: [4] output y = x -> }",
        "network N { input x: [4] output y = x -> 3 }",
        "network N { input x: [4] output y = x -> -> relu }",
    ],
    "`=` and a value after the output's name": [
        "network N { input x: [4] output y x }",
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


@lru_cache(maxsize=None)
def _parser() -> Lark:
    return Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse .dln ``text`` (from ``file``) into an AST, raising :class:`DlcError` on bad syntax."""
    SOURCES.add(file, text)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, file) from None
    return build(tree, file)


def parse_file(path: str | Path) -> ast.Module:
    path = Path(path)
    return parse(path.read_text(encoding="utf-8"), str(path))


def _syntax_error(exc: UnexpectedInput, text: str, file: str) -> DlcError:
    line, col = exc.line, exc.column
    if isinstance(exc, UnexpectedEOF) or line < 1:
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    width = 1
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        width = max(1, len(str(exc.token)))
        what = f"unexpected `{exc.token}`"
    elif isinstance(exc, UnexpectedCharacters):
        what = f"unexpected character `{text[exc.pos_in_stream]}`"
    else:
        what = "unexpected end of file"
    label = None
    try:
        label = exc.match_examples(_parser().parse, _EXAMPLES, use_accepts=True)
    except Exception:  # match_examples re-parses examples; never let it mask the real error
        label = None
    if label:
        expected = label
    else:
        expected = _expected(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or set())
    message = f"{what}; expected {expected}" if expected else what
    span = Span(file, line, col, line, col + width)
    return DlcError("syntax", message, span)


def _expected(terms: set[str]) -> str:
    names = []
    for t in sorted(terms):
        if t in _TERMINALS:
            names.append(_TERMINALS[t])
        elif t.isupper() and len(t) > 1:
            names.append(f"`{t.lower()}`")
    names = sorted(set(names))
    if not names:
        return ""
    if len(names) > 6:
        names = names[:6] + ["..."]
    return ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1]
