"""MFF decoder and refinement head of Hu et al. (arXiv 2105.06143), shared by student and teacher.

Per encoder tap: squeeze-excitation attention, a k x k conv to ``branch_channels``, bilinear upsampling
to half the input size. The taps are concatenated and fused by a k x k conv; the refinement head (k x k
conv + k x k conv -> 1) predicts depth at half resolution, which is upsampled to the input size.
With the defaults (16 / 64 / 64, k = 5) this is the paper's decoder; smaller widths give faster variants, and
``separable`` makes every k x k convolution but the last depthwise + 1x1 (about a ninth of the cost at 64 channels).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from depth_kd_ros.models.separable import separable_conv


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """'Same'-padded conv (no bias, BN follows) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool, 1x1 C -> C/r, ReLU, 1x1 -> C, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class OneChannelConv2d(nn.Conv2d):
    """A 'same'-padded k x k convolution to one channel: nn.Conv2d's parameters, initialisation and state-dict
    keys, computed as a depthwise k x k convolution and a 1x1 sum over channels (the same sums, reordered).

    Why: ONNX Runtime's CPU kernels run a one-output k x k convolution as a matrix-vector product over an im2col
    buffer. The lite student's last layer (5 x 5, 64 -> 1 at 48 x 64) took 3.6 ms of its 25 ms that way, and
    its depthwise form takes a fraction of that (measured in docs/node_profile.md).
    """

    def __init__(self, in_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_channel = F.conv2d(x, self.weight.transpose(0, 1), padding=self.padding, groups=self.in_channels)
        return F.conv2d(per_channel, torch.ones_like(self.weight[:, :, :1, :1]), self.bias)


class MFFDecoder(nn.Module):
    """Multi-scale feature fusion + refinement: four encoder taps -> N x 1 x H x W depth (>= 0)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        branch_channels: int = 16,
        fuse_channels: int = 64,
        refine_channels: int = 64,
        kernel_size: int = 5,
        se_reduction: int = 16,
        separable: bool = False,
        fuse_stride: int = 2,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        if fuse_stride not in (2, 4):
            raise ValueError(f"fuse_stride must be 2 (the paper's) or 4, got {fuse_stride}")
        self.fuse_stride = fuse_stride
        conv = separable_conv if separable else conv_bn_relu
        self.branches = nn.ModuleList(
            nn.Sequential(SqueezeExcite(c, se_reduction), conv(c, branch_channels, kernel_size))
            for c in in_channels
        )
        self.fuse = conv(branch_channels * len(in_channels), fuse_channels, kernel_size)
        self.refine = nn.Sequential(
            conv(fuse_channels, refine_channels, kernel_size),
            OneChannelConv2d(refine_channels, kernel_size),
        )

    def forward(self, taps: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        half = (out_size[0] // self.fuse_stride, out_size[1] // self.fuse_stride)
        fused = torch.cat(
            [
                F.interpolate(branch(tap), size=half, mode="bilinear", align_corners=False)
                for branch, tap in zip(self.branches, taps, strict=True)
            ],
            dim=1,
        )
        depth = self.refine(self.fuse(fused))
        # Softplus rather than ReLU: depth stays >= 0 but the gradient never dies at 0, so pixels that start
        # (or drift) negative still learn. Applied at half resolution; bilinear upsampling of non-negative
        # values stays non-negative.
        depth = F.softplus(depth)
        return F.interpolate(depth, size=out_size, mode="bilinear", align_corners=False)


class MFFDepthNet(nn.Module):
    """Encoder returning four feature taps (1/4 .. 1/32 resolution) + :class:`MFFDecoder`.

    ``encoder`` must expose ``out_channels`` (the four tap widths) and return the taps as a list.
    """

    def __init__(self, encoder: nn.Module, **decoder_config) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = MFFDecoder(encoder.out_channels, **decoder_config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised N x 3 x H x W image -> N x 1 x H x W depth in metres (H, W divisible by 32)."""
        height, width = x.shape[-2:]
        return self.decoder(self.encoder(x), (height, width))
