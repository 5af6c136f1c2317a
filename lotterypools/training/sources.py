"""Training and evaluation batches for the engine from in-memory splits (CIFAR, (Fashion-)MNIST).

:class:`SplitTrainData` gives each (round, epoch) its own seeded order and augmentation, over the whole
training split or a subset of it, as device-resident uint8 batches or through the original's DataLoader
pipeline (``--loader``); with ``with_indices`` every batch carries its samples' positions in the whole
training split. :class:`SplitEvaluator` evaluates on the validation and test splits. :class:`ShardedTrainData`
and :class:`ShardedEvaluator` do the same for ImageFolder data over one or many processes.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..data.datasets import BatchSource, DataSplits, Split, resident_split
from ..core.device import derived_seed
from ..data.loaders import IndexedDataset, SplitAsPIL, DataLoaderSource, original_transform
from ..data.imagefolder import ImageFolderSplits, evaluation_loader, training_loader
from .distributed import DistributedContext, evaluate_sharded
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


class ShardedTrainData:
    """This process's share of shuffled ImageFolder batches; ``batch_size`` is the global batch."""

    def __init__(self, dataset: Dataset, batch_size: int, workers: int, context: DistributedContext, seed: int):
        self.dataset, self.workers, self.context, self.seed = dataset, workers, context, seed
        self.per_process = batch_size // context.world_size
        self._cached: tuple[Any, Any, Any] | None = None

    def batches(self, round_index: int, epoch: int, subset: torch.Tensor | None = None, with_indices: bool = False):
        key = (round_index, None if subset is None else tuple(subset.tolist()), with_indices)
        if self._cached is None or self._cached[0] != key:
            dataset = self.dataset if subset is None else Subset(self.dataset, subset.tolist())
            if with_indices:
                dataset = IndexedDataset(dataset)
            ctx = self.context
            loader, sampler = training_loader(dataset, self.per_process, self.workers, ctx.device,
                                              self.seed + round_index, ctx.rank, ctx.world_size)
            self._cached = (key, loader, sampler)
        _, loader, sampler = self._cached
        sampler.set_epoch(epoch)
        # Augmentation draws depend only on (seed, level, epoch, rank), so a resumed level repeats them: the
        # workers' seeds come from the loader's generator, the main process's (-j0) from the global generator.
        augmentation_seed = derived_seed(self.seed, round_index, epoch, self.context.rank)
        loader.generator = torch.Generator().manual_seed(augmentation_seed)
        if self.workers == 0:
            torch.manual_seed(augmentation_seed)
        if with_indices:
            return SubsetIndices(loader, None if subset is None else torch.as_tensor(subset, dtype=torch.long))
        return loader


class ShardedEvaluator:
    """Held-out (``val``) and test accuracy summed over every process's share."""

    def __init__(self, data: ImageFolderSplits, context: DistributedContext, workers: int, amp: bool = False,
                 batch_size: int = 256):
        device, rank, world = context.device, context.rank, context.world_size
        self.context, self.amp = context, amp
        self.loaders = {"val": evaluation_loader(data.val, batch_size, workers, device, rank, world),
                        "test": evaluation_loader(data.test, batch_size, workers, device, rank, world)}

    def __call__(self, model: nn.Module) -> dict[str, EpochStats]:
        ctx = self.context
        return {name: evaluate_sharded(model, loader, ctx.device, ctx, self.amp) for name, loader in self.loaders.items()}
