"""A compiled network displays as its diagram in Jupyter: ``Compiled._repr_svg_`` and ``Compiled.diagram``.

``_repr_svg_`` draws with Graphviz's ``dot`` under the time limit of ``dlc render`` (DLC_DOT_SECONDS) and fails
with the same DotFailed as ``dlc render``; fake ``dot`` programs on PATH stand for a slow, a crashing and a missing
one.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import graphviz
import pytest

import dlc
from dlc.backends.graphviz import DotFailed, to_dot
from dlc.diagnostics import DlcError

SPECS = Path(__file__).resolve().parents[1] / "specs"
HAS_DOT = shutil.which("dot") is not None


def _fake_dot(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put a `dot` running ``script`` (sh) first on PATH."""
    folder.mkdir()
    exe = folder / "dot"
    exe.write_text("#!/bin/sh\n" + script + "\n", encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.skipif(not HAS_DOT, reason="needs Graphviz's dot to draw the SVG")
def test_repr_svg_is_the_diagram():
    compiled = dlc.compile(SPECS / "lenet5.dln")
    svg = compiled._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert "LeNet5" in svg and "conv2d" in svg  # the network's name and its layers are drawn


@pytest.mark.skipif(not HAS_DOT, reason="needs Graphviz's dot to draw the SVG")
def test_diagram_is_a_graphviz_source_of_the_render_dot_text():
    compiled = dlc.compile(SPECS / "mlp.dln")
    source = compiled.diagram(rankdir="LR")
    assert isinstance(source, graphviz.Source)
    assert source.source == to_dot(compiled.graph, rankdir="LR")
    assert source.pipe(format="svg").startswith(b"<?xml")


def test_repr_svg_stops_a_slow_dot(tmp_path, monkeypatch):
    _fake_dot(tmp_path / "bin", "exec sleep 60", monkeypatch)
    monkeypatch.setenv("DLC_DOT_SECONDS", "1")
    with pytest.raises(DotFailed, match=r"ran longer than 1 seconds and was stopped .*DLC_DOT_SECONDS"):
        dlc.compile(SPECS / "mlp.dln")._repr_svg_()


def test_repr_svg_reports_a_failing_dot(tmp_path, monkeypatch):
    _fake_dot(tmp_path / "bin", "echo 'Error: syntax error in line 1' >&2; exit 3", monkeypatch)
    with pytest.raises(DotFailed, match=r"could not draw the diagram: it exited with status 3: Error: syntax"):
        dlc.compile(SPECS / "mlp.dln")._repr_svg_()


def test_repr_svg_without_dot_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no dot anywhere
    with pytest.raises(DotFailed, match=r"`dot` program is not installed.*apt-get install graphviz"):
        dlc.compile(SPECS / "mlp.dln")._repr_svg_()


def test_a_bad_time_limit_is_a_diagnostic(tmp_path, monkeypatch):
    _fake_dot(tmp_path / "bin", "exit 0", monkeypatch)
    monkeypatch.setenv("DLC_DOT_SECONDS", "0")
    with pytest.raises(DlcError, match="DLC_DOT_SECONDS must be a positive integer") as info:
        dlc.compile(SPECS / "mlp.dln")._repr_svg_()
    assert info.value.code == "bad-limit"


def test_diagram_has_no_fusion_shading_unless_asked():
    compiled = dlc.compile(SPECS / "resnet18.dln")
    assert "kernel #" not in compiled.diagram().source
    assert "kernel #" in compiled.diagram(fusion=True, depth=99).source


def test_render_a_spec_or_a_compiled_network(tmp_path):
    out = dlc.render(SPECS / "mlp.dln", tmp_path / "mlp.dot", style="paper", width="8.5cm", hidden=64)
    assert out == tmp_path / "mlp.dot"
    text = out.read_text(encoding="utf-8")
    assert 'fontname="Times-Roman"' in text and 'size="3.34646,10000!"' in text and "linear 64" in text
    compiled = dlc.compile(SPECS / "mlp.dln")
    dlc.render(compiled, tmp_path / "again.dot", rankdir="LR")
    assert (tmp_path / "again.dot").read_text(encoding="utf-8") == to_dot(compiled.graph, rankdir="LR")


@pytest.mark.parametrize("options,message", [
    ({"out": "mlp.jpg"}, "the output must end in .svg, .png, .pdf, .dot or .tex, got mlp.jpg"),
    ({"width": "wide"}, "width: expected a positive width"),
    ({"style": "fancy"}, "style must be one of default, paper"),
    ({"rankdir": "BT"}, "rankdir must be TB or LR"),
])
def test_render_refuses_bad_options(tmp_path, options, message):
    out = tmp_path / options.pop("out", "mlp.svg")
    with pytest.raises(DlcError, match=message) as info:
        dlc.render(SPECS / "mlp.dln", out, **options)
    assert info.value.code == "render-option" and not out.exists()


def test_render_without_dot_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DotFailed, match=r"`dot` program is not installed.*apt-get install graphviz"):
        dlc.render(SPECS / "mlp.dln", tmp_path / "mlp.svg")
    assert (tmp_path / "mlp.dot").exists()  # the DOT text is saved beside it, as by `dlc render`
