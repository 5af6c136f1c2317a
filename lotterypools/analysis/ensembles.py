"""Analyses of a ticket pool the original code lacks: output ensembles, prediction disagreement and calibration,
and the pairwise-average heat map (the paper's Figs. 1, 7, 9 and 10).

Tickets are evaluated as trained (their own BN statistics) unless a weight set is made here, in which
case its BN statistics are recomputed with the :class:`~lotterypools.pools.search.PoolEvaluator`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .calibration import disagreement_matrix, prediction_metrics
from ..core.console import progress as console_progress
from ..core.errors import UserError
from ..core.torchfiles import tensor_differences
from ..training.masks import prune_to_count
from ..pools.search import PoolEvaluator, candidate_order, interpolate_state
from ..pools.store import TicketStore
from ..training.loop import predict
from ..core.types import Batches, Weights


def probabilities(model: nn.Module, weights: Weights, batches: Batches, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax outputs (CPU, float64) and labels of ``model`` carrying ``weights``."""
    model.load_state_dict(weights)
    logits, labels = predict(model, batches, device)
    return logits.double().softmax(1), labels


def check_same_architecture(weight_sets: Mapping[str, Weights]) -> None:
    """One-line error unless every weight set has the same tensor names and shapes."""
    (first_name, first), *others = weight_sets.items()
    for name, weights in others:
        differ = tensor_differences(weights, first).names
        if differ:
            raise UserError(f"cannot ensemble {first_name} and {name}: different architectures "
                            f"({len(differ)} tensors differ, e.g. {differ[0]})")


def member_probabilities(model: nn.Module, weight_sets: Mapping[str, Weights], batches: Batches,
                         device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Softmax outputs of every network in ``weight_sets`` (same architecture), by name, and the labels."""
    check_same_architecture(weight_sets)
    members, labels = {}, None
    for name, weights in weight_sets.items():
        members[name], labels = probabilities(model, weights, batches, device)
    return members, labels


def output_ensemble(model: nn.Module, weight_sets: Mapping[str, Weights], batches: Batches,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Averaged softmax of the networks in ``weight_sets`` (same architecture) and the labels."""
    members, labels = member_probabilities(model, weight_sets, batches, device)
    return average_probabilities(list(members.values())), labels


def average_probabilities(members: list[torch.Tensor]) -> torch.Tensor:
    """The output ensemble: the mean of the members' class probabilities."""
    return torch.stack(members).mean(0)


def ensemble_study(store: TicketStore, model: nn.Module, batches: Batches, device: torch.device, k: int,
                   targets: Sequence[int] | None = None, pooled: TicketStore | None = None) -> list[dict]:
    """For each target: its own metrics, those of the output ensemble of it and its ``k`` nearest tickets
    (O(k + 1) inference), and, when ``pooled`` holds that round, those of the pooled ticket (O(1))."""
    rounds = [t.round for t in store.tickets]
    records = []
    for target in targets if targets is not None else rounds:
        members = [target, *candidate_order(target, rounds, k + 1)]
        weight_sets = {f"ticket {r}": store.load(r)[0] for r in members}
        probs, labels = output_ensemble(model, weight_sets, batches, device)
        own, _ = probabilities(model, weight_sets[f"ticket {target}"], batches, device)
        record = {"target_round": target, "density": store.by_round(target).density, "members": members,
                  "ticket": prediction_metrics(own, labels), "ensemble": prediction_metrics(probs, labels)}
        if pooled is not None and target in {t.round for t in pooled.tickets}:
            pooled_probs, _ = probabilities(model, pooled.load(target)[0], batches, device)
            record["pooled"] = prediction_metrics(pooled_probs, labels)
        records.append(record)
    return records


def disagreement_study(store: TicketStore, model: nn.Module, batches: Batches, device: torch.device) -> dict:
    """Calibration metrics of every ticket and the matrix of prediction disagreement between tickets."""
    tickets, predictions = [], []
    for ticket in store.tickets:
        probs, labels = probabilities(model, store.load(ticket.round)[0], batches, device)
        predictions.append(probs.argmax(1))
        tickets.append({"round": ticket.round, "density": ticket.density, **prediction_metrics(probs, labels)})
    return {"rounds": [t.round for t in store.tickets], "tickets": tickets,
            "disagreement": disagreement_matrix(predictions)}


def pair_average(store: TicketStore, round_a: int, round_b: int, names: list[str]) -> Weights:
    """(T_a + T_b) / 2 pruned by global magnitude to the sparser parent's number of weights (dense stays dense)."""
    average = interpolate_state(store.load(round_a)[0], store.load(round_b)[0], 0.5)
    kept = [c for c in (store.by_round(round_a).kept, store.by_round(round_b).kept) if c is not None]
    if kept:
        prune_to_count(average, names, min(kept))
    return average


def pairwise_average_matrix(store: TicketStore, evaluator: PoolEvaluator, progress: bool = True) -> dict:
    """Test accuracy of every pair's average (:func:`pair_average`) with BN recomputed; the diagonal holds each
    ticket itself with BN recomputed."""
    names = store.prunable_names()
    rounds = [t.round for t in store.tickets]
    size = len(rounds)
    matrix = [[0.0] * size for _ in range(size)]
    pairs = [(i, j) for i in range(size) for j in range(i, size)]
    for i, j in console_progress(pairs, "pairwise averages", progress):
        evaluator.load(pair_average(store, rounds[i], rounds[j], names))
        evaluator.recalibrate()
        matrix[i][j] = matrix[j][i] = evaluator.test().accuracy
    return {"rounds": rounds, "densities": [t.density for t in store.tickets], "test_acc": matrix}
