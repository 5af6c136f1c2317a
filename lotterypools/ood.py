"""Out-of-distribution accuracy on a corrupted test set (CIFAR-10-C layout): flags, evaluation, table."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from .corruptions import SEVERITIES, CorruptedSet, check_severities
from .data import BatchSource
from .results import format_table
from .training import evaluate

Weights = dict[str, torch.Tensor]


def add_ood_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    group = parser.add_argument_group("out-of-distribution evaluation")
    group.add_argument("--ood_data", default=None, required=required,
                       help="folder in the CIFAR-10-C layout (<corruption>.npy + labels.npy): the official "
                            "CIFAR-10-C/100-C or one written by make_corrupted.py" +
                            ("" if required else " (default none: no OOD evaluation)"))
    group.add_argument("--corruptions", nargs="+", default=None,
                       help="corruptions to evaluate (default every .npy in --ood_data)")
    group.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES),
                       help="severities 1..5 to evaluate (default all five)")


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


def open_benchmark(args: argparse.Namespace, channels: int, image_size: int) -> OODBenchmark | None:
    """The benchmark the ``--ood_data``/``--corruptions``/``--severities`` flags describe (None without ``--ood_data``)."""
    if not args.ood_data:
        return None
    severities = check_severities(args.severities)
    data = CorruptedSet(args.ood_data)
    corruptions = data.select(args.corruptions)
    data.check_shape(channels, image_size)
    return OODBenchmark(data, corruptions, severities)


def ood_table(rows: Mapping[str, Mapping], corruptions: Sequence[str]) -> str:
    """A table: one row per network, the mean accuracy per corruption and overall."""
    body = [{"network": name, "mean": row["ood_acc"], **{c: row["ood"][c]["mean"] for c in corruptions}}
            for name, row in rows.items()]
    return format_table(body, ["network", "mean", *corruptions], digits=1)
