"""Argument groups shared by the command-line scripts, and the glue from parsed flags to the package."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .data import DataSplits, dataset_spec, load_dataset
from .device import resolve_device, seed_everything
from .errors import UserError
from .imp import IMPConfig
from .loaders import LOADERS
from .models import build_model

PAPER_COEFFICIENTS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", default="../data", help="folder holding (or receiving) the data set (default ../data)")
    group.add_argument("--dataset", default="cifar10", help="cifar10, cifar100, fashionmnist or mnist (default cifar10)")
    group.add_argument("--input_size", type=int, default=None,
                       help="input side length; taken from the data set when omitted, and must match it when given")
    group.add_argument("--workers", type=int, default=2,
                       help="DataLoader workers for --loader dataloader (default 2; the resident path needs none)")
    group.add_argument("--no_download", action="store_true", help="never download a missing data set")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and device")
    group.add_argument("--arch", default="resnet20s",
                       help="resnet18, resnet50, resnet20s, resnet44s, resnet56s, vgg16_bn, conv2, conv4, conv6 (default resnet20s)")
    group.add_argument("--imagenet_arch", action="store_true",
                       help="use the ImageNet stem (7x7 conv, max pool) for resnet18/resnet50 instead of the CIFAR stem")
    group.add_argument("--seed", type=int, default=1, help="random seed (default 1; the paper's CIFAR runs use 41)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: cuda when available)")
    group.add_argument("--gpu", type=int, default=None, help="CUDA device index (default 0)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The original's SGD and schedule flags (shared by main_imp.py and main_train.py)."""
    train = parser.add_argument_group("training")
    train.add_argument("--batch_size", type=int, default=128, help="batch size (default 128)")
    train.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default 0.1)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--weight_decay", type=float, default=1e-4, help="weight decay (default 1e-4)")
    train.add_argument("--epochs", type=int, default=182, help="training epochs (per IMP round in main_imp.py; default 182)")
    train.add_argument("--warmup", type=int, default=0, help="epochs of linear learning-rate warm-up (default 0)")
    train.add_argument("--decreasing_lr", default="91,136", help="epochs at which the lr is divided by 10 (default 91,136)")
    train.add_argument("--print_freq", type=int, default=50, help="kept for compatibility: a progress bar and one line per epoch replace it")
    train.add_argument("--amp", action="store_true", help="bf16 autocast for training and evaluation")
    train.add_argument("--channels_last", action="store_true", help="channels-last memory format (faster convolutions on GPUs)")
    train.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps on GPUs)")
    train.add_argument("--loader", default="resident", choices=LOADERS,
                       help="resident: the data set as uint8 on the device, crop/flip there (default); dataloader: "
                            "PIL images through torchvision transforms and a DataLoader with --workers, as the original")


def training_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the data, model and training flags of the training scripts."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_training_arguments(parser)
    return parser


def load_data(args: argparse.Namespace) -> DataSplits:
    """The data set named by ``--dataset`` from ``--data``, checked against ``--input_size``."""
    spec = dataset_spec(args.dataset)
    if args.input_size is not None and args.input_size != spec.image_size:
        raise UserError(f"--input_size {args.input_size} does not match {spec.name}'s {spec.image_size}; omit it")
    return load_dataset(args.dataset, args.data, download=not args.no_download)


def model_factory(args: argparse.Namespace) -> Callable[[], nn.Module]:
    """A function building the ``--arch`` model for the ``--dataset`` (fails early on an unknown name)."""
    spec = dataset_spec(args.dataset)

    def factory() -> nn.Module:
        return build_model(args.arch, spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size,
                           imagenet_stem=args.imagenet_arch)

    factory()  # an unknown --arch fails here, before any data is read
    return factory


def setup_device(args: argparse.Namespace) -> torch.device:
    """Seed everything and pick the device."""
    seed_everything(args.seed)
    return resolve_device(args.device, args.gpu)


def parse_milestones(text: str) -> list[int]:
    """``"91,136"`` -> ``[91, 136]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--decreasing_lr {text!r} must be comma-separated epochs, e.g. 91,136") from None


def imp_config(args: argparse.Namespace, **pruning) -> IMPConfig:
    """An :class:`IMPConfig` from the data, model and training flags; ``pruning`` gives the pruning fields."""
    config = IMPConfig(arch=args.arch, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                       milestones=parse_milestones(args.decreasing_lr), warmup=args.warmup, seed=args.seed,
                       amp=args.amp, channels_last=args.channels_last, compile=args.compile, loader=args.loader,
                       workers=args.workers, **pruning)
    config.validate()
    return config


def default_save_dir(args: argparse.Namespace) -> Path:
    """A readable run folder under the working directory."""
    rewind = f"_rewind{args.rewind_epoch}" if args.prune_type == "rewind_lt" else ""
    return Path("runs") / f"{args.dataset}_{args.arch}_{args.prune_type}{rewind}_seed{args.seed}"
