"""Create lottery tickets by iterative magnitude pruning (IMP), with or without weight rewinding.

Example (the paper's CIFAR-100 run):
    python -u main_imp.py --data ../data --dataset cifar100 --arch resnet18 --seed 41 \
        --prune_type rewind_lt --rewind_epoch 9 --pruning_times 19
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lotterypools.cli import (add_data_arguments, add_model_arguments, default_save_dir, load_data,  # noqa: E402
                              model_factory, parse_milestones, setup_device)
from lotterypools.errors import UserError, cli_entry  # noqa: E402
from lotterypools.imp import PRUNE_TYPES, IMPConfig, IMPRun  # noqa: E402
from lotterypools.loaders import LOADERS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_model_arguments(parser)
    train = parser.add_argument_group("training")
    train.add_argument("--batch_size", type=int, default=128, help="batch size (default 128)")
    train.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default 0.1)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--weight_decay", type=float, default=1e-4, help="weight decay (default 1e-4)")
    train.add_argument("--epochs", type=int, default=182, help="epochs per IMP round (default 182)")
    train.add_argument("--warmup", type=int, default=0, help="epochs of linear learning-rate warm-up (default 0)")
    train.add_argument("--decreasing_lr", default="91,136", help="epochs at which the lr is divided by 10 (default 91,136)")
    train.add_argument("--print_freq", type=int, default=50, help="progress-bar refresh, in iterations (default 50)")
    train.add_argument("--amp", action="store_true", help="bf16 autocast for training and evaluation")
    train.add_argument("--channels_last", action="store_true", help="channels-last memory format (faster convolutions on GPUs)")
    train.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps on GPUs)")
    train.add_argument("--loader", default="resident", choices=LOADERS,
                       help="resident: the data set as uint8 on the device, crop/flip there (default); dataloader: "
                            "PIL images through torchvision transforms and a DataLoader with --workers, as the original")
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
def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.checkpoint and not args.resume:
        raise UserError("--checkpoint without --resume: add --resume to continue from that checkpoint")
    if args.resume and args.checkpoint and args.save_dir is None:
        args.save_dir = str(Path(args.checkpoint).parent)
    save_dir = Path(args.save_dir) if args.save_dir else default_save_dir(args)
    config = IMPConfig(arch=args.arch, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                       milestones=parse_milestones(args.decreasing_lr), warmup=args.warmup,
                       pruning_times=args.pruning_times, rate=args.rate, prune_type=args.prune_type,
                       random_prune=args.random_prune, rewind_epoch=args.rewind_epoch,
                       include_linear=args.include_linear, seed=args.seed, amp=args.amp,
                       channels_last=args.channels_last, compile=args.compile, loader=args.loader,
                       workers=args.workers)
    config.validate()
    factory = model_factory(args)
    device = setup_device(args)
    data = load_data(args)
    print(f"{args.dataset} from {data.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test; "
          f"{args.arch} on {device}; run folder {save_dir}", flush=True)
    IMPRun(config, factory, data, device, save_dir).run(resume=args.resume,
                                                        checkpoint=Path(args.checkpoint) if args.checkpoint else None)


if __name__ == "__main__":
    main()
