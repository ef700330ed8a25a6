"""Diagrams: the structure of the DOT text for every spec, rendering through ``dot``, determinism, escaping,
collapsing and rolling, merges, shared instances, fusion shading, and a 2,000-layer network."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from dlc.backends.diagram_output import parse_width
from dlc.backends.diagram_style import PAPER_COLOURS, PAPER_SHADES, luminance
from dlc.backends.diagram_tikz import latex_text
from dlc.backends.graphviz import AUTO_LIMIT, choose_view, to_dot
from dlc.cli import main
from dlc.pipeline import build_graph
from dlc.compiler.fusion import group_fusions
from dlc.compiler.passes import count_params

from conftest import SPECS_DIR

SPECS = sorted(p.stem for p in SPECS_DIR.glob("*.dln"))
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


def graph(name: str, **params):
    return build_graph(SPECS_DIR / f"{name}.dln", params or None)


def node_lines(dot: str) -> list[str]:
    return [ln for ln in dot.splitlines() if re.match(r'\s+(n|c)\d+\w* \[label=', ln)]


def cluster_labels(dot: str) -> list[str]:
    return re.findall(r'subgraph "cluster_[^"]*" \{\n\s+label="([^"]*)"', dot)


def edge_labels(dot: str) -> list[str]:
    return re.findall(r' -> \S+ \[label="([^"]*)"\]', dot)


@pytest.mark.parametrize("name", SPECS)
def test_structure_of_every_spec(name):
    g = graph(name)
    dot = to_dot(g, depth=99, roll=False)
    # one cluster per block instance and labelled group, named as in the spec
    scopes = {(s.path, s.call) for n in g.nodes for s in n.scope}
    labels = cluster_labels(dot)
    assert len([lb for lb in labels if not lb.startswith(("kernel #", "legend"))
                and not lb.endswith("bidirectional") and "bidirectional\\n" not in lb]) == len(scopes)
    for n in g.nodes:
        for s in n.scope:
            if s.kind == "block":
                # a numbered child (a repeat's copy) is drawn by its last two path parts: `layer1.0`
                shown = s.name if not s.name.isdigit() else ".".join(s.path.split(".")[-2:])
                assert any(lb.startswith(f"{shown}: {s.block}(") for lb in labels), s.path
    # every edge carries the shape of its tensor
    shapes = {"[" + ", ".join(str(d) for d in t.shape) + "]" for t in g.types.values() if hasattr(t, "shape")}
    assert edge_labels(dot) and all(lb in shapes or lb.startswith("state(") for lb in edge_labels(dot))
    # inputs and outputs have shapes of their own
    assert dot.count("shape=invhouse") == len(g.inputs)
    assert dot.count("shape=house") == len(g.outputs)
    # the legend names the families drawn
    assert 'subgraph "cluster_legend"' in dot


def test_labels_show_key_attributes_and_parameters():
    dot = to_dot(graph("resnet18"), depth=99)
    assert 'label="conv1: conv2d 7×7 /2, 64\\n9,408 params"' in dot
    assert 'label="maxpool 3×3 /2"' in dot  # named after its op: the name is not repeated
    assert 'label="fc: linear 1000\\n513,000 params"' in dot
    assert 'label="layer2.0: BasicBlock(c=128, stride=2)"' in dot


@pytest.mark.parametrize("name,kinds", [("resnet18", {"add"}), ("googlenet", {"concat"}), ("densenet121", {"concat"}),
                                        ("unet", {"concat"}), ("siamese", {"sub"})])
def test_merges_are_nodes_of_their_kind(name, kinds):
    dot = to_dot(graph(name), depth=99, roll=False)
    merges = set(re.findall(r'\[label="(add|sub|mul|ave|concat|sum)", shape=ellipse', dot))
    assert kinds <= merges


@pytest.mark.parametrize("merge,label", [("concat", "concat"), ("sum", "sum"), ("mul", "mul"), ("ave", "ave")])
def test_bidirectional_layer_is_two_directions_joining_at_its_merge(merge, label):
    dot = to_dot(graph("bilstm_tagger", merge=merge))
    assert 'label="forward lstm 128"' in dot and 'label="backward lstm 128"' in dot
    bi = re.search(r"(n\d+)_forward -> (n\d+);", dot)
    assert bi and f'{bi.group(2)} [label="{label}", shape=ellipse' in dot
    assert f"{bi.group(2)}_backward -> {bi.group(2)};" in dot


def test_shared_instance_is_marked_linked_and_counted_once():
    g = graph("siamese")
    dot = to_dot(g, depth=99)
    links = re.findall(r"(\w+) -> (\w+) \[style=dashed, arrowhead=none, constraint=false[^]]*label=\"shared\"\]", dot)
    assert len(links) == 1  # the tower's two applications
    assert "(shared: another use)" in dot
    # each tower parameter is counted at its first use only
    first = re.findall(r'conv1: conv2d 10×10, 64\\n([^"]+)"', dot)
    assert first == [f"{count_params(g)['tower.conv1']:,} params", "shared"]


def test_shared_layer_without_a_block(tmp_path):
    spec = tmp_path / "s.dln"
    spec.write_text("""
