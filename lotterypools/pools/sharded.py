"""The pool search's evaluator over several processes: BN statistics and accuracies reduced across them."""

from __future__ import annotations

from torch import nn

from ..training.distributed import DistributedContext, all_reduce_batchnorm, evaluate_sharded
from ..training.loop import EpochStats, autocast_context
from .search import PoolEvaluator, TrialKey, recalibrate_batchnorm
from ..core.types import Batches


class ShardedPoolEvaluator(PoolEvaluator):
    """A :class:`PoolEvaluator` whose BN recalibration and evaluation cover all processes' shares.

    Every process loads the same weights, so every process computes the same reduced numbers and makes the
    same choices; the result equals one process's up to float rounding.
    """

    def __init__(self, model: nn.Module, bn_batches: Batches, val_batches: Batches, test_batches: Batches,
                 context: DistributedContext, amp: bool = False):
        super().__init__(model, bn_batches, val_batches, test_batches, context.device)
        self.context, self.amp = context, amp

    supports_stacked = False  # the stacked scores are not reduced across processes

    def recalibrate(self, trial: TrialKey = ()) -> None:
        with autocast_context(self.device, self.amp):
            recalibrate_batchnorm(self.model, self.bn_batches_for(trial), self.device)
        all_reduce_batchnorm(self.model, self.context)

    def validate(self) -> EpochStats:
        return evaluate_sharded(self.model, self.val_batches, self.device, self.context, self.amp)

    def test(self) -> EpochStats:
        return evaluate_sharded(self.model, self.test_batches, self.device, self.context, self.amp)
