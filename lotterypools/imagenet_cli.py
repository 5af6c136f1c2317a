"""Flags and set-up shared by the ImageNet scripts (``ImageNet/Lottery_pools.py`` and ``ImageNet/main_imp.py``)."""

from __future__ import annotations

import argparse
from typing import Callable

from torch import nn

from .device import seed_everything
from .distributed import DistributedContext, init_distributed
from .imagefolder import PAPER_VAL_SIZE, ImageFolderSplits, load_image_folders
from .models import build_imagenet_model
from .results import log


def add_imagenet_arguments(parser: argparse.ArgumentParser, default_seed: int, save_dir_default: str | None = None,
                           save_dir_help: str = "the OpenLTH run folder holding level_<k>/main/") -> None:
    """Data, model, device and launcher flags, spelled as the original ImageNet scripts (``--save_dir`` is
    required unless ``save_dir_default`` is given)."""
    parser.add_argument("data", help="ImageFolder root holding train/ (trains; a held-out part chooses) and val/ (reports)")
    parser.add_argument("--save_dir", required=save_dir_default is None, default=save_dir_default, help=save_dir_help)
    group = parser.add_argument_group("data, model and processes")
    group.add_argument("--arch", default="imagenet_resnet_18",
                       help="imagenet_resnet_18/34/50 (OpenLTH's), or any CIFAR architecture name for small tests "
                            "(default imagenet_resnet_18)")
    group.add_argument("-j", "--workers", type=int, default=8, help="data-loading worker processes per process (default 8)")
    group.add_argument("-p", "--print_freq", type=int, default=500,
                       help="kept for compatibility: progress bars replace the periodic prints (default 500)")
    group.add_argument("--val_size", type=int, default=PAPER_VAL_SIZE,
                       help="training images held out to choose tickets, the same on every run (default 26000, the "
                            "paper's; lowered to a tenth, with a warning, for a folder of fewer than twice as many)")
    group.add_argument("--split_seed", type=int, default=0, help="seed of the held-out split (default 0)")
    group.add_argument("--input_size", type=int, default=224,
                       help="crop side; test images are resized to 256/224 of it first (default 224)")
    group.add_argument("--fp16", action="store_true", help="mixed precision with torch.autocast (bf16); no apex")
    group.add_argument("--seed", type=int, default=default_seed, help=f"random seed (default {default_seed})")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: a GPU per process when there are GPUs)")
    group.add_argument("--local_rank", "--local-rank", type=int, default=None,
                       help="set by multiproc.py / torch.distributed.launch; LOCAL_RANK from torchrun wins")
    group.add_argument("--master_port", type=int, default=None,
                       help="read by multiproc.py when it has no --master_port of its own; ignored by this script")


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
