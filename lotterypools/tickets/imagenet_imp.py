"""IMP in OpenLTH's layout (``level_{k}/main``) on ImageFolder data, with one or many processes (DDP).

The training engine (:class:`lotterypools.training.engine.IMPEngine`) with OpenLTH's files
(:class:`lotterypools.formats.openlth.OpenLTHLayout`), the last epoch's weights as each level's ticket, and
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

from torch import nn

from ..config.settings import OPENLTH_IMAGENET_DEFAULTS, IMPConfig
from ..training.distributed import DistributedContext
from ..training.engine import IMPEngine, RoundPolicy
from ..core.errors import UserError
from ..data.imagefolder import ImageFolderSplits
from ..formats.openlth import OpenLTHLayout
from ..core.console import log
from ..training.sources import ShardedEvaluator, ShardedTrainData
from ..training.loop import TrainingHook


def openlth_config(**settings: Any) -> IMPConfig:
    """An :class:`IMPConfig` with OpenLTH's ImageNet defaults; ``levels=L`` means levels 0..L (L+1 rounds)."""
    levels = settings.pop("levels", None)
    if levels is not None:
        settings["pruning_times"] = levels + 1
    return IMPConfig(**{**OPENLTH_IMAGENET_DEFAULTS, **settings})


class LevelRun(IMPEngine):
    """An IMP run in one OpenLTH folder; ``run()`` trains every level not yet finished (continuing a run there)."""

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
        from ..core.provenance import data_provenance

        self.data_provenance = data_provenance(data)
