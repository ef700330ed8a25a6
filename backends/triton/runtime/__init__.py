"""Runtime code that generated fused modules carry with them.

Each file here is a real module (importable and tested on its own). Everything after its line
``# ---- embedded below ----`` is copied verbatim into generated files that need it, so a generated
module imports nothing from dlc. A file may divide that part into sections
(``# ---- section: NAME ----``) of which a generated file takes only those it uses.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = "# ---- embedded below ----"
_SECTION = re.compile(r"^# ---- section: (\w+) ----\n", re.MULTILINE)


def embedded(name: str, sections: set[str] | None = None) -> str:
    """The part of ``runtime/<name>.py`` that generated modules embed (only ``sections``, when given)."""
    text = (Path(__file__).parent / f"{name}.py").read_text(encoding="utf-8")
    head, sep, body = text.partition(MARKER + "\n")
    assert sep, f"runtime/{name}.py has no embed marker"
    parts = _SECTION.split(body)
    if len(parts) == 1:
        return body.strip("\n") + "\n"
    chosen = [parts[i + 1].strip("\n") for i in range(1, len(parts), 2) if sections is None or parts[i] in sections]
    return "\n\n\n".join(chosen) + "\n"
