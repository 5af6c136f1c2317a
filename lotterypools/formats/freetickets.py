"""FreeTickets' run folder, read and written for the round trainer (:class:`lotterypools.training.engine.IMPEngine`).

One run is one round whose phases each keep a ticket (their best-validation epoch). Files, as before the run
moved onto the round trainer (``ensemble_freetickets.py`` and earlier folders read them unchanged):

* ``progress/<name>.pth`` after every epoch: ``next_epoch``, ``best`` (phase -> the ticket's record),
  ``history`` (one record per epoch), ``masks``, ``optimizer``, ``trajectory``, ``updates`` (mask updates),
  ``model`` and ``config`` (the run's settings, compared on resume);
* each phase's ticket (``model_<k>.pth``, ``checkpoint-<k>.pth.tar``, ``<seed>.pt``...): the weights with
  ``epoch``, ``masks``, ``arch``, ``dataset``, ``method``, ``density``, ``val_acc``, ``test_acc``, ``seed``,
  or the bare state dict (``bare_tickets``, main_individual.py);
* ``history_<name>.json`` (settings, history, tickets, mask-update count, per-layer densities) and
  ``trajectory_<name>.pt`` (softmax outputs per epoch, when recorded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..core.errors import UserError
from ..core.records import write_json
from ..core.torchfiles import atomic_save, load_file, state_dict_of
from ..training.engine import empty_result
from ..training.progress import RoundProgress
from ..training.sparse import sparse_layer_report

PROGRESS_KEYS = ("next_epoch", "best", "history", "masks", "optimizer", "trajectory", "updates", "model", "config")
SUMMARY_COLUMNS = ["ticket", "epoch", "density", "val_acc", "test_acc"]


def progress_path(folder: str | os.PathLike, name: str) -> Path:
    """The per-epoch checkpoint of run ``name`` in ``folder``."""
    return Path(folder) / "progress" / f"{name}.pth"


def history_path(folder: str | os.PathLike, name: str) -> Path:
    """Run ``name``'s readable record in ``folder`` (settings, per-epoch history, tickets, per-layer densities)."""
    return Path(folder) / f"history_{name}.json"


HISTORY_KEYS = ("config", "history", "tickets")


def read_history(folder: str | os.PathLike, name: str, missing_ok: bool = False) -> dict | None:
    """``history_<name>.json`` as written after every epoch: ``config`` (the run's settings, its plan's ``lrs``
    one per epoch), ``history`` (one record per finished epoch) and ``tickets`` (each phase's best epoch with
    ``ticket``, ``density``, ``val_acc``, ``test_acc``). ``None`` when absent and ``missing_ok``."""
    import json

    path = history_path(folder, name)
    if missing_ok and not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        missing = [key for key in HISTORY_KEYS if key not in data]
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{path}: not a FreeTickets history file ({error.__class__.__name__}: {error}): rerun the "
                        f"training command to continue the run and rewrite it") from None
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: not a FreeTickets history file; rerun the training "
                        f"command to rewrite it")
    return data


