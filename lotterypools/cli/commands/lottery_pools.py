r"""Lottery Pools over the tickets of an IMP run folder, and its baselines (SWA, EMA, linear paths).

Example (Lottery Pools, interpolation, over the paper's 19 CIFAR-100 tickets):
    python Lottery_pools.py --interpolate_method Lottery_pools --rewind_epoch 9 --search_num 19 \
        --interpolation_value_list 0.05 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 0.95 --arch resnet18 \
        --data ../data --dataset cifar100 --seed 41 --inference --checkpoint $checkpoint

Each finished target's record is written at once to <save_dir>/pools_results.json; rerunning the same command
skips the finished targets (--overwrite recomputes them; a target whose candidate rounds changed, e.g. after more
IMP rounds, is recomputed). Under torchrun (e.g. torchrun --nproc_per_node 4
Lottery_pools.py ...) every process takes whole targets: one GPU each on a GPU node, gloo processes on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..aliases import add_no_effect_flags, say_no_effect
from ..flags import add_data_arguments, add_model_arguments, add_pool_arguments
from ...core.errors import POOLS_RERUN, UserError, cli_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_pool_arguments(parser)
    parser.add_argument("--checkpoint", default=None, help="the IMP run folder holding '<k>model_SA_best.pth.tar' tickets")
    parser.add_argument("--save_dir", default=None, help="where results go (default: the --checkpoint folder)")
    add_no_effect_flags(parser, "lottery_pools")
    return parser


@cli_entry(interrupted=POOLS_RERUN)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ...formats.original import ticket_files
    from ..setup import load_data, model_factory
    from ...core.console import progress_wanted
    from ...data.datasets import dataset_spec
    from ...training.distributed import barrier, close_distributed
    from ...pools.run import Share, check_targets
    from ...analysis.ood import open_benchmark
    from ..pools import (build_evaluator, check_results_folder, pool_settings, run_pool_job, start_pool_processes,
                            validate_pool_args)
    from ...config.names import describe
    from ...pools.store import TicketStore

    if not args.checkpoint:
        raise UserError("the search needs --checkpoint: the folder of a main_imp.py run holding its tickets")
    validate_pool_args(args)
    say_no_effect(args)
    files = ticket_files(args.checkpoint)  # names only: a missing folder is not created by the next check
    save_dir = Path(args.save_dir or args.checkpoint)
    results = check_results_folder(save_dir, "--save_dir" if args.save_dir else "--checkpoint (the results' default folder)")
    check_targets(args.targets, [f.round for f in files], args.checkpoint)
    factory = model_factory(args)
    spec = dataset_spec(args.dataset)
    from ...core.provenance import check_tickets_match

    check_tickets_match(args.checkpoint, spec.name, "--dataset", spec.mean, spec.std)
    ood = open_benchmark(args.ood_data, args.corruptions, args.severities, spec.channels, spec.image_size)
    context = start_pool_processes(args)
    device = context.device
    model = factory()
    store = TicketStore(files, model.state_dict(), f"--arch {args.arch} on {args.dataset}")
    data = load_data(args)
    from ...core.provenance import data_provenance

    args.data_provenance = data_provenance(data)  # recorded with the run in pools_results.json
    evaluator = build_evaluator(model, data, device, args.bn_batch_size, args.bn_batches, args.seed)
    share = Share(context.rank, context.world_size)
    if share.is_main:
        print(f"{len(files)} tickets from {args.checkpoint}; {args.interpolate_method} on {device}"
              f"{f' x {share.world_size} processes ({context.backend}), whole targets each' if context.grouped else ''}; "
              f"BN on {'%d fixed batches' % args.bn_batches if args.bn_batches else 'the full training split'}",
              flush=True)
    settings = pool_settings(args, args.checkpoint, args.arch, args.dataset)
    run_pool_job(args, store, evaluator, results, settings, describe(args.arch, args.dataset), share=share,
                 sync=lambda: barrier(context), progress_bar=progress_wanted(args.no_progress), ood=ood)
    close_distributed(context)


if __name__ == "__main__":
    main()
