"""Lottery_pools.py as a long job: resumable after a kill, shared folders, several processes, bad input."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import load_script_main
from helpers import REPO
from lotterypools.pools import results as pool_results
from lotterypools.pools.run import PoolSearch, PoolSettings, evaluate_tickets, run_pool_method
from lotterypools.cli.pools import build_evaluator
from lotterypools.pools.results import PoolResultsFile
from helpers import make_store, tiny_data, tiny_model

SCRIPT = REPO / "CIFAR" / "Lottery_pools.py"


def pool_args(cli_run: Path, out: Path, *extra: str) -> list[str]:
    """A quick search over the cli_run tickets (2 rounds) of conv2 on tiny Fashion-MNIST files."""
    return ["--checkpoint", str(cli_run), "--save_dir", str(out), "--arch", "conv2", "--dataset", "fashionmnist",
            "--data", str(cli_run.parent / "data"), "--no_download", "--device", "cpu", "--seed", "5",
            "--search_num", "2", "--interpolation_value_list", "0.3", "0.7", "--bn_batches", "2", "--batch_size", "64",
            *extra]


def records_of(folder: Path) -> list[dict]:
    """The stored records without their timings, in a fixed order."""
    records = json.loads((folder / "pools_results.json").read_text())["records"]
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records),
                  key=lambda r: (r["method"], r["target_round"], json.dumps(r, sort_keys=True)))


def script_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_main(capsys, args: list[str]) -> tuple[int, str, str]:
    """``main`` of CIFAR/Lottery_pools.py in this process: exit code, stdout, stderr."""
    code = 0
    try:
        load_script_main("Lottery_pools.py")(args)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- resume after a kill
@pytest.mark.slow
def test_killed_run_resumes_with_only_the_missing_targets_and_equals_an_uninterrupted_run(cli_run, tmp_path, capsys,
                                                                                          monkeypatch):
    code, out, _ = run_main(capsys, pool_args(cli_run, tmp_path / "whole"))
    assert code == 0
    assert "\r" not in out  # not a terminal: plain lines, no progress bars
    assert sum("Lottery_pools round" in line and "density" in line for line in out.splitlines()) == 2

    calls = []
    original_run = PoolSearch.run

    def killed_in_second_target(self, rule, target, *args, **kwargs):
        calls.append(target.round)
        if len(calls) == 2:  # the first target's record is on disk by now
            raise KeyboardInterrupt
        return original_run(self, rule, target, *args, **kwargs)

    monkeypatch.setattr(PoolSearch, "run", killed_in_second_target)
    code, _, err = run_main(capsys, pool_args(cli_run, tmp_path / "killed"))
    assert code == 130 and "--resume" not in err and "rerun the same command" in err
    saved = [r for r in records_of(tmp_path / "killed") if r["method"] == "Lottery_pools"]
    assert [r["target_round"] for r in saved] == [0]

    monkeypatch.setattr(PoolSearch, "run", original_run)
    ran = []
    monkeypatch.setattr(PoolSearch, "run", lambda self, rule, target, *a, **k: ran.append(target.round) or
                        original_run(self, rule, target, *a, **k))
    code, out, _ = run_main(capsys, pool_args(cli_run, tmp_path / "killed"))
    assert code == 0 and ran == [1]
    assert "skipped rounds 0" in out and "their records are already in the results" in out
    assert records_of(tmp_path / "killed") == records_of(tmp_path / "whole")

    ran.clear()  # a third run has nothing left; --overwrite recomputes everything
    assert run_main(capsys, pool_args(cli_run, tmp_path / "killed"))[0] == 0 and ran == []
    assert run_main(capsys, pool_args(cli_run, tmp_path / "killed", "--overwrite"))[0] == 0 and ran == [0, 1]
    assert records_of(tmp_path / "killed") == records_of(tmp_path / "whole")


# ----------------------------------------------------------------------------- shared folders
@pytest.mark.slow
def test_two_runs_started_together_in_one_folder_keep_both_methods(cli_run, tmp_path):
    out = tmp_path / "shared"
    processes = [subprocess.Popen([sys.executable, str(SCRIPT), *pool_args(cli_run, out, "--interpolate_method", m)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())
                 for m in ("interpolate_swa", "interpolate_ema")]
    for process in processes:
        _, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-2000:]
    records = records_of(out)
    assert sorted((r["method"], r["target_round"]) for r in records if r["method"] != "ticket") == [
        ("interpolate_ema", 0), ("interpolate_ema", 1), ("interpolate_swa", 0), ("interpolate_swa", 1)]
    assert len(json.loads((out / "pools_results.json").read_text())["runs"]) == 2
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_concurrent_commits_under_the_lock_lose_nothing(tmp_path):
    code = ("import sys; from lotterypools.pools.results import PoolResultsFile\n"
            "f = PoolResultsFile(sys.argv[1])\n"
            "for i in range(25):\n"
            "    f.commit([{'method': sys.argv[2], 'target_round': i, 'density': 1.0, 'test_acc': float(i)}])\n")
    processes = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name], env=script_env())
                 for name in ("a", "b", "c")]
    assert all(p.wait(timeout=120) == 0 for p in processes)
    assert len(PoolResultsFile(tmp_path).records) == 75


def test_records_of_other_settings_coexist_and_name_themselves(tmp_path):
    store = make_store(tmp_path / "tickets", 3)
    evaluator = build_evaluator(tiny_model(), tiny_data(), torch.device("cpu"), 16, 2, 0)
    tickets = evaluate_tickets(store, evaluator)
    results = PoolResultsFile(tmp_path / "out")
    for search_num in (2, 3):
        settings = PoolSettings("Lottery_pools", search_num, (0.3, 0.7), 0.95, bn_batches=2, bn_batch_size=16,
                                arch="conv2", dataset="tiny", ticket_folder="t")
        run_pool_method(settings, store, evaluator, tickets, results=results, log=lambda m: None)
    stored = PoolResultsFile(tmp_path / "out").records
    assert sorted(r["search_num"] for r in stored) == [2, 2, 2, 3, 3, 3]
    assert {r["bn_mode"] for r in stored} == {"fixed"} and {r["bn_batches"] for r in stored} == {2}
    table = PoolResultsFile(tmp_path / "out").comparison_table()
    assert "search_num=2" in table and "search_num=3" in table


# ----------------------------------------------------------------------------- several processes
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_give_the_same_records_as_one(cli_run, tmp_path, capsys):
    # a full BN pass with fresh augmentation per trial: the draws depend on the trial, not on the process
    full_bn = ["--bn_batches", "0"]
    assert run_main(capsys, pool_args(cli_run, tmp_path / "one", *full_bn))[0] == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), str(SCRIPT), *pool_args(cli_run, tmp_path / "two", *full_bn)],
                         capture_output=True, text=True, env=script_env(), timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "x 2 processes (gloo)" in two.stdout
    assert records_of(tmp_path / "one") == records_of(tmp_path / "two")


# ----------------------------------------------------------------------------- bad input
def assert_one_line(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
def test_targets_naming_a_missing_round(cli_run, tmp_path, capsys):
    code, _, err = run_main(capsys, pool_args(cli_run, tmp_path / "out", "--targets", "1", "7"))
    assert_one_line(code, err, "--targets 7", "holds no such round", "0-1")
    assert not (tmp_path / "out" / "pools_results.json").exists()


@pytest.mark.slow
def test_unwritable_results_folder_is_refused_before_any_work(cli_run, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setattr("lotterypools.cli.setup.load_data", lambda args: pytest.fail("data loaded before the check"))
    code, _, err = run_main(capsys, pool_args(cli_run, blocker / "results"))
    assert_one_line(code, err, "--save_dir", "a_file")
    code, _, err = run_main(capsys, pool_args(cli_run, blocker))
    assert_one_line(code, err, "--save_dir", "is an existing file")


@pytest.mark.slow
def test_negative_bn_batches(cli_run, tmp_path, capsys):
    code, _, err = run_main(capsys, pool_args(cli_run, tmp_path / "out", "--bn_batches", "-3"))
    assert_one_line(code, err, "--bn_batches -3")


@pytest.mark.slow
def test_full_disk_while_writing_keeps_the_earlier_records(cli_run, tmp_path, capsys, monkeypatch):
    writes = []
    real_write = pool_results.write_json

    def disk_fills_up(path, data):
        writes.append(path)
        if len(writes) == 3:  # tickets, first target, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(pool_results, "write_json", disk_fills_up)
    code, _, err = run_main(capsys, pool_args(cli_run, tmp_path / "out"))
    assert_one_line(code, err, "no space left on the device", "records written before are kept",
                    "rerun the same command")
    saved = [r for r in records_of(tmp_path / "out") if r["method"] == "Lottery_pools"]
    assert [r["target_round"] for r in saved] == [0]


# ----------------------------------------------------------------------------- layers
def test_the_search_masks_training_and_imp_import_no_plotting():
    code = ("import sys\nimport lotterypools.pools.search, lotterypools.tickets.imp, lotterypools.training.masks, lotterypools.training.loop\n"
            "import lotterypools.pools.run, lotterypools.cli.pools, lotterypools.analysis.aggregate, lotterypools.analysis.ensembles\n"
            "print(sorted(m for m in sys.modules if m.startswith('matplotlib')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=script_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_full_bn_pass_draws_fresh_augmentation_per_trial_reproducibly():
    evaluator = build_evaluator(tiny_model(), tiny_data(), torch.device("cpu"), 16, 0, seed=3)
    first = [images for images, _ in evaluator.bn_batches_for((1, 0, 0))]
    again = [images for images, _ in evaluator.bn_batches_for((1, 0, 0))]
    other = [images for images, _ in evaluator.bn_batches_for((1, 0, 1))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    fixed = build_evaluator(tiny_model(), tiny_data(), torch.device("cpu"), 16, 2, seed=3)
    assert fixed.bn_batches_for((1, 0, 0)) is fixed.bn_batches_for((2, 1, 0))
