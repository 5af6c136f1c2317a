"""Small conv nets for CPU work, after Frankle and Carbin's Conv-2/4/6 (with batch norm, narrower).

Batch norm is added because Lottery Pools recalibrates it after every interpolation; the widths are a
quarter of the paper's so that an epoch of Fashion-MNIST runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .normalize import NormalizeByChannelMeanStd


class ConvNet(nn.Module):
    """Pairs of 3x3 conv+BN+ReLU followed by 2x2 max pool, then two hidden linear layers and ``fc``."""

    def __init__(self, widths: Sequence[int], num_classes: int, in_channels: int, mean: Sequence[float],
                 std: Sequence[float], image_size: int = 32, hidden: int = 128):
        super().__init__()
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
            if index % 2 == 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** (len(widths) // 2)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.classifier(self.features(self.normalize(x))))


def conv2(**kw) -> nn.Module:
    return ConvNet([16, 16], **kw)


def conv4(**kw) -> nn.Module:
    return ConvNet([16, 16, 32, 32], **kw)


def conv6(**kw) -> nn.Module:
    return ConvNet([16, 16, 32, 32, 64, 64], **kw)
