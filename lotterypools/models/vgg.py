"""CIFAR VGG-16 with batch norm, named as in the original repository."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.models.vgg import cfgs

from .normalize import NormalizeByChannelMeanStd


def _features(config: list, in_channels: int) -> nn.Sequential:
    """torchvision's VGG feature layout (conv with bias, BN, ReLU; 'M' = max pool) without its last pool."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config[:-1]:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    """``features`` + adaptive average pool to 1x1 + one linear ``classifier``.

    Initialised as the original: convs kaiming normal (fan_out) with zero bias, BN weight 1 and bias 0, the
    classifier normal with std 0.01 and zero bias.
    """

    def __init__(self, config: list, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.features = _features(config, in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):  # the original's (and torchvision's) VGG classifier init
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(self.normalize(x))).flatten(1)
        return self.classifier(x)


def vgg16_bn(**kw) -> nn.Module:
    return CifarVGG(cfgs["D"], **kw)
