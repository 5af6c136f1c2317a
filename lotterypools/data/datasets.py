"""Data sets as uint8 tensors with fixed train/validation/test splits, and batches made on the device.

CIFAR-10/100, Fashion-MNIST and MNIST fit in memory, so each split is held as one uint8 tensor
(N, C, H, W); crop, flip and scaling to [0, 1] happen per batch on the device (normalisation is a
module inside the model). ImageNet-sized folders go through :mod:`lotterypools.data.imagefolder`.
"""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..core.device import to_device_async
from ..core.errors import UserError


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a data set, and how its training images are augmented."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_size: int
    crop_padding: int = 0
    flip: bool = False
    padding_mode: str = "constant"  # of the random crop: constant (zeros) or reflect


SPECS = {
    "cifar10": DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 5000, 4, True),
    "cifar100": DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), 5000, 4, True),
    "fashionmnist": DatasetSpec("fashionmnist", 10, 1, 28, (0.2860,), (0.3530,), 5000, 0, True),
    "mnist": DatasetSpec("mnist", 10, 1, 28, (0.1307,), (0.3081,), 5000, 0, False),
}

# FreeTickets' CIFAR pipelines (its sparselearning/utils.py): CIFAR-10 pads by reflection and has other std values
# than the Lottery Pools code's; CIFAR-100's statistics are unrounded. The FreeTickets scripts use them, so that
# their verbatim commands see the original's images.
FREETICKETS_SPECS = {
    "cifar10": replace(SPECS["cifar10"], std=(0.2023, 0.1994, 0.2010), padding_mode="reflect"),
    # zero padding as ours; the statistics unrounded, as the original writes them
    "cifar100": replace(SPECS["cifar100"], mean=(0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
                        std=(0.2673342858792401, 0.2564384629170883, 0.27615047132568404)),
}

# Where Debian's dataset-fashion-mnist package puts the idx files.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Split:
    """Images as uint8 (N, C, H, W) and integer labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class DataSplits:
    """The three splits of a data set: ``train`` trains, ``val`` chooses, ``test`` only reports."""

    spec: DatasetSpec
    train: Split
    val: Split
    test: Split
    source: str = field(default="")


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a supported data set, or a one-line error listing the supported ones."""
    if name not in SPECS:
        raise UserError(f"unknown data set {name!r}: choose one of {', '.join(sorted(SPECS))}")
    return SPECS[name]


def freetickets_spec(name: str) -> DatasetSpec:
    """The spec the FreeTickets scripts use: :data:`FREETICKETS_SPECS` where the original's pipeline differs,
    else :func:`dataset_spec`."""
    return FREETICKETS_SPECS.get(name) or dataset_spec(name)


def load_dataset(name: str, root: str | os.PathLike, download: bool = True) -> DataSplits:
    """Read a data set from ``root`` (downloading it with torchvision when missing and allowed)."""
    spec = dataset_spec(name)
    root = Path(root)
    if name in ("cifar10", "cifar100"):
        train, test, source = _read_cifar(name, root, download)
    else:
        train, test, source = _read_mnist_like(name, root, download)
    return _split_validation(spec, train, test, source)


def _split_validation(spec: DatasetSpec, train: Split, test: Split, source: str) -> DataSplits:
    """The last ``val_size`` training images validate (the original's fixed, unshuffled split)."""
    if len(train) <= spec.val_size:
        raise UserError(f"{spec.name} training set at {source} has {len(train)} images, fewer than the "
                        f"{spec.val_size} held out for validation: the files look truncated, download them again")
    cut = len(train) - spec.val_size
    return DataSplits(spec, Split(train.images[:cut], train.labels[:cut]),
                      Split(train.images[cut:], train.labels[cut:]), test, source)


def _read_cifar(name: str, root: Path, download: bool) -> tuple[Split, Split, str]:
    """CIFAR-10/100 from torchvision's folder (``cifar-10-batches-py``/``cifar-100-python``) under ``root``.

    torchvision downloads and extracts a missing folder; the pickles are then read here, in the layout
    torchvision documents, because torchvision's reader insists on the official files' md5 sums (which
    rejects tiny test copies); a damaged file fails the unpickling or the shape checks instead.
    """
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = root / cls.base_folder
    if not folder.is_dir() and download:
        _download_cifar(cls, root)
    if not folder.is_dir():
        raise UserError(f"{name} not found: no folder {folder}; put the extracted '{cls.base_folder}' folder "
                        f"(from {cls.url}) under {root}, or run once with internet access")
    try:
        _check_cifar_meta(folder / cls.meta["filename"], cls.meta["key"], dataset_spec(name).num_classes)
        train, test = (_read_cifar_batches([folder / file for file, _ in files]) for files in (cls.train_list, cls.test_list))
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError) as error:
        raise UserError(f"{name} files under {folder} are unreadable ({type(error).__name__}: {error}); "
                        f"delete the folder and download it again") from None
    return train, test, str(folder)


