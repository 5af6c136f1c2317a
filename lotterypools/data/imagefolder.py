"""ImageNet-style folders: ``root/train`` (trains; a fixed, seeded part of it chooses) and ``root/val`` (reports).

Data stays on disk and is read by ``DataLoader`` workers. Evaluation and batch-norm batches are split
across processes by whole batches, without padding, so N processes see exactly the images one process sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import datasets, transforms

from ..config.names import PAPER_VAL_SIZE
from ..core.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def test_transform(input_size: int = 224) -> transforms.Compose:
    """Resize the short side to 256/224 of ``input_size`` (256 for 224), centre crop, normalise."""
    return transforms.Compose([transforms.Resize(round(input_size * 256 / 224)), transforms.CenterCrop(input_size),
                               transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


# OpenLTH's ImageNet crop (open_lth datasets/imagenet.py): 10-100% of the image area, aspect ratio 0.8-1.25
# (torchvision's defaults, 8-100% and 3/4-4/3, differ).
OPENLTH_CROP_SCALE = (0.1, 1.0)
OPENLTH_CROP_RATIO = (0.8, 1.25)


def train_transform(input_size: int = 224) -> transforms.Compose:
    """Random resized crop and horizontal flip, normalise (OpenLTH's ImageNet training augmentation)."""
    crop = transforms.RandomResizedCrop(input_size, scale=OPENLTH_CROP_SCALE, ratio=OPENLTH_CROP_RATIO)
    return transforms.Compose([crop, transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@dataclass
class ImageFolderSplits:
    """``train`` trains (augmented), ``train_plain`` is the same images with test transforms (BN statistics),
    ``val`` is the held-out part of ``train/`` (chooses), ``test`` is ``val/`` (reports)."""

    train: Dataset
    train_plain: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    root: Path


def held_out_size(train_count: int, requested: int, warn: Callable[[str], None]) -> int:
    """``requested`` images, or a tenth of ``train/`` (with a warning) when the folder is not much larger."""
    if requested < 1:
        raise UserError(f"--val_size {requested} must be at least 1: the held-out images choose the tickets")
    if requested < train_count // 2:
        return requested
    lowered = max(train_count // 10, 1)
    warn(f"warning: --val_size {requested} is too large for {train_count} training images; holding out a tenth "
         f"({lowered}) instead")
    return lowered


def held_out_indices(count: int, val_size: int, split_seed: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices), both sorted; they depend only on ``count``, ``val_size`` and the seed."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(split_seed)).tolist()
    return sorted(order[val_size:]), sorted(order[:val_size])


def read_image(path: str) -> Any:
    """torchvision's image loader, with a one-line :class:`UserError` naming a file that is not a readable image."""
    try:
        return datasets.folder.default_loader(path)
    except OSError as error:  # PIL's UnidentifiedImageError is an OSError, as are truncated files
        raise UserError(f"{path} is not a readable image ({error.__class__.__name__}): remove or replace the "
                        f"file") from None


def _image_folder(path: Path, transform) -> datasets.ImageFolder:
    if not path.is_dir():
        raise UserError(f"{path} does not exist: the data folder needs 'train/' and 'val/' in ImageFolder layout "
                        f"(one sub-folder of images per class)")
    try:
        return datasets.ImageFolder(str(path), transform=transform, loader=read_image)
    except (FileNotFoundError, RuntimeError) as error:
        raise UserError(f"{path} is not an ImageFolder ({str(error).splitlines()[0]}); put one sub-folder of "
                        f"images per class there") from None


def load_image_folders(root: str | os.PathLike, val_size: int = PAPER_VAL_SIZE, split_seed: int = 0,
                       input_size: int = 224, warn: Callable[[str], None] = print) -> ImageFolderSplits:
    """The train/held-out/test splits of an ImageFolder root (see :class:`ImageFolderSplits`)."""
    root = Path(root)
    train_aug = _image_folder(root / "train", train_transform(input_size))
    train_plain = _image_folder(root / "train", test_transform(input_size))
    test = _image_folder(root / "val", test_transform(input_size))
    if train_aug.classes != test.classes:
        raise UserError(f"{root}/train has {len(train_aug.classes)} classes and {root}/val {len(test.classes)}, or "
                        f"they are named differently: both need the same class sub-folders")
    keep, held = held_out_indices(len(train_aug), held_out_size(len(train_aug), val_size, warn), split_seed)
    return ImageFolderSplits(Subset(train_aug, keep), Subset(train_plain, keep), Subset(train_plain, held), test,
                             len(train_aug.classes), root)


def _loader_options(workers: int, device: torch.device) -> dict:
    return {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}


def evaluation_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device, rank: int = 0,
                      world_size: int = 1) -> DataLoader:
    """This process's share of ``dataset`` (every ``world_size``-th image from ``rank``), in order, no padding."""
    share = Subset(dataset, list(range(rank, len(dataset), world_size)))
    return DataLoader(share, batch_size=batch_size, shuffle=False, **_loader_options(workers, device))


def global_batches(count: int, batch_size: int, seed: int, max_batches: int = 0) -> list[list[int]]:
    """A seeded shuffle of ``range(count)`` cut into batches; the first ``max_batches`` when that is positive."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[start:start + batch_size] for start in range(0, count, batch_size)]
    return batches[:max_batches] if max_batches > 0 else batches


def batchnorm_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device, seed: int,
                     max_batches: int = 0, rank: int = 0, world_size: int = 1) -> DataLoader:
    """This process's whole batches of one global, seeded batch list (batches ``rank``, ``rank + world_size``, ...).

    Every batch holds the same images whatever the number of processes, so BN statistics averaged over all
    processes' batches equal those of one process.
    """
    mine: Sequence[list[int]] = global_batches(len(dataset), batch_size, seed, max_batches)[rank::world_size]
    return DataLoader(dataset, batch_sampler=list(mine), **_loader_options(workers, device))


def training_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device, seed: int,
                    rank: int = 0, world_size: int = 1) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled training batches of this process's share; call ``sampler.set_epoch(epoch)`` every epoch.

    Workers start afresh each epoch (not persistent), seeded from ``loader.generator``: setting it per epoch
    makes the augmentation of an epoch independent of the epochs before (a resumed run repeats it).
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    options = {**_loader_options(workers, device), "persistent_workers": False}
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, **options)
    return loader, sampler
