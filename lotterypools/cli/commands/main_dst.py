r"""DST ensemble member (FreeTickets): one sparse network trained with dynamic sparsity from scratch.

The DST ensemble is several runs with different --seed. Example (the FreeTickets README):
    python main_DST.py --sparse --model wrn-28-10 --data cifar10 --seed 17 --sparse-init ERK \
        --update-frequency 1000 --batch-size 128 --death-rate 0.5 --large-death-rate 0.8 \
        --growth gradient --death magnitude --redistribution none --epochs 250 --density 0.2
Writes results/<model>/<data>/density_<d>/DST/seed=<seed>/model.pth (best validation epoch).
"""

from __future__ import annotations

from ...core.errors import RERUN_CONTINUES, cli_entry
from ..freetickets import build_parser as common_parser
from ..freetickets import run_cifar


def build_parser():
    return common_parser("DST", __doc__, "main_dst")


@cli_entry(interrupted=RERUN_CONTINUES)  # rerunning continues; --resume has no effect
def main(argv=None) -> None:
    run_cifar(build_parser().parse_args(argv), "DST")


if __name__ == "__main__":
    main()
