"""Out-of-distribution accuracy on a corrupted test set (CIFAR-10-C layout): evaluation and table (flags in :mod:`lotterypools.cli.flags`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..data.corruptions import CorruptedSet, check_severities
from ..data.datasets import BatchSource
from ..core.records import format_table
from ..training.loop import evaluate
from ..core.types import Weights


@dataclass
class OODBenchmark:
    """The chosen corruptions and severities of one corrupted set."""

    data: CorruptedSet
    corruptions: list[str]
    severities: list[int]
    batch_size: int = 500

    def evaluate(self, model: nn.Module, device: torch.device) -> dict:
        """Accuracy per corruption and severity, the mean per corruption, and the mean over all (``ood_acc``)."""
        table: dict[str, dict[str, float]] = {}
        for name in self.corruptions:
            scores = {str(s): evaluate(model, BatchSource(self.data.split(name, s), self.batch_size, device),
                                       device).accuracy for s in self.severities}
            table[name] = {**scores, "mean": sum(scores.values()) / len(scores)}
        overall = sum(row["mean"] for row in table.values()) / len(table)
        return {"ood_acc": overall, "ood": table}

    def evaluate_weights(self, model: nn.Module, weights: Weights, device: torch.device) -> dict:
        """:meth:`evaluate` after loading ``weights`` into ``model``."""
        model.load_state_dict(weights)
        return self.evaluate(model, device)


def open_benchmark(ood_data: str | None, corruptions: Sequence[str] | None, severities: Sequence[int],
                   channels: int, image_size: int) -> OODBenchmark | None:
    """The corrupted copies at ``ood_data`` (None when not given), checked against the network's input shape.

    ``corruptions`` selects some of them (``None``: all); ``severities`` are the levels averaged.
    """
    if not ood_data:
        return None
    severities = check_severities(severities)
    data = CorruptedSet(ood_data)
    corruptions = data.select(corruptions)
    data.check_shape(channels, image_size)
    return OODBenchmark(data, corruptions, severities)


def ood_table(rows: Mapping[str, Mapping], corruptions: Sequence[str]) -> str:
    """A table: one row per network, the mean accuracy per corruption and overall."""
    body = [{"network": name, "mean": row["ood_acc"], **{c: row["ood"][c]["mean"] for c in corruptions}}
            for name, row in rows.items()]
    return format_table(body, ["network", "mean", *corruptions], digits=1)
