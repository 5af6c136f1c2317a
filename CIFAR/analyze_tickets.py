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

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lotterypools.analysis_cli import build_parser, run_command  # noqa: E402
from lotterypools.errors import NOTHING_TO_RESUME, cli_entry  # noqa: E402


@cli_entry(interrupted=NOTHING_TO_RESUME)
def main(argv=None) -> None:
    run_command(build_parser(__doc__).parse_args(argv))


if __name__ == "__main__":
    main()
