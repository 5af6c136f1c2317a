"""OpenLTH's run layout: the one reader and the one writer of its level folders.

An OpenLTH IMP run folder holds ``level_{k}/main/`` per pruning level k (level 0 is dense) with
``mask.pth`` (``{parameter name: 0/1 tensor}``, saved as int) and the weights of training steps as
``model_ep{E}_it{I}.pth`` (a plain state_dict, keys ``model.conv1.weight``, ...). A level's ticket is
the last epoch present with iteration 0. ``sparsity_report.json`` sits beside them, and ours:
``checkpoint.pth`` (resumable training state of a level in progress) and ``level_summary.json`` (written
when a level is finished). :class:`OpenLTHLayout` is the training engine's reader and writer of it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .original import SettingsFile, TicketFile, check_rounds_without_gaps
from ..core.errors import UserError
from ..core.torchfiles import atomic_save, load_file, state_dict_of, tensor_differences
from ..training.masks import density, kept_count, masks_of, prunable_names, split_pruned_state
from ..training.progress import RoundProgress
from ..core.records import read_json, write_json
from ..core.types import Masks, Weights

LEVEL_PATTERN = re.compile(r"^level_(\d+)$")
MODEL_PATTERN = re.compile(r"^model_ep(\d+)_it0\.pth$")


def level_dir(root: str | os.PathLike, level: int) -> Path:
    """``root/level_{level}/main``."""
    return Path(root) / f"level_{level}" / "main"


def model_path(root: str | os.PathLike, level: int, epoch: int) -> Path:
    return level_dir(root, level) / f"model_ep{epoch}_it0.pth"


def mask_path(root: str | os.PathLike, level: int) -> Path:
    return level_dir(root, level) / "mask.pth"


def checkpoint_path(root: str | os.PathLike, level: int) -> Path:
    """Resumable training state of a level in progress (model, optimiser, scheduler, next epoch)."""
    return level_dir(root, level) / "checkpoint.pth"


def report_path(root: str | os.PathLike, level: int) -> Path:
    return level_dir(root, level) / "sparsity_report.json"


def summary_path(root: str | os.PathLike, level: int) -> Path:
    """Ours: a finished level's record and per-epoch history."""
    return level_dir(root, level) / "level_summary.json"


def settings_path(root: str | os.PathLike) -> Path:
    """Ours: the run's settings (JSON), compared when the command is rerun to continue."""
    return Path(root) / "settings.json"


def model_epochs(folder: Path) -> list[int]:
    """Epochs E with a ``model_ep{E}_it0.pth`` in ``folder``, ascending."""
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for name in os.listdir(folder) if (m := MODEL_PATTERN.match(name)))


def levels_present(root: str | os.PathLike) -> list[int]:
    """The k of every ``level_{k}`` folder under ``root``, ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for name in os.listdir(root) if (m := LEVEL_PATTERN.match(name)))


def level_files(root: str | os.PathLike) -> list[TicketFile]:
    """One ticket per level: ``level_{k}/main/model_ep{E}_it0.pth`` with E the last epoch present.

    Levels must run 0, 1, 2, ... without a gap, each with its ``mask.pth``, and all must end at the same
    epoch (a level that stops earlier is still training): otherwise a one-line error says which.
    """
    root = Path(root)
    levels = levels_present(root)
    if not levels:
        raise UserError(f"{root} holds no OpenLTH 'level_<k>/main' folders; pass the --save_dir of an OpenLTH or "
                        f"main_imp.py run")
    check_rounds_without_gaps(levels, root)
    ends = {}
    for level in levels:
        epochs = model_epochs(level_dir(root, level))
        if not epochs or not mask_path(root, level).is_file():
            what = "mask.pth" if epochs else "model_ep<E>_it0.pth"
            raise UserError(f"{level_dir(root, level)} is incomplete: no {what}; finish that level "
                            f"(main_imp.py resumes it) or remove the folder")
        ends[level] = epochs[-1]
    final = max(ends.values())
    short = [level for level, end in ends.items() if end < final]
    if short:
        raise UserError(f"level_{short[0]} ends at epoch {ends[short[0]]} while other levels reach {final}: "
                        f"it is incomplete; finish it (main_imp.py resumes it) or remove that folder")
    return [TicketFile(level, model_path(root, level, ends[level])) for level in levels]


def check_mask(masks: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """One-line error when a mask names tensors the weights lack or has other shapes."""
    differences = tensor_differences(masks, weights)  # weights without a mask are fine: unpruned
    missing = differences.unexpected
    if missing:
        raise UserError(f"{path} masks {missing[0]} (and {len(missing) - 1} more), which the weights beside it "
                        f"lack: the mask does not match the architecture; check --arch")
    wrong = differences.reshaped
    if wrong:
        name = wrong[0]
        raise UserError(f"{path}: mask of {name} is {tuple(masks[name].shape)} but the weight is "
                        f"{tuple(weights[name].shape)}: the mask does not match the architecture; check --arch")


def read_level(path: str | os.PathLike) -> tuple[Weights, Masks]:
    """Plain weights (masked) and float masks of the ticket at ``path`` (a ``model_ep{E}_it0.pth``)."""
    path = Path(path)
    weights = dict(state_dict_of(load_file(path), path))
    masks_file = path.parent / "mask.pth"
    masks = {name: value.float() for name, value in dict(load_file(masks_file)).items()}
    check_mask(masks, weights, masks_file)
    for name, mask in masks.items():
        weights[name] = weights[name] * mask.to(weights[name].dtype)
    return weights, masks


def write_model(root: str | os.PathLike, level: int, epoch: int, state: Mapping[str, torch.Tensor]) -> Path:
    """Write a plain state_dict as ``level_{level}/main/model_ep{epoch}_it0.pth`` (atomically)."""
    path = model_path(root, level, epoch)
    atomic_save({k: v.detach().cpu() for k, v in state.items()}, path)
    return path


def write_mask(root: str | os.PathLike, level: int, masks: Mapping[str, torch.Tensor]) -> Path:
    """Write ``mask.pth`` (int tensors, as OpenLTH) and ``sparsity_report.json`` for a level."""
    path = mask_path(root, level)
    atomic_save({k: v.detach().cpu().int() for k, v in masks.items()}, path)
    total = sum(m.numel() for m in masks.values())
    write_json(report_path(root, level), {"total": total, "unpruned": kept_count(masks), "density": density(masks)})
    return path


def _plain(model: torch.nn.Module) -> Weights:
    """The model's weights with masks folded in (``weight_orig * weight_mask`` -> ``weight``), on the CPU."""
    weights, _ = split_pruned_state(model.state_dict())
    return {k: v.detach().cpu() for k, v in weights.items()}


