r"""Retrain a subnetwork: the mask of one checkpoint, the initialisation of another (or a random one).

Example (retrain the round-1 ticket of a main_imp.py run from its own initialisation):
    python -u main_train.py --data ../data --dataset cifar10 --arch resnet20s \
        --mask_dir runs/cifar10_resnet20s_lt_seed1/1checkpoint.pth.tar \
        --init_dir runs/cifar10_resnet20s_lt_seed1/1checkpoint.pth.tar \
        --save_dir runs/retrain_cifar10_resnet20s/1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..flags import training_parser
from ...core.errors import UserError, cli_entry


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__)
    subnet = parser.add_argument_group("subnetwork")
    subnet.add_argument("--mask_dir", required=True,
                        help="checkpoint whose '*_mask' entries give the mask (e.g. 1checkpoint.pth.tar)")
    subnet.add_argument("--init_dir", default=None,
                        help="checkpoint giving the initialisation: its 'init_weight' when set, else its 'state_dict'; "
                             "or a plain state dict such as epoch_3_rewind_weight.pt")
    subnet.add_argument("--random_init", action="store_true",
                        help="start from a fresh random initialisation (from --seed) instead of --init_dir")
    files = parser.add_argument_group("files")
    files.add_argument("--save_dir", default=None, help="output folder (default runs/retrain_<dataset>_<arch>_seed<seed>)")
    files.add_argument("--resume", action="store_true", help="continue an interrupted retraining in --save_dir")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ..setup import imp_config, start_training_job
    from ...analysis.plots import plot_training_curve
    from ...core.console import progress_wanted
    from ...tickets.retrain import retrain

    if args.random_init == (args.init_dir is not None):
        raise UserError("give exactly one of --init_dir (start from a checkpoint's weights) and --random_init")
    save_dir = Path(args.save_dir or f"runs/retrain_{args.dataset}_{args.arch}_seed{args.seed}")
    config = imp_config(args, prune_type="lt", pruning_times=1)
    from ...data.datasets import dataset_spec
    from ...core.provenance import check_tickets_match

    spec = dataset_spec(args.dataset)
    for flag, given in (("--mask_dir", args.mask_dir), ("--init_dir", args.init_dir)):
        if given:  # the mask and weights must come from a run on this data set
            check_tickets_match(given, spec.name, flag, spec.mean, spec.std)
    factory, device, data = start_training_job(args, save_dir)
    retrain(config, factory, data, device, save_dir, Path(args.mask_dir),
            Path(args.init_dir) if args.init_dir else None, resume=args.resume, plot_curve=plot_training_curve,
            progress=progress_wanted())


if __name__ == "__main__":
    main()
