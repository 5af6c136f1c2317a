"""One training loop, evaluation, and the optimiser and learning-rate schedule of the original code."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class EpochStats:
    """Mean loss and accuracy (percent) over one pass."""

    loss: float
    accuracy: float


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum and weight decay, as the original."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


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
    """bf16 autocast on the device when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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


def train_one_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer, device: torch.device,
                    amp: bool = False, progress: str | None = None, total: int | None = None) -> EpochStats:
    """One pass of SGD over ``batches``; returns the mean training loss and accuracy."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for images, labels in tqdm(batches, desc=progress, total=total, leave=False, disable=progress is None):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast_context(device, amp):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += labels.shape[0]
    return EpochStats(float(loss_sum) / max(seen, 1), 100.0 * float(correct) / max(seen, 1))


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, device: torch.device, amp: bool = False) -> EpochStats:
    """Mean cross-entropy and accuracy (percent) of ``model`` in eval mode over ``batches``."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
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
    for images, target in batches:
        logits.append(model(images.to(device)).float().cpu())
        labels.append(target.cpu())
    return torch.cat(logits), torch.cat(labels)
