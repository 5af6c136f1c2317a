r"""EDST ensemble (FreeTickets): one run explores with dynamic sparsity, then refines --model-num tickets.

Example (the FreeTickets README):
    python3 main_EDST.py --sparse --model wrn-28-10 --data cifar10 --nolrsche \
        --decay-schedule constant --seed 17 --epochs-explo 150 --model-num 3 --sparse-init ERK \
        --update-frequency 1000 --batch-size 128 --death-rate 0.5 --large-death-rate 0.8 \
        --growth gradient --death magnitude --redistribution none --epochs 450 --density 0.2
Epochs 1-150 at lr 0.1; then three phases of 100 epochs (lr 0.01, then 0.001 after 50), the 2nd and 3rd
starting with a large death (--large-death-rate). When --model-num does not divide --epochs minus
--epochs-explo, the phases have the original's fractional boundaries rounded up (320/150/3: 150, 207, 264).
Writes model_0.pth .. model_2.pth (each phase's best
validation epoch) to results/<model>/<data>/random/seed<seed>/density_<d>/EDST/M=<M>/.
"""

from __future__ import annotations

from ...core.errors import RERUN_CONTINUES, cli_entry
from ..freetickets import build_parser as common_parser
from ..freetickets import run_cifar


def build_parser():
    return common_parser("EDST", __doc__, "main_edst")


@cli_entry(interrupted=RERUN_CONTINUES)  # rerunning continues; --resume has no effect
def main(argv=None) -> None:
    run_cifar(build_parser().parse_args(argv), "EDST")


if __name__ == "__main__":
    main()
