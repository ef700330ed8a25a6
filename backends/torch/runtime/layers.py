"""Module forms of stateless layers that torch.nn has no class for, and self-attention as one module.

The generated code needs them only where a layer must be a module: inside ``nn.Sequential`` (labelled
groups and repeats) or when the spec labels a stateless layer.
"""

import torch
import torch.nn.functional as F
from torch import nn

# ---- embedded below ----


class Reshape(nn.Module):
    """Reshapes every sample to `shape` (the batch axis is kept)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class Permute(nn.Module):
    """Reorders the axes after the batch axis."""

    def __init__(self, dims):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x):
        return x.permute(0, *self.dims)


class Abs(nn.Module):
    def forward(self, x):
        return torch.abs(x)


class Apply(nn.Module):
    """An elementwise torch function as a module (for nn.Sequential), with its keyword arguments."""

    def __init__(self, function, **kwargs):
        super().__init__()
        self.function = function
        self.kwargs = kwargs

    def forward(self, x):
        return self.function(x, **self.kwargs)

    def extra_repr(self):
        return ", ".join([self.function.__name__] + [f"{k}={v!r}" for k, v in self.kwargs.items()])


class Scale(nn.Module):
    """Multiplies by a constant."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class Shift(nn.Module):
    """Adds a constant."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return x + self.offset


class AlwaysDropout(nn.Module):
    """Dropout that stays on at inference (Monte-Carlo dropout)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=True)


class SelfAttention(nn.MultiheadAttention):
    """Self-attention (query = key = value) returning only the attended values."""

    def __init__(self, *args, causal=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.causal = causal

    def forward(self, x):
        mask = None
        if self.causal:
            mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).triu(1)
        return super().forward(x, x, x, need_weights=False, attn_mask=mask)[0]


class LayerStack(nn.Sequential):
    """nn.Sequential whose children all receive the same extra inputs after the chained one (a labelled repeat of
    blocks taking a mask or a memory, as nn.TransformerEncoder's layers do); the state_dict is nn.Sequential's."""

    def forward(self, x, *extra):
        for layer in self:
            x = layer(x, *extra)
        return x


def stochastic_depth(x, p, mode, training):
    """Stochastic depth (torchvision.ops.stochastic_depth): in training, zeroes each sample (`mode="row"`) or the
    whole batch (`"batch"`) with probability `p` and scales what is kept by 1 / (1 - p). It draws its noise as
    torchvision does (`bernoulli_` on a tensor of that shape), so one seed gives the same numbers."""
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return x * noise


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: `stochastic_depth` as a module, with its `p` and `mode`."""

    def __init__(self, p, mode):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x):
        return stochastic_depth(x, self.p, self.mode, self.training)

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"


def external_layer(cls, /, **kwargs):
    """The layer of a spec's `extern`: the class it names, constructed with the spec's arguments, if it is an
    nn.Module class. A spec names the callable, so this check keeps it from calling anything else (a function such
    as `subprocess.call` with arguments of its choosing)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"an extern layer must be an nn.Module class, not {cls!r}")
    return cls(**kwargs)
