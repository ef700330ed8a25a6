"""Hand-written ``torch.nn`` twins of the reference specs, used by tests/test_semantics.py.

Each class is written from the spec's *source of truth* (the paper, Keras semantics, the language
sketch), not from dlc's generated code. Attribute names follow the spec's labels so that a dlc
module's ``state_dict`` loads into the twin with ``strict=True`` (that also checks the names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---- mlp.dln --------------------------------------------------------------------------------


class MLP(nn.Module):
    """784 -> hidden -> hidden -> classes with ReLU and dropout (the classic MNIST MLP)."""

    def __init__(self, hidden: int = 512, classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = self.drop(torch.relu(self.fc1(torch.flatten(x, 1))))
        h = self.drop(torch.relu(self.fc2(h)))
        return self.out(h)


# ---- lenet5.dln -----------------------------------------------------------------------------


class LeNet5(nn.Module):
    """C1 (6@5x5) - S2 (avg 2) - C3 (16@5x5) - S4 (avg 2) - 120 - 84 - classes, tanh throughout."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


# ---- autoencoder.dln ------------------------------------------------------------------------


class Down(nn.Module):
    def __init__(self, cin: int, c: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)


class Up(nn.Module):
    def __init__(self, cin: int, c: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, c, 2, stride=2)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.deconv(x)))


class AutoEncoder(nn.Module):
    def __init__(self, latent: int = 32):
        super().__init__()
        self.enc1 = Down(1, 16)
        self.enc2 = Down(16, 32)
        self.bottleneck = nn.Linear(32 * 7 * 7, latent)
        self.expand = nn.Linear(latent, 32 * 7 * 7)
        self.dec1 = Up(32, 16)
        self.dec2 = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x):
        code = self.bottleneck(torch.flatten(self.enc2(self.enc1(x)), 1))
        h = torch.relu(self.expand(code)).view(-1, 32, 7, 7)
        h = F.interpolate(self.dec1(h), scale_factor=2, mode="nearest")
        return torch.sigmoid(self.dec2(h))


# ---- siamese.dln ----------------------------------------------------------------------------


class Tower(nn.Module):
    """Koch et al. (2015) convolutional tower for 105x105 images."""

    def __init__(self, features: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 10)
        self.conv2 = nn.Conv2d(64, 128, 7)
        self.conv3 = nn.Conv2d(128, 128, 4)
        self.conv4 = nn.Conv2d(128, 256, 4)
        self.fc = nn.Linear(256 * 6 * 6, features)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv3(x)), 2)
        x = torch.relu(self.conv4(x))
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))


class Siamese(nn.Module):
    """``sigmoid(head(|f(a) - f(b)|))``; with ``shared=False`` the two images get separate towers
    (used to check that the shared tower's gradient is the sum of both applications' gradients)."""

    def __init__(self, features: int = 128, shared: bool = True):
        super().__init__()
        self.tower = Tower(features)
        self.tower_b = None if shared else Tower(features)
        self.head = nn.Linear(features, 1)

    def forward(self, a, b):
        fb = (self.tower if self.tower_b is None else self.tower_b)(b)
        return torch.sigmoid(self.head(torch.abs(self.tower(a) - fb)))


# ---- bilstm_tagger.dln ----------------------------------------------------------------------


def keras_bidirectional(seq: torch.Tensor, units: int, merge: str, return_sequences: bool) -> torch.Tensor:
    """Keras ``Bidirectional`` merge of a PyTorch bidirectional RNN output ``seq`` [B, T, 2*units].

    PyTorch stores the backward direction time-aligned: ``seq[:, t, units:]`` is the backward pass's
    output after it has read x[T-1] .. x[t]. So with ``return_sequences=False`` the forward half is the
    output at the last step and the backward half is the backward pass's *final* output, at t = 0.
    """
    fwd_seq, bwd_seq = seq[..., :units], seq[..., units:]
    if return_sequences:
        fwd, bwd = fwd_seq, bwd_seq
    else:
        fwd, bwd = fwd_seq[:, -1], bwd_seq[:, 0]
    return merge_halves(fwd, bwd, merge)


def merge_halves(fwd: torch.Tensor, bwd: torch.Tensor, merge: str) -> torch.Tensor:
    """Keras ``merge_mode``: concat = [fwd, bwd], sum, mul, ave = (fwd + bwd) / 2."""
    if merge == "concat":
        return torch.cat([fwd, bwd], dim=-1)
    if merge == "sum":
        return fwd + bwd
    if merge == "mul":
        return fwd * bwd
    if merge == "ave":
        return (fwd + bwd) / 2
    raise ValueError(merge)


class Tagger(nn.Module):
    def __init__(self, vocab: int, tags: int, merge: str, return_sequences: bool,
                 dim: int = 100, units: int = 128):
        super().__init__()
        self.units, self.merge, self.return_sequences = units, merge, return_sequences
        self.embed = nn.Embedding(vocab, dim)
        self.tag = nn.LSTM(dim, units, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * units if merge == "concat" else units, tags)

    def features(self, tokens):
        """The bidirectional LSTM's raw output [B, T, 2*units]."""
        return self.tag(self.embed(tokens))[0]

    def forward(self, tokens):
        return self.out(keras_bidirectional(self.features(tokens), self.units, self.merge,
                                            self.return_sequences))


# ---- seq2seq.dln ----------------------------------------------------------------------------


class Seq2Seq(nn.Module):
    """Embedding + 2-layer LSTM encoder; its final (h, c) initialise a 2-layer LSTM decoder; one-head
    attention with the decoder outputs as queries over the encoder outputs; [dec, ctx] -> linear."""

    def __init__(self, src_vocab: int, tgt_vocab: int, hidden: int, hand_over_state: bool = True):
        super().__init__()
        self.hand_over_state = hand_over_state
        self.src_embed = nn.Embedding(src_vocab, hidden)
        self.encoder = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True)
        self.tgt_embed = nn.Embedding(tgt_vocab, hidden)
        self.decoder = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True)
        self.attn = nn.MultiheadAttention(hidden, 1, batch_first=True)
        self.out = nn.Linear(2 * hidden, tgt_vocab)

    def forward(self, src, tgt):
        enc, (h, c) = self.encoder(self.src_embed(src))
        state = (h, c) if self.hand_over_state else None
        dec, _ = self.decoder(self.tgt_embed(tgt), state)
        ctx, _ = self.attn(dec, enc, enc, need_weights=False)
        return self.out(torch.cat([dec, ctx], dim=-1))


# ---- comparison helpers shared by the semantic tests ----------------------------------------------


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def assert_close(got: torch.Tensor, want: torch.Tensor, atol: float, what: str = "output") -> None:
    """Equal shapes, max abs difference within ``atol``, and a reference that is not ~0."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    d = (got - want).abs().max().item()
    assert d <= atol, f"{what}: max abs diff {d:.3g} > {atol:g}"
    assert want.abs().max().item() > 100 * atol, f"{what}: reference output is ~0, comparison is trivial"


def randomize_batchnorm(model: nn.Module) -> None:
    """Non-default running statistics and affine parameters for every batchnorm layer."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
