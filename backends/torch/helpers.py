"""Small modules the generated code defines when a layer has no torch.nn class.

They are needed only where a layer must be a module: inside ``nn.Sequential`` (labelled
groups and repeats) or when the spec labels a stateless layer. Each is emitted into the
generated file only when used, so the file stays importable on its own.
"""

import re

HELPERS: dict[str, str] = {
    "Reshape": '''
class Reshape(nn.Module):
    """Reshapes every sample to `shape` (the batch axis is kept)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)
''',
    "Permute": '''
class Permute(nn.Module):
    """Reorders the axes after the batch axis."""

    def __init__(self, dims):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x):
        return x.permute(0, *self.dims)
''',
    "Abs": '''
class Abs(nn.Module):
    def forward(self, x):
        return torch.abs(x)
''',
    "Scale": '''
class Scale(nn.Module):
    """Multiplies by a constant."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor
''',
    "Shift": '''
class Shift(nn.Module):
    """Adds a constant."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return x + self.offset
''',
    "AlwaysDropout": '''
class AlwaysDropout(nn.Module):
    """Dropout that stays on at inference (Monte-Carlo dropout)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=True)
''',
    "SequenceRNN": '''
class SequenceOutput:
    """Mixin for recurrent layers inside nn.Sequential: return the output only (Keras semantics).

    With `return_sequences=False` the result is the last time step; a bidirectional layer merges
    its two directions with `merge`, its backward direction's final output being the one at step 0.
    """

    def __init__(self, *args, return_sequences=True, merge="concat", **kwargs):
        super().__init__(*args, **kwargs)
        self.return_sequences = return_sequences
        self.merge = merge

    def forward(self, x):
        y, _ = super().forward(x)
        if not self.bidirectional:
            return y if self.return_sequences else y[:, -1]
        h = self.hidden_size
        if self.return_sequences:
            fwd, bwd = y[..., :h], y[..., h:]
        else:
            fwd, bwd = y[:, -1, :h], y[:, 0, h:]
        if self.merge == "concat":
            return torch.cat([fwd, bwd], dim=-1)
        if self.merge == "sum":
            return fwd + bwd
        if self.merge == "mul":
            return fwd * bwd
        return (fwd + bwd) / 2


class SequenceRNN(SequenceOutput, nn.RNN):
    pass


class SequenceLSTM(SequenceOutput, nn.LSTM):
    pass


class SequenceGRU(SequenceOutput, nn.GRU):
    pass
''',
    "folded_batchnorm": '''
def folded_batchnorm(layer, bn, x):
    """`bn(layer(x))`, in eval mode as one convolution (or matmul) with the batchnorm folded into its weights.

    The folded weights are kept on `layer` until any tensor they come from changes (loading a
    state_dict, an optimizer step and `.to()` all do) or autograd needs them.
    """
    if bn.training:
        return bn(layer(x))
    sources = [t for t in (layer.weight, layer.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
               if t is not None]
    # versions identify the tensors' values (not tracked for inference-mode tensors: no caching then)
    key = None
    if not any(t.is_inference() for t in sources):
        key = (bn.eps,) + tuple((t.data_ptr(), t._version) for t in sources)
    cached = getattr(layer, "_folded", None)
    if key is not None and cached is not None and cached[0] == key and not torch.is_grad_enabled():
        weight, bias = cached[1], cached[2]
    else:
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean * scale
        if bn.weight is not None:
            scale = scale * bn.weight
            shift = shift * bn.weight + bn.bias
        weight = layer.weight * scale.view(-1, *[1] * (layer.weight.dim() - 1))
        bias = shift if layer.bias is None else shift + layer.bias * scale
        if weight.dim() == 4 and layer.weight.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)
        if key is not None and not torch.is_grad_enabled():
            layer._folded = (key, weight, bias)
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
    return conv(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)

''',
    "FoldingSequential": '''
class FoldingSequential(nn.Sequential):
    """nn.Sequential whose children named in `fold` run with the batchnorm after them folded in (eval mode)."""

    def __init__(self, *args, fold=()):
        super().__init__(*args)
        self.fold = frozenset(fold)

    def forward(self, x):
        children = list(self.named_children())
        i = 0
        while i < len(children):
            name, layer = children[i]
            if name in self.fold:
                x = folded_batchnorm(layer, children[i + 1][1], x)
                i += 2
            else:
                x = layer(x)
                i += 1
        return x
''',
    "SelfAttention": '''
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
''',
}


# The helper that defines each class name (generated code that uses the class needs that helper).
HELPER_OF: dict[str, str] = {
    name: key for key, text in HELPERS.items() for name in re.findall(r"^(?:class|def) (\w+)", text, re.MULTILINE)}
# A block or network of one of these names would clash with a helper class.
HELPER_CLASSES: frozenset[str] = frozenset(HELPER_OF)