network S {
    input a: [8]
    input b: [8]
    p = linear(4)
    output y = (a -> p) + (b -> p)
}""", encoding="utf-8")
    dot = to_dot(build_graph(spec))
    assert dot.count('label="shared"') == 1
    assert dot.count("36 params") == 1 and dot.count("\\nshared") == 1


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_collapse_at_each_depth(depth):
    g = graph("resnet18")
    dot = to_dot(g, depth=depth, roll=False, fusion=False)
    collapsed = re.findall(r'c\d+ \[label="([^"]*)", style="rounded,filled,bold', dot)
    # depth 0: layer1-4 collapse; 1: their 8 BasicBlocks; 2: the 3 downsample groups; 3: nothing is deeper
    assert len(collapsed) == {0: 4, 1: 8, 2: 3, 3: 0}[depth]
    if depth == 0:
        # a collapsed block shows its input and output shapes and its total parameters
        layer1 = next(lb for lb in collapsed if lb.startswith("layer1"))
        assert "[64, 56, 56] → [64, 56, 56]" in layer1
        total = sum(v for k, v in count_params(g).items() if k.startswith("layer1."))
        assert f"{total:,} params" in layer1
        assert cluster_labels(dot) == ["legend"]  # nothing drawn as a cluster


def test_large_networks_collapse_by_default():
    g = graph("densenet121")
    depth, roll = choose_view(g, None, None)
    assert roll or depth is not None
    dot = to_dot(g)
    assert len(node_lines(dot)) <= AUTO_LIMIT
    # asked for explicitly, everything is drawn
    assert len(node_lines(to_dot(g, depth=99, roll=False))) > AUTO_LIMIT


def test_roll_draws_a_repeat_once():
    dot = to_dot(graph("resnet18"), depth=99, roll=True)
    assert any(lb.startswith("layer1") and lb.endswith("×2") for lb in cluster_labels(dot))
    assert "layer1.1: BasicBlock" not in dot and "layer1.0: BasicBlock" in dot


def test_fusion_groups_are_shaded_only_when_asked():
    g = graph("resnet18")
    dot = to_dot(g, depth=99, roll=False, fusion=True)
    kernels = [lb for lb in cluster_labels(dot) if lb.startswith("kernel #")]
    assert len(kernels) == len(group_fusions(g).groups)
    assert "kernel #" not in to_dot(g, depth=99) and "fused kernel" not in to_dot(g, depth=99)


def test_rankdir():
    assert "rankdir=LR;" in to_dot(graph("mlp"), rankdir="LR")


@pytest.mark.parametrize("name", SPECS)
def test_dot_is_deterministic(name):
    assert to_dot(graph(name)) == to_dot(graph(name))


# Names are ASCII identifiers; string arguments carry everything else into cluster labels.
HOSTILE = '''
block Blk(tag: str) {
    input x
    return x -> fc: linear(4) -> relu
}
network Hostile(label: str = "a \\"quoted\\" {brace} <angle> \\\\ back; größe ☃") {
    input x: [8]
    output y = x -> b: Blk(label) -> out: linear(2)
}
'''


@needs_dot
def test_hostile_names_render(tmp_path):
    spec = tmp_path / "hostile.dln"
    spec.write_text(HOSTILE, encoding="utf-8")
    dot = to_dot(build_graph(spec))
    assert '\\"quoted\\"' in dot and "{brace} <angle>" in dot
    out = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=True).stdout
    assert "größe ☃".encode() in out and b"&lt;angle&gt;" in out and b"{brace}" in out


@needs_dot
@pytest.mark.parametrize("name", SPECS)
def test_every_spec_renders_through_dot_deterministically(name, tmp_path):
    dot = to_dot(graph(name))
    svgs = [subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=True).stdout
            for _ in range(2)]
    assert svgs[0] == svgs[1] and b"<svg" in svgs[0]


@needs_dot
@pytest.mark.slow
def test_two_thousand_layers_render_collapsed(tmp_path):
    spec = tmp_path / "deep.dln"
    spec.write_text("""
