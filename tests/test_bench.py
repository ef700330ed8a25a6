"""benchmarks/bench.py without a GPU: the --gpu plan's budget and bandwidth arithmetic, its CPU dry run, the CPU
comparison's reference models; and what the U-Net measurement found (generated forward frees intermediates)."""

from __future__ import annotations

import sys
import weakref
from pathlib import Path

import pytest
import torch

import dlc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bandwidth  # noqa: E402
import bench  # noqa: E402
import references  # noqa: E402
from budget import Budget, OutOfTime  # noqa: E402


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---- budget ------------------------------------------------------------------------------------


def test_budget_admits_while_the_longest_unit_fits_and_names_what_it_drops():
    clock = FakeClock()
    budget = Budget(480, clock=clock)
    assert budget.admit("resnet50 fp32", first_estimate=30)      # 480 s left, nothing run yet: 30 s expected
    with budget.unit():
        clock.now += 200                                          # the unit took 200 s
    assert budget.left() == 280
    assert budget.admit("resnet50 bf16", first_estimate=30)      # 280 s >= 200 s
    with budget.unit():
        clock.now += 150
    assert budget.left() == 130
    assert not budget.admit("mobilenet_v2 fp32", first_estimate=30)  # 130 s < the longest unit, 200 s
    assert budget.dropped == ["mobilenet_v2 fp32: dropped, 130 s left of the 480 s budget and a unit takes about "
                              "200 s"]


def test_budget_first_estimate_applies_before_any_unit():
    clock = FakeClock()
    budget = Budget(20, clock=clock)
    assert not budget.admit("resnet50 fp32", first_estimate=30)
    assert budget.dropped[0].startswith("resnet50 fp32: dropped, 20 s left")


def test_budget_guard_stops_a_unit_at_the_deadline():
    budget = Budget(0.2)
    with pytest.raises(OutOfTime, match="the 0 s budget ran out"):
        with budget.guard():
            while True:                     # a unit that would never end (a hung compile)
                sum(range(1000))
    assert not isinstance(OutOfTime("x"), Exception)  # the harness's `except Exception` lets it through


# ---- bandwidth arithmetic ------------------------------------------------------------------------


def test_gbps_is_bytes_per_second_in_1e9():
    assert bandwidth.gbps(2_000_000_000, 1000.0) == pytest.approx(2.0)
    assert bandwidth.gbps(4 * (1 << 26) * 2, 0.1) == pytest.approx(5368.70912)  # a 256 MiB copy in 0.1 ms


def test_moved_bytes_counts_each_input_read_and_output_written_once():
    x, b = torch.zeros(10, dtype=torch.float32), torch.zeros(10, dtype=torch.bfloat16)
    assert bandwidth.moved_bytes((x, b), (torch.zeros(10),)) == 40 + 20 + 40


def test_each_chain_is_one_fused_kernel(tmp_path):
    for name, (inputs, expr) in bandwidth.CHAINS.items():
        path = tmp_path / "chain.dln"
        path.write_text(bandwidth.chain_spec(inputs, expr), encoding="utf-8")
        source = dlc.compile(path, fuse=True).source
        assert source.count("= ElementwiseKernel(") == 1, name


def test_bandwidth_rows_on_the_cpu():
    calls = []

    def measure(step):
        calls.append(step())
        return 2.0  # ms

    copy = bandwidth.copy_row(1024, torch.float32, "fp32", "cpu", measure)
    assert (copy.nbytes, copy.fused_ms, copy.plain_ms) == (2 * 1024 * 4, 2.0, None)
    rows = bandwidth.chain_rows(1024, torch.float32, "fp32", "cpu", measure)
    assert [r.name for r in rows] == list(bandwidth.CHAINS)
    two_inputs = next(r for r in rows if r.name == "add -> relu")
    assert two_inputs.nbytes == 3 * 1024 * 4   # x and b read, y written


# ---- command line ------------------------------------------------------------------------------


def test_gpu_without_cuda_says_to_use_the_dry_run(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --gpu would run")
    assert bench.main(["--gpu"]) == 1
    assert "--gpu: torch sees no CUDA device (--gpu --dry-run runs the same plan on the CPU)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dry-run"], "--dry-run goes with --gpu"),
    (["--gpu", "--dry-run", "--device", "cpu"], "--gpu chooses the device itself"),
    (["--gpu", "--dry-run", "--budget", "0"], "--budget must be positive"),
    (["--cpu-rewrites", "--threads", "-1"], "--threads must be positive"),
    (["--gpu", "--dry-run", "--variants", "optimized"], "unknown variant 'optimized'"),
    (["--cpu-rewrites", "--cold-only", "--no-cold"], "--cold-only goes with --cpu-rewrites, without --no-cold"),
])
def test_bad_options_are_one_line_errors(argv, message, capsys):
    assert bench.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and message in err