class OpenLTHLayout(SettingsFile):
    """An OpenLTH run folder, read and written for the training engine (tickets: the last epoch's weights).

    A level starts by writing ``mask.pth`` and its start weights ``model_ep{start}_it0.pth`` (level 0: the
    initialisation; later levels: the rewind weights under the mask); level 0 also writes the rewind epoch's
    weights; every epoch replaces ``checkpoint.pth``; a finished level writes ``model_ep{E}_it0.pth`` and
    ``level_summary.json`` and drops ``checkpoint.pth``.
    """

    file_layout = "openlth"

    def __init__(self, folder: str | os.PathLike, config: Any):
        if config.ticket != "last":
            raise UserError(f"--ticket {config.ticket}: OpenLTH's layout keeps the last epoch's weights as a level's "
                            f"ticket; use --ticket last (or the original's layout for best-validation tickets)")
        self.folder, self.config = Path(folder), config
        self.settings_path = settings_path(self.folder)

    def holds_run(self) -> bool:
        return mask_path(self.folder, 0).exists() or checkpoint_path(self.folder, 0).exists()

    def describe_missing(self) -> str:
        return f"no level in progress or finished under {self.folder}"

    def latest_progress(self, last_round: int) -> RoundProgress | None:
        """The highest level with a checkpoint (in progress) or a summary (finished), up to ``last_round``."""
        for level in sorted((k for k in levels_present(self.folder) if k <= last_round), reverse=True):
            if checkpoint_path(self.folder, level).exists():
                return self.read_progress_file(checkpoint_path(self.folder, level))
            if summary_path(self.folder, level).exists():
                return self._finished(level)
        return None

    def read_progress_file(self, path: Path) -> RoundProgress:
        return RoundProgress.from_saved(load_file(path), path, model_key="model")

    def _finished(self, level: int) -> RoundProgress:
        record = read_json(summary_path(self.folder, level))
        path = model_path(self.folder, level, record["epochs_end"])
        weights, masks = read_level(path)
        return RoundProgress(level, record["epochs_end"], record["history"], record["val_acc"] or -1.0,
                             record["ticket_epoch"], record["seconds"], record.get("stopped_early", False),
                             model=weights, masks=masks if level > 0 else {}, path=path)

    def round_closed(self, round_index: int) -> bool:
        return summary_path(self.folder, round_index).exists()

    def write_start(self, round_index: int, start_epoch: int, model: torch.nn.Module) -> None:
        masks = masks_of(model) or {name: torch.ones_like(model.state_dict()[name])
                                    for name in prunable_names(model, self.config.include_linear)}
        write_mask(self.folder, round_index, masks)
        write_model(self.folder, round_index, start_epoch, _plain(model))

    def write_rewind(self, epoch: int, model: torch.nn.Module) -> None:
        write_model(self.folder, 0, epoch, _plain(model))

    def read_rewind(self, epoch: int) -> Weights | None:
        path = model_path(self.folder, 0, epoch)
        return dict(load_file(path)) if path.exists() else None

    def read_ticket(self, round_index: int) -> Weights:
        epochs = model_epochs(level_dir(self.folder, round_index))
        if not epochs:
            raise UserError(f"{level_dir(self.folder, round_index)} holds no model_ep<E>_it0.pth")
        return read_level(model_path(self.folder, round_index, epochs[-1]))[0]

    def write_epoch(self, progress: RoundProgress, model: torch.nn.Module, is_ticket: bool,
                    extra: Mapping[str, Any]) -> None:
        """``checkpoint.pth``: the training state and the weights as trained (``weight_orig`` kept: exact resume)."""
        atomic_save({**extra, **progress.resumable_state(), "model": model.state_dict()},
                    checkpoint_path(self.folder, progress.round))

    def close_round(self, progress: RoundProgress, model: torch.nn.Module, record: dict) -> None:
        write_model(self.folder, progress.round, progress.next_epoch, _plain(model))
        write_json(summary_path(self.folder, progress.round),
                   {**record, "level": progress.round, "epochs_end": progress.next_epoch, "history": progress.result})
        checkpoint_path(self.folder, progress.round).unlink(missing_ok=True)

    def summary(self) -> list[dict]:
        records = [read_json(summary_path(self.folder, level)) for level in levels_present(self.folder)]
        return [{k: v for k, v in r.items() if k != "history"} for r in records if r is not None]
