r"""EDST on ImageNet (FreeTickets' ImageNet/main.py), one or many processes (torch.distributed, nccl or gloo).

Example (the FreeTickets README, from ImageNet/):
    python multiproc.py --nproc_per_node 2 main.py --sparse_init ERK --multiplier 1 --growth gradient \
        --seed 17 --master_port 4545 -j5 -p 500 --arch resnet50 -c fanin --update_frequency 4000 \
        --label-smoothing 0.1 -b 64 --lr 0.1 --warmup 5 --epochs 310 --density 0.2 ../data/
Exploration for --epochs-explo epochs (warm-up, then lr /10 at 30%, 60%, 90% of it), then refine phases of
--epochs-refine epochs, each starting with a large death (lr/10, then /100 and /1000): with the defaults the
original's boundaries 100/170/240 and four tickets save/checkpoint-{0..3}.pth.tar, each the phase's best
epoch on a held-out part of train/ (the original chose on val/, its test set). -b is the batch per process.
Rerunning the same command continues after the last finished epoch.
"""

from __future__ import annotations

import argparse

from ..aliases import add_no_effect_flags, aliases_of, say_no_effect
from ..flags import add_imagenet_arguments
from ...config.settings import add_config_arguments
from ...config.sparse import IMAGENET_EDST_DEFAULTS, FreeTicketsSettings
from ...core.errors import RERUN_CONTINUES, cli_entry
from ..freetickets import add_sparse_arguments, sparse_config

# The original's ImageNet --arch names -> the registry's ImageNet ResNets.
ARCH_ALIASES = {"resnet18": "imagenet_resnet_18", "resnet34": "imagenet_resnet_34", "resnet50": "imagenet_resnet_50"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_imagenet_arguments(parser, default_seed=IMAGENET_EDST_DEFAULTS["seed"])
    parser.add_argument("--save_dir", default="save",
                        help="folder for the tickets checkpoint-<k>.pth.tar (default save, as the original)")
    aliases = aliases_of("imagenet_edst")
    add_config_arguments(parser, {"training": "training (the original ImageNet/main.py's flags)"},
                         defaults=IMAGENET_EDST_DEFAULTS, aliases=aliases,
                         only=("lr", "momentum", "weight_decay", "epochs", "warmup"))
    add_config_arguments(parser, {"imagenet": "training (the original ImageNet/main.py's flags)",
                                  "multiplier": "training (the original ImageNet/main.py's flags)"},
                         cls=FreeTicketsSettings, aliases=aliases,
                         defaults={"epochs_explo": 100})
    add_config_arguments(parser, {"edst": "EDST phases"}, cls=FreeTicketsSettings, defaults={"epochs_explo": 100},
                         only=("epochs_explo",))
    add_sparse_arguments(parser)
    add_no_effect_flags(parser, "imagenet_edst")
    return parser


@cli_entry(interrupted=RERUN_CONTINUES)  # main.py has no --resume: rerunning continues
def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from ...training.distributed import close_distributed
    from ...core.files import check_writable_folder
    from ...tickets.freetickets import FreeTicketsRun, RunConfig, imagenet_plan
    from ...models import check_imagenet_arch
    from ..imagenet import imagenet_model_factory, load_imagefolder_data, start_processes
    from ...training.sources import ShardedEvaluator, ShardedTrainData
    from ...core.console import log, progress_wanted

    config = sparse_config(args, "ImageNet")
    say_no_effect(args)
    m = args.multiplier
    plan = imagenet_plan(args.epochs * m, args.epochs_explo * m, args.epochs_refine * m, args.lr, args.warmup * m)
    args.arch = ARCH_ALIASES.get(args.arch, args.arch)
    check_writable_folder(Path(args.save_dir), "--save_dir")
    check_imagenet_arch(args.arch)  # on every rank before the group forms, and before the long folder scan
    context = start_processes(args)
    data = load_imagefolder_data(args, context)
    factory = initialised(imagenet_model_factory(args, data.num_classes), args.model_config)
    train = ShardedTrainData(data.train, args.per_process_batch * context.world_size, args.workers, context, args.seed)
    run_config = RunConfig(method="EDST-ImageNet", model=args.arch, data="imagenet", seed=args.seed,
                           batch_size=args.per_process_batch * context.world_size, lr=args.lr, momentum=args.momentum,
                           l2=args.weight_decay, sparse=True, sparse_config=config,
                           label_smoothing=args.label_smoothing, norm_weight_decay=False)
    if context.is_main:
        log(f"EDST on {len(data.train)} train / {len(data.val)} held-out / {len(data.test)} test images; {args.arch} on "
            f"{context.world_size} process(es), {context.device}; density {config.density:g}; {plan.epochs} epochs, "
            f"{len(plan.phases)} tickets into {args.save_dir}")
    from ...core.provenance import data_provenance

    run = FreeTicketsRun(run_config, plan, factory, train, ShardedEvaluator(data, context, args.workers, args.amp),
                         context.device, Path(args.save_dir), name="imagenet", context=context,
                         progress=progress_wanted(), data_provenance=data_provenance(data))
    records = run.run()
    close_distributed(context)
    return records


def initialised(factory, model_config: str):
    """``factory`` whose conv and linear weights are re-drawn Kaiming-normal (fan-in) for ``-c fanin``."""
    if model_config == "classic":
        return factory
    from torch import nn

    def build():
        model = factory()
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        return model

    return build


if __name__ == "__main__":
    main()
