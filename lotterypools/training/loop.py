"""One training loop, evaluation, and the optimiser and learning-rate schedule of the original code."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.console import progress as progress_bar, progress_wanted
from ..core.device import device_autocast_dtype
from ..core.types import Batches


@dataclass
class EpochStats:
    """Mean loss and accuracy (percent) over one pass."""

    loss: float
    accuracy: float


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                    decay_norms: bool = True) -> torch.optim.SGD:
    """SGD with momentum and weight decay, as the original; ``decay_norms=False`` (the original FreeTickets
    ImageNet code) gives biases and BN parameters (every parameter of at most one dimension) no decay."""
    if decay_norms:
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    plain = [p for p in model.parameters() if p.dim() <= 1]
    decayed = [p for p in model.parameters() if p.dim() > 1]
    return torch.optim.SGD([{"params": decayed}, {"params": plain, "weight_decay": 0.0}], lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, milestones: Sequence[int], warmup: int = 0,
                    gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler:
    """Step decay by ``gamma`` at ``milestones`` (epochs), after ``warmup`` epochs of linear warm-up."""
    if warmup <= 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma)

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / warmup
        return gamma ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_context(device: torch.device, enabled: bool):
    """bf16 autocast on the device when enabled (and the device has bf16), else a no-op context."""
    dtype = device_autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def prepare_model(model: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Put ``model`` in channels-last memory format and/or compile its forward in place, as asked.

    ``nn.Module.compile`` (not ``torch.compile(model)``) keeps the state-dict keys unchanged, so checkpoints
    read the same whether or not the run compiled.
    """
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    return model


@dataclass
class Step:
    """What a training hook sees at one optimiser step.

    ``step`` counts optimiser steps from the start of the run (``first_step`` of the epoch plus the
    index in the epoch); ``indices`` are the batch's positions in the split when the batches carry them.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int
    step: int
    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor
    indices: torch.Tensor | None = None


class TrainingHook:
    """Plug-in points of the training loop; every method is a no-op unless overridden.

    ``after_backward`` runs with the gradients in place, before ``optimizer.step()`` (dynamic sparse
    training reads dense gradients there); ``after_step`` runs after it (re-apply masks, update them,
    record per-sample correctness); ``end_of_epoch`` runs once the epoch's evaluation is known and
    returns True to stop training early (the IMP engine ends the round there).
    """

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called by the round trainer once before a round's first epoch, with the optimiser as restored."""

    def after_backward(self, step: Step) -> None:
        """Called after ``loss.backward()``, before the optimiser step."""

    def after_step(self, step: Step) -> None:
        """Called after ``optimizer.step()``."""

    def end_of_epoch(self, epoch: int, model: nn.Module, stats: dict[str, float]) -> bool:
        """Called after epoch ``epoch`` (0-based) with its statistics; True stops training."""
        return False


def train_one_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer, device: torch.device,
                    amp: bool = False, progress: str | None = None, total: int | None = None,
                    hooks: Sequence[TrainingHook] = (), epoch: int = 0, first_step: int = 0,
                    label_smoothing: float = 0.0) -> EpochStats:
    """One pass of SGD over ``batches``; returns the mean training loss and accuracy.

    ``hooks`` are called at every step (see :class:`TrainingHook`); ``epoch`` and ``first_step`` only
    number the steps they see; ``label_smoothing`` goes to the cross-entropy (0: none). ``progress`` labels a
    bar, drawn only on a terminal (a log file gets no carriage returns), whoever the caller is. A non-finite loss
    (or weight at the epoch's end) raises :class:`~lotterypools.training.guards.DivergenceError` naming the epoch
    and step.
    """
    from .guards import FiniteWatch, check_finite

    model.train()
    # the divergence flag stays on the device, read every CHECK_EVERY steps; agreed over the processes only when
    # they train this model together (DDP), not when each trains a model of its own (SMS's candidates)
    together = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    watch = FiniteWatch(device, epoch, agree=together)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = done = 0
    bar = progress is not None and progress_wanted()
    for index, batch in enumerate(progress_bar(batches, progress or "", bar, total=total)):
        images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        indices = batch[2] if len(batch) > 2 else None
        with autocast_context(device, amp):
            logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        watch.observe(loss, first_step + index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step = Step(model, optimizer, epoch, first_step + index, images, labels, logits.detach(), loss.detach(), indices)
        for hook in hooks:
            hook.after_backward(step)
        optimizer.step()
        for hook in hooks:
            hook.after_step(step)
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.detach().argmax(1) == labels).sum()
        seen, done = seen + labels.shape[0], index + 1
        if watch.due(index):
            watch.check()
    watch.check()
    check_finite(model.named_parameters(), "weight", epoch + 1, first_step + done)
    return EpochStats(float(loss_sum) / max(seen, 1), 100.0 * float(correct) / max(seen, 1))


class CorrectnessRecorder(TrainingHook):
    """Per-sample correctness of the training forward passes, one column per epoch (forgetting statistics).

    ``table[i, e]`` is 1 if sample ``i`` was classified correctly when it was last seen in epoch ``e``,
    0 if not, and -1 if it was not seen (not in the trained subset). The batches must carry indices.
    """

    def __init__(self, num_samples: int):
        self.num_samples = num_samples
        self.columns: list[torch.Tensor] = []

    def after_step(self, step: Step) -> None:
        if step.indices is None:
            raise ValueError("CorrectnessRecorder needs batches with sample indices (BatchSource(with_indices=True))")
        while len(self.columns) <= step.epoch:
            self.columns.append(torch.full((self.num_samples,), -1, dtype=torch.int8))
        hits = (step.logits.argmax(1) == step.labels).to(torch.int8).cpu()
        self.columns[step.epoch][step.indices.cpu()] = hits

    @property
    def table(self) -> torch.Tensor:
        """(num_samples, epochs) int8 tensor of 1/0/-1."""
        if not self.columns:
            return torch.empty((self.num_samples, 0), dtype=torch.int8)
        return torch.stack(self.columns, dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, device: torch.device, amp: bool = False) -> EpochStats:
    """Mean cross-entropy and accuracy (percent) of ``model`` in eval mode over ``batches``."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for batch in batches:
        images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        with autocast_context(device, amp):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        correct += (logits.argmax(1) == labels).sum()
        seen += labels.shape[0]
    return EpochStats(float(loss_sum) / max(seen, 1), 100.0 * float(correct) / max(seen, 1))


@torch.no_grad()
def predict(model: nn.Module, batches: Batches, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the CPU) and labels of ``model`` over ``batches``."""
    model.eval()
    logits, labels = [], []
    for batch in batches:
        logits.append(model(batch[0].to(device)).float().cpu())
        labels.append(batch[1].cpu())
    return torch.cat(logits), torch.cat(labels)
