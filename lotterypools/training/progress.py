"""What a round's checkpoint holds: the training state the engine updates per epoch and restores on resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.errors import UserError
from ..core.types import Masks


def imp_summary_columns(ticket_rule: str) -> list[str]:
    """The columns of an IMP run's summary table (``summary.json`` names them by the ticket rule)."""
    best = ticket_rule == "best_val"
    return ["round", "density", "best_val_acc" if best else "val_acc", "test_acc",
            "best_epoch" if best else "ticket_epoch", "epochs", "seconds"]


# ---------------------------------------------------------------- what a round's checkpoint holds
@dataclass
class RoundProgress:
    """A round of training as far as it went: what a checkpoint restores and the engine updates per epoch.

    ``next_epoch`` counts finished epochs (the original's ``epoch``); ``result`` is the per-epoch history
    (``train_ta``, ``val_ta``, ``test_ta``, ``train_loss``, ``val_loss``, ``test_loss``); ``ticket_epoch``/
    ``ticket_val`` say which epoch's weights are the ticket so far; ``stopped`` is set when a hook ended the
    round early; ``model``/``masks`` are the saved weights when read from a file, ``extra`` the whole saved
    dict (a round policy's extra keys live at its top level).
    """

    round: int
    next_epoch: int
    result: dict[str, list[float]]
    ticket_val: float = -1.0
    ticket_epoch: int = -1
    seconds: float = 0.0
    stopped: bool = False
    optimizer: dict | None = None
    scheduler: dict | None = None
    model: dict[str, torch.Tensor] | None = None
    masks: Masks = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def record(self, epoch_result: Any, optimizer_state: dict, scheduler_state: dict) -> None:
        """Add one finished epoch (an ``engine.EpochResult``) and the optimiser and schedule after it."""
        stats = epoch_result.stats()
        for key, name in (("train_ta", "train_acc"), ("val_ta", "val_acc"), ("test_ta", "test_acc"),
                          ("train_loss", "train_loss"), ("val_loss", "val_loss"), ("test_loss", "test_loss")):
            self.result.setdefault(key, []).append(stats.get(name))
        self.next_epoch = epoch_result.epoch
        self.seconds += epoch_result.seconds
        self.stopped = epoch_result.stopped
        self.optimizer, self.scheduler = optimizer_state, scheduler_state

    def resumable_state(self) -> dict[str, Any]:
        """The training-state keys every layout stores (beside the model)."""
        return {"state": self.round, "result": self.result, "epoch": self.next_epoch, "best_sa": self.ticket_val,
                "best_epoch": self.ticket_epoch, "seconds": self.seconds, "stopped": self.stopped,
                "optimizer": self.optimizer, "scheduler": self.scheduler}

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any], path: Path, model_key: str = "state_dict") -> "RoundProgress":
        """Read back :meth:`resumable_state` plus the model (``model_key``) from a loaded checkpoint."""
        required = ("state", "epoch", model_key)
        if not isinstance(saved, Mapping) or any(key not in saved for key in required):
            raise UserError(f"{path} is not a round checkpoint of an IMP run (it lacks the keys "
                            f"{', '.join(required)}): point --checkpoint at a '<k>checkpoint.pth.tar'")
        return cls(int(saved["state"]), int(saved["epoch"]), dict(saved.get("result") or {}),
                   float(saved.get("best_sa", -1.0)), int(saved.get("best_epoch", -1)),
                   float(saved.get("seconds", 0.0)), bool(saved.get("stopped", False)), saved.get("optimizer"),
                   saved.get("scheduler"), dict(saved[model_key]), dict(saved.get("masks") or {}), dict(saved),
                   Path(path))
