"""The settings of Sparse Model Soups (:mod:`lotterypools.tickets.sms`), declared once; their flags are generated.

Torch-free, so that ``main_SMS.py --help`` returns at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from .settings import IMPConfig, setting

VARIED_SETTINGS = ("seed", "weight_decay", "lr")
SOUP_METHODS = ("uniform", "greedy")
PHASE_SCHEDULES = ("imp", "geometric")
RETRAIN_SCHEDULES = ("step", "llr")
# The official code's names for the same choices (its config values), accepted as aliases.
ORIGINAL_NAMES = {"pruned_seed": "seed", "retrain_schedule": "lr", "UniformEnsembling": "uniform",
                  "GreedySoup": "greedy"}


@dataclass
class SMSSettings:
    """What decides an SMS run beyond the training settings (:class:`IMPConfig`); flags generated from here."""

    candidates: int = setting(3, "m: the networks retrained in each phase from the same pruned soup",
                              flags=("--candidates", "--n_splits_total"), group="sms", minimum=1)
    vary: str = setting("seed", "what differs between the candidates: seed (batch order and augmentation), "
                                "weight_decay or lr (the peak learning rate); the official names pruned_seed and "
                                "retrain_schedule are accepted", flags=("--vary", "--ensemble_by"), group="sms")
    values: str = setting("", "with --vary weight_decay or lr: comma-separated values, one per candidate",
                          flags=("--values", "--split_vals"), group="sms")
    soup: str = setting("uniform", "uniform (the mean of all candidates) or greedy (candidates by validation "
                                   "accuracy, each kept only if the soup's accuracy does not drop); UniformEnsembling "
                                   "and GreedySoup are accepted", flags=("--soup", "--ensemble_method"), group="sms")
    schedule: str = setting("imp", "imp: each phase prunes --rate of the remaining weights, --pruning_times networks "
                                   "in all; geometric: --n_phases phases reach --goal_sparsity, each pruning the same "
                                   "fraction (the official schedule)", group="sms", choices=PHASE_SCHEDULES)
    goal_sparsity: float = setting(0.0, "with --schedule geometric: the final sparsity (fraction of prunable weights "
                                        "removed); with imp, a check that the schedule reaches it (0: no check)",
                                   group="sms", minimum=0.0, below=1.0)
    phases: int = setting(3, "with --schedule geometric: the number of prune-retrain phases",
                          flags=("--n_phases",), group="sms", minimum=1)
    retrain_schedule: str = setting("step", "step: each phase retrains with IMP's schedule (--lr divided by 10 at "
                                            "--decreasing_lr) from epoch 0; llr: the official default, a 10%% "
                                            "half-cosine warm-up to --lr then linear decay to 0, per step",
                                    group="sms", choices=RETRAIN_SCHEDULES)
    bn_batches: int = setting(0, "batch-norm statistics of every soup: 0 = one pass over the whole training split "
                                 "(the official default), k = k fixed training batches", group="sms", minimum=0)
    imp_budget: bool = setting(False, "the baseline the official code dropped: one network per phase retrained "
                                      "--candidates times as many epochs (IMP without rewinding at SMS's budget)",
                               flags=("--imp_budget", "--extended_imp"), group="sms")
    dense: str = setting("", "a trained dense checkpoint (e.g. an IMP run's 0model_SA_best.pth.tar) to start from "
                             "instead of training phase 0", group="sms")

    def __post_init__(self) -> None:
        self.vary = ORIGINAL_NAMES.get(self.vary, self.vary)
        self.soup = ORIGINAL_NAMES.get(self.soup, self.soup)

    @property
    def value_list(self) -> list[float]:
        """The varied values of ``--values`` (empty for ``--vary seed``)."""
        try:
            return [float(part) for part in self.values.split(",") if part.strip()]
        except ValueError:
            raise UserError(f"--values {self.values!r} must be comma-separated numbers, e.g. 0.0005,0.001,0.002") \
                from None

    @property
    def trained_per_phase(self) -> int:
        """Networks retrained in each pruned phase (1 for the IMP baseline)."""
        return 1 if self.imp_budget else self.candidates

    def validate(self, config: IMPConfig | None = None) -> None:
        """One-line errors for settings that cannot work together, before any data is read (the ranges are declared
        above and checked while parsing; with ``config``, also whether the IMP schedule reaches ``goal_sparsity``)."""
        from .settings import check_ranges

        check_ranges(self)
        for name, value, allowed in (("vary", self.vary, VARIED_SETTINGS), ("soup", self.soup, SOUP_METHODS),
                                     ("schedule", self.schedule, PHASE_SCHEDULES),
                                     ("retrain_schedule", self.retrain_schedule, RETRAIN_SCHEDULES)):
            if value not in allowed:
                raise UserError(f"unknown --{name} {value!r}: choose one of {', '.join(allowed)}")
        if self.dense and not Path(self.dense).is_file():
            raise UserError(f"--dense {self.dense}: no such file; give a dense checkpoint such as an IMP run's "
                            f"0model_SA_best.pth.tar, or omit --dense to train phase 0")
        values = self.value_list
        if self.vary == "seed" and values:
            raise UserError("--values is for --vary weight_decay or lr; with --vary seed the candidates take "
                            "seeds derived from --seed: drop --values")
        if self.vary != "seed" and not self.imp_budget and len(values) != self.candidates:
            raise UserError(f"--vary {self.vary} needs one value per candidate: --values has {len(values)}, "
                            f"--candidates is {self.candidates}")
        if self.vary == "lr" and any(v <= 0 for v in values) or self.vary == "weight_decay" and any(v < 0 for v in values):
            raise UserError(f"--values {self.values}: learning rates must be positive, weight decays not negative")
        if self.schedule == "geometric":
            if self.goal_sparsity <= 0:
                raise UserError("--schedule geometric needs --goal_sparsity (e.g. 0.9 for 10% of the weights kept)")
        elif self.goal_sparsity > 0 and config is not None:
            reached = 1 - (1 - config.rate) ** (config.pruning_times - 1)
            if reached + 1e-9 < self.goal_sparsity:
                needed = math.ceil(math.log(1 - self.goal_sparsity) / math.log(1 - config.rate)) + 1
                raise UserError(f"--pruning_times {config.pruning_times} at --rate {config.rate} reaches "
                                f"{100 * reached:.1f}% sparsity, not --goal_sparsity {self.goal_sparsity}: use "
                                f"--pruning_times {needed} or --schedule geometric")

    def pruning(self, config: IMPConfig) -> tuple[float, int]:
        """The fraction of remaining weights each phase prunes, and the number of pruned phases."""
        if self.schedule == "geometric":
            return 1 - (1 - self.goal_sparsity) ** (1 / self.phases), self.phases
        return config.rate, config.pruning_times - 1
