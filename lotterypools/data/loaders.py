"""The DataLoader path: batches from any torchvision-style Dataset, for data that does not fit on the device.

:class:`DataLoaderSource` has the interface of :class:`lotterypools.data.datasets.BatchSource` (re-iterable,
``len``, ``with_seed``), so training, BN recalibration and evaluation take either. :class:`SplitAsPIL`
serves an in-memory split as PIL images through torchvision transforms, as the original code fed its
models: ``--loader dataloader`` uses it, and the benchmarks time it against the device-resident path.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.transforms.functional import to_pil_image

from ..config.names import LOADERS
from .datasets import DatasetSpec, Split
from ..core.errors import UserError

__all__ = ["LOADERS", "DataLoaderSource", "IndexedDataset", "SplitAsPIL", "original_transform", "pil_source"]


def original_transform(spec: DatasetSpec, augment: bool) -> transforms.Compose:
    """PIL -> float32 tensor in [0, 1], after RandomCrop(padding) and RandomHorizontalFlip when augmenting.

    Normalisation is a module inside our models, so it is not part of the transform.
    """
    steps: list[Callable] = []
    if augment and spec.crop_padding:
        steps.append(transforms.RandomCrop(spec.image_size, padding=spec.crop_padding,
                                           padding_mode=spec.padding_mode))
    if augment and spec.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps.append(transforms.ToTensor())
    return transforms.Compose(steps)


class SplitAsPIL(Dataset):
    """A uint8 (N, C, H, W) split served one PIL image at a time through ``transform``."""

    def __init__(self, split: Split, transform: Callable):
        self.images, self.labels, self.transform = split.images.cpu(), split.labels.cpu(), transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(to_pil_image(self.images[index])), int(self.labels[index])


class IndexedDataset(Dataset):
    """``dataset``'s items with their index appended: (image, label, index), for per-sample records."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (*self.dataset[index], index)


class DataLoaderSource:
    """Batches of ``dataset`` through a ``DataLoader``, moved to ``device``; re-iterable like ``BatchSource``.

    The shuffling order depends on ``seed``; with ``workers > 0`` so do the augmentations (each worker's
    RNG is seeded from the loader's generator), with ``workers == 0`` they draw from the global RNG.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, shuffle: bool = False,
                 seed: int = 0, workers: int = 0, drop_last: bool = False):
        if workers < 0:
            raise UserError(f"--workers {workers} must be 0 or more")
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.shuffle, self.seed, self.workers, self.drop_last = shuffle, seed, workers, drop_last

    def loader(self) -> DataLoader:
        """The DataLoader of one pass (a new one each pass, seeded by ``seed``)."""
        return DataLoader(self.dataset, self.batch_size, shuffle=self.shuffle, num_workers=self.workers,
                          generator=torch.Generator().manual_seed(self.seed), drop_last=self.drop_last,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, *rest in self.loader():  # rest: sample indices (IndexedDataset), kept on the CPU
            yield (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True), *rest)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def with_seed(self, seed: int) -> "DataLoaderSource":
        """The same stream with another seed (e.g. one per epoch)."""
        return DataLoaderSource(self.dataset, self.batch_size, self.device, self.shuffle, seed, self.workers,
                                self.drop_last)


def pil_source(split: Split, spec: DatasetSpec, batch_size: int, device: torch.device, *, augment: bool = False,
               shuffle: bool = False, seed: int = 0, workers: int = 0) -> DataLoaderSource:
    """The original's pipeline over an in-memory split: PIL images, torchvision transforms, a DataLoader."""
    return DataLoaderSource(SplitAsPIL(split, original_transform(spec, augment)), batch_size, device, shuffle,
                            seed, workers)
