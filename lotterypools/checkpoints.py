"""Checkpoint files: atomic writes, safe loading, and the original repository's run layout.

The original's checkpoints hold ``weight_orig`` + ``weight_mask`` for pruned layers (what
``torch.nn.utils.prune`` writes); the pool search works on plain weights plus a separate mask dict.
This module converts between the two and is the one place that reads and writes the original's files:
:class:`OriginalLayout` is the training engine's reader and writer of ``{k}checkpoint.pth.tar``,
``{k}model_SA_best.pth.tar`` and ``epoch_{e}_rewind_weight.pt`` (names in :mod:`lotterypools.paths`), and
:func:`round_checkpoint_dict` builds the original's checkpoint dict for anyone else writing tickets.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from . import paths
from .errors import UserError
from .files import atomic_output
from .masks import Masks, apply_masks, refresh_masked_weights

BEST_PATTERN = paths.BEST_PATTERN
LAST_PATTERN = paths.LAST_PATTERN


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
        # torch names the refused global only for some pickles; the others are read (without running) for it
        refused = _refused_global(str(error)) or (
            _first_foreign_global(path) if "Weights only load failed" in str(error) else None)
        if refused:
            raise UserError(f"checkpoint {path} is unsafe: it asks to load {refused!r}, and only tensors and plain "
                            f"data are loaded (weights_only); use a checkpoint from a source you trust, re-saved "
                            f"as weights") from None
        raise UserError(_unreadable(path, error)) from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise UserError(_unreadable(path, error)) from None


# Globals a plain tensor checkpoint names; any other one is what made torch's weights-only loader refuse a file.
_PLAIN_CHECKPOINT_MODULES = ("torch", "collections", "builtins", "__builtin__", "copyreg", "_codecs", "numpy")


def _first_foreign_global(path: Path) -> str | None:
    """The first function or class a pickle (raw, or a torch zip's ``data.pkl``) names outside plain tensor data.

    Read with :func:`pickletools.genops`, which decodes instructions without running any of them.
    """
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
        else:
            data = path.read_bytes()
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                found = str(arg).replace(" ", ".")
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found = f"{strings[-2]}.{strings[-1]}"
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if not found.startswith(tuple(m + "." for m in _PLAIN_CHECKPOINT_MODULES)):
                return found
    except Exception:  # an unparsable pickle: unsafe all the same, just without a name
        return None
    return None


def _unreadable(path: Path, error: Exception) -> str:
    """One line naming the file and torch's whole reason (its lines joined)."""
    reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    if "weights_only" in reason:  # never pass on torch's advice to load with weights_only=False
        reason = reason.split(".")[0]
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


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
              path: Path | None, what: str) -> None:
    """Load saved weights into a fresh dense ``model`` and attach the masks.

    ``state`` is in the original's layout (``weight_orig`` + ``weight_mask``: loaded as saved, so that a resumed
    run continues exactly) or plain (then ``masks`` says which weights are pruned).
    """
    _, saved_masks = split_pruned_state(state)
    if saved_masks:
        load_pruned_state(model, state, path or Path("?"), what)
        return
    check_compatible(state, model.state_dict(), path or Path("?"), what)
    model.load_state_dict(dict(state))
    if masks:
        apply_masks(model, masks)


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


class OriginalLayout:
    """The original repository's run folder, read and written for the training engine.

    Per round k: ``{k}checkpoint.pth.tar`` (every epoch; the original's keys plus ``best_epoch``, ``seconds``,
    ``stopped``, ``arch``, ``dataset``, ``config`` and any round policy's keys), ``{k}model_SA_best.pth.tar``
    (the same dict at the ticket epoch), ``{k}training_curve.png``; per run: ``epoch_{e}_rewind_weight.pt``
    (the rewind weights), ``summary.json`` (one record per finished round) and ``settings.json``.
    """

    file_layout = "original"

    def __init__(self, folder: str | os.PathLike, config: Any, plot_curves: bool = True):
        self.folder, self.config, self.plot_curves = Path(folder), config, plot_curves
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
        from .results import write_json

        records = [r for r in self.summary() if r["round"] != progress.round] + [record]
        write_json(paths.summary(self.folder), sorted(records, key=lambda r: r["round"]))
        if self.plot_curves:
            from .results import plot_training_curve  # plotting only here, at the end of a round

            first = progress.next_epoch - len(progress.result.get("train_ta", []))
            plot_training_curve(progress.result, first, f"{self.config.arch} round {progress.round} "
                                f"(density {100 * record['density']:.2f}%)", paths.training_curve(self.folder, progress.round))

    def summary(self) -> list[dict]:
        from .results import read_json

        return read_json(paths.summary(self.folder), default=[])
