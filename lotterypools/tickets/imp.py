"""Iterative magnitude pruning (IMP) in the original repository's run layout, on in-memory data sets.

:class:`IMPRun` is the training engine (:class:`lotterypools.training.engine.IMPEngine`) with the original's files
(:class:`lotterypools.formats.original.OriginalLayout`), batches from an in-memory split and the best-validation
ticket. Each round writes its tickets and a resumable checkpoint atomically; batches depend only on
(seed, round, epoch), so a run resumed from any epoch checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..formats.original import CurvePlotter, OriginalLayout
from ..config.settings import PRUNE_TYPES, IMPConfig
from ..data.datasets import DataSplits
from ..training.engine import IMPEngine, RoundPolicy
from ..core.console import log
from ..training.sources import SplitEvaluator, SplitTrainData
from ..training.loop import TrainingHook

__all__ = ["IMPConfig", "IMPRun", "PRUNE_TYPES"]


class IMPRun(IMPEngine):
    """An IMP run over one folder in the original's layout: ``run()`` trains every round not yet finished.

    As the original, a folder that holds a run is continued only when asked (``run(resume=True)``, ``--resume``).
    """

    rerun_continues = False

    def __init__(self, config: IMPConfig, model_factory: Callable[[], nn.Module], data: DataSplits,
                 device: torch.device, save_dir: Path, log: Callable[[str], None] = log, progress: bool = True,
                 policy: RoundPolicy | None = None, hooks: Sequence[TrainingHook] = (),
                 plot_curve: CurvePlotter | None = None):
        config.validate()
        self.data = data
        train = SplitTrainData(data, config.batch_size, device, config.seed, config.loader, config.workers)
        super().__init__(config, model_factory, train, SplitEvaluator(data, device, config.amp),
                         OriginalLayout(save_dir, config, plot_curve), device, policy=policy, hooks=hooks, log=log,
                         progress=progress)
        from ..core.provenance import data_provenance

        self.data_provenance = data_provenance(data)
