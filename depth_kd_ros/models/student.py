"""Students: MobileNetV2 ``features[:17]`` + a decoder.

``mobilenetv2_mff``: the paper's MFF decoder (Hu et al., arXiv 2105.06143), ~1.7M parameters, 2.8 GMACs at 192x256.
``mobilenetv2_mff_lite``: the MFF decoder with depthwise-separable convolutions, fused at 1/4 resolution
(0.30 GMACs at 192x256).
``mobilenetv2_fast``: a depthwise-separable U-Net decoder (models/separable.py), a fraction of the cost.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from depth_kd_ros.models.mff import MFFDepthNet
from depth_kd_ros.models.registry import register_architecture
from depth_kd_ros.models.separable import SeparableDepthNet


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 blocks 0..16; taps after ``tap_after`` (default blocks 3, 6, 13, 16: 24/32/96/160 ch at
    1/4..1/32; block 1 gives 16 ch at 1/2).

    ``features`` keeps torchvision's block indices, so ImageNet weights load with
    ``encoder.features.load_state_dict(mobilenet_v2(weights=...).features.state_dict(), strict=False)``.
    """

    TAP_AFTER = (3, 6, 13, 16)

    def __init__(self, width_mult: float = 1.0, tap_after: tuple[int, ...] = TAP_AFTER) -> None:
        super().__init__()
        self.tap_after = tuple(tap_after)
        self.features = mobilenet_v2(weights=None, width_mult=width_mult).features[: self.tap_after[-1] + 1]
        self.out_channels = tuple(self.features[i].out_channels for i in self.tap_after)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self.tap_after:
                taps.append(x)
        return taps


@register_architecture("mobilenetv2_mff")
def mobilenetv2_mff(width_mult: float = 1.0, **decoder_config: int) -> MFFDepthNet:
    """The paper's student. ``decoder_config``: see :class:`~depth_kd_ros.models.mff.MFFDecoder`."""
    return MFFDepthNet(MobileNetV2Encoder(width_mult), **decoder_config)


@register_architecture("mobilenetv2_mff_lite")
def mobilenetv2_mff_lite(width_mult: float = 1.0, separable: bool = True, fuse_stride: int = 4,
                         **decoder_config) -> MFFDepthNet:
    """The paper's student made real-time: MFF with depthwise-separable convolutions, fused at 1/4."""
    return MFFDepthNet(MobileNetV2Encoder(width_mult), separable=separable, fuse_stride=fuse_stride,
                       **decoder_config)


@register_architecture("mobilenetv2_fast")
def mobilenetv2_fast(width_mult: float = 1.0, **decoder_config) -> SeparableDepthNet:
    """Real-time student: taps at 1/2..1/32. ``decoder_config``: see
    :class:`~depth_kd_ros.models.separable.SeparableDecoder`."""
    return SeparableDepthNet(MobileNetV2Encoder(width_mult, tap_after=(1, 3, 6, 13, 16)), **decoder_config)
