"""Statements of the generated module laid out as ``ruff format`` (black style) lays them out, at 120 columns.

The emitter writes every statement on one line; :func:`layout` splits one that is too long the way the
formatter would, so the generated file passes ``ruff format --check`` by construction (ruff is never run at
compile time). What the backend writes is a small subset of Python: assignments and returns whose value is a
call, a chain of calls and subscripts, a list or tuple, or an arithmetic expression. The rules:

- a statement that fits stays on one line (its trailing comment included);
- otherwise the last bracket pair is split (an earlier one of the trailing chain when the text before the last
  one would not fit): ``head(`` / body / ``)tail``;
- a value with operators or commas outside brackets is split inside parentheses around it instead, unless it
  has a single such operator and ends with a bracket that can be split;
- a body that fits on one line goes on one line; a body of several items goes one item per line, each followed
  by a comma (the "magic trailing comma"); a single item is laid out again, recursively; a body joined by
  operators goes one operand per line, each line after the first starting with its operator.
"""

from __future__ import annotations

from dlc.compiler.ops.pytorch import outside_strings

LINE_LENGTH = 120
_OPEN = {"(": ")", "[": "]", "{": "}"}
# Binary operators as the backend writes them (spaced), lowest priority first.
_OPERATORS = ((" + ", " - "), (" * ", " / ", " // ", " % ", " @ "))


def _scan(code: str) -> tuple[list[tuple[int, int]], list[int], list[tuple[int, str]]]:
    """The top-level bracket pairs (open, close index), commas and binary operators of ``code``."""
    pairs: list[tuple[int, int]] = []
    commas: list[int] = []
    ops: list[tuple[int, str]] = []
    stack: list[int] = []
    for i, ch in outside_strings(code):
        if ch in _OPEN:
            stack.append(i)
        elif ch in ")]}":
            start = stack.pop()
            if not stack:
                pairs.append((start, i))
        elif not stack:
            if ch == ",":
                commas.append(i)
            elif ch == " ":
                for group in _OPERATORS:
                    op = next((o for o in group if code.startswith(o, i)), None)
                    if op is not None:
                        ops.append((i, op))
                        break
    return pairs, commas, ops


def _operator_parts(code: str, ops: list[tuple[int, str]]) -> list[str]:
    """``a + b - c`` -> ``["a", "+ b", "- c"]``: split before the lowest-priority operators."""
    for group in _OPERATORS:
        cuts = [(i, op) for i, op in ops if op in group]
        if cuts:
            parts, last, prefix = [], 0, ""
            for i, op in cuts:
                parts.append(prefix + code[last:i])
                last, prefix = i + len(op), op.strip() + " "
            return parts + [prefix + code[last:]]
    return [code]


def _fits(text: str) -> bool:
    return len(text) <= LINE_LENGTH


def _body(content: str, indent: int, call: bool = True) -> list[str]:
    """The inside of a split bracket pair, at ``indent``. The arguments of a ``call`` stay on one line if they
    fit there; the items of a list or tuple literal go one per line once its brackets are split."""
    pad = " " * indent
    pairs, commas, ops = _scan(content)
    if _fits(pad + content) and (call or not commas):
        return [pad + content]
    if commas:
        items, last = [], 0
        for i in commas + [len(content)]:
            item = content[last:i].strip()
            if item:
                items.append(item)
            last = i + 1
        return [ln for item in items for ln in _expression("", item, ",", indent)]
    if ops:
        parts = _operator_parts(content, ops)
        return [ln for part in parts for ln in _expression("", part, "", indent)]
    return _expression("", content, "", indent)


def _delimiters(commas: list[int], ops: list[tuple[int, str]]) -> int:
    """How many delimiters of the highest priority (commas, then the lowest-priority operators) there are."""
    if commas:
        return len(commas)
    for group in _OPERATORS:
        count = sum(op in group for _, op in ops)
        if count:
            return count
    return 0


