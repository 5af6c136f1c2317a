"""PrAC's settings declared once (the original's flags and defaults). Torch-free.

The pruning flags are IMPConfig's; PrAC's ``--rewind_epoch`` is a 0-based epoch index, so it is
``--rewind_index`` here, with ``--rewind_epoch`` as main_PrAC_imp.py's spelling (:mod:`lotterypools.cli.aliases`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import UserError
from .settings import check_ranges, setting

DATA_PRUNE_RULES = ("zero_out", "constent")
PRAC_PRUNE_TYPES = ("lt", "rewind_lt")


@dataclass
class PrACSettings:
    """The data-selection and early-stop settings of PrAC (stored with every checkpoint and compared on resume)."""

    eb_eps: float = setting(0.08, "mask-distance threshold of the early stop (a fraction of the remaining weights)",
                            group="stop", above=0, below=1)
    queue_length: int = setting(5, "epochs in a row the mask distance must stay below --eb_eps to stop a round",
                                group="stop", minimum=1)
    data_prune: str = setting("zero_out", "zero_out: keep samples forgotten more than --threshold times or never "
                                          "learned; constent: keep the int(N*(1-data_rate)^(k+1)) most forgotten after "
                                          "round k", group="selection", choices=DATA_PRUNE_RULES)
    threshold: int = setting(0, "forgetting events a sample must exceed to be kept", group="selection", minimum=0)
    data_rate: float = setting(0.2, "per-round data pruning rate of --data_prune constent", group="selection",
                               minimum=0, below=1)

    def validate(self) -> None:
        """One-line errors for settings outside their range or unknown rules."""
        check_ranges(self)
        if self.data_prune not in DATA_PRUNE_RULES:
            raise UserError(f"unknown --data_prune {self.data_prune!r}: choose one of {', '.join(DATA_PRUNE_RULES)}")


@dataclass
class PrACRewind:
    """PrAC's rewind point, spelled as its code counts it (not stored: IMPConfig.rewind_epoch = index + 1)."""

    rewind_index: int = setting(2, "0-based epoch whose end is the rewind point for rewind_lt, as in the PrAC code: "
                                   "2 = after 3 epochs (IMP's --rewind_epoch 3)", group="pruning", minimum=0)
