"""The ``analyze_tickets.py`` subcommands: ood, ensemble, disagreement, pairwise. Each writes JSON and a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config.names import describe
from ..analysis.ensembles import disagreement_study, ensemble_study, pairwise_average_matrix
from ..formats.original import ticket_files
from .setup import load_data, model_factory, setup_device
from ..data.datasets import BatchSource, dataset_spec
from ..core.errors import UserError
from ..analysis.ood import ood_table, open_benchmark
from .pools import build_evaluator, recorded_settings
from ..core.console import log, progress_wanted
from ..analysis.plots import plot_ensemble, plot_heat_map
from ..core.records import format_table, provenance, write_json
from ..pools.store import TicketStore


def _stores(args: argparse.Namespace):
    """The model, the ticket store (and the pooled one with ``--pooled``) and the device."""
    factory = model_factory(args)
    device = setup_device(args)
    model = factory()
    what = f"--arch {args.arch} on {args.dataset}"
    store = TicketStore(ticket_files(args.checkpoint), model.state_dict(), what)
    pooled_dir = getattr(args, "pooled", None)
    pooled = TicketStore(ticket_files(pooled_dir, allow_gaps=True), model.state_dict(), what) if pooled_dir else None
    return model, store, pooled, device


def run_ood(args: argparse.Namespace, save_dir: Path) -> dict:
    spec = dataset_spec(args.dataset)
    benchmark = open_benchmark(args.ood_data, args.corruptions, args.severities, spec.channels, spec.image_size)
    model, store, pooled, device = _stores(args)
    rows = {}
    for label, source in (("ticket", store), ("pooled", pooled)):
        for ticket in source.tickets if source is not None else []:
            row = benchmark.evaluate_weights(model, source.load(ticket.round)[0], device)
            name = f"{label}, round {ticket.round} ({100 * ticket.density:.1f}%)"
            rows[name] = {"kind": label, "round": ticket.round, "density": ticket.density, **row}
    log(ood_table(rows, benchmark.corruptions))
    names = list(rows)
    plot_heat_map([[rows[n]["ood"][c]["mean"] for c in benchmark.corruptions] + [rows[n]["ood_acc"]] for n in names],
                  names, f"{describe(args.arch, args.dataset)}, corrupted ({Path(args.ood_data).name}): accuracy (%), severities "
                  f"{' '.join(map(str, benchmark.severities))}", "accuracy (%)", save_dir / "ood_accuracy.png",
                  column_labels=[*benchmark.corruptions, "mean"])
    result = {"ood_data": str(args.ood_data), "corruptions": benchmark.corruptions,
              "severities": benchmark.severities, "networks": list(rows.values())}
    write_json(save_dir / "ood_results.json", {**result, "run": provenance(**recorded_settings(args))})
    return result


def run_ensemble(args: argparse.Namespace, save_dir: Path) -> list[dict]:
    if args.k < 1:
        raise UserError(f"--k {args.k} must be at least 1 (the number of tickets joining the target)")
    model, store, pooled, device = _stores(args)
    data = load_data(args)
    test = BatchSource(data.test, 500, device)
    records = ensemble_study(store, model, test, device, args.k, args.targets, pooled)
    rows = [{"round": r["target_round"], "density%": 100 * r["density"], "members": r["members"],
             **{f"{kind}_{m}": r[kind][m] for kind in ("ticket", "ensemble", "pooled") if kind in r
                for m in ("accuracy", "nll", "ece")}} for r in records]
    log(format_table(rows, list(dict.fromkeys(k for row in rows for k in row)), digits=3))
    plot_ensemble(records, f"{describe(args.arch, args.dataset)}: output ensemble of {args.k + 1} tickets",
                  save_dir / "ensemble.png")
    write_json(save_dir / "ensemble_results.json", {"k": args.k, "records": records,
                                                     "run": provenance(**recorded_settings(args))})
    return records


def run_disagreement(args: argparse.Namespace, save_dir: Path) -> dict:
    model, store, _, device = _stores(args)
    data = load_data(args)
    result = disagreement_study(store, model, BatchSource(data.test, 500, device), device)
    log(format_table(result["tickets"], ["round", "density", "accuracy", "nll", "ece", "brier"], digits=4))
    labels = [f"{t['round']} ({100 * t['density']:.0f}%)" for t in result["tickets"]]
    plot_heat_map(result["disagreement"], labels, f"{describe(args.arch, args.dataset)}: prediction disagreement",
                  "fraction of test examples", save_dir / "disagreement.png", digits=3)
    write_json(save_dir / "disagreement.json", {**result, "run": provenance(**recorded_settings(args))})
    return result


def run_pairwise(args: argparse.Namespace, save_dir: Path) -> dict:
    model, store, _, device = _stores(args)
    data = load_data(args)
    evaluator = build_evaluator(model, data, device, args.bn_batch_size, args.bn_batches, args.seed)
    result = pairwise_average_matrix(store, evaluator, progress=progress_wanted())
    labels = [f"{r} ({100 * d:.0f}%)" for r, d in zip(result["rounds"], result["densities"])]
    log(format_table([{"round": label, **dict(zip(map(str, result["rounds"]), row))}
                      for label, row in zip(labels, result["test_acc"])], ["round", *map(str, result["rounds"])]))
    plot_heat_map(result["test_acc"], labels, f"{describe(args.arch, args.dataset)}: test accuracy of pair averages "
                  "(sparser parent's density, BN recomputed)", "test accuracy (%)", save_dir / "pairwise_average.png")
    write_json(save_dir / "pairwise_average.json", {**result, "run": provenance(**recorded_settings(args))})
    return result


COMMANDS = {"ood": run_ood, "ensemble": run_ensemble, "disagreement": run_disagreement, "pairwise": run_pairwise}
OUTPUTS = {"ood": "ood_results.json, ood_accuracy.png", "ensemble": "ensemble_results.json, ensemble.png",
           "disagreement": "disagreement.json, disagreement.png", "pairwise": "pairwise_average.json, pairwise_average.png"}


def run_command(args: argparse.Namespace) -> object:
    """Run the chosen subcommand and write its files into ``--save_dir`` (default the ticket folder)."""
    save_dir = Path(args.save_dir or args.checkpoint)
    save_dir.mkdir(parents=True, exist_ok=True)
    result = COMMANDS[args.command](args, save_dir)
    log(f"results: {save_dir} ({OUTPUTS[args.command]})")
    return result
