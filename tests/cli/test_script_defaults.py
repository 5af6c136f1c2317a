"""The training scripts' flag defaults are the originals' documented defaults: one table, read from the parsers.

Sources (see /work/shared/reference/): the Lottery Pools CIFAR main_imp.py and the paper's Table 2 (IMP and
retraining), the PrAC code's main_PrAC_imp.py / main_train.py flags (prac-facts.md, "Flags and defaults", P:34-65,
T:31-52), and OpenLTH's imagenet_resnet defaults (paper-facts.md §2, "ImageNet setup"). Every default is read
from the namespace a script's ``build_parser()`` gives when only its required arguments are passed, so a
script whose default drifts from this table fails here.
"""

from __future__ import annotations

import importlib

import pytest

# The originals' optimiser and schedule (CIFAR: the Lottery Pools and PrAC code agree on all of these).
CIFAR_TRAINING = dict(epochs=182, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, milestones=[91, 136],
                      warmup=0)
CIFAR_PRUNING = dict(pruning_times=16, rate=0.2, prune_type="lt")

# script -> (the arguments it requires, the documented defaults by destination)
DOCUMENTED = {
    # Lottery Pools CIFAR/main_imp.py: --rewind_epoch counts epochs trained (3 = after 3 epochs)
    "main_imp": ([], {**CIFAR_TRAINING, **CIFAR_PRUNING, "rewind_epoch": 3, "random_prune": False,
                      "include_linear": False}),
    # PrAC main_PrAC_imp.py: its --rewind_epoch 2 is an epoch index (our --rewind_index), the same rewind point as
    # IMP's 3; the early stop and data selection as in prac-facts.md
    "main_prac_imp": ([], {**CIFAR_TRAINING, **CIFAR_PRUNING, "rewind_index": 2, "eb_eps": 0.08, "queue_length": 5,
                           "data_prune": "zero_out", "threshold": 0, "data_rate": 0.2, "split_file": None}),
    # PrAC main_train.py: "P's general/training defaults"
    "main_train": (["--mask_dir", "m.pth.tar"], {**CIFAR_TRAINING, "random_init": False, "init_dir": None}),
    # OpenLTH imagenet_resnet + sparse_global: conv and fc weights pruned, rewinding to epoch 5
    "imagenet_imp": (["data", "--save_dir", "run"], dict(epochs=90, batch_size=1024, lr=0.4, momentum=0.9,
                                                         weight_decay=1e-4, milestones=[30, 60, 80], warmup=5, rate=0.2,
                                                         prune_type="rewind_lt", rewind_epoch=5, include_linear=True,
                                                         arch="imagenet_resnet_18")),
}


def milestones(value) -> list[int]:
    """``--decreasing_lr``/``--milestones`` as the list of epochs it means (the flag's default is a string)."""
    if isinstance(value, str):
        return [int(part) for part in value.split(",") if part.strip()]
    return [int(part) for part in value]


@pytest.mark.parametrize("script", sorted(DOCUMENTED))
def test_each_training_scripts_parser_defaults_are_the_documented_originals(script):
    required, documented = DOCUMENTED[script]
    args = importlib.import_module(f"lotterypools.cli.commands.{script}").build_parser().parse_args(required)
    found = {name: getattr(args, name, "<no such flag>") for name in documented}
    if "milestones" in found:
        found["milestones"] = milestones(found["milestones"])
    drifted = {name: (found[name], value) for name, value in documented.items() if found[name] != value}
    assert not drifted, f"{script}: (parser default, documented) {drifted}"


def test_main_imp_turns_its_defaults_into_the_documented_imp_config():
    """What the run uses: the IMPConfig main_imp.py builds from an argument-free command line."""
    from lotterypools.cli.commands.main_imp import build_parser
    from lotterypools.cli.setup import imp_config

    config = imp_config(build_parser().parse_args([]))
    _, documented = DOCUMENTED["main_imp"]
    assert {name: getattr(config, name) for name in documented} == documented


def test_prac_rewind_index_is_the_same_rewind_point_as_imps_rewind_epoch():
    """The two scripts spell one rewind point differently; the PrAC flag --rewind_epoch is the PrAC index."""
    from lotterypools.cli.commands.main_prac_imp import build_parser

    args = build_parser().parse_args(["--rewind_epoch", "4"])  # the PrAC code's spelling of the flag
    assert args.rewind_index == 4
    assert DOCUMENTED["main_prac_imp"][1]["rewind_index"] + 1 == DOCUMENTED["main_imp"][1]["rewind_epoch"]
