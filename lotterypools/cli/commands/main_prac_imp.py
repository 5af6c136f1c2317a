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

from ..flags import training_parser
from ...core.errors import UserError, cli_entry
from ...core.files import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__)
    parser.add_argument("--split_file", default=None,
                        help="the original's 1-D integer .npy array of training image indices; its first entries "
                             "(as many as the training split holds) are round 0's set (default: the fixed split of main_imp.py)")
    imp = parser.add_argument_group("pruning")
    imp.add_argument("--pruning_times", type=int, default=16,
                     help="number of trained networks: the dense one plus pruning_times-1 pruned ones (default 16)")
    imp.add_argument("--rate", type=float, default=0.2, help="fraction of the remaining conv weights pruned per round (default 0.2)")
    imp.add_argument("--prune_type", default="lt", choices=("lt", "rewind_lt"),
                     help="lt: rewind weights to initialisation; rewind_lt: to the weights after epoch index --rewind_epoch (default lt)")
    imp.add_argument("--rewind_epoch", type=int, default=2,
                     help="0-based epoch whose end is the rewind point for rewind_lt, as in the PrAC code: 2 = after 3 epochs (default 2)")
    imp.add_argument("--eb_eps", type=float, default=0.08,
                     help="mask-distance threshold of the early stop, in (0, 1) (default 0.08)")
    imp.add_argument("--queue_length", type=int, default=5,
                     help="epochs in a row the mask distance must stay below --eb_eps to stop a round (default 5)")
    prac = parser.add_argument_group("data selection")
    prac.add_argument("--data_prune", default="zero_out", choices=("zero_out", "constent"),
                      help="zero_out: keep samples forgotten more than --threshold times or never learned; constent: keep "
                           "the int(N*(1-data_rate)^(k+1)) most forgotten after round k (default zero_out)")
    prac.add_argument("--threshold", type=int, default=0, help="forgetting events a sample must exceed to be kept (default 0)")
    prac.add_argument("--data_rate", type=float, default=0.2, help="per-round data pruning rate of --data_prune constent (default 0.2)")
    run = parser.add_argument_group("files")
    run.add_argument("--save_dir", default=None, help="run folder (default runs/<dataset>_<arch>_PrAC_<prune_type>_seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--checkpoint", default=None, help="with --resume: the '<k>checkpoint.pth.tar' to continue from")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """One-line errors for flags that cannot work, before any data is read."""
    from ...tickets.prac import validate_prac_settings

    if args.checkpoint and not args.resume:
        raise UserError("--checkpoint without --resume: add --resume to continue from that checkpoint")
    validate_prac_settings(args.eb_eps, args.queue_length, args.threshold, args.data_prune, args.data_rate)
    if args.prune_type == "rewind_lt" and not 0 <= args.rewind_epoch < args.epochs - 1:
        raise UserError(f"--rewind_epoch {args.rewind_epoch} must be in 0..{args.epochs - 2}: the weights after epoch "
                        f"index {args.rewind_epoch} are the rewind point, and --epochs {args.epochs} must train past it")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_arguments(args)
    from ..setup import imp_config, load_data, model_factory, setup_device
    from ...tickets.prac import read_split_file
    from ...analysis.plots import plot_training_curve
    from ...core.console import progress_wanted
    from ...tickets.prac_imp import PrACRun, PrACSettings

    if args.resume and args.checkpoint and args.save_dir is None:
        args.save_dir = str(Path(args.checkpoint).parent)
    save_dir = Path(args.save_dir) if args.save_dir else Path("runs") / f"{args.dataset}_{args.arch}_PrAC_{args.prune_type}_seed{args.seed}"
    # the PrAC code's --rewind_epoch is an epoch index: its rewind point (and file name) is one epoch later
    rewind_point = args.rewind_epoch + 1 if args.prune_type == "rewind_lt" else args.rewind_epoch
    config = imp_config(args, pruning_times=args.pruning_times, rate=args.rate, prune_type=args.prune_type,
                        rewind_epoch=rewind_point)
    settings = PrACSettings(args.eb_eps, args.queue_length, args.data_prune, args.threshold, args.data_rate)
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
