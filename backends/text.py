"""Text from a spec made safe to place in generated source."""

from __future__ import annotations


def safe_text(text: str) -> str:
    """Spec-supplied text (file names, string values) made inert for comments and docstrings.

    Control characters (newlines included) and backslashes are escaped and quotes become
    escaped quotes, so the text can neither end a comment line nor close a docstring.
    """
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)
