"""Runtime code that generated fused modules carry with them.

Each file here is a real module (importable and tested on its own). Everything after its line
``# ---- embedded below ----`` is copied verbatim into generated files that need it, so a generated
module imports nothing from dlc. A file may divide that part into sections
(``# ---- section: NAME ----``) of which a generated file takes only those it uses.

In the generated file each embedded part follows a heading line (:func:`runtime_section`) naming the module
and its sections, so a reader (and tests/test_golden.py, which checks the part against the module once
rather than keeping a copy in every golden file) knows where it comes from.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = "# ---- embedded below ----"
# The heading of an embedded part in a generated file: the module, and the sections taken if not all.
HEADING = "# ---- runtime: dlc.backends.triton.runtime.{name}{sections} ----"
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


def runtime_section(name: str, sections: set[str] | None = None) -> str:
    """``embedded(name, sections)`` under its heading (the sections listed in the order of the module)."""
    text = embedded(name, sections)
    listed = ""
    if sections is not None:
        order = _SECTION.findall((Path(__file__).parent / f"{name}.py").read_text(encoding="utf-8"))
        listed = " [" + ", ".join(s for s in order if s in sections) + "]"
    return HEADING.format(name=name, sections=listed) + "\n" + text.rstrip("\n")
