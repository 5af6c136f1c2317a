"""CIFAR ResNets with the original repository's parameter names and shapes.

``resnet20s/44s/56s``: He et al.'s CIFAR ResNets with parameter-free "option A" shortcuts.
``resnet18/50``: torchvision's ResNet with a 3x3 stride-1 stem and no max pool.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .normalize import NormalizeByChannelMeanStd


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the channels (no parameters)."""

    def __init__(self, pad_channels: int):
        super().__init__()
        self.pad_channels = pad_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_channels, self.pad_channels))


class ThinBasicBlock(nn.Module):
    """Basic block of the thin CIFAR ResNets."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut = ZeroPadShortcut(planes // 4) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ThinResNet(nn.Module):
    """resnet20s / 44s / 56s: widths 16/32/64, ``blocks`` basic blocks per stage."""

    def __init__(self, blocks: int, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, 1)
        self.layer2 = self._stage(16, 32, blocks, 2)
        self.layer3 = self._stage(32, 64, blocks, 2)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [ThinBasicBlock(in_planes, planes, stride)]
        layers += [ThinBasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class NormalizedResNet(ResNet):
    """torchvision's ResNet (ImageNet stem) with a normalisation module in front."""

    def __init__(self, block, layers, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__(block, layers, num_classes=num_classes)
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.normalize = NormalizeByChannelMeanStd(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.normalize(x))


class CifarResNet(NormalizedResNet):
    """The same with a CIFAR stem: a 3x3 stride-1 conv and no max pool."""

    def __init__(self, block, layers, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__(block, layers, num_classes, 3, mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()


def resnet20s(**kw) -> nn.Module:
    return ThinResNet(3, **kw)


def resnet44s(**kw) -> nn.Module:
    return ThinResNet(7, **kw)


def resnet56s(**kw) -> nn.Module:
    return ThinResNet(9, **kw)


def resnet18(**kw) -> nn.Module:
    return CifarResNet(BasicBlock, [2, 2, 2, 2], **kw)


def resnet50(**kw) -> nn.Module:
    return CifarResNet(Bottleneck, [3, 4, 6, 3], **kw)


def imagenet_stem_resnet(arch: str, **kw) -> nn.Module:
    """resnet18/resnet50 with torchvision's ImageNet stem."""
    blocks = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}[arch]
    return NormalizedResNet(*blocks, **kw)
