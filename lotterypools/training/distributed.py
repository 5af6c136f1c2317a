"""Processes under ``torchrun``/``multiproc.py``: set-up, and evaluation and BN statistics reduced across them.

One process is the same code with ``world_size == 1`` (no process group, no communication).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from ..core.errors import UserError
from .loop import EpochStats, evaluate
from ..core.types import Batches


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its global rank, the number of processes, its device and backend."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    grouped: bool = False  # a process group exists (also for one process under torchrun)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def distributed_backend(use_cuda: bool) -> str:
    """The process group's backend: nccl between GPUs, gloo between CPU processes."""
    return "nccl" if use_cuda else "gloo"


def wants_process_group(environ: Mapping[str, str]) -> bool:
    """Whether the environment describes a process group: ``WORLD_SIZE`` > 1, or a launcher's rendezvous
    (``MASTER_ADDR``/``MASTER_PORT``, as torchrun sets them) for any size, so one process under torchrun
    runs on the same backend as many."""
    world = environ.get("WORLD_SIZE", "")
    if world in ("", None):
        return False
    return int(world) > 1 or bool(environ.get("MASTER_ADDR") and environ.get("MASTER_PORT"))


def init_distributed(device_name: str = "auto", local_rank: int | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (nccl on GPUs, gloo on CPUs).

    Without a group in the environment (:func:`wants_process_group`) this is a single process and no group is
    made. ``local_rank`` (the ``--local_rank`` flag) is used only where ``LOCAL_RANK`` is not set.
    """
    if device_name not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown --device {device_name!r}: choose auto, cpu or cuda")
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", local_rank or 0)
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if use_cuda:
        visible = torch.cuda.device_count()
        if local >= visible:
            raise UserError(f"process with local rank {local} has no GPU of its own ({visible} visible): lower "
                            f"--nproc_per_node to {visible}, or run on CPUs with --device cpu (gloo)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = distributed_backend(use_cuda)
    grouped = dist.is_initialized()
    if wants_process_group(os.environ) and not grouped:
        dist.init_process_group(backend, rank=rank, world_size=world)
        grouped = True
    return DistributedContext(rank, world, local, device, backend, grouped)


def barrier(context: DistributedContext) -> None:
    """Wait for every process (nothing to do without a process group)."""
    if context.grouped and dist.is_initialized():
        dist.barrier()


def close_distributed(context: DistributedContext) -> None:
    """Leave the process group (after a barrier, so no process quits while another still talks)."""
    if context.grouped and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum ``values`` over all processes in place (nothing to do for one process)."""
    if context.active:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def evaluate_sharded(model: nn.Module, batches: Batches, device: torch.device, context: DistributedContext,
                     amp: bool = False) -> EpochStats:
    """Loss and accuracy over the union of every process's batches (sums of loss, correct and count)."""
    local = evaluate(model, batches, device, amp)
    count = _count_images(batches)
    sums = torch.tensor([local.loss * count, round(local.accuracy * count / 100.0), count],
                        dtype=torch.float64, device=device)
    loss_sum, correct, total = all_reduce_sum(sums, context).tolist()
    return EpochStats(loss_sum / max(total, 1.0), 100.0 * correct / max(total, 1.0))


def _count_images(batches: Batches) -> int:
    """Images in a plain DataLoader (its dataset's length), else counted by iterating the batches."""
    if isinstance(batches, DataLoader) and batches.batch_size is not None and not batches.drop_last:
        return len(batches.dataset)
    return sum(len(labels) for _, labels in batches)


def all_reduce_batchnorm(model: nn.Module, context: DistributedContext) -> None:
    """Make BN running statistics the cumulative mean over all processes' recalibration batches.

    After :func:`recalibrate_batchnorm` each process holds the mean over its own ``num_batches_tracked``
    batches; the batch-count-weighted mean over processes equals the mean over all batches.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not context.active or not norms:
        return
    batches = float(norms[0].num_batches_tracked)
    parts = [t.double() * batches for m in norms for t in (m.running_mean, m.running_var)]
    flat = torch.cat([p.flatten() for p in parts] + [torch.tensor([batches], dtype=torch.float64, device=parts[0].device)])
    all_reduce_sum(flat, context)
    total = float(flat[-1])
    offset = 0
    for module in norms:
        for stat in (module.running_mean, module.running_var):
            count = stat.numel()
            if total > 0:
                stat.copy_((flat[offset:offset + count] / total).view_as(stat).to(stat.dtype))
            offset += count
        module.num_batches_tracked.fill_(int(total))
