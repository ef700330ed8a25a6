"""Generated modules train under torch.distributed: DDP and FSDP2 (dlc.distributed.shard) on 2 CPU processes.

One spawn of two processes (gloo backend) runs every case, a few SGD steps each, and rank 0 saves the parameters;
the test compares them with one process training on the whole batch (same initial weights, same data). Each rank
gets half of every batch. DDP and FSDP2 average the two halves' gradients; for a network without batchnorm that
is the whole batch's gradient. Batchnorm normalises each rank's half by that half's statistics, so the
single-process run of the ResNet accumulates the gradients of the two halves (the same computation, in one
process). The processes meet through a file store in the test's temporary folder (no port to race for) and every
wait has a timeout, so a hang fails the test.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import dlc
from dlc.api import Compiled
from dlc.distributed import shard, shard_units
from tests.conftest import ROOT, SPECS_DIR

WORLD = 2
STEPS = 3
BATCH = 4  # two samples per rank
TIMEOUT_S = 120  # the whole spawn: compiling is done before, each case takes a few seconds
# A small ResNet: torchvision's BasicBlock (specs/blocks/resnet.dln), identity and projection shortcuts.
TINY_RESNET = """
import "{blocks}"

network TinyResNet(classes: int = 10) {{
    input x: [3, 16, 16]
    y = x -> conv1: conv2d(8, k=3, pad=1, bias=false) -> bn1: batchnorm -> relu
          -> layer1: BasicBlock(8) * 2
          -> layer2: (BasicBlock(16, stride=2) -> BasicBlock(16))
    output logits = y -> avgpool: avgpool(global) -> flatten -> fc: linear(classes)
}}
"""
GPT = {"vocab_size": 50, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2, "dropout": 0.0}


def _batches(kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The inputs and targets of every step, the same in every process."""
    gen = torch.Generator().manual_seed(1)
    if kind == "resnet":
        return [(torch.randn(BATCH, 3, 16, 16, generator=gen), torch.randint(0, 10, (BATCH,), generator=gen))
                for _ in range(STEPS)]
    return [(torch.randint(0, GPT["vocab_size"], (BATCH, 8), generator=gen),
             torch.randint(0, GPT["vocab_size"], (BATCH, 8), generator=gen)) for _ in range(STEPS)]


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _fresh(compiled: Compiled) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights in every process
    return compiled.instantiate()


def _train(model: torch.nn.Module, kind: str, rank: int | None, micro: bool) -> None:
    """STEPS steps of SGD; ``rank`` None trains on whole batches (``micro``: accumulating their two halves)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in _batches(kind):
        opt.zero_grad()
        if rank is not None:
            half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
            _loss(model, x[half], y[half]).backward()
        elif micro:
            for r in range(WORLD):
                half = slice(r * BATCH // WORLD, (r + 1) * BATCH // WORLD)
                (_loss(model, x[half], y[half]) / WORLD).backward()
        else:
            _loss(model, x, y).backward()
        opt.step()


def _worker(rank: int, store: str, cases: dict[str, tuple[Compiled, str, str]], out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        for name, (compiled, kind, wrap) in cases.items():
            model = _fresh(compiled)
            if wrap == "ddp":
                model = torch.nn.parallel.DistributedDataParallel(model)
                _train(model, kind, rank, micro=False)
                params = {k: p.detach() for k, p in model.module.named_parameters()}
            else:
                shard(model)
                _train(model, kind, rank, micro=False)
                params = {k: p.full_tensor().detach() for k, p in model.named_parameters()}  # a collective
            if rank == 0:
                torch.save(params, os.path.join(out, f"{name}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Compiled]:
    spec = tmp_path_factory.mktemp("spec") / "tiny_resnet.dln"
    spec.write_text(TINY_RESNET.format(blocks=(SPECS_DIR / "blocks" / "resnet.dln").as_posix()))
    return {
        "resnet": dlc.compile(spec),
        "gpt": dlc.compile(SPECS_DIR / "gpt.dln", **GPT),
        # one layer: the fused kernels run under the Triton interpreter, the costliest case here
        "gpt1": dlc.compile(SPECS_DIR / "gpt.dln", **{**GPT, "n_layer": 1}),
        "gpt1_fused": dlc.compile(SPECS_DIR / "gpt.dln", fuse=True, **{**GPT, "n_layer": 1}),
    }


@pytest.fixture(scope="module")
def trained(compiled: dict[str, Compiled], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run every case in one spawn of WORLD processes; the folder of rank 0's parameters, one file a case."""
    out = tmp_path_factory.mktemp("distributed")
    cases = {
        "resnet_ddp": (compiled["resnet"], "resnet", "ddp"),
        "resnet_fsdp": (compiled["resnet"], "resnet", "fsdp"),
        "gpt_ddp": (compiled["gpt"], "gpt", "ddp"),
        "gpt_fsdp": (compiled["gpt"], "gpt", "fsdp"),
        "gpt_fused_ddp": (compiled["gpt1_fused"], "gpt", "ddp"),
    }
    ctx = mp.start_processes(_worker, args=(str(out / "store"), cases, str(out)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} training processes did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return out


def _reference(compiled: Compiled, kind: str) -> dict[str, torch.Tensor]:
    model = _fresh(compiled)
    _train(model, kind, None, micro=kind == "resnet")
    return {k: p.detach() for k, p in model.named_parameters()}


@pytest.mark.slow  # two processes importing torch, five training runs: about 30 s of CPU
@pytest.mark.parametrize("case, net, kind, atol", [
    ("resnet_ddp", "resnet", "resnet", 1e-5),
    ("resnet_fsdp", "resnet", "resnet", 1e-5),
    ("gpt_ddp", "gpt", "gpt", 1e-5),
    ("gpt_fsdp", "gpt", "gpt", 1e-5),
    ("gpt_fused_ddp", "gpt1", "gpt", 1e-4),  # fused against plain: float32 summation orders differ
])
def test_distributed_training_matches_one_process(trained: Path, compiled: dict[str, Compiled], case: str,
                                                  net: str, kind: str, atol: float) -> None:
    got = torch.load(trained / f"{case}.pt")
    want = _reference(compiled[net], kind)
    start = _reference_start(compiled[net])
    assert got.keys() == want.keys()
    moved = 0
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=atol, rtol=1e-4, msg=lambda m, k=k: f"{case} {k}: {m}")
        moved += not torch.equal(want[k], start[k])
    assert moved > len(want) // 2  # the steps trained: most parameters changed


