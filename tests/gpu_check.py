"""The fused modules on a CUDA GPU, with compiled (not interpreted) Triton kernels.

Run by tests/test_gpu.py in a fresh process without TRITON_INTERPRET (the rest of the suite runs the
interpreter, which must be chosen before triton is imported). Usable on its own:
``python tests/gpu_check.py [spec ...]``. Exits 1 and prints each difference above tolerance (the fused
module in eval and train mode, and fused with ``optimize="inference"`` in eval mode, each against the
plain module), and each kernel that never launched (the fused module would have computed the same values
with its PyTorch fallback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET to compile the kernels"

import torch  # noqa: E402

import dlc  # noqa: E402

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
NO_DROPOUT = {"mlp": {"dropout": 0.0}, "googlenet": {"dropout": 0.0, "dropout_aux": 0.0},
              "mobilenet_v2": {"dropout": 0.0}, "inception_v3": {"dropout": 0.0}, "transformer": {"p": 0.0},
              "efficientnet_b0": {"dropout": 0.0}, "gpt": {"dropout": 0.0}, "bert": {"dropout": 0.0}}
# Specs that draw samples (randn_like) from torch's generator: each forward starts from one seed, so both draw alike.
RANDOM = {"vae", "denoising_autoencoder"}
TOL = {torch.float32: 1e-3, torch.bfloat16: 5e-2}  # relative to the output's largest magnitude


def inputs(graph, device: str) -> list[torch.Tensor]:
    vocab = min([n.attrs["vocab"] for n in graph.nodes if n.op == "embedding"], default=100)
    out = []
    for _, v in graph.inputs:
        t = graph.types[v]
        shape = [4] + [d if isinstance(d, int) else 16 for d in t.shape]
        if t.dtype == "bool":  # a padding mask: nothing masked
            out.append(torch.zeros(shape, dtype=torch.bool, device=device))
        else:
            out.append(torch.randint(0, vocab, shape, device=device) if t.dtype.startswith("int")
                       else torch.randn(shape, device=device))
    return out


def as_tuple(y):
    return y if isinstance(y, tuple) else (y,)


def kernels_not_run(model) -> list[str]:
    """The forward kernels of a fused model that its runtime's LAUNCHES has not counted (as conftest.py checks;
    not imported from there, which would switch the interpreter on)."""
    ns = sys.modules[type(model).__module__]
    names = {k.forward.__name__ for k in vars(ns).values() if isinstance(k, ns.ElementwiseKernel)}
    if hasattr(ns, "recurrent_forward"):
        names |= {f"_rnn_{cell}_fwd_kernel" for layer in model.modules()
                  for cell, cls in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)) if isinstance(layer, cls)}
    return sorted(n for n in names if not ns.LAUNCHES.get(n))


def check(name: str) -> list[str]:
    path = SPECS_DIR / f"{name}.dln"
    params = NO_DROPOUT.get(name, {})
    torch.manual_seed(0)
    plain = dlc.load(path, **params).cuda()
    fused = dlc.load(path, fuse=True, fused_recurrent=True, **params).cuda()
    fused.load_state_dict(plain.state_dict())
    graph = dlc.compile(path, **params).graph
    errors = []

    def run(model, args):
        if name in RANDOM:
            torch.manual_seed(1)
        return as_tuple(model(*args))

    for dtype in (torch.float32, torch.bfloat16):
        xs = [x.to(dtype) if x.is_floating_point() else x for x in inputs(graph, "cuda")]
        for mode in ("eval", "train"):
            a, b = plain.to(dtype).train(mode == "train"), fused.to(dtype).train(mode == "train")
            sys.modules[type(fused).__module__].LAUNCHES.clear()
            with torch.no_grad():
                for ya, yb in zip(run(a, xs), run(b, xs), strict=True):
                    err = (ya.float() - yb.float()).abs().max().item() / max(1.0, ya.float().abs().max().item())
                    if not err <= TOL[dtype]:
                        errors.append(f"{name} {dtype} {mode}: relative difference {err:.2e}")
            missing = kernels_not_run(fused)
            if missing:
                errors.append(f"{name} {dtype} {mode}: kernels that never launched: {', '.join(missing)}")
        errors += check_optimized(name, path, params, plain, xs, dtype, run)
    return errors


def check_optimized(name, path, params, plain, xs, dtype, run) -> list[str]:
    """``fuse=True, optimize="inference"`` in eval mode (batchnorm folded, channels-last) against the plain module."""
    try:
        opt = dlc.load(path, fuse=True, optimize="inference", **params).cuda()
        opt.load_state_dict(plain.state_dict())
        opt = opt.to(dtype).eval()
        with torch.no_grad():
            pairs = list(zip(run(plain.eval(), xs), run(opt, xs), strict=True))
    except Exception as exc:  # a failure to build or run is a finding like a difference
        return [f"{name} {dtype} fuse+optimize: {type(exc).__name__}: {exc}"]
    errors = []
    for ya, yb in pairs:
        err = (ya.float() - yb.float()).abs().max().item() / max(1.0, ya.float().abs().max().item())
        if not err <= TOL[dtype]:
            errors.append(f"{name} {dtype} fuse+optimize eval: relative difference {err:.2e}")
    return errors


def main(names: list[str]) -> int:
    errors = [e for name in names for e in check(name)]
    for e in errors:
        print(e)
    print(f"{len(names)} specs checked on {torch.cuda.get_device_name()}: {len(errors)} differences")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or sorted(p.stem for p in SPECS_DIR.glob("*.dln"))))
