"""Seeds into a report: tables (Markdown, CSV, LaTeX), every number as JSON, and the two figures.

Shared by ``aggregate_results.py`` and the experiment command. Reference rows that are not pool methods
(the IMP output ensemble, with its inference cost) join the tables through :func:`add_reference`, Sparse Model
Soups through :func:`add_sms_rows` and FreeTickets EDST through :func:`add_edst_rows`. :func:`method_costs` gives
every row's training epochs and inference weights, for ``cost.md`` and the budget comparison (``budget.md``,
``budget.png``) at the densities SMS or EDST reach.

EDST's density counts every conv and linear weight (first conv and classifier included; ERK or ER decides only
how they are spread over the layers), the same set IMP prunes globally with ``--include_linear``. An EDST run
joins the row of the IMP round whose density equals the fraction of IMP's prunable weights its members' masks
keep, within :data:`DENSITY_TOLERANCE`; a run that matches none is named in ``cost.md`` and the log, not tabled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..analysis.aggregate import RunFolder, aggregate, csv_rows, gain_markdown, markdown_table, method_rank
from ..config.names import describe
from ..core.errors import UserError
from ..pools.results import METHOD_LABELS, method_label
from ..core.console import log
from ..core.records import atomic_write_text, write_csv, write_json
from .plan import EDST_RUN_NAME

ENSEMBLE_METHOD = "imp_ensemble"
SMS_PREFIX = "sms_"
EDST_METHOD, EDST_MEMBERS = "edst", "edst_members"
# relative: one geometric SMS phase and several IMP rounds differ by torch's rounding; an EDST --density given to
# 6 digits (0.262144 for 0.8^6) lands well inside it, 3 digits (0.069 for 0.8^12 = 0.0687) do not
DENSITY_TOLERANCE = 1e-3


def read_ensemble_accuracy(path: Path) -> tuple[int, dict[int, float]]:
    """``analyze_tickets.py ensemble``'s results: k and the ensemble's test accuracy per target round."""
    try:
        data = json.loads(path.read_text())
        return int(data["k"]), {int(r["target_round"]): float(r["ensemble"]["accuracy"]) for r in data["records"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not an ensemble results file ({error.__class__.__name__}: {error}): rerun "
                        f"analyze_tickets.py ensemble into its folder") from None


def add_reference(runs: Sequence[RunFolder], ensembles: Mapping[int, Path]) -> int | None:
    """Add the IMP output ensemble of each seed (``ensembles[seed]``) as a row; returns k (None if none)."""
    k = None
    for run in runs:
        if run.seed not in ensembles:
            continue
        k, accuracy = read_ensemble_accuracy(ensembles[run.seed])
        for round_index, value in accuracy.items():
            run.accuracy[ENSEMBLE_METHOD, round_index] = value
    if k is not None:
        METHOD_LABELS[ENSEMBLE_METHOD] = f"IMP output ensemble ({k + 1} tickets, {k + 1}× inference)"
    return k


def read_sms_run(folder: Path) -> tuple[dict, list[dict]]:
    """A main_SMS.py folder's SMS settings and ``summary.json`` records (phase order)."""
    try:
        settings = json.loads((folder / "settings.json").read_text())["sms"]
        records = json.loads((folder / "summary.json").read_text())
        return settings, sorted(records, key=lambda r: r["round"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{folder}: not a main_SMS.py run folder ({error.__class__.__name__}: {error}): rerun the "
                        f"experiment to continue it") from None


def sms_method_label(settings: Mapping) -> str:
    """``SMS (uniform soup of 3)``, or ``IMP, 3× retraining per phase`` for the baseline."""
    if settings.get("imp_budget"):
        return f"IMP without rewinding, {settings['candidates']}× retraining per phase"
    return f"SMS ({settings['soup']} soup of {settings['candidates']})"


def matching_round(density: float, densities: Mapping[int, float]) -> int | None:
    """The IMP round whose density equals ``density`` (up to torch's rounding of pruned counts), if any."""
    for round_index, value in densities.items():
        if abs(value - density) <= DENSITY_TOLERANCE * max(value, density):
            return round_index
    return None


def add_sms_rows(runs: Sequence[RunFolder], variants: Mapping[str, Mapping[int, Path]]) -> dict[str, dict[int, float]]:
    """Add each SMS variant's soups (``variants[label][seed]`` folders) as rows at the IMP densities they reach.

    Returns each variant's training epochs (from initialisation, the dense network's included) per IMP round it
    reaches, for :func:`write_cost_table`.
    """
    epochs: dict[str, dict[int, float]] = {}
    for label, folders in variants.items():
        method = SMS_PREFIX + label
        for run in runs:
            folder = folders.get(run.seed)
            if folder is None or not (folder / "summary.json").exists():
                continue
            settings, records = read_sms_run(folder)
            METHOD_LABELS[method] = sms_method_label(settings)
            dense_epochs = imp_epochs(run).get(0, 0.0)  # phase 0 is the seed's dense IMP ticket itself
            for phase, record in enumerate(records[1:], start=1):
                round_index = matching_round(record["density"], run.density)
                if round_index is not None:
                    run.accuracy[method, round_index] = record["test_acc"]
                    epochs.setdefault(method, {})[round_index] = dense_epochs + sum(r["epochs"] for r in records[1:phase + 1])
    return epochs


def imp_epochs(run: RunFolder) -> dict[int, float]:
    """Training epochs from initialisation to each IMP round's ticket (from the ticket folder's summary.json)."""
    try:
        records = json.loads((Path(run.ticket_folder or "") / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    total, out = 0, {}
    for record in sorted(records, key=lambda r: r["round"]):
        total += record.get("epochs", 0)
        out[record["round"]] = total
    return out


def held_weights(weights: Mapping, masks: Mapping) -> int:
    """Weights one network holds at inference: masked entries not counted, BN statistics are not weights."""
    return sum(int(masks[k].sum()) if k in masks else v.numel() for k, v in weights.items()
               if v.is_floating_point() and not k.endswith(("running_mean", "running_var")))


def nonzero_weights(folder: Path) -> dict[int, int]:
    """Weights a ticket holds at inference (:func:`held_weights`), per round."""
    from ..formats.original import read_ticket, ticket_files

    counts = {}
    for ticket in ticket_files(folder):
        counts[ticket.round] = held_weights(*read_ticket(ticket.path))
    return counts


def prunable_sizes(folder: Path) -> dict[str, int]:
    """The weights IMP prunes in a ticket folder (its masked tensors) and their sizes; empty without a pruned ticket."""
    from ..formats.original import read_ticket, ticket_files

    for ticket in ticket_files(folder):
        masks = read_ticket(ticket.path)[1]
        if masks:
            return {name: mask.numel() for name, mask in masks.items()}
    return {}


def kept_fraction(masks: Mapping, sizes: Mapping[str, int]) -> float:
    """The fraction of the weights ``sizes`` names (IMP's prunable ones) that ``masks`` keep (unmasked: all kept)."""
    return sum(int(masks[n].sum()) if n in masks else size for n, size in sizes.items()) / sum(sizes.values())


@dataclass
class EDSTResult:
    """One finished EDST run: its asked density, what its members keep of IMP's prunable weights, the IMP round
    that matches (None: none within the tolerance), its cost and its test accuracies."""

    seed: int
    density: float
    kept: float
    round: int | None
    members: int
    epochs: int
    member_weights: int
    ensemble: float
    member_mean: float
    folder: str


def read_edst_run(folder: Path, seed: int, density: float, sizes: Mapping[str, int]) -> EDSTResult | None:
    """An EDST folder's result (None until its training and its ``predict`` evaluation have finished)."""
    from ..analysis.freetickets import read_predict_results
    from ..formats.freetickets import read_history, read_ticket

    history = read_history(folder, EDST_RUN_NAME, missing_ok=True)
    predict = read_predict_results(folder, missing_ok=True)
    if history is None or predict is None:
        return None
    epochs = len(history["config"]["plan"]["lrs"])
    if len(history["history"]) < epochs:
        return None
    members = [read_ticket(folder / ticket["ticket"]) for ticket in history["tickets"]]
    kept = [kept_fraction(masks, sizes) for _, masks in members]
    return EDSTResult(seed, density, sum(kept) / len(kept), None, len(members), epochs, held_weights(*members[0]),
                      float(predict["ensemble"]["accuracy"]), float(predict["member_mean"]["accuracy"]["mean"]),
                      str(folder))


def add_edst_rows(runs: Sequence[RunFolder], folders: Mapping[float, Mapping[int, Path]]) -> list[EDSTResult]:
    """Add each finished EDST run (``folders[density][seed]``) at the IMP round it matches: the ensemble's test
    accuracy and its members' mean. Returns every finished run, matched or not (for the cost table and notes)."""
    results = []
    for run in runs:
        sizes = prunable_sizes(Path(run.ticket_folder)) if run.ticket_folder else {}
        for density, by_seed in folders.items():
            folder = by_seed.get(run.seed)
            result = read_edst_run(folder, run.seed, density, sizes) if folder is not None and sizes else None
            if result is None:
                continue
            result.round = matching_round(result.kept, run.density)
            results.append(result)
            if result.round is None:
                log(f"EDST {folder}: keeps {100 * result.kept:.4f}% of IMP's prunable weights, no IMP round of the "
                    f"report within {DENSITY_TOLERANCE:g} (relative): left out of the tables (see cost.md)")
                continue
            run.accuracy[EDST_METHOD, result.round] = result.ensemble
            run.accuracy[EDST_MEMBERS, result.round] = result.member_mean
            METHOD_LABELS[EDST_METHOD] = f"EDST ensemble ({result.members} tickets, {result.members}× inference)"
            METHOD_LABELS[EDST_MEMBERS] = f"EDST tickets (mean of {result.members})"
    return results


def ensemble_members(target: int, rounds: Sequence[int], k: int) -> list[int]:
    """The rounds of the IMP output ensemble of ``target``: the target and its ``k`` nearest tickets."""
    from ..pools.search import candidate_order

    return [target, *candidate_order(target, rounds, k + 1)]


def _edst_by_round(runs: Sequence[RunFolder], edst: Sequence[EDSTResult]) -> dict[int, EDSTResult]:
    """The matched EDST run at each IMP round, the first seed's where it has one (as the other cost columns)."""
    order = {run.seed: index for index, run in enumerate(runs)}
    by_round: dict[int, EDSTResult] = {}
    for result in sorted(edst, key=lambda r: order.get(r.seed, len(order))):
        if result.round is not None:
            by_round.setdefault(result.round, result)
    return by_round


def edst_notes(runs: Sequence[RunFolder], edst: Sequence[EDSTResult]) -> list[str]:
    """One line per EDST run: what its members keep of IMP's prunable weights and the IMP round it matched."""
    densities = {run.seed: run.density for run in runs}
    lines = []
    for r in sorted(edst, key=lambda r: (-r.density, r.seed)):
        head = (f"- EDST --density {r.density:g}, seed {r.seed}: its {r.members} tickets keep {100 * r.kept:.4f}% of "
                f"IMP's prunable weights")
        if r.round is not None:
            lines.append(f"{head}; IMP round {r.round} keeps {100 * densities[r.seed][r.round]:.4f}%: its row.")
            continue
        nearest = min(densities[r.seed].items(), key=lambda item: abs(item[1] - r.kept))
        lines.append(f"{head}; no IMP round of the report within {DENSITY_TOLERANCE:g} (relative), the nearest is "
                     f"round {nearest[0]} at {100 * nearest[1]:.4f}%: NOT in the tables (give --density as that "
                     f"round's 0.8^k to 6 digits).")
    return lines


@dataclass(frozen=True)
class Cost:
    """What one row's network cost: training epochs from initialisation, and weights evaluated at inference."""

    epochs: float | None
    weights: int | None


TICKET = "ticket"


def budget_methods(methods: Sequence[str]) -> list[str]:
    """The rows of the budget comparison, in order: the ticket, Lottery Pools (interpolation, average), the IMP
    output ensemble, every SMS variant, EDST; SWA and EMA stay in the main tables."""
    first = [m for m in (TICKET, "Lottery_pools", "Lottery_pools_average", ENSEMBLE_METHOD) if m in methods]
    return first + [m for m in methods if m.startswith(SMS_PREFIX)] + \
        [m for m in (EDST_MEMBERS, EDST_METHOD) if m in methods]


def method_costs(runs: Sequence[RunFolder], sms_epochs: Mapping[str, Mapping[int, float]], ensemble_k: int | None,
                 edst: Sequence[EDSTResult] = ()) -> dict[str, dict[int, Cost]]:
    """Each row's :class:`Cost` at each IMP round (the first seed's ticket folder, as every seed trains the same).

    A pool method keeps one network of the target's density but needs its candidates trained, so it costs the
    epochs of its sparsest candidate; the IMP output ensemble likewise, with its members' weights summed.
    """
    from ..pools.search import candidate_order

    imp = imp_epochs(runs[0])
    weights = nonzero_weights(Path(runs[0].ticket_folder)) if runs[0].ticket_folder else {}
    rounds = sorted(runs[0].density)

    def needing(target: int, members: Sequence[int]) -> float | None:
        return imp.get(max([target, *members]))

    costs: dict[str, dict[int, Cost]] = {TICKET: {r: Cost(imp.get(r), weights.get(r)) for r in rounds}}
    for method, settings in runs[0].settings.items():
        search_num = int(settings.get("search_num") or 1)
        costs[method] = {r: Cost(needing(r, candidate_order(r, rounds, search_num)), weights.get(r))
                         for r in rounds}
    if ensemble_k is not None:
        costs[ENSEMBLE_METHOD] = {}
        for r in rounds:
            members = ensemble_members(r, rounds, ensemble_k)
            held = sum(weights[m] for m in members) if all(m in weights for m in members) else None
            costs[ENSEMBLE_METHOD][r] = Cost(needing(r, members), held)
    for method, by_round in sms_epochs.items():  # a soup is pruned to the IMP round's count of weights
        costs[method] = {r: Cost(epochs, weights.get(r)) for r, epochs in by_round.items()}
    for r, result in _edst_by_round(runs, edst).items():  # one EDST run trains all its tickets
        costs.setdefault(EDST_METHOD, {})[r] = Cost(result.epochs, result.members * result.member_weights)
        costs.setdefault(EDST_MEMBERS, {})[r] = Cost(result.epochs, result.member_weights)
    return costs


def write_cost_table(runs: Sequence[RunFolder], costs: Mapping[str, Mapping[int, Cost]], out: Path,
                     edst: Sequence[EDSTResult] = ()) -> None:
    """``cost.md``/``cost.csv``: training epochs to each density and the weights evaluated at inference, per row;
    with EDST runs also the density each matched and ``edst.json`` (every EDST run's numbers)."""
    if not runs:
        return
    pools = [m for m in sorted(costs, key=method_rank) if m in runs[0].settings]
    columns, rows = ["round", "density"], []
    for method in [TICKET, *pools, *(m for m in budget_methods(list(costs)) if m not in pools and m != TICKET)]:
        columns.append(f"{method_label(method)}: epochs")
        if method == TICKET or any(cost.weights != costs[TICKET].get(r, Cost(None, None)).weights
                                   for r, cost in costs[method].items()):  # pool methods hold the ticket's weights
            columns.append(f"{method_label(method)}: weights")
    for round_index, density in sorted(runs[0].density.items()):
        row: dict = {"round": round_index, "density": round(density, 6)}
        for method in costs:
            cost = costs[method].get(round_index, Cost(None, None))
            row[f"{method_label(method)}: epochs"], row[f"{method_label(method)}: weights"] = cost.epochs, cost.weights
        rows.append({column: row[column] for column in columns})
    write_csv(out / "cost.csv", rows, columns)
    lines = ["Training epochs from initialisation to each network, and the weights evaluated at inference (nonzero "
             "weights, BN included). A pool method keeps one network of the target's density and costs the epochs "
             "of its sparsest candidate, which IMP trains anyway; an ensemble needs all its members trained.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row["round"]), f"{100 * row['density']:.2f}%"]
        cells += ["-" if row.get(c) is None else f"{row[c]:g}" for c in columns[2:]]
        lines.append("| " + " | ".join(cells) + " |")
    if edst:
        lines += ["", f"EDST runs, matched to IMP rounds by the fraction of IMP's prunable weights (with "
                      f"--include_linear every conv and linear weight, FreeTickets' density too) their tickets' masks "
                      f"keep, within {DENSITY_TOLERANCE:g} relative:", "", *edst_notes(runs, edst)]
        write_json(out / "edst.json", [asdict(result) for result in edst])
    atomic_write_text(out / "cost.md", "\n".join(lines) + "\n")


def budget_rows(summary: Mapping, costs: Mapping[str, Mapping[int, Cost]]) -> list[dict]:
    """The budget comparison: at every IMP round an SMS or EDST row reaches, each of :func:`budget_methods` with
    its test accuracy over the seeds, its paired gain over the ticket, its training epochs and inference weights."""
    trained = [m for m in costs if m.startswith(SMS_PREFIX) or m in (EDST_METHOD, EDST_MEMBERS)]
    rounds = sorted({r for m in trained for r in costs[m]})
    accuracy = {m: {c["round"]: c for c in cells} for m, cells in summary["test_acc"].items()}
    gain = {m: {c["round"]: c for c in cells} for m, cells in summary["gain_over_ticket"].items()}
    rows = []
    for round_index in rounds:
        for method in budget_methods(list(accuracy)):
            cell = accuracy.get(method, {}).get(round_index)
            if cell is None:
                continue
            paired = gain.get(method, {}).get(round_index, {})
            cost = costs.get(method, {}).get(round_index, Cost(None, None))
            rows.append({"round": round_index, "density": cell["density"], "method": method,
                         "label": method_label(method), "mean": cell["mean"], "std": cell["std"], "n": cell["n"],
                         "gain": paired.get("mean"), "ci_low": paired.get("ci_low"),
                         "ci_high": paired.get("ci_high"), "positive": paired.get("positive"),
                         "epochs": cost.epochs, "weights": cost.weights})
    return rows


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}".replace("-", "−")


def budget_markdown(rows: Sequence[Mapping], seeds: int) -> str:
    """One Markdown table per density of :func:`budget_rows`."""
    lines = ["Each row at the densities the trained alternatives reach: test accuracy (mean ± sample std over "
             "seeds), the paired gain over the same seed's ticket with its 95% t interval (and the seeds gaining), "
             "the training epochs from initialisation and the weights evaluated at inference."]
    for round_index in sorted({r["round"] for r in rows}):
        at = [r for r in rows if r["round"] == round_index]
        lines += ["", f"### density {100 * at[0]['density']:.2f}% (IMP round {round_index})", "",
                  "| row | test accuracy | gain over the ticket [95% CI] | training epochs | weights at inference |",
                  "|---|---|---|---|---|"]
        for r in at:
            seeds_note = f" ({r['n']} of {seeds} seeds)" if r["n"] < seeds else ""
            gain = "" if r["gain"] is None else (
                f"{_signed(r['gain'])}" + ("" if r["ci_low"] is None else
                                            f" [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]")
                + f" ({r['positive']}/{r['n']})")
            cells = [r["label"] + seeds_note, f"{r['mean']:.2f} ± {r['std']:.2f}", gain,
                     "-" if r["epochs"] is None else f"{r['epochs']:g}",
                     "-" if r["weights"] is None else f"{r['weights']:,}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_budget_comparison(summary: Mapping, costs: Mapping[str, Mapping[int, Cost]], out: Path,
                            title: str) -> None:
    """``budget.md``/``budget.csv``/``budget.png`` when SMS or EDST rows reach some densities (else nothing)."""
    from ..analysis.plots import plot_accuracy_vs_budget

    rows = budget_rows(summary, costs)
    if not rows:
        return
    write_csv(out / "budget.csv", rows, list(rows[0]))
    atomic_write_text(out / "budget.md", budget_markdown(rows, len(summary["seeds"])))
    plot_accuracy_vs_budget(rows, f"{title}: accuracy against training (mean ± std)", out / "budget.png")


def latex_table(table: Mapping[str, Sequence[Mapping]], digits: int = 2) -> str:
    """The accuracy table as a LaTeX ``tabular`` (booktabs): density rows, method columns, mean ± std."""
    methods = list(table)
    rows: dict[int, dict] = {}
    for method, cells in table.items():
        for cell in cells:
            row = rows.setdefault(cell["round"], {"density": cell["density"]})
            row[method] = f"{cell['mean']:.{digits}f} $\\pm$ {cell['std']:.{digits}f}"
    header = " & ".join(["density (\\%)", *(method_label(m).replace("×", "$\\times$") for m in methods)])
    lines = ["\\begin{tabular}{r" + "c" * len(methods) + "}", "\\toprule", header + " \\\\", "\\midrule"]
    for round_index in sorted(rows):
        row = rows[round_index]
        lines.append(" & ".join([f"{100 * row['density']:.2f}", *(row.get(m, "--") for m in methods)]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _sorted_tables(summary: dict) -> None:
    for key in ("test_acc", "gain_over_ticket"):
        summary[key] = {m: summary[key][m] for m in sorted(summary[key], key=method_rank)}


def write_report(runs: Sequence[RunFolder], out: Path, title: str | None = None, digits: int = 2,
                 test_size: int | None = None) -> dict:
    """Aggregate ``runs`` and write table/gain (.md/.csv/.tex), aggregate.json and the two figures into ``out``."""
    from ..analysis.plots import plot_gain_intervals, plot_mean_std_vs_density

    summary = aggregate(runs, test_size)
    _sorted_tables(summary)
    what = describe(summary["arch"], summary["dataset"])
    title = title or f"{what}, {len(runs)} seeds"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "aggregate.json", summary)
    for name, table, signed in (("table", summary["test_acc"], False), ("gain", summary["gain_over_ticket"], True)):
        columns, rows = csv_rows(table)
        write_csv(out / f"{name}.csv", rows, columns)
        atomic_write_text(out / f"{name}.tex", latex_table(table, digits))
    atomic_write_text(out / "table.md", markdown_table(summary["test_acc"], digits) + "\n")
    atomic_write_text(out / "gain.md", gain_markdown(summary, digits) + "\n")
    plot_mean_std_vs_density(summary["test_acc"], f"{title}: test accuracy (mean ± std)", "test accuracy (%)",
                             out / "accuracy_vs_density.png")
    plot_gain_intervals(summary["gain_over_ticket"], f"{title}: gain over the ticket (mean, 95% CI)",
                        out / "gain_vs_density.png")
    return summary
