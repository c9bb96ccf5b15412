"""Student: MobileNetV2 ``features[:17]`` + MFF decoder (Hu et al., arXiv 2105.06143), ~1.7M parameters."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from depth_kd_ros.models.mff import MFFDepthNet
from depth_kd_ros.models.registry import register_architecture


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 blocks 0..16; taps after blocks 3, 6, 13, 16 (24/32/96/160 ch at 1/4..1/32).

    ``features`` keeps torchvision's block indices, so ImageNet weights load with
    ``encoder.features.load_state_dict(mobilenet_v2(weights=...).features.state_dict(), strict=False)``.
    """

    TAP_AFTER = (3, 6, 13, 16)

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        self.features = mobilenet_v2(weights=None, width_mult=width_mult).features[: self.TAP_AFTER[-1] + 1]
        self.out_channels = tuple(self.features[i].out_channels for i in self.TAP_AFTER)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self.TAP_AFTER:
                taps.append(x)
        return taps


@register_architecture("mobilenetv2_mff")
def mobilenetv2_mff(width_mult: float = 1.0, **decoder_config: int) -> MFFDepthNet:
    """The paper's student. ``decoder_config``: see :class:`~depth_kd_ros.models.mff.MFFDecoder`."""
    return MFFDepthNet(MobileNetV2Encoder(width_mult), **decoder_config)
