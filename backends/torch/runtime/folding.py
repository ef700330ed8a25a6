"""Batchnorm folded into the convolution or linear layer before it, in eval mode (``--optimize inference``)."""

import torch
import torch.nn.functional as F
from torch import nn

# ---- embedded below ----


def folded_batchnorm(layer, bn, x):
    """`bn(layer(x))`, in eval mode as one convolution (or matmul) with the batchnorm folded into its weights."""
    if bn.training:
        return bn(layer(x))
    weight, bias = folded_parameters(layer, bn)
    return apply_layer(layer, x, weight, bias)


def folded_without_bias(layer, bn, x):
    """`folded_batchnorm(layer, bn, x)` without the folded bias, and that bias: a fused epilogue adds it together
    with the ops after it. In training mode `bn(layer(x))` and a bias of zeros."""
    if bn.training:
        y = bn(layer(x))
        return y, y.new_zeros(bn.num_features)
    weight, bias = folded_parameters(layer, bn)
    return apply_layer(layer, x, weight, None), bias


def folded_parameters(layer, bn):
    """The weight and bias of `layer` with the eval-mode batchnorm `bn` after it folded in.

    They are kept on `layer` until any tensor they come from changes (loading a state_dict, an
    optimizer step and `.to()` all do) or autograd needs them.
    """
    sources = [
        t for t in (layer.weight, layer.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var) if t is not None
    ]
    # versions identify the tensors' values (not tracked for inference-mode tensors: no caching then). While
    # torch.compile or torch.export traces, tensors are fake (no data pointer) and the fold is part of the graph.
    key = None
    if not torch.compiler.is_compiling() and not any(t.is_inference() for t in sources):
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
    return weight, bias


def apply_layer(layer, x, weight, bias):
    """The linear layer or convolution `layer` on `x` with these parameters instead of its own."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
    return conv(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


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
