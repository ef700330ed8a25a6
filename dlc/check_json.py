"""``dlc check --format json``: the outcome of a check as one JSON document, for editors and CI.

The document (``"version": 1``)::

    {"version": 1, "file": "net.dln", "ok": true, "network": "Net", "nodes": 12, "parameters": 1234,
     "diagnostics": [{"severity": "warning", "code": "unused-layer", "message": "...", "file": "net.dln",
                      "range": {"start": {"line": 4, "col": 9}, "end": {"line": 4, "col": 18}},
                      "hint": "...", "notes": [], "related": []}]}

Each diagnostic is :func:`dlc.diagnostics.to_json` of it: lines and columns are 1-based, ``end`` exclusive;
``range`` is null for a diagnostic about no place in a spec. ``ok`` is false, and the exit status 1, when there is
an error, or a warning under ``--Werror``; ``network``, ``nodes`` and ``parameters`` are null after an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from dlc.diagnostics import DlcError, to_json

if TYPE_CHECKING:
    from dlc.compiler.ir import Graph

SCHEMA_VERSION = 1


def check_json(spec: str, compile_spec: Callable[[], tuple[Graph, int]], werror: bool) -> tuple[str, int]:
    """Run ``compile_spec`` (the graph and its parameter count) and describe the outcome: the JSON text and the
    exit status. Only a :class:`DlcError` is caught: usage errors stay the caller's."""
    doc: dict = {"version": SCHEMA_VERSION, "file": spec, "ok": False, "network": None, "nodes": None,
                 "parameters": None}
    try:
        g, params = compile_spec()
    except DlcError as err:
        diagnostics = err.diagnostics
    else:
        diagnostics = list(g.warnings)
        doc.update(network=g.name, nodes=len(g.nodes), parameters=params, ok=not (werror and diagnostics))
    doc["diagnostics"] = [to_json(d) for d in diagnostics]
    return json.dumps(doc, indent=2) + "\n", 0 if doc["ok"] else 1
