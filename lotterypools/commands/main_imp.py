r"""Create lottery tickets by iterative magnitude pruning (IMP), with or without weight rewinding.

Example (the paper's CIFAR-100 run):
    python -u main_imp.py --data ../data --dataset cifar100 --arch resnet18 --seed 41 \
        --prune_type rewind_lt --rewind_epoch 9 --pruning_times 19
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import PRUNE_TYPES
from ..cli import default_save_dir, training_parser
from ..errors import UserError, cli_entry
from ..files import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__)
    imp = parser.add_argument_group("pruning")
    imp.add_argument("--pruning_times", type=int, default=16,
                     help="number of trained networks: the dense one plus pruning_times-1 pruned ones (default 16)")
    imp.add_argument("--rate", type=float, default=0.2, help="fraction of the remaining weights pruned per round (default 0.2)")
    imp.add_argument("--prune_type", default="lt", choices=PRUNE_TYPES,
                     help="lt: rewind to initialisation; rewind_lt: to epoch --rewind_epoch; pt: to the best dense weights (default lt)")
    imp.add_argument("--random_prune", action="store_true", help="prune at random instead of by magnitude")
    imp.add_argument("--rewind_epoch", type=int, default=3, help="epoch to rewind weights and lr schedule to, for rewind_lt (default 3)")
    imp.add_argument("--include_linear", action="store_true", help="prune linear layers too (default: conv layers only)")
    run = parser.add_argument_group("files")
    run.add_argument("--save_dir", default=None, help="run folder (default runs/<dataset>_<arch>_<prune_type>[_rewind<k>]_seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--checkpoint", default=None, help="with --resume: the '<k>checkpoint.pth.tar' to continue from")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ..cli_setup import imp_config, load_data, model_factory, setup_device
    from ..imp import IMPRun

    if args.checkpoint and not args.resume:
        raise UserError("--checkpoint without --resume: add --resume to continue from that checkpoint")
    if args.resume and args.checkpoint and args.save_dir is None:
        args.save_dir = str(Path(args.checkpoint).parent)
    save_dir = Path(args.save_dir) if args.save_dir else default_save_dir(args)
    config = imp_config(args, pruning_times=args.pruning_times, rate=args.rate, prune_type=args.prune_type,
                        random_prune=args.random_prune, rewind_epoch=args.rewind_epoch,
                        include_linear=args.include_linear)
    factory = model_factory(args)
    check_writable_folder(save_dir, "--save_dir", create=False)
    device = setup_device(args)
    data = load_data(args)
    print(f"{args.dataset} from {data.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test; "
          f"{args.arch} on {device}; run folder {save_dir}", flush=True)
    IMPRun(config, factory, data, device, save_dir).run(resume=args.resume,
                                                        checkpoint=Path(args.checkpoint) if args.checkpoint else None)


if __name__ == "__main__":
    main()
