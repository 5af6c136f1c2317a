"""Wide ResNets (Zagoruyko and Komodakis) as FreeTickets' ``sparselearning/models.py`` builds them: ``wrn-D-W``.

Pre-activation basic blocks (BN-ReLU-conv3x3, BN-ReLU, dropout, conv3x3) with a 1x1 conv shortcut where the
shape changes; widths 16, 16W, 32W, 64W; (D - 4) / 6 blocks per stage; BN-ReLU, global average pool, ``fc``.
Bias-free convs with normal(0, sqrt(2 / (k * k * C_out))) weights, BN (1, 0), zero fc bias, as the original.
The forward returns logits (the original returns log_softmax; cross-entropy on logits is the same loss).
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError
from .normalize import NormalizeByChannelMeanStd

NAME = re.compile(r"^wrn-(\d+)-(\d+)$")


class WideBasicBlock(nn.Module):
    """Pre-activation basic block; the shortcut is a 1x1 conv when the number of channels changes."""

    def __init__(self, in_planes: int, planes: int, stride: int, drop_rate: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False) if in_planes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """``wrn-<depth>-<widen>``: three stages of (depth - 4) / 6 wide basic blocks."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int, mean: Sequence[float],
                 std: Sequence[float], drop_rate: float = 0.0):
        super().__init__()
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1 = self._stage(widths[0], widths[1], blocks, 1, drop_rate)
        self.block2 = self._stage(widths[1], widths[2], blocks, 2, drop_rate)
        self.block3 = self._stage(widths[2], widths[3], blocks, 2, drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                module.weight.data.normal_(0, math.sqrt(2.0 / fan))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.data.fill_(1)
                module.bias.data.zero_()
            elif isinstance(module, nn.Linear):
                module.bias.data.zero_()

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int, drop_rate: float) -> nn.Sequential:
        layers = [WideBasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1, drop_rate)
                  for i in range(blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.normalize(x))
        x = self.block3(self.block2(self.block1(x)))
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def parse_wrn_name(name: str) -> tuple[int, int] | None:
    """``"wrn-28-10"`` -> (28, 10); ``None`` for other names; a one-line error for an impossible depth."""
    match = NAME.match(name)
    if not match:
        return None
    depth, widen = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 or widen < 1:
        raise UserError(f"{name}: a wide ResNet needs depth 6n+4 (10, 16, 22, 28, ...) and width at least 1, e.g. wrn-28-10")
    return depth, widen


def wide_resnet(name: str, **kw) -> nn.Module:
    """The ``wrn-D-W`` model of that name."""
    depth, widen = parse_wrn_name(name)
    return WideResNet(depth, widen, **kw)