def _reference_start(compiled: Compiled) -> dict[str, torch.Tensor]:
    return {k: p.detach() for k, p in _fresh(compiled).named_parameters()}


def test_shard_units_are_the_block_instances_and_groups_innermost_first(compiled: dict[str, Compiled]) -> None:
    units = shard_units(compiled["resnet"].graph)
    assert units == ("layer2.0.downsample", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer1", "layer2")
    model = compiled["resnet"].module().TinyResNet
    assert model.shard_units == units  # the generated class carries them for dlc.distributed.shard
    assert shard_units(compiled["gpt"].graph) == ("h.0.mlp", "h.1.mlp", "h.0", "h.1", "h")


def test_shard_units_is_reserved(tmp_path: Path) -> None:
    spec = tmp_path / "bad.dln"
    spec.write_text("network N {\n    input x: [8]\n    output y = x -> shard_units: linear(3)\n}\n")
    proc = subprocess.run([sys.executable, "-m", "dlc", "check", str(spec)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "bad.dln:3:21: error[bad-name]: `shard_units` cannot name a layer" in proc.stderr


def test_shard_needs_units() -> None:
    with pytest.raises(TypeError, match="has no `shard_units`"):
        shard(torch.nn.Linear(2, 2))


def _doc_blocks(lang: str) -> list[str]:
    text = (ROOT / "docs" / "distributed.md").read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.fixture
def doc_dir(tmp_path: Path) -> Path:
    """A folder with specs/blocks/ as blocks/, where the docs' specs import it from."""
    shutil.copytree(SPECS_DIR / "blocks", tmp_path / "blocks")
    return tmp_path


def test_doc_specs_compile(doc_dir: Path) -> None:
    specs = _doc_blocks("dln")
    assert len(specs) == 2
    for i, text in enumerate(specs):
        (doc_dir / f"spec{i}.dln").write_text(text)
        graph = dlc.compile(doc_dir / f"spec{i}.dln").graph
        assert graph.checkpointed  # both mark stages for recomputation


@pytest.mark.slow  # a process importing torch
def test_doc_train_script_runs(doc_dir: Path) -> None:
    """docs/distributed.md's train.py, as torchrun would start it, with one process (env:// rendezvous), in its
    FSDP2 mode (its DDP mode is plain PyTorch, which the two-process cases above exercise)."""
    (script,) = [b for b in _doc_blocks("python") if "init_process_group" in b]
    (doc_dir / "net.dln").write_text(_doc_blocks("dln")[0])
    (doc_dir / "train.py").write_text(script)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "train.py", "fsdp"], cwd=doc_dir, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^step 4: loss \d+\.\d{4}$", proc.stdout, flags=re.M), proc.stdout
