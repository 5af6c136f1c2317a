"""Retrain a subnetwork: the mask of one checkpoint, the initialisation of another (or a fresh random one).

What the PrAC code's ``main_train.py --mask_dir --init_dir`` does, for random-reinitialisation and other
ablations. The training is one IMP round (same loop, schedule, files and resume) with the mask fixed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..formats.original import read_initialisation, read_masks
from ..core.torchfiles import check_compatible, tensor_differences
from ..data.datasets import DataSplits
from ..core.errors import UserError
from .imp import IMPConfig, IMPRun
from ..training.masks import prunable_names
from ..core.types import Masks, Weights


def check_masks(masks: Mapping[str, torch.Tensor], model: nn.Module, path: Path, what: str) -> None:
    """One-line error unless the masks cover every conv layer of ``model`` and fit its tensors' shapes."""
    reference = model.state_dict()
    differences = tensor_differences(masks, reference)
    wrong = differences.unexpected + differences.reshaped
    wrong += [f"{name} (no mask)" for name in prunable_names(model) if name not in masks]
    if wrong:
        raise UserError(f"masks in {path} do not fit {what}: {', '.join(wrong[:3])}; check --arch and --dataset")


class RetrainRun(IMPRun):
    """One training round of a fixed subnetwork; files, log and ``--resume`` as an IMP run's round 0."""

    def __init__(self, config: IMPConfig, model_factory: Callable[[], nn.Module], data: DataSplits,
                 device: torch.device, save_dir: Path, masks: Masks, initialisation: Weights | None, **kwargs):
        config = dataclasses.replace(config, pruning_times=1, prune_type="lt", rewind_epoch=0)
        super().__init__(config, model_factory, data, device, save_dir, **kwargs)
        self.masks, self.initialisation = masks, initialisation

    def initial_weights(self) -> Weights | None:
        """The given initialisation (``None``: the seeded random one); saved as the dense start."""
        return self.initialisation

    def initial_masks(self) -> Masks:
        return self.masks


def retrain(config: IMPConfig, model_factory: Callable[[], nn.Module], data: DataSplits, device: torch.device,
            save_dir: Path, mask_path: Path, init_path: Path | None, resume: bool = False, **kwargs) -> list[dict]:
    """Train the subnetwork of ``mask_path`` from the weights of ``init_path`` (random when ``None``)."""
    what = f"--arch {config.arch} on {config.dataset}"
    model = model_factory()
    reference = model.state_dict()
    masks = read_masks(Path(mask_path))
    check_masks(masks, model, Path(mask_path), what)
    initialisation = None
    if init_path is not None:
        initialisation = read_initialisation(Path(init_path))
        check_compatible(initialisation, reference, Path(init_path), what)
    run = RetrainRun(config, model_factory, data, device, save_dir, masks, initialisation, **kwargs)
    return run.run(resume=resume)
