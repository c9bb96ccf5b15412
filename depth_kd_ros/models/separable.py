"""A light decoder for real time: depthwise-separable convolutions and U-Net skips (FastDepth-style).

The MFF decoder of Hu et al. spends ~88% of the student's compute in dense 5x5 convolutions at half
resolution. Here every 5x5 is depthwise (25 MACs per pixel and channel) followed by a 1x1 that mixes
channels, and the width shrinks as the resolution grows, as in FastDepth's NNConv5 (Wofk et al., ICRA 2019).
Per stage, from the coarsest tap: separable conv, x2 upsampling, concatenation with the next finer tap.
Depth is predicted at the finest tap's resolution (1/2) and upsampled bilinearly to the input size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def separable_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Depthwise k x k + BN + ReLU, then pointwise 1x1 + BN + ReLU (MobileNet's building block)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SeparableDecoder(nn.Module):
    """Encoder taps (finest first, each half the previous resolution) -> N x 1 x H x W depth (>= 0).

    ``channels[i]`` is the width after the stage that consumes tap ``-(i + 1)`` (coarsest first); there is
    one stage per tap, so ``len(channels) == len(in_channels)``.
    """

    def __init__(self, in_channels: Sequence[int], channels: Sequence[int] = (128, 64, 48, 32, 24),
                 kernel_size: int = 5) -> None:
        super().__init__()
        if len(channels) != len(in_channels):
            raise ValueError(f"need one decoder width per encoder tap ({len(in_channels)}), got {list(channels)}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        coarse_to_fine = list(in_channels)[::-1]
        stages, width = [], coarse_to_fine[0]
        for index, out_width in enumerate(channels):
            skip = coarse_to_fine[index] if index else 0  # the coarsest tap is the stage's input itself
            stages.append(separable_conv(width + skip, out_width, kernel_size))
            width = out_width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, taps: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        coarse_to_fine = list(taps)[::-1]
        x = self.stages[0](coarse_to_fine[0])
        for stage, skip in zip(self.stages[1:], coarse_to_fine[1:], strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = stage(torch.cat([x, skip], dim=1))
        depth = F.softplus(self.head(x))  # >= 0 with a live gradient everywhere (see mff.py)
        return F.interpolate(depth, size=out_size, mode="bilinear", align_corners=False)


class SeparableDepthNet(nn.Module):
    """Encoder returning taps from fine to coarse + :class:`SeparableDecoder`."""

    def __init__(self, encoder: nn.Module, **decoder_config) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = SeparableDecoder(encoder.out_channels, **decoder_config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised N x 3 x H x W image -> N x 1 x H x W depth in metres (H, W divisible by 32)."""
        return self.decoder(self.encoder(x), tuple(x.shape[-2:]))
