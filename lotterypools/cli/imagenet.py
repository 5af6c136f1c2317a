"""Set-up shared by the ImageNet scripts (their flags are in :mod:`lotterypools.cli.flags`)."""

from __future__ import annotations

import argparse
from typing import Callable

from torch import nn

from ..core.device import seed_everything
from ..training.distributed import DistributedContext, init_distributed
from ..data.imagefolder import ImageFolderSplits, load_image_folders
from ..models import build_imagenet_model
from ..core.console import log


def start_processes(args: argparse.Namespace) -> DistributedContext:
    """Join the process group (if launched with several processes) and seed this process."""
    context = init_distributed(args.device, args.local_rank)
    seed_everything(args.seed)
    return context


def load_imagefolder_data(args: argparse.Namespace, context: DistributedContext) -> ImageFolderSplits:
    """The ImageFolder splits of ``args.data``; only rank 0 prints the held-out-size warning."""
    quiet: Callable[[str], None] = lambda message: None
    return load_image_folders(args.data, args.val_size, args.split_seed, args.input_size,
                              warn=log if context.is_main else quiet)


def imagenet_model_factory(args: argparse.Namespace, num_classes: int) -> Callable[[], nn.Module]:
    """A function building the ``--arch`` model (fails early on an unknown name)."""

    def factory() -> nn.Module:
        return build_imagenet_model(args.arch, num_classes, args.input_size)

    factory()
    return factory
