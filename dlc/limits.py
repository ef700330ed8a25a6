"""Every resource limit a user may need to raise, in one place.

A spec is untrusted input: these limits stop a runaway or hostile one (a huge file, a recursion that doubles,
a repeat of a million) with a diagnostic long before it exhausts time or memory. Each is generous for real
networks; for an unusually large one, set ``DLC_<NAME>`` (for example ``DLC_MAX_STEPS=2000000``) in the
environment of the command or the Python process. The value is read when it is used.

Limits that follow from what the generated code or PyTorch can represent (64-bit integers, 32-bit size
arguments, 1,024 stacked recurrent layers, nesting depth) are fixed where they are defined; docs/security.md
lists them all.
"""

from __future__ import annotations

import os

from dlc.diagnostics import DlcError

# name -> (default, what it bounds)
LIMITS: dict[str, tuple[int, str]] = {
    "MAX_SPEC_BYTES": (1 << 20, "bytes in one .dln file"),
    "MAX_TOTAL_BYTES": (4 << 20, "bytes in all the files of one program together"),
    "MAX_SPEC_FILES": (256, "files in one program: the root spec and everything it imports"),
    "MAX_PARAMS_BYTES": (256 << 10, "bytes in a --params YAML file"),
    # parsing costs about 30 microseconds a token: this bound keeps a rejected file well under a second
    "MAX_TOKENS": (20_000, "tokens (names, numbers, operators; not comments) in one .dln file"),
    "MAX_NODES": (50_000, "layers in one network, after repeats and blocks are unrolled"),
    "MAX_STEPS": (500_000, "elaboration steps: expressions evaluated, block instances built, repeat iterations"),
    # a 100,000-node drawing can take dot hours; such a one is better collapsed (`dlc render --depth`)
    "DOT_SECONDS": (300, "seconds Graphviz's dot may take to draw a diagram"),
}
_CEILING = 10**18


def limit(name: str) -> int:
    """The limit ``name``: its default, or the positive integer in ``$DLC_<name>``."""
    default = LIMITS[name][0]
    text = os.environ.get(f"DLC_{name}", "").strip()
    if not text:
        return default
    value = int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 0
    if not 1 <= value < _CEILING:
        raise DlcError("bad-limit", f"DLC_{name} must be a positive integer (below 10**18), got {text[:30]!r}",
                       hint=f"unset it to use the default, {default:,}")
    return value


def raise_hint(name: str) -> str:
    """How to raise the limit ``name``, for a diagnostic's hint."""
    return f"the limit is {limit(name):,} {LIMITS[name][1]}; raise it with the environment variable DLC_{name}"
