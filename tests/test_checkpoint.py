"""Activation checkpointing as a spec feature: `name: checkpoint Block(...) * n`.

The same network with and without `checkpoint` (same initial weights) gives the same outputs and gradients,
plain and fused; with it, fewer bytes are saved for backward (counted by a saved-tensor hook); eval mode calls
the modules directly. Misuse is a diagnostic at the `checkpoint` keyword.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dlc
from dlc.api import Compiled
from dlc.compiler.ir import print_graph
from dlc.compiler.serialize import dump_yaml, load_yaml
from dlc.diagnostics import DlcError
from tests.conftest import SPECS_DIR

BLOCKS = (SPECS_DIR / "blocks" / "resnet.dln").as_posix()
SPEC = f"""
import "{BLOCKS}"

network Net(classes: int = 10, p: float = 0.5) {{
    input x: [3, 16, 16]
    y = x -> conv1: conv2d(8, k=3, pad=1, bias=false) -> bn1: batchnorm -> relu
          -> layer1: checkpoint BasicBlock(8) * 2
          -> checkpoint BasicBlock(16, stride=2)
          -> head: checkpoint (conv2d(16, k=1) -> relu -> dropout(p))
    output logits = y -> avgpool: avgpool(global) -> flatten -> fc: linear(classes)
}}
"""


def _compile(tmp: Path, text: str, name: str, fuse: bool = False, **params: float) -> Compiled:
    path = tmp / f"{name}.dln"
    path.write_text(text)
    return dlc.compile(path, fuse=fuse, **params)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Compiled]:
    tmp = tmp_path_factory.mktemp("checkpoint")
    return {"checkpointed": _compile(tmp, SPEC, "net"),
            "plain": _compile(tmp, SPEC.replace("checkpoint ", ""), "plain"),
            # fused kernels draw dropout masks from another stream: compared without dropout
            "fused": _compile(tmp, SPEC, "fused", fuse=True, p=0.0),
            "plain_p0": _compile(tmp, SPEC.replace("checkpoint ", ""), "plain_p0", p=0.0)}


def _run(compiled: Compiled, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """One training step's output, the gradients and the bytes of the tensors saved for backward."""
    torch.manual_seed(0)
    model = compiled.instantiate()
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    torch.manual_seed(1)  # the dropout's mask
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    out.square().sum().backward()
    return out.detach(), {k: p.grad for k, p in model.named_parameters()}, saved


def test_generated_forward_checkpoints_in_training_only(nets: dict[str, Compiled]) -> None:
    src = nets["checkpointed"].source
    assert "import torch.utils.checkpoint\n" in src
    assert ("        if self.training:  # checkpoint: backward recomputes its activations\n"
            "            y = torch.utils.checkpoint.checkpoint(self.layer1, y, use_reentrant=False)  # net.dln:7\n"
            "        else:\n"
            "            y = self.layer1(y)  # net.dln:7\n") in src
    assert "torch.utils.checkpoint.checkpoint(self.basic_block_0, y, use_reentrant=False)  # net.dln:8" in src
    assert "torch.utils.checkpoint.checkpoint(self.head, y, use_reentrant=False)  # net.dln:9" in src
    assert "checkpoint" not in nets["plain"].source
    # `dlc ir` writes the marks, and its YAML loads back to the same IR
    g = nets["checkpointed"].graph
    assert g.checkpointed == {("layer1", 0), ("basic_block_0", 0), ("head", 0)}
    assert load_yaml(dump_yaml(g)).checkpointed == g.checkpointed
    assert "\n  checkpoint basic_block_0, head, layer1\n  return logits=%" in print_graph(g)
    # the state_dict is the plain network's: checkpointing changes no module
    assert nets["checkpointed"].instantiate().state_dict().keys() == nets["plain"].instantiate().state_dict().keys()


def test_same_outputs_and_gradients_fewer_saved_bytes(nets: dict[str, Compiled]) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    out, grads, saved = _run(nets["checkpointed"], x)
    want_out, want_grads, want_saved = _run(nets["plain"], x)
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    assert grads.keys() == want_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], want_grads[k], rtol=0, atol=0, msg=lambda m, k=k: f"{k}: {m}")
    assert 0 < saved < want_saved
    print(f"saved for backward: {saved:,} of {want_saved:,} bytes ({saved / want_saved:.2f})")


