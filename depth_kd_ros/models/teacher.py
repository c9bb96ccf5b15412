"""Teacher: ResNet-34 encoder + MFF decoder (Hu et al., arXiv 2105.06143), ~22M parameters."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet34

from depth_kd_ros.models.mff import MFFDepthNet
from depth_kd_ros.models.registry import register_architecture


class ResNet34Encoder(nn.Module):
    """ResNet-34 stem + layer1..layer4 (64/128/256/512 ch at 1/4..1/32); no pooling head.

    Module names match torchvision's ``resnet34``, so its weights load with ``strict=False``
    (only ``fc.*`` is left over).
    """

    out_channels = (64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        net = resnet34(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]


@register_architecture("resnet34_mff")
def resnet34_mff(**decoder_config: int) -> MFFDepthNet:
    """The paper's teacher. ``decoder_config``: see :class:`~depth_kd_ros.models.mff.MFFDecoder`."""
    return MFFDepthNet(ResNet34Encoder(), **decoder_config)
