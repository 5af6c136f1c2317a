"""The names and paper constants that command-line flags offer, torch-free so that building a parser stays fast.

The modules that use them (``imp``, ``loaders``, ``experiment``, ``corruptions``, ``imagefolder``) import them
from here; ``--help`` of every script imports only this module, ``cli`` and ``errors`` of the package.
"""

from __future__ import annotations

# lotterypools.tickets.imp: what the weights are rewound to after pruning.
PRUNE_TYPES = ("lt", "pt", "rewind_lt")

# lotterypools.data.loaders: how training batches are made.
LOADERS = ("resident", "dataloader")

# lotterypools.pools.run: the pool methods of Lottery_pools.py (the original's spellings, "liner_inter" included).
POOL_METHODS = ("Lottery_pools", "interpolate_swa", "interpolate_ema", "liner_inter")

# lotterypools.data.corruptions: the corruptions it can write (keys of CORRUPTIONS, sorted) and CIFAR-10-C's severities.
CORRUPTION_NAMES = ("brightness", "contrast", "defocus_blur", "fog", "gaussian_blur", "gaussian_noise",
                    "impulse_noise", "jpeg_compression", "pixelate", "shot_noise", "speckle_noise")
SEVERITIES = (1, 2, 3, 4, 5)

# The paper's interpolation coefficients alpha (Lottery_pools.py --interpolation_value_list).
PAPER_COEFFICIENTS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]

# ImageNet training images held out to choose tickets (the paper's 26000).
PAPER_VAL_SIZE = 26000


# How tables and figures name data sets and architectures (in words, as a paper would).
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "fashionmnist": "Fashion-MNIST", "mnist": "MNIST",
                 "imagenet": "ImageNet"}
ARCH_NAMES = {"conv2": "Conv-2", "conv4": "Conv-4", "conv6": "Conv-6", "resnet20s": "ResNet-20",
              "resnet18": "ResNet-18", "resnet50": "ResNet-50", "vgg16_bn": "VGG-16 (BN)",
              "imagenet_resnet_18": "ResNet-18", "imagenet_resnet_34": "ResNet-34", "imagenet_resnet_50": "ResNet-50"}


def describe(arch: str, dataset: str) -> str:
    """``conv4``, ``fashionmnist`` -> ``Conv-4 on Fashion-MNIST`` (unknown names are kept as they are)."""
    return f"{ARCH_NAMES.get(arch, arch)} on {DATASET_NAMES.get(dataset, dataset)}"
