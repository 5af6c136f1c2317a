"""Create ImageNet lottery tickets by IMP with rewinding, in OpenLTH's layout and with OpenLTH's ImageNet defaults.

Writes <save_dir>/level_<k>/main/{mask.pth, model_ep<E>_it0.pth} for k = 0..--levels (90 epochs, global batch
1024, lr 0.4 with 5 warm-up epochs, milestones 30/60/80, rewinding to epoch 5, 20% of the remaining conv and fc
weights pruned per level). Rerun the same command to continue: finished levels are skipped and a level in
progress resumes from its last epoch. Example (one node, 8 GPUs):
    python multiproc.py --nproc_per_node 8 main_imp.py --save_dir $save_dir $data --arch imagenet_resnet_18 -j16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_imagenet_arguments, parse_milestones
from ..errors import cli_entry
from ..files import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_imagenet_arguments(parser, default_seed=1)
    train = parser.add_argument_group("training (OpenLTH's ImageNet defaults)")
    train.add_argument("-b", "--batch_size", type=int, default=1024,
                       help="global batch size, split evenly over the processes (default 1024)")
    train.add_argument("--lr", type=float, default=0.4, help="peak learning rate (default 0.4)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--weight_decay", type=float, default=1e-4, help="weight decay (default 1e-4)")
    train.add_argument("--epochs", type=int, default=90, help="epochs per level (default 90)")
    train.add_argument("--warmup", type=int, default=5, help="epochs of linear learning-rate warm-up (default 5)")
    train.add_argument("--milestones", default="30,60,80", help="epochs at which the lr is divided by 10 (default 30,60,80)")
    imp = parser.add_argument_group("pruning")
    imp.add_argument("--levels", type=int, default=10,
                     help="last pruning level: levels 0 (dense) .. LEVELS are trained (default 10: 11 tickets)")
    imp.add_argument("--rate", type=float, default=0.2, help="fraction of the remaining weights pruned per level (default 0.2)")
    imp.add_argument("--rewind_epoch", type=int, default=5, help="epoch of level 0 that pruned levels restart from (default 5)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ..distributed import close_distributed
    from ..imagenet_cli import imagenet_model_factory, load_imagefolder_data, start_processes
    from ..openlth_imp import LevelConfig, LevelRun
    from ..results import format_table, log

    config = LevelConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay,
                         milestones=parse_milestones(args.milestones), warmup=args.warmup, levels=args.levels,
                         rate=args.rate, rewind_epoch=args.rewind_epoch, seed=args.seed, amp=args.fp16)
    # every process checks, before any joins the group: a refusal on one rank must not leave the others waiting
    check_writable_folder(Path(args.save_dir), "--save_dir", create=False)
    context = start_processes(args)
    config.validate(context.world_size)
    data = load_imagefolder_data(args, context)
    factory = imagenet_model_factory(args, data.num_classes)
    if context.is_main:
        log(f"IMP on {len(data.train)} train / {len(data.val)} held-out / {len(data.test)} test images; {args.arch} on "
            f"{context.world_size} process(es), {context.device}; run folder {args.save_dir}")
    summary = LevelRun(config, factory, data, context, Path(args.save_dir), args.workers).run()
    if context.is_main:
        log(format_table(summary, ["level", "density", "val_acc", "test_acc"]))
    close_distributed(context)


if __name__ == "__main__":
    main()
