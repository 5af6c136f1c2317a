"""Every flag of the command-line scripts, as argparse groups: torch-free, so that ``--help`` returns at once.

The glue from parsed flags to the package (data, models, devices, configs) is in :mod:`lotterypools.cli.setup`;
the scripts themselves are in :mod:`lotterypools.cli.commands`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import Any, Iterable, Mapping

from ..config.imagenet import ImageNetData
from ..config.names import SEVERITIES
from ..config.pools import PoolSearchSettings
from ..config.settings import add_config_arguments
from .aliases import PRINT_FREQ, add_no_effect_flags, aliases_of
from ..core.console import add_progress_argument


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data`` (a folder), ``--dataset`` and ``--workers`` (IMPConfig's), ``--input_size``, ``--no_download``."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", default="../data", help="folder holding (or receiving) the data set (default ../data)")
    group.add_argument("--input_size", type=int, default=None,
                       help="input side length; taken from the data set when omitted, and must match it when given")
    group.add_argument("--no_download", action="store_true", help="never download a missing data set")
    add_config_arguments(parser, {"data": "data set", "training": "data loading"}, only=("dataset", "workers"))


def add_model_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """``--arch`` and ``--seed`` (IMPConfig's), ``--imagenet_arch``, ``--device``, ``--gpu``."""
    add_config_arguments(parser, {"model": "model and seed"}, defaults=defaults, only=("arch", "seed"))
    group = parser.add_argument_group("device")
    group.add_argument("--imagenet_arch", action="store_true",
                       help="use the ImageNet stem (7x7 conv, max pool) for resnet18/resnet50 instead of the CIFAR stem")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: cuda when available)")
    group.add_argument("--gpu", type=int, default=None, help="CUDA device index (default 0)")


def add_training_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None,
                           skip: Iterable[str] = ("workers",), print_freq: bool = True) -> None:
    """The SGD, schedule and speed flags, generated from :class:`lotterypools.config.settings.IMPConfig` (with ``defaults``).

    ``--workers`` comes with the data flags in the CIFAR scripts, hence skipped here by default; ``print_freq``
    adds the original's ``--print_freq``, accepted with a note that it has no effect.
    """
    add_config_arguments(parser, {"training": "training"}, defaults=defaults, skip=skip)
    if print_freq:
        add_no_effect_flags(parser, entries=(PRINT_FREQ,))


def add_pruning_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None,
                          skip: Iterable[str] = ()) -> None:
    """The IMP flags (rounds, rate, rewinding, ticket), generated from :class:`lotterypools.config.settings.IMPConfig`."""
    add_config_arguments(parser, {"pruning": "pruning"}, defaults=defaults, skip=skip)


def training_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the data, model and training flags of the training scripts."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_training_arguments(parser)
    return parser


def default_save_dir(args: argparse.Namespace) -> Path:
    """A readable run folder under the working directory."""
    rewind = f"_rewind{args.rewind_epoch}" if args.prune_type == "rewind_lt" else ""
    return Path("runs") / f"{args.dataset}_{args.arch}_{args.prune_type}{rewind}_seed{args.seed}"


def add_pool_arguments(parser: argparse.ArgumentParser, script: str = "lottery_pools",
                       defaults: Mapping[str, Any] | None = None) -> None:
    """The search flags, generated from :class:`~lotterypools.config.pools.PoolSearchSettings`; the BN batch is
    ``--bn_batch_size`` with the script's spelling from its alias table; ``defaults`` are the script's; and the
    OOD flags."""
    add_config_arguments(parser, {"search": "Lottery Pools", "targets": "targets", "bn": "BN recalibration"},
                         cls=PoolSearchSettings, defaults=defaults, aliases=aliases_of(script))
    add_progress_argument(parser)
    add_ood_arguments(parser)


def add_ood_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    group = parser.add_argument_group("out-of-distribution evaluation")
    group.add_argument("--ood_data", default=None, required=required,
                       help="folder in the CIFAR-10-C layout (<corruption>.npy + labels.npy): the official "
                            "CIFAR-10-C/100-C or one written by make_corrupted.py" +
                            ("" if required else " (default none: no OOD evaluation)"))
    group.add_argument("--corruptions", nargs="+", default=None,
                       help="corruptions to evaluate (default every .npy in --ood_data)")
    group.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES),
                       help="severities 1..5 to evaluate (default all five)")


def add_imagenet_arguments(parser: argparse.ArgumentParser, default_seed: int) -> None:
    """Data, model, device and launcher flags, spelled as the original ImageNet scripts."""
    parser.add_argument("data", help="ImageFolder root holding train/ (trains; a held-out part chooses) and val/ (reports)")
    group = parser.add_argument_group("model and processes")
    group.add_argument("--arch", default="imagenet_resnet_18",
                       help="imagenet_resnet_18/34/50 (OpenLTH's), or any CIFAR architecture name for small tests "
                            "(default imagenet_resnet_18)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: a GPU per process when there are GPUs)")
    group.add_argument("--local_rank", "--local-rank", type=int, default=None,
                       help="set by multiproc.py / torch.distributed.launch; LOCAL_RANK from torchrun wins")
    add_config_arguments(parser, {"model": "seed", "training": "data loading and precision"},
                         defaults={"seed": default_seed, "workers": 8}, only=("seed", "workers", "amp"))
    add_config_arguments(parser, {"data": "ImageFolder split"}, cls=ImageNetData)
