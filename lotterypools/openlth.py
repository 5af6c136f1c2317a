"""OpenLTH's run layout: the one reader and the one writer of its level folders.

An OpenLTH IMP run folder holds ``level_{k}/main/`` per pruning level k (level 0 is dense) with
``mask.pth`` (``{parameter name: 0/1 tensor}``, saved as int) and the weights of training steps as
``model_ep{E}_it{I}.pth`` (a plain state_dict, keys ``model.conv1.weight``, ...). A level's ticket is
the last epoch present with iteration 0. ``checkpoint.pth`` (ours: resumable training state) and
``sparsity_report.json`` sit beside them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import torch

from .checkpoints import TicketFile, atomic_save, check_rounds_without_gaps, load_file, state_dict_of
from .errors import UserError
from .masks import Masks, density, kept_count
from .results import write_json

LEVEL_PATTERN = re.compile(r"^level_(\d+)$")
MODEL_PATTERN = re.compile(r"^model_ep(\d+)_it0\.pth$")
Weights = dict[str, torch.Tensor]


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
    missing = sorted(set(masks) - set(weights))
    if missing:
        raise UserError(f"{path} masks {missing[0]} (and {len(missing) - 1} more), which the weights beside it "
                        f"lack: the mask does not match the architecture; check --arch")
    wrong = [name for name in masks if tuple(masks[name].shape) != tuple(weights[name].shape)]
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
