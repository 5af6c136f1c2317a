"""Tiny data sets in the real on-disk formats, tiny IMP runs, and script runners, shared by the tests.

Other test files reuse these (``from helpers import make_tiny_run``; pytest puts tests/ on sys.path):
``make_tiny_run(tmp_path)`` gives a finished IMP run folder of ``conv2`` on a tiny in-memory data set
(``tiny_splits()``, models from ``tiny_model_factory()``) in about a second; ``write_mnist_like`` and
``write_cifar`` write data sets in the real on-disk formats; the ``cli_run`` fixture (conftest.py) is a
two-round ``main_imp.py`` run on tiny Fashion-MNIST files, usable with the scripts' ``--data``/``--dataset``.
Pool tickets (``write_tickets``, ``make_store``, ``tiny_model``, ``tiny_data``), ImageNet folders and OpenLTH
tickets (``write_image_folder``, ``write_openlth_tickets``, ``free_port``), ``expected_kept``, ``user_error`` and
``load_script_main`` live here too: no test module imports another.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lotterypools.data.datasets import DataSplits, DatasetSpec, Split
from lotterypools.tickets.imp import IMPConfig, IMPRun
from lotterypools.core.torchfiles import atomic_save
from lotterypools.formats import openlth
from lotterypools.formats.original import ticket_files
from lotterypools.models import build_imagenet_model, build_model
from lotterypools.pools.store import TicketStore
from lotterypools.training.masks import join_pruned_state, magnitude_masks, prunable_names

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")

# A 4-class, 1-channel, 8x8 data set: small enough that an IMP round takes a fraction of a second.
TINY_SPEC = DatasetSpec("tiny", num_classes=4, channels=1, image_size=8, mean=(0.3,), std=(0.3,), val_size=32,
                        crop_padding=1, flip=True)


def labelled_images(count: int, channels: int, side: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (count, channels, side, side) whose class is a bright horizontal band's position, plus labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count).astype(np.uint8)
    images = rng.integers(0, 80, (count, channels, side, side))
    band = max(side // num_classes, 1)
    for index, label in enumerate(labels):
        start = (int(label) * side) // num_classes
        images[index, :, start:start + band, :] += 150
    return images.clip(0, 255).astype(np.uint8), labels


def tiny_splits(train: int = 96, seed: int = 0) -> DataSplits:
    """The tiny data set as in-memory splits (train / 32 validation / 32 test images)."""
    spec = TINY_SPEC
    parts = []
    for count, offset in ((train, 0), (spec.val_size, 1), (32, 2)):
        images, labels = labelled_images(count, spec.channels, spec.image_size, spec.num_classes, seed + offset)
        parts.append(Split(torch.from_numpy(images), torch.from_numpy(labels).long()))
    return DataSplits(spec, *parts, source="memory")


def tiny_model_factory(arch: str = "conv2") -> Callable[[], nn.Module]:
    """Builds ``arch`` for the tiny data set."""
    spec = TINY_SPEC
    return lambda: build_model(arch, spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size)


def tiny_config(**overrides) -> IMPConfig:
    """Two epochs per round, three rounds, rewinding to epoch 1, the lr divided by 10 after epoch 1."""
    settings = dict(arch="conv2", dataset="tiny", epochs=2, batch_size=16, lr=0.05, milestones=[1], pruning_times=3,
                    rate=0.2, prune_type="rewind_lt", rewind_epoch=1, seed=0)
    settings.update(overrides)
    return IMPConfig(**settings)


def tiny_imp_run(folder: Path, log: Callable[[str], None] = lambda line: None, run_class: type = IMPRun,
                 **overrides) -> IMPRun:
    """An :class:`IMPRun` (not yet started) of ``conv2`` on the tiny data set into ``folder``; it draws its curves."""
    from lotterypools.analysis.plots import plot_training_curve

    return run_class(tiny_config(**overrides), tiny_model_factory(overrides.get("arch", "conv2")), tiny_splits(), CPU,
                     folder, log=log, progress=False, plot_curve=plot_training_curve)


def make_tiny_run(tmp_path: Path, **overrides) -> Path:
    """A finished IMP run (default: 3 rounds of 2 epochs, rewind_lt to epoch 1) in ``tmp_path/run``."""
    folder = Path(tmp_path) / "run"
    tiny_imp_run(folder, **overrides).run()
    return folder


# ---------------------------------------------------------------- real on-disk formats
def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file of unsigned bytes (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_mnist_like(folder: Path, train: int = 5100, test: int = 60, gz: bool = True,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """The four 28x28 idx files of (Fashion-)MNIST in ``folder``; returns the arrays written."""
    train_x, train_y = labelled_images(train, 1, 28, 10, seed)
    test_x, test_y = labelled_images(test, 1, 28, 10, seed + 1)
    arrays = dict(zip(IDX_STEMS, (train_x[:, 0], train_y, test_x[:, 0], test_y)))
    for stem, array in arrays.items():
        write_idx(folder / (f"{stem}.gz" if gz else stem), array)
    return arrays


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar(root: Path, name: str, train: int = 5050, test: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """CIFAR-10/100 python pickles under ``root`` exactly as torchvision extracts them (incl. the meta file).

    Returns the images (N, 3, 32, 32) and labels written, training batches concatenated in file order.
    """
    classes = 10 if name == "cifar10" else 100
    train_x, train_y = labelled_images(train, 3, 32, classes, seed)
    test_x, test_y = labelled_images(test, 3, 32, classes, seed + 1)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def batch(images: np.ndarray, labels: np.ndarray, title: str) -> dict:
        entry = {"batch_label": title, label_key: [int(v) for v in labels], "data": images.reshape(len(images), -1),
                 "filenames": [f"img_{i}.png" for i in range(len(images))]}
        if name == "cifar100":
            entry["coarse_labels"] = [int(v) // 5 for v in labels]
        return entry

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for index, part in enumerate(np.array_split(np.arange(train), 5)):
            _dump(folder / f"data_batch_{index + 1}", batch(train_x[part], train_y[part], f"training batch {index + 1} of 5"))
        _dump(folder / "test_batch", batch(test_x, test_y, "testing batch 1 of 1"))
        _dump(folder / "batches.meta", {"num_cases_per_batch": 10000, "num_vis": 3072,
                                        "label_names": [f"class{i}" for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        _dump(folder / "train", batch(train_x, train_y, "training batch 1 of 1"))
        _dump(folder / "test", batch(test_x, test_y, "testing batch 1 of 1"))
        _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


# ---------------------------------------------------------------- scripts
def script_env() -> dict[str, str]:
    """The environment of a script run in a subprocess: this checkout's package first (also from a git worktree)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``CIFAR/<script>`` with this interpreter; output captured as text."""
    env = script_env()
    return subprocess.run([sys.executable, str(REPO / "CIFAR" / script), *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


def state_of(path: Path) -> dict:
    """The ``state_dict`` of a checkpoint file."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes in ``folder`` (to check that a failed command changed nothing)."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


# ---------------------------------------------------------------- pool tickets (conv2 on 8x8 images)
POOL_SPEC = DatasetSpec("tiny", 3, 1, 8, (0.5,), (0.25,), 16, 0, True)


def tiny_model() -> torch.nn.Module:
    return build_model("conv2", POOL_SPEC.num_classes, POOL_SPEC.channels, POOL_SPEC.mean, POOL_SPEC.std, POOL_SPEC.image_size)


def tiny_data(seed: int = 0) -> DataSplits:
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        labels = torch.randint(0, 3, (n,), generator=generator)
        images = (labels[:, None, None, None] * 80 + torch.randint(0, 60, (n, 1, 8, 8), generator=generator)).to(torch.uint8)
        return Split(images, labels)

    return DataSplits(POOL_SPEC, split(96), split(48), split(48), "memory")


def write_tickets(folder: Path, count: int, rate: float = 0.2, seed: int = 0) -> list[Path]:
    """Tickets in the original layout: round 0 dense, later rounds weight_orig + weight_mask at 0.8^k density."""
    torch.manual_seed(seed)
    reference = tiny_model()
    names = [k for k in reference.state_dict() if k.endswith(".weight") and reference.state_dict()[k].dim() == 4]
    paths = []
    for round_index in range(count):
        # trained weights differ per round; the normalisation buffers (the data set's mean and std) never do
        weights = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() and not k.startswith("normalize.") else v
                   for k, v in reference.state_dict().items()}
        total = sum(weights[n].numel() for n in names)
        masks = {} if round_index == 0 else magnitude_masks(weights, names, round(total * (1 - rate) ** round_index))
        path = folder / f"{round_index}model_SA_best.pth.tar"
        atomic_save({"state": round_index, "state_dict": join_pruned_state(weights, masks), "best_sa": 0.0}, path)
        paths.append(path)
    return paths


def make_store(folder: Path, count: int = 4) -> TicketStore:
    write_tickets(folder, count)
    return TicketStore(ticket_files(folder), tiny_model().state_dict(), "conv2 on tiny")


# ---------------------------------------------------------------- ImageNet: ImageFolder data, OpenLTH tickets
CLASSES = 3


TINY_ARCH = "resnet20s"


def write_image_folder(root: Path, per_class_train: int = 10, per_class_val: int = 4) -> Path:
    """Small coloured 36x36 PNGs whose mean colour depends on the class."""
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        for label in range(CLASSES):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                base = torch.zeros(3, 1, 1)
                base[label] = 160
                pixels = (base + 60 * torch.rand(3, 36, 36, generator=generator)).clamp(0, 255).byte()
                Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(folder / f"{index}.png")
    return root


def write_openlth_tickets(root: Path, arch: str = TINY_ARCH, levels: int = 3, epoch: int = 4, classes: int = CLASSES) -> Path:
    """Tickets in OpenLTH's layout: seeded weights, magnitude masks of density 0.8^k over conv and fc."""
    for level in range(levels):
        torch.manual_seed(level)
        model = build_imagenet_model(arch, classes, 32)
        names = prunable_names(model, include_linear=True)
        state = model.state_dict()
        total = sum(state[n].numel() for n in names)
        masks = magnitude_masks(state, names, round(total * 0.8 ** level))
        openlth.write_model(root, level, 0, state)
        openlth.write_model(root, level, epoch, {k: v * masks[k] if k in masks else v for k, v in state.items()})
        openlth.write_mask(root, level, masks)
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- masks, command-line errors, scripts in-process
def expected_kept(total: int, rate: float, rounds: int) -> list[int]:
    """Kept counts after each round: torch prunes round(rate * remaining) of the remaining weights."""
    kept = [total]
    for _ in range(rounds):
        kept.append(kept[-1] - round(rate * kept[-1]))
    return kept


def user_error(main, argv, capsys) -> str:
    """Run a script's ``main`` in this process; assert exit code 2 and one ``error:`` line; return it."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def load_script_main(name: str):
    """``main`` of ``CIFAR/<name>``, imported in this process (quicker than a subprocess per bad input)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / "CIFAR" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


# ---------------------------------------------------------------- fingerprints of run folders
TIMINGS = {"seconds"}
TORCH_SUFFIXES = (".pth", ".pt", ".tar")


def digest(value) -> object:
    """A JSON-able fingerprint of a loaded value: tensors hashed by dtype, shape and bytes; timings dropped."""
    if torch.is_tensor(value):
        data = value.detach().cpu().contiguous().reshape(-1)
        raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
        return f"tensor {str(value.dtype)} {list(value.shape)} {hashlib.sha256(raw).hexdigest()[:16]}"
    if isinstance(value, dict):
        return {str(k): digest(v) for k, v in value.items() if str(k) not in TIMINGS}
    if isinstance(value, (list, tuple)):
        return [digest(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value if value is None or isinstance(value, (int, str, bool)) else repr(value)


def folder_fingerprint(folder: Path) -> dict[str, object]:
    """Every file under ``folder``: torch files and JSON by content, other files (plots) by name only."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if path.name.endswith(TORCH_SUFFIXES):
            out[name] = digest(torch.load(path, map_location="cpu", weights_only=False))
        elif path.suffix == ".json":
            out[name] = digest(json.loads(path.read_text()))
        else:
            out[name] = "present"
    return out


def command(name: str):
    """``main`` of ``lotterypools.cli.commands.<name>`` (run in this process: quicker than a subprocess)."""
    return importlib.import_module(f"lotterypools.cli.commands.{name}").main
