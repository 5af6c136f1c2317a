"""Issue 17: divergence stops a run, one run per folder, the atomic writer, provenance, full disks, launcher, data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import CPU, command, tiny_imp_run
from lotterypools.formats import paths
from lotterypools.formats.original import load_file
from lotterypools.training.guards import DivergenceError, FiniteWatch, check_finite, check_ticket_density
from lotterypools.training.loop import TrainingHook

TINY = ["--model", "conv2", "--data", "fashionmnist", "--no_download", "--device", "cpu", "--batch-size", "25",
        "--test-batch-size", "500"]
SPARSE = ["--sparse", "--sparse-init", "ERK", "--update-frequency", "2", "--growth", "gradient", "--density", "0.3"]




def last_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), lines
    return lines[-1]


# ---------------------------------------------------------------------------------------------- 1. divergence
def test_the_watch_reports_the_first_non_finite_step_only_when_checked():
    watch = FiniteWatch(CPU, epoch=2, check_every=3)
    for step, loss in enumerate([1.0, float("nan"), 2.0, float("inf")]):
        watch.observe(torch.tensor(loss), 10 + step)
    assert not watch.due(0) and watch.due(2)
    with pytest.raises(DivergenceError, match=r"epoch 3, step 12;.*lower learning rate \(--lr\)"):
        watch.check()
    FiniteWatch(CPU, 0).check()  # nothing observed: nothing to report


def test_non_finite_weights_and_drifted_tickets_are_refused():
    check_finite({"a": torch.ones(3), "steps": torch.tensor(5)}, "weight")
    with pytest.raises(DivergenceError, match="weight b is not finite"):
        check_finite({"a": torch.ones(3), "b": torch.tensor([0.0, math.nan])}, "weight")
    masks = {"w": torch.tensor([True, True, False, False])}
    check_ticket_density(masks, 2, "t.pth")
    with pytest.raises(DivergenceError, match="t.pth would keep 2 of 4 weights .* the plan keeps 1"):
        check_ticket_density(masks, 1, "t.pth")


class PoisonAt(TrainingHook):
    """Makes the first weight NaN after the optimiser step ``step`` (a diverging learning rate, reproducibly)."""

    def __init__(self, step: int):
        self.step = step

    def after_step(self, step):
        if step.step == self.step:
            with torch.no_grad():
                next(step.model.parameters()).view(-1)[0] = float("nan")


def test_a_diverging_imp_round_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    folder = tmp_path / "run"
    run = tiny_imp_run(folder, epochs=3, milestones=[2])
    steps = 96 // 16
    run.hooks.append(PoisonAt(steps + 1))  # epoch 2's second step
    with pytest.raises(DivergenceError, match=r"the loss is not finite at epoch 2, step 9;") as error:
        run.run()
    assert "\n" not in str(error.value)
    saved = load_file(paths.round_checkpoint(folder, 0))
    assert saved["epoch"] == 1  # the diverged epoch 2 was never written
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert not paths.round_checkpoint(folder, 1).exists()


def test_dst_with_a_nan_learning_rate_is_refused_before_work(data_dir, tmp_path, capsys):
    save = tmp_path / "dst"
    with pytest.raises(SystemExit) as stop:
        command("main_dst")(["--data_dir", str(data_dir), *TINY, *SPARSE, "--epochs", "2", "--lr", "nan",
                             "--save_dir", str(save)])
    assert stop.value.code == 2
    assert last_error_line(capsys) == "error: --lr nan must be positive"
    assert not save.exists()


def test_dst_with_a_diverging_learning_rate_writes_no_ticket(data_dir, tmp_path, capsys):
    save = tmp_path / "dst"
    with pytest.raises(SystemExit) as stop:
        command("main_dst")(["--data_dir", str(data_dir), *TINY, *SPARSE, "--epochs", "2", "--lr", "1e30",
                             "--save_dir", str(save)])
    assert stop.value.code == 2
    line = last_error_line(capsys)
    assert "training diverged" in line and "--lr" in line
    assert not (save / "model.pth").exists() and not (save / "progress" / "dst.pth").exists()


def test_a_mask_update_refuses_non_finite_scores():
    from torch import nn

    from lotterypools.training.sparse import MaskedWeights, MaskUpdater, SparseConfig

    model = nn.Linear(4, 3)
    masks = {"weight": torch.rand(3, 4) > 0.5}
    updater = MaskUpdater(MaskedWeights(model, masks), SparseConfig(density=0.5, growth="random"), total_steps=10)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    updater.update(0.5, None, step=3, epoch=0)  # decided on the device: the update is not applied ...
    assert torch.equal(updater.weights.masks["weight"], masks["weight"])
    with pytest.raises(DivergenceError, match="mask-update scores .* are not finite at epoch 1, step 4"):
        updater.check()  # ... and refused at the end of the epoch, before anything is written
    with torch.no_grad():
        model.weight[0, 0] = 1.0
    updater.update(0.5, None, step=5, epoch=0)
    with pytest.raises(DivergenceError, match="step 4"):  # the first refusal is the one reported
        updater.check()


# ---------------------------------------------------------------------------------------------- 3. atomic writer
def test_two_writers_of_one_file_both_finish_and_the_file_is_whole(tmp_path):
    from lotterypools.core.files import atomic_output

    target = tmp_path / "shared.bin"
    first = atomic_output(target)
    stream = first.__enter__()
    stream.write(b"A" * 1000)
    with atomic_output(target) as second:  # starts while the first is half-written: must not touch its temporary
        second.write(b"B" * 500)
    assert target.read_bytes() == b"B" * 500
    stream.write(b"A" * 1000)
    first.__exit__(None, None, None)  # would raise FileNotFoundError had the second writer removed its temporary
    assert target.read_bytes() == b"A" * 2000
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from lotterypools.core.files import atomic_output

    target = tmp_path / "x.json"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)  # that process has exited
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".x.json.{dead_pid}-abcdefgh.tmp").write_text("stale")
        (tmp_path / f".x.json.{live.pid}-abcdefgh.tmp").write_text("live writer")
        (tmp_path / ".x.json.bak.old.tmp").write_text("another file's")
        (tmp_path / ".x.json.k2j4_9ab.tmp").write_text("legacy stale")
        with atomic_output(target) as stream:
            stream.write(b"{}")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([f".x.json.{live.pid}-abcdefgh.tmp", ".x.json.bak.old.tmp", "x.json"])
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_files_follow_the_umask(tmp_path, umask, mode):
    import os

    from lotterypools.formats.original import atomic_save
    from lotterypools.core.records import write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        atomic_save({"w": torch.ones(2)}, tmp_path / "b.pth")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.pth").stat().st_mode & 0o777 == mode


# ---------------------------------------------------------------------------------------------- 6. full disk
def _full_disk_after(monkeypatch, limit: int):
    """Every write through atomic_output fails with ENOSPC once ``limit`` bytes are written (a small full disk)."""
    import errno

    from lotterypools.core import files

    original = files._RecordingStream.write

    def write(self, data):
        written = getattr(self, "_written", 0) + len(data)
        self._written = written
        if written > limit:
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error
        return original(self, data)

    monkeypatch.setattr(files._RecordingStream, "write", write)


def test_a_full_disk_is_one_line_and_a_rerun_continues(tmp_path, monkeypatch):
    from lotterypools.formats.original import atomic_save
    from lotterypools.core.errors import UserError

    target = tmp_path / "model.pth"
    atomic_save({"w": torch.zeros(4)}, target)
    _full_disk_after(monkeypatch, 100)
    with pytest.raises(UserError) as error:  # torch.save reports the failed write as a RuntimeError: turned into this
        atomic_save({"w": torch.ones(10_000)}, target)
    message = str(error.value)
    assert "\n" not in message and str(target) in message and "bytes free" in message and "rerun" in message
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.zeros(4))  # the earlier file is kept
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    monkeypatch.undo()
    atomic_save({"w": torch.ones(10_000)}, target)
    assert torch.load(target, weights_only=True)["w"].sum() == 10_000


def test_a_full_disk_in_a_training_run_is_one_line(data_dir, tmp_path, monkeypatch, capsys):
    _full_disk_after(monkeypatch, 2000)
    save = tmp_path / "dst"
    args = ["--data_dir", str(data_dir), *TINY, *SPARSE, "--epochs", "1", "--save_dir", str(save)]
    with pytest.raises(SystemExit) as stop:
        command("main_dst")(args)
    assert stop.value.code == 2
    line = last_error_line(capsys)
    assert "could not write" in line and "bytes free" in line
    monkeypatch.undo()
    command("main_dst")(args)  # the rerun continues
    assert (save / "model.pth").is_file()


def test_a_plot_on_a_full_disk_is_one_line(capsys):
    import errno

    from lotterypools.core.errors import cli_entry

    @cli_entry
    def plotting():
        raise OSError(errno.ENOSPC, "No space left on device", "/x/plot.png")

    with pytest.raises(SystemExit):
        plotting()
    assert "could not write /x/plot.png: No space left on device" in last_error_line(capsys)


# ---------------------------------------------------------------------------------------------- 2. one run per folder
def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(data_dir, tmp_path, capsys):
    from lotterypools.core.runlock import hold_run_folder

    save = tmp_path / "edst"
    args = ["--data_dir", str(data_dir), *TINY, *SPARSE, "--epochs-explo", "1", "--model-num", "1", "--epochs", "2",
            "--save_dir", str(save)]
    with hold_run_folder(save, {"command": "main_EDST.py --seed 5", "pid": 4242}, name="edst"):
        (save / "model_0.pth").write_bytes(b"the first run's ticket")
        with pytest.raises(SystemExit) as stop:
            command("main_edst")([*args, "--seed", "6"])
        assert stop.value.code == 2
        line = last_error_line(capsys)
        assert f"{save} is in use by another run (PID {__import__('os').getpid()}" in line
        assert "main_EDST.py --seed 5" in line and "--save_dir" in line
        assert (save / "model_0.pth").read_bytes() == b"the first run's ticket"  # the first run is unharmed
    command("main_edst")([*args, "--seed", "6"])  # once the holder is gone, the folder is free
    assert torch.load(save / "model_0.pth", weights_only=True)["seed"] == 6


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    import signal
    import subprocess
    import sys

    from lotterypools.core.runlock import hold_run_folder, lock_paths

    folder = tmp_path / "run"
    script = ("import sys, time; from lotterypools.core.runlock import hold_run_folder\n"
              "with hold_run_folder(sys.argv[1], {'command': 'holder'}):\n"
              "    print('held', flush=True); time.sleep(60)\n")
    env = dict(__import__("os").environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    holder = subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        from lotterypools.core.errors import UserError

        with pytest.raises(UserError, match=f"PID {holder.pid} .*: holder"):
            with hold_run_folder(folder):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert lock_paths(folder)[1].exists()  # kill -9 left the holder file behind
        with hold_run_folder(folder, {"command": "taker"}):
            assert json.loads(lock_paths(folder)[1].read_text())["command"] == "taker"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_another_seed_into_a_finished_freetickets_folder_is_refused(data_dir, tmp_path, capsys):
    save = tmp_path / "dst"
    args = ["--data_dir", str(data_dir), *TINY, *SPARSE, "--epochs", "1", "--save_dir", str(save)]
    command("main_dst")([*args, "--seed", "5"])
    with pytest.raises(SystemExit):
        command("main_dst")([*args, "--seed", "6"])
    assert "holds a run with other settings (seed 5 -> 6)" in last_error_line(capsys)


# ---------------------------------------------------------------------------------------------- 4. provenance
def test_imp_run_folders_record_their_provenance(tmp_path):
    from helpers import make_tiny_run
    from lotterypools.core.provenance import read_provenance

    folder = make_tiny_run(tmp_path, pruning_times=1)
    record = read_provenance(folder)
    assert record["dataset"] == "tiny" and record["normalisation"] == {"mean": [0.3], "std": [0.3]}
    assert record["data_fingerprint"]["sizes"] == {"train": 96, "val": 32, "test": 32}
    assert len(record["data_fingerprint"]["labels_sha256"]) == 64
    run = record["runs"][-1]
    for key in ("command", "package_version", "commit", "torch", "torchvision", "device", "data_dir", "start", "end"):
        assert key in run, key
    assert run["status"] == "finished" and run["device"] == "cpu"


def test_a_run_folder_refuses_other_data(tmp_path):
    from helpers import tiny_config, tiny_model_factory, tiny_splits
    from lotterypools.core.errors import UserError
    from lotterypools.tickets.imp import IMPRun

    folder = tmp_path / "run"
    IMPRun(tiny_config(pruning_times=1), tiny_model_factory(), tiny_splits(), CPU, folder, progress=False).run()
    other = IMPRun(tiny_config(pruning_times=1), tiny_model_factory(), tiny_splits(seed=7), CPU, folder, progress=False)
    with pytest.raises(UserError, match="holds a run on another data"):
        other.run(resume=True)


def test_tickets_of_another_data_set_are_refused(tmp_path):
    from lotterypools.core.errors import UserError
    from lotterypools.core.provenance import check_tickets_match

    (tmp_path / "provenance.json").write_text(json.dumps({"dataset": "mnist", "normalisation":
                                                          {"mean": [0.1307], "std": [0.3081]}}))
    with pytest.raises(UserError, match="trained on mnist, not on fashionmnist"):
        check_tickets_match(tmp_path, "fashionmnist", "--dataset")
    with pytest.raises(UserError, match="normalisation"):
        check_tickets_match(tmp_path, "mnist", "--dataset", mean=(0.2860,), std=(0.3530,))
    check_tickets_match(tmp_path, "mnist", "--dataset", mean=(0.1307,), std=(0.3081,))
    (tmp_path / "old").mkdir()
    check_tickets_match(tmp_path / "old", "anything", "--dataset")  # folders without provenance still load
    with pytest.raises(UserError, match="trained on cifar10"):
        check_tickets_match(tmp_path / "old" / "t.pth", "mnist", "--dataset", ticket={"dataset": "cifar10"})


def test_every_ticket_reader_refuses_tickets_of_another_data_set(data_dir, tmp_path, capsys, cli_run):
    dense = tmp_path / "individual"
    command("main_individual")(["--data_dir", str(data_dir), *TINY, "--seed", "18", "--epochs", "1",
                                "--save_dir", str(dense)])
    readers = {
        "ensemble_freetickets": ["--dataset", "mnist", "--data_dir", str(data_dir), "--no_download", "--device", "cpu",
                                 "--model", "conv2", "--resume", str(dense)],
        "main_pf": ["--data_dir", str(data_dir), *TINY[:2], "--data", "mnist", *TINY[4:], "--sparse",
                    "--sparse-init", "pruning", "--density", "0.3", "--epochs", "1", "--pretrain", str(dense / "18.pt"),
                    "--save_dir", str(tmp_path / "pf")],
    }
    imp_readers = {  # the IMP run of the cli_run fixture is on fashionmnist
        "lottery_pools": ["--interpolate_method", "Lottery_pools", "--arch", "conv2", "--data", str(data_dir),
                          "--dataset", "mnist", "--inference", "--device", "cpu", "--checkpoint", str(cli_run),
                          "--save_dir", str(tmp_path / "pools")],
        "main_train": ["--data", str(data_dir), "--dataset", "mnist", "--arch", "conv2", "--device", "cpu",
                       "--mask_dir", str(cli_run / "1checkpoint.pth.tar"), "--random_init",
                       "--save_dir", str(tmp_path / "retrain")],
        "analyze_tickets": ["pairwise", "--dataset", "mnist", "--arch", "conv2", "--data", str(data_dir),
                            "--device", "cpu", "--checkpoint", str(cli_run), "--save_dir", str(tmp_path / "an")],
    }
    for name, args in {**readers, **imp_readers}.items():
        with pytest.raises(SystemExit) as stop:
            command(name)(args)
        assert stop.value.code == 2, name
        line = last_error_line(capsys)
        assert "trained on fashionmnist, not on mnist" in line, (name, line)
    assert not (tmp_path / "pf").exists() and not (tmp_path / "retrain").exists()


# ---------------------------------------------------------------------------------------------- 5. aggregation
def _pool_run(folder: Path, seed: int, ticket_folder: Path, **extra) -> Path:
    from lotterypools.pools.results import PoolResultsFile

    records = []
    for method, accuracy in (("ticket", 90.0 + seed % 7), ("Lottery_pools", 91.0 + seed % 5)):
        pooled = method != "ticket"
        records.append({"method": method, "target_round": 1, "density": 0.8, "test_acc": accuracy, "val_acc": 0.0,
                        "arch": "conv2", "dataset": "fashionmnist", "seed": seed,
                        "ticket_folder": str(ticket_folder.resolve()), "search_num": 4 if pooled else None,
                        "coefficients": [0.5] if pooled else None, **(extra if pooled else {})})
    PoolResultsFile(folder).commit(records)
    return folder


def _aggregate_error(capsys, *args) -> str:
    from lotterypools.cli.commands.aggregate_results import main

    with pytest.raises(SystemExit) as stop:
        main([*map(str, args)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_aggregation_refuses_two_pool_runs_over_one_ticket_folder(tmp_path, capsys):
    tickets = tmp_path / "imp_seed41"
    tickets.mkdir()
    a, b = _pool_run(tmp_path / "p41", 41, tickets), _pool_run(tmp_path / "p99", 99, tickets)
    line = _aggregate_error(capsys, a, b, "--out", tmp_path / "agg")
    assert f"{a} and {b} pool the same tickets" in line and "seeds 41 and 99" in line
    assert not (tmp_path / "agg").exists()


def test_aggregation_refuses_imp_and_prac_tickets_as_seeds(tmp_path, capsys):
    imp, prac = tmp_path / "imp", tmp_path / "prac"
    imp.mkdir(), prac.mkdir()
    (imp / "settings.json").write_text("{}")
    (prac / "settings.json").write_text("{}")
    (prac / "prac_sets.json").write_text("[]")
    a, b = _pool_run(tmp_path / "p41", 41, imp), _pool_run(tmp_path / "p43", 43, prac)
    line = _aggregate_error(capsys, a, b, "--out", tmp_path / "agg")
    assert f"{a} pools IMP tickets but {b} pools PrAC tickets" in line


@pytest.mark.parametrize("content, fragment", [
    ("[1, 2]", "is not a pools results file"),
    ('{"records": [{"method": "ticket", "target_round": 0, "density": 1.0, "test_acc": 90, "arch": "conv2", '
     '"seed": 1}]}', "record 0 has no 'dataset'"),
    ('{"records": [{"method": "ticket", "target_round": 0, "density": 1.0, "test_acc": null, "arch": "conv2", '
     '"dataset": "mnist", "seed": 1}]}', "has test_acc = null, not a number"),
    ('{"records": [3]}', "record 0 is a int"),
])
def test_every_results_file_is_validated_before_anything_is_computed(tmp_path, capsys, content, fragment):
    tickets = tmp_path / "t"
    tickets.mkdir()
    good = _pool_run(tmp_path / "good", 41, tickets)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pools_results.json").write_text(content)
    line = _aggregate_error(capsys, good, bad, "--out", tmp_path / "agg")
    assert str(bad / "pools_results.json") in line and fragment in line
    assert not (tmp_path / "agg").exists()


def test_digits_and_only_are_checked_and_only_picks_a_settings_group(tmp_path, capsys):
    from lotterypools.cli.commands.aggregate_results import main
    from lotterypools.pools.results import PoolResultsFile

    folders = []
    for seed in (41, 42):
        tickets = tmp_path / f"t{seed}"
        tickets.mkdir()
        folder = _pool_run(tmp_path / f"p{seed}", seed, tickets)
        other = [dict(r, search_num=8) for r in PoolResultsFile(folder).records if r["method"] != "ticket"]
        PoolResultsFile(folder).commit(other)  # a second settings group of Lottery_pools in the same folder
        folders.append(folder)
    assert "--digits -1 is outside [0, 10]" in _aggregate_error(capsys, *folders, "--out", tmp_path / "a", "--digits", "-1")
    assert "--only search_num=VALUE" in _aggregate_error(capsys, *folders, "--out", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    main([*map(str, folders), "--out", str(tmp_path / "a"), "--only", "search_num=8"])
    summary = json.loads((tmp_path / "a" / "aggregate.json").read_text())
    assert summary["settings"]["Lottery_pools"]["search_num"] == 8 and summary["seeds"] == [41, 42]


# ---------------------------------------------------------------------------------------------- 7. launcher
@pytest.mark.parametrize("port", ["70000", "-5", "0"])
def test_the_launcher_checks_the_port_range(tmp_path, capsys, port):
    from lotterypools.cli.commands.multiproc import main

    script = tmp_path / "s.py"
    script.write_text("")
    with pytest.raises(SystemExit) as stop:
        main(["--nproc_per_node", "2", "--master_port", port, str(script)])
    assert stop.value.code == 2
    assert f"--master_port {port} is outside [1, 65535]" in last_error_line(capsys)


def test_the_launcher_checks_the_process_count(tmp_path, capsys):
    from lotterypools.cli.commands.multiproc import main

    script = tmp_path / "s.py"
    script.write_text("")
    for count in ("0", "100000"):
        with pytest.raises(SystemExit):
            main(["--nproc_per_node", count, str(script)])
        assert f"--nproc_per_node {count} is outside [1, 1024]" in last_error_line(capsys)


def _env():
    import os

    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (waits for it a bounded while; a zombie counts as ended)."""
    import os
    import time

    for _ in range(600):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return not os.path.exists(f"/proc/{pid}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="parent-death signal: Linux only")
def test_workers_die_with_a_killed_launcher():
    import signal
    import subprocess
    import sys

    child = ("import os, time; from lotterypools.cli.commands.multiproc import die_with_parent; "
             "die_with_parent(os.getppid()); print(os.getpid(), flush=True); time.sleep(60)")
    parent = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', sys.argv[1]]); "
              "time.sleep(60)")
    launcher = subprocess.Popen([sys.executable, "-c", parent, child], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        worker = int(launcher.stdout.readline())
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        assert _gone(worker)
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout.close()


def _blocking_sigterm() -> None:
    """In a child before exec: block SIGTERM, as a CI runner that waits for its own signals may leave it."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])


def _start_launcher(tmp_path, sigterm_blocked: bool = False):
    """multiproc with two workers of a sleeping script; returns the launcher and the workers' PIDs once both run."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "worker.py"
    # a script with its own Ctrl-C handling, in place before it says it has started (no window for a traceback);
    # its line is one write: under PYTHONUNBUFFERED print writes its pieces apart, and two workers' pieces interleave
    script.write_text("import os, signal, sys, time\nsignal.signal(signal.SIGINT, lambda *_: sys.exit(130))\n"
                      "os.write(1, f'pid {os.getpid()}\\n'.encode())\ntime.sleep(120)\n")
    launcher = subprocess.Popen([sys.executable, "-m", "lotterypools.cli.commands.multiproc", "--nproc_per_node", "2",
                                 "--master_port", str(port), str(script)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env(),
                                preexec_fn=_blocking_sigterm if sigterm_blocked else None)
    workers = []
    for line in launcher.stdout:
        if "pid" in line:
            workers.append(int(line.split()[-1]))
        if len(workers) == 2:
            break
    return launcher, workers


def _close(launcher) -> None:
    launcher.kill()
    launcher.wait()
    launcher.stdout.close()
    launcher.stderr.close()


@pytest.mark.parametrize("signum, sigterm_blocked", [("SIGTERM", False), ("SIGINT", False), ("SIGTERM", True)])
def test_a_signalled_launcher_stops_its_workers_and_prints_one_line(tmp_path, signum, sigterm_blocked):
    import os
    import signal
    import time

    launcher, workers = _start_launcher(tmp_path, sigterm_blocked)
    try:
        assert len(workers) == 2 and launcher.poll() is None, (workers, launcher.returncode)
        status = [line for line in Path(f"/proc/{launcher.pid}/status").read_text().splitlines()
                  if line.startswith(("Sig", "Shd"))] if Path("/proc/self/status").exists() else []
        sent = time.monotonic()
        os.kill(launcher.pid, getattr(signal, signum))  # not Popen.send_signal, which skips a child it thinks ended
        launcher.wait(timeout=120)
        err = launcher.stderr.read().strip().splitlines()
        assert launcher.returncode == 128 + int(getattr(signal, signum)), (err, status, time.monotonic() - sent)
        assert err and err[-1].startswith(f"interrupted ({signum}): the launched processes were stopped")
        assert not any("Traceback" in line for line in err), err
        assert all(_gone(pid) for pid in workers)
    finally:
        _close(launcher)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="parent-death signal: Linux only")
def test_a_launcher_killed_with_sigkill_leaves_no_workers(tmp_path):
    import signal

    launcher, workers = _start_launcher(tmp_path)
    try:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=60)
        assert all(_gone(pid) for pid in workers)  # the agent gets its parent-death signal, then the workers
    finally:
        _close(launcher)


