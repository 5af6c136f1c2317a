"""A pool run over a ticket folder: evaluate the tickets, run one method over every target, record results.

Shared by ``CIFAR/Lottery_pools.py`` and ``ImageNet/Lottery_pools.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from .choices import POOL_METHODS as METHODS
from .checkpoints import atomic_save, join_pruned_state
from .errors import UserError
from .masks import magnitude_masks
from .pools import (PoolEvaluator, PoolResult, PoolRule, PoolSearch, candidate_order, ema_rule, linear_path,
                    lottery_pools_rule, swa_rule)
from .tickets import TicketStore
from .results import log

LINE_ALPHAS = [round(0.1 * i, 1) for i in range(11)]
ExtraMetrics = Callable[[dict], dict]


def check_pool_settings(search_num: int, coefficients: Sequence[float], ema_value: float) -> None:
    """One-line errors for settings the search cannot use."""
    if search_num < 1:
        raise UserError(f"--search_num {search_num} must be at least 1 (it counts the target ticket itself)")
    if not coefficients:
        raise UserError("--interpolation_value_list is empty: give at least one coefficient in [0, 1]")
    bad = [c for c in coefficients if not 0.0 <= c <= 1.0]
    if bad:
        raise UserError(f"--interpolation_value_list values {bad} are outside [0, 1]")
    if not 0.0 <= ema_value <= 1.0:
        raise UserError(f"--EMA_value {ema_value} is outside [0, 1]")


def make_rule(method: str, coefficients: Sequence[float], ema_value: float) -> PoolRule:
    if method == "Lottery_pools":
        return lottery_pools_rule(coefficients)
    if method == "interpolate_swa":
        return swa_rule()
    if method == "interpolate_ema":
        return ema_rule(ema_value)
    raise UserError(f"unknown --interpolate_method {method!r}: choose one of {', '.join(METHODS)}")


def evaluate_tickets(store: TicketStore, evaluator: PoolEvaluator, progress: bool = True,
                     extra: ExtraMetrics | None = None) -> list[dict]:
    """Validation and test accuracy of every ticket as trained (its own BN statistics); records for the results.

    ``extra(weights)`` (e.g. out-of-distribution accuracy) adds its entries to each record.
    """
    records = []
    for ticket in tqdm(store.tickets, desc="evaluating tickets", leave=False, disable=not progress):
        weights = store.load(ticket.round)[0]
        evaluator.load(weights)
        val, test = evaluator.validate(), evaluator.test()
        ticket.val_acc, ticket.val_loss, ticket.test_acc, ticket.test_loss = val.accuracy, val.loss, test.accuracy, test.loss
        records.append({"method": "ticket", "target_round": ticket.round, "density": ticket.density,
                        "lt_val_acc": val.accuracy, "lt_test_acc": test.accuracy, "val_acc": val.accuracy,
                        "test_acc": test.accuracy, "chosen_rounds": [], "alphas": [], "seconds": 0.0,
                        **(extra(weights) if extra is not None else {})})
    return records


def result_record(result: PoolResult) -> dict:
    target = result.target
    return {"method": result.method, "target_round": target.round, "density": target.density,
            "lt_val_acc": target.val_acc, "lt_test_acc": target.test_acc, "val_acc": result.val_acc,
            "test_acc": result.test.accuracy, "test_loss": result.test.loss, "chosen_rounds": result.chosen_rounds,
            "alphas": result.alphas, "seconds": round(result.seconds, 2),
            "steps": [{"round": s.round, "alpha": s.alpha, "val_acc": s.val_acc, "accepted": s.accepted,
                       "trials": {str(k): v for k, v in s.trials.items()}} for s in result.steps]}


def save_pooled_ticket(result: PoolResult, names: list[str], folder: Path) -> Path:
    """Write a pooled ticket in the original layout (``weight_orig`` + ``weight_mask``), readable as a ticket."""
    masks = magnitude_masks(result.weights, names, result.kept) if result.kept is not None else {}
    path = folder / f"{result.target.round}model_SA_best.pth.tar"
    atomic_save({"state": result.target.round, "state_dict": join_pruned_state(result.weights, masks),
                 "best_sa": result.val_acc, "method": result.method, "chosen_rounds": result.chosen_rounds,
                 "alphas": result.alphas}, path)
    return path


def run_pool_method(method: str, store: TicketStore, evaluator: PoolEvaluator, search_num: int,
                    coefficients: Sequence[float], ema_value: float, prune_mode: str = "during",
                    targets: Sequence[int] | None = None, save_pooled: Path | None = None,
                    log: Callable[[str], None] = log, progress: bool = True,
                    extra: ExtraMetrics | None = None) -> list[dict]:
    """Run ``method`` for every target ticket; one record per target (``extra(weights)`` adds entries to it)."""
    rule = make_rule(method, coefficients, ema_value)
    names = store.prunable_names()
    search = PoolSearch(store, evaluator, names, prune_mode, log, progress)
    rounds = [t.round for t in store.tickets]
    chosen = [store.by_round(r) for r in (targets if targets is not None else rounds)]
    records = []
    for target in tqdm(chosen, desc=rule.name, disable=not progress):
        result = search.run(rule, target, candidate_order(target.round, rounds, search_num))
        record = result_record(result)
        if prune_mode == "after":
            record["method"] = f"{record['method']}_prune_after"
        if extra is not None:
            record.update(extra(result.weights))
        records.append(record)
        log(f"{record['method']} round {target.round} (density {100 * target.density:.2f}%): ticket test "
            f"{target.test_acc:.2f} -> {result.test.accuracy:.2f}  (val {target.val_acc:.2f} -> {result.val_acc:.2f}; "
            f"merged rounds {result.chosen_rounds or '-'}; {result.seconds:.1f}s)")
        if save_pooled is not None:
            save_pooled_ticket(result, names, save_pooled / record["method"])
    return records


def run_linear_paths(store: TicketStore, evaluator: PoolEvaluator, progress: bool = True,
                     log: Callable[[str], None] = log) -> list[dict]:
    """Linear interpolation between every pair of consecutive tickets (11 points, endpoints included)."""
    rounds = [t.round for t in store.tickets]
    paths = []
    for a, b in tqdm(list(zip(rounds, rounds[1:])), desc="linear paths", disable=not progress):
        path = linear_path(store, evaluator, a, b, LINE_ALPHAS)
        log(f"liner_inter {a}->{b}: test acc {' '.join(f'{x:.1f}' for x in path['test_acc'])}  "
            f"loss barrier {path['loss_barrier']:.4f}")
        paths.append(path)
    return paths
