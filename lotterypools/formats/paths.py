"""Every file name of an IMP run folder, in one place (the original repository's names)."""

from __future__ import annotations

import re
from pathlib import Path

BEST_PATTERN = re.compile(r"^(\d+)model_SA_best\.pth\.tar$")
LAST_PATTERN = re.compile(r"^(\d+)checkpoint\.pth\.tar$")


def round_checkpoint(save_dir: Path, round_index: int) -> Path:
    """Last-epoch checkpoint of a round (also what ``--resume`` continues from)."""
    return Path(save_dir) / f"{round_index}checkpoint.pth.tar"


def round_best(save_dir: Path, round_index: int) -> Path:
    """Best-validation checkpoint of a round: the round's ticket."""
    return Path(save_dir) / f"{round_index}model_SA_best.pth.tar"


def rewind_weights(save_dir: Path, epoch: int) -> Path:
    """Plain state dict after ``epoch`` epochs of the dense round."""
    return Path(save_dir) / f"epoch_{epoch}_rewind_weight.pt"


def summary(save_dir: Path) -> Path:
    return Path(save_dir) / "summary.json"


def training_curve(save_dir: Path, round_index: int) -> Path:
    return Path(save_dir) / f"{round_index}training_curve.png"


def settings(save_dir: Path) -> Path:
    """The run's settings (JSON): what ``--resume`` compares against."""
    return Path(save_dir) / "settings.json"
