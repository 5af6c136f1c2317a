"""Model registry: every architecture is built by :func:`build_model` from its name."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from ..core.errors import UserError
from . import cifar_resnet, conv, freetickets_models, imagenet_resnet, vgg, wide_resnet

CIFAR_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": cifar_resnet.resnet18,
    "resnet50": cifar_resnet.resnet50,
    "resnet20s": cifar_resnet.resnet20s,
    "resnet44s": cifar_resnet.resnet44s,
    "resnet56s": cifar_resnet.resnet56s,
    "vgg16_bn": vgg.vgg16_bn,
    "conv2": conv.conv2,
    "conv4": conv.conv4,
    "conv6": conv.conv6,
    "wrn-28-10": lambda **kw: wide_resnet.wide_resnet("wrn-28-10", **kw),
    # FreeTickets' other CIFAR registry entries (its main_DST.py names)
    "vgg-c": freetickets_models.vgg_c,
    "vgg-d": freetickets_models.vgg_d,
    "vgg-like": freetickets_models.vgg_like,
    "alexnet-s": freetickets_models.alexnet_s,
    "alexnet-b": freetickets_models.alexnet_b,
    "lenet5": freetickets_models.lenet5,
    "lenet300-100": freetickets_models.lenet300_100,
    "MLPCIFAR10": freetickets_models.mlp_cifar10,
}
# Any wide ResNet by name, ``wrn-<depth>-<width>`` (depth 6n+4), besides the listed wrn-28-10.
WIDE_RESNET_PATTERN = "wrn-D-W"

# OpenLTH's ImageNet ResNets (state_dict keys ``model.*``, normalisation done by the data pipeline).
IMAGENET_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "imagenet_resnet_18": imagenet_resnet.imagenet_resnet_18,
    "imagenet_resnet_34": imagenet_resnet.imagenet_resnet_34,
    "imagenet_resnet_50": imagenet_resnet.imagenet_resnet_50,
}

# The PrAC code's names for the same architectures (its README's --arch values).
ARCH_ALIASES = {"res20s": "resnet20s", "res56s": "resnet56s", "res18": "resnet18", "res50": "resnet50"}

# Architectures whose constructor needs the input's side length (they end in a flatten).
_NEEDS_IMAGE_SIZE = {"conv2", "conv4", "conv6", "vgg-c", "vgg-d", "vgg-like", "alexnet-s", "alexnet-b", "lenet5",
                     "lenet300-100", "MLPCIFAR10"}


def build_model(arch: str, num_classes: int, in_channels: int = 3, mean: Sequence[float] = (0.0,) * 3,
                std: Sequence[float] = (1.0,) * 3, image_size: int = 32, imagenet_stem: bool = False) -> nn.Module:
    """Build an architecture by name; normalisation constants become buffers inside the model.

    ``imagenet_stem`` gives resnet18/resnet50 torchvision's 7x7 stride-2 stem and max pool (the original's
    ``--imagenet_arch``). The PrAC names of :data:`ARCH_ALIASES` are accepted.
    """
    arch = ARCH_ALIASES.get(arch, arch)
    if imagenet_stem:
        if arch not in ("resnet18", "resnet50"):
            raise UserError(f"--imagenet_arch applies to resnet18 and resnet50, not {arch!r}")
        return cifar_resnet.imagenet_stem_resnet(arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)
    if wide_resnet.parse_wrn_name(arch) is not None:
        return wide_resnet.wide_resnet(arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)
    if arch not in CIFAR_ARCHITECTURES:
        known = ", ".join(sorted(CIFAR_ARCHITECTURES) + [WIDE_RESNET_PATTERN])
        raise UserError(f"unknown architecture {arch!r}: choose one of {known}")
    kwargs = dict(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)
    if arch in _NEEDS_IMAGE_SIZE:
        kwargs["image_size"] = image_size
    return CIFAR_ARCHITECTURES[arch](**kwargs)


def build_imagenet_model(arch: str, num_classes: int, image_size: int = 224) -> nn.Module:
    """An ImageNet-pipeline model by name: OpenLTH's ``imagenet_resnet_*``, or any CIFAR architecture
    (its normalisation left as identity, since the ImageFolder pipeline normalises)."""
    check_imagenet_arch(arch)
    if arch in IMAGENET_ARCHITECTURES:
        return IMAGENET_ARCHITECTURES[arch](num_classes=num_classes)
    return build_model(arch, num_classes, image_size=image_size)


def check_imagenet_arch(arch: str) -> None:
    """One-line error for a name :func:`build_imagenet_model` does not know (checked before the data are scanned)."""
    if arch in IMAGENET_ARCHITECTURES or arch in CIFAR_ARCHITECTURES or wide_resnet.parse_wrn_name(arch) is not None:
        return
    known = ", ".join(sorted(IMAGENET_ARCHITECTURES) + sorted(CIFAR_ARCHITECTURES) + [WIDE_RESNET_PATTERN])
    raise UserError(f"unknown architecture {arch!r}: choose one of {known}")
