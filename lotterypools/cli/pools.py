"""Set-up shared by the Lottery Pools scripts (CIFAR and ImageNet); their flags are in :mod:`lotterypools.cli.flags`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .setup import setup_device
from ..core.console import log, quiet
from ..core.device import seed_everything
from ..training.distributed import DistributedContext, init_distributed, wants_process_group
from ..data.datasets import BatchSource, DataSplits, fixed_batches, resident_split
from ..core.files import check_writable_folder
from ..pools.run import (PoolSettings, Share, check_pool_settings, evaluate_tickets, run_linear_paths, run_pool_method,
                         stored_tickets)
from ..analysis.ood import OODBenchmark, ood_table
from ..pools.results import PoolResultsFile
from ..pools.search import PoolEvaluator
from ..pools.store import TicketStore


def validate_pool_args(args: argparse.Namespace) -> None:
    check_pool_settings(args.search_num, args.interpolation_value_list, args.EMA_value, args.bn_batches)


def check_results_folder(folder: Path, flag: str) -> PoolResultsFile:
    """Make sure results can be written to ``folder`` (before any work) and read what it already holds.

    A missing folder is not created here (a refused one must not be left behind); the first record creates it.
    """
    check_writable_folder(Path(folder), flag, create=False)
    return PoolResultsFile(folder)


def start_pool_processes(args: argparse.Namespace) -> DistributedContext:
    """Join the process group under ``torchrun`` (one GPU each, or gloo on CPUs), else pick the device; seed."""
    if wants_process_group(os.environ):
        context = init_distributed(args.device)
        seed_everything(args.seed)
        return context
    return DistributedContext(0, 1, 0, setup_device(args), "none")


def pool_settings(args: argparse.Namespace, ticket_folder: str | os.PathLike, arch: str, dataset: str) -> PoolSettings:
    """The settings that identify this run's records."""
    return PoolSettings(method=args.interpolate_method, search_num=args.search_num,
                        coefficients=tuple(args.interpolation_value_list), ema_value=args.EMA_value,
                        prune_mode=args.prune_mode, bn_batches=args.bn_batches, bn_batch_size=args.bn_batch_size,
                        seed=args.seed, arch=arch, dataset=dataset, ticket_folder=str(Path(ticket_folder).resolve()))


def build_evaluator(model: nn.Module, data: DataSplits, device: torch.device, batch_size: int, bn_batches: int,
                    seed: int) -> PoolEvaluator:
    """Validation/test batches and BN batches held on the device when they fit, reused by every trial.

    ``bn_batches`` > 0: the same fixed, seeded batches for every trial (fast mode). 0: a full pass over the
    training split whose shuffle and augmentation are drawn afresh for each trial from ``seed`` and the trial.
    """
    train, val, test = (resident_split(s, device) for s in (data.train, data.val, data.test))
    bn_source = BatchSource(train, batch_size, device, data.spec, shuffle=True, augment=True, seed=seed)
    if bn_batches > 0:
        return PoolEvaluator(model, fixed_batches(bn_source, bn_batches), BatchSource(val, 500, device),
                             BatchSource(test, 500, device), device)
    return PoolEvaluator(model, bn_source, BatchSource(val, 500, device), BatchSource(test, 500, device), device,
                         fresh_bn_seed=seed)


def recorded_settings(args: argparse.Namespace) -> dict:
    """The flags worth storing with a result (plain values only)."""
    return {k: v for k, v in vars(args).items()
            if not k.startswith("_") and isinstance(v, (int, float, str, list, type(None), bool))}


def run_pool_job(args: argparse.Namespace, store: TicketStore, evaluator: PoolEvaluator, results: PoolResultsFile,
                 settings: PoolSettings, title: str, share: Share = Share(), writer: bool = True,
                 sync: Callable[[], None] = lambda: None, progress_bar: bool = False,
                 ood: OODBenchmark | None = None) -> PoolResultsFile:
    """Evaluate the tickets, run the chosen method over this process's targets, and record every result.

    ``results`` was read before any work: the records already there with the same settings are skipped
    (unless ``--overwrite``, or the ticket folder now gives a target other candidate rounds). Each finished
    target is committed at once by the process that made it (``writer``). Several processes either share the
    targets (``share``: target-parallel) or all run every target together with only rank 0 writing
    (data-parallel: ``share`` is one process, ``writer`` rank 0 only).
    ``sync`` is a barrier across processes. Rank 0 finally writes the plots and prints the table.
    """
    main = share.is_main and writer
    say = log if main else quiet
    done = [] if args.overwrite else list(results.records)
    done_linear = [] if args.overwrite else list(results.linear)
    sync()  # every process has read the same file before anyone adds to it
    extra = None if ood is None else (lambda weights: ood.evaluate_weights(evaluator.model, weights, evaluator.device))
    rounds = [t.round for t in store.tickets]
    tickets = stored_tickets(done, rounds, settings.ticket_fields()) if ood is None else None
    if tickets is None:
        tickets = evaluate_tickets(store, evaluator, settings.ticket_fields(), progress_bar and main, extra)
    else:
        say("tickets: their records are already in the results (--overwrite evaluates them again)")
    if main:
        results.commit(tickets.values(), run=_provenance(args))
    say("tickets: " + "  ".join(f"{r}:{100 * t['density']:.1f}%/{t['test_acc']:.2f}" for r, t in tickets.items()))
    target_log = log if writer else quiet  # every target-parallel process reports its own targets
    if args.interpolate_method == "liner_inter":
        fields = {**settings.identity(), **settings.bn_fields()}
        run_linear_paths(store, evaluator, fields, results if writer else None, done_linear, share,
                         progress_bar and main, target_log)
    else:
        pooled_dir = results.save_dir if args.save_pooled and writer else None
        run_pool_method(settings, store, evaluator, tickets, args.targets, results if writer else None, done,
                        pooled_dir, share, target_log, progress_bar and main, extra,
                        getattr(args, "stacked_coefficients", False))
    sync()  # all targets are in the file
    if main:
        summarise(results, title, ood)
    return results


def _provenance(args: argparse.Namespace) -> dict:
    from ..core.records import provenance

    # the data's name, normalisation, folder and fingerprint, when the command set them (lottery_pools.main)
    return provenance(**{**recorded_settings(args), **getattr(args, "data_provenance", {})})


def summarise(results: PoolResultsFile, title: str, ood: OODBenchmark | None = None) -> None:
    """Plots of the whole folder (every run so far) and the comparison table on the console."""
    from ..analysis.plots import plot_pool_results  # matplotlib only once there is something to draw

    results.reload()
    plot_pool_results(results, title)
    log(results.comparison_table())
    if ood is not None:
        log("out-of-distribution accuracy:\n" + ood_table(
            {f"{r['method']} {r['target_round']}": r for r in results.records if "ood" in r}, ood.corruptions))
    log(f"results: {results.json_path} (+ .csv, pools_accuracy.png"
        f"{', linear_interpolation.png' if results.linear else ''})")
