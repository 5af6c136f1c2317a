r"""Lottery Pools over the tickets of an IMP run folder, and its baselines (SWA, EMA, linear paths).

Example (Lottery Pools, interpolation, over the paper's 19 CIFAR-100 tickets):
    python Lottery_pools.py --interpolate_method Lottery_pools --rewind_epoch 9 --search_num 19 \
        --interpolation_value_list 0.05 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 0.95 --arch resnet18 \
        --data ../data --dataset cifar100 --seed 41 --inference --checkpoint $checkpoint
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_data_arguments, add_model_arguments, add_pool_arguments
from ..errors import UserError, cli_entry
from ..files import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_pool_arguments(parser)
    parser.add_argument("--checkpoint", default=None, help="the IMP run folder holding '<k>model_SA_best.pth.tar' tickets")
    parser.add_argument("--save_dir", default=None, help="where results go (default: the --checkpoint folder)")
    parser.add_argument("--batch_size", type=int, default=128, help="batch size of the BN recalibration pass (default 128)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ..checkpoints import ticket_files
    from ..cli_setup import load_data, model_factory, setup_device
    from ..data import dataset_spec
    from ..ood import open_benchmark
    from ..pool_cli import build_evaluator, run_pool_job, validate_pool_args
    from ..tickets import TicketStore

    if not args.checkpoint:
        flag = "--inference" if args.inference else "the search"
        raise UserError(f"{flag} needs --checkpoint: the folder of a main_imp.py run holding its tickets")
    validate_pool_args(args)
    files = ticket_files(args.checkpoint)
    factory = model_factory(args)
    spec = dataset_spec(args.dataset)
    ood = open_benchmark(args, spec.channels, spec.image_size)
    save_dir = Path(args.save_dir or args.checkpoint)
    flag = "--save_dir" if args.save_dir else "--checkpoint (the results' default folder)"
    check_writable_folder(save_dir, flag, create=False)
    device = setup_device(args)
    model = factory()
    store = TicketStore(files, model.state_dict(), f"--arch {args.arch} on {args.dataset}")
    data = load_data(args)
    evaluator = build_evaluator(model, data, device, args.batch_size, args.bn_batches, args.seed)
    print(f"{len(files)} tickets from {args.checkpoint}; {args.interpolate_method} on {device}; "
          f"BN on {'%d fixed batches' % args.bn_batches if args.bn_batches else 'the full training split'}", flush=True)
    run_pool_job(args, store, evaluator, save_dir, f"{args.arch} on {args.dataset}", ood=ood)


if __name__ == "__main__":
    main()
