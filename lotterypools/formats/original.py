"""The original repository's run layout: its checkpoint files, ticket files and run folder.

The original's checkpoints hold ``weight_orig`` + ``weight_mask`` for pruned layers (what
``torch.nn.utils.prune`` writes); the pool search works on plain weights plus a separate mask dict.
(the conversion is in :mod:`lotterypools.training.masks`). This module is the one place that reads and writes the
original's files:
:class:`OriginalLayout` is the training engine's reader and writer of ``{k}checkpoint.pth.tar``,
``{k}model_SA_best.pth.tar`` and ``epoch_{e}_rewind_weight.pt`` (names in :mod:`lotterypools.formats.paths`), and
:func:`round_checkpoint_dict` builds the original's checkpoint dict for anyone else writing tickets.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from . import paths
from ..core.errors import UserError
from ..core.torchfiles import atomic_save, load_file, state_dict_of
from ..core.types import Masks
from ..training.masks import split_pruned_state
from ..training.progress import RoundProgress, imp_summary_columns

# Draws one round's training curve: (result lists, first epoch, title, PNG path); see analysis.plots.
CurvePlotter = Callable[[Mapping[str, Sequence[float]], int, str, Path], None]

BEST_PATTERN = paths.BEST_PATTERN


@dataclass(frozen=True)
class TicketFile:
    """One IMP round's best-validation checkpoint in a run folder."""

    round: int
    path: Path


def check_rounds_without_gaps(rounds: list[int], folder: Path) -> None:
    """One answer, for the original's and OpenLTH's layouts alike, when a folder skips a round (level).

    Candidates are pooled by their distance in IMP rounds, so a missing round would silently change the pools.
    """
    missing = sorted(set(range(max(rounds) + 1)) - set(rounds))
    if missing:
        raise UserError(f"ticket folder {folder} has no ticket of round {missing[0]} (OpenLTH: level_{missing[0]}) but "
                        f"has round {max(rounds)}: rounds must run 0..{max(rounds)} without a gap; finish the IMP run "
                        f"or copy the missing ticket in")


def ticket_files(folder: str | os.PathLike, allow_gaps: bool = False) -> list[TicketFile]:
    """The ``{k}model_SA_best.pth.tar`` files of a run folder in round order, or a one-line error.

    The rounds must run 0, 1, 2, ... without a gap unless ``allow_gaps`` (a folder of pooled tickets of some
    targets only, written by ``Lottery_pools.py --save_pooled --targets``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder {folder} does not exist; pass the --save_dir of a main_imp.py run")
    found = sorted((int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := BEST_PATTERN.match(name)))
    if not found:
        raise UserError(f"checkpoint folder {folder} holds no '<k>model_SA_best.pth.tar' tickets; "
                        f"run main_imp.py with --save_dir {folder} first")
    if not allow_gaps:
        check_rounds_without_gaps([k for k, _ in found], folder)
    return [TicketFile(k, path) for k, path in found]


def read_masks(path: Path) -> Masks:
    """The ``weight_mask`` entries of a checkpoint (``{k}checkpoint.pth.tar`` of a pruned round), as a mask dict."""
    _, masks = split_pruned_state(state_dict_of(load_file(path), path))
    if not masks:
        raise UserError(f"{path} holds no pruning masks ('*_mask' entries): take the checkpoint of a pruned round (1 or later)")
    return masks


def read_initialisation(path: Path) -> dict[str, torch.Tensor]:
    """Plain weights to start from: the checkpoint's ``init_weight`` when set, else its ``state_dict``, else a bare state dict."""
    checkpoint = load_file(path)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("init_weight"), dict):
        checkpoint = checkpoint["init_weight"]
    weights, _ = split_pruned_state(state_dict_of(checkpoint, path))
    return weights


