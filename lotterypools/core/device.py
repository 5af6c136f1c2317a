"""Device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import UserError


def choose_device(name: str, cuda_available: bool, gpu: int | None = None) -> torch.device:
    """The device ``--device name`` (``auto``/``cpu``/``cuda``) and ``--gpu`` mean where CUDA is (not) available.

    Pure: the CUDA-only branches are testable on a CPU-only machine.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown --device {name!r}: choose auto, cpu or cuda")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" and not cuda_available:
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if cuda_available:
        return torch.device("cuda", gpu or 0)
    return torch.device("cpu")


def resolve_device(name: str = "auto", gpu: int | None = None) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda`` (and the original's ``--gpu`` index) into a ``torch.device``."""
    return choose_device(name, torch.cuda.is_available(), gpu)


def autocast_dtype(device_type: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on a device: bf16 where supported, else None (autocast off, float32).

    float16 is never chosen: it needs a loss scaler, which the original training has not.
    """
    if device_type == "cpu" or bf16_supported:
        return torch.bfloat16
    return None


def device_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """:func:`autocast_dtype` for ``device`` on this machine."""
    supported = device.type != "cuda" or torch.cuda.is_bf16_supported()
    return autocast_dtype(device.type, supported)


def pin_wanted(source: torch.device, target: torch.device) -> bool:
    """Whether a host tensor bound for ``target`` should be staged in pinned memory (an asynchronous copy).

    Only a copy from the CPU to a CUDA device gains: pageable memory makes ``non_blocking`` copies blocking.
    """
    return source.type == "cpu" and target.type == "cuda"


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` without stalling the host: through pinned memory for CPU-to-CUDA copies.

    The caching host allocator keeps the pinned block alive until the copy is done, so the staging copy may go.
    """
    if pin_wanted(tensor.device, device):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device, non_blocking=True)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run on the CPU repeats exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A seed that depends only on its parts (e.g. seed, round, epoch), so a resumed run repeats the batches."""
    value = 1469598103934665603
    for part in parts:
        value = ((value ^ (int(part) & 0xFFFFFFFF)) * 1099511628211) % 2**63
    return value
