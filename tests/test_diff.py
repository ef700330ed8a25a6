"""``dlc diff``: layers, shapes and parameters that differ between two specs or two ``--set`` variants of one,
as text and JSON; exit status 0 same, 1 different, 2 trouble; totals checked against torchvision's models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlc import cli as dlc_cli

ROOT = Path(__file__).resolve().parent.parent
RESNET18 = str(ROOT / "specs" / "resnet18.dln")
RESNET50 = str(ROOT / "specs" / "resnet50.dln")


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = dlc_cli.main(["diff", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def as_json(capsys, *args: str) -> tuple[int, dict]:
    rc, out, err = run(capsys, *args, "--format", "json")
    assert err == ""
    return rc, json.loads(out)


@pytest.fixture(scope="module")
def torchvision_params() -> dict[str, int]:
    """Parameter counts of torchvision's ResNets, the source of truth of both specs."""
    from torchvision.models import resnet18, resnet50

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    return {"resnet18": count(resnet18()), "resnet18-10": count(resnet18(num_classes=10)),
            "resnet50": count(resnet50())}


def test_a_spec_against_itself(capsys):
    rc, out, err = run(capsys, RESNET18, RESNET18)
    assert (rc, err) == (0, "")
    assert out.endswith("parameters: 11,689,512 (same)\nlayers, inputs and outputs: 0 added, 0 removed, 0 changed, "
                        "45 unchanged\nthe networks are the same\n")
    assert run(capsys, RESNET18, "--set", "classes=10")[0] == 0  # --set changes both sides
    assert run(capsys, RESNET18, "--set-a", "classes=10", "--set-b", "classes=10")[0] == 0


def test_number_of_classes(capsys, torchvision_params):
    rc, out, err = run(capsys, RESNET18, "--set-b", "classes=10")
    assert (rc, err) == (1, "")
    assert out == (f"--- {RESNET18} (ResNet18, classes=1000)\n"
                   f"+++ {RESNET18} (ResNet18, classes=10)\n"
                   "~ fc  linear: units: 1000 -> 10; shape [B, 1000] -> [B, 10]; params 513,000 -> 5,130\n"
                   "~ output logits  output: shape [B, 1000] -> [B, 10]\n"
                   "parameters: 11,689,512 -> 11,181,642 (-507,870)\n"
                   "layers, inputs and outputs: 0 added, 0 removed, 2 changed, 43 unchanged\n")
    rc, d = as_json(capsys, RESNET18, "--set-b", "classes=10")
    assert rc == 1 and not d["same"]
    assert (d["a"]["total_params"], d["b"]["total_params"]) == (torchvision_params["resnet18"],
                                                                torchvision_params["resnet18-10"])
    assert (d["a"]["params"], d["b"]["params"]) == ({"classes": 1000}, {"classes": 10})
    assert d["changed"][0] == {"kind": "layer", "name": "fc", "op": "linear",
                               "changes": {"shape": ["[B, 1000]", "[B, 10]"], "params": [513000, 5130],
                                           "attrs": {"units": ["1000", "10"]}}}
    assert d["added"] == d["removed"] == []


def test_resnet18_against_resnet50(capsys, torchvision_params):
    rc, d = as_json(capsys, RESNET18, RESNET50)
    assert rc == 1
    assert (d["a"]["total_params"], d["b"]["total_params"]) == (torchvision_params["resnet18"],
                                                                torchvision_params["resnet50"])
    assert (d["a"]["network"], d["b"]["network"]) == ("ResNet18", "ResNet50")
    added = {e["name"]: e for e in d["added"]}
    assert added["layer1.0.conv3"] == {"kind": "layer", "name": "layer1.0.conv3", "op": "conv2d",
                                       "attrs": added["layer1.0.conv3"]["attrs"], "shape": "[B, 256, 56, 56]",
                                       "params": 64 * 256}
    assert "layer4.2.bn3" in added and "layer1.0.downsample.0" in added  # the bottleneck widens layer1 too
    assert d["removed"] == []  # every BasicBlock layer has a namesake in the Bottleneck
    changed = {c["name"]: c["changes"] for c in d["changed"]}
    assert changed["fc"] == {"params": [513000, 2049000]}  # 512 -> 2048 inputs: the attributes are the same
    assert changed["layer1.0.conv1"]["attrs"] == {"k": ["3", "1"], "pad": ["1", "0"]}
    assert d["b"]["layers"] - d["a"]["layers"] == len(d["added"])
    rc, out, _ = run(capsys, RESNET18, RESNET50)
    assert rc == 1
    assert ("+ layer1.0.conv3  conv2d(channels=256, k=1, stride=1, pad=0, dilation=1, groups=1, bias=false)  "
            "[B, 256, 56, 56]  16,384 params\n") in out
    assert "parameters: 11,689,512 -> 25,557,032 (+13,867,520)\n" in out


def test_removed_layers_and_inputs(tmp_path, capsys):
    a = tmp_path / "a.dln"
    a.write_text("network N {\n    input x: [8]\n    input y: [8]\n"
                 "    output z = x + y -> fc1: linear(4) -> fc2: linear(2)\n}\n")
    b = tmp_path / "b.dln"
    b.write_text("network N {\n    input x: [8]\n    output z = x -> fc1: linear(4)\n}\n")
    rc, out, _ = run(capsys, str(a), str(b))
    assert rc == 1
    assert "- input y  input  [B, 8]\n" in out
    assert "- fc2  linear(units=2, bias=true)  [B, 2]  10 params\n" in out
    assert "~ output z  output: shape [B, 2] -> [B, 4]\n" in out
    assert "unnamed ops (relu, +, ...): 1 -> 0\n" in out


def test_spec_errors_are_diagnostics_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.dln"
    bad.write_text("network N {\n    input x: [8]\n    output y = x -> linear(\n}\n")
    rc, out, err = run(capsys, RESNET18, str(bad))
    assert (rc, out) == (2, "")
    assert err.startswith(f"{bad}:4:1: error[syntax]: unexpected `}}`")
    rc, out, err = run(capsys, RESNET18, str(tmp_path / "missing.dln"))
    assert (rc, out) == (2, "")
    assert "error[file-not-found]" in err
    rc, out, err = run(capsys, RESNET18, "--set-b", "nope=3")
    assert (rc, out) == (2, "")
    assert "error[" in err and "nope" in err


@pytest.mark.parametrize("args, message", [(["--set-b", "classes"], "--set expects NAME=VALUE"),
                                           (["--format", "xml"], "invalid choice: 'xml'")])
def test_usage_errors_exit_2(capsys, args, message):
    try:
        rc = dlc_cli.main(["diff", RESNET18, *args])
    except SystemExit as exc:  # argparse's own errors end the parse
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err


def test_diff_imports_neither_torch_nor_triton():
    code = ("import sys\nfrom dlc import cli\nrc = cli.main(['diff', sys.argv[1], '--set-b', 'classes=10'])\n"
            "assert 'torch' not in sys.modules and 'triton' not in sys.modules\nsys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, RESNET18], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (1, "")


def test_docs_example(capsys, monkeypatch):
    """docs/fmt.md's `dlc diff` example is what the command prints."""
    text = (ROOT / "docs" / "fmt.md").read_text(encoding="utf-8")
    examples = re.findall(r"<!-- diff: (.*?) -->\n```text\n(.*?)```", text, re.S)
    assert examples
    monkeypatch.chdir(ROOT)
    for args, want in examples:
        assert run(capsys, *args.split()) == (1, want, "")
