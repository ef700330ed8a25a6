"""The PyTorch models a spec is benchmarked against on the CPU: torchvision's own models, torch.nn.Transformer
and a hand-written U-Net.

Each spec's state_dict loads into its reference with ``strict=True`` (DenseNet after renaming torchvision's
``denselayerN`` to dlc's ``N-1``), so both compute with the same weights and their outputs can be compared.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class CausalTransformer(nn.Module):
    """``nn.Transformer(batch_first=True)`` called as specs/transformer.dln is: (src, tgt, src padding, tgt
    padding), the decoder's self-attention causal, the source padding also masking the memory."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Transformer(batch_first=True)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_pad: torch.Tensor,
                tgt_pad: torch.Tensor) -> torch.Tensor:
        # bool like the padding masks (true = masked): torch warns about, and converts, a float mask mixed with them
        causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool, device=tgt.device).triu(1)
        return self.inner(src, tgt, tgt_mask=causal, tgt_is_causal=True, src_key_padding_mask=src_pad,
                          tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)


class UNetDoubleConv(nn.Module):
    """(3x3 conv -> batchnorm -> relu) twice, as a U-Net port writes it by hand."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(x)))


class UNetUp(nn.Module):
    """2x transposed convolution, concatenation with the encoder's features, DoubleConv."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, c, 2, stride=2)
        self.conv = UNetDoubleConv(2 * c, c)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """A hand-written twin of specs/unet.dln at its defaults (1 channel in, 2 classes, base 16), with the same
    state_dict names: what generated code should cost."""

    def __init__(self, cin: int = 1, classes: int = 2, base: int = 16) -> None:
        super().__init__()
        self.enc1 = UNetDoubleConv(cin, base)
        self.enc2 = UNetDoubleConv(base, 2 * base)
        self.enc3 = UNetDoubleConv(2 * base, 4 * base)
        self.bottleneck = UNetDoubleConv(4 * base, 8 * base)
        self.dec3 = UNetUp(8 * base, 4 * base)
        self.dec2 = UNetUp(4 * base, 2 * base)
        self.dec1 = UNetUp(2 * base, base)
        self.head = nn.Conv2d(base, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        b = self.bottleneck(F.max_pool2d(e3, 2))
        return self.head(self.dec1(self.dec2(self.dec3(b, e3), e2), e1))


def _torchvision(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision  # only the CPU comparison needs it
        return getattr(torchvision.models, name)(weights=None, **kwargs)
    return build


def _densenet_names(name: str) -> str:
    """dlc's ``features.denseblock1.0.conv1`` is torchvision's ``features.denseblock1.denselayer1.conv1``."""
    return re.sub(r"(\.denseblock\d+)\.(\d+)(?=\.)", lambda m: f"{m.group(1)}.denselayer{int(m.group(2)) + 1}", name)


@dataclass(frozen=True)
class Reference:
    """How to build the reference model and name the spec's state_dict keys as it does."""

    what: str                                  # for the tables' legend
    build: Callable[[], nn.Module]
    rename: Callable[[str], str] = lambda name: name


REFERENCES: dict[str, Reference] = {
    "resnet50": Reference("torchvision.models.resnet50", _torchvision("resnet50")),
    "densenet121": Reference("torchvision.models.densenet121", _torchvision("densenet121"), _densenet_names),
    "googlenet": Reference("torchvision.models.googlenet(aux_logits=True, transform_input=False)",
                           _torchvision("googlenet", aux_logits=True, init_weights=False, transform_input=False)),
    "mobilenet_v2": Reference("torchvision.models.mobilenet_v2", _torchvision("mobilenet_v2")),
    "transformer": Reference("torch.nn.Transformer(batch_first=True), causal decoder", CausalTransformer,
                             lambda name: f"inner.{name}"),
    "unet": Reference("a hand-written nn.Module twin (benchmarks/references.py)", UNet),
}


def reference_like(stem: str, model: nn.Module) -> nn.Module | None:
    """The reference model of spec ``stem`` holding ``model``'s weights (None for a spec without one)."""
    ref = REFERENCES.get(stem)
    if ref is None:
        return None
    target = ref.build()
    target.load_state_dict({ref.rename(k): v for k, v in model.state_dict().items()}, strict=True)
    return target