def test_gpu_plan_defaults():
    cfg = bench.resolve(bench.parse_args(["--gpu", "--dry-run"]))
    assert (cfg.device, cfg.batches, cfg.dtypes, cfg.modes) == ("cpu", [2], ["fp32", "bf16"], ["infer", "train"])
    assert cfg.variants == ["eager", "fused", "compile"] and cfg.budget == bench.GPU_BUDGET_S == 480
    assert [p.stem for p in cfg.specs] == ["mlp", "lenet5"] and not cfg.cold
    assert set(bench.GPU_SPECS) == {p.stem for p in (ROOT / "specs").glob("*.dln")}  # every spec, in an order


def test_cpu_plan_defaults():
    cfg = bench.resolve(bench.parse_args(["--cpu-rewrites"]))
    assert [p.stem for p in cfg.specs] == ["resnet50", "densenet121", "googlenet", "mobilenet_v2", "transformer"]
    assert cfg.batches == [1, 8] and cfg.threads == 1
    assert cfg.variants == ["eager", "reference", "optimized", "compile"]


def test_dry_run_prints_the_bandwidth_and_speed_tables(capsys):
    argv = ["--gpu", "--dry-run", "--specs", "mlp", "--variants", "eager,fused", "--dtypes", "fp32", "--repeat", "1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "Dry run on the CPU" in out
    assert "| device copy | fp32 | 16,384 |" in out
    for name in bandwidth.CHAINS:
        assert f"| {name} | fp32 | 16,384 |" in out
    assert "| mlp | 2 | fp32 | infer |" in out and "| mlp | 2 | fp32 | train |" in out
    assert "s of a 480 s budget" in out


def test_dry_run_past_its_budget_drops_the_specs_and_says_so(capsys):
    argv = ["--gpu", "--dry-run", "--specs", "mlp,lenet5", "--variants", "eager", "--dtypes", "fp32",
            "--repeat", "1", "--budget", "1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "| mlp | 2 |" not in out and "| lenet5 | 2 |" not in out
    assert "mlp fp32: dropped" in out or "stopped: the 1 s budget ran out" in out


# ---- CPU comparison: references --------------------------------------------------------------------


def test_densenet_names_follow_torchvision():
    assert (references._densenet_names("features.denseblock2.0.conv1.weight")
            == "features.denseblock2.denselayer1.conv1.weight")
    assert references._densenet_names("features.transition1.conv.weight") == "features.transition1.conv.weight"


def test_unet_twin_computes_what_the_spec_does():
    torch.manual_seed(0)
    model = bench.load_eager(ROOT / "specs" / "unet.dln").eval()
    twin = references.reference_like("unet", model).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-5, atol=1e-5)


def test_transformer_reference_is_nn_transformer_with_the_specs_masks():
    torch.manual_seed(0)
    model = dlc.load(ROOT / "specs" / "transformer.dln").eval()
    ref = references.reference_like("transformer", model).eval()
    assert isinstance(ref.inner, torch.nn.Transformer)
    src, tgt = torch.randn(2, 6, 512), torch.randn(2, 4, 512)
    src_pad, tgt_pad = torch.zeros(2, 6, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)
    src_pad[1, 4:] = True
    with torch.no_grad():
        torch.testing.assert_close(ref(src, tgt, src_pad, tgt_pad), model(src, tgt, src_pad, tgt_pad),
                                   rtol=1e-4, atol=1e-4)


def test_bool_inputs_are_padding_masks_with_nothing_masked():
    specs = bench.input_specs(ROOT / "specs" / "transformer.dln")
    masks = [s for s in specs if s.dtype == "bool"]
    assert [m.shape for m in masks] == [(32,), (32,)]
    made = bench.make_inputs(specs, 3, torch.float32, "cpu")
    assert made[2].dtype == torch.bool and made[2].shape == (3, 32) and not made[2].any()


# ---- the U-Net's cost: generated forward frees what it no longer reads ----------------------------------


def test_generated_forward_frees_intermediates_like_hand_written_code():
    """Every intermediate of a U-Net block was bound to a local named after its label until the block returned
    (conv1 = self.conv1(x), bn1 = self.bn1(conv1), ...): at batch 8, 7,136 minor page faults per call against
    the hand-written twin's 2,502. Now conv1's and bn1's outputs are freed before conv2 runs, and the transposed
    convolution's output once it is concatenated."""
    model = dlc.load(ROOT / "specs" / "unet.dln", size=16).eval()
    made: dict[str, weakref.ref] = {}
    alive: dict[str, list[str]] = {}

    def keep(name):
        return lambda module, args, out: made.__setitem__(name, weakref.ref(out))

    def check(name):
        return lambda module, args: alive.__setitem__(name, sorted(k for k, r in made.items() if r() is not None))

    model.enc1.conv1.register_forward_hook(keep("conv1"))
    model.enc1.bn1.register_forward_hook(keep("bn1"))
    model.enc1.conv2.register_forward_pre_hook(check("enc1.conv2"))
    model.dec1.up.register_forward_hook(keep("dec1.up"))
    model.dec1.conv.conv1.register_forward_pre_hook(check("dec1.conv.conv1"))
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16))
    assert alive == {"enc1.conv2": [], "dec1.conv.conv1": []}
