"""PrAC lottery tickets (Zhang et al., ICML 2021): IMP on the pruning-aware critical set.

The pieces of the method, each usable and testable alone:

- :func:`forgetting_counts`: per sample, the number of correct-to-incorrect transitions in a round's
  correctness table (:class:`lotterypools.training.loop.CorrectnessRecorder`), :data:`NEVER_LEARNED` for a sample
  never classified correctly, -1 for a sample outside the round's subset;
- :func:`critical_for_training` (CET): the samples forgotten more than ``threshold`` times (``zero_out``), or a
  fixed shrinking number of the most forgotten ones (``constent``);
- :func:`critical_for_pruning` (CEP): the training samples on which the dense and the sparse network disagree;
- :func:`next_subset`: CET ∪ CEP (the next round's set; not cumulative);
- :func:`scaled_schedule`: epochs, milestones and warm-up scaled by the set's share of the training split;
- :class:`MaskDistanceStop`: the early stop on the distance between consecutive epochs' candidate masks,
  an ``end_of_epoch`` training hook;
- :func:`read_split_file`: the original's ``--split_file`` (a plain 1-D integer array).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..config.prac import DATA_PRUNE_RULES, PrACSettings
from ..core.errors import UserError
from ..training.masks import prunable_modules
from ..training.loop import TrainingHook, predict
from ..core.types import Batches, Masks

# The original's count for a sample never classified correctly: above any threshold, so always selected.
NEVER_LEARNED = 200_000


# ---------------------------------------------------------------- critical examples for training (CET)
def forgetting_counts(table: torch.Tensor) -> torch.Tensor:
    """Forgetting events per sample from an (N, epochs) table of 1 (correct), 0 (wrong), -1 (not seen).

    Counts correct-to-incorrect transitions between consecutive seen epochs; a sample seen but never
    correct gets :data:`NEVER_LEARNED`, a sample never seen gets -1 (as the original's ``forget_times``).
    """
    table = torch.as_tensor(table)
    if table.dim() != 2:
        raise ValueError(f"a correctness table is (samples, epochs); got shape {tuple(table.shape)}")
    counts = torch.zeros(table.shape[0], dtype=torch.long)
    last = torch.full((table.shape[0],), -1, dtype=table.dtype)
    for column in table.unbind(1):
        seen = column >= 0
        counts += (seen & (last == 1) & (column == 0)).long()
        last = torch.where(seen, column, last)
    seen_any = (table >= 0).any(1)
    learned = (table == 1).any(1)
    counts[seen_any & ~learned] = NEVER_LEARNED
    counts[~seen_any] = -1
    return counts


def critical_for_training(counts: torch.Tensor, rule: str = "zero_out", threshold: int = 0, data_rate: float = 0.2,
                          finished_round: int = 0, train_number: int | None = None) -> torch.Tensor:
    """CET: sorted indices of the samples to keep from this round's forgetting ``counts``.

    ``zero_out`` keeps every sample with a count above ``threshold``; ``constent`` keeps the
    ``int(train_number * (1 - data_rate) ** (finished_round + 1))`` most forgotten samples of the round's
    subset (ties broken by index).
    """
    counts = torch.as_tensor(counts, dtype=torch.long)
    if rule == "zero_out":
        return torch.nonzero(counts > max(threshold, -1)).flatten()
    if rule == "constent":
        total = counts.numel() if train_number is None else train_number
        number = int(total * (1 - data_rate) ** (finished_round + 1))
        in_subset = torch.nonzero(counts >= 0).flatten()
        order = torch.sort(counts[in_subset], descending=True, stable=True).indices
        return torch.sort(in_subset[order[:number]]).values
    raise UserError(f"unknown --data_prune {rule!r}: choose one of {', '.join(DATA_PRUNE_RULES)}")


# ---------------------------------------------------------------- critical examples for pruning (CEP)
def critical_for_pruning(dense: nn.Module, sparse: nn.Module, batches: Batches, device: torch.device) -> torch.Tensor:
    """CEP: positions (in ``batches``' order) where the two networks' predicted classes differ.

    ``batches`` should be the un-augmented, unshuffled training split, so positions are sample indices.
    """
    dense_logits, _ = predict(dense, batches, device)
    sparse_logits, _ = predict(sparse, batches, device)
    return torch.nonzero(dense_logits.argmax(1) != sparse_logits.argmax(1)).flatten()


def next_subset(cet: torch.Tensor, cep: torch.Tensor | None = None) -> torch.Tensor:
    """The next round's PrAC set: CET ∪ CEP, sorted (only this round's sets, not cumulative)."""
    parts = [torch.as_tensor(cet, dtype=torch.long).flatten()]
    if cep is not None:
        parts.append(torch.as_tensor(cep, dtype=torch.long).flatten())
    return torch.unique(torch.cat(parts))


# ---------------------------------------------------------------- schedule
@dataclass(frozen=True)
class RoundSchedule:
    """How long a round trains and when its learning rate drops (epochs counted from 0 in the round)."""

    epochs: int
    milestones: list[int]
    warmup: int


def scaled_schedule(epochs: int, milestones: Sequence[int], warmup: int, selected: int, train_number: int) -> RoundSchedule:
    """The original's dynamic schedule: int(epochs·f), int(m·f), int(warmup·f) with f = selected/train_number.

    At least one epoch, so that a tiny set still trains (the original would run zero epochs and crash).
    """
    scale = lambda value: (int(value) * int(selected)) // int(train_number)  # exact int(value * f)
    return RoundSchedule(max(1, scale(epochs)), [scale(m) for m in milestones], scale(warmup))


# ---------------------------------------------------------------- early stop on mask distance
def candidate_mask(model: nn.Module, rate: float) -> Masks:
    """The mask global magnitude pruning of ``rate`` of the still-unpruned conv weights would give now.

    The model is not changed. Pruned entries stay pruned; ``round(rate * remaining)`` weights are removed,
    as ``torch.nn.utils.prune.global_unstructured`` does.
    """
    weights, current = {}, {}
    for name, module in prunable_modules(model):
        key = f"{name}.weight"
        if hasattr(module, "weight_mask"):
            current[key] = module.weight_mask.detach()
            weights[key] = module.weight_orig.detach() * current[key]
        else:
            weights[key] = module.weight.detach()
            current[key] = torch.ones_like(weights[key])
    remaining = sum(int(mask.count_nonzero()) for mask in current.values())
    keep = remaining - int(round(rate * remaining))
    # pruned entries score -1 so that they never outrank a surviving weight, even one that is exactly 0
    scores = torch.cat([torch.where(current[k] > 0, weights[k].abs().float(), -1.0).flatten() for k in weights])
    flags = torch.zeros_like(scores, dtype=torch.bool)
    flags[torch.topk(scores, keep, sorted=False).indices] = True
    masks, offset = {}, 0
    for key, weight in weights.items():
        masks[key] = flags[offset:offset + weight.numel()].view_as(weight)
        offset += weight.numel()
    return masks


def mask_distance(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> int:
    """Number of entries in which two masks differ, over all their tensors."""
    return sum(int((first[key].bool() != second[key].bool()).sum()) for key in first)


def remaining_weights(model: nn.Module) -> int:
    """Conv weights not yet pruned (the original's ``remain_para``)."""
    total = 0
    for _, module in prunable_modules(model):
        total += int(module.weight_mask.count_nonzero()) if hasattr(module, "weight_mask") else module.weight.numel()
    return total


class MaskDistanceStop(TrainingHook):
    """Early-Bird stop of the original's PrAC rounds (an ``end_of_epoch`` hook).

    After each epoch the candidate 20% mask is compared with the previous epoch's; the distance is the
    number of differing entries over ``remain_para``. Recording starts once a distance exceeds ``eps``;
    from then on, after the warm-up epochs, each distance enters a queue of ``queue_length`` (initialised
    to ones), and the round stops once every queued distance is below ``eps``.
    """

    def __init__(self, eps: float, queue_length: int, remain_para: int, rate: float = 0.2, warmup: int = 0):
        self.eps, self.rate, self.warmup, self.remain_para = eps, rate, warmup, remain_para
        self.distance_queue = torch.ones(queue_length)
        self.last_mask: Masks | None = None
        self.start_record = False
        self.distances: list[float] = []

    def observe(self, epoch: int, distance: float) -> bool:
        """Take epoch ``epoch``'s distance; True when the round should stop."""
        self.distances.append(float(distance))
        self.start_record = self.start_record or distance > self.eps
        if epoch > self.warmup and self.start_record:
            self.distance_queue = torch.cat([torch.tensor([float(distance)]), self.distance_queue[:-1]])
        return bool(self.distance_queue.max() < self.eps)

    def end_of_epoch(self, epoch: int, model: nn.Module, stats: dict[str, float]) -> bool:
        mask = candidate_mask(model, self.rate)
        if self.last_mask is None:
            self.last_mask = mask
            return False
        stop = self.observe(epoch, mask_distance(self.last_mask, mask) / self.remain_para)
        if not stop:  # as the original: the mask of the stopping epoch is not kept as ``last_mask``
            self.last_mask = mask
        return stop

    def state(self) -> dict:
        """The original's checkpoint keys of the early stop."""
        return {"remain_para": self.remain_para, "distance_queue": self.distance_queue.clone(),
                "last_mask": None if self.last_mask is None else {k: v.clone() for k, v in self.last_mask.items()},
                "start_record": self.start_record}

    def load_state(self, saved: Mapping) -> None:
        """Continue from :meth:`state` saved in a checkpoint."""
        self.remain_para = int(saved["remain_para"])
        self.distance_queue = torch.as_tensor(saved["distance_queue"], dtype=torch.float).clone()
        last = saved.get("last_mask")
        self.last_mask = None if last is None else {k: torch.as_tensor(v).bool() for k, v in last.items()}
        self.start_record = bool(saved["start_record"])


# ---------------------------------------------------------------- inputs
def validate_prac_settings(eb_eps: float, queue_length: int, threshold: int, data_prune: str, data_rate: float) -> None:
    """One-line errors for PrAC flags that cannot work (the ranges declared on :class:`PrACSettings`)."""
    PrACSettings(eb_eps=eb_eps, queue_length=queue_length, data_prune=data_prune, threshold=threshold,
                 data_rate=data_rate).validate()


def read_split_file(path: str | Path, total_images: int, train_number: int) -> torch.Tensor:
    """The first training subset from the original's ``--split_file``: a plain 1-D integer .npy array.

    Entries index the data set's training images (training split then validation, ``total_images`` in
    all). Its first ``train_number`` entries are the round-0 set and must all lie in the training split.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--split_file {path} does not exist; give the original's npy file (e.g. npy_files/cifar10-train-val.npy) or omit the flag")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise UserError(f"--split_file {path} is not a plain .npy array ({str(error).splitlines()[0][:120]}); "
                        f"save one with numpy.save(path, indices)") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise UserError(f"--split_file {path} holds an array of shape {getattr(array, 'shape', '?')}, not a 1-D list "
                        f"of image indices; save a 1-D integer array")
    if array.dtype.kind not in "iu":
        raise UserError(f"--split_file {path} holds {array.dtype} values, not integers; save the indices as an integer array")
    if array.size == 0:
        raise UserError(f"--split_file {path} is empty; it must list the training image indices")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= total_images:
        bad = low if low < 0 else high
        raise UserError(f"--split_file {path} has index {bad}, outside 0..{total_images - 1} (the data set's "
                        f"{total_images} training images); use the split file of this --dataset")
    values, counts = np.unique(array, return_counts=True)
    if (counts > 1).any():
        raise UserError(f"--split_file {path} repeats index {int(values[counts > 1][0])} "
                        f"({int((counts > 1).sum())} repeated values); every image may appear once")
    if array.size < train_number:  # a short file would silently train round 0 on a fraction of the split
        raise UserError(f"--split_file {path} lists {array.size} images, fewer than the {train_number} of this data "
                        f"set's training split: use the split file of this --dataset (or omit the flag)")
    first = array[:train_number]
    if (first >= train_number).any():
        raise UserError(f"--split_file {path} puts validation image {int(first[first >= train_number][0])} among its "
                        f"first {train_number} entries (the training set); validation images 0-based "
                        f"{train_number}..{total_images - 1} must come last")
    return torch.as_tensor(first.astype(np.int64))
