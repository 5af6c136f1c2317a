"""ImageNet ResNets whose state_dict matches OpenLTH's ``imagenet_resnet_{18,34,50}`` checkpoints.

OpenLTH keeps torchvision's ResNet as the attribute ``model`` of a thin wrapper, so its keys read
``model.conv1.weight``, ``model.layer1.0.bn1.running_mean``, ..., ``model.fc.weight``. Inputs are
normalised by the data pipeline (as in OpenLTH), not inside the network.
"""

from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn

DEPTHS: dict[int, Callable[..., nn.Module]] = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
}


class OpenLTHImageNetResNet(nn.Module):
    """torchvision's ResNet held as ``self.model``, initialised as OpenLTH does for ImageNet.

    Initialisation: kaiming-normal conv and linear weights, batch-norm scales uniform in [0, 1).
    """

    def __init__(self, depth: int, num_classes: int = 1000):
        super().__init__()
        self.model = DEPTHS[depth](weights=None, num_classes=num_classes)
        for module in self.model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight)

    def forward(self, images):
        return self.model(images)


def imagenet_resnet_18(num_classes: int = 1000) -> nn.Module:
    return OpenLTHImageNetResNet(18, num_classes)


def imagenet_resnet_34(num_classes: int = 1000) -> nn.Module:
    return OpenLTHImageNetResNet(34, num_classes)


def imagenet_resnet_50(num_classes: int = 1000) -> nn.Module:
    return OpenLTHImageNetResNet(50, num_classes)
