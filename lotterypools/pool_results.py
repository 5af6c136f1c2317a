"""``pools_results.json`` / ``.csv`` and the plots made from them: later runs of other methods add to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .results import (format_table, plot_accuracy_vs_density, plot_linear_paths, provenance, read_json, write_csv,
                      write_json)

RECORD_COLUMNS = ["method", "target_round", "density", "lt_val_acc", "lt_test_acc", "val_acc", "test_acc",
                  "chosen_rounds", "alphas", "seconds"]
LINEAR_COLUMNS = ["round_a", "round_b", "loss_barrier", "acc_drop"]


class PoolResultsFile:
    """The results of every pool method run over one ticket folder, keyed by (method, target_round)."""

    def __init__(self, save_dir: str | Path):
        self.save_dir = Path(save_dir)
        self.json_path = self.save_dir / "pools_results.json"
        data = read_json(self.json_path, default={}) or {}
        self.records: list[dict] = data.get("records", [])
        self.linear: list[dict] = data.get("linear_paths", [])
        self.runs: list[dict] = data.get("runs", [])

    def add_records(self, records: Iterable[dict]) -> None:
        """Replace records with the same (method, target_round), keep all others."""
        new = list(records)
        keys = {(r["method"], r["target_round"]) for r in new}
        self.records = [r for r in self.records if (r["method"], r["target_round"]) not in keys] + new
        self.records.sort(key=lambda r: (r["method"] != "ticket", r["method"], r["target_round"]))

    def add_linear(self, paths: Iterable[dict]) -> None:
        new = list(paths)
        keys = {(p["round_a"], p["round_b"]) for p in new}
        self.linear = [p for p in self.linear if (p["round_a"], p["round_b"]) not in keys] + new
        self.linear.sort(key=lambda p: p["round_a"])

    def add_run(self, **settings: Any) -> None:
        self.runs.append(provenance(**settings))

    def write(self, title: str = "") -> None:
        """Write JSON, CSV and the plots atomically."""
        write_json(self.json_path, {"records": self.records, "linear_paths": self.linear, "runs": self.runs})
        ood = ["ood_acc"] if any("ood_acc" in r for r in self.records) else []
        write_csv(self.save_dir / "pools_results.csv", self.records, RECORD_COLUMNS + ood)
        if self.records:
            plot_accuracy_vs_density(self.series(), title, self.save_dir / "pools_accuracy.png")
        if self.linear:
            write_csv(self.save_dir / "linear_interpolation.csv", self.linear, LINEAR_COLUMNS)
            plot_linear_paths(self.linear, self.save_dir / "linear_interpolation.png")

    def series(self) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {}
        for record in self.records:
            out.setdefault(record["method"], []).append((record["density"], record["test_acc"]))
        return out

    def comparison_table(self) -> str:
        """Test accuracy per density: one column per method."""
        methods = sorted({r["method"] for r in self.records}, key=lambda m: (m != "ticket", m))
        rows: dict[int, dict] = {}
        for record in self.records:
            row = rows.setdefault(record["target_round"], {"round": record["target_round"],
                                                          "density%": 100 * record["density"]})
            row[record["method"]] = record["test_acc"]
        return format_table([rows[k] for k in sorted(rows)], ["round", "density%", *methods])
