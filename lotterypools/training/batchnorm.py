"""Batch-norm statistics recomputed for weights that were never trained as they are (averages, soups, pruned nets).

Shared by the pool search (every interpolation trial) and Sparse Model Soups (every soup).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.types import Batches


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The model's batch-norm layers, in module order."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Batches, device: torch.device) -> None:
    """Recompute batch-norm running statistics as a cumulative average over ``batches``.

    The statistics of ``torch.optim.swa_utils.update_bn`` (statistics reset, training-mode forwards, the k-th
    batch weighted 1/k), bit for bit, without its host stalls: ``update_bn`` sets ``momentum=None``, which makes
    every BN layer read ``num_batches_tracked`` back to the host (``float()``) at every batch; here the weight
    1/k is set from the host as each layer's momentum.
    """
    norms = batchnorm_layers(model)
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
    was_training = model.training
    model.train()
    try:
        for count, batch in enumerate(batches, start=1):
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            for module in norms:
                module.momentum = 1.0 / count  # what momentum=None computes from num_batches_tracked
            model(images.to(device, non_blocking=True))
    finally:
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum
        model.train(was_training)
