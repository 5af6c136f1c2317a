"""The other models of FreeTickets' CIFAR registry (its ``sparselearning/models.py``, after SNIP's code):
``vgg-c``, ``vgg-d``, ``vgg-like``, ``alexnet-s``, ``alexnet-b``, ``lenet5``, ``lenet300-100`` and ``MLPCIFAR10``.

Layers, widths, biases and PyTorch's default initialisation are the original's, so a state dict carries
over key for key (plus our ``normalize`` buffers). Two changes, both identity on the original's inputs:
the models return logits (the original returns ``log_softmax``; our loss is ``cross_entropy``), and sizes that
the original hard-codes for its data set follow ``in_channels`` / ``image_size`` so that every model also
fits the other data sets. ``vgg-d``/``vgg-like`` pool with ``ceil_mode`` (the same on 32x32 inputs, where
every pooled side is even; on 28x28 it keeps a 1x1 map after the fifth pool instead of none).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .normalize import NormalizeByChannelMeanStd

# M: 2x2 max pool; a number: 3x3 conv (padding 1) with that many channels; (k, n): k x k conv, padding 1.
VGG_CONFIGS = {
    "like": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (1, 256), "M", 512, 512, (1, 512), "M", 512, 512, (1, 512), "M"],
}


class SnipVGG16(nn.Module):
    """The original's ``VGG16(config)``: conv+BN+ReLU features, then a classifier with BN instead of dropout
    (C and D: 512-512-classes, three linear layers; like: 512-classes, two)."""

    def __init__(self, config: str, num_classes: int = 10, in_channels: int = 3, mean: Sequence[float] = (0.0,) * 3,
                 std: Sequence[float] = (1.0,) * 3, image_size: int = 32):
        super().__init__()
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for item in VGG_CONFIGS[config]:
            if item == "M":
                # VGG-C's 1x1 convs with padding 1 make odd sides, which the original floors; D/like: see the module doc
                ceil = config != "C"
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil))
                side = -(-side // 2) if ceil else side // 2
            else:
                kernel, width = item if isinstance(item, tuple) else (3, item)
                layers += [nn.Conv2d(channels, width, kernel_size=kernel, padding=1), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                channels, side = width, side + 3 - kernel
        self.features = nn.Sequential(*layers)
        flat = channels * side * side  # 512 (D, like) and 2048 (C) on 32x32 inputs, as the original hard-codes
        if config in ("C", "D"):
            self.classifier = nn.Sequential(
                nn.Linear(flat, 512), nn.ReLU(True), nn.BatchNorm1d(512),
                nn.Linear(512, 512), nn.ReLU(True), nn.BatchNorm1d(512),
                nn.Linear(512, num_classes))
        else:
            self.classifier = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(True), nn.BatchNorm1d(512),
                                            nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))


class SnipAlexNet(nn.Module):
    """The original's ``AlexNet(config)``: five strided conv+BN+ReLU layers (no pooling), then 1024 (``s``) or
    2048 (``b``) wide hidden linear layers with BN."""

    def __init__(self, config: str, num_classes: int = 10, in_channels: int = 3, mean: Sequence[float] = (0.0,) * 3,
                 std: Sequence[float] = (1.0,) * 3, image_size: int = 32):
        super().__init__()
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        factor = 1 if config == "s" else 2
        convs = [(in_channels, 96, 11, 2), (96, 256, 5, 2), (256, 384, 3, 1), (384, 384, 3, 1), (384, 256, 3, 1)]
        layers: list[nn.Module] = []
        side = image_size
        for c_in, c_out, kernel, padding in convs:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=2, padding=padding, bias=True),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            side = (side + 2 * padding - kernel) // 2 + 1
        self.features = nn.Sequential(*layers)
        hidden = 1024 * factor
        self.classifier = nn.Sequential(
            nn.Linear(256 * side * side, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))


class LeNet5Caffe(nn.Module):
    """The original's ``LeNet_5_Caffe``: conv 5x5 (20, no padding), pool, conv 5x5 (50), pool, fc 500, fc."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, mean: Sequence[float] = (0.0,),
                 std: Sequence[float] = (1.0,), image_size: int = 28):
        super().__init__()
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 20, 5, padding=0, bias=True)
        self.conv2 = nn.Conv2d(20, 50, 5, bias=True)
        side = ((image_size - 4) // 2 - 4) // 2  # 4 on MNIST, as the original's 50 * 4 * 4
        self.fc3 = nn.Linear(50 * side * side, 500)
        self.fc4 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(self.normalize(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc4(torch.relu(self.fc3(x.flatten(1))))


class MLP(nn.Module):
    """The original's ``LeNet_300_100`` (hidden 300, 100) and ``MLP_CIFAR10`` (hidden 1024, 512)."""

    def __init__(self, hidden: Sequence[int], num_classes: int = 10, in_channels: int = 1,
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), image_size: int = 28):
        super().__init__()
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        sizes = [in_channels * image_size * image_size, *hidden]
        for index, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            setattr(self, f"fc{index + 1}", nn.Linear(n_in, n_out, bias=True))
        setattr(self, f"fc{len(hidden) + 1}", nn.Linear(sizes[-1], num_classes, bias=True))
        self.depth = len(hidden) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x).flatten(1)
        for index in range(1, self.depth):
            x = torch.relu(getattr(self, f"fc{index}")(x))
        return getattr(self, f"fc{self.depth}")(x)


def vgg_c(**kw) -> nn.Module:
    return SnipVGG16("C", **kw)


def vgg_d(**kw) -> nn.Module:
    return SnipVGG16("D", **kw)


def vgg_like(**kw) -> nn.Module:
    return SnipVGG16("like", **kw)


def alexnet_s(**kw) -> nn.Module:
    return SnipAlexNet("s", **kw)


def alexnet_b(**kw) -> nn.Module:
    return SnipAlexNet("b", **kw)


def lenet5(**kw) -> nn.Module:
    return LeNet5Caffe(**kw)


def lenet300_100(**kw) -> nn.Module:
    return MLP([300, 100], **kw)


def mlp_cifar10(**kw) -> nn.Module:
    return MLP([1024, 512], **kw)
