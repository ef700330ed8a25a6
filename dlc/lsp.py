"""``dlc lsp``: a minimal language server for .dln specs, on stdin/stdout (``pip install "dlc[lsp]"``).

It compiles each open document from the editor's text (unsaved changes included; its imports are read from disk,
relative to the document) whenever it is opened, changed or saved, and publishes the diagnostics; hovering over a
layer, a label or a block call shows its op, inferred output shape(s) and parameter count, read from the IR of the
last compile that succeeded for the text now in the editor. Compiling never imports torch (nor does this module).

Built on pygls (>= 2) and lsprotocol, imported only when the server starts, so that the helpers here and
``dlc --help`` work without them.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlc.diagnostics import Diagnostic, DlcError, Span, display

if TYPE_CHECKING:
    from lsprotocol import types

    from dlc.compiler.ir import Graph

_WORD = re.compile(r"[^\W\d]\w*(?:\{i\}\w*)?")
_IMPORT = re.compile(r'\s*(import)\s+"([^"\\\n]*)"')
_LABEL_END = re.compile(r"\s*:\s*(?=[^\s\[])")
# At most this many instances are listed in a hover (a block body used by every layer of a deep network).
MAX_HOVER_ITEMS = 8


def check_document(text: str, path: str) -> tuple[Graph | None, list[Diagnostic]]:
    """Compile ``text`` as the spec at ``path``: its IR (None when it has errors) and its diagnostics, the error
    first and then the warnings (unused layers and inputs, ...) as ``dlc check`` prints them.

    The one place the server asks the compiler about a document; it needs the graph (for hover), so it runs the
    front end (``build_graph``) rather than :func:`dlc.api.diagnose`, which also generates the module."""
    from dlc.pipeline import build_graph  # the compiler loads on the first document, not for `dlc lsp --help`

    try:
        graph = build_graph(path, text=text)
    except DlcError as err:
        return None, err.diagnostics
    except Exception as exc:  # a bug in dlc: shown in the editor (as `dlc compile` says it), the server goes on
        return None, [DlcError("internal-error", f"internal error ({type(exc).__name__}: {exc}); this is a bug in "
                                                 f"dlc, please report it with the spec").diagnostic]
    return graph, list(graph.warnings)


def to_diagnostic(diag: Diagnostic, path: str, text: str) -> types.Diagnostic:
    """``diag`` (an error or a warning) as an LSP diagnostic on the document ``path`` whose text is ``text``.

    A problem in an imported file is shown on the document's import of it (or its first line when it is imported
    further down), with its own location as related information (an editor shows a link to it)."""
    from lsprotocol import types

    message = display(diag.message)
    if diag.chain:  # the block instances that led to it, as `dlc compile` prints them
        message += f"\nin: {display(' > '.join(diag.chain))}"
    for note in diag.notes:
        message += f"\nnote: {display(note)}"
    if diag.hint:
        message += f"\nhint: {display(diag.hint)}"
    related = [types.DiagnosticRelatedInformation(
        types.Location(_uri(r.span.file), to_range(r.span, text if r.span.file == path else None)),
        display(r.message)) for r in diag.related]
    span = diag.span
    if span is None:
        where = types.Range(types.Position(0, 0), types.Position(0, 0))
    elif span.file == path:
        where = to_range(span, text)
    else:
        where = _import_of(span.file, path, text)
        message = f"{display(span)}: {message}"
        related.insert(0, types.DiagnosticRelatedInformation(types.Location(_uri(span.file), to_range(span, None)),
                                                             display(diag.message)))
    severity = types.DiagnosticSeverity.Warning if diag.severity == "warning" else types.DiagnosticSeverity.Error
    return types.Diagnostic(range=where, message=message, severity=severity, code=diag.code, source="dlc",
                            related_information=related or None)


def _import_of(file: str, path: str, text: str) -> types.Range:
    """The document's `import` statement of ``file``, or its first line when ``file`` is imported further down the
    chain of imports."""
    from lsprotocol import types

    try:
        target = Path(file).resolve()
        for row, line in enumerate(text.split("\n")):
            m = _IMPORT.match(line)
            if m and (Path(path).parent / m.group(2)).resolve() == target:
                return types.Range(types.Position(row, m.start(1)), types.Position(row, m.end()))
    except (OSError, ValueError):  # a name that is no path here: the first line will do
        pass
    return types.Range(types.Position(0, 0), types.Position(0, 0))


def to_range(span: Span, text: str | None) -> types.Range:
    """A span (1-based lines and columns, counted in characters) as an LSP range (0-based, in UTF-16 code units,
    which only the document's ``text`` can tell apart; without it characters are counted)."""
    from lsprotocol import types

    lines = text.split("\n") if text is not None else []

    def position(line: int, col: int) -> types.Position:
        row = lines[line - 1] if 0 < line <= len(lines) else None
        units = col - 1 if row is None else len(row[:col - 1].encode("utf-16-le", "surrogatepass")) // 2
        return types.Position(max(line - 1, 0), max(units, 0))

    return types.Range(position(span.line, span.col), position(span.end_line, span.end_col))


def _uri(path: str) -> str:
    return Path(path).resolve().as_uri()


@dataclass(frozen=True)
class _Item:
    """Something a hover can describe: where it is written and its line of text."""

    span: Span
    text: str


def hover_text(graph: Graph, path: str, text: str, line: int, col: int) -> str | None:
    """Markdown describing what is written at ``line``:``col`` (1-based, in characters) of ``path``, whose text
    is ``text``: the layers or block instances whose source spans are the innermost ones containing it; None where
    there are none. On a label (``fc1: linear(64)``) it describes the layer the label names."""
    from dlc.compiler.ir import call_key
    from dlc.compiler.ops.registry import op_of
    from dlc.compiler.passes import count_params
    from dlc.compiler.types import batched_str

    rows = text.split("\n")
    col = _past_label(rows[line - 1], col) if 0 < line <= len(rows) else col
    params = count_params(graph)
    items: list[_Item] = []
    for node in graph.nodes:
        if _contains(node.span, path, line, col):
            name = node.module_path or (node.attrs["name"] if op_of(node.op).declared else None)
            shapes = ", ".join(f"`{batched_str(t)}`" for t in node.types)
            count = params.get(node.module_path or "")
            items.append(_Item(node.span, _describe(name, f"`{node.op}`", shapes, count)))
    seen: set[tuple[str, int]] = set()
    for node in graph.nodes:
        for scope in node.scope:
            key = call_key(scope)
            if key in seen or not _contains(scope.span, path, line, col):
                continue
            seen.add(key)
            call = graph.calls[key]
            shapes = ", ".join(f"`{batched_str(graph.types[v])}`" for v in call.outputs)
            count = sum(n for p, n in params.items() if p.startswith(scope.path + "."))
            items.append(_Item(scope.span, _describe(scope.path, f"`{scope.block or 'group'}`", shapes, count)))
    if not items:
        return None
    innermost = min(items, key=lambda i: (i.span.end_line - i.span.line, i.span.end_col - i.span.col)).span
    lines = [i.text for i in items if i.span == innermost]
    more = len(lines) - MAX_HOVER_ITEMS
    return "\n\n".join(lines[:MAX_HOVER_ITEMS] + ([f"... and {more} more"] if more > 0 else []))


def _past_label(row: str, col: int) -> int:
    """``col``, or where the layer starts when ``col`` is on a label: the IR's spans start at the layer."""
    for m in _WORD.finditer(row):
        if m.start() < col <= m.end():
            after = _LABEL_END.match(row, m.end())
            return after.end() + 1 if after else col
    return col


def _contains(span: Span, path: str, line: int, col: int) -> bool:
    return (span.file == path and (span.line, span.col) <= (line, col)
            and (line, col) < (span.end_line, span.end_col))


def _describe(name: str | None, what: str, shapes: str, params: int | None) -> str:
    head = f"**{display(name)}**: {what}" if name else what
    tail = f" · {params:,} parameters" if params else ""
    return f"{head} → {shapes}{tail}" if shapes else head + tail


def serve() -> int:
    """Run the server on stdin/stdout until the client says exit. Without pygls: a diagnostic, exit 1."""
    try:
        from lsprotocol import types
        from pygls.lsp.server import LanguageServer
    except ImportError:
        raise DlcError("missing-dependency", "`dlc lsp` needs pygls and lsprotocol",
                       hint='install them with `pip install "dlc[lsp]"`') from None

    from dlc import __version__

    server = LanguageServer("dlc", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full)
    graphs: dict[str, Any] = {}

    def refresh(uri: str) -> None:
        doc = server.workspace.get_text_document(uri)
        path = doc.path
        graph, found = check_document(doc.source, path)
        graphs[uri] = graph
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=doc.version, diagnostics=[to_diagnostic(d, path, doc.source) for d in found]))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        graphs.pop(params.text_document.uri, None)
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri,
                                                                                diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(params: types.HoverParams) -> types.Hover | None:
        uri = params.text_document.uri
        graph = graphs.get(uri)
        if graph is None:
            return None
        doc = server.workspace.get_text_document(uri)
        pos = params.position
        row = doc.lines[pos.line] if pos.line < len(doc.lines) else ""
        col = len(row.encode("utf-16-le", "surrogatepass")[:2 * pos.character].decode("utf-16-le", "ignore")) + 1
        text = hover_text(graph, doc.path, doc.source, pos.line + 1, col)
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))

    # pygls closes the streams it is given when the client says exit: a copy of stdout's descriptor keeps
    # sys.stdout open for the command line's final flush
    with os.fdopen(os.dup(sys.stdout.fileno()), "wb") as out:
        server.start_io(sys.stdin.buffer, out)
    return 0
