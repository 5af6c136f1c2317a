r"""Find lottery tickets with PrAC: IMP on the pruning-aware critical set (Zhang et al., ICML 2021).

Round 0 trains the dense network on the whole training split; every later round trains on the samples the
previous round forgot or never learned, plus (from round 2) those the dense and sparse networks disagree
on, for epochs scaled by the set's size, stopping early once the pruning mask stops moving.

Example (the PrAC README's command):
    python -u main_PrAC_imp.py --data ../data --dataset cifar10 --arch resnet20s \
        --split_file npy_files/cifar10-train-val.npy --batch_size 128 --lr 0.1 --pruning_times 16 \
        --eb_eps 0.08 --prune_type rewind_lt --rewind_epoch 2 --threshold 0 --save_dir PrAC_lt_cifar10_res20s
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..aliases import aliases_of
from ..flags import add_pruning_arguments, training_parser
from ...config.prac import PRAC_PRUNE_TYPES, PrACRewind, PrACSettings
from ...config.settings import add_config_arguments, config_from_args
from ...core.errors import UserError, cli_entry
from ...core.files import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__)
    parser.add_argument("--split_file", default=None,
                        help="the original's 1-D integer .npy array of training image indices; its first entries "
                             "(as many as the training split holds) are round 0's set (default: the fixed split of main_imp.py)")
    add_pruning_arguments(parser, skip=("random_prune", "include_linear", "ticket", "rewind_epoch"))
    add_config_arguments(parser, {"pruning": "pruning"}, cls=PrACRewind, aliases=aliases_of("main_prac_imp"))
    add_config_arguments(parser, {"stop": "early stop", "selection": "data selection"}, cls=PrACSettings)
    run = parser.add_argument_group("files")
    run.add_argument("--save_dir", default=None, help="run folder (default runs/<dataset>_<arch>_PrAC_<prune_type>_seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--checkpoint", default=None, help="with --resume: the '<k>checkpoint.pth.tar' to continue from")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """One-line errors for flags that cannot work, before any data is read."""
    if args.checkpoint and not args.resume:
        raise UserError("--checkpoint without --resume: add --resume to continue from that checkpoint")
    if args.prune_type not in PRAC_PRUNE_TYPES:
        raise UserError(f"--prune_type {args.prune_type} is not PrAC's: choose one of {', '.join(PRAC_PRUNE_TYPES)}")
    config_from_args(args, cls=PrACSettings)
    if args.prune_type == "rewind_lt" and not args.rewind_index < args.epochs - 1:
        raise UserError(f"--rewind_index {args.rewind_index} (--rewind_epoch in the PrAC code) must be in "
                        f"0..{args.epochs - 2}: the weights after epoch index {args.rewind_index} are the rewind "
                        f"point, and --epochs {args.epochs} must train past it")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_arguments(args)
    from ..setup import imp_config, load_data, model_factory, setup_device
    from ...tickets.prac import read_split_file
    from ...analysis.plots import plot_training_curve
    from ...core.console import progress_wanted
    from ...tickets.prac_imp import PrACRun

    if args.resume and args.checkpoint and args.save_dir is None:
        args.save_dir = str(Path(args.checkpoint).parent)
    save_dir = Path(args.save_dir) if args.save_dir else Path("runs") / f"{args.dataset}_{args.arch}_PrAC_{args.prune_type}_seed{args.seed}"
    # the PrAC code's --rewind_epoch is an epoch index: its rewind point (and file name) is one epoch later
    rewind_point = args.rewind_index + 1 if args.prune_type == "rewind_lt" else args.rewind_index
    config = imp_config(args, pruning_times=args.pruning_times, rate=args.rate, prune_type=args.prune_type,
                        rewind_epoch=rewind_point)
    settings = config_from_args(args, cls=PrACSettings)
    factory = model_factory(args)
    check_writable_folder(save_dir, "--save_dir", create=False)
    device = setup_device(args)
    data = load_data(args)
    first = None
    if args.split_file:
        first = read_split_file(args.split_file, len(data.train) + len(data.val), len(data.train))
    print(f"{args.dataset} from {data.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test; "
          f"round 0 on {len(data.train) if first is None else first.numel()} images; {args.arch} on {device}; "
          f"run folder {save_dir}", flush=True)
    PrACRun(config, factory, data, device, save_dir, settings, first, plot_curve=plot_training_curve,
            progress=progress_wanted()).run(
        resume=args.resume, checkpoint=Path(args.checkpoint) if args.checkpoint else None)


if __name__ == "__main__":
    main()
