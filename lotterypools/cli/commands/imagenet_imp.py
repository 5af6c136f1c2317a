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

from ..aliases import add_no_effect_flags, say_no_effect
from ..flags import add_imagenet_arguments, add_pruning_arguments, add_training_arguments
from ...config.settings import OPENLTH_IMAGENET_DEFAULTS
from ...core.errors import RERUN_CONTINUES, UserError, cli_entry
from ...core.files import check_writable_folder


# Flags the ImageNet data/process group already gives (-j, --seed, --fp16/--amp), and what OpenLTH's layout fixes.
SKIPPED = ("workers", "seed", "amp", "loader", "pruning_times", "ticket")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_imagenet_arguments(parser, default_seed=OPENLTH_IMAGENET_DEFAULTS["seed"])
    parser.add_argument("--save_dir", required=True,
                        help="output: the OpenLTH run folder that receives level_<k>/main/ (rerun to continue it)")
    add_training_arguments(parser, OPENLTH_IMAGENET_DEFAULTS, skip=SKIPPED, print_freq=False)
    add_pruning_arguments(parser, OPENLTH_IMAGENET_DEFAULTS, skip=SKIPPED)
    levels = OPENLTH_IMAGENET_DEFAULTS["pruning_times"] - 1
    parser.add_argument("--levels", type=int, default=levels,
                        help=f"last pruning level: levels 0 (dense) .. LEVELS are trained (default {levels}: "
                             f"{levels + 1} tickets)")
    add_no_effect_flags(parser, "imagenet_imp")
    return parser


@cli_entry(interrupted=RERUN_CONTINUES)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ...config.settings import config_from_args
    from ...training.distributed import close_distributed
    from ...models import check_imagenet_arch
    from ..imagenet import imagenet_model_factory, load_imagefolder_data, start_processes
    from ...tickets.imagenet_imp import LevelRun
    from ...core.console import log, progress_wanted
    from ...core.records import format_table

    if args.levels < 0:
        raise UserError(f"--levels {args.levels} must be 0 (the dense network only) or more")
    config = config_from_args(args, defaults=OPENLTH_IMAGENET_DEFAULTS, pruning_times=args.levels + 1)
    say_no_effect(args)
    # every process checks, before any joins the group: a refusal on one rank must not leave the others waiting
    check_writable_folder(Path(args.save_dir), "--save_dir", create=False)
    check_imagenet_arch(args.arch)  # on every rank before the group forms, and before the long folder scan
    context = start_processes(args)
    config.validate(context.world_size)
    data = load_imagefolder_data(args, context)
    factory = imagenet_model_factory(args, data.num_classes)
    if context.is_main:
        log(f"IMP on {len(data.train)} train / {len(data.val)} held-out / {len(data.test)} test images; {args.arch} on "
            f"{context.world_size} process(es), {context.device}; run folder {args.save_dir}")
    summary = LevelRun(config, factory, data, context, Path(args.save_dir), progress=progress_wanted()).run()
    if context.is_main:
        log(format_table(summary, ["level", "density", "val_acc", "test_acc", "epochs", "seconds"]))
    close_distributed(context)


if __name__ == "__main__":
    main()
