"""The transformation network G of data-free distillation (Hu et al., arXiv 2208.12464): a small image-to-image
network that turns simulated images into images whose statistics, as the teacher's BatchNorm layers see them,
are those of the teacher's own training images.

G(x) = clamp(x + bound * tanh(f(x)), 0, 1) on RGB in [0, 1]: a residual the size of which is bounded, so G can
recolour and retexture but not replace the scene (the depth targets must still fit the image). ``f`` is four
3 x 3 convolutions (dilations 1, 2, 4, 1: a 17-pixel receptive field) with ReLUs and no normalisation; its last
layer starts at zero, so G starts as the identity and the run as plain distillation on simulated images.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TransformNet"]


class TransformNet(nn.Module):
    """G: N x 3 x H x W RGB in [0, 1] -> the same shape and range (see the module docstring)."""

    def __init__(self, width: int = 16, bound: float = 0.25) -> None:
        super().__init__()
        if width < 1 or not 0 < bound <= 1:
            raise ValueError(f"need width >= 1 and 0 < bound <= 1, got {width} and {bound}")
        self.bound = bound
        layers: list[nn.Module] = []
        channels = 3
        for dilation in (1, 2, 4):
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            channels = width
        last = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.residual = nn.Sequential(*layers, last)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb + self.bound * torch.tanh(self.residual(rgb - 0.5))).clamp(0.0, 1.0)
