"""Flags and set-up shared by the Lottery Pools scripts (CIFAR and ImageNet)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from .cli import PAPER_COEFFICIENTS
from .data import BatchSource, DataSplits, fixed_batches, resident_split
from .experiment import METHODS, check_pool_settings, evaluate_tickets, run_linear_paths, run_pool_method
from .pool_results import PoolResultsFile
from .pools import PoolEvaluator
from .tickets import TicketStore
from .results import log


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Lottery Pools")
    group.add_argument("--interpolate_method", default="Lottery_pools", choices=METHODS,
                       help="Lottery_pools (greedy interpolation), interpolate_swa, interpolate_ema, or liner_inter "
                            "(linear paths between consecutive tickets) (default Lottery_pools)")
    group.add_argument("--search_num", type=int, default=3,
                       help="size of the candidate pool counting the target, as the original: search_num-1 "
                            "candidates (default 3; the paper uses all tickets, e.g. 19)")
    group.add_argument("--interpolation_value_list", type=float, nargs="+", default=PAPER_COEFFICIENTS,
                       help="coefficients alpha tried on each candidate; 0.5 alone gives Lottery Pools (average) "
                            "(default the paper's 11 values 0.05 ... 0.95)")
    group.add_argument("--EMA_value", type=float, default=0.95,
                       help="EMA weight on the incoming ticket for interpolate_ema (default 0.95, the paper's)")
    group.add_argument("--rewind_epoch", type=int, default=None, help="kept for compatibility; not used by the search")
    group.add_argument("--bn_batches", type=int, default=0,
                       help="recompute BN statistics on this many fixed, seeded training batches instead of a full "
                            "pass over the training split (default 0: full pass, as the original)")
    group.add_argument("--prune_mode", default="during", choices=("during", "after"),
                       help="re-prune after every interpolation (during, the paper's) or once at the end (after)")
    group.add_argument("--targets", type=int, nargs="+", default=None, help="only these target rounds (default all)")
    group.add_argument("--save_pooled", action="store_true",
                       help="write every pooled ticket to <save_dir>/<method>/<k>model_SA_best.pth.tar")
    group.add_argument("--inference", action="store_true",
                       help="evaluate the tickets first (always done; kept for compatibility)")


def validate_pool_args(args: argparse.Namespace) -> None:
    check_pool_settings(args.search_num, args.interpolation_value_list, args.EMA_value)


def build_evaluator(model: nn.Module, data: DataSplits, device: torch.device, batch_size: int, bn_batches: int,
                    seed: int) -> PoolEvaluator:
    """Validation/test batches and BN batches held on the device when they fit, reused by every trial."""
    train, val, test = (resident_split(s, device) for s in (data.train, data.val, data.test))
    bn_source = BatchSource(train, batch_size, device, data.spec, shuffle=True, augment=True, seed=seed)
    bn = fixed_batches(bn_source, bn_batches) if bn_batches > 0 else bn_source
    return PoolEvaluator(model, bn, BatchSource(val, 500, device), BatchSource(test, 500, device), device)


def run_pool_job(args: argparse.Namespace, store: TicketStore, evaluator: PoolEvaluator, save_dir: Path,
                 title: str, log=log, primary: bool = True) -> PoolResultsFile:
    """Evaluate the tickets, run the chosen method, and write the results files and plots.

    With several processes every one runs the search (they take part in the reductions); only the
    ``primary`` one logs, shows progress and writes files.
    """
    log = log if primary else (lambda message: None)
    results = PoolResultsFile(save_dir)
    results.add_records(evaluate_tickets(store, evaluator, progress=primary))
    log("tickets: " + "  ".join(f"{t.round}:{100 * t.density:.1f}%/{t.test_acc:.2f}" for t in store.tickets))
    settings = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, list, type(None), bool))}
    if args.interpolate_method == "liner_inter":
        results.add_linear(run_linear_paths(store, evaluator, progress=primary, log=log))
    else:
        pooled_dir = save_dir if args.save_pooled and primary else None
        results.add_records(run_pool_method(args.interpolate_method, store, evaluator, args.search_num,
                                            args.interpolation_value_list, args.EMA_value, args.prune_mode,
                                            args.targets, pooled_dir, log=log, progress=primary))
    if not primary:
        return results
    results.add_run(**settings)
    results.write(title)
    log(results.comparison_table())
    log(f"results: {results.json_path} (+ .csv, pools_accuracy.png"
        f"{', linear_interpolation.png' if results.linear else ''})")
    return results