def separate_masks(checkpoint: Mapping) -> Masks:
    """Masks stored as a ``mask``/``masks`` dict beside plain weights (keys with or without ``_mask``)."""
    for key in ("mask", "masks"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return {name[: -len("_mask")] if name.endswith("_mask") else name: value.float()
                    for name, value in checkpoint[key].items() if torch.is_tensor(value)}
    return {}


def read_ticket(path: Path) -> tuple[dict[str, torch.Tensor], Masks]:
    """Plain weights (already masked) and masks of one ticket file.

    Masks come as ``weight_orig`` + ``weight_mask`` pairs (the original's layout, masked on reading) or as
    a separate dict beside plain weights, which are masked here.
    """
    checkpoint = load_file(path)
    weights, masks = split_pruned_state(state_dict_of(checkpoint, path))
    if not masks:
        masks = separate_masks(checkpoint)
        for name, mask in masks.items():
            if name in weights:
                weights[name] = weights[name] * mask
    return weights, masks


def round_checkpoint_dict(round_index: int, state_dict: Mapping[str, torch.Tensor], val_acc: float,
                          **extra: Any) -> dict[str, Any]:
    """The original's checkpoint dict (``state``, ``state_dict``, ``best_sa``) plus any ``extra`` keys."""
    return {"state": round_index, "state_dict": dict(state_dict), "best_sa": val_acc, **extra}


class SettingsFile:
    """What the IMP layouts share: the run's settings in ``self.settings_path`` (JSON) and IMP's summary columns."""

    settings_path: Path

    def read_settings(self) -> dict | None:
        """The settings stored with the run (``None`` when the folder holds none)."""
        from ..core.records import read_json

        return read_json(self.settings_path)

    def write_settings(self, settings: dict) -> None:
        from ..core.records import write_json

        write_json(self.settings_path, settings)

    def summary_columns(self, ticket_rule: str) -> list[str]:
        return imp_summary_columns(ticket_rule)


class OriginalLayout(SettingsFile):
    """The original repository's run folder, read and written for the training engine.

    Per round k: ``{k}checkpoint.pth.tar`` (every epoch; the original's keys plus ``best_epoch``, ``seconds``,
    ``stopped``, ``arch``, ``dataset``, ``config`` and any round policy's keys), ``{k}model_SA_best.pth.tar``
    (the same dict at the ticket epoch), ``{k}training_curve.png``; per run: ``epoch_{e}_rewind_weight.pt``
    (the rewind weights), ``summary.json`` (one record per finished round) and ``settings.json``.
    """

    file_layout = "original"

    def __init__(self, folder: str | os.PathLike, config: Any, plot_curve: CurvePlotter | None = None):
        # The plot is passed in: formats sit below analysis, the one package that imports matplotlib.
        self.folder, self.config, self.plot_curve = Path(folder), config, plot_curve
        self.settings_path = paths.settings(self.folder)
        self._rewind: dict[int, dict[str, torch.Tensor]] = {}

    def holds_run(self) -> bool:
        return paths.round_checkpoint(self.folder, 0).exists()

    def describe_missing(self) -> str:
        return f"no '<k>checkpoint.pth.tar' in {self.folder}"

    def latest_progress(self, last_round: int) -> RoundProgress | None:
        """The round checkpoint with the highest k (up to ``last_round``), if any."""
        rounds = [r for r in range(last_round + 1) if paths.round_checkpoint(self.folder, r).exists()]
        return self.read_progress_file(paths.round_checkpoint(self.folder, max(rounds))) if rounds else None

    def read_progress_file(self, path: Path) -> RoundProgress:
        return RoundProgress.from_saved(load_file(path), path)

    def round_closed(self, round_index: int) -> bool:
        return any(record["round"] == round_index for record in self.summary())

    def write_start(self, round_index: int, start_epoch: int, model: torch.nn.Module) -> None:
        """Nothing: the original keeps no start file (the rewind weights are written by :meth:`write_rewind`)."""

    def write_rewind(self, epoch: int, model: torch.nn.Module) -> None:
        weights, _ = split_pruned_state(model.state_dict())
        self._rewind[epoch] = {k: v.detach().cpu().clone() for k, v in weights.items()}
        atomic_save(self._rewind[epoch], paths.rewind_weights(self.folder, epoch))

    def read_rewind(self, epoch: int) -> dict[str, torch.Tensor] | None:
        """The rewind weights of ``epoch`` (the original's ``init_weight``), read once; ``None`` until written."""
        if epoch not in self._rewind:
            path = paths.rewind_weights(self.folder, epoch)
            if not path.exists():
                return None
            self._rewind[epoch] = load_file(path)
        return self._rewind[epoch]

    def read_ticket(self, round_index: int) -> dict[str, torch.Tensor]:
        """Plain (masked) weights of a round's ticket."""
        weights, _ = read_ticket(paths.round_best(self.folder, round_index))
        return weights

    def write_epoch(self, progress: RoundProgress, model: torch.nn.Module, is_ticket: bool,
                    extra: Mapping[str, Any]) -> None:
        """The round checkpoint after an epoch; also the ticket file when this epoch is the ticket."""
        checkpoint = {**extra, **progress.resumable_state(), "state_dict": model.state_dict(),
                      "init_weight": self.read_rewind(getattr(self.config, "rewind_point", 0)),
                      "arch": self.config.arch, "dataset": self.config.dataset, "config": asdict(self.config)}
        if is_ticket:
            atomic_save(checkpoint, paths.round_best(self.folder, progress.round))
        atomic_save(checkpoint, paths.round_checkpoint(self.folder, progress.round))

    def close_round(self, progress: RoundProgress, model: torch.nn.Module, record: dict) -> None:
        """Add the round's record to ``summary.json`` and draw its training curve."""
        self._add_record(record)
        if self.plot_curve is not None:
            first = progress.next_epoch - len(progress.result.get("train_ta", []))
            self.plot_curve(progress.result, first, f"{self.config.arch} round {progress.round} "
                                f"(density {100 * record['density']:.2f}%)", paths.training_curve(self.folder, progress.round))

    def write_ticket(self, round_index: int, checkpoint: Mapping[str, Any], record: dict) -> None:
        """A round's ticket made without training it here (a soup): both round files and its summary record."""
        atomic_save(dict(checkpoint), paths.round_best(self.folder, round_index))
        atomic_save(dict(checkpoint), paths.round_checkpoint(self.folder, round_index))
        self._add_record(record)

    def _add_record(self, record: dict) -> None:
        """``summary.json`` with ``record`` replacing any earlier record of its round."""
        from ..core.records import write_json

        records = [r for r in self.summary() if r["round"] != record["round"]] + [record]
        write_json(paths.summary(self.folder), sorted(records, key=lambda r: r["round"]))

    def summary(self) -> list[dict]:
        from ..core.records import read_json

        return read_json(paths.summary(self.folder), default=[])
