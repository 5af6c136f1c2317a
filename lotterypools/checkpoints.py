"""Checkpoint files: atomic writes, the original repository's layout, and safe loading.

The original's checkpoints hold ``weight_orig`` + ``weight_mask`` for pruned layers (what
``torch.nn.utils.prune`` writes); the pool search works on plain weights plus a separate mask dict.
This module converts between the two and is the one place that reads and writes those files.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import UserError
from .files import atomic_output
from .masks import Masks, apply_masks, refresh_masked_weights

BEST_PATTERN = re.compile(r"^(\d+)model_SA_best\.pth\.tar$")
LAST_PATTERN = re.compile(r"^(\d+)checkpoint\.pth\.tar$")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    with atomic_output(path) as stream:
        torch.save(obj, stream)


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; a missing or corrupt file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _refused_global(str(error))
        if refused:
            raise UserError(f"checkpoint {path} is unsafe: it asks to load {refused!r}, and only tensors and plain "
                            f"data are loaded (weights_only); use a checkpoint from a source you trust, re-saved "
                            f"as weights") from None
        raise UserError(_unreadable(path, error)) from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise UserError(_unreadable(path, error)) from None


def _unreadable(path: Path, error: Exception) -> str:
    """One line naming the file and torch's whole reason (its lines joined)."""
    reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return (f"checkpoint {path} is unreadable ({type(error).__name__}: {reason}); it may be truncated or not a "
            f"PyTorch file: remove it or point to another")


def _refused_global(message: str) -> str | None:
    """The function or class torch's weights-only unpickler refused (from its message), if it refused one."""
    found = re.search(r"GLOBAL ([\w.]+)", message) if "Weights only load failed" in message else None
    return found.group(1) if found else None


def split_pruned_state(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Masks]:
    """``weight_orig``/``weight_mask`` pairs (or plain ``weight`` beside ``weight_mask``) -> masked plain weights
    and a mask dict."""
    weights: dict[str, torch.Tensor] = {}
    masks: Masks = {}
    for key, value in state_dict.items():
        if key.endswith("_mask"):
            masks[key[: -len("_mask")]] = value.clone()
            continue
        base = key[: -len("_orig")] if key.endswith("_orig") else key
        mask = state_dict.get(f"{base}_mask")
        weights[base] = value * mask if mask is not None else (value.clone() if torch.is_tensor(value) else value)
    return weights, masks


def join_pruned_state(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain weights and masks -> the original's layout (``weight_orig`` + ``weight_mask`` for masked tensors)."""
    state = {}
    for key, value in weights.items():
        if key in masks:
            state[f"{key}_orig"] = value * masks[key]
            state[f"{key}_mask"] = masks[key].clone()
        else:
            state[key] = value
    return state


@dataclass(frozen=True)
class TicketFile:
    """One IMP round's best-validation checkpoint in a run folder."""

    round: int
    path: Path


class MismatchError(UserError):
    """A checkpoint that does not fit the model (other architecture or other data set)."""


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


def last_round_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The ``{k}checkpoint.pth.tar`` with the highest k in ``folder``, if any."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted((int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := LAST_PATTERN.match(name)))
    return found[-1][1] if found else None


def state_dict_of(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model state in a loaded checkpoint (``state_dict`` key, or a bare state dict)."""
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        return checkpoint["state_dict"]
    if isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        return checkpoint
    raise UserError(f"{path} holds no model weights (no 'state_dict' key): not a ticket checkpoint")


def check_compatible(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], path: Path,
                     what: str) -> None:
    """One-line error naming the differing keys or shapes when a checkpoint does not fit the model."""
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    if missing or extra:
        raise MismatchError(f"{path} does not fit {what}: missing {_few(missing)}, unexpected {_few(extra)}; "
                        f"check --arch and --dataset")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(reference[k].shape)}" for k in reference
             if torch.is_tensor(state[k]) and state[k].shape != reference[k].shape]
    if wrong:
        raise MismatchError(f"{path} does not fit {what}: shapes differ for {_few(wrong)}; check --arch and --dataset")


def check_same_data(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], path: Path,
                    what: str) -> None:
    """One-line error when a checkpoint's normalisation buffers (they name its data set) differ from the model's."""
    for key in sorted(k for k in reference if k.endswith(("normalize.mean", "normalize.std")) and k in state):
        if not torch.allclose(state[key].float().cpu(), reference[key].float().cpu(), atol=1e-4):
            raise MismatchError(f"{path} was trained on another data set than {what}: its {key} is "
                                f"{_rounded(state[key])}, not {_rounded(reference[key])}; check --dataset")


def _rounded(values: torch.Tensor) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values.flatten())


def load_pruned_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """Load a state dict in the original layout into a dense ``model``: masks attached, ``weight_orig`` kept as saved.

    Keeping ``weight_orig`` unmultiplied (the pruned entries still hold their decaying values) makes a
    resumed run continue exactly as the uninterrupted one.
    """
    weights, masks = split_pruned_state(state_dict)
    check_compatible(weights, model.state_dict(), path, what)
    apply_masks(model, masks)
    model.load_state_dict(dict(state_dict))
    refresh_masked_weights(model)


def _few(items: list[str], count: int = 3) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - count} more" if len(items) > count else ""
    return ", ".join(items[:count]) + more
