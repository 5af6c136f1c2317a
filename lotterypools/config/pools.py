"""The pool search's and the analyses' settings declared once (flags, help, defaults, ranges). Torch-free.

Field names are the flags' destinations, so the pool commands read them by these names. The BN batch is
``--bn_batch_size`` everywhere; ``--batch_size`` (CIFAR) and ``-b/--batch_size`` (ImageNet) are its spellings
in the pool and analysis scripts only (:mod:`lotterypools.cli.aliases`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .names import PAPER_COEFFICIENTS, POOL_METHODS
from .settings import setting


@dataclass
class PoolSearchSettings:
    """The flags of Lottery_pools.py (CIFAR and ImageNet) and the analyses that recompute BN."""

    interpolate_method: str = setting("Lottery_pools", "Lottery_pools (greedy interpolation), interpolate_swa, "
                                                       "interpolate_ema, or liner_inter (linear paths between "
                                                       "consecutive tickets)", group="search", choices=POOL_METHODS)
    search_num: int = setting(3, "size of the candidate pool counting the target, as the original: search_num-1 "
                                 "candidates (the paper uses all tickets, e.g. 19)", group="search", minimum=1)
    interpolation_value_list: list[float] = setting(list(PAPER_COEFFICIENTS), "coefficients alpha tried on each "
                                                    "candidate; 0.5 alone gives Lottery Pools (average); the default is "
                                                    "the paper's 11 values", group="search", type=float,
                                                    nargs="+", minimum=0, maximum=1)
    EMA_value: float = setting(0.95, "EMA weight on the incoming ticket for interpolate_ema (the paper's)",
                               group="search", minimum=0, maximum=1)
    prune_mode: str = setting("during", "re-prune after every interpolation (during, the paper's) or once at the end "
                                        "(after)", group="search", choices=("during", "after"))
    stacked_coefficients: bool = setting(False, "score all coefficients of a candidate together (stacked models "
                                                "through torch.func.vmap, each with its own BN pass, batches side by "
                                                "side): the same choices up to float rounding, K times the memory; "
                                                "for GPUs a single trial does not fill (default off: one by one)",
                                         group="search", affects_result=False)
    targets: list[int] = setting(None, "target rounds, e.g. --targets 3 7 (default: every round of the ticket "
                                       "folder)", group="targets", type=int, nargs="+", minimum=0)
    overwrite: bool = setting(False, "recompute targets whose record (same method and settings) is already in the "
                                     "results file; without it a rerun skips them and continues with the rest",
                              group="search", affects_result=False)
    save_pooled: bool = setting(False, "write every pooled ticket to <save_dir>/<method>/<k>model_SA_best.pth.tar",
                                group="search", affects_result=False)
    bn_batches: int = setting(0, "recompute BN statistics on this many fixed, seeded training batches instead of a "
                                 "full pass over the training split with fresh augmentation per trial (0: full pass, "
                                 "as the original)", group="bn", minimum=0)
    bn_batch_size: int = setting(128, "images per batch of the BN recalibration (and, on ImageNet, of evaluation)",
                                 group="bn", minimum=1)


@dataclass
class AnalysisSettings:
    """The numbers of the ensemble analyses (analyze_tickets.py ensemble, ensemble_freetickets.py)."""

    k: int = setting(2, "number of nearest tickets joining each target (the paper's 3-model ensemble)",
                     group="ensemble", minimum=1)
    density: float = setting(None, "check that every ticket has this density (default: only that all tickets "
                                   "share one)", group="freetickets", type=float, above=0, maximum=1)
