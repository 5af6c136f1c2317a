"""Every flag of the command-line scripts, as argparse groups: torch-free, so that ``--help`` returns at once.

The glue from parsed flags to the package (data, models, devices, configs) is in :mod:`lotterypools.cli_setup`;
the scripts themselves are in :mod:`lotterypools.commands`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .choices import LOADERS, PAPER_COEFFICIENTS, PAPER_VAL_SIZE, POOL_METHODS, SEVERITIES
from .errors import UserError

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
                            "pass over the training split (default 0: full pass, as the original)")
    group.add_argument("--prune_mode", default="during", choices=("during", "after"),
                       help="re-prune after every interpolation (during, the paper's) or once at the end (after)")
    group.add_argument("--targets", type=int, nargs="+", default=None, help="only these target rounds (default all)")
    group.add_argument("--save_pooled", action="store_true",
                       help="write every pooled ticket to <save_dir>/<method>/<k>model_SA_best.pth.tar")
    group.add_argument("--inference", action="store_true",
                       help="evaluate the tickets first (always done; kept for compatibility)")
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
    parser.add_argument("--save_dir", required=True, help="the OpenLTH run folder holding level_<k>/main/")
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