@pytest.mark.parametrize("ignored", [1, 1000])
def test_the_supervisor_repeats_a_missed_signal_then_kills(monkeypatch, ignored):
    import signal
    import subprocess
    import sys

    from lotterypools.cli.commands import multiproc

    monkeypatch.setattr(multiproc, "RESEND_S", 0.3)
    monkeypatch.setattr(multiproc, "KILL_AFTER_S", 3.0)
    # an agent that misses the first ``ignored`` SIGTERMs (as torchrun once did under load) and then exits 143
    agent = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time\nseen = []\n"
        f"signal.signal(signal.SIGTERM, lambda *_: seen.append(1) or (len(seen) > {ignored} and sys.exit(143)))\n"
        "print('ready', flush=True)\nwhile True: time.sleep(0.05)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout.readline().strip() == "ready"
        code = multiproc.supervise(agent, [signal.SIGTERM])
        assert code == (143 if ignored == 1 else -signal.SIGKILL)
    finally:
        agent.kill()
        agent.wait()
        agent.stdout.close()


def test_sigterm_ends_a_command_like_ctrl_c_with_its_line_and_exit_143(capsys):
    import os
    import signal
    import time

    from lotterypools.core import errors

    cleaned = []

    @errors.cli_entry(interrupted=errors.RERUN_CONTINUES)
    def command():
        assert signal.getsignal(signal.SIGTERM) is errors._raise_terminated  # else the kill below would end pytest
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            cleaned.append(True)  # cleanup (locks, temporaries) runs, as on Ctrl-C

    with pytest.raises(SystemExit) as stop:
        command()
    assert stop.value.code == 143 and cleaned
    assert capsys.readouterr().err.strip() == errors.RERUN_CONTINUES.replace("interrupted", "interrupted (SIGTERM)")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_sigterm_handler_someone_installed_is_left_alone():
    import signal

    from lotterypools.core.errors import sigterm_as_interrupt

    def own(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is own
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_launched_worker_keeps_the_default_sigterm(monkeypatch):
    import signal

    from lotterypools.core.errors import LAUNCHED_WORKER, sigterm_as_interrupt

    monkeypatch.setenv(LAUNCHED_WORKER, "1")  # as multiproc.py sets it: a worker must die at once, even in a C call
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_launched_worker_leaves_the_interrupted_line_to_its_launcher(monkeypatch, capsys):
    from lotterypools.core.errors import LAUNCHED_WORKER, RERUN_CONTINUES, cli_entry

    @cli_entry(interrupted=RERUN_CONTINUES)
    def command():
        raise KeyboardInterrupt  # the SIGINT torchrun passes on to each worker

    for worker in (False, True):
        if worker:
            monkeypatch.setenv(LAUNCHED_WORKER, "1")
        with pytest.raises(SystemExit) as stop:
            command()
        assert stop.value.code == 130
        assert capsys.readouterr().err.strip() == ("" if worker else RERUN_CONTINUES)


def test_a_training_stopped_by_sigterm_releases_its_folder_and_records_it(data_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from lotterypools.core.provenance import read_provenance
    from lotterypools.core.runlock import lock_paths

    save = tmp_path / "run"
    run = subprocess.Popen([sys.executable, "-m", "lotterypools.cli.commands.main_imp", "--data", str(data_dir),
                            "--dataset", "fashionmnist", "--arch", "conv2", "--epochs", "40", "--device", "cpu",
                            "--save_dir", str(save)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=_env(), preexec_fn=_blocking_sigterm)  # a blocked SIGTERM is unblocked
    holder = lock_paths(save)[1]
    try:
        deadline = time.monotonic() + 120
        while not holder.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert holder.exists(), run.stderr.read() if run.poll() is not None else "the run never took its folder"
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=120)
        err = run.stderr.read().strip().splitlines()
        assert run.returncode == 143, err
        assert err[-1].startswith("interrupted (SIGTERM): finished rounds and checkpoints are kept"), err
        assert not any("Traceback" in line for line in err), err
        assert not holder.exists() and read_provenance(save)["runs"][-1]["status"] == "interrupted"
    finally:
        run.kill()
        run.wait()
        run.stderr.close()


def test_every_interrupt_message_that_says_resume_belongs_to_a_command_with_resume():
    import importlib
    import pkgutil

    from lotterypools.cli import commands
    from lotterypools.cli.aliases import _NoEffectAction
    from lotterypools.core.errors import RERUN_CONTINUES

    assert "--resume" not in RERUN_CONTINUES
    checked = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        source = Path(module.__file__).read_text()
        if "\n@cli_entry\n" not in source:  # plain @cli_entry prints "rerun ... with --resume"
            continue
        resume = module.build_parser()._option_string_actions.get("--resume")
        assert resume is not None and not isinstance(resume, _NoEffectAction), info.name
        checked.append(info.name)
    assert "main_imp" in checked and "main_sms" not in checked


# ---------------------------------------------------------------------------------------------- 8. data files
class _Bomb:
    def __init__(self, factory, args):
        self.factory, self.args = factory, args

    def __reduce__(self):
        return self.factory, self.args


@pytest.mark.parametrize("bomb", ["bytearray", "ndarray"])
def test_a_cifar_batch_cannot_ask_for_more_memory_than_it_holds(tmp_path, bomb):
    import pickle

    import numpy as np

    from lotterypools.data.datasets import _unpickle
    from lotterypools.core.errors import UserError

    factory, args = (bytearray, (10**13,)) if bomb == "bytearray" else (np.ndarray, ((10**13,), "u1"))
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _Bomb(factory, args), "labels": [0]}, protocol=2))
    with pytest.raises(UserError, match=f"{path} asks for a (bytearray|array) of 10000000000000 bytes, more than its"):
        _unpickle(path)