def _download_cifar(cls, root: Path) -> None:
    try:
        cls(str(root), train=True, download=True)
    except Exception:  # offline or interrupted: the caller reports what is missing and where to put it
        pass


# What CIFAR's python pickles may name: numpy arrays, dtypes and scalars, bytes (protocol 2 writes them through
# _codecs.encode) and builtin containers. Anything else (os.system, subprocess, eval ...) would run code.
_PLAIN_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                  *((builtins, name) for builtins in ("builtins", "__builtin__")
                    for name in ("set", "frozenset", "bytearray", "complex"))}
# numpy's array rebuilders, by the module a pickle names (numpy.core before numpy 2, numpy._core since).
_NUMPY_REBUILDERS = {(f"numpy.{core}.{module}", name): (module, name) for core in ("core", "_core")
                     for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                                          ("numeric", "_frombuffer"))}


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only (arrays, lists, dicts, strings, bytes, numbers) and runs no code.

    A pickle naming any other function or class is refused with a one-line :class:`UserError` naming the file.
    The constructors that allocate by a size argument (``numpy.ndarray``, numpy's ``_reconstruct``,
    ``bytearray``) are bounded by the file's own size: an honest batch carries its data's bytes, so a request
    for more than the file could hold (``bytearray(10**13)``) is refused before anything is allocated.
    """

    def __init__(self, handle, path: Path):
        super().__init__(handle, encoding="latin1")
        self.path = path
        self.limit = os.path.getsize(path) + (1 << 20)  # one MiB of slack for headers and small objects

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_REBUILDERS:
            found = _numpy_rebuilder(*_NUMPY_REBUILDERS[module, name])
            return self._bounded_reconstruct(found) if name == "_reconstruct" else found
        if (module, name) == ("numpy", "ndarray"):
            return self._bounded_ndarray
        if name == "bytearray" and (module, name) in _PLAIN_GLOBALS:
            return self._bounded_bytearray
        if (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise UserError(f"{self.path} is unsafe: it asks to load {module + '.' + name!r}, and a data file may hold only "
                        f"plain data (arrays, lists, dicts, strings, numbers); delete it and download the data set again")


    def _check_size(self, count: int, what: str) -> None:
        if count > self.limit:
            raise UserError(f"{self.path} asks for a {what} of {count} bytes, more than its {self.limit - (1 << 20)} "
                            f"bytes can hold: the file is damaged or not a data set batch; delete it and download "
                            f"the data set again")

    def _array_bytes(self, shape, dtype=float) -> int:
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            raise UserError(f"{self.path} asks for an array of shape {shape!r}: the file is damaged; delete it and "
                            f"download the data set again")
        return int(np.prod(dims, dtype=object)) * np.dtype(dtype).itemsize

    def _bounded_ndarray(self, shape, dtype=float, *rest, **kwargs):
        self._check_size(self._array_bytes(shape, dtype), "array")
        return np.ndarray(shape, dtype, *rest, **kwargs)

    def _bounded_bytearray(self, *args):
        if args and isinstance(args[0], int):
            self._check_size(args[0], "bytearray")
        return bytearray(*args)

    def _bounded_reconstruct(self, reconstruct):
        def bounded(cls, shape, dtype, *rest):
            if cls == self._bounded_ndarray:
                cls = np.ndarray
            self._check_size(self._array_bytes(shape, dtype if not isinstance(dtype, bytes) else dtype.decode()),
                             "array")
            return reconstruct(cls, shape, dtype, *rest)
        return bounded


def _numpy_rebuilder(module: str, name: str):
    """``numpy._core.<module>.<name>`` (numpy >= 1.26), else ``numpy.core.<module>.<name>``."""
    try:
        found = importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        found = importlib.import_module(f"numpy.core.{module}")
    return getattr(found, name)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        entry = PlainDataUnpickler(handle, path).load()
    if not isinstance(entry, dict):
        raise ValueError(f"{path.name} holds a {type(entry).__name__}, not a dict")
    return entry


def _check_cifar_meta(path: Path, key: str, num_classes: int) -> None:
    names = _unpickle(path)[key]
    if len(names) != num_classes:
        raise ValueError(f"{path.name} names {len(names)} classes, expected {num_classes}")


def _read_cifar_batches(files: list[Path]) -> Split:
    """Concatenate CIFAR pickles: ``data`` rows of 3072 bytes (channel-major 3x32x32) and ``labels``/``fine_labels``."""
    images, labels = [], []
    for path in files:
        entry = _unpickle(path)
        data = np.asarray(entry["data"], dtype=np.uint8)
        targets = entry["labels"] if "labels" in entry else entry["fine_labels"]
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(targets):
            raise ValueError(f"{path.name}: data of shape {data.shape} with {len(targets)} labels")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(targets, dtype=torch.long))
    return Split(torch.cat(images), torch.cat(labels))


def _read_idx(path: Path) -> torch.Tensor:
    """Read an idx file, gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return _parse_idx_bytes(handle.read())


