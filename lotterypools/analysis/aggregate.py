"""Seeds into tables: mean ± std of test accuracy per (method, density) over run folders of several seeds.

Each run folder holds the ``pools_results.json`` of one seed's tickets. Folders are combined only when
they agree on the architecture, the data set, the ticket source (IMP, PrAC, SMS, FreeTickets) and every
result-changing setting of every method; they must differ in their seed and pool different ticket folders
(two pool runs over one ticket folder are one set of tickets, not two seeds). Every results file is checked
for its shape and fields before anything is computed; ``only`` picks one method or settings group of a
folder that holds several. The standard deviation is the sample one (n - 1 in the denominator); a cell with one
seed has std 0 and says n = 1.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..core.errors import UserError
from ..core.records import read_json
from ..pools.results import JSON_NAME, SETTING_FIELDS, method_label
from .statistics import TEST_SIZES, gain_over_densities, paired_gain, sampling_error

METHOD_ORDER = ["ticket", "Lottery_pools", "Lottery_pools_average", "interpolate_swa", "interpolate_ema"]


def method_rank(method: str) -> tuple[int, str]:
    base = method.removesuffix("_prune_after")
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


@dataclass
class RunFolder:
    """One seed's records: test accuracy per (method, round), densities per round, and what identifies them."""

    path: Path
    arch: str
    dataset: str
    seed: int
    settings: dict[str, dict]  # method -> its result-changing settings
    ticket_folder: str | None = None
    source: str = "unknown"
    accuracy: dict[tuple[str, int], float] = field(default_factory=dict)
    density: dict[int, float] = field(default_factory=dict)


def _setting_text(settings: dict) -> str:
    return json.dumps({k: settings.get(k) for k in SETTING_FIELDS}, sort_keys=True)


# The fields every record needs, and their types (bool is refused where a number is meant).
RECORD_FIELDS = {"method": (str,), "target_round": (int,), "density": (int, float), "test_acc": (int, float),
                 "arch": (str,), "dataset": (str,), "seed": (int,)}


def _valid_records(file: Path, data: object) -> list[dict]:
    """The records of a results file, each checked for its fields and types; one line naming the file if not."""
    if not isinstance(data, dict) or not isinstance(data.get("records", []), list):
        raise UserError(f"{file} is not a pools results file (a JSON object with a 'records' list, it holds a "
                        f"{type(data).__name__}): give run folders written by Lottery_pools.py")
    records = data.get("records", [])
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(f"{file}: record {index} is a {type(record).__name__}, not an object: the file is damaged; "
                            f"rerun Lottery_pools.py into a fresh folder")
        for name, types in RECORD_FIELDS.items():
            value = record.get(name)
            if name not in record:
                raise UserError(f"{file}: record {index} has no '{name}' (written by an older version or edited): rerun "
                                f"Lottery_pools.py with --overwrite to rewrite it")
            if isinstance(value, bool) or not isinstance(value, types) or (
                    isinstance(value, float) and not math.isfinite(value)):
                raise UserError(f"{file}: record {index} ({record.get('method')}, round {record.get('target_round')}) "
                                f"has {name} = {json.dumps(value)}, not a {'number' if float in types else types[0].__name__}: "
                                f"rerun that target with Lottery_pools.py --overwrite")
    return records


def parse_only(items: Sequence[str]) -> dict[str, object]:
    """``--only FIELD=VALUE`` selections: ``method`` or a setting field, VALUE read as JSON where it parses."""
    chosen: dict[str, object] = {}
    for item in items:
        field_name, equals, text = item.partition("=")
        if not equals or field_name not in ("method", *SETTING_FIELDS):
            raise UserError(f"--only {item!r} must be FIELD=VALUE with FIELD one of method, {', '.join(SETTING_FIELDS)}")
        try:
            chosen[field_name] = json.loads(text)
        except json.JSONDecodeError:
            chosen[field_name] = text
    return chosen


def _matches(record: dict, only: dict[str, object]) -> bool:
    """Whether ``record`` is in the ``only`` selection (the ticket's own records are always kept: the baseline)."""
    if record["method"] == "ticket":
        return True
    return all(json.dumps(_plain(record.get(k))) == json.dumps(_plain(v)) for k, v in only.items())


