"""Every module dlc makes can be captured: plain, fused (``fuse=True``), optimised (``optimize="inference"``) and
both, for every spec in specs/.

For each, in eval mode: ``torch.export.export`` gives a program whose outputs equal the eager module's, and
``torch.compile(fullgraph=True)`` captures the module as one graph (dynamo with the eager backend: capture is what
used to fail, on the caches' ``is_inference()`` / ``data_ptr()`` and on the Triton launches; one small spec also
goes through inductor). The tests run with ``TRITON_INTERPRET=1`` (conftest.py), so a fused module would launch its
kernels on these CPU tensors: while traced it must take the unfused layers' ops instead (``use_triton``).

ONNX: every spec goes once through ``dlc.export`` (the plain module; the other variants are the same graph to the
exporter, whose capture is the one checked above): ``onnx.checker`` accepts the file it writes, its inputs and
outputs carry the spec's names with the batch axis and the spec's symbols dynamic, and onnxruntime's outputs equal
the PyTorch module's at the export's example sizes and at a second batch size and a second value of every symbol,
fed to the same file. ``NOT_EXPORTABLE`` lists the specs ONNX cannot express, with the op that stops each (docs/
export.md lists them too); their test asserts that the export still fails, so it is noticed when one starts working.

Heavy specs run at the small sizes of tests/test_fused_specs.py and are marked slow.
"""

from __future__ import annotations

import re
from pathlib import Path

import onnx  # ONNX export and onnxruntime are test dependencies (pyproject.toml): missing means a broken install
import onnxruntime as ort
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dlc
from dlc.diagnostics import DlcError
from dlc.onnx_export import BATCH, FIRST_SYMBOL

from conftest import SPECS_DIR, assert_no_kernels, generated_module
from test_fused_specs import RANDOM, SLOW, SMALL, outputs, randomise_batchnorm, spec_inputs


SPECS = sorted(p.stem for p in SPECS_DIR.glob("*.dln"))
VARIANTS = {"plain": {}, "fused": {"fuse": True}, "inference": {"optimize": "inference"},
            "fused-inference": {"fuse": True, "optimize": "inference"}}
ATOL = 1e-4  # float32 networks: a captured graph may order sums differently (ONNX Runtime's kernels do)
# Every case runs in the full suite. Without the slow ones: the module with most generated code (fused and
# optimised) of each light spec and of resnet18 through torch.export, every module of the light specs through
# dynamo, the light specs through dlc.export and onnxruntime; the heavy specs of tests/test_fused_specs.py (whole
# CNNs), the heaviest ONNX exports and the other variants' captures are slow.
EVERYDAY = "fused-inference"
HEAVY_EXPORT = {"efficientnet_b0", "mobilenet_v2", "vit_b_16"}  # 40-50 s each through export and ONNX: slow
# The specs ONNX cannot express, and the layer (as dlc's diagnostic names it) that stops each: torch.export
# captures nn.LSTM for the example's sequence length, so the length cannot stay dynamic (docs/export.md).
NOT_EXPORTABLE = {"bilstm_tagger": "recurrent layers (`tag`)", "seq2seq": "recurrent layers (`encoder`, `decoder`)"}


def cases(export: bool) -> list:
    """The (spec, variant) parameters, slow-marked as above. The plain module's torch.export is dlc.export's."""
    def slow(name: str, variant: str) -> bool:
        if name == "resnet18" and variant == EVERYDAY:
            return False
        return name in SLOW or (export and (variant != EVERYDAY or name in HEAVY_EXPORT))
    return [pytest.param(name, variant, marks=[pytest.mark.slow] if slow(name, variant) else [])
            for name in SPECS for variant in VARIANTS if not (export and variant == "plain")]


