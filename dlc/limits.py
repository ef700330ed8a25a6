"""Every resource limit a user may need to raise, in one place.

A spec is untrusted input: these limits stop a runaway or hostile one (a huge file, a recursion that doubles,
a repeat of a million) with a diagnostic long before it exhausts time or memory. Each is generous for real
networks; for an unusually large one, set ``DLC_<NAME>`` (for example ``DLC_MAX_STEPS=2000000``) in the
environment of the command or the Python process, up to the limit's ceiling. The value is read when it is used.

Limits that follow from what the generated code or PyTorch can represent (64-bit integers, 32-bit size
arguments, 1,024 stacked recurrent layers, nesting depth) are fixed where they are defined; docs/security.md
lists them all.
"""

from __future__ import annotations

import os

from dlc.diagnostics import DlcError

# name -> (default, ceiling, what it bounds). The ceiling keeps a raised limit meaningful: beyond it a value
# would overflow what uses it (a timeout past ~292 years is an OverflowError) or allow work no machine finishes.
_GIB = 1 << 30
LIMITS: dict[str, tuple[int, int, str]] = {
    "MAX_SPEC_BYTES": (1 << 20, 4 * _GIB, "bytes in one .dln file"),
    "MAX_TOTAL_BYTES": (4 << 20, 4 * _GIB, "bytes in all the files of one program together"),
    "MAX_SPEC_FILES": (256, 1_000_000, "files in one program: the root spec and everything it imports"),
    "MAX_PARAMS_BYTES": (256 << 10, 4 * _GIB, "bytes in a --params YAML file"),
    # parsing costs about 30 microseconds a token: this bound keeps a rejected file well under a second
    "MAX_TOKENS": (20_000, 10**9, "tokens (names, numbers, operators; not comments) in one .dln file"),
    "MAX_NODES": (50_000, 10**9, "layers in one network, after repeats and blocks are unrolled"),
    "MAX_STEPS": (500_000, 10**9,
                  "elaboration steps: expressions evaluated, block instances built, repeat iterations"),
    # a 100,000-node drawing can take dot hours; such a one is better collapsed (`dlc render --depth`)
    "DOT_SECONDS": (300, 86_400, "seconds Graphviz's dot may take to draw a diagram"),
}


def limit(name: str) -> int:
    """The limit ``name``: its default, or the integer in ``$DLC_<name>`` (from 1 to the limit's ceiling)."""
    default, ceiling, _ = LIMITS[name]
    text = os.environ.get(f"DLC_{name}", "").strip()
    if not text:
        return default
    # the length check first: int() of a long digit string is slow, and refused past 4,300 digits
    short = len(text.lstrip("0")) <= len(str(ceiling))
    value = int(text) if text.isascii() and text.isdigit() and short else 0
    if not 1 <= value <= ceiling:
        raise DlcError("bad-limit", f"DLC_{name} must be a positive integer, at most {ceiling:,}, got {text[:30]!r}",
                       hint=f"unset it to use the default, {default:,}")
    return value


def raise_hint(name: str) -> str:
    """How to raise the limit ``name``, for a diagnostic's hint."""
    return f"the limit is {limit(name):,} {LIMITS[name][2]}; raise it with the environment variable DLC_{name}"
