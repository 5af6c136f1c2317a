"""Whole comparisons from one spec file: IMP per seed, pool methods per seed, the ensemble reference, Sparse Model
Soups variants, FreeTickets EDST, the report.

:mod:`.spec` reads the TOML spec, :mod:`.plan` turns it into the scripts' own command lines, :mod:`.runner` runs
them (resumably, several at once if asked) and :mod:`.report` writes the tables and figures over the seeds.
"""

from __future__ import annotations

from pathlib import Path

from ..core.console import log
from ..pools.results import JSON_NAME
from .plan import Job, edst_folder, ensemble_folder, groups, plan_jobs, pools_folder, sms_folder
from .spec import ExperimentSpec


def report_experiment(spec: ExperimentSpec) -> dict[str, dict]:
    """Write ``report/<group>/`` for every results group whose seeds have results; returns the summaries."""
    from ..analysis.aggregate import read_run_folder
    from .report import (add_edst_rows, add_reference, add_sms_rows, method_costs, write_budget_comparison,
                         write_cost_table, write_report)

    summaries = {}
    for group in groups(spec):
        folders = [pools_folder(spec, group, seed) for seed in spec.seeds]
        folders = [folder for folder in folders if (folder / JSON_NAME).exists()]
        if not folders:
            continue
        runs = [read_run_folder(folder) for folder in folders]
        first = group == groups(spec)[0]
        if spec.ensemble_k is not None and first:
            ensembles = {seed: ensemble_folder(spec, seed) / "ensemble_results.json" for seed in spec.seeds}
            add_reference(runs, {seed: path for seed, path in ensembles.items() if path.exists()})
        sms_epochs = add_sms_rows(runs, {v.label: {s: sms_folder(spec, v.label, s) for s in v.seeds} for v in spec.sms}) \
            if first else {}
        edst = add_edst_rows(runs, _edst_folders(spec)) if first else []
        out = spec.output / "report" / group
        summaries[group] = write_report(runs, out)
        if first:
            costs = method_costs(runs, sms_epochs, spec.ensemble_k, edst)
            write_cost_table(runs, costs, out, edst)
            write_budget_comparison(summaries[group], costs, out, spec.name)
        log(f"report {group}: {len(runs)} seeds -> {out} (table.md/.csv/.tex, gain.md/.csv/.tex, aggregate.json, "
            f"accuracy_vs_density.png, gain_vs_density.png{', cost.md/.csv' if first else ''}"
            f"{', budget.md/.csv/.png' if first and (out / 'budget.md').exists() else ''})")
    return summaries


def _edst_folders(spec: ExperimentSpec) -> dict[float, dict[int, Path]]:
    """Every EDST run folder of the spec: density -> seed -> folder (none without ``[edst]``)."""
    if spec.edst is None:
        return {}
    return {d: {s: edst_folder(spec, d, s) for s in spec.edst.seeds} for d in spec.edst.densities}


__all__ = ["ExperimentSpec", "Job", "plan_jobs", "report_experiment"]
