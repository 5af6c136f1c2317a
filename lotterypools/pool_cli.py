"""Set-up shared by the Lottery Pools scripts (CIFAR and ImageNet); their flags are in :mod:`lotterypools.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from .cli import add_pool_arguments  # noqa: F401 (moved to the torch-free cli; kept importable here)
from .data import BatchSource, DataSplits, fixed_batches, resident_split
from .experiment import check_pool_settings, evaluate_tickets, run_linear_paths, run_pool_method
from .pool_results import PoolResultsFile
from .ood import OODBenchmark, ood_table
from .pools import PoolEvaluator
from .tickets import TicketStore
from .results import log


def validate_pool_args(args: argparse.Namespace) -> None:
    check_pool_settings(args.search_num, args.interpolation_value_list, args.EMA_value)


def build_evaluator(model: nn.Module, data: DataSplits, device: torch.device, batch_size: int, bn_batches: int,
                    seed: int) -> PoolEvaluator:
    """Validation/test batches and BN batches held on the device when they fit, reused by every trial."""
    train, val, test = (resident_split(s, device) for s in (data.train, data.val, data.test))
    bn_source = BatchSource(train, batch_size, device, data.spec, shuffle=True, augment=True, seed=seed)
    bn = fixed_batches(bn_source, bn_batches) if bn_batches > 0 else bn_source
    return PoolEvaluator(model, bn, BatchSource(val, 500, device), BatchSource(test, 500, device), device)


def recorded_settings(args: argparse.Namespace) -> dict:
    """The flags worth storing with a result (plain values only)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, list, type(None), bool))}


def run_pool_job(args: argparse.Namespace, store: TicketStore, evaluator: PoolEvaluator, save_dir: Path,
                 title: str, log=log, primary: bool = True, ood: OODBenchmark | None = None) -> PoolResultsFile:
    """Evaluate the tickets, run the chosen method, and write the results files and plots.

    With several processes every one runs the search (they take part in the reductions); only the
    ``primary`` one logs, shows progress and writes files. With ``ood``, every ticket and pooled ticket
    also gets its out-of-distribution accuracy (``ood_acc``, ``ood``).
    """
    log = log if primary else (lambda message: None)
    results = PoolResultsFile(save_dir)
    extra = None if ood is None else (lambda weights: ood.evaluate_weights(evaluator.model, weights, evaluator.device))
    results.add_records(evaluate_tickets(store, evaluator, progress=primary, extra=extra))
    log("tickets: " + "  ".join(f"{t.round}:{100 * t.density:.1f}%/{t.test_acc:.2f}" for t in store.tickets))
    settings = recorded_settings(args)
    if args.interpolate_method == "liner_inter":
        results.add_linear(run_linear_paths(store, evaluator, progress=primary, log=log))
    else:
        pooled_dir = save_dir if args.save_pooled and primary else None
        results.add_records(run_pool_method(args.interpolate_method, store, evaluator, args.search_num,
                                            args.interpolation_value_list, args.EMA_value, args.prune_mode,
                                            args.targets, pooled_dir, log=log, progress=primary, extra=extra))
    if not primary:
        return results
    results.add_run(**settings)
    results.write(title)
    log(results.comparison_table())
    if ood is not None:
        log("out-of-distribution accuracy:\n" + ood_table(
            {f"{r['method']} {r['target_round']}": r for r in results.records if "ood" in r}, ood.corruptions))
    log(f"results: {results.json_path} (+ .csv, pools_accuracy.png"
        f"{', linear_interpolation.png' if results.linear else ''})")
    return results
