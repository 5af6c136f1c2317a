r"""Create lottery tickets by iterative magnitude pruning (IMP), with or without weight rewinding.

Example (the paper's CIFAR-100 run):
    python -u main_imp.py --data ../data --dataset cifar100 --arch resnet18 --seed 41 \
        --prune_type rewind_lt --rewind_epoch 9 --pruning_times 19
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..flags import add_pruning_arguments, default_save_dir, training_parser
from ...core.errors import UserError, cli_entry


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__)
    add_pruning_arguments(parser)
    run = parser.add_argument_group("files")
    run.add_argument("--save_dir", default=None, help="output: the run folder (default "
                     "runs/<dataset>_<arch>_<prune_type>[_rewind<k>]_seed<seed>); its settings.json keeps the flags "
                     "that decide the result, and --resume with other values of those is refused")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--checkpoint", default=None, help="with --resume: the '<k>checkpoint.pth.tar' to continue from")
    return parser


def rewind_note(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """A note when --rewind_epoch is set but --prune_type lt rewinds to the initialisation (it would be ignored)."""
    if args.prune_type == "lt" and args.rewind_epoch != parser.get_default("rewind_epoch"):
        return (f"note: --rewind_epoch {args.rewind_epoch} has no effect with --prune_type lt (tickets rewind to "
                f"the initialisation); give --prune_type rewind_lt to rewind to that epoch")
    return None


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    note = rewind_note(args, parser)
    if note:
        print(note, flush=True)
    from ..setup import imp_config, start_training_job
    from ...analysis.plots import plot_training_curve
    from ...core.console import progress_wanted
    from ...tickets.imp import IMPRun

    if args.checkpoint and not args.resume:
        raise UserError("--checkpoint without --resume: add --resume to continue from that checkpoint")
    if args.resume and args.checkpoint and args.save_dir is None:
        args.save_dir = str(Path(args.checkpoint).parent)
    save_dir = Path(args.save_dir) if args.save_dir else default_save_dir(args)
    config = imp_config(args)
    factory, device, data = start_training_job(args, save_dir)
    IMPRun(config, factory, data, device, save_dir, plot_curve=plot_training_curve, progress=progress_wanted()).run(
        resume=args.resume, checkpoint=Path(args.checkpoint) if args.checkpoint else None)


if __name__ == "__main__":
    main()
