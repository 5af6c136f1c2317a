r"""PF ensemble member (FreeTickets): prune a dense model once by global magnitude, fine-tune with a fixed mask.

Example (the FreeTickets README with its missing line continuation and undefined $epoch fixed):
    pretrain='results/wrn-28-10/cifar10/individual/dense/18.pt'
    python3 main_PF.py --sparse --model wrn-28-10 --resume --pretrain $pretrain --lr 0.001 \
        --fix --data cifar10 --nolrsche --decay-schedule constant --seed 18 \
        --epochs-fs 150 --model-num 3 --sparse-init pruning --update-frequency 1000 --batch-size 128 \
        --death-rate 0.5 --large-death-rate 0.8 --growth gradient --death magnitude \
        --redistribution none --epochs 10 --density 0.2
Keeps exactly --density (or 1 - --PF-rate) of the conv and linear weights; constant --lr for --epochs epochs;
writes results/<model>/<data>/density_<d>/PF/<pretrain file name> (best validation epoch).
"""

from __future__ import annotations

from ...core.errors import RERUN_CONTINUES, cli_entry
from ..freetickets import build_parser as common_parser
from ..freetickets import run_cifar


def build_parser():
    parser = common_parser("PF", __doc__, "main_pf")
    pf = parser.add_argument_group("PF")
    pf.add_argument("--pretrain", "--pretrained", dest="pretrain", default=None,
                    help="the dense model to prune: a state dict or a checkpoint with 'state_dict' (e.g. main_individual.py's <seed>.pt)")
    return parser


@cli_entry(interrupted=RERUN_CONTINUES)  # rerunning continues; --resume has no effect
def main(argv=None) -> None:
    run_cifar(build_parser().parse_args(argv), "PF")


if __name__ == "__main__":
    main()
