"""Sequences: Keras-style recurrent layers (the bidirectional merge, module forms for ``nn.Sequential``) and
positions (position ids, the sinusoidal position encoding).

:func:`merge_directions` is the one definition of how a bidirectional layer's two directions become its
output; the ``Sequence*`` modules and the fused recurrent runtime (backends/triton/runtime/recurrent.py)
both call it.
"""

import torch
from torch import nn

# ---- embedded below ----


def merge_directions(y, merge="concat", return_sequences=True, lengths=None):
    """The output of a bidirectional layer, Keras style, from the PyTorch module's output y [B, T, 2H].

    The forward and backward directions are merged per time step by `merge` ("concat", "sum", "mul" or
    "ave"; "none" returns both, as a pair); without `return_sequences` the forward direction's last output is
    merged with the backward direction's final output, which is the one at time step 0. With `lengths` (a
    padded batch run packed) the forward direction's last output is the one at each sequence's last valid step.
    """
    h = y.shape[-1] // 2
    if return_sequences:
        fwd, bwd = y[..., :h], y[..., h:]
    else:
        if lengths is None:
            fwd = y[:, -1, :h]
        else:  # each sequence's own last step
            fwd = y[torch.arange(y.shape[0], device=y.device), lengths.to(y.device) - 1, :h]
        bwd = y[:, 0, h:]
    if merge == "none":
        return fwd, bwd
    if merge == "concat":
        return torch.cat([fwd, bwd], dim=-1)
    if merge == "sum":
        return fwd + bwd
    if merge == "mul":
        return fwd * bwd
    if merge == "ave":
        return (fwd + bwd) / 2
    raise ValueError(f"unknown merge mode {merge!r}")


def run_packed(layer, x, *args):
    """Run the recurrent module `layer` on a padded batch x [B, T, F] whose sequence b has lengths[b] valid steps
    (the last of `args`, after an optional initial state), through a packed sequence: outputs past each length are
    zero, and the final state is each sequence's last valid step (the backward direction starts there)."""
    *state, lengths = args
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    y, final = layer(packed, *state)
    y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
    return y, final


def last_steps(y, lengths):
    """Each sequence's output at its last valid step: y [B, T, H] -> [B, H]."""
    return y[torch.arange(y.shape[0], device=y.device), lengths.to(y.device) - 1]


class SequenceOutput:
    """Mixin for recurrent layers inside nn.Sequential: return the output only (Keras semantics).

    With `return_sequences=False` the result is the last time step; a bidirectional layer merges its two
    directions with `merge` (see merge_directions).
    """

    def __init__(self, *args, return_sequences=True, merge="concat", **kwargs):
        super().__init__(*args, **kwargs)
        self.return_sequences = return_sequences
        self.merge = merge

    def forward(self, x):
        y, _ = super().forward(x)
        if self.bidirectional:
            return merge_directions(y, self.merge, self.return_sequences)
        return y if self.return_sequences else y[:, -1]


class SequenceRNN(SequenceOutput, nn.RNN):
    pass


class SequenceLSTM(SequenceOutput, nn.LSTM):
    pass


class SequenceGRU(SequenceOutput, nn.GRU):
    pass


def position_ids(x, dim=1):
    """The positions 0..n-1 along axis `dim` of x as int64 ids, one row per batch element: [B, n]."""
    return torch.arange(x.shape[dim], device=x.device).expand(x.shape[0], -1)


def sinusoidal_encoding(x, base=10000.0):
    """x [B, T, d] plus the sinusoidal position encoding of "Attention is all you need".

    Feature 2i of position t is sin(t / base^(2i/d)) and feature 2i+1 is cos of the same angle, computed as the
    PyTorch tutorial's PositionalEncoding does (in float32, then cast to x's dtype).
    """
    length, d = x.shape[-2], x.shape[-1]
    position = torch.arange(length, device=x.device, dtype=torch.float32).unsqueeze(1)
    log_base = float(torch.tensor(base, dtype=torch.float64).log())
    angle = position * torch.exp(torch.arange(0, d, 2, device=x.device, dtype=torch.float32) * (-log_base / d))
    pe = torch.zeros(length, d, device=x.device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d // 2])  # an odd d has one cosine fewer than sines
    return x + pe.to(x.dtype)


class PositionIds(nn.Module):
    """position_ids as a module (for nn.Sequential)."""

    def __init__(self, dim=1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return position_ids(x, self.dim)


class PositionalEncoding(nn.Module):
    """sinusoidal_encoding as a module (for nn.Sequential); it holds no parameters or buffers."""

    def __init__(self, base=10000.0):
        super().__init__()
        self.base = base

    def forward(self, x):
        return sinusoidal_encoding(x, self.base)
