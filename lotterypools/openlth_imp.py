"""IMP in OpenLTH's layout (``level_{k}/main``) on ImageFolder data, with one or many processes (DDP).

The training engine (:class:`lotterypools.engine.IMPEngine`) with OpenLTH's files
(:class:`lotterypools.openlth.OpenLTHLayout`), the last epoch's weights as each level's ticket, and
batches from ImageFolder shards: each process trains on its share of every global batch under
``DistributedDataParallel`` and evaluation sums over all processes. Level 0 trains the dense network from
a seeded initialisation; level k prunes ``rate`` of the weights level k-1 kept (globally by magnitude, conv
and linear layers as OpenLTH), rewinds the survivors (and the lr schedule) to level 0's ``rewind_epoch``
and trains from there. Rerunning the same command continues a run: finished levels are skipped, a level in
progress resumes after its last epoch; different result-deciding settings are refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .config import OPENLTH_IMAGENET_DEFAULTS, IMPConfig
from .device import derived_seed
from .distributed import DistributedContext, evaluate_sharded
from .engine import IMPEngine, RoundPolicy
from .errors import UserError
from .imagefolder import ImageFolderSplits, evaluation_loader, training_loader
from .loaders import IndexedDataset
from .openlth import OpenLTHLayout
from .console import log
from .sources import SubsetIndices
from .training import EpochStats, TrainingHook


def openlth_config(**settings: Any) -> IMPConfig:
    """An :class:`IMPConfig` with OpenLTH's ImageNet defaults; ``levels=L`` means levels 0..L (L+1 rounds)."""
    levels = settings.pop("levels", None)
    if levels is not None:
        settings["pruning_times"] = levels + 1
    return IMPConfig(**{**OPENLTH_IMAGENET_DEFAULTS, **settings})


def LevelConfig(**settings: Any) -> IMPConfig:  # noqa: N802 - the former class's name, kept for callers
    """Deprecated spelling of :func:`openlth_config`."""
    return openlth_config(**settings)


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


class LevelRun(IMPEngine):
    """An IMP run in one OpenLTH folder; ``run()`` trains every level not yet finished."""

    def __init__(self, config: IMPConfig, model_factory: Callable[[], nn.Module], data: ImageFolderSplits,
                 context: DistributedContext, save_dir: Path, workers: int | None = None,
                 log: Callable[[str], None] = log,
                 policy: RoundPolicy | None = None, hooks: Sequence[TrainingHook] = (), progress: bool = True):
        config.validate(context.world_size)
        if config.prune_type == "pt":
            raise UserError("--prune_type pt is not available in OpenLTH's layout; use rewind_lt or lt")
        if workers is not None:
            config = dataclasses.replace(config, workers=workers)
        train = ShardedTrainData(data.train, config.batch_size, config.workers, context, config.seed)
        super().__init__(config, model_factory, train, ShardedEvaluator(data, context, config.workers, config.amp),
                         OpenLTHLayout(save_dir, config), context.device, policy=policy, hooks=hooks, log=log,
                         progress=progress, context=context)
        from .provenance import data_provenance

        self.data_provenance = data_provenance(data)

    def run(self) -> list[dict]:
        """Train levels 0..``pruning_times - 1`` (continuing a run in the folder); one record per level."""
        return super().run(resume=None)
