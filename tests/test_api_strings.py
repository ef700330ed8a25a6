"""The Python API for specs held in strings and for structured diagnostics.

``dlc.loads`` / ``dlc.compile_string`` (names, imports relative to the cwd or ``base``), ``str(DlcError)`` as the
full rendered diagnostic, ``DlcError.diagnostics`` and pickling, ``Compiled``'s text summary, ``dlc.api.diagnose``,
``dlc.diagnostics.to_json`` and ``dlc check --format json`` (schema, exit codes), and the examples of docs/api.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import dlc
from dlc import cli
from dlc.api import Compiled, diagnose
from dlc.diagnostics import Diagnostic, DlcError, DlcWarning, Span, to_json

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
TINY = ("network Tiny(hidden: int = 16) {\n    input x: [8]\n"
        "    output y = x -> fc1: linear(hidden) -> relu -> fc2: linear(2)\n}\n")
TYPO = "network N {\n    input x: [4]\n    output y = x -> lineer(3)\n}\n"


def cli_run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# ---- loads / compile_string ----------------------------------------------------------------------------------


def test_loads_builds_the_module_with_parameter_overrides():
    net = dlc.loads(TINY, hidden=32)
    twin = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    net.load_state_dict({"fc1.weight": twin[0].weight, "fc1.bias": twin[0].bias,
                         "fc2.weight": twin[2].weight, "fc2.bias": twin[2].bias}, strict=True)
    x = torch.randn(3, 8)
    torch.testing.assert_close(net(x), twin(x))


def test_a_string_error_names_the_text_and_quotes_its_line():
    with pytest.raises(DlcError) as info:
        dlc.compile_string(TYPO, name="typo.dln")
    err = info.value
    assert str(err) == ("typo.dln:3:21: error[unknown-layer]: unknown layer or block `lineer`\n"
                        " 3 |     output y = x -> lineer(3)\n"
                        "   |                     ^^^^^^\n"
                        "  = hint: did you mean `linear`?")
    assert err.headline == "typo.dln:3:21: error[unknown-layer]: unknown layer or block `lineer`"
    with pytest.raises(DlcError, match=r"^<string>:3:21: error\[unknown-layer\]"):
        dlc.loads(TYPO)


def test_imports_of_a_string_resolve_from_the_cwd_or_base(tmp_path, monkeypatch):
    (tmp_path / "blocks.dln").write_text("block Head(n: int) {\n    input x\n    return x -> linear(n)\n}\n",
                                         encoding="utf-8")
    text = 'import "blocks.dln"\nnetwork N {\n    input x: [4]\n    output y = x -> Head(3)\n}\n'
    assert "nn.Linear(4, 3)" in dlc.compile_string(text, base=tmp_path).source
    monkeypatch.chdir(tmp_path)
    assert "nn.Linear(4, 3)" in dlc.compile_string(text).source
    monkeypatch.chdir(ROOT)
    with pytest.raises(DlcError) as info:
        dlc.compile_string(text)
    assert info.value.code == "import-not-found" and info.value.span.line == 1


def test_a_string_spec_with_an_error_in_a_base_folder_is_named_there(tmp_path):
    with pytest.raises(DlcError) as info:
        dlc.compile_string(TYPO, name="net.dln", base=tmp_path)
    assert info.value.span.file == str(tmp_path / "net.dln")
    assert str(info.value).splitlines()[1] == " 3 |     output y = x -> lineer(3)"


def test_a_spec_text_must_be_a_string():
    with pytest.raises(TypeError, match="a spec text must be a str, got bytes"):
        dlc.compile_string(TYPO.encode())


# ---- DlcError ------------------------------------------------------------------------------------------------


def test_dlc_error_diagnostics_are_structured():
    with pytest.raises(DlcError) as info:
        dlc.compile_string(TYPO, name="typo.dln")
    (d,) = info.value.diagnostics
    assert d == Diagnostic("error", "unknown-layer", "unknown layer or block `lineer`",
                           Span("typo.dln", 3, 21, 3, 27), "did you mean `linear`?")
    assert d.file == "typo.dln" and str(d) == str(info.value)


def test_the_chain_and_notes_are_in_str_and_the_diagnostic():
    text = ("block Head(d: int) {\n    input x\n    return x -> fc: linear(d)\n}\n"
            "network Net {\n    input x: [H, W]\n    output y = x -> head: Head(3)\n}\n")
    with pytest.raises(DlcError) as info:
        dlc.compile_string(text, name="net.dln")
    err = info.value
    assert "\n  = in: Net > head (Head) > fc\n" in str(err)
    assert err.diagnostics[0].chain == ("Net", "head (Head)", "fc")
    assert to_json(err)["notes"][0] == "in: Net > head (Head) > fc"


def test_dlc_error_pickles_and_chains():
    with pytest.raises(DlcError) as info:
        dlc.compile_string(TYPO, name="typo.dln")
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy == info.value and str(copy) == str(info.value)
    with pytest.raises(RuntimeError) as outer:
        try:
            raise info.value
        except DlcError as err:
            raise RuntimeError("compile failed") from err
    assert outer.value.__cause__ is info.value
    warning = DlcWarning.of(Diagnostic("warning", "unused-input", "input `m` is not used by any output"))
    copy = pickle.loads(pickle.dumps(warning))
    assert copy.diagnostic == warning.diagnostic and str(copy) == str(warning) == (
        "warning[unused-input]: input `m` is not used by any output")
    assert DlcWarning(*warning.args).args == warning.args  # as pytest-xdist rebuilds a warning


# ---- Compiled's text -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> Compiled:
    return dlc.compile_string(TINY, name="tiny.dln")


def test_compiled_repr_and_str(tiny):
    assert repr(tiny) == ("<Compiled Tiny(hidden=16) from tiny.dln: inputs x: [8] float32; outputs y: [2] float32; "
                          "178 parameters>")
    assert str(tiny) == ("network Tiny from tiny.dln\n  parameters: hidden=16\n  inputs:  x: [8] float32\n"
                         "  outputs: y: [2] float32\n  178 trainable parameters, 4 nodes")


def test_ipython_shows_the_summary(tiny):
    class Printer:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def text(self, s: str) -> None:
            self.parts.append(s)

    p = Printer()
    tiny._repr_pretty_(p, False)
    assert p.parts == [str(tiny)]


def test_the_summary_counts_warnings():
    text = "network N {\n    input x: [4]\n    input m: [4]\n    output y = x -> relu -> relu\n}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DlcWarning)
        c = dlc.compile_string(text)
    assert str(c).endswith("\n  2 warning(s): repeated-activation, unused-input")


# ---- diagnose and JSON ---------------------------------------------------------------------------------------


def test_diagnose_returns_the_error_or_the_warnings_without_issuing_them():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled, diags = diagnose(TYPO, "n.dln")
        assert compiled is None and [d.code for d in diags] == ["unknown-layer"]
        compiled, diags = diagnose("network N {\n    input x: [4]\n    input m: [2]\n    output y = x\n}\n", "n.dln")
    assert isinstance(compiled, Compiled) and [(d.severity, d.code) for d in diags] == [("warning", "unused-input")]


def _json_shape(diag: dict) -> None:
    """The documented schema of one diagnostic."""
    assert set(diag) == {"severity", "code", "message", "file", "range", "hint", "notes", "related"}
    assert diag["severity"] in ("error", "warning") and re.fullmatch(r"[a-z][a-z-]*", diag["code"])
    if diag["range"] is not None:
        start, end = diag["range"]["start"], diag["range"]["end"]
        assert start["line"] >= 1 and start["col"] >= 1 and (end["line"], end["col"]) > (start["line"], start["col"])


def test_check_json_for_an_error_exits_1(tmp_path):
    spec = tmp_path / "typo.dln"
    spec.write_text(TYPO, encoding="utf-8")
    code, out, err = cli_run("check", spec, "--format", "json")
    assert code == 1 and err == ""
    doc = json.loads(out)
    assert doc["ok"] is False and doc["network"] is None and doc["version"] == 1
    (d,) = doc["diagnostics"]
    _json_shape(d)
    assert d["range"] == {"start": {"line": 3, "col": 21}, "end": {"line": 3, "col": 27}}
    assert (d["code"], d["hint"], d["file"]) == ("unknown-layer", "did you mean `linear`?", str(spec))


def test_check_json_with_warnings_and_werror(tmp_path):
    spec = tmp_path / "w.dln"
    spec.write_text("network N {\n    input x: [4]\n    output y = x -> relu -> relu\n}\n", encoding="utf-8")
    code, out, err = cli_run("check", spec, "--format", "json")
    doc = json.loads(out)
    assert code == 0 and err == "" and doc["ok"] is True and doc["network"] == "N" and doc["parameters"] == 0
    assert [d["code"] for d in doc["diagnostics"]] == ["repeated-activation"]
    _json_shape(doc["diagnostics"][0])
    code, out, _ = cli_run("check", spec, "--format", "json", "--Werror")
    assert code == 1 and json.loads(out)["ok"] is False


def test_check_json_bad_input(tmp_path):
    code, out, err = cli_run("check", tmp_path / "missing.dln", "--format", "json")
    assert code == 2 and out == "" and "no such file" in err
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()) as stderr:
        cli.main(["check", str(ROOT / "specs" / "mlp.dln"), "--format", "yaml"])
    assert info.value.code == 2 and "invalid choice: 'yaml'" in stderr.getvalue()


def test_check_json_of_a_bad_params_file_has_no_range(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("[1, 2]\n", encoding="utf-8")
    code, out, _ = cli_run("check", ROOT / "specs" / "mlp.dln", "--params", params, "--format", "json")
    (d,) = json.loads(out)["diagnostics"]
    assert code == 1 and d["code"] == "params-file" and d["range"] is None and d["file"] is None


# ---- docs/api.md ---------------------------------------------------------------------------------------------


def test_the_python_examples_of_the_api_page_run():
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 5
    for i, block in enumerate(blocks):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(block, f"docs/api.md example {i + 1}", "exec"), {})


def test_the_json_example_is_what_check_prints(tmp_path, monkeypatch):
    language = (ROOT / "docs" / "language.md").read_text(encoding="utf-8").split("### Warnings", 1)[1]
    spec = re.search(r"```dln\n(.*?)```", language, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    Path("net.dln").write_text(spec, encoding="utf-8")
    code, out, _ = cli_run("check", "net.dln", "--format", "json")
    shown = re.search(r"```json\n(.*?)```", API_DOC.read_text(encoding="utf-8"), flags=re.S).group(1)
    assert code == 0 and json.loads(out) == json.loads(shown)
