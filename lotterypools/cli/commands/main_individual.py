r"""A single dense (or, with --sparse, sparse) network: the dense model PF prunes, or a deep-ensemble member.

Example (the FreeTickets README; dense because --sparse is absent):
    python3 main_individual.py --model wrn-28-10 --data cifar10 --decay-schedule cosine --seed 18 \
        --sparse-init ERK --update-frequency 1000 --batch-size 128 --death-rate 0.5 --large-death-rate 0.5 \
        --growth gradient --death magnitude --redistribution none --epochs 250 --density 0.2
Writes the best-validation weights as a bare state dict to results/<model>/<data>/individual/dense/<seed>.pt
(sparse: individual/density_<d>/<seed>.pt).
"""

from __future__ import annotations

from ...core.errors import RERUN_CONTINUES, cli_entry
from ..freetickets import build_parser as common_parser
from ..freetickets import run_cifar


def build_parser():
    parser = common_parser("individual", __doc__, "main_individual")
    single = parser.add_argument_group("main_individual.py")
    single.add_argument("--select-on-test", action="store_true",
                        help="original behaviour: keep the epoch with the best TEST accuracy (default: validation)")
    return parser


@cli_entry(interrupted=RERUN_CONTINUES)  # rerunning continues; --resume has no effect
def main(argv=None) -> None:
    run_cifar(build_parser().parse_args(argv), "individual")


if __name__ == "__main__":
    main()