block Layer(c: int) {
    input x
    return x -> fc: linear(c) -> relu
}
network Deep {
    input x: [16]
    output y = x -> stack: (Layer(16) * 1000)
}""", encoding="utf-8")
    g = build_graph(spec)
    assert len(g.nodes) > 2000
    dot = to_dot(g)
    assert len(node_lines(dot)) <= AUTO_LIMIT
    assert any(lb.endswith("×1000") for lb in cluster_labels(dot))
    out = tmp_path / "deep.svg"
    subprocess.run(["dot", "-Tsvg", "-o", str(out)], input=dot.encode(), check=True, timeout=120)
    assert out.stat().st_size > 0


def test_paths():
    assert Path(SPECS_DIR).is_dir()


def test_gallery_covers_every_spec():
    """docs/gallery.md (`make gallery`) shows every spec with its committed diagram."""
    docs = SPECS_DIR.parent / "docs"
    page = (docs / "gallery.md").read_text(encoding="utf-8")
    for name in SPECS:
        assert f"## {name}\n" in page
        assert f'src="images/gallery/{name}.svg"' in page
        assert (docs / "images" / "gallery" / f"{name}.svg").stat().st_size > 0


# ---- issue 12: diagrams a paper would use ------------------------------------------------------------------

WRITTEN_OUT = """
block Blk(c: int) {
    input x
    return x + (x -> fc: linear(c) -> relu)
}
network Written {
    input x: [8]
    a = x -> b1: Blk(8) -> b2: Blk(8) -> b3: Blk(8)
    output y = (a -> p: Blk(8)) + (a -> q: Blk(8))
}
"""


def _plain(dot: str) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str, str]], tuple[float, float]]:
    """Node positions, edges (tail, head, style) and the drawing's size from ``dot -Tplain``'s layout."""
    plain = subprocess.run(["dot", "-Tplain"], input=dot.encode(), capture_output=True, check=True).stdout.decode()
    pos, edges, size = {}, [], (0.0, 0.0)
    for line in plain.splitlines():
        f = shlex.split(line)
        if f[0] == "graph":
            size = (float(f[2]), float(f[3]))
        elif f[0] == "node":
            pos[f[1]] = (float(f[2]), float(f[3]))
        elif f[0] == "edge":
            edges.append((f[1], f[2], f[-2]))
    return pos, edges, size


def test_runs_of_identical_instances_roll_by_default():
    g = graph("vit_b_16", num_layers=4)
    dot = to_dot(g)
    assert "layers  ×4" in cluster_labels(dot)
    assert "encoder_layer_0: EncoderBlock(" in dot and "encoder_layer_1" not in dot
    unrolled = to_dot(g, roll=False)
    assert all(f"encoder_layer_{i}: EncoderBlock(" in unrolled for i in range(4)) and "×4" not in unrolled


def test_instances_written_out_one_after_another_roll(tmp_path):
    spec = tmp_path / "w.dln"
    spec.write_text(WRITTEN_OUT, encoding="utf-8")
    dot = to_dot(build_graph(spec))
    labels = cluster_labels(dot)
    assert "b1 … b3: Blk(c=8)  ×3" in labels
    # p and q are alike but not fed one by the other: two branches, both drawn
    assert "p: Blk(c=8)" in labels and "q: Blk(c=8)" in labels
    assert len([lb for lb in labels if ": Blk(" in lb]) == 3


def test_instances_with_other_shapes_do_not_roll(tmp_path):
    spec = tmp_path / "s.dln"
    spec.write_text("""
