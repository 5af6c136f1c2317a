"""FreeTickets' settings declared once: sparse training (:class:`SparseConfig`) and the FreeTickets runs' own flags.

The optimiser flags (epochs, batch, lr, momentum, weight decay, seed) are :class:`~lotterypools.config.settings.IMPConfig`'s
fields with FreeTickets' defaults (:data:`FREETICKETS_DEFAULTS`); the original spellings (``--data``, ``--l2``,
``--batch-size``) are aliases in those scripts only (:mod:`lotterypools.cli.aliases`). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..core.errors import UserError
from .settings import check_ranges, setting

SPARSE_INITS = ("ERK", "ER", "uniform", "pruning", "resume")
GROWTH_MODES = ("gradient", "random")
DEATH_MODES = ("magnitude",)
REDISTRIBUTIONS = ("none",)
# The original's other names: accepted by its parser but not implemented here (its CIFAR core ignores redistribution).
UNIMPLEMENTED = {"growth": ("momentum", "momentum_neuron"), "death": ("SET", "threshold", "Taylor_FO"),
                 "redistribution": ("momentum", "magnitude", "nonzeros")}
DECAY_SCHEDULES = ("cosine", "linear", "constant")
MODEL_CONFIGS = ("classic", "fanin")
DEFAULT_EPOCHS = {"DST": 250, "individual": 250, "EDST": 320, "PF": 320}

# IMPConfig fields as the FreeTickets CIFAR scripts default them (the original's flags).
FREETICKETS_DEFAULTS = dict(batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, seed=17)
# ... and as FreeTickets' ImageNet main.py defaults them (its batch is per process: see per_process_batch).
IMAGENET_EDST_DEFAULTS = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, epochs=310, warmup=5, seed=17, workers=8)


@dataclass
class SparseConfig:
    """The original's sparse-training flags (``sparselearning/core.py``) and the switches back to its behaviour.

    The CIFAR scripts default ``--sparse-init`` to ER (the original's flag default); this dataclass, used by the
    library and the ImageNet script, to ERK.
    """

    density: float = setting(0.05, "fraction of conv and linear weights kept", group="sparse", above=0, maximum=1)
    sparse_init: str = setting("ERK", "layer densities: ERK, ER, uniform (exact counts, random positions); pruning "
                                      "(global magnitude of the loaded weights, PF); resume (the loaded weights' "
                                      "non-zeros)", flags=("--sparse-init", "--sparse_init"), group="sparse")
    growth: str = setting("random", "gradient (largest dense gradient, RigL) or random (SET)", group="sparse")
    death: str = setting("magnitude", "magnitude: remove the smallest active weights", group="sparse")
    redistribution: str = setting("none", "none: every layer regrows what it lost (the only mode; the original CIFAR "
                                          "code ignores this flag)", group="sparse")
    death_rate: float = setting(0.5, "fraction of each layer's active weights replaced per update",
                                flags=("--death-rate", "--death_rate"), group="sparse", minimum=0, below=1)
    large_death_rate: float = setting(0.8, "EDST: fraction replaced at the start of every refine phase after the "
                                           "first", flags=("--large-death-rate", "--large_death_rate"), group="sparse",
                                      minimum=0, below=1)
    update_frequency: int = setting(1000, "optimiser steps between mask updates",
                                    flags=("--update-frequency", "--update_frequency"), group="sparse", minimum=1)
    decay_schedule: str = setting("cosine", "death-rate decay over each phase with --decayed-death-rate: cosine (to "
                                            "0.005), linear or constant (the original CIFAR code computes it and never "
                                            "uses it)", flags=("--decay-schedule", "--decay_schedule"), group="sparse")
    fix: bool = setting(False, "keep the initial mask fixed (no death and growth)", group="sparse")
    # set by the paired switches of lotterypools.cli.freetickets (the original's behaviour or ours), not by one flag each
    constant_death_rate: bool = setting(False, "always remove --death-rate", group="switches")
    stale_momentum: bool = setting(False, "leave momentum of masked weights unmasked", group="switches")
    reset_dense_layers: bool = setting(False, "death in layers ERK made dense", group="switches")

    def validate(self) -> None:
        """One-line errors for unknown modes and rates outside their range."""
        check_choice("--sparse-init", self.sparse_init, SPARSE_INITS)
        check_choice("--growth", self.growth, GROWTH_MODES, UNIMPLEMENTED["growth"])
        check_choice("--death", self.death, DEATH_MODES, UNIMPLEMENTED["death"])
        check_choice("--redistribution", self.redistribution, REDISTRIBUTIONS, UNIMPLEMENTED["redistribution"])
        check_choice("--decay-schedule", self.decay_schedule, DECAY_SCHEDULES)
        check_ranges(self)


def check_choice(flag: str, value: str, known: Sequence[str], unimplemented: Sequence[str] = ()) -> None:
    """One-line error unless ``value`` is one of ``known`` (saying so when the original had it but we do not)."""
    if value in known:
        return
    if value in unimplemented:
        raise UserError(f"{flag} {value} is not implemented here (the original CIFAR code accepts it); use "
                        f"{' or '.join(known)}")
    raise UserError(f"unknown {flag} {value!r}: choose one of {', '.join(known)}")


def check_density(density: float) -> None:
    """One-line error unless ``density`` is in (0, 1]."""
    check_ranges(SparseConfig(density=density))


@dataclass
class FreeTicketsSettings:
    """FreeTickets' own flags (the optimiser's are IMPConfig's): model, schedule shape, phases, PF and ImageNet."""

    model: str = setting("wrn-28-10", "any registry model: the original's wrn-28-10 (or wrn-D-W), vgg-c, vgg-d, "
                                      "vgg-like, alexnet-s, alexnet-b, lenet5, lenet300-100, MLPCIFAR10; or resnet20s, "
                                      "vgg16_bn, conv4, ...", group="model")
    sparse: bool = setting(False, "train a sparse network (default: dense)", group="sparse")
    test_batch_size: int = setting(100, "evaluation batch size", flags=("--test-batch-size", "--test_batch_size"),
                                   group="evaluation", minimum=1, affects_result=False)
    multiplier: int = setting(1, "train --epochs x this many epochs; the lr milestones stay at 50% and 75% of "
                                 "--epochs, as the original's", group="multiplier", minimum=1)
    nolrsche: bool = setting(False, "no MultiStepLR: a constant learning rate (EDST: its phase schedule)",
                             group="schedule")
    epochs_explo: int = setting(150, "epochs of the exploration phase", flags=("--epochs-explo", "--epochs_explo"),
                                group="edst", minimum=0)
    model_num: int = setting(3, "number of free tickets (refine phases)", flags=("--model-num", "--model_num"),
                             group="edst", minimum=1)
    relative_refine_lr: bool = setting(False, "ours: refine phases at --lr/10 then --lr/100 (default: 0.01 then "
                                              "0.001 whatever --lr is, as the original)",
                                       flags=("--relative-refine-lr", "--relative_refine_lr"), group="edst")
    pf_rate: float = setting(None, "PF: fraction pruned from the dense model; overrides --density as 1 - PF-rate "
                                   "(default: use --density)", flags=("--PF-rate", "--PF_rate"), group="pf",
                             type=float, minimum=0, below=1)
    per_process_batch: int = setting(64, "batch size per process (the global batch is this times the processes)",
                                     group="imagenet", minimum=1)
    label_smoothing: float = setting(0.0, "label smoothing of the loss", flags=("--label-smoothing",
                                                                                 "--label_smoothing"),
                                     group="imagenet", minimum=0, below=1)
    model_config: str = setting("classic", "classic: the model's own initialisation; fanin: Kaiming-normal (fan-in) "
                                           "conv and linear weights", flags=("-c", "--model-config", "--model_config"),
                                group="imagenet", choices=MODEL_CONFIGS)
    epochs_refine: int = setting(70, "epochs of each refine phase", flags=("--epochs-refine", "--epochs_refine"),
                                 group="imagenet", minimum=1)
