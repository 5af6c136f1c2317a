"""CIFAR/aggregate_results.py: mean ± std over seeds in the paper's layout, and refused mismatched folders."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from lotterypools.cli.commands.aggregate_results import main
from lotterypools.pools.results import PoolResultsFile

DENSITIES = {0: 1.0, 1: 0.8}


def write_run(folder: Path, seed: int, accuracies: dict[tuple[str, int], float], arch: str = "conv4",
              coefficients: list[float] | None = None) -> Path:
    """A run folder with hand-written records (ticket and Lottery_pools) of one seed."""
    records = []
    for (method, round_index), accuracy in accuracies.items():
        pooled = method != "ticket"
        records.append({"method": method, "target_round": round_index, "density": DENSITIES[round_index],
                        "test_acc": accuracy, "val_acc": 0.0, "arch": arch, "dataset": "fashionmnist", "seed": seed,
                        "ticket_folder": str(folder), "coefficients": (coefficients or [0.5, 0.7]) if pooled else None,
                        "search_num": 4 if pooled else None, "bn_mode": "fixed" if pooled else None,
                        "bn_batches": 20 if pooled else None, "bn_batch_size": 128 if pooled else None,
                        "prune_mode": "during" if pooled else None, "ema_value": None})
    PoolResultsFile(folder).commit(records)
    return folder


def two_seeds(tmp_path: Path) -> list[Path]:
    return [write_run(tmp_path / "s41", 41, {("ticket", 0): 90.0, ("ticket", 1): 91.0,
                                             ("Lottery_pools", 0): 90.5, ("Lottery_pools", 1): 91.0}),
            write_run(tmp_path / "s42", 42, {("ticket", 0): 92.0, ("ticket", 1): 90.0,
                                             ("Lottery_pools", 0): 93.0, ("Lottery_pools", 1): 90.6})]


def test_mean_and_std_over_two_seeds_equal_the_hand_computed_ones(tmp_path, capsys):
    folders = two_seeds(tmp_path)
    main([*map(str, folders), "--out", str(tmp_path / "agg")])
    summary = json.loads((tmp_path / "agg" / "aggregate.json").read_text())
    assert summary["seeds"] == [41, 42]
    pooled = {c["round"]: c for c in summary["test_acc"]["Lottery_pools"]}
    assert pooled[0]["mean"] == pytest.approx(91.75) and pooled[0]["n"] == 2
    assert pooled[0]["std"] == pytest.approx(2.5 / 2 ** 0.5)  # |93.0 - 90.5| / sqrt(2): sample std of two values
    assert pooled[1]["mean"] == pytest.approx(90.8) and pooled[1]["std"] == pytest.approx(statistics.stdev([91.0, 90.6]))
    gain = {c["round"]: c for c in summary["gain_over_ticket"]["Lottery_pools"]}
    assert gain[0]["mean"] == pytest.approx(0.75) and gain[0]["std"] == pytest.approx(statistics.stdev([0.5, 1.0]))
    assert gain[1]["values"] == pytest.approx([0.0, 0.6])
    table = (tmp_path / "agg" / "table.md").read_text()
    assert "| round | density % | ticket (IMP) | Lottery Pools (interpolation) |" in table
    assert "| 0 | 100.00 | 91.00 ± 1.41 | 91.75 ± 1.77 |" in table and "n = 2 seeds" in table
    rows = list(csv.DictReader((tmp_path / "agg" / "table.csv").open()))
    assert float(rows[1]["Lottery_pools_mean"]) == pytest.approx(90.8) and rows[1]["Lottery_pools_n"] == "2"
    assert "+0.75 ± 0.35" in (tmp_path / "agg" / "gain.md").read_text()
    for name in ("accuracy_vs_density.png", "gain_vs_density.png"):
        assert (tmp_path / "agg" / name).stat().st_size > 10000


def test_one_seed_gives_single_values_not_a_zero_spread(tmp_path):
    folder = two_seeds(tmp_path)[0]
    main([str(folder), "--out", str(tmp_path / "agg")])
    table = (tmp_path / "agg" / "table.md").read_text()
    assert "| 0 | 100.00 | 90.00 | 90.50 |" in table and "one seed" in table and "±" not in table.split("\n")[2]
    gain = (tmp_path / "agg" / "gain.md").read_text()
    assert "| +0.50 | [–, –] |" in gain and "± 0.00" not in gain


@pytest.mark.parametrize("change, fragment", [
    (dict(arch="resnet20s"), "is resnet20s on fashionmnist but"),
    (dict(coefficients=[0.5]), "differ in coefficients"),
])
def test_mismatched_folders_are_refused_in_one_line(tmp_path, capsys, change, fragment):
    first = two_seeds(tmp_path)[0]
    other = write_run(tmp_path / "other", 43, {("ticket", 0): 90.0, ("Lottery_pools", 0): 91.0}, **change)
    with pytest.raises(SystemExit) as stop:
        main([str(first), str(other), "--out", str(tmp_path / "agg")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and fragment in err
    assert not (tmp_path / "agg").exists()


def test_the_same_seed_twice_is_refused(tmp_path, capsys):
    first = two_seeds(tmp_path)[0]
    copy = write_run(tmp_path / "copy", 41, {("ticket", 0): 90.0})
    with pytest.raises(SystemExit):
        main([str(first), str(copy), "--out", str(tmp_path / "agg")])
    assert "seed 41 appears in more than one folder" in capsys.readouterr().err
