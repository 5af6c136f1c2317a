"""The type aliases the package shares, defined once."""

from __future__ import annotations

from typing import Iterable, Union

import torch

# Parameter and buffer tensors by state-dict name (plain, unmasked names).
Weights = dict[str, torch.Tensor]
# A 0/1 mask per prunable weight, by the weight's state-dict name.
Masks = dict[str, torch.Tensor]
# (images, labels) or (images, labels, example indices).
Batch = Union[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
Batches = Iterable[Batch]