def test_honest_cifar_batches_still_load(tmp_path):
    from helpers import write_cifar
    from lotterypools.data.datasets import load_dataset

    arrays = write_cifar(tmp_path, "cifar10", train=5050, test=40)
    data = load_dataset("cifar10", tmp_path, download=False)
    assert len(data.train) + len(data.val) == 5050 and len(data.test) == 40
    assert arrays is not None


def test_a_short_prac_split_file_is_refused(tmp_path):
    import numpy as np

    from lotterypools.core.errors import UserError
    from lotterypools.tickets.prac import read_split_file

    path = tmp_path / "split.npy"
    np.save(path, np.arange(100))
    with pytest.raises(UserError, match="lists 100 images, fewer than the 2000 of this data set's training split"):
        read_split_file(path, total_images=7000, train_number=2000)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_an_unsafe_raw_pickle_checkpoint_is_called_unsafe(tmp_path, protocol):
    import os
    import pickle

    from lotterypools.core.errors import UserError

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"a": _Bomb(os.system, ("true",))}, protocol=protocol))
    with pytest.raises(UserError) as error:
        load_file(path)
    message = str(error.value)
    assert "is unsafe: it asks to load 'posix.system'" in message and "weights_only=False" not in message


def test_pool_results_record_the_run_provenance(cli_run, tmp_path):
    from lotterypools.cli.commands.lottery_pools import main

    data = cli_run.parent / "data"
    main(["--interpolate_method", "Lottery_pools", "--interpolation_value_list", "0.5", "--search_num", "2",
          "--bn_batches", "1", "--arch", "conv2", "--data", str(data), "--dataset", "fashionmnist", "--inference",
          "--device", "cpu", "--no_progress", "--targets", "1", "--checkpoint", str(cli_run),
          "--save_dir", str(tmp_path / "pools")])
    run = json.loads((tmp_path / "pools" / "pools_results.json").read_text())["runs"][-1]
    for key in ("command", "package_version", "commit", "torch", "torchvision", "time", "dataset", "data_dir",
                "data_fingerprint", "normalisation"):
        assert key in run, key
    assert run["dataset"] == "fashionmnist" and run["data_fingerprint"]["sizes"]["train"] > 0


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_in_an_image_folder_is_one_line_naming_it(tmp_path, capsys, workers):
    from torch.utils.data import DataLoader

    from helpers import write_image_folder
    from lotterypools.core.errors import cli_entry
    from lotterypools.data.imagefolder import load_image_folders

    root = write_image_folder(tmp_path / "imagenet", per_class_train=4, per_class_val=2)
    broken = root / "val" / "class1" / "0.png"
    broken.write_bytes(b"not an image at all")

    @cli_entry
    def read_every_image() -> None:
        for _ in DataLoader(load_image_folders(root, val_size=2, input_size=32).test, batch_size=4,
                            num_workers=workers):
            pass

    with pytest.raises(SystemExit) as stop:
        read_every_image()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert err == f"error: {broken} is not a readable image (UnidentifiedImageError): remove or replace the file"


def test_a_folder_given_as_a_checkpoint_file_says_so(tmp_path):
    from lotterypools.core.errors import UserError
    from lotterypools.core.torchfiles import load_file

    with pytest.raises(UserError, match="is a folder: give a checkpoint file in it"):
        load_file(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_file(tmp_path / "missing.pth.tar")