block Lin(c: int) {
    input x
    return x -> fc: linear(c) -> relu
}
network S {
    input x: [4]
    output y = x -> a: Lin(8) -> b: Lin(8) -> c: Lin(8)
}""", encoding="utf-8")
    labels = cluster_labels(to_dot(build_graph(spec)))
    # a maps 4 -> 8 (other parameters): only b and c are alike
    assert "a: Lin(c=8)" in labels and "b … c: Lin(c=8)  ×2" in labels


@needs_dot
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vit_b_16", "bert", "gpt", "transformer", "written"])
@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_rolled_views_have_no_back_edges(name, rankdir, tmp_path):
    """Every edge of a rolled view flows forward in dot's layout: down (TB), right (LR) or, wrapped LR, down to
    the next row; a residual around a rolled block is a skip, not an edge from its end back to its start."""
    if name == "written":
        spec = tmp_path / "w.dln"
        spec.write_text(WRITTEN_OUT, encoding="utf-8")
        g = build_graph(spec)
    else:
        g = graph(name)
    dot = to_dot(g, rankdir=rankdir)
    assert "×" in "".join(cluster_labels(dot))
    pos, edges, _ = _plain(dot)
    flow = [(t, h) for t, h, style in edges if style not in ("dashed", "invis")]  # shared/tied links, row order
    assert flow
    for tail, head in flow:
        (tx, ty), (hx, hy) = pos[tail], pos[head]
        forward = hy < ty if rankdir == "TB" else (hx > tx or hy < ty)
        assert forward, (tail, head)


@needs_dot
def test_left_to_right_wraps_into_rows():
    g = graph("resnet18")
    dot = to_dot(g, rankdir="LR")
    assert "constraint=false" in dot and "rank=same" in dot
    _, _, (width, height) = _plain(dot)
    assert width / height < 4  # one strip was 21 times as wide as high
    assert "rank=same" not in to_dot(graph("mlp"), rankdir="LR")  # short: one row


def test_paper_style():
    g = graph("resnet18")
    dot = to_dot(g, style="paper")
    assert 'cluster_legend' not in dot and "params" not in dot and 'fontname="Times-Roman"' in dot
    assert 'label="conv2d 7×7 /2, 64"' in dot  # the op and its key attributes, no name, no count
    fills = set(re.findall(r'fillcolor="(#[0-9a-f]{6})"', dot))
    assert fills and all(f[1:3] == f[3:5] == f[5:7] for f in fills)  # greys only
    assert 'fillcolor="#' in to_dot(g, style="paper", fusion=True) and "kernel #" in to_dot(g, style="paper",
                                                                                             fusion=True)


def test_paper_shades_differ_in_luminance():
    lum = sorted(luminance(c) for c in PAPER_SHADES)
    assert all(b - a > 0.1 for a, b in zip(lum, lum[1:]))
    kinds = {PAPER_COLOURS[f] for f in ("conv", "attention", "norm", "activation", "shape")}
    assert len(kinds) == 5  # weights, attention, norms, activations, shape ops: five greys


def test_without_shapes():
    dot = to_dot(graph("mlp"), shapes=False)
    assert not edge_labels(dot) and "[784]" not in dot


def test_unknown_style_or_rankdir():
    with pytest.raises(ValueError, match="style must be one of default, paper"):
        to_dot(graph("mlp"), style="fancy")
    with pytest.raises(ValueError, match="rankdir must be TB or LR"):
        to_dot(graph("mlp"), rankdir="BT")


@needs_dot
@pytest.mark.parametrize("width,points", [("3.5in", 252), ("8.5cm", 241), ("252pt", 251)])
def test_pdf_fits_a_column(width, points, tmp_path):
    out = tmp_path / "r.pdf"
    assert main(["render", str(SPECS_DIR / "resnet18.dln"), "-o", str(out), "--style", "paper", "--width", width]) == 0
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    box = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", data)
    assert box and abs(float(box.group(1)) - points) <= 1.5 and float(box.group(2)) > float(box.group(1))


def test_width_in_the_dot_text():
    assert 'size="3.5,10000!"' in to_dot(graph("mlp"), width=3.5)


@needs_dot
def test_tikz_output(tmp_path):
    """A .tex file is a TikZ picture drawn from dot's layout. pdflatex is not installed here, so it is not
    compiled: the test checks its structure (balanced groups, colours defined before use, escaped labels)."""
    spec = tmp_path / "hostile.dln"
    spec.write_text(HOSTILE, encoding="utf-8")
    out = tmp_path / "h.tex"
    assert main(["render", str(spec), "-o", str(out)]) == 0
    tex = out.read_text(encoding="utf-8")
    assert tex.count("\\begin{tikzpicture}") == tex.count("\\end{tikzpicture}") == 1
    assert "\\resizebox{\\columnwidth}{!}{%" in tex
    body = re.sub(r"\\[{}]", "", tex)
    assert body.count("{") == body.count("}")
    defined = set(re.findall(r"\\definecolor\{(dlc\d+)\}\{HTML\}\{[0-9A-F]{6}\}", tex))
    assert set(re.findall(r"=(dlc\d+)", tex)) <= defined
    assert "\\{brace\\} \\textless{}angle\\textgreater{}" in tex and "größe ☃" in tex
    assert "fc: linear 4" in tex and "\\node[" in tex and ".. controls" in tex  # labels, nodes, curved edges
    assert "\\path[draw=none, fill=" in tex  # the background: filled, no frame (its pen is transparent)


def test_latex_text_escapes_everything():
    assert latex_text("a_b {c} 50% $x$ #1 ~^\\ ×") == (r"a\_b \{c\} 50\% \$x\$ \#1 \textasciitilde{}"
                                                       r"\textasciicircum{}\textbackslash{} $\times$")


@needs_dot
def test_cli_options(tmp_path, capsys):
    spec = str(SPECS_DIR / "resnet18.dln")
    out = tmp_path / "r.dot"
    assert main(["render", spec, "-o", str(out)]) == 0
    plain = out.read_text(encoding="utf-8")
    assert "kernel #" not in plain and "×2" in plain
    assert main(["render", spec, "-o", str(out), "--fusion", "--no-roll"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "kernel #" in text and "layer1.1: BasicBlock" in text
    assert main(["render", spec, "-o", str(out), "--no-fusion"]) == 0  # the default, still accepted
    assert out.read_text(encoding="utf-8") == plain
    assert main(["render", spec, "-o", str(out), "--style", "paper", "--no-shapes", "--rankdir", "LR"]) == 0
    assert "cluster_legend" not in out.read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["render", spec, "-o", str(out), "--width", "wide"])
    assert exc.value.code == 2
    assert "argument --width: expected a positive width up to 1000 inches such as 3.5in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["render", spec, "-o", str(out), "--style", "fancy"])
    assert exc.value.code == 2
    assert main(["render", spec, "-o", str(tmp_path / "r.jpg")]) == 2
    assert "output must end in .svg, .png, .pdf, .dot or .tex" in capsys.readouterr().err


@pytest.mark.parametrize("text,inches", [("3.5in", 3.5), ("2.54cm", 1.0), ("25.4mm", 1.0), ("72bp", 1.0),
                                         ("3", 3.0)])
def test_parse_width(text, inches):
    assert parse_width(text) == pytest.approx(inches)


@pytest.mark.parametrize("text", ["", "0in", "-1cm", "3furlongs", "nan", "inf", "2000in"])
def test_parse_width_refuses(text):
    with pytest.raises(ValueError, match="expected a positive width"):
        parse_width(text)


DIAGRAMS_DOC = SPECS_DIR.parent / "docs" / "diagrams.md"
DOC_COMMANDS = re.findall(r"^dlc render (.+)$", DIAGRAMS_DOC.read_text(encoding="utf-8"), flags=re.M)


def _gallery_options() -> dict[str, list[str]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gallery", SPECS_DIR.parent / "scripts" / "gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OPTIONS


@needs_dot
@pytest.mark.parametrize("command", DOC_COMMANDS)
def test_docs_diagrams_commands_run(command, tmp_path, monkeypatch):
    """Every `dlc render` command of docs/diagrams.md runs; those with a picture are the ones scripts/gallery.py
    draws it with."""
    monkeypatch.chdir(SPECS_DIR.parent)
    args = shlex.split(command)
    at = args.index("-o")
    name = args[at + 1]
    args[at + 1] = str(tmp_path / name)
    assert main(["render", *args]) == 0
    assert (tmp_path / name).stat().st_size > 0
    stem = Path(name).stem
    if Path(name).suffix == ".svg":
        assert _gallery_options()[stem] == args[:at] + args[at + 2:]
        assert f'src="images/diagrams/{stem}.svg"' in DIAGRAMS_DOC.read_text(encoding="utf-8")


def test_docs_diagrams_pictures_are_all_drawn_by_the_gallery_script():
    assert len(DOC_COMMANDS) >= 9
    for stem in _gallery_options():
        assert (DIAGRAMS_DOC.parent / "images" / "diagrams" / f"{stem}.svg").stat().st_size > 0


@pytest.mark.parametrize("suffix", ["svg", "pdf", "tex"])
def test_a_failing_dot_leaves_the_output_as_it_was(suffix, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text("#!/bin/sh\necho 'Error: out of cheese' >&2\nexit 3\n", encoding="utf-8")
    (fake / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    out = tmp_path / f"old.{suffix}"
    out.write_bytes(b"the old picture")
    args = ["render", str(SPECS_DIR / "mlp.dln"), "-o", str(out), "--width", "3in"]
    assert main(args) == 1
    assert out.read_bytes() == b"the old picture"
    err = capsys.readouterr().err
    assert f"could not draw old.{suffix}: it exited with status 3: Error: out of cheese" in err
    assert (tmp_path / "old.dot").exists()  # the DOT text, saved beside it
