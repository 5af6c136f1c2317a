"""Device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import UserError


def resolve_device(name: str = "auto", gpu: int | None = None) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda`` (and the original's ``--gpu`` index) into a ``torch.device``."""
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown --device {name!r}: choose auto, cpu or cuda")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if torch.cuda.is_available():
        return torch.device("cuda", gpu or 0)
    return torch.device("cpu")


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
