r"""Lottery Pools over OpenLTH ImageNet tickets (level_<k>/main/model_ep<E>_it0.pth + mask.pth), and its baselines.

Runs on one device, under multiproc.py, or under torchrun. Two ways to use several processes:
--parallel data (default): every process takes part in each trial's BN recalibration and evaluation (a share
of every batch list), rank 0 writes the results: the fastest way through a few targets.
--parallel targets: every process takes whole targets and runs them alone (full BN and evaluation lists),
writing each record as it finishes: no communication per trial, best when there are at least as many targets
as processes. Each finished target is written at once; rerunning the same command skips finished targets.
Example (from ImageNet/, two GPUs):
    python multiproc.py --nproc_per_node 2 Lottery_pools.py --save_dir $save_dir $data \
        --interpolation_value_list 0.05 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 0.95 --seed 17 --master_port 8020 \
        -j32 -p 500 --arch imagenet_resnet_18 --interpolate_method Lottery_pools
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..aliases import add_no_effect_flags, say_no_effect
from ..flags import add_imagenet_arguments, add_pool_arguments
from ...core.errors import POOLS_RERUN, UserError, cli_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_imagenet_arguments(parser, default_seed=17)
    parser.add_argument("--ticket_dir", "--save_dir", dest="ticket_dir", required=True,
                        help="input: the OpenLTH run folder holding level_<k>/main/ (--save_dir is the original's "
                             "spelling)")
    # whole BN batches are dealt to the processes; the pool holds all 11 OpenLTH levels by default
    add_pool_arguments(parser, "imagenet_pools", defaults={"bn_batch_size": 256, "search_num": 11})
    add_no_effect_flags(parser, "imagenet_pools")
    parser.add_argument("--results_dir", default=None, help="output: where results go (default: --ticket_dir)")
    parser.add_argument("--parallel", default="data", choices=("data", "targets"),
                        help="with several processes: data (every process shares every trial's batches; default) or "
                             "targets (every process runs whole targets on its own)")
    return parser


def build_evaluator(args: argparse.Namespace, data, model, context):
    """BN batches from the training part (test-time transforms, one seeded global batch list), sharded evaluation.

    With ``--parallel targets`` each process evaluates on whole batch lists (no sharding, no reduction).
    """
    from dataclasses import replace

    from ...pools.sharded import ShardedPoolEvaluator
    from ...data.imagefolder import batchnorm_loader, evaluation_loader

    if args.parallel == "targets":
        context = replace(context, rank=0, world_size=1)

    device, rank, world = context.device, context.rank, context.world_size
    bn = batchnorm_loader(data.train_plain, args.bn_batch_size, args.workers, device, args.seed, args.bn_batches, rank, world)
    val = evaluation_loader(data.val, args.bn_batch_size, args.workers, device, rank, world)
    test = evaluation_loader(data.test, args.bn_batch_size, args.workers, device, rank, world)
    return ShardedPoolEvaluator(model, bn, val, test, context, amp=args.amp)


@cli_entry(interrupted=POOLS_RERUN)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ...core.console import log, progress_wanted
    from ...training.distributed import barrier, close_distributed
    from ...pools.run import Share, check_targets
    from ...models import check_imagenet_arch
    from ..imagenet import imagenet_model_factory, load_imagefolder_data, start_processes
    from ...formats.openlth import level_files, read_level
    from ..pools import check_results_folder, pool_settings, run_pool_job, validate_pool_args
    from ...pools.store import TicketStore

    validate_pool_args(args)
    say_no_effect(args)
    if getattr(args, "ood_data", None):
        raise UserError("--ood_data (CIFAR-C layout) is supported by CIFAR/Lottery_pools.py only; "
                        "drop it from the ImageNet command")
    files = level_files(args.ticket_dir)
    results_dir = Path(args.results_dir or args.ticket_dir)
    # every process checks, before any joins the group: a refusal on one rank must not leave the others waiting
    flag = "--results_dir" if args.results_dir else "--ticket_dir (the results' default folder)"
    results = check_results_folder(results_dir, flag)
    check_targets(args.targets, [f.round for f in files], args.ticket_dir)
    check_imagenet_arch(args.arch)  # on every rank before the group forms, and before the long folder scan
    context = start_processes(args)
    data = load_imagefolder_data(args, context)
    model = imagenet_model_factory(args, data.num_classes)()
    store = TicketStore(files, model.state_dict(), f"--arch {args.arch}", reader=read_level)
    evaluator = build_evaluator(args, data, model, context)
    if context.is_main:
        log(f"{len(files)} tickets (levels 0-{files[-1].round}, {files[-1].path.name}) from {args.ticket_dir}; "
            f"{args.interpolate_method} on {context.world_size} process(es) ({args.parallel}-parallel), "
            f"{context.device} ({context.backend}); {len(data.train)} train / {len(data.val)} held-out / "
            f"{len(data.test)} test images; BN on "
            f"{'%d batches' % args.bn_batches if args.bn_batches else 'the whole training part'}")
    targets_parallel = args.parallel == "targets"
    share = Share(context.rank, context.world_size) if targets_parallel else Share()
    settings = pool_settings(args, args.ticket_dir, args.arch, f"imagenet:{Path(args.data).resolve()}")
    run_pool_job(args, store, evaluator, results, settings, f"{args.arch} on ImageNet", share=share,
                 writer=targets_parallel or context.is_main, sync=lambda: barrier(context),
                 progress_bar=progress_wanted(args.no_progress) and context.is_main)
    close_distributed(context)


if __name__ == "__main__":
    main()
