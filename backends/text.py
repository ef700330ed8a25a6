"""Text from a spec made safe to place in generated source."""

from __future__ import annotations


def safe_text(text: str) -> str:
    """Spec-supplied text (file names, string values) made inert for comments, docstrings and string literals.

    Control characters (newlines included) and backslashes are escaped and quotes become
    escaped quotes, so the text can neither end a comment line nor close a docstring or string;
    inside a string or docstring it reads back as the original text. A lone surrogate (an
    undecodable byte of a file name, never text) stays escaped even there (``\\udcff``): Python
    cannot encode it, and a class whose docstring holds one cannot be created.
    """
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\\\u{ord(ch):04x}")
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)
