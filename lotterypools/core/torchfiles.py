"""PyTorch files: written atomically, loaded safely (weights only), and the one check that a state dict fits a model."""

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


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    with atomic_output(path) as stream:
        torch.save(obj, stream)


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; a missing or corrupt file is a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a folder: give a checkpoint file in it, e.g. "
                        f"{path / '0checkpoint.pth.tar'}")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch names the refused global only for some pickles; the others are read (without running) for it
        refused = _refused_global(str(error)) or (
            _first_foreign_global(Path(path)) if "Weights only load failed" in str(error) else None)
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


class MismatchError(UserError):
    """A checkpoint that does not fit the model (other architecture or other data set)."""


def state_dict_of(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model state in a loaded checkpoint (``state_dict`` key, or a bare state dict)."""
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        return checkpoint["state_dict"]
    if isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        return checkpoint
    raise UserError(f"{path} holds no model weights (no 'state_dict' key): not a ticket checkpoint")


@dataclass(frozen=True)
class TensorDifferences:
    """How a state dict differs from a reference one: names it lacks, names it adds, tensors of another shape."""

    missing: list[str]
    unexpected: list[str]
    reshaped: list[str]

    @property
    def names(self) -> list[str]:
        """Every differing name, sorted (empty when the state dict fits)."""
        return sorted(self.missing + self.unexpected + self.reshaped)


def tensor_differences(state: Mapping[str, Any], reference: Mapping[str, Any]) -> TensorDifferences:
    """The one state-dict fit check: which names are missing, unexpected, or hold tensors of other shapes."""
    reshaped = [k for k in reference if k in state and torch.is_tensor(state[k]) and torch.is_tensor(reference[k])
                and state[k].shape != reference[k].shape]
    return TensorDifferences(sorted(set(reference) - set(state)), sorted(set(state) - set(reference)), sorted(reshaped))


def holds_pruning_buffers(state: Mapping[str, Any]) -> bool:
    """Whether a state dict has torch.nn.utils.prune's ``<name>_orig``/``<name>_mask`` pairs (an IMP ticket)."""
    return any(key.endswith("_orig") and key[:-len("_orig")] + "_mask" in state for key in state)


def check_compatible(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], path: Path,
                     what: str) -> None:
    """One-line error naming the differing keys or shapes when a checkpoint does not fit the model."""
    differences = tensor_differences(state, reference)
    if differences.missing or differences.unexpected:
        raise MismatchError(f"{path} does not fit {what}: missing {_few(differences.missing)}, unexpected "
                            f"{_few(differences.unexpected)}; check --arch and --dataset")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(reference[k].shape)}" for k in differences.reshaped]
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


def _few(items: list[str], count: int = 3) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - count} more" if len(items) > count else ""
    return ", ".join(items[:count]) + more
