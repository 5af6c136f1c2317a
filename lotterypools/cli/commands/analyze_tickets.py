r"""Analyses of the tickets of an IMP run that the original code lacks (the paper's Figs. 1, 3c, 7, 9, 10).

Subcommands (each writes JSON and a PNG into --save_dir):
    ood           accuracy on a corrupted test set (CIFAR-10-C layout) of every ticket and pooled ticket
    ensemble      output ensemble of each target and its k nearest tickets, vs the ticket and the pooled ticket
    disagreement  ECE / NLL / Brier of every ticket and the matrix of prediction disagreement
    pairwise      test accuracy of every pair's average, pruned to the sparser parent, BN recomputed

Example:
    python analyze_tickets.py pairwise --dataset fashionmnist --arch conv4 --checkpoint ../runs/fmnist \
        --save_dir ../runs/fmnist/analysis --bn_batches 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..aliases import aliases_of
from ..flags import add_data_arguments, add_model_arguments, add_ood_arguments
from ...config.pools import AnalysisSettings, PoolSearchSettings
from ...config.settings import add_config_arguments
from ...core.errors import NOTHING_TO_RESUME, cli_entry
from ...core.files import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {"ood": "accuracy on a corrupted test set (CIFAR-10-C layout) of every ticket and pooled ticket",
             "ensemble": "output ensemble of each target and its k nearest tickets vs the ticket and the pooled ticket",
             "disagreement": "calibration (ECE, NLL, Brier) of every ticket and their prediction disagreement matrix",
             "pairwise": "test accuracy of the average of every pair of tickets, pruned to the sparser parent, BN recomputed"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text, allow_abbrev=False)
        add_data_arguments(sub)
        add_model_arguments(sub)
        sub.add_argument("--checkpoint", required=True, help="the IMP run folder holding '<k>model_SA_best.pth.tar' tickets")
        sub.add_argument("--save_dir", default=None, help="where results go (default: the --checkpoint folder)")
        if name in ("ood", "ensemble"):
            sub.add_argument("--pooled", default=None,
                             help="a folder of pooled tickets written by Lottery_pools.py --save_pooled "
                                  "(<save_dir>/<method>), evaluated beside the tickets (default none)")
        if name == "ood":
            add_ood_arguments(sub, required=True)
        if name == "ensemble":
            add_config_arguments(sub, {"ensemble": "ensemble"}, cls=AnalysisSettings)
            add_config_arguments(sub, {"targets": "targets"}, cls=PoolSearchSettings)
        if name == "pairwise":  # the only subcommand that recomputes BN
            add_config_arguments(sub, {"bn": "BN recalibration"}, cls=PoolSearchSettings,
                                 aliases=aliases_of("analyze_tickets"))
    return parser


@cli_entry(interrupted=NOTHING_TO_RESUME)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ..analysis import run_command
    from ...formats.original import ticket_files

    files = ticket_files(args.checkpoint)  # a wrong ticket folder is reported before an output folder is made
    if getattr(args, "targets", None) is not None:
        from ...pools.run import check_targets

        check_targets(args.targets, [f.round for f in files], args.checkpoint)
    from ...data.datasets import dataset_spec
    from ...core.provenance import check_tickets_match

    spec = dataset_spec(args.dataset)
    check_tickets_match(args.checkpoint, spec.name, "--dataset", spec.mean, spec.std)
    flag = "--save_dir" if args.save_dir else "--checkpoint (the results' default folder)"
    check_writable_folder(Path(args.save_dir or args.checkpoint), flag, create=False)
    run_command(args)


if __name__ == "__main__":
    main()
