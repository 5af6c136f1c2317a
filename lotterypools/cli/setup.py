"""The glue from parsed flags (:mod:`lotterypools.cli.flags`) to the package: data, model factory, device, IMP config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..config.settings import config_from_args
from .aliases import say_no_effect
from ..data.datasets import DataSplits, dataset_spec, load_dataset
from ..core.device import resolve_device, seed_everything
from ..core.errors import UserError
from ..core.files import check_writable_folder
from ..tickets.imp import IMPConfig
from ..models import build_model


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


def imp_config(args: argparse.Namespace, **overrides) -> IMPConfig:
    """A validated :class:`IMPConfig` from the parsed flags (generated from it); ``overrides`` fix other fields.

    Schedules that would silently not decay (milestones past the last epoch) are said out loud here.
    """
    config = config_from_args(args, **overrides)
    say_no_effect(args)
    for note in config.schedule_notes():
        print(note, flush=True)
    return config


def start_training_job(args: argparse.Namespace, save_dir: Path) -> tuple[Callable[[], nn.Module], torch.device, DataSplits]:
    """Model factory, device and data of a training script, its output folder checked before the data is read."""
    factory = model_factory(args)
    check_writable_folder(save_dir, "--save_dir", create=False)
    device = setup_device(args)
    data = load_data(args)
    print(f"{args.dataset} from {data.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test; "
          f"{args.arch} on {device}; output {save_dir}", flush=True)
    return factory, device, data
