"""Semantic tier: modules generated from specs/ compute the same numbers as trusted implementations.

Trusted implementations are torchvision (resnet18, resnet50, googlenet) and the hand-written torch.nn twins in
tests/reference_models.py (the other specs). Weights are copied from one model to the other, so any
difference is a difference in the computation. Tolerances (stated per test):

- float32 forward passes: max abs diff <= 1e-5 (both sides run the same kernels on the same weights;
  the outputs are checked to be far from zero so the comparison is not trivial);
- float64 gradients: ``allclose(atol=1e-5, rtol=1e-5)`` (in practice they agree to ~1e-12).

Every test seeds torch (autouse fixture). Tests taking more than ~5 s are marked ``slow``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import dlc
from dlc.compiler.passes import total_params

try:
    import reference_models as ref
except ImportError:  # pytest run with --import-mode=importlib: tests/ is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference_models as ref

SPECS = Path(__file__).resolve().parent.parent / "specs"

ATOL = 1e-5          # float32 forward passes
GRAD_ATOL = 1e-5     # float64 gradients


def spec(name: str) -> Path:
    return SPECS / f"{name}.dln"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


n_params = ref.n_params


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    return (a - b).abs().max().item()


def assert_close(got: torch.Tensor, want: torch.Tensor, atol: float = ATOL, what: str = "output") -> None:
    ref.assert_close(got, want, atol, what)


randomize_batchnorm = ref.randomize_batchnorm


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Load ``src``'s state_dict into ``dst`` by name, strictly (so the names must match too)."""
    dst.load_state_dict(src.state_dict(), strict=True)


def copy_weights_by_order(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters and buffers in registration order, checking counts and shapes."""
    s, d = list(src.state_dict().items()), list(dst.state_dict().items())
    assert len(s) == len(d), f"{len(s)} tensors vs {len(d)}: {[k for k, _ in s]} / {[k for k, _ in d]}"
    with torch.no_grad():
        for (ks, vs), (kd, vd) in zip(s, d, strict=True):
            assert vs.shape == vd.shape, f"{ks} {tuple(vs.shape)} -> {kd} {tuple(vd.shape)}"
            vd.copy_(vs)


def assert_grads_match(got: nn.Module, want: nn.Module, atol: float = GRAD_ATOL, by_order: bool = False) -> None:
    """Every parameter of ``got`` has a gradient, equal to the matching parameter's in ``want``."""
    gp = list(got.named_parameters())
    wp = list(want.named_parameters())
    pairs = list(zip(gp, wp, strict=True)) if by_order else [((k, p), (k, dict(wp)[k])) for k, p in gp]
    assert len(gp) == len(wp)
    nonzero = 0
    for (kg, pg), (kw, pw) in pairs:
        assert pg.grad is not None, f"no gradient for {kg}"
        assert pw.grad is not None, f"reference has no gradient for {kw}"
        assert torch.allclose(pg.grad, pw.grad, atol=atol, rtol=1e-5), \
            f"gradient of {kg}: max abs diff {max_diff(pg.grad, pw.grad):.3g}"
        nonzero += bool(pg.grad.abs().max() > 0)
    assert nonzero >= len(gp) - 1, "most gradients are zero: the comparison is trivial"


# ---- 1. ResNet-18 vs torchvision --------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet_pair():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)
    randomize_batchnorm(tv)
    m = dlc.load(spec("resnet18"))
    m.load_state_dict(tv.state_dict(), strict=True)
    return m, tv


def test_resnet18_parameter_count(resnet_pair):
    m, tv = resnet_pair
    assert n_params(tv) == 11_689_512
    assert n_params(m) == n_params(tv)
    assert total_params(dlc.compile(spec("resnet18")).graph) == n_params(tv)


def test_resnet18_eval_matches_torchvision(resnet_pair):
    m, tv = resnet_pair
    m.eval(), tv.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, want = m(x), tv(x)
    assert got.shape == (2, 1000)
    assert_close(got, want, what="resnet18 logits")          # max abs diff <= 1e-5


@pytest.mark.slow
def test_resnet18_train_gradients_match_torchvision(resnet_pair):
    """Train mode (batch statistics), float64: every parameter's gradient and the updated running
    statistics equal torchvision's (atol 1e-5)."""
    m0, tv0 = resnet_pair
    m, tv = copy.deepcopy(m0).double().train(), copy.deepcopy(tv0).double().train()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    w = torch.randn(2, 1000, dtype=torch.float64)
    (m(x) * w).sum().backward()
    (tv(x) * w).sum().backward()
    assert_grads_match(m, tv)
    for (k, b), (_, bt) in zip(m.named_buffers(), tv.named_buffers(), strict=True):
        assert torch.allclose(b.double(), bt.double(), atol=1e-10), f"buffer {k} after a training step"


# ---- 1b. ResNet-50 (bottleneck blocks) vs torchvision ------------------------------------------


@pytest.fixture(scope="module")
def resnet50_pair():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    tv = torchvision.models.resnet50(weights=None)
    randomize_batchnorm(tv)
    m = dlc.load(spec("resnet50"))
    m.load_state_dict(tv.state_dict(), strict=True)
    return m, tv


def test_resnet50_parameter_count(resnet50_pair):
    m, tv = resnet50_pair
    assert n_params(tv) == 25_557_032
    assert n_params(m) == n_params(tv)
    assert total_params(dlc.compile(spec("resnet50")).graph) == n_params(tv)


def test_resnet50_eval_matches_torchvision(resnet50_pair):
    """Eval mode with randomised batchnorm statistics: the stride sits on the 3x3 convolution (v1.5),
    otherwise the logits would differ. Max abs diff <= 1e-5."""
    m, tv = resnet50_pair
    m.eval(), tv.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, want = m(x), tv(x)
    assert got.shape == (2, 1000)
    assert_close(got, want, what="resnet50 logits")


@pytest.mark.slow
def test_resnet50_train_gradients_match_torchvision(resnet50_pair):
    """Train mode (batch statistics), float64: every parameter's gradient and the updated running
    statistics equal torchvision's (atol 1e-5)."""
    m0, tv0 = resnet50_pair
    m, tv = copy.deepcopy(m0).double().train(), copy.deepcopy(tv0).double().train()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    w = torch.randn(2, 1000, dtype=torch.float64)
    (m(x) * w).sum().backward()
    (tv(x) * w).sum().backward()
    assert_grads_match(m, tv)
    for (k, b), (_, bt) in zip(m.named_buffers(), tv.named_buffers(), strict=True):
        assert torch.allclose(b.double(), bt.double(), atol=1e-10), f"buffer {k} after a training step"


# ---- 2. GoogLeNet vs torchvision --------------------------------------------------------------


@pytest.fixture(scope="module")
def googlenet_pair():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(2)
    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    randomize_batchnorm(tv)
    m = dlc.load(spec("googlenet"))
    m.load_state_dict(tv.state_dict(), strict=True)
    return m, tv


def test_googlenet_parameter_count(googlenet_pair):
    m, tv = googlenet_pair
    assert n_params(tv) == 13_004_888
    assert n_params(m) == n_params(tv)


def test_googlenet_eval_matches_torchvision(googlenet_pair):
    """In eval mode both compute the logits only (the side classifiers are outputs of training mode): equal to
    max abs diff <= 1e-5."""
    m, tv = googlenet_pair
    m.eval(), tv.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, want = m(x), tv(x)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 1000)
    assert_close(got, want, what="googlenet logits")