@pytest.mark.slow  # the fused kernels run under the Triton interpreter: about 15 s on a busy 2-core machine
def test_fused_checkpointed_matches_plain(nets: dict[str, Compiled]) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    fused_out, fused_grads, _ = _run(nets["fused"], x)
    want_out, want_grads, _ = _run(nets["plain_p0"], x)
    assert "torch.utils.checkpoint.checkpoint(self.layer1, y, use_reentrant=False)" in nets["fused"].source
    torch.testing.assert_close(fused_out, want_out, rtol=1e-4, atol=1e-4)
    assert fused_grads.keys() == want_grads.keys()
    for k in want_grads:
        torch.testing.assert_close(fused_grads[k], want_grads[k], rtol=1e-4, atol=1e-4)


def test_eval_mode_calls_the_modules_directly(nets: dict[str, Compiled]) -> None:
    torch.manual_seed(0)
    model = nets["checkpointed"].instantiate().eval()
    torch.manual_seed(0)
    plain = nets["plain"].instantiate().eval()
    x = torch.randn(2, 3, 16, 16)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        got = model(x)
    torch.testing.assert_close(got, plain(x), rtol=0, atol=0)
    assert saved  # not checkpointed: autograd saved the layers' tensors directly


SHARED = """
block Mix(c: int) {
    input x
    input m
    return x + (x -> lin: linear(c)) + m
}

block Lin(c: int) {
    input x
    return x -> lin: linear(c) -> relu
}

network S {
    input x: [T, 8]
    input m: [T, 8]
    enc = Lin(8)
    y = x -> checkpoint enc -> enc
    z = y -> stack: checkpoint Mix(8, m=m) * 2
    output out = z -> checkpoint Mix(8, m=m)
}
"""


def test_shared_instances_and_extra_inputs(tmp_path: Path) -> None:
    """One application of a shared instance is recomputed, not the other; blocks and a labelled repeat
    receiving a second tensor get it through checkpoint too."""
    marked = _compile(tmp_path, SHARED, "net")
    src = marked.source
    assert "y = torch.utils.checkpoint.checkpoint(self.enc, x, use_reentrant=False)  # net.dln:17\n" in src
    assert "        y = self.enc(y)  # net.dln:17\n" in src  # the second application, not marked
    assert "z = torch.utils.checkpoint.checkpoint(self.stack, y, m, use_reentrant=False)  # net.dln:18" in src
    assert "out = torch.utils.checkpoint.checkpoint(self.mix_0, z, m, use_reentrant=False)  # net.dln:19" in src
    plain = _compile(tmp_path, SHARED.replace("checkpoint ", ""), "plain")
    gen = torch.Generator().manual_seed(3)
    x, m = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)
    grads = []
    for compiled in (marked, plain):
        torch.manual_seed(0)
        model = compiled.instantiate()
        model(x, m).square().sum().backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=0, atol=0)


BAD = [
    # a layer, not a block or group
    ("    output y = x -> checkpoint linear(4)\n", 3, 21, "`checkpoint` recomputes a block instance, a labelled "
     "group or a repeat of them; `linear` is a layer"),
    # inside a labelled group, which nn.Sequential runs
    ("    output y = x -> g: (linear(4) -> checkpoint B())\n", 3, 38, "`checkpoint` inside a labelled group"),
    # an unlabelled group's layers belong to the network: no module to recompute
    ("    output y = x -> checkpoint (linear(4) -> relu)\n", 3, 21, "`checkpoint` recomputes a block instance, a "
     "labelled group or a repeat of them; `linear` is a layer"),
]


@pytest.mark.parametrize("line, row, col, message", BAD)
def test_misuse_is_a_diagnostic(tmp_path: Path, line: str, row: int, col: int, message: str) -> None:
    spec = tmp_path / "bad.dln"
    spec.write_text("network Bad {\n    input x: [4]\n" + line + "}\nblock B {\n    input x\n    return x -> relu\n}\n")
    with pytest.raises(DlcError) as exc:
        dlc.compile(spec)
    assert exc.value.code == "bad-checkpoint"
    proc = subprocess.run([sys.executable, "-m", "dlc", "compile", str(spec)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert f"bad.dln:{row}:{col}: error[bad-checkpoint]: {message}" in proc.stderr
    assert "= hint:" in proc.stderr


def test_checkpoint_alone_is_a_syntax_error(tmp_path: Path) -> None:
    spec = tmp_path / "bad.dln"
    spec.write_text("network Bad {\n    input x: [4]\n    output y = x -> checkpoint\n}\n")
    proc = subprocess.run([sys.executable, "-m", "dlc", "compile", str(spec)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "bad.dln:4:1: error[syntax]" in proc.stderr
