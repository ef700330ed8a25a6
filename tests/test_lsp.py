"""``dlc lsp``, driven over stdio as an editor drives it: JSON-RPC messages with Content-Length headers.

A reader thread puts every message the server writes on a queue; every wait has a timeout, so a server that hangs
fails the test instead of blocking the suite. One server process serves the whole conversation, one test.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

TIMEOUT = 60  # seconds for one answer: the first compile imports the compiler

GOOD = """\
block Head(n: int) {
    input x
    return x -> proj: linear(n) -> relu
}

network Net(classes: int = 10) {
    input x: [T, 32]
    y = x -> fc1: linear(64) -> relu
    output logits = y -> head: Head(classes)
}
"""
BROKEN = GOOD.replace("linear(64)", "lineer(64)")


class Client:
    """The editor's end of the conversation."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            headers = {}
            while (line := out.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode("ascii").partition(":")
                headers[key.strip().lower()] = value.strip()
            if not line:
                return
            self.messages.put(json.loads(out.read(int(headers["content-length"]))))

    def send(self, method: str, params: Any, request: bool = False) -> int | None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        body = json.dumps(message).encode("utf-8")
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.proc.stdin.flush()
        return message.get("id")

    def wait(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next message ``wanted`` accepts (others are dropped); fails after TIMEOUT seconds."""
        while True:
            try:
                message = self.messages.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no answer from `dlc lsp` within {TIMEOUT} s")
            if wanted(message):
                return message

    def request(self, method: str, params: Any) -> Any:
        ident = self.send(method, params, request=True)
        answer = self.wait(lambda m: m.get("id") == ident and "method" not in m)
        assert "error" not in answer, answer
        return answer["result"]

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        message = self.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics"
                            and m["params"]["uri"] == uri)
        return message["params"]["diagnostics"]


@pytest.mark.slow  # about 5 s: a server process that imports pygls and the compiler
def test_a_session_over_stdio(tmp_path: Path) -> None:
    # one test, not one per step: pytest-xdist may run the tests of a file in different processes
    proc = subprocess.Popen([sys.executable, "-m", "dlc", "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        client = Client(proc)
        result = client.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        assert result["capabilities"]["hoverProvider"]
        assert result["serverInfo"]["name"] == "dlc"
        client.send("initialized", {})
        uri = (tmp_path / "net.dln").as_uri()
        _broken_spec_gets_a_diagnostic(client, uri)
        _fixing_the_spec_clears_the_diagnostics(client, uri)
        _hover_shows_op_shape_and_parameters(client, uri)
        _a_problem_in_an_imported_file_points_there(client, tmp_path)
        assert client.request("shutdown", None) is None
        client.send("exit", None)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


def _hover(client: Client, uri: str, line: int, character: int) -> str | None:
    result = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                   "position": {"line": line, "character": character}})
    return None if result is None else result["contents"]["value"]


def _broken_spec_gets_a_diagnostic(client: Client, uri: str) -> None:
    client.send("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "dln", "version": 1,
                                                          "text": BROKEN}})
    (diag,) = client.diagnostics(uri)
    # `lineer` is on line 8 (0-based 7), columns 19-24 (0-based 18-24, end exclusive)
    assert diag["range"] == {"start": {"line": 7, "character": 18}, "end": {"line": 7, "character": 24}}
    assert diag["code"] == "unknown-layer" and diag["severity"] == 1 and diag["source"] == "dlc"
    assert diag["message"] == "unknown layer or block `lineer`\nhint: did you mean `linear`?"
    assert _hover(client, uri, 7, 19) is None  # no IR for a spec with errors


def _fixing_the_spec_clears_the_diagnostics(client: Client, uri: str) -> None:
    client.send("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                           "contentChanges": [{"text": GOOD}]})
    assert client.diagnostics(uri) == []


def _hover_shows_op_shape_and_parameters(client: Client, uri: str) -> None:
    on_label = _hover(client, uri, 7, 14)  # `fc1` of `fc1: linear(64)`
    assert on_label == "**fc1**: `linear` → `[B, T, 64]` · 2,112 parameters"
    assert _hover(client, uri, 7, 20) == on_label  # on `linear`
    on_call = _hover(client, uri, 8, 27)  # the label `head` of a block call
    assert on_call == "**head**: `Head` → `[B, T, 10]` · 650 parameters"
    assert _hover(client, uri, 8, 33) == on_call  # on `Head(classes)`
    assert _hover(client, uri, 2, 24) == "**head.proj**: `linear` → `[B, T, 10]` · 650 parameters"  # in the block
    assert _hover(client, uri, 6, 10) == "**x**: `input` → `[B, T, 32]`"
    assert _hover(client, uri, 0, 0) is None


def _a_problem_in_an_imported_file_points_there(client: Client, tmp_path: Path) -> None:
    (tmp_path / "lib.dln").write_text("block Bad {\n    input x\n    return x -> relu(1)\n}\n", encoding="utf-8")
    main = (tmp_path / "main.dln").as_uri()
    text = '# uses lib\nimport "lib.dln"\nnetwork N {\n    input x: [4]\n    output y = x -> Bad\n}\n'
    client.send("textDocument/didOpen", {"textDocument": {"uri": main, "languageId": "dln", "version": 1,
                                                          "text": text}})
    (diag,) = client.diagnostics(main)
    # shown on the import statement, with the place in lib.dln and the chain of block instances
    assert diag["range"] == {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 16}}
    assert diag["message"].startswith(f"{tmp_path / 'lib.dln'}:3:22: `relu` takes no positional arguments\nin: N > ")
    (related,) = diag["relatedInformation"]
    assert related["location"]["uri"] == (tmp_path / "lib.dln").as_uri()
    assert related["location"]["range"]["start"]["line"] == 2
    client.send("textDocument/didClose", {"textDocument": {"uri": main}})
    assert client.diagnostics(main) == []


def test_compiling_a_document_does_not_import_torch() -> None:
    code = ("import sys; from dlc.lsp import check_document, hover_text, to_diagnostic\n"
            f"text = {GOOD!r}\n"
            "g, errors = check_document(text, 'net.dln'); assert g is not None and not errors\n"
            "assert hover_text(g, 'net.dln', text, 8, 14)\n"
            "_, (err,) = check_document(text.replace('linear(64)', 'lineer(64)'), 'net.dln')\n"
            "assert to_diagnostic(err, 'net.dln', text).severity == 1\n"
            "unused = text.replace('y = x', 'z = x -> side: linear(8)\\n    y = x')\n"
            "g, (warn,) = check_document(unused, 'net.dln'); assert g is not None\n"
            "d = to_diagnostic(warn, 'net.dln', unused)\n"
            "r = d.range.start; assert (d.severity, d.code, r.line, r.character) == (2, 'unused-layer', 7, 19), d\n"
            "assert 'torch' not in sys.modules and 'triton' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=TIMEOUT)


def test_without_pygls_it_says_what_to_install() -> None:
    code = "import sys; sys.modules['pygls'] = None; from dlc.cli import main; sys.exit(main(['lsp']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1
    assert proc.stderr == ('error[missing-dependency]: `dlc lsp` needs pygls and lsprotocol\n'
                           '  = hint: install them with `pip install "dlc[lsp]"`\n')


def test_lsp_takes_no_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from dlc.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["lsp", "net.dln"])
    assert exit_.value.code == 2
    assert "dlc: error: unrecognized arguments: net.dln" in capsys.readouterr().err
