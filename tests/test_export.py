"""``dlc export`` and ``dlc.export``: the ONNX file of a small spec, its named inputs and outputs, its dynamic batch
and sequence axes (run in onnxruntime at two sizes against the PyTorch module), and every way the command can be
given bad input: no -o, an output that cannot be written, bad --set / --opset / --dim, a missing spec, a malformed
spec, a layer ONNX cannot express (reported at its spec line), and the ONNX packages missing.

tests/test_capture.py exports every spec in specs/ the same way.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

import dlc
from dlc.diagnostics import DlcError

from test_cli import DIAGNOSTIC, ok, run_dlc, run_dlc_here

TINY = """\
network Tiny(classes: int = 3) {
    input tokens: [T] int64
    input x: [T, 4]
    h = tokens -> embed: embedding(10, 4)
    output y = h + x -> fc: linear(classes)
    side = h -> head: linear(2)
    output aux = side if training
}
"""
# A torch.nn layer whose ATen op (aten.fractional_max_pool2d) has no ONNX conversion.
NO_ONNX = """\
extern Frac(kernel_size: int, output_size: int) = "torch.nn.FractionalMaxPool2d" {
    shape = [x[0], output_size, output_size]
}

network Odd {
    input x: [3, 12, 12]
    h = x -> conv: conv2d(4, 3) -> relu
    output y = h -> pool: Frac(2, 4)
}
"""


def export_here(*args, monkeypatch: pytest.MonkeyPatch) -> subprocess.CompletedProcess:
    """``dlc export ARGS`` in this interpreter (see test_cli.run_dlc_here); argparse's usage errors exit 2."""
    try:
        return run_dlc_here("export", *args, monkeypatch=monkeypatch)
    except SystemExit as exc:  # raised by argparse before main's handlers; its message is on the real stderr
        return subprocess.CompletedProcess(["dlc", "export"], exc.code, "", "")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``dlc export tiny.dln -o tiny.onnx --set classes=5``, run once for the tests that read its file."""
    folder = tmp_path_factory.mktemp("export")
    spec = write(folder, "tiny.dln", TINY)
    torch.manual_seed(0)  # the test below makes the same module (the same initial weights) after the same seed
    with pytest.MonkeyPatch.context() as monkeypatch:
        r = export_here(spec, "-o", folder / "out" / "tiny.onnx", "--set", "classes=5",
                         monkeypatch=monkeypatch)
    return r, spec, folder / "out" / "tiny.onnx"


def test_cli_writes_a_checked_onnx_file_with_the_specs_names(exported) -> None:
    r, _, out = exported
    ok(r)
    assert r.stdout == ""
    assert r.stderr.strip() == (f"wrote {out} (ONNX opset {onnx.load(out).opset_import[0].version}; "
                                "tokens: [batch, T], x: [batch, T, 4], y: [batch, T, 5])")
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    # the output of training mode only (`aux`) is not in the file: it is exported in eval mode
    assert [i.name for i in proto.graph.input] == ["tokens", "x"]
    assert [o.name for o in proto.graph.output] == ["y"]


def test_cli_file_is_dynamic_in_batch_and_symbols(exported) -> None:
    """The file equals the PyTorch module (the same initial weights, from the same seed) at three batch sizes
    and lengths, 1 included."""
    _, spec, out = exported
    torch.manual_seed(0)
    model = dlc.load(spec, classes=5).eval()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch, length in ((2, 8), (3, 13), (1, 1)):
        tokens, x = torch.randint(0, 10, (batch, length)), torch.randn(batch, length, 4)
        (got,) = session.run(None, {"tokens": tokens.numpy(), "x": x.numpy()})
        with torch.no_grad():
            expected = model(tokens, x)
        assert got.shape == (batch, length, 5)
        assert torch.allclose(torch.from_numpy(got), expected, atol=1e-5)


def test_python_api_exports_trained_weights(tmp_path: Path) -> None:
    """``dlc.export(path, out, state_dict=...)`` writes those weights; it reports the file's shapes."""
    spec = write(tmp_path, "tiny.dln", TINY)
    model = dlc.load(spec).eval()
    with torch.no_grad():
        model.fc.bias.fill_(7.0)
    done = dlc.export(spec, tmp_path / "tiny.onnx", state_dict=model.state_dict(), sizes={"T": 16})
    assert done.inputs == {"tokens": ["batch", "T"], "x": ["batch", "T", 4]}
    assert done.outputs == {"y": ["batch", "T", 3]}
    tokens, x = torch.randint(0, 10, (2, 5)), torch.randn(2, 5, 4)
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"tokens": tokens.numpy(), "x": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(tokens, x), atol=1e-5)
    with pytest.raises(TypeError, match="apply to a spec's path"):
        dlc.export(dlc.compile(spec), tmp_path / "again.onnx", classes=4)


