"""The standing fuzzer (tests/fuzzing.py) in CI: a bounded run from a fixed seed, and the saved regressions.

``DLC_FUZZ_SECONDS`` sets how long the run lasts (default 30). Every case that the fuzzer ever reported and
that was fixed lives on in ``tests/fuzz_regressions/`` (a folder as the fuzzer saves it: the spec files and
``finding.json``) and is replayed here through every stage, the forward pass included.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import fuzzing

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"
SECONDS = float(os.environ.get("DLC_FUZZ_SECONDS", "30"))


def _regressions() -> list[Path]:
    return sorted(p for p in REGRESSIONS.iterdir() if (p / "finding.json").is_file()) if REGRESSIONS.is_dir() else []


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    r = fuzzing.Runner(tmp_path_factory.mktemp("fuzz-replay"), hang=20.0, forward_timeout=120.0)
    yield r
    r.stop()


@pytest.mark.slow
@pytest.mark.parametrize("folder", _regressions(), ids=lambda p: p.name)
def test_regression(runner, folder):
    result = runner.run(fuzzing.load_case(folder))
    assert result["finding"] is None, f"{folder.name}: {result['finding']}"


def test_regressions_exist():
    assert len(_regressions()) >= 5, "the fixed findings are kept as regressions"


def test_mutations_reach_past_the_parser():
    """The mutations are grammar-aware: many mutants still parse, and every mutation kind changes the text."""
    from dlc.pipeline import build_graph  # noqa: F401 - the import the fuzzer's cases need
    from dlc.diagnostics import DlcError
    from dlc.grammar.parser import parse

    seeds = fuzzing.load_seeds()
    assert any(s.name == "resnet18.dln" for s in seeds) and any(s.name.startswith("language.md:") for s in seeds)
    rng = random.Random(7)
    parsed = changed = 0
    for _ in range(400):
        seed = rng.choice(seeds)
        what, text = fuzzing.mutate(seed.text, rng, [s.text for s in seeds])
        changed += text != seed.text
        try:
            parse(text, "net.dln")
            parsed += 1
        except DlcError:
            pass
    assert changed > 380
    assert parsed > 100, parsed


@pytest.mark.slow
def test_fuzz_bounded_run(tmp_path):
    """Fuzz every spec and docs example for DLC_FUZZ_SECONDS: no crash, hang, bad diagnostic or wrong acceptance."""
    report = fuzzing.fuzz(SECONDS, seed=int(os.environ.get("DLC_FUZZ_SEED", "0")), out=tmp_path / "findings")
    print(report.text())
    assert report.cases > 100, report.text()
    assert report.outcomes.get("ok", 0) > 10, "cases must reach the generated module"
    assert not report.findings, report.text()


@pytest.mark.slow
def test_generated_specs(tmp_path_factory):
    """Well-formed specs drawn by Hypothesis from the op registry: a clean diagnostic, or a network that runs."""
    from hypothesis import HealthCheck, given, settings

    from spec_strategies import specs

    workdir = tmp_path_factory.mktemp("generated")
    outcomes: dict[str, int] = {}

    @settings(max_examples=int(os.environ.get("DLC_HYPOTHESIS_EXAMPLES", "300")), deadline=None, database=None,
              suppress_health_check=list(HealthCheck),
              derandomize=os.environ.get("DLC_HYPOTHESIS_RANDOM") is None)
    @given(specs())
    def check(text: str) -> None:
        case = fuzzing.Case("hypothesis", [], {"net.dln": text}, "net.dln", {})
        result = fuzzing.run_case(case, workdir)
        outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1
        assert result["finding"] is None, f"{result['finding']}\n--- spec ---\n{text}"

    check()
    print(outcomes)
    assert outcomes.get("ok", 0) >= 30, outcomes  # the generator reaches the forward pass, not only diagnostics
