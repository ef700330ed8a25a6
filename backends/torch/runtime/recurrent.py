"""Keras-style recurrent layers: the bidirectional merge, and module forms for ``nn.Sequential``.

:func:`merge_directions` is the one definition of how a bidirectional layer's two directions become its
output; the ``Sequence*`` modules and the fused recurrent runtime (backends/triton/runtime/recurrent.py)
both call it.
"""

import torch
from torch import nn

# ---- embedded below ----


def merge_directions(y, merge="concat", return_sequences=True):
    """The output of a bidirectional layer, Keras style, from the PyTorch module's output y [B, T, 2H].

    The forward and backward directions are merged per time step by `merge` ("concat", "sum", "mul" or
    "ave"); without `return_sequences` the forward direction's last output is merged with the backward
    direction's final output, which is the one at time step 0.
    """
    h = y.shape[-1] // 2
    if return_sequences:
        fwd, bwd = y[..., :h], y[..., h:]
    else:
        fwd, bwd = y[:, -1, :h], y[:, 0, h:]
    if merge == "concat":
        return torch.cat([fwd, bwd], dim=-1)
    if merge == "sum":
        return fwd + bwd
    if merge == "mul":
        return fwd * bwd
    if merge == "ave":
        return (fwd + bwd) / 2
    raise ValueError(f"unknown merge mode {merge!r}")


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
