"""Runtime code that generated fused modules carry with them.

Each file here is a real module (importable and tested on its own). Everything after its line
``# ---- embedded below ----`` is copied verbatim into generated files that need it, so a generated
module imports nothing from dlc. ``embedded(name)`` returns that text.
"""

from __future__ import annotations

from pathlib import Path

MARKER = "# ---- embedded below ----"


def embedded(name: str) -> str:
    """The part of ``runtime/<name>.py`` that generated modules embed."""
    text = (Path(__file__).parent / f"{name}.py").read_text(encoding="utf-8")
    head, sep, body = text.partition(MARKER + "\n")
    assert sep, f"runtime/{name}.py has no embed marker"
    return body.strip("\n") + "\n"
