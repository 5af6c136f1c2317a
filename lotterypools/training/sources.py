"""Training and evaluation batches for the engine from in-memory splits (CIFAR, (Fashion-)MNIST).

:class:`SplitTrainData` gives each (round, epoch) its own seeded order and augmentation, over the whole
training split or a subset of it, as device-resident uint8 batches or through the original's DataLoader
pipeline (``--loader``); with ``with_indices`` every batch carries its samples' positions in the whole
training split. :class:`SplitEvaluator` evaluates on the validation and test splits.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from ..data.datasets import BatchSource, DataSplits, Split, resident_split
from ..core.device import derived_seed
from ..data.loaders import IndexedDataset, SplitAsPIL, DataLoaderSource, original_transform
from .loop import EpochStats, evaluate


class SubsetIndices:
    """Batches of a subset whose third item (positions in the subset) is mapped to positions in the split."""

    def __init__(self, source, subset: torch.Tensor | None):
        self.source, self.subset = source, subset

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for images, labels, positions in self.source:
            yield images, labels, positions if self.subset is None else self.subset[positions.cpu()]

    def __len__(self) -> int:
        return len(self.source)


class SplitTrainData:
    """Shuffled, augmented training batches of ``data.train``; the order depends only on (seed, round, epoch)."""

    def __init__(self, data: DataSplits, batch_size: int, device: torch.device, seed: int,
                 loader: str = "resident", workers: int = 0):
        self.data, self.batch_size, self.device, self.seed = data, batch_size, device, seed
        self.loader, self.workers = loader, workers
        self._resident: Split | None = None

    def _split(self, subset: torch.Tensor | None) -> Split:
        train = self.data.train
        if subset is None:
            return train
        subset = torch.as_tensor(subset, dtype=torch.long)
        return Split(train.images[subset], train.labels[subset])

    def batches(self, round_index: int, epoch: int, subset: torch.Tensor | None = None, with_indices: bool = False):
        """The batches of one epoch of one round (``subset``: training-split indices, or ``None`` for all)."""
        seed = derived_seed(self.seed, round_index, epoch)
        split = self._split(subset)
        if self.loader == "dataloader":
            dataset = SplitAsPIL(split, original_transform(self.data.spec, augment=True))
            if with_indices:
                dataset = IndexedDataset(dataset)
            source = DataLoaderSource(dataset, self.batch_size, self.device, shuffle=True, seed=seed,
                                      workers=self.workers)
        else:
            if subset is None:
                if self._resident is None:
                    self._resident = resident_split(split, self.device)
                split = self._resident
            else:
                split = resident_split(split, self.device)
            source = BatchSource(split, self.batch_size, self.device, self.data.spec, shuffle=True, augment=True,
                                 seed=seed, with_indices=with_indices)
        if not with_indices:
            return source
        return SubsetIndices(source, None if subset is None else torch.as_tensor(subset, dtype=torch.long))


class SplitEvaluator:
    """Loss and accuracy on the validation and test splits (held on the device when they fit)."""

    def __init__(self, data: DataSplits, device: torch.device, amp: bool = False, batch_size: int = 500):
        self.device, self.amp = device, amp
        self.sources = {name: BatchSource(resident_split(split, device), batch_size, device)
                        for name, split in (("val", data.val), ("test", data.test))}

    def __call__(self, model: nn.Module) -> dict[str, EpochStats]:
        return {name: evaluate(model, source, self.device, self.amp) for name, source in self.sources.items()}
