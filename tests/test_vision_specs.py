"""Vision specs written with the issue-10 language against torchvision: specs/mobilenet_v2.dln.

Weights are copied from torchvision's model with ``load_state_dict(strict=True)`` (same names, same shapes),
so any output difference is a difference in the computation. Batchnorm statistics are randomised first so that
a wrong normalisation could not hide behind identity statistics.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import dlc
from dlc.compiler.passes import total_params

try:
    import reference_models as ref
except ImportError:  # pytest run with --import-mode=importlib: tests/ is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference_models as ref

SPECS = Path(__file__).resolve().parent.parent / "specs"
MOBILENET = SPECS / "mobilenet_v2.dln"


@pytest.fixture(scope="module")
def mobilenet_pair():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(2)
    tv = torchvision.models.mobilenet_v2(weights=None)
    ref.randomize_batchnorm(tv)
    m = dlc.load(MOBILENET)
    m.load_state_dict(tv.state_dict(), strict=True)
    return m, tv


def test_mobilenet_v2_parameter_count(mobilenet_pair):
    m, tv = mobilenet_pair
    assert ref.n_params(tv) == 3_504_872
    assert ref.n_params(m) == ref.n_params(tv)
    assert total_params(dlc.compile(MOBILENET).graph) == ref.n_params(tv)


def test_mobilenet_v2_modules_are_torchvisions(mobilenet_pair):
    """Every torch.nn module of torchvision's model has a twin of the same class under the same name."""
    m, tv = mobilenet_pair
    ours = dict(m.named_modules())
    for name, mod in tv.named_modules():
        if name and type(mod).__module__.startswith("torch.nn.modules"):
            assert name in ours, f"torchvision module {name} has no twin"
            assert type(ours[name]) is type(mod), f"{name}: {type(ours[name]).__name__} vs {type(mod).__name__}"


def test_mobilenet_v2_eval_matches_torchvision(mobilenet_pair):
    m, tv = mobilenet_pair
    m.eval(), tv.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, want = m(x), tv(x)
    assert got.shape == (2, 1000)
    ref.assert_close(got, want, atol=1e-4, what="mobilenet_v2 logits")


def test_mobilenet_v2_train_mode_matches_torchvision_at_a_smaller_size(mobilenet_pair):
    """In training (batch statistics, dropout off) at 64x64: the logits and updated running statistics agree."""
    _, tv = mobilenet_pair
    tv = copy.deepcopy(tv)
    tv.classifier[0].p = 0.0
    m = dlc.load(MOBILENET, size=64, dropout=0.0)
    m.load_state_dict(tv.state_dict(), strict=True)
    m.train(), tv.train()
    x = torch.randn(4, 3, 64, 64)
    ref.assert_close(m(x), tv(x), atol=1e-4, what="mobilenet_v2 logits (train mode)")
    tv_buffers = dict(tv.named_buffers())
    for k, b in m.named_buffers():
        assert torch.allclose(b.double(), tv_buffers[k].double(), atol=1e-5), f"buffer {k} after a training step"