def _parse_idx_bytes(data: bytes) -> torch.Tensor:
    """Parse idx bytes (big-endian magic: 0x0000 type ndims, then dims)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("not an idx file")
    type_code, ndims = data[2], data[3]
    if type_code != 0x08:
        raise ValueError(f"unsupported idx element type 0x{type_code:02x}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndims)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndims)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"idx body holds {body.size} values, header says {int(np.prod(dims))}")
    return torch.from_numpy(body.copy()).view(*dims)


def _find_idx_files(folders: list[Path], stems: list[str]) -> list[Path] | None:
    """The idx files (plain or gzipped) from the first folder holding any of them; ``None`` if none does.

    All four files come from one folder: an incomplete folder is an error, never completed from another.
    """
    for folder in folders:
        found = [next((c for c in (folder / stem, folder / f"{stem}.gz") if c.is_file()), None) for stem in stems]
        if any(found):
            if not all(found):
                missing = [stem for stem, path in zip(stems, found) if path is None]
                raise UserError(f"{folder} holds only some of the idx files: {missing} missing; "
                                f"copy the complete set there or remove the folder")
            return found
    return None


def _mnist_folders(name: str, root: Path) -> list[Path]:
    torchvision_name = "FashionMNIST" if name == "fashionmnist" else "MNIST"
    folders = [root / torchvision_name / "raw", root / name, root]
    if name == "fashionmnist":
        folders.append(SYSTEM_FASHION_MNIST)
    return folders


def _read_mnist_like(name: str, root: Path, download: bool) -> tuple[Split, Split, str]:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = _find_idx_files(_mnist_folders(name, root), stems)
    if paths is None and download:
        _download_mnist_like(name, root)
        paths = _find_idx_files(_mnist_folders(name, root), stems)
    if paths is None:
        hint = " or install Debian's dataset-fashion-mnist" if name == "fashionmnist" else ""
        raise UserError(f"{name} idx files ({', '.join(stems)}) not found under {root}; put them in {root / name}{hint}, "
                        f"or run with internet access to download them")
    try:
        tensors = [_read_idx(p) for p in paths]
    except (OSError, ValueError, RuntimeError, EOFError) as error:
        raise UserError(f"{name} idx files in {paths[0].parent} are unreadable ({error}); delete and download them again") from None
    train_x, train_y, test_x, test_y = tensors
    side = dataset_spec(name).image_size
    if any(x.dim() != 3 or tuple(x.shape[1:]) != (side, side) for x in (train_x, test_x)) or train_y.dim() != 1:
        raise UserError(f"{name} idx files in {paths[0].parent} do not hold {side}x{side} images and label vectors: "
                        f"wrong or corrupt files")
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise UserError(f"{name} idx files in {paths[0].parent} disagree on the number of images and labels: corrupt download")
    as_split = lambda x, y: Split(x.reshape(x.shape[0], 1, x.shape[-2], x.shape[-1]).contiguous(), y.long())
    return as_split(train_x, train_y), as_split(test_x, test_y), str(paths[0].parent)


def _download_mnist_like(name: str, root: Path) -> None:
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashionmnist" else datasets.MNIST
    try:
        cls(str(root), train=True, download=True)
    except Exception:  # offline: the caller reports what is missing and where to put it
        pass


def augment_batch(images: torch.Tensor, spec: DatasetSpec, generator: torch.Generator) -> torch.Tensor:
    """Random crop (padding ``spec.crop_padding``, zeros or reflection by ``spec.padding_mode``) and horizontal
    flip, per image, on the batch's device.

    ``images`` are float in [0, 1]; the random draws come from ``generator`` (on the CPU) so that they
    repeat exactly whatever the device.
    """
    n, _, h, w = images.shape
    # every draw of the batch made on the CPU in the original order, then one (asynchronous) copy to the device
    draws = []
    if spec.crop_padding:
        pad = spec.crop_padding
        draws += [torch.randint(0, 2 * pad + 1, (n,), generator=generator),
                  torch.randint(0, 2 * pad + 1, (n,), generator=generator)]
    if spec.flip:
        draws.append((torch.rand(n, generator=generator) < 0.5).long())
    if not draws:
        return images.contiguous()
    drawn = to_device_async(torch.stack(draws), images.device)
    if spec.crop_padding:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode=spec.padding_mode)
        dy, dx = drawn[0], drawn[1]
        rows = (dy[:, None] + torch.arange(h, device=images.device)[None, :])  # (n, h)
        cols = (dx[:, None] + torch.arange(w, device=images.device)[None, :])  # (n, w)
        index = torch.arange(n, device=images.device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if spec.flip:
        flip = drawn[-1].bool()
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images.contiguous()


def iterate_batches(split: Split, batch_size: int, device: torch.device, *, spec: DatasetSpec | None = None,
                    shuffle: bool = False, augment: bool = False, seed: int = 0,
                    drop_last: bool = False, with_indices: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield (float images in [0, 1], labels) batches on ``device``; order and augmentation depend on ``seed``.

    With ``with_indices`` each batch also carries its samples' positions in ``split`` (a CPU tensor).
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = to_device_async(order[start:start + batch_size], split.images.device)
        # a split left on the host is gathered there and copied asynchronously (pinned) to the device
        images = to_device_async(split.images[index], device).float().div_(255)
        labels = to_device_async(split.labels[index], device)
        if augment and spec is not None:
            images = augment_batch(images, spec, generator)
        yield (images, labels, order[start:start + batch_size]) if with_indices else (images, labels)


class BatchSource:
    """A re-iterable stream of batches over one split (what training, BN recalibration and evaluation take)."""

    def __init__(self, split: Split, batch_size: int, device: torch.device, spec: DatasetSpec | None = None,
                 shuffle: bool = False, augment: bool = False, seed: int = 0, drop_last: bool = False,
                 with_indices: bool = False):
        self.split, self.batch_size, self.device, self.spec = split, batch_size, device, spec
        self.shuffle, self.augment, self.seed, self.drop_last = shuffle, augment, seed, drop_last
        self.with_indices = with_indices

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return iterate_batches(self.split, self.batch_size, self.device, spec=self.spec, shuffle=self.shuffle,
                               augment=self.augment, seed=self.seed, drop_last=self.drop_last,
                               with_indices=self.with_indices)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def with_seed(self, seed: int) -> "BatchSource":
        """The same stream with another seed (e.g. one per epoch)."""
        return BatchSource(self.split, self.batch_size, self.device, self.spec, self.shuffle, self.augment, seed,
                           self.drop_last, self.with_indices)


def fixed_batches(source: BatchSource, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of ``source`` materialised once, so every trial sees the same images."""
    batches = []
    for index, batch in enumerate(source):
        if index >= count:
            break
        batches.append(batch)
    return batches


def resident_split(split: Split, device: torch.device, budget_fraction: float = 0.5) -> Split:
    """Move a split to ``device`` when it fits in ``budget_fraction`` of free device memory, else keep it here."""
    if device.type != "cuda":
        return split
    free, _ = torch.cuda.mem_get_info(device)
    needed = split.images.numel() * split.images.element_size()
    return split.to(device) if needed < budget_fraction * free else split
