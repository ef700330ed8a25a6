"""Kernels on the real Triton compiler (backends/triton/check.py, ``dlc compile --fuse --check-kernels``).

The signatures the check compiles with must be those the generated kernels declare, for every spec (no triton
needed). The command prints a table and stays free of torch and triton in its own process; a kernel that does
not compile is a diagnostic at the layer that runs it. The slow tests (one per dtype and target, so that
pytest-xdist spreads them) compile every distinct kernel of every spec, forward and backward (the recurrent gate
kernels of --fused-recurrent too), for CUDA targets without a GPU, and assert that elementwise, row and recurrent
kernels never spill at the shipped block sizes.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlc.backends.torch.emit import emit_module
from dlc.backends.triton import check
from dlc.cli import main
from dlc.pipeline import build_graph

from conftest import write_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.dln"))
DTYPES, CAPABILITIES = ("float32", "float16", "bfloat16"), (80, 90)
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

SMALL = """network Small {
    input x: [8, 16]
    output y = x -> relu -> sigmoid
}
"""


def _functions(text: str) -> dict[str, list[str]]:
    """The parameter names of every function a generated module defines."""
    return {f.name: [a.arg for a in f.args.args] for f in ast.walk(ast.parse(text)) if isinstance(f, ast.FunctionDef)}


@pytest.mark.parametrize("optimize", [None, "inference"])
def test_signatures_are_those_the_generated_kernels_declare(tmp_path, optimize):
    kinds = set()
    for spec in SPECS:
        g = build_graph(spec, optimize=optimize)
        functions = _functions(emit_module(g, fuse=True, channels_last=optimize == "inference"))
        jobs, uses = check.jobs(g, "module.py", channels_last=optimize == "inference")
        for job in jobs:
            assert [p for p, _ in job.params] == functions[f"{job.kernel}_{job.direction}"], (spec.name, job.kernel)
            assert job.kernel in uses and uses[job.kernel].programs, (spec.name, job.kernel)
            kinds.add(job.kind)
    assert kinds == {"elementwise", "linear", "row"}


def test_launch_sizes_at_batch_32_with_symbolic_sizes_128(tmp_path):
    path = write_spec(tmp_path, """network L {
    input x: [T, 24]
    input y: [6, 10, 10]
    output a = x -> fc: linear(40) -> relu
    output b = (x * 2) -> softmax
    output c = y -> conv: conv2d(4, k=3) -> sigmoid
}
""")
    jobs, uses = check.jobs(build_graph(path), "module.py")
    # a linear kernel's product is M x N, a row kernel's rows hold 24 columns, an elementwise kernel covers
    # the convolution's 4 x 8 x 8 output
    assert {k: (u.programs, u.n_cols, u.span.line) for k, u in uses.items()} == {
        "fused_linear_relu": ([(32 * 128, 40)], set(), 4),
        "fused_scale_softmax": ([(32 * 128,)], {24}, 5),
        "fused_bias_sigmoid": ([(32 * 4 * 8 * 8,)], set(), 6),
    }
    assert len(jobs) == 3 * 2 * 3 * 2


@needs_triton
def test_check_kernels_prints_the_table_without_importing_torch_or_triton(tmp_path):
    path = write_spec(tmp_path, SMALL)
    script = textwrap.dedent("""
        import io, sys, contextlib
        import dlc.cli
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = dlc.cli.main(["compile", "--fuse", "--check-kernels", sys.argv[1], "-o", sys.argv[2]])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "triton"))
        print(rc, heavy[:3])
        print(err.getvalue())
    """)
    out = tmp_path / "small.py"
    r = subprocess.run([sys.executable, "-c", script, str(path), str(out)], capture_output=True, text=True, cwd=ROOT,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    status, _, table = r.stdout.partition("\n")
    assert status == "0 []", r.stdout  # exit 0; the compiles ran in worker processes
    rows = [line.split() for line in table.splitlines() if line.startswith("fused_")]
    # one kernel, forward and backward, three dtypes, two targets
    assert sorted((r[2], r[3], r[4]) for r in rows) == sorted(
        (d, t, f"sm_{cc}") for d in ("fwd", "bwd") for t in ("fp32", "fp16", "bf16") for cc in (80, 90))
    for row in rows:
        kernel, kind, _, _, _, regs, spills, smem, warps, block, programs = row
        assert (kernel, kind, spills, smem, warps, block) == ("fused_relu_sigmoid", "elementwise", "0", "0", "4",
                                                            "1024")
        assert 0 < int(regs) <= 255
        assert programs == "4"  # 32 x 8 x 16 elements in blocks of 1024
    assert "batch 32" in table
    assert out.read_text(encoding="utf-8").count("def fused_relu_sigmoid_forward(") == 1


def test_check_kernels_needs_fuse(tmp_path, capsys):
    assert main(["compile", "--check-kernels", str(write_spec(tmp_path, SMALL))]) == 2
    assert "--check-kernels compiles the kernels --fuse generates: add --fuse" in capsys.readouterr().err


def test_a_network_without_kernels_says_so(tmp_path, capsys):
    path = write_spec(tmp_path, "network R {\n    input x: [T, 8]\n    output y = x -> lstm(16)\n}\n")
    assert main(["compile", "--fuse", "--check-kernels", str(path), "-o", str(tmp_path / "r.py")]) == 0
    assert "no kernels: no chain of this network fuses" in capsys.readouterr().err


def test_recurrent_step_kernels_are_checked_in_each_merge_mode(tmp_path):
    """With --fused-recurrent the LSTM and GRU step kernels join: each way a step writes its output (a merged
    bidirectional layer's skipping and merging directions too), typed as the runtime passes its buffers."""
    own = write_spec(tmp_path, "network G {\n    input x: [T, 8]\n"
                               "    output y = x -> bidirectional(gru(16), merge=sum) -> lstm(8)\n}\n")
    seen = set()
    for spec in SPECS + [own]:
        g = build_graph(spec)
        functions = _functions(emit_module(g, fuse=True, fused_recurrent=True))
        jobs, uses = check.recurrent_jobs(g, "module.py")
        for job in jobs:
            params = functions[f"{job.kernel}_{'fwd' if job.direction == 'forward' else 'bwd'}_kernel"]
            types = dict(check.gate_signature(params))
            assert types["B"] == types["H"] == "i32" and types["MERGE"] == "constexpr"
            seen.add((job.kernel, dict(job.constexprs)["MERGE"]))
            assert uses[job.kernel].programs
    assert seen == {("_rnn_lstm", "own"), ("_rnn_gru", "own"), ("_rnn_gru", "skip"), ("_rnn_gru", "sum")}
    lstm = dict(check.gate_signature(_functions(emit_module(build_graph(own), fuse=True, fused_recurrent=True))[
        "_rnn_lstm_fwd_kernel"]))
    # the cell state and the gates are kept in float32 whatever the layer's dtype; h and the output are not
    assert (lstm["c_prev_ptr"], lstm["c_ptr"], lstm["gate_ptr"]) == (check.COMPUTE,) * 3
    assert (lstm["xp_ptr"], lstm["h_ptr"], lstm["out_ptr"]) == (check.ACT,) * 3


def test_check_kernels_without_triton_says_so(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else find_spec(name, *a))
    out = tmp_path / "out.py"
    assert main(["compile", "--fuse", "--check-kernels", str(write_spec(tmp_path, SMALL)), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "dlc: error: --check-kernels needs triton" in err and "Traceback" not in err
    assert not out.exists()


@needs_triton
def test_a_kernel_that_does_not_compile_is_a_diagnostic_at_its_layer(tmp_path, capsys, monkeypatch):
    """A compile error is a bug in dlc, but the user sees which kernel failed, where it runs and Triton's
    reason: a signature made wrong on purpose (the element count a pointer) stands for such a bug."""
    signatures = check.signatures

    def broken(g, spec):
        return {d: ([(p, "*fp32" if p == "n" else t) for p, t in params], c)
                for d, (params, c) in signatures(g, spec).items()}

    monkeypatch.setattr(check, "signatures", broken)
    monkeypatch.setattr(check, "DTYPES", ("float32",))
    monkeypatch.setattr(check, "CAPABILITIES", (90,))
    out = tmp_path / "out.py"
    assert main(["compile", "--fuse", "--check-kernels", str(write_spec(tmp_path, SMALL)), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "net.dln:3:29: error[kernel-compile]: kernel `fused_relu_sigmoid` (forward, fp32, sm_90) does not " \
           "compile with Triton: " in err, err
    assert "invalid operands of type pointer<fp32>" in err and "= note: Triton said:" in err
    assert "= hint: this is a bug in dlc's kernel generator" in err
    assert "Traceback" not in err and not out.exists()


# ---- every kernel of every spec ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def every_job(tmp_path_factory: pytest.TempPathFactory) -> list[check.Job]:
    """Every kernel of every spec (plain, inference-optimised, and the recurrent step kernels of
    --fused-recurrent), forward and backward, at every dtype and target, as the command lists them."""
    folder = tmp_path_factory.mktemp("modules")
    jobs: list[check.Job] = []
    for i, spec in enumerate(SPECS):
        for optimize in (None, "inference"):
            g = build_graph(spec, optimize=optimize)
            module = folder / f"m{i}_{optimize}.py"
            module.write_text(emit_module(g, fuse=True, channels_last=optimize == "inference"), encoding="utf-8")
            jobs += check.jobs(g, str(module), channels_last=optimize == "inference")[0]
        g = build_graph(spec)
        module = folder / f"m{i}_recurrent.py"
        module.write_text(emit_module(g, fuse=True, fused_recurrent=True), encoding="utf-8")
        jobs += check.recurrent_jobs(g, str(module))[0]
    return jobs


def test_the_slow_test_covers_every_dtype_and_target():
    """The slow test below is split by dtype and target (pytest-xdist spreads the parts): together they compile
    for every dtype and target the command does."""
    assert (check.DTYPES, check.CAPABILITIES) == (DTYPES, CAPABILITIES)


# each distinct kernel of all the specs is compiled once per dtype and target (see check.Job.key)
@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cc", CAPABILITIES)
def test_every_kernel_of_every_spec_compiles_for_cuda_without_spills(every_job: list[check.Job], dtype: str, cc: int,
                                                                     tmp_path):
    jobs = [j for j in every_job if (j.dtype, j.cc) == (dtype, cc)]
    results = check.run(jobs, workers=1, cache=str(tmp_path / "cache"))
    failed = [(r.job.kernel, r.job.direction, r.error) for r in results if r.error]
    assert not failed, failed[:3]
    spilled = [(r.job.kernel, r.job.direction, r.spills) for r in results
               if r.job.kind in ("elementwise", "row", "recurrent") and r.spills]
    assert not spilled, spilled
    compiled = {(r.job.key()[0], r.job.direction) for r in results if not r.skipped}
    assert {d for _, d in compiled} == {"forward", "backward"} and len(compiled) == 2 * len({k for k, _ in compiled})