def test_recurrent_layer_fixing_a_symbol_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write(tmp_path, "rnn.dln", textwrap.dedent("""\
        network Rnn {
            input x: [T, 4]
            output y = x -> enc: lstm(8)
        }
        """))
    r = export_here(spec, "-o", tmp_path / "rnn.onnx", monkeypatch=monkeypatch)
    assert r.returncode == 1
    assert (f"{spec}:3:26: error[export-unsupported]: `T` cannot stay dynamic in ONNX: torch.export captures "
            "recurrent layers (`enc`) for one sequence length") in r.stderr


@pytest.mark.parametrize("args,code,message", [
    (["--opset", "7"], 1, "error[export-opset]: cannot write ONNX opset 7"),
    (["--dim", "S=9"], 1, "error[export-size]: `S` is not a symbolic dimension of an input of network `Tiny`"),
    (["--dim", "T=1"], 2, "dlc: error: --dim expects NAME=SIZE with a size of 2 or more, got T=1"),
    (["--dim", "T"], 2, "dlc: error: --dim expects NAME=SIZE"),
    (["--set", "classes"], 2, "dlc: error: --set expects NAME=VALUE, got classes"),
    (["--set", "clases=4"], 1, "clases"),
    (["--opset", "x"], 2, ""),  # argparse's message: test_cli's subprocess tests cover its text
])
def test_bad_options(args: list[str], code: int, message: str, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write(tmp_path, "tiny.dln", TINY)
    r = export_here(spec, "-o", tmp_path / "tiny.onnx", *args, monkeypatch=monkeypatch)
    assert r.returncode == code and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "tiny.onnx").exists()


def test_bad_spec_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write(tmp_path, "tiny.dln", TINY)
    r = run_dlc("export", spec)  # no -o: argparse's usage error, in a real process
    assert r.returncode == 2 and "the following arguments are required: -o/--output" in r.stderr
    r = export_here(tmp_path / "none.dln", "-o", tmp_path / "x.onnx", monkeypatch=monkeypatch)
    assert r.returncode == 2 and "no such file" in r.stderr
    blocker = write(tmp_path, "file.txt", "")
    r = export_here(spec, "-o", blocker / "x.onnx", monkeypatch=monkeypatch)  # a file as a folder
    assert r.returncode == 2 and f"dlc: error: cannot write {blocker / 'x.onnx'}" in r.stderr, r.stderr
    r = export_here(spec, "-o", spec, monkeypatch=monkeypatch)  # never over its own input
    assert r.returncode == 2 and spec.read_text() == TINY
    broken = write(tmp_path, "broken.dln", "network N {\n    input x: [4]\n    output y = x -> linear(\n}\n")
    r = export_here(broken, "-o", tmp_path / "x.onnx", monkeypatch=monkeypatch)
    assert r.returncode == 1 and DIAGNOSTIC.search(r.stderr) and "Traceback" not in r.stderr


def test_missing_onnx_package_names_the_extra(tmp_path: Path) -> None:
    """In a real process whose `onnx` cannot be imported: error[missing-dependency] and the pip line, exit 1."""
    fake = tmp_path / "site" / "onnx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named onnx')\n")
    spec = write(tmp_path, "tiny.dln", TINY)
    r = run_dlc("export", spec, "-o", tmp_path / "tiny.onnx", env={"PYTHONPATH": str(tmp_path / "site")})
    assert r.returncode == 1, r.stderr
    assert "error[missing-dependency]: `dlc export` needs the `onnx` package, which cannot be imported" in r.stderr
    assert '= hint: install the ONNX extra: pip install "dlc[onnx]"' in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "tiny.onnx").exists()


def test_export_is_on_the_python_api() -> None:
    assert "export" in dlc.__all__
    with pytest.raises(DlcError, match="export-opset|cannot write ONNX opset"):
        dlc.export(Path(__file__).resolve().parent.parent / "specs" / "mlp.dln", "unused.onnx", opset=99)


def doc_blocks(lang: str) -> list[str]:
    """The ```LANG code blocks of docs/export.md, in order."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "export.md").read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.M | re.S)


def test_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/export.md: its spec, its command with the line it prints, and its Python with onnxruntime."""
    (spec,) = doc_blocks("dln")
    (console,) = doc_blocks("console")
    (python,) = doc_blocks("python")
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "tagger.dln", spec)
    command, printed = console.strip().split("\n")
    r = ok(export_here(*command.removeprefix("$ dlc export ").split(), monkeypatch=monkeypatch))
    opset = onnx.load(tmp_path / "tagger.onnx").opset_import[0].version
    assert r.stderr.strip() == printed.replace("opset 20", f"opset {opset}")
    exec(compile(python, "docs/export.md", "exec"), {})  # its own asserts compare onnxruntime with the module


def test_layer_onnx_cannot_express_is_reported_at_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer, its class and the ATen op, at the spec's line and column with a caret: as docs/export.md shows."""
    (text,) = doc_blocks("text")
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "odd.dln", NO_ONNX)
    r = export_here("odd.dln", "-o", "odd.onnx", monkeypatch=monkeypatch)
    assert r.returncode == 1 and r.stderr == text
    assert not (tmp_path / "odd.onnx").exists()
