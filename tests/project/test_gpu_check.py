"""benchmarks/gpu_check.py --smoke: the one-call GPU measurement runs every section on the CPU, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO, script_env


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section_and_prints_its_table_last(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), str(out), "--smoke"],
                            capture_output=True, text=True, env=script_env(), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    table = (out / "gpu_check.md").read_text()
    assert result.stdout.rstrip().endswith(table.rstrip())  # the table is printed last
    results = json.loads((out / "gpu_check.json").read_text())
    for name in ("matmul", "training", "pool trial", "end to end"):
        assert "error" not in results[name] and "skipped" not in results[name], (name, results[name])
    timed = [r for r in results["training"]["rows"] if "compile" not in r["variant"]]
    assert len(timed) == 10 and all(r["images/s"] > 0 and r["TFLOP/s"] > 0 for r in timed)
    trials = results["pool trial"]["rows"]
    assert [r["trial"].split(" (")[0].split(",")[0] for r in trials] == ["original", "ours", "ours", "ours --bn_batches 1",
                                                                         "ours --stacked_coefficients x3"]
    assert trials[-1]["max |acc diff| vs sequential"] < 1e-6
    assert results["pool trial"]["BN statistics equal to update_bn"] is True
    e2e = results["end to end"]
    assert e2e["same records"] is True and e2e["torchrun backend"] == "gloo" and e2e["ok"] is True
    sweep = results["projection"]
    assert sweep["trials"] == 19 * 18 * 11 and len(sweep["rows"]) == 5 and sweep["FLOP floor hours (bf16 matmul rate)"] > 0
