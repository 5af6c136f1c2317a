"""Input normalisation as a module, so that it travels inside every checkpoint as the original's does."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class NormalizeByChannelMeanStd(nn.Module):
    """Subtract a per-channel mean and divide by a per-channel std; both are buffers (``mean``, ``std``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]
