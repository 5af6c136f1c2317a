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


def default_save_dir(args: argparse.Namespace) -> Path:
    """A readable run folder under the working directory."""
    rewind = f"_rewind{args.rewind_epoch}" if args.prune_type == "rewind_lt" else ""
    return Path("runs") / f"{args.dataset}_{args.arch}_{args.prune_type}{rewind}_seed{args.seed}"
