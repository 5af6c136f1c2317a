r"""Sparse Model Soups: in each prune-retrain phase, retrain m copies of the pruned soup and merge them.

Example (three candidates differing in their seed, uniform soups, IMP's 20% per phase, 6 networks):
    python -u main_SMS.py --data ../data --dataset cifar10 --arch resnet20s --seed 41 \
        --candidates 3 --soup uniform --pruning_times 6 --epochs 30 --decreasing_lr 15,25

Candidates of a phase run one after another, or one per process under torchrun (gloo on CPUs, nccl on GPUs):
    torchrun --nproc_per_node 3 main_SMS.py ... (the same flags)
Rerunning the same command continues the run: written phases are kept, finished candidates too.
--epochs, --lr, --decreasing_lr and --batch_size are each candidate's, per phase; under torchrun a candidate trains
on one process with the whole --batch_size (the batch is not split: processes train different candidates).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..flags import add_pruning_arguments, training_parser
from ...config.settings import add_config_arguments
from ...config.sms import SMSSettings
from ...core.errors import RERUN_CONTINUES, cli_entry


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__)
    add_pruning_arguments(parser, skip=("prune_type", "rewind_epoch"))
    add_config_arguments(parser, {"sms": "Sparse Model Soups"}, cls=SMSSettings)
    files = parser.add_argument_group("files")
    files.add_argument("--save_dir", default=None, help="output: the run folder (default "
                       "runs/sms_<dataset>_<arch>_<soup>_m<candidates>_seed<seed>); rerunning continues it")
    return parser


@cli_entry(interrupted=RERUN_CONTINUES)  # SMS has no --resume: a rerun continues
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ..setup import imp_config, start_training_job
    from ...analysis.plots import plot_training_curve
    from ...config.settings import config_from_args
    from ...core.console import progress_wanted
    from ...tickets.sms import SMSRun
    from ...training.distributed import barrier, close_distributed, init_distributed

    settings = config_from_args(args, cls=SMSSettings)
    config = imp_config(args, prune_type="lt", rewind_epoch=0)
    settings.validate(config)
    kind = "imp_budget" if settings.imp_budget else settings.soup
    save_dir = Path(args.save_dir or f"runs/sms_{args.dataset}_{args.arch}_{kind}_m{settings.candidates}_seed{args.seed}")
    if settings.dense:  # the dense network must come from a run on this data set
        from ...core.provenance import check_tickets_match
        from ...data.datasets import dataset_spec

        spec = dataset_spec(args.dataset)
        check_tickets_match(settings.dense, spec.name, "--dense", spec.mean, spec.std)
    context = init_distributed(args.device)
    factory, device, data = start_training_job(args, save_dir)
    if context.active:
        device = context.device
    try:
        SMSRun(config, settings, factory, data, device, save_dir, rank=context.rank, world_size=context.world_size,
               barrier=lambda: barrier(context), progress=progress_wanted() and context.is_main,
               plot_curve=plot_training_curve).run()
    finally:
        close_distributed(context)


if __name__ == "__main__":
    main()