def _expression(head: str, code: str, tail: str, indent: int) -> list[str]:
    """``head + code + tail`` at ``indent``, split as the formatter would when it does not fit.

    ``head`` is the start of a statement (``x = ``, ``return ``); without one, ``code`` is an item inside
    brackets, which splits at its operators first.
    """
    pad = " " * indent
    if _fits(pad + head + code + tail):
        return [pad + head + code + tail]
    pairs, commas, ops = _scan(code)
    if not head and ops and not commas:
        parts = _operator_parts(code, ops)
        return [ln for i, part in enumerate(parts)
                for ln in _expression("", part, tail if i == len(parts) - 1 else "", indent)]
    if head:
        count = _delimiters(commas, ops)
        first_open, first_close = pairs[0] if pairs else (-1, -1)
        ends_in_bracket = bool(pairs) and pairs[-1][1] == len(code) - 1
        if count == 1 and first_open == 0 and _fits(pad + code[first_close:] + tail):
            # the value starts with a bracket pair after which little follows: split there
            return ([pad + head + "("] + _body(code[1:first_close], indent + 4, call=False)
                    + [pad + code[first_close:] + tail])
        if count > 1 or (count == 1 and not (ends_in_bracket and (
                len(pairs) > 1 or _fits(pad + head + code[: pairs[-1][0] + 1])))):
            # parentheses around the value (black's "invisible parentheses" made visible)
            return [pad + head + "("] + _body(code, indent + 4, call=False) + [pad + ")" + tail]
    # the chain of calls and subscripts at the end: split at its last bracket pair whose head fits
    chain = []
    end = len(code)
    for start, close in reversed(pairs):
        if close != end - 1 and not code[close + 1 : end].startswith("."):
            break
        if close > start + 1:
            chain.append((start, close))
        end = start
    if not chain:
        return [pad + head + code + tail]  # nothing to split (a long name or string): left as it is
    start, close = next(((s, c) for s, c in chain if _fits(pad + head + code[: s + 1])), chain[0])
    call = start > 0 and (code[start - 1].isidentifier() or code[start - 1].isdigit() or code[start - 1] in ")]")
    return ([pad + head + code[: start + 1]] + _body(code[start + 1 : close], indent + 4, call)
            + [pad + code[close:] + tail])


def _own_comment(code: str) -> tuple[str, str | None]:
    """``code`` without the comment it ends with (``y = f(x)  # every time step``), and that comment."""
    for i, ch in outside_strings(code):
        if ch == "#":
            return code[:i].rstrip(), code[i + 1 :].strip()
    return code, None


def layout(indent: int, code: str, comment: str | None = None) -> list[str]:
    """One statement (written on one line, ``code``) with its comment, as lines of at most 120 columns where
    the formatter can make them so. A comment the statement carries itself comes first; as for the formatter,
    the comments are one trailing comment, kept after the statement's last bracket."""
    code, own = _own_comment(code)
    tail = "".join(f"  # {c}" for c in (own, comment) if c)
    for keyword in ("return ",):
        if code.startswith(keyword):
            return _expression(keyword, code[len(keyword) :], tail, indent)
    pairs, _, _ = _scan(code)
    eq = _assignment(code, pairs)
    if eq is None:
        return _expression("", code, tail, indent)
    return _expression(code[: eq + 3], code[eq + 3 :], tail, indent)


def signature(indent: int, name: str, params: list[str]) -> list[str]:
    """The ``def name(params):`` line of a method, split like a call when it does not fit."""
    return _expression("", f"def {name}({', '.join(params)})", ":", indent)


def _assignment(code: str, pairs: list[tuple[int, int]]) -> int | None:
    """The index of the top-level `` = `` of an assignment, if ``code`` is one."""
    i = code.find(" = ")
    while i >= 0:
        if not any(s < i < c for s, c in pairs):
            return i
        i = code.find(" = ", i + 1)
    return None
