"""Where a run folder's results came from (``provenance.json``), and the check that tickets fit the data they meet.

Every training run records, in its folder's ``provenance.json``, one entry per start: the command line, the
package version and commit, torch/torchvision/python versions, the device, and the data: data set name,
normalisation (mean/std), data folder and a fingerprint (split sizes and a SHA-256 of the labels), with start
and end time and how the run ended. The data set and normalisation are also kept at the top level, so a
reader of tickets (ensemble, PF's ``--pretrain``, the pool search, retraining, analysis) can refuse tickets
of another data set in one line (:func:`check_tickets_match`). Folders written before this file existed
have none and load as before.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .errors import UserError

FILE_NAME = "provenance.json"


def now() -> str:
    """The local time with its offset, to the second (ISO 8601)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def package_commit() -> str | None:
    """The git commit of the package's source: its checkout, or ``None`` (an installed wheel has no ``.git``)."""
    folder = Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def software() -> dict[str, Any]:
    """Package, commit and library versions of this process."""
    from .. import __version__

    try:
        import torchvision
        vision = torchvision.__version__
    except ImportError:  # the CIFAR paths do not need it
        vision = None
    return {"package": "lotterypools", "package_version": __version__, "commit": package_commit(),
            "torch": torch.__version__, "torchvision": vision, "python": platform.python_version(),
            "machine": platform.platform(), "host": platform.node()}


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed (``sys.argv``), quoted so that it can be pasted back."""
    return " ".join(shlex.quote(a) for a in (sys.argv if argv is None else argv))


def labels_fingerprint(splits: Mapping[str, Iterable[int] | torch.Tensor]) -> dict[str, Any]:
    """Split sizes and a SHA-256 of the labels, split by split (the same data gives the same fingerprint)."""
    digest = hashlib.sha256()
    sizes = {}
    for name, labels in splits.items():
        values = torch.as_tensor(labels if torch.is_tensor(labels) else list(labels), dtype=torch.int64).cpu()
        sizes[name] = int(values.numel())
        digest.update(name.encode() + b":" + values.numpy().tobytes())
    return {"sizes": sizes, "labels_sha256": digest.hexdigest()}


def _dataset_labels(dataset: Any) -> list[int]:
    """Labels of a torchvision ``ImageFolder`` or a ``Subset`` of one, without reading an image."""
    if hasattr(dataset, "targets"):
        return list(dataset.targets)
    if hasattr(dataset, "indices") and hasattr(dataset, "dataset"):
        inner = _dataset_labels(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    return []


def data_provenance(data: Any) -> dict[str, Any]:
    """Data set name, normalisation, data folder and fingerprint of in-memory splits or ImageNet folders."""
    spec = getattr(data, "spec", None)
    if spec is not None:  # DataSplits (CIFAR, MNIST-like)
        return {"dataset": spec.name, "normalisation": {"mean": list(spec.mean), "std": list(spec.std)},
                "data_dir": str(getattr(data, "source", "") or ""),
                "data_fingerprint": labels_fingerprint({n: getattr(data, n).labels for n in ("train", "val", "test")})}
    root = getattr(data, "root", None)
    splits = {n: _dataset_labels(getattr(data, n)) for n in ("train", "val", "test") if hasattr(data, n)}
    return {"dataset": "imagenet", "normalisation": None, "data_dir": str(Path(root).resolve()) if root else "",
            "data_fingerprint": labels_fingerprint(splits)}


def run_entry(device: Any = None, **data: Any) -> dict[str, Any]:
    """One run's provenance: command, software, device, ``data`` (from :func:`data_provenance`) and start time."""
    return {"command": command_line(), "cwd": os.getcwd(), "pid": os.getpid(), **software(),
            "device": None if device is None else str(device), **data, "start": now()}


def read_provenance(folder: str | os.PathLike) -> dict | None:
    """A folder's ``provenance.json`` (``None`` for folders written before it existed, or unreadable ones)."""
    from .records import read_json

    path = Path(folder) / FILE_NAME
    try:
        found = read_json(path)
    except UserError:
        return None
    return found if isinstance(found, dict) else None


def check_tickets_match(source: str | os.PathLike, dataset: str, flag: str, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None, ticket: Mapping | None = None) -> None:
    """Refuse tickets at ``source`` (a folder, or a file whose folder is read) made on another data set.

    Reads the folder's ``provenance.json`` and, when given, a ticket file's own ``dataset`` key; a folder
    without either (written before provenance existed) passes. ``mean``/``std`` refuse another normalisation.
    """
    source = Path(source)
    folder = source if source.is_dir() else source.parent
    recorded = read_provenance(folder) or {}
    theirs = recorded.get("dataset")
    if ticket is not None and isinstance(ticket.get("dataset"), str):
        theirs = ticket["dataset"]
    if theirs and dataset and str(theirs).lower() != str(dataset).lower():
        raise UserError(f"{source} holds tickets trained on {theirs}, not on {dataset} ({flag}): give tickets of "
                        f"{dataset}, or the data set they were trained on")
    norm = recorded.get("normalisation")
    if (isinstance(norm, dict) and mean is not None and std is not None and
            (not _close(norm.get("mean"), mean) or not _close(norm.get("std"), std))):
        raise UserError(f"{source} holds tickets trained with normalisation mean {norm.get('mean')} std "
                        f"{norm.get('std')}, not the {list(mean)} / {list(std)} of {dataset}: give tickets made on "
                        f"this data set")


def _close(a: Any, b: Sequence[float]) -> bool:
    try:
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-6 for x, y in zip(a, b))
    except TypeError:
        return True  # an unreadable entry is not evidence of another data set


__all__ = ["FILE_NAME", "check_tickets_match", "command_line", "data_provenance", "labels_fingerprint",
           "package_commit", "read_provenance", "run_entry", "software"]
