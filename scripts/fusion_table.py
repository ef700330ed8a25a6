"""Per spec: fusion groups, kernel launches and PyTorch ops per forward, with ``--fuse`` and with
``--fuse --optimize inference``; prints the Markdown table of docs/fusion.md.

    .venv/bin/python scripts/fusion_table.py                    # this checkout
    .venv/bin/python scripts/fusion_table.py --root ../before   # another checkout of dlc (say, an older commit)

Groups are counted in the fusion plan of the spec at its default parameters (what ``--explain-fusion`` lists).
Launches are counted dynamically: the module is loaded with ``fuse=True`` and run once in eval mode, batch 1, under
the Triton interpreter (set here, before triton is imported), and every call of the runtime's ``launch`` (the one
place a kernel is launched) is counted; a repeat or a shared instance launches its kernels once per use. PyTorch
ops are the ATen operators the forward runs outside kernel launches (a ``TorchDispatchMode``): the layers
PyTorch runs, views and the allocations of kernel outputs included. Heavy specs run at smaller widths or image
sizes (``SMALL``): the same layers and groups, fewer elements for the interpreter.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import os
import sys
import tomllib
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton

ROOT = Path(__file__).resolve().parent.parent
# Sizes that keep every spec's layers (and so its fusion groups) but make the interpreter's work small.
SMALL = {"densenet121": {"size": 64}, "unet": {"size": 32}, "mobilenet_v2": {"size": 64},
         "efficientnet_b0": {"size": 64}, "dcgan_generator": {"ngf": 8}, "dcgan_discriminator": {"ndf": 8},
         "transformer": {"d_model": 32, "nhead": 4, "dim_feedforward": 64},
         "wavenet": {"channels": 8, "head_channels": 16},
         "vit_b_16": {"image_size": 32, "patch_size": 8, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
         "gpt": {"vocab_size": 50, "n_positions": 16, "n_embd": 32, "n_head": 4},
         "bert": {"vocab_size": 50, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
                  "max_position_embeddings": 16, "pad_token_id": 49}}
MODES = {"--fuse": None, "--fuse --optimize inference": "inference"}


class _Checkout(importlib.abc.MetaPathFinder):
    """Imports ``dlc`` from another checkout: its packages where its pyproject.toml's ``package-dir`` puts them."""

    def __init__(self, root: Path) -> None:
        tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
        self.dirs = {name: str(root / folder) for name, folder in tool["package-dir"].items()}

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 - the finder protocol's signature
        """A package of package-dir from its folder; anything else (a module of it) through its parent's path."""
        if fullname not in self.dirs:
            return None
        folder = self.dirs[fullname]
        return importlib.util.spec_from_file_location(fullname, f"{folder}/__init__.py",
                                                      submodule_search_locations=[folder])


def inputs(graph, torch) -> list:
    """One sample per network input: symbolic sizes 5, token ids below every vocabulary, masks all false."""
    vocab = min([n.attrs["vocab"] for n in graph.nodes if n.op == "embedding"], default=100)
    out = []
    for _, v in graph.inputs:
        t = graph.types[v]
        shape = [1] + [d if isinstance(d, int) else 5 for d in t.shape]
        if t.dtype == "bool":
            out.append(torch.zeros(shape, dtype=torch.bool))
        else:
            out.append(torch.randint(0, vocab, shape) if t.dtype.startswith("int") else torch.randn(shape))
    return out


def measure(spec: Path, optimize: str | None, fuse: bool = True) -> tuple[int, int, int]:
    """(groups, kernel launches, ATen ops outside kernels) of one eval forward of the module."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import dlc
    from dlc.compiler.fusion import fusion_plan

    groups = len(fusion_plan(dlc.compile(spec, fuse=fuse, optimize=optimize).graph).groups)
    compiled = dlc.compile(spec, fuse=fuse, optimize=optimize, **SMALL.get(spec.stem, {}))
    model = compiled.instantiate().eval()
    ns = sys.modules[type(model).__module__]
    counts = {"launches": 0, "torch": 0, "inside": 0}
    plain_launch = getattr(ns, "launch", None)  # a module without kernels has no runtime

    def launch(kernel, grid):
        run = plain_launch(kernel, grid)

        def counted(*args, **kwargs):
            counts["launches"] += 1
            counts["inside"] += 1
            try:
                return run(*args, **kwargs)
            finally:
                counts["inside"] -= 1
        return counted

    class Calls(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not counts["inside"]:
                counts["torch"] += 1
            return func(*args, **(kwargs or {}))

    if plain_launch is not None:
        ns.launch = launch  # the generated code looks `launch` up in its module at each call
    torch.manual_seed(0)
    xs = inputs(compiled.graph, torch)
    if optimize == "inference":
        xs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in xs]
    with torch.no_grad(), Calls():
        model(*xs)
    return groups, counts["launches"], counts["torch"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, help="the dlc checkout to measure (default: the installed one)")
    p.add_argument("specs", nargs="*", help="spec names (default: every spec in this checkout's specs/)")
    args = p.parse_args()
    if args.root is not None:
        sys.meta_path.insert(0, _Checkout(args.root.resolve()))
    root = args.root.resolve() if args.root is not None else ROOT  # its own specs, as they were there
    names = args.specs or sorted(s.stem for s in (root / "specs").glob("*.dln"))
    head = " | ".join(f"`{mode}`: groups / launches / ATen ops" for mode in MODES)
    print(f"| spec | plain: ATen ops | {head} |\n| --- | ---: | ---: | ---: |")
    for name in names:
        spec = root / "specs" / f"{name}.dln"
        cells = []
        for fuse, optimize in [(False, None)] + [(True, optimize) for optimize in MODES.values()]:
            try:
                groups, launches, ops = measure(spec, optimize, fuse)
                cells.append(f"{groups} / {launches} / {ops}" if fuse else str(ops))
            except Exception as exc:  # noqa: BLE001 - a spec the checkout cannot run is a row, not the end
                cells.append(f"fails: {type(exc).__name__}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