def model_and_inputs(name: str, variant: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The spec's module in ``variant``, in eval mode with randomised batchnorm statistics, and a batch of 2."""
    path = SPECS_DIR / f"{name}.dln"
    model = dlc.load(path, **SMALL.get(name, {}), **VARIANTS[variant]).eval()
    randomise_batchnorm(model)
    torch.manual_seed(0)
    # the small images of tests/test_fused_specs.py: the same graph to capture, a fraction of the interpreter's time
    return model, tuple(spec_inputs(name, dlc.compile(path, **SMALL.get(name, {})).graph)["xs"])


def no_launches(model: torch.nn.Module) -> None:
    """Forget the kernel launches of ``model``'s module so far (the eager run's, under the interpreter)."""
    getattr(generated_module(model), "LAUNCHES", {}).clear()


def run(fn, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``fn(*args)`` as a tuple, with torch's generator reseeded (specs that sample draw the same numbers)."""
    torch.manual_seed(1)
    with torch.no_grad():
        return outputs(fn(*args))


def assert_close(got, expected) -> None:
    for a, b in zip(got, expected, strict=True):
        b = torch.as_tensor(b)
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= ATOL * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("name,variant", cases(export=True))
def test_export(name: str, variant: str) -> None:
    model, xs = model_and_inputs(name, variant)
    expected = run(model, xs)
    no_launches(model)
    program = torch.export.export(model, xs)
    assert_close(run(program.module(), xs), expected)
    assert_no_kernels(model)


def onnx_inputs(graph, batch: int, sizes: dict[str, int]) -> list[torch.Tensor]:
    """Random inputs of the graph's input types at ``batch`` and the symbols' ``sizes``: token ids below every
    vocabulary, padding masks with nothing masked (a fully masked row is NaN in both)."""
    vocab = min([n.attrs["vocab"] for n in graph.nodes if "vocab" in n.attrs], default=100)
    xs = []
    for _, v in graph.inputs:
        t = graph.types[v]
        shape = [batch] + [sizes[d] if isinstance(d, str) else d for d in t.shape]
        if t.dtype == "bool":
            xs.append(torch.zeros(shape, dtype=torch.bool))
        else:
            xs.append(torch.randint(0, vocab, shape) if t.dtype.startswith("int") else torch.randn(shape))
    return xs


def onnx_case(name: str) -> pytest.param:
    marks = [pytest.mark.slow] if name in SLOW or name in HEAVY_EXPORT else []
    if name in NOT_EXPORTABLE:
        return pytest.param(name, marks=marks, id=f"{name}-not-exportable")
    return pytest.param(name, marks=marks)


@pytest.mark.parametrize("name", [onnx_case(n) for n in SPECS])
def test_onnx(name: str, tmp_path: Path) -> None:
    path = SPECS_DIR / f"{name}.dln"
    compiled = dlc.compile(path, **SMALL.get(name, {}))
    graph = compiled.graph
    if name in NOT_EXPORTABLE:  # asserted to fail still: when it exports, move it out of NOT_EXPORTABLE
        with pytest.raises(DlcError) as info:
            dlc.export(compiled, tmp_path / f"{name}.onnx")
        assert not (tmp_path / f"{name}.onnx").exists()
        assert info.value.code == "export-unsupported" and NOT_EXPORTABLE[name] in info.value.message
        return
    model = compiled.instantiate().eval()
    randomise_batchnorm(model)
    done = dlc.export(compiled, tmp_path / f"{name}.onnx", state_dict=model.state_dict())
    proto = onnx.load(done.path)
    onnx.checker.check_model(proto)
    symbols = sorted({d for _, v in graph.inputs for d in graph.types[v].shape if isinstance(d, str)})
    evaluated = [n for n, _ in graph.outputs if n not in graph.training_outputs]
    # named inputs and outputs (training-only outputs left out), the batch axis and every symbol dynamic
    assert [i.name for i in proto.graph.input] == [n for n, _ in graph.inputs]
    assert [o.name for o in proto.graph.output] == evaluated == list(done.outputs)
    for name_, v in graph.inputs:
        assert done.inputs[name_] == ["batch", *graph.types[v].shape]
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    first = {s: FIRST_SYMBOL + i for i, s in enumerate(symbols)}
    for batch, sizes in ((BATCH, first), (BATCH + 1, {s: n + 3 for s, n in first.items()})):
        xs = onnx_inputs(graph, batch, sizes)
        expected = run(model, tuple(xs))
        got = session.run(None, {n: x.numpy() for (n, _), x in zip(graph.inputs, xs, strict=True)})
        got = tuple(torch.from_numpy(g) for g in got)
        if name not in RANDOM:  # ONNX Runtime draws other random numbers than torch
            assert_close(got, expected)
        else:
            assert [g.shape for g in got] == [e.shape for e in expected]


def test_docs_list_the_specs_that_do_not_export() -> None:
    """docs/export.md's table of the specs that do not export is NOT_EXPORTABLE, with the layers that stop them."""
    text = (SPECS_DIR.parent / "docs" / "export.md").read_text(encoding="utf-8").split("## What exports", 1)[1]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", text.split("\n## ", 1)[0], flags=re.M))
    assert set(rows) == set(NOT_EXPORTABLE)
    for name, layers in NOT_EXPORTABLE.items():
        for layer in re.findall(r"`\w+`", layers):
            assert layer in rows[name], (name, layer)


@pytest.mark.parametrize("name,variant", cases(export=False))
def test_compile_fullgraph(name: str, variant: str) -> None:
    model, xs = model_and_inputs(name, variant)
    expected = run(model, xs)
    no_launches(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: any graph break is an error
    # dynamo traces nn.LSTM / nn.GRU (of the plain module too) only with its experimental RNN support
    with torch._dynamo.config.patch(allow_rnn=True):
        assert_close(run(compiled, xs), expected)
    assert_no_kernels(model)


def test_eager_fused_module_still_runs_its_kernels() -> None:
    """Outside a trace the same fused module launches its kernels (the interpreter is on), and equals the trace."""
    model, xs = model_and_inputs("mlp", "fused-inference")
    program = torch.export.export(model, xs)
    assert_close(run(model, xs), run(program.module(), xs))
    assert generated_module(model).LAUNCHES, "the eager fused module took the unfused path"


def test_inductor_compiles_a_fused_optimised_module() -> None:
    """One real compile (inductor, on this CPU) of a fused, optimised convolutional spec."""
    model, xs = model_and_inputs("lenet5", "fused-inference")
    expected = run(model, xs)
    torch._dynamo.reset()
    assert_close(run(torch.compile(model, fullgraph=True), xs), expected)


class AtenLog(TorchDispatchMode):
    """Records the ATen ops that run under it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def aten_ops(model: torch.nn.Module, xs: tuple[torch.Tensor, ...], train: bool) -> list[str]:
    """The ATen ops of one forward in eval mode without gradients, or of a training step's forward and backward."""
    log = AtenLog()
    model.train(train)
    with torch.set_grad_enabled(train), log:
        loss = sum(y.float().square().mean() for y in outputs(model(*xs)))
        if train:
            loss.backward()
    return log.ops


# Specs with attention are not here: a fused module runs `attention` through scaled_dot_product_attention, on a CPU
# too (a PyTorch op, not a kernel that needs a fallback).
@pytest.mark.parametrize("name", ["resnet18", pytest.param("densenet121", marks=pytest.mark.slow),
                                  pytest.param("googlenet", marks=pytest.mark.slow), "mobilenet_v2", "mlp", "unet"])
def test_fallback_runs_the_plain_modules_ops(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no kernel can run (a CPU without the interpreter), a fused module runs exactly the ATen ops of the
    plain module, in eval mode and in a training step: so it costs what the plain module costs
    (benchmarks/fallback.py measures it; docs/benchmarks.md)."""
    plain, xs = model_and_inputs(name, "plain")
    fused, _ = model_and_inputs(name, "fused")
    fused.load_state_dict(plain.state_dict())
    monkeypatch.setattr(generated_module(fused), "TRITON_INTERPRET", False)  # as on a CPU without the interpreter
    if name in ("resnet18", "googlenet"):  # their convolutions and pools take 64x64 images as well as 224x224
        xs = (torch.randn(2, 3, 64, 64),)
    for train in (False, True):
        expected = aten_ops(plain, xs, train)
        assert aten_ops(fused, xs, train) == expected
    assert_no_kernels(fused)
