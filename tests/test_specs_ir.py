"""The reference specs in specs/ elaborate, verify, and match their sources of truth at IR level.

Module paths and parameter counts are compared with torchvision (resnet18, resnet50, googlenet) and with
equivalent ``torch.nn`` models built here (the others). No forward passes: these tests are fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.nn as nn

from dlc.pipeline import build_graph
from dlc.compiler.passes import count_params, infer_shapes, total_params, verify
from dlc.compiler.types import TensorType

SPECS = Path(__file__).resolve().parent.parent / "specs"
ALL_SPECS = sorted(SPECS.glob("*.dln"))


def spec(name: str) -> Path:
    return SPECS / f"{name}.dln"


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def torch_paths(m: nn.Module) -> dict[str, int]:
    """Parameter count per owning module path, from ``named_parameters``."""
    out: dict[str, int] = {}
    for name, p in m.named_parameters():
        path = name.rsplit(".", 1)[0]
        out[path] = out.get(path, 0) + p.numel()
    return out


def ir_paths(g) -> dict[str, int]:
    """Parameter count per module path in the IR, leaving out parameter-free modules."""
    return {k: v for k, v in count_params(g).items() if v}


def ir_param_names(g) -> set[str]:
    """The state_dict parameter names the IR implies (weights and biases of each module)."""
    names: set[str] = set()
    for node in g.nodes:
        path = node.module_path
        if path is None:
            continue
        a = node.attrs
        if node.op in ("conv1d", "conv2d", "conv_transpose2d", "linear"):
            suffixes = ["weight"] + (["bias"] if a["bias"] else [])
        elif node.op in ("batchnorm", "layernorm"):
            suffixes = ["weight", "bias"] if a["affine"] else []
        elif node.op == "embedding":
            suffixes = ["weight"]
        else:
            continue
        names.update(f"{path}.{s}" for s in suffixes)
    return names


def shape(g, output: str):
    vid = dict(g.outputs)[output]
    t = g.types[vid]
    assert isinstance(t, TensorType)
    return t.shape


# ---- every spec ---------------------------------------------------------------------------


def test_specs_exist():
    names = {p.stem for p in ALL_SPECS}
    assert {"resnet18", "resnet50", "googlenet", "mlp", "lenet5", "autoencoder", "siamese", "bilstm_tagger",
            "seq2seq"} <= names


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.stem)
def test_spec_elaborates_and_verifies(path):
    g = build_graph(path)
    assert g.outputs
    assert not infer_shapes(verify(g))  # elaboration already inferred every type
    verify(g)
    assert total_params(g) > 0
    # every parameterised module has a readable, unique dotted path
    for p in count_params(g):
        assert all(part.isidentifier() or part.isdigit() for part in p.split(".")), p


# ---- torchvision mirrors ------------------------------------------------------------------


def test_resnet18_matches_torchvision():
    tvm = pytest.importorskip("torchvision.models")
    ref = tvm.resnet18(weights=None)
    g = build_graph(spec("resnet18"))
    assert ir_paths(g) == torch_paths(ref)
    assert ir_param_names(g) == {n for n, _ in ref.named_parameters()}
    assert total_params(g) == n_params(ref) == 11_689_512
    assert [n for n, _ in g.outputs] == ["logits"]
    assert shape(g, "logits") == (1000,)


def test_resnet18_classes_override():
    tvm = pytest.importorskip("torchvision.models")
    ref = tvm.resnet18(weights=None, num_classes=10)
    g = build_graph(spec("resnet18"), overrides={"classes": 10})
    assert ir_paths(g) == torch_paths(ref)
    assert total_params(g) == n_params(ref)
    assert shape(g, "logits") == (10,)


def test_resnet50_matches_torchvision():
    tvm = pytest.importorskip("torchvision.models")
    ref = tvm.resnet50(weights=None)
    g = build_graph(spec("resnet50"))
    assert ir_paths(g) == torch_paths(ref)
    assert ir_param_names(g) == {n for n, _ in ref.named_parameters()}
    assert total_params(g) == n_params(ref) == 25_557_032
    assert [n for n, _ in g.outputs] == ["logits"]
    assert shape(g, "logits") == (1000,)


def test_resnet50_hyperparameters_match_torchvision():
    """Kernel, stride and padding of every convolution: the stride of a downsampling bottleneck is on
    its 3x3 conv2 and its 1x1 downsample.0 (ResNet v1.5), which parameter counts cannot tell."""
    tvm = pytest.importorskip("torchvision.models")
    ref = tvm.resnet50(weights=None)
    g = build_graph(spec("resnet50"))
    nodes = {n.module_path: n for n in g.nodes if n.module_path}
    convs = [(name, m) for name, m in ref.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 53
    for name, m in convs:
        a = nodes[name].attrs
        assert (a["k"], a["stride"], a["pad"]) == (m.kernel_size[0], m.stride[0], m.padding[0]), name
        assert a["bias"] is (m.bias is not None), name
    assert nodes["layer2.0.conv2"].attrs["stride"] == 2 and nodes["layer2.0.conv1"].attrs["stride"] == 1


def test_resnet50_classes_override():
    tvm = pytest.importorskip("torchvision.models")
    ref = tvm.resnet50(weights=None, num_classes=10)
    g = build_graph(spec("resnet50"), overrides={"classes": 10})
    assert ir_paths(g) == torch_paths(ref)
    assert total_params(g) == n_params(ref)
    assert shape(g, "logits") == (10,)


def _googlenet(**kw):
    tvm = pytest.importorskip("torchvision.models")
    return tvm.googlenet(weights=None, aux_logits=True, init_weights=False, transform_input=False, **kw)


def test_googlenet_matches_torchvision():
    ref = _googlenet()
    g = build_graph(spec("googlenet"))
    assert ir_paths(g) == torch_paths(ref)
    assert ir_param_names(g) == {n for n, _ in ref.named_parameters()}
    assert total_params(g) == n_params(ref) == 13_004_888
    assert [n for n, _ in g.outputs] == ["logits", "aux1", "aux2"]
    for out in ("logits", "aux1", "aux2"):
        assert shape(g, out) == (1000,)


def test_googlenet_hyperparameters_match_torchvision():
    ref = _googlenet()
    g = build_graph(spec("googlenet"))
    nodes = {n.module_path: n for n in g.nodes if n.module_path}
    for name, m in ref.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert nodes[name].attrs["eps"] == pytest.approx(m.eps), name
        elif isinstance(m, nn.Conv2d):
            a = nodes[name].attrs
            assert (a["k"], a["stride"], a["pad"]) == (m.kernel_size[0], m.stride[0], m.padding[0]), name
            assert a["bias"] is (m.bias is not None), name
        elif isinstance(m, nn.MaxPool2d):
            a = nodes[name].attrs
            assert (a["k"], a["stride"], a["pad"], a["ceil"]) == (m.kernel_size, m.stride, m.padding, m.ceil_mode), name
        elif isinstance(m, nn.Dropout):
            assert nodes[name].attrs["p"] == pytest.approx(m.p), name


def test_googlenet_classes_override():
    ref = _googlenet(num_classes=10)
    g = build_graph(spec("googlenet"), overrides={"classes": 10})
    assert ir_paths(g) == torch_paths(ref)
    assert total_params(g) == n_params(ref)


# ---- siamese: one tower, counted once -----------------------------------------------------


def _tower(features: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 64, 10), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 7), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 4), nn.ReLU(),
        nn.Flatten(), nn.Linear(256 * 6 * 6, features), nn.Sigmoid(),
    )


def test_siamese_tower_counted_once():
    g = build_graph(spec("siamese"))
    tower, head = _tower(128), nn.Linear(128, 1)
    assert total_params(g) == n_params(tower) + n_params(head)
    paths = ir_paths(g)
    tower_paths = {p for p in paths if p.startswith("tower.")}
    assert tower_paths == {"tower.conv1", "tower.conv2", "tower.conv3", "tower.conv4", "tower.fc"}
    assert sum(paths[p] for p in tower_paths) == n_params(tower)
    # the tower is applied twice (two conv1 nodes) but has one set of parameters
    conv1 = [n for n in g.nodes if n.module_path == "tower.conv1"]
    assert len(conv1) == 2 and conv1[0].inputs != conv1[1].inputs
    assert shape(g, "p") == (1,)


# ---- small models vs torch.nn twins -------------------------------------------------------


def test_mlp_matches_torch():
    g = build_graph(spec("mlp"))
    ref = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 512),
                        nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 10))
    assert total_params(g) == n_params(ref)
    g2 = build_graph(spec("mlp"), overrides={"hidden": 64, "classes": 3, "dropout": 0.5})
    ref2 = nn.Sequential(nn.Linear(784, 64), nn.Linear(64, 64), nn.Linear(64, 3))
    assert total_params(g2) == n_params(ref2)
    assert all(n.attrs["p"] == 0.5 for n in g2.nodes if n.op == "dropout")


def test_lenet5_matches_torch():
    g = build_graph(spec("lenet5"))
    ref = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
    )
    assert total_params(g) == n_params(ref) == 61_706
    assert shape(g, "logits") == (10,)


def test_autoencoder_matches_torch():
    g = build_graph(spec("autoencoder"))
    latent = 32
    ref = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, latent),
        nn.Linear(latent, 32 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (32, 7, 7)),
        nn.ConvTranspose2d(32, 16, 2, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Upsample(scale_factor=2), nn.Conv2d(16, 1, 3, padding=1), nn.Sigmoid(),
    )
    assert total_params(g) == n_params(ref)
    assert shape(g, "recon") == (1, 28, 28)
    assert "bottleneck" in ir_paths(g)


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_tagger_matches_torch(merge, return_sequences):
    g = build_graph(spec("bilstm_tagger"), overrides={"merge": merge, "return_sequences": return_sequences})
    width = 256 if merge == "concat" else 128
    ref = nn.ModuleDict({
        "embed": nn.Embedding(10000, 100),
        "tag": nn.LSTM(100, 128, batch_first=True, bidirectional=True),
        "out": nn.Linear(width, 17),
    })
    assert ir_paths(g) == torch_paths(ref)
    assert total_params(g) == n_params(ref)
    assert shape(g, "scores") == (("T", 17) if return_sequences else (17,))


def test_seq2seq_matches_torch():
    g = build_graph(spec("seq2seq"))
    h, sv, tv = 256, 8000, 8000
    ref = nn.ModuleDict({
        "src_embed": nn.Embedding(sv, h),
        "encoder": nn.LSTM(h, h, num_layers=2, batch_first=True),
        "tgt_embed": nn.Embedding(tv, h),
        "decoder": nn.LSTM(h, h, num_layers=2, batch_first=True),
        "attn": nn.MultiheadAttention(h, 1, batch_first=True),
        "out": nn.Linear(2 * h, tv),
    })
    per_module = {k: n_params(m) for k, m in ref.items()}
    assert ir_paths(g) == per_module
    assert total_params(g) == n_params(ref)
    assert shape(g, "logits") == ("T", tv)
    assert [n for n, _ in g.inputs] == ["src", "tgt"]


def test_seq2seq_overrides():
    g = build_graph(spec("seq2seq"), overrides={"src_vocab": 100, "tgt_vocab": 50, "hidden": 32})
    ref = nn.ModuleList([
        nn.Embedding(100, 32), nn.LSTM(32, 32, num_layers=2), nn.Embedding(50, 32), nn.LSTM(32, 32, num_layers=2),
        nn.MultiheadAttention(32, 1), nn.Linear(64, 50),
    ])
    assert total_params(g) == n_params(ref)