def read_ticket(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A ticket's weights and masks (empty for a bare state dict, main_individual.py's, or a dense run's)."""
    saved = load_file(path)
    masks = saved.get("masks") if isinstance(saved, dict) else None
    return state_dict_of(saved, Path(path)), dict(masks or {})


class FreeTicketsLayout:
    """One FreeTickets run folder. ``phases`` have ``start`` (0-based epoch) and ``ticket`` (a file name, or
    ``None``: the phase keeps none); ``settings`` is the stored settings record's owner (``arch``: ``model``,
    ``data``, ``method``, ``seed`` go into each ticket)."""

    file_layout = "freetickets"

    def __init__(self, folder: str | os.PathLike, name: str, settings: Any, phases: Sequence[Any], epochs: int,
                 bare_tickets: bool = False):
        self.folder, self.name, self.settings = Path(folder), name, settings
        self.phases, self.epochs, self.bare_tickets = list(phases), epochs, bare_tickets
        self.path = progress_path(self.folder, name)
        self.best: dict[int, dict] = {}
        self.record: dict | None = None
        self.next_epoch = 0
        self._saved: dict | None = None

    # ---------------------------------------------------------------- reading
    def _load(self) -> dict:
        if self._saved is None:
            saved = load_file(self.path)
            missing = [key for key in PROGRESS_KEYS if not isinstance(saved, dict) or key not in saved]
            if missing:
                raise UserError(f"{self.path} is not a FreeTickets progress file (it lacks {', '.join(missing)}): "
                                f"give another --save_dir, or move the file away to start again")
            self._saved = saved
        return self._saved

    def holds_run(self) -> bool:
        return self.path.exists()

    def describe_missing(self) -> str:
        return f"no progress/{self.name}.pth in {self.folder}"

    def read_settings(self) -> dict | None:
        return self._load()["config"] if self.holds_run() else None

    def write_settings(self, settings: dict) -> None:
        """Kept for the next checkpoint: this layout stores the settings inside every progress file."""
        self.record = settings

    def latest_progress(self, last_round: int) -> RoundProgress | None:
        return self.read_progress_file(self.path) if self.holds_run() else None

    def read_progress_file(self, path: Path) -> RoundProgress:
        """The run as far as it went; the ticket so far is the latest phase's best epoch."""
        if Path(path) != self.path:
            self.path, self._saved = Path(path), None
        saved = self._load()
        self.best = {int(phase): record for phase, record in saved["best"].items()}
        self.next_epoch = int(saved["next_epoch"])
        latest = self.best[max(self.best)] if self.best else None
        return RoundProgress(0, self.next_epoch, empty_result(), latest["val_acc"] if latest else -1.0,
                             latest["epoch"] if latest else -1, optimizer=saved["optimizer"], model=saved["model"],
                             extra=saved, path=Path(path))

    def round_closed(self, round_index: int) -> bool:
        return self.next_epoch >= self.epochs

    def read_ticket(self, round_index: int) -> dict[str, torch.Tensor]:
        """Weights of the latest phase's ticket."""
        if not self.best:
            raise UserError(f"{self.folder} holds no ticket yet: let the run finish a phase first")
        saved = load_file(self.folder / self.best[max(self.best)]["ticket"])
        return saved if self.bare_tickets else saved["state_dict"]

    def read_rewind(self, epoch: int) -> None:
        """A FreeTickets run never rewinds."""
        return None

    # ---------------------------------------------------------------- writing
    def write_start(self, round_index: int, start_epoch: int, model: nn.Module) -> None:
        """Nothing: the run's start is its first checkpoint."""

    def write_rewind(self, epoch: int, model: nn.Module) -> None:
        """Nothing: a FreeTickets run never rewinds."""

    def write_epoch(self, progress: RoundProgress, model: nn.Module, is_ticket: bool, extra: dict) -> None:
        """The progress file after an epoch (``extra``: the policy's history, masks, trajectory, updates), the
        phase's ticket when this epoch is its best so far, and the side files."""
        record = extra["history"][-1]
        phase = self.phases[record["phase"]]
        if is_ticket and phase.ticket is not None:
            self.best[record["phase"]] = {**record, "ticket": phase.ticket}
            self._write_ticket(model, record, extra["masks"], phase.ticket, extra.get("planned_kept"))
        self.next_epoch = progress.next_epoch
        state = {"next_epoch": progress.next_epoch, "best": self.best, "history": extra["history"],
                 "masks": extra["masks"], "optimizer": progress.optimizer, "trajectory": extra["trajectory"],
                 "updates": extra["updates"]}
        atomic_save({**state, "model": model.state_dict(), "config": self.record}, self.path)
        self._saved = None
        self._write_side_files(state)

    def _write_ticket(self, model: nn.Module, record: dict, masks: dict, file_name: str,
                      planned_kept: int | None = None) -> None:
        """The phase's ticket, refused (nothing written) from non-finite weights or masks off their planned count."""
        from ..training.guards import check_finite, check_ticket_density

        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        check_finite(weights, "the ticket's weight")
        if masks and planned_kept is not None:
            check_ticket_density(masks, planned_kept, self.folder / file_name)
        s = self.settings
        ticket = weights if self.bare_tickets else {
            "epoch": record["epoch"], "state_dict": weights, "masks": masks, "arch": s.model, "dataset": s.data,
            "method": s.method, "density": record["density"], "val_acc": record["val_acc"],
            "test_acc": record["test_acc"], "seed": s.seed}
        atomic_save(ticket, self.folder / file_name)

    def _write_side_files(self, state: dict) -> None:
        write_json(history_path(self.folder, self.name),
                   {"config": self.record, "history": state["history"], "tickets": self.summary(),
                    "mask_updates": len(state["updates"]),
                    "layers": sparse_layer_report(state["masks"]) if state["masks"] else []})
        if state["trajectory"]:
            atomic_save({"name": self.name, "epochs": [h["epoch"] for h in state["history"]],
                         "phases": [h["phase"] for h in state["history"]], "probs": torch.stack(state["trajectory"])},
                        self.folder / f"trajectory_{self.name}.pt")

    def close_round(self, progress: RoundProgress, model: nn.Module, record: dict) -> None:
        """Nothing more: every epoch already wrote the tickets and the history."""

    # ---------------------------------------------------------------- the run's records
    def summary(self) -> list[dict]:
        """One record per ticket saved so far (phase order)."""
        return [self.best[k] for k in sorted(self.best)]

    def summary_columns(self, ticket_rule: str) -> list[str]:
        return list(SUMMARY_COLUMNS)
