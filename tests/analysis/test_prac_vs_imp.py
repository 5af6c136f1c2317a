"""benchmarks/prac_vs_imp.py compares one pool method on both sides, names it, and refuses folders whose methods differ."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO, script_env

SCRIPT = REPO / "benchmarks" / "prac_vs_imp.py"


def write_runs(root: Path, imp_methods: list[str], prac_methods: list[str]) -> list[str]:
    """IMP and PrAC run folders of 2 rounds and a pool folder over each holding ``*_methods``."""
    for name in ("imp", "prac"):
        (root / name).mkdir()
        (root / name / "summary.json").write_text(json.dumps(
            [{"round": k, "density": 0.8 ** k, "test_acc": 90.0 - k, "epochs": 3} for k in range(2)]))
    (root / "prac" / "prac_sets.json").write_text(json.dumps(
        [{"round": k, "trained": 1000 // (k + 1), "epochs": 3, "iterations": 24 // (k + 1)} for k in range(2)]))
    for name, methods, base in (("pools_imp", imp_methods, 91.0), ("pools_prac", prac_methods, 80.0)):
        (root / name).mkdir()
        records = [{"method": "ticket", "target_round": k, "test_acc": 0.0} for k in range(2)]
        records += [{"method": m, "target_round": k, "test_acc": base + i + k / 10} for i, m in enumerate(methods) for k in range(2)]
        (root / name / "pools_results.json").write_text(json.dumps({"records": records}))
    return ["--imp", str(root / "imp"), "--prac", str(root / "prac"), "--imp_pools", str(root / "pools_imp"),
            "--prac_pools", str(root / "pools_prac")]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=script_env(), timeout=120)


def test_pool_folders_of_different_methods_are_refused_in_one_line(tmp_path):
    args = write_runs(tmp_path, ["Lottery Pools (interpolation)"], ["Lottery Pools (average)"])
    result = run(*args, "--out", str(tmp_path / "out" / "table"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the pool folders hold different methods")
    assert "Lottery Pools (interpolation)" in lines[0] and "Lottery Pools (average)" in lines[0]
    assert not (tmp_path / "out").exists()
    named = run(*args, "--method", "Lottery Pools (average)")
    assert named.returncode == 2 and "--imp_pools holds no 'Lottery Pools (average)' results" in named.stderr


def test_the_same_method_is_compared_and_named_in_every_row(tmp_path):
    both = ["Lottery Pools (average)", "Lottery Pools (interpolation)"]
    args = write_runs(tmp_path, both, list(reversed(both)))
    assert run(*args).returncode == 2  # two methods and none named: which one is ambiguous
    result = run(*args, "--method", "Lottery Pools (interpolation)", "--out", str(tmp_path / "out" / "table"))
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert [r["pool_method"] for r in table] == ["Lottery Pools (interpolation)"] * 2
    # the interpolation records: IMP's is the 2nd method of its folder (91 + 1), PrAC's the 1st of its (80 + 0)
    assert [r["imp_lp_test_acc"] for r in table] == [92.0, 92.1] and [r["prac_lp_test_acc"] for r in table] == [80.0, 80.1]
    assert all("| Lottery Pools (interpolation) |" in line for line in result.stdout.splitlines()[2:4])
    assert (tmp_path / "out" / "table.png").is_file()
