"""Every flag of the command-line scripts, as argparse groups: torch-free, so that ``--help`` returns at once.

The glue from parsed flags to the package (data, models, devices, configs) is in :mod:`lotterypools.cli.setup`;
the scripts themselves are in :mod:`lotterypools.cli.commands`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import Any, Iterable, Mapping

from ..config.names import PAPER_COEFFICIENTS, PAPER_VAL_SIZE, POOL_METHODS, SEVERITIES
from ..config.settings import add_config_arguments, parse_epoch_list
from ..core.console import add_progress_argument


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
                       help="resnet18, resnet50, resnet20s, resnet44s, resnet56s, vgg16_bn, conv2, conv4, conv6; the PrAC "
                            "names res18, res50, res20s, res56s are aliases (default resnet20s)")
    group.add_argument("--imagenet_arch", action="store_true",
                       help="use the ImageNet stem (7x7 conv, max pool) for resnet18/resnet50 instead of the CIFAR stem")
    group.add_argument("--seed", type=int, default=1, help="random seed (default 1; the paper's CIFAR runs use 41)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: cuda when available)")
    group.add_argument("--gpu", type=int, default=None, help="CUDA device index (default 0)")


def add_training_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None,
                           skip: Iterable[str] = ("workers",), print_freq: bool = True) -> None:
    """The SGD, schedule and speed flags, generated from :class:`lotterypools.config.settings.IMPConfig` (with ``defaults``).

    ``--workers`` comes with the data flags in the CIFAR scripts, hence skipped here by default; the
    ImageNet scripts have their own ``-p/--print_freq`` (``print_freq=False``).
    """
    add_config_arguments(parser, {"training": "training"}, defaults=defaults, skip=skip)
    if not print_freq:
        return
    group = parser.add_argument_group("compatibility")
    group.add_argument("--print_freq", type=int, default=50,
                       help="kept for compatibility: a progress bar and one line per epoch replace it")


def add_pruning_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None,
                          skip: Iterable[str] = ()) -> None:
    """The IMP flags (rounds, rate, rewinding, ticket), generated from :class:`lotterypools.config.settings.IMPConfig`."""
    add_config_arguments(parser, {"pruning": "pruning"}, defaults=defaults, skip=skip)


def training_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the data, model and training flags of the training scripts."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_training_arguments(parser)
    return parser


def parse_milestones(text: str) -> list[int]:
    """``"91,136"`` -> ``[91, 136]``."""
    return parse_epoch_list(text)


def default_save_dir(args: argparse.Namespace) -> Path:
    """A readable run folder under the working directory."""
    rewind = f"_rewind{args.rewind_epoch}" if args.prune_type == "rewind_lt" else ""
    return Path("runs") / f"{args.dataset}_{args.arch}_{args.prune_type}{rewind}_seed{args.seed}"


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Lottery Pools")
    group.add_argument("--interpolate_method", default="Lottery_pools", choices=POOL_METHODS,
                       help="Lottery_pools (greedy interpolation), interpolate_swa, interpolate_ema, or liner_inter "
                            "(linear paths between consecutive tickets) (default Lottery_pools)")
    group.add_argument("--search_num", type=int, default=3,
                       help="size of the candidate pool counting the target, as the original: search_num-1 "
                            "candidates (default 3; the paper uses all tickets, e.g. 19)")
    group.add_argument("--interpolation_value_list", type=float, nargs="+", default=PAPER_COEFFICIENTS,
                       help="coefficients alpha tried on each candidate; 0.5 alone gives Lottery Pools (average) "
                            "(default the paper's 11 values 0.05 ... 0.95)")
    group.add_argument("--EMA_value", type=float, default=0.95,
                       help="EMA weight on the incoming ticket for interpolate_ema (default 0.95, the paper's)")
    group.add_argument("--rewind_epoch", type=int, default=None, help="kept for compatibility; not used by the search")
    group.add_argument("--bn_batches", type=int, default=0,
                       help="recompute BN statistics on this many fixed, seeded training batches instead of a full "
                            "pass over the training split with fresh augmentation per trial (default 0: full pass, "
                            "as the original)")
    group.add_argument("--stacked_coefficients", action="store_true",
                       help="score all coefficients of a candidate together (stacked models through torch.func.vmap, "
                            "each with its own BN pass, batches side by side): the same choices up to float rounding, "
                            "K times the memory; for GPUs a single trial does not fill (default off: one by one)")
    group.add_argument("--prune_mode", default="during", choices=("during", "after"),
                       help="re-prune after every interpolation (during, the paper's) or once at the end (after)")
    group.add_argument("--targets", type=int, nargs="+", default=None,
                       help="target rounds to pool, e.g. --targets 3 7 (default: every round of the ticket folder)")
    group.add_argument("--overwrite", action="store_true",
                       help="recompute targets whose record (same method and settings) is already in the results "
                            "file; without it a rerun skips them and continues with the rest")
    group.add_argument("--save_pooled", action="store_true",
                       help="write every pooled ticket to <save_dir>/<method>/<k>model_SA_best.pth.tar")
    group.add_argument("--inference", action="store_true",
                       help="evaluate the tickets first (always done; kept for compatibility)")
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
    group.add_argument("--fp16", "--amp", dest="amp", action="store_true",
                       help="mixed precision with torch.autocast (bf16); no apex (--amp is the same)")
    group.add_argument("--seed", type=int, default=default_seed, help=f"random seed (default {default_seed})")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: a GPU per process when there are GPUs)")
    group.add_argument("--local_rank", "--local-rank", type=int, default=None,
                       help="set by multiproc.py / torch.distributed.launch; LOCAL_RANK from torchrun wins")
    group.add_argument("--master_port", type=int, default=None,
                       help="read by multiproc.py when it has no --master_port of its own; ignored by this script")