def _plain(value: object) -> object:
    """Lists for tuples and floats for whole numbers, so ``1`` selects ``1.0`` and ``[0.5]`` a stored tuple."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def ticket_source(folder: str | None) -> str:
    """What made the tickets of ``folder``: IMP, PrAC, SMS or FreeTickets (``unknown`` if it cannot be told)."""
    if not folder or not Path(folder).is_dir():
        return "unknown"
    folder = Path(folder)
    from ..core.provenance import read_provenance

    scripts = [os.path.basename(str(run.get("command", "")).split(" ")[0]).lower()
               for run in (read_provenance(folder) or {}).get("runs", [])]
    for script in scripts:  # the training script that made the folder (provenance.json), by its name
        for marker, source in (("prac", "PrAC"), ("sms", "SMS"), ("dst", "FreeTickets"), ("main_pf", "FreeTickets"),
                               ("individual", "FreeTickets"), ("freetickets", "FreeTickets"), ("imp", "IMP")):
            if marker in script:
                return source
    if (folder / "prac_sets.json").exists():
        return "PrAC"
    if any(folder.glob("history_*.json")):
        return "FreeTickets"
    if (folder / "settings.json").exists() or (folder / "level_0").is_dir():
        return "IMP"
    return "unknown"


def read_run_folder(path: str | Path, only: dict[str, object] | None = None) -> RunFolder:
    """The records of ``path``/pools_results.json (or of that file itself), checked to be one run's.

    ``only`` (from :func:`parse_only`) keeps the records of one method or settings group.
    """
    path = Path(path)
    file = path if path.is_file() else path / JSON_NAME
    if not file.exists():
        raise UserError(f"{path} holds no {JSON_NAME}: give run folders written by Lottery_pools.py")
    records = _valid_records(file, read_json(file, default={}))
    if only:
        records = [r for r in records if _matches(r, only)]
    if not records or all(r["method"] == "ticket" for r in records) and only:
        raise UserError(f"{file} holds no records{' matching --only' if only else ''}: run Lottery_pools.py into "
                        f"{path} first{' or change --only' if only else ''}")
    identities = {(r["arch"], r["dataset"], r["seed"]) for r in records}
    if len(identities) > 1:
        raise UserError(f"{file} mixes runs of {sorted(map(str, identities))}: give one folder per seed and data set")
    folders = {r.get("ticket_folder") for r in records if r.get("ticket_folder")}
    if len(folders) > 1:
        raise UserError(f"{file} holds pool runs over several ticket folders ({', '.join(sorted(folders))}): give one "
                        f"folder per ticket folder")
    arch, dataset, seed = identities.pop()
    ticket_folder = folders.pop() if folders else None
    run = RunFolder(path, arch, dataset, seed, {}, ticket_folder, ticket_source(ticket_folder))
    for record in records:
        method = record["method"]
        if method != "ticket":
            text = _setting_text(record)
            known = run.settings.setdefault(method, json.loads(text))
            if _setting_text(known) != text:
                differ = [k for k in SETTING_FIELDS if known.get(k) != record.get(k)]
                raise UserError(f"{file} holds {method} with several settings (they differ in {', '.join(differ)}): "
                                f"choose one with --only {differ[0]}=VALUE (or --only method=NAME)")
        run.accuracy[method, record["target_round"]] = record["test_acc"]
        run.density[record["target_round"]] = record["density"]
    return run


def check_combinable(runs: Sequence[RunFolder]) -> None:
    """One-line errors for folders that are not seeds of one experiment."""
    first = runs[0]
    pooled: dict[str, RunFolder] = {}
    for run in runs:
        if run.ticket_folder is None:
            continue
        same = pooled.setdefault(run.ticket_folder, run)
        if same is not run:
            raise UserError(f"{same.path} and {run.path} pool the same tickets ({run.ticket_folder}; seeds {same.seed} "
                            f"and {run.seed} only label them): they are one seed, not two; aggregate pool runs over "
                            f"the tickets of different seeds")
    sources = {run.source for run in runs} - {"unknown"}
    if len(sources) > 1:
        a = next(r for r in runs if r.source in sources)
        b = next(r for r in runs if r.source in sources and r.source != a.source)
        raise UserError(f"{a.path} pools {a.source} tickets but {b.path} pools {b.source} tickets: aggregate runs over "
                        f"one ticket source only")
    for run in runs[1:]:
        if (run.arch, run.dataset) != (first.arch, first.dataset):
            raise UserError(f"{run.path} is {run.arch} on {run.dataset} but {first.path} is {first.arch} on "
                            f"{first.dataset}: aggregate folders of one architecture and data set only")
        for method in sorted(set(run.settings) & set(first.settings)):
            if _setting_text(run.settings[method]) != _setting_text(first.settings[method]):
                differ = [k for k in SETTING_FIELDS if run.settings[method].get(k) != first.settings[method].get(k)]
                raise UserError(f"{run.path} ran {method} with other settings than {first.path} (they differ in "
                                f"{', '.join(differ)}): aggregate folders of the same settings only")
        for round_index in set(run.density) & set(first.density):
            if not math.isclose(run.density[round_index], first.density[round_index], rel_tol=1e-6):
                raise UserError(f"round {round_index} has density {run.density[round_index]:.4f} in {run.path} but "
                                f"{first.density[round_index]:.4f} in {first.path}: not the same pruning schedule")
    seeds = [run.seed for run in runs]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"seed {repeated[0]} appears in more than one folder: give one run folder per seed")


def mean_std(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and count."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": list(values)}


def aggregate(runs: Sequence[RunFolder], test_size: int | None = None) -> dict:
    """Mean ± std per (method, round) of test accuracy, and the paired gain over the same seed's ticket.

    Gain cells carry the t interval and the count of seeds that gained (:func:`paired_statistics.paired_gain`);
    accuracy cells the sampling error of one accuracy on ``test_size`` test images (default: the data set's).
    """
    check_combinable(runs)
    test_size = test_size or TEST_SIZES.get(runs[0].dataset)
    methods = sorted({m for run in runs for m, _ in run.accuracy}, key=method_rank)
    rounds = sorted({r for run in runs for r in run.density})
    accuracy: dict[str, list[dict]] = {}
    gain: dict[str, list[dict]] = {}
    for method in methods:
        for round_index in rounds:
            present = [run for run in runs if (method, round_index) in run.accuracy]
            if not present:
                continue
            density = present[0].density[round_index]
            values = [run.accuracy[method, round_index] for run in present]
            cell = mean_std(values)
            cell["sampling_error"] = sampling_error(cell["mean"], test_size)
            accuracy.setdefault(method, []).append({"round": round_index, "density": density, **cell})
            paired = [run for run in present if ("ticket", round_index) in run.accuracy]
            if method != "ticket" and paired:
                diffs = [run.accuracy[method, round_index] - run.accuracy["ticket", round_index] for run in paired]
                gain.setdefault(method, []).append({"round": round_index, "density": density, **paired_gain(diffs),
                                                    "seeds": [run.seed for run in paired]})
    first = runs[0]
    return {"arch": first.arch, "dataset": first.dataset, "seeds": sorted(run.seed for run in runs),
            "folders": [str(run.path) for run in runs], "settings": first.settings, "std": "sample (n - 1)",
            "test_size": test_size, "confidence": 0.95, "test_acc": accuracy, "gain_over_ticket": gain,
            "gain_over_densities": _gain_over_densities(gain)}


def _gain_over_densities(gain: dict[str, list[dict]]) -> dict[str, dict]:
    """Per method: each seed's gain averaged over the densities it has, then the interval over seeds."""
    summary = {}
    for method, cells in gain.items():
        per_seed: dict[int, list[float]] = {}
        for cell in cells:
            for seed, value in zip(cell["seeds"], cell["values"]):
                per_seed.setdefault(seed, []).append(value)
        summary[method] = gain_over_densities(per_seed)
    return summary


def _signed(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _mean_std(cell: dict, digits: int, sign: str = "") -> str:
    """``mean ± std``; one seed has no spread, so its cell is the value alone."""
    mean = f"{cell['mean']:{sign}.{digits}f}"
    return mean if cell["n"] < 2 else f"{mean} ± {cell['std']:.{digits}f}"


def _seeds_note(seeds: list[int]) -> str:
    if seeds == [1]:
        return "\none seed: the cells are single values (run more seeds for mean ± std and intervals)"
    return f"\nmean ± sample std over n = {seeds[0]} seeds in every cell"


def gain_markdown(aggregated: dict, digits: int = 2) -> str:
    """One row per (density, method): mean ± std, the 95% t interval, seeds that gained, and the verdict."""
    gain = aggregated["gain_over_ticket"]
    lines = ["| round | density % | method | gain mean ± std | 95% CI | seeds gaining | verdict |",
             "|---|---|---|---|---|---|---|"]
    rows = sorted(((cell["round"], method, cell) for method, cells in gain.items() for cell in cells),
                  key=lambda item: (item[0], method_rank(item[1])))
    for round_index, method, cell in rows:
        lines.append(f"| {round_index} | {100 * cell['density']:.2f} | {method_label(method)} | "
                     f"{_mean_std(cell, digits, '+')} | [{_signed(cell['ci_low'], digits)}, {_signed(cell['ci_high'], digits)}] | "
                     f"{cell['positive']}/{cell['n']} | {cell['verdict']} |")
    for method, cell in sorted(aggregated["gain_over_densities"].items(), key=lambda item: method_rank(item[0])):
        lines.append(f"| all | mean | {method_label(method)} | {_mean_std(cell, digits, '+')} | "
                     f"[{_signed(cell['ci_low'], digits)}, {_signed(cell['ci_high'], digits)}] | "
                     f"{cell['positive']}/{cell['n']} | {cell['verdict']} |")
    errors = [c["sampling_error"] for c in aggregated["test_acc"].get("ticket", []) if c.get("sampling_error")]
    notes = ["\nGain = pooled − ticket test accuracy of the same seed, in points; 95% CI from Student's t over "
             "n seeds (n − 1 degrees of freedom); 'all' rows average each seed's gains over the densities first "
             "(densities share tickets, so they are not independent)."]
    if errors:
        notes.append(f"The sampling error of one ticket's test accuracy on {aggregated['test_size']:,} test images "
                     f"is {_span(min(errors), max(errors))} points (binomial standard error).")
    return "\n".join(lines + notes)


def _span(low: float, high: float) -> str:
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}"


def _cells(table: dict[str, list[dict]], digits: int, signed: bool) -> tuple[list[str], list[dict]]:
    """Rows (one per round, densest first) of ``mean ± std`` cells, one column per method."""
    methods = list(table)
    rows: dict[int, dict] = {}
    seeds = {cell["n"] for cells in table.values() for cell in cells}
    for method, cells in table.items():
        for cell in cells:
            row = rows.setdefault(cell["round"], {"round": cell["round"], "density": cell["density"]})
            text = _mean_std(cell, digits, "+" if signed else "")
            row[method] = text if len(seeds) == 1 else f"{text} (n={cell['n']})"
    return methods, [rows[k] for k in sorted(rows)]


def markdown_table(table: dict[str, list[dict]], digits: int = 2, signed: bool = False) -> str:
    """The paper's layout: density rows, method columns, ``mean ± std`` cells."""
    methods, rows = _cells(table, digits, signed)
    seeds = sorted({cell["n"] for cells in table.values() for cell in cells})
    lines = ["| round | density % | " + " | ".join(method_label(m) for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for row in rows:
        lines.append(f"| {row['round']} | {100 * row['density']:.2f} | "
                     + " | ".join(row.get(m, "–") for m in methods) + " |")
    if len(seeds) == 1:
        lines.append(_seeds_note(seeds))
    return "\n".join(lines)


def csv_rows(table: dict[str, list[dict]]) -> tuple[list[str], list[dict]]:
    """Wide CSV: one row per round, ``<method>_mean``, ``<method>_std``, ``<method>_n`` columns."""
    methods = list(table)
    rows: dict[int, dict] = {}
    for method, cells in table.items():
        for cell in cells:
            row = rows.setdefault(cell["round"], {"round": cell["round"], "density": cell["density"]})
            row.update({f"{method}_mean": cell["mean"], f"{method}_std": cell["std"], f"{method}_n": cell["n"]})
    columns = ["round", "density"] + [f"{m}_{k}" for m in methods for k in ("mean", "std", "n")]
    return columns, [rows[k] for k in sorted(rows)]
