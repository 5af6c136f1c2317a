"""The ImageNet scripts' data settings declared once (held-out split, crop size). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from .names import PAPER_VAL_SIZE
from .settings import setting


@dataclass
class ImageNetData:
    """How an ImageFolder is split and cropped (the same in every ImageNet script)."""

    val_size: int = setting(PAPER_VAL_SIZE, "training images held out to choose tickets, the same on every run (the "
                                            "paper's; lowered to a tenth, with a warning, for a folder of fewer than "
                                            "twice as many)", group="data", minimum=1)
    split_seed: int = setting(0, "seed of the held-out split", group="data")
    input_size: int = setting(224, "crop side; test images are resized to 256/224 of it first", group="data",
                              minimum=1)