def test_googlenet_training_outputs_match_torchvision(googlenet_pair):
    """In training mode (batch statistics, dropout off) the module returns (logits, aux1, aux2) in `output` order;
    torchvision returns GoogLeNetOutputs(logits, aux_logits2, aux_logits1). Equal to 1e-4 each, at 96x96 (the
    side classifiers pool to 4x4 whatever the size)."""
    _, tv = googlenet_pair
    tv = copy.deepcopy(tv)
    tv.dropout.p = 0.0
    tv.aux1.dropout.p = tv.aux2.dropout.p = 0.0
    m = dlc.load(spec("googlenet"), dropout=0.0, dropout_aux=0.0)
    m.load_state_dict(tv.state_dict(), strict=True)
    m.train(), tv.train()
    x = torch.randn(4, 3, 96, 96)
    got, want = m(x), tv(x)
    assert isinstance(got, tuple) and len(got) == 3
    assert_close(got[0], want.logits, atol=1e-4, what="googlenet logits (training)")
    assert_close(got[1], want.aux_logits1, atol=1e-4, what="googlenet aux1")
    assert_close(got[2], want.aux_logits2, atol=1e-4, what="googlenet aux2")
    assert max_diff(got[1], got[2]) > 1e-3              # the two side classifiers really differ


# ---- 3. BiLSTM tagger vs nn.LSTM(bidirectional=True) with Keras merge semantics -----------------

TAGGER_KW = dict(vocab=50, tags=7)
MERGES = ["concat", "sum", "mul", "ave"]


def tagger_pair(merge: str, return_sequences: bool):
    m = dlc.load(spec("bilstm_tagger"), merge=merge, return_sequences=return_sequences, **TAGGER_KW)
    r = ref.Tagger(merge=merge, return_sequences=return_sequences, **TAGGER_KW)
    copy_weights(m, r)
    return m, r


def test_reference_backward_half_is_the_reversed_pass():
    """Validates the reference itself: the backward half of nn.LSTM(bidirectional=True) at time t is a
    plain LSTM run over the reversed sequence, re-aligned; so its final output sits at t = 0."""
    bi = nn.LSTM(5, 4, bidirectional=True, batch_first=True)
    back = nn.LSTM(5, 4, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(back, name).copy_(getattr(bi, name + "_reverse"))
    x = torch.randn(3, 6, 5)
    with torch.no_grad():
        seq, _ = bi(x)
        rev, (h, _) = back(x.flip(1))
    assert torch.allclose(seq[..., 4:], rev.flip(1), atol=1e-6)
    assert torch.allclose(seq[:, 0, 4:], h[-1], atol=1e-6)


@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("merge", MERGES)
def test_tagger_matches_keras_bidirectional(merge, return_sequences):
    m, r = tagger_pair(merge, return_sequences)
    m.eval(), r.eval()
    tokens = torch.randint(0, TAGGER_KW["vocab"], (3, 9))
    with torch.no_grad():
        got, want = m(tokens), r(tokens)
        seq = r.features(tokens)
    shape = (3, 9, TAGGER_KW["tags"]) if return_sequences else (3, TAGGER_KW["tags"])
    assert got.shape == shape
    assert_close(got, want, what=f"tagger merge={merge} return_sequences={return_sequences}")

    # The comparison would catch a wrong slice: plausible mistakes give clearly different outputs.
    u = r.units
    if return_sequences:
        wrong = {"backward half not re-aligned in time": (seq[..., :u], seq[..., u:].flip(1))}
    else:
        wrong = {"backward half at t = T-1": (seq[:, -1, :u], seq[:, -1, u:]),
                 "forward half at t = 0": (seq[:, 0, :u], seq[:, 0, u:])}
        if merge == "concat":
            wrong["halves swapped"] = (seq[:, 0, u:], seq[:, -1, :u])
    for why, (f, b) in wrong.items():
        with torch.no_grad():
            bad = r.out(ref.merge_halves(f, b, merge))
        assert max_diff(bad, want) > 1e-3, f"a reference with {why} would not be told apart"


@pytest.mark.parametrize("merge,return_sequences", [("concat", True), ("sum", False), ("mul", True),
                                                    ("ave", False), ("concat", False)])
def test_tagger_gradients_match_reference(merge, return_sequences):
    """float64, train mode: every parameter's gradient equals the reference's (atol 1e-5)."""
    m, r = tagger_pair(merge, return_sequences)
    m.double().train(), r.double().train()
    tokens = torch.randint(0, TAGGER_KW["vocab"], (2, 6))
    w = torch.randn_like(r(tokens))
    (m(tokens) * w).sum().backward()
    (r(tokens) * w).sum().backward()
    assert_grads_match(m, r)


# ---- 4. Seq2Seq vs an nn.LSTM / nn.MultiheadAttention twin ------------------------------------

S2S_KW = dict(src_vocab=40, tgt_vocab=30, hidden=32)


@pytest.fixture(scope="module")
def seq2seq_pair():
    torch.manual_seed(4)
    m = dlc.load(spec("seq2seq"), **S2S_KW)
    r = ref.Seq2Seq(**S2S_KW)
    copy_weights(m, r)
    return m.eval(), r.eval()


@pytest.mark.parametrize("batch,src_len,tgt_len", [(2, 7, 5), (3, 3, 9), (1, 1, 4)])
def test_seq2seq_matches_reference(seq2seq_pair, batch, src_len, tgt_len):
    m, r = seq2seq_pair
    src = torch.randint(0, S2S_KW["src_vocab"], (batch, src_len))
    tgt = torch.randint(0, S2S_KW["tgt_vocab"], (batch, tgt_len))
    with torch.no_grad():
        got, want = m(src, tgt), r(src, tgt)
    assert got.shape == (batch, tgt_len, S2S_KW["tgt_vocab"])
    assert_close(got, want, what=f"seq2seq S={src_len} T={tgt_len}")


def test_seq2seq_uses_the_encoder_state(seq2seq_pair):
    """Non-trivial: the same twin *without* the state hand-over gives different numbers, and the
    output depends on the source sequence."""
    m, r = seq2seq_pair
    no_state = ref.Seq2Seq(**S2S_KW, hand_over_state=False).eval()
    copy_weights(r, no_state)
    src = torch.randint(0, S2S_KW["src_vocab"], (2, 6))
    src2 = torch.randint(0, S2S_KW["src_vocab"], (2, 6))
    tgt = torch.randint(0, S2S_KW["tgt_vocab"], (2, 5))
    with torch.no_grad():
        got = m(src, tgt)
        assert max_diff(got, no_state(src, tgt)) > 1e-3
        assert max_diff(got, m(src2, tgt)) > 1e-3


def test_seq2seq_default_parameters_count():
    m = dlc.load(spec("seq2seq"))
    r = ref.Seq2Seq(src_vocab=8000, tgt_vocab=8000, hidden=256)
    assert n_params(m) == n_params(r)
    copy_weights(m, r)


# ---- 5. small networks vs torch.nn twins ------------------------------------------------------


def test_mlp_matches_reference():
    m = dlc.load(spec("mlp"))
    r = ref.MLP()
    copy_weights(m, r)
    assert n_params(m) == n_params(r) == 669_706
    x = torch.randn(4, 1, 28, 28)
    m.eval(), r.eval()
    with torch.no_grad():
        assert_close(m(x), r(x), what="mlp eval")
    # train mode: dropout is active; with the same RNG state both draw the same masks
    m.train(), r.train()
    with torch.no_grad():
        torch.manual_seed(7)
        got = m(x)
        torch.manual_seed(7)
        want = r(x)
        assert_close(got, want, what="mlp train (same dropout seed)")
        assert max_diff(got, m(x)) > 1e-3          # dropout really is on in train mode


def test_lenet5_matches_reference():
    m = dlc.load(spec("lenet5"))
    r = ref.LeNet5()
    copy_weights(m, r)
    assert n_params(m) == n_params(r) == 61_706
    x = torch.randn(4, 1, 32, 32)
    for mode in (False, True):                      # no dropout / batchnorm: both modes are deterministic
        m.train(mode), r.train(mode)
        with torch.no_grad():
            assert_close(m(x), r(x), what=f"lenet5 train={mode}")


def test_autoencoder_matches_reference():
    m = dlc.load(spec("autoencoder"))
    r = ref.AutoEncoder()
    randomize_batchnorm(r)
    copy_weights(r, m)
    assert n_params(m) == n_params(r)
    x = torch.rand(4, 1, 28, 28)
    m.eval(), r.eval()
    with torch.no_grad():
        got, want = m(x), r(x)
    assert got.shape == (4, 1, 28, 28)
    assert want.std() > 1e-3                        # sigmoid output, not saturated: non-trivial
    assert max_diff(got, want) <= ATOL
    # train mode: batchnorm uses batch statistics (deterministic) and updates running stats
    m.train(), r.train()
    with torch.no_grad():
        got, want = m(x), r(x)
    assert max_diff(got, want) <= ATOL
    for (k, b), (_, br) in zip(m.named_buffers(), r.named_buffers(), strict=True):
        assert torch.allclose(b.float(), br.float(), atol=1e-6), f"buffer {k} after a training step"


@pytest.fixture(scope="module")
def siamese_pair():
    torch.manual_seed(5)
    m = dlc.load(spec("siamese"))
    r = ref.Siamese()
    copy_weights_by_order(m, r)                    # the head is unlabelled in the spec
    return m, r


def test_siamese_matches_reference(siamese_pair):
    m, r = siamese_pair
    m.eval(), r.eval()
    a, b = torch.randn(2, 1, 105, 105), torch.randn(2, 1, 105, 105)
    with torch.no_grad():
        got, want = m(a, b), r(a, b)
        swapped = m(b, a)
    assert got.shape == (2, 1)
    assert_close(got, want, what="siamese")
    assert_close(swapped, got, what="siamese with a, b swapped")     # |f(a) - f(b)| is symmetric


@pytest.mark.slow
def test_siamese_tower_is_shared(siamese_pair):
    """The tower exists once: parameters counted once, and its gradient is the sum of the gradients of
    both applications (checked against a twin with two separate towers holding equal weights)."""
    m, _ = siamese_pair
    tower = [k for k, _ in m.named_children() if isinstance(getattr(m, k), nn.Module)
             and n_params(getattr(m, k)) > 1000]
    assert len(tower) == 1
    tower_params = n_params(getattr(m, tower[0]))
    assert n_params(m) == tower_params + (128 + 1) == 2_374_721
    assert n_params(m) == n_params(ref.Siamese())

    md = copy.deepcopy(m).double().train()
    single = ref.Siamese().double()
    copy_weights_by_order(md, single)
    two = ref.Siamese(shared=False).double()
    for part in (two.tower, two.tower_b):
        part.load_state_dict(single.tower.state_dict())
    two.head.load_state_dict(single.head.state_dict())
    a = torch.randn(2, 1, 105, 105, dtype=torch.float64)
    b = torch.randn(2, 1, 105, 105, dtype=torch.float64)
    md(a, b).sum().backward()
    two(a, b).sum().backward()
    tw = getattr(md, tower[0])
    for (k, p), pa, pb in zip(tw.named_parameters(), two.tower.parameters(), two.tower_b.parameters(), strict=True):
        assert p.grad is not None, f"no gradient for tower {k}"
        assert pa.grad.abs().max() > 0 and pb.grad.abs().max() > 0
        assert torch.allclose(p.grad, pa.grad + pb.grad, atol=GRAD_ATOL, rtol=1e-5), f"tower {k} gradient"
