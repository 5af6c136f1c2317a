"""ImageNet path on the CPU: OpenLTH layout, ImageFolder splits, pools on 1 and 2 processes, the launcher, IMP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lotterypools.formats import openlth
from lotterypools.core.torchfiles import load_file
from lotterypools.core.errors import UserError
from lotterypools.data.imagefolder import held_out_indices, held_out_size, load_image_folders
from lotterypools.training.masks import density
from lotterypools.models import build_imagenet_model
from lotterypools.pools.store import TicketStore

from helpers import CLASSES, TINY_ARCH, free_port, script_env, write_image_folder
from helpers import write_openlth_tickets as write_tickets

ROOT = Path(__file__).resolve().parents[2]
IMAGENET = ROOT / "ImageNet"


def run_script(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=IMAGENET, capture_output=True, text=True, timeout=timeout,
                          env=script_env())


def pool_args(data: Path, tickets: Path, results: Path) -> list[str]:
    return ["--save_dir", str(tickets), str(data), "--interpolation_value_list", "0.3", "0.6", "--seed", "17",
            "--master_port", "8020", "-j0", "-p", "500", "--arch", TINY_ARCH, "--interpolate_method",
            "Lottery_pools", "--input_size", "32", "--val_size", "9", "--device", "cpu", "-b", "4",
            "--search_num", "3", "--results_dir", str(results)]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as the subprocesses get: on a shared small CPU, more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data(tmp_path):
    return write_image_folder(tmp_path / "imagenet")


@pytest.fixture
def tickets(tmp_path):
    return write_tickets(tmp_path / "lth")


def test_imagenet_resnet_reads_openlth_tickets(tmp_path):
    model = build_imagenet_model("imagenet_resnet_18", CLASSES)
    keys = list(model.state_dict())
    assert keys[0] == "model.conv1.weight" and "model.fc.weight" in keys and "model.layer4.1.bn2.running_var" in keys
    root = write_tickets(tmp_path / "lth", "imagenet_resnet_18", levels=2, epoch=90)
    files = openlth.level_files(root)
    assert [(f.round, f.path.name) for f in files] == [(0, "model_ep90_it0.pth"), (1, "model_ep90_it0.pth")]
    store = TicketStore(files, model.state_dict(), "imagenet_resnet_18", reader=openlth.read_level)
    assert store.tickets[0].dense and abs(store.tickets[1].density - 0.8) < 1e-4
    assert "model.fc.weight" in store.prunable_names() and "model.conv1.weight" in store.prunable_names()
    assert set(load_file(openlth.mask_path(root, 1)).values().__iter__().__next__().unique().tolist()) <= {0, 1}


def test_level_folder_errors(tmp_path):
    root = write_tickets(tmp_path / "lth", levels=3)
    (openlth.model_path(root, 2, 4)).unlink()
    with pytest.raises(UserError, match="level_2 ends at epoch 0 .* incomplete"):
        openlth.level_files(root)
    openlth.mask_path(root, 2).unlink()
    for path in openlth.level_dir(root, 2).iterdir():
        path.unlink()
    with pytest.raises(UserError, match="incomplete: no model_ep"):
        openlth.level_files(root)
    openlth.level_dir(root, 2).rmdir()
    (root / "level_2").rmdir()
    (root / "level_1").rename(root / "level_3")
    with pytest.raises(UserError, match="has no ticket of round 1 .OpenLTH: level_1. but has round 3"):
        openlth.level_files(root)


def test_mask_not_matching_architecture_is_one_line(tmp_path):
    root = write_tickets(tmp_path / "lth", levels=2)
    masks = {k: v[:1] for k, v in load_file(openlth.mask_path(root, 1)).items()}
    torch.save(masks, openlth.mask_path(root, 1))
    with pytest.raises(UserError, match="does not match the architecture"):
        openlth.read_level(openlth.model_path(root, 1, 4))


def test_held_out_split_is_fixed_disjoint_and_lowered_for_small_folders(data):
    warnings = []
    assert held_out_size(30, 26000, warnings.append) == 3 and "a tenth" in warnings[0]
    assert held_out_size(100000, 26000, warnings.append) == 26000 and len(warnings) == 1
    train, held = held_out_indices(30, 5, split_seed=0)
    assert sorted(train + held) == list(range(30)) and len(held) == 5
    assert (train, held) == held_out_indices(30, 5, split_seed=0) != held_out_indices(30, 5, split_seed=1)
    splits = load_image_folders(data, 26000, input_size=32, warn=warnings.append)
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (27, 3, 12, CLASSES)
    assert splits.test[0][0].shape == (3, 32, 32)


def run_pools_in_process(argv: list[str]) -> None:
    sys.path.insert(0, str(IMAGENET))
    try:
        import Lottery_pools
    finally:
        sys.path.remove(str(IMAGENET))
    Lottery_pools.main(argv)


def test_lottery_pools_one_process(data, tickets, tmp_path):
    run_pools_in_process(pool_args(data, tickets, tmp_path / "results"))
    records = json.loads((tmp_path / "results" / "pools_results.json").read_text())["records"]
    pooled = [r for r in records if r["method"] == "Lottery_pools"]
    assert [r["target_round"] for r in pooled] == [0, 1, 2]
    assert all(r["val_acc"] >= r["lt_val_acc"] for r in pooled)
    assert all(set(r["alphas"]) <= {0.3, 0.6} for r in pooled)
    assert (tmp_path / "results" / "pools_results.csv").exists() and (tmp_path / "results" / "pools_accuracy.png").exists()


@pytest.mark.slow
def test_two_processes_give_the_same_results_as_one(data, tickets, tmp_path):
    run_pools_in_process(pool_args(data, tickets, tmp_path / "one"))
    args = pool_args(data, tickets, tmp_path / "two")
    args[args.index("--master_port") + 1] = str(free_port())
    two = run_script(["multiproc.py", "--nproc_per_node", "2", "Lottery_pools.py", *args])
    assert two.returncode == 0, two.stderr[-2000:]
    single, double = (json.loads((tmp_path / d / "pools_results.json").read_text())["records"] for d in ("one", "two"))
    assert len(single) == len(double) == 6
    for a, b in zip(single, double):
        assert (a["method"], a["target_round"], a["chosen_rounds"], a["alphas"]) == \
               (b["method"], b["target_round"], b["chosen_rounds"], b["alphas"])
        for key in ("lt_val_acc", "lt_test_acc", "val_acc", "test_acc", "test_loss"):
            assert (key in a) == (key in b)
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5)
        for step_a, step_b in zip(a.get("steps", []), b.get("steps", [])):
            assert step_a["trials"] == pytest.approx(step_b["trials"], abs=1e-6)


@pytest.mark.slow
def test_launcher_stops_the_others_when_a_process_fails(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(
        "import os, sys, time\n"
        f"open(os.path.join({str(tmp_path)!r}, 'argv' + os.environ['RANK']), 'w').write(' '.join(sys.argv[1:]))\n"
        "if os.environ['RANK'] == '1':\n    sys.exit(3)\n"
        "time.sleep(300)\n")
    result = run_script(["multiproc.py", "--nproc_per_node", "2", "--master_port", str(free_port()), str(script),
                         "--flag", "x"], timeout=200)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "failed in process 1" in result.stderr
    assert (tmp_path / "argv0").read_text() == "--flag x --local_rank=0"


def test_launcher_refuses_a_port_in_use(tmp_path):
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_script(["multiproc.py", "--nproc_per_node", "2", "Lottery_pools.py", "--master_port", str(port)])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: port {port} is already in use on this machine: pass "
                                                       f"another --master_port (or stop the run holding it)")


def test_main_imp_two_levels_in_openlth_layout(data, tmp_path):
    sys.path.insert(0, str(IMAGENET))
    try:
        import main_imp
    finally:
        sys.path.remove(str(IMAGENET))
    save = tmp_path / "imp"
    argv = ["--save_dir", str(save), str(data), "--arch", TINY_ARCH, "--levels", "1", "--epochs", "2",
            "--rewind_epoch", "1", "--warmup", "1", "--milestones", "1", "-b", "9", "-j0", "--input_size", "32",
            "--val_size", "6", "--device", "cpu"]
    main_imp.main(argv)
    files = openlth.level_files(save)
    assert [(f.round, f.path.name) for f in files] == [(0, "model_ep2_it0.pth"), (1, "model_ep2_it0.pth")]
    assert openlth.model_epochs(openlth.level_dir(save, 0)) == [0, 1, 2]
    masks = {k: v.float() for k, v in load_file(openlth.mask_path(save, 1)).items()}
    assert abs(density(masks) - 0.8) < 1e-3 and "fc.weight" in masks
    rewind = load_file(openlth.model_path(save, 0, 1))
    start = load_file(openlth.model_path(save, 1, 1))
    assert all(torch.equal(start[k], rewind[k] * masks[k]) for k in masks)
    final = load_file(openlth.model_path(save, 1, 2))
    assert all(torch.all(final[k][masks[k] == 0] == 0) for k in masks)
    assert not openlth.checkpoint_path(save, 1).exists()
    stamp = openlth.model_path(save, 1, 2).stat().st_mtime_ns
    main_imp.main(argv)
    assert openlth.model_path(save, 1, 2).stat().st_mtime_ns == stamp


def test_more_processes_than_gpus_on_nccl_is_one_line(monkeypatch):
    from lotterypools.training.distributed import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="local rank 1 has no GPU of its own .1 visible.: lower --nproc_per_node to 1"):
        init_distributed("auto", local_rank=1)
    from lotterypools.cli.commands import multiproc

    with pytest.raises(UserError, match="--nproc_per_node 2 is more than the 1 GPUs here"):
        multiproc.check_devices(2, ["--save_dir", "x"])
    multiproc.check_devices(2, ["--device", "cpu"])
    assert multiproc.port_in_script_args(["-j32", "--master_port", "8020"]) == 8020
    with pytest.raises(UserError, match="not a port number"):
        multiproc.port_in_script_args(["--master_port=eighty"])


@pytest.mark.slow
def test_main_imp_on_two_processes_trains_and_a_rerun_with_more_levels_continues(data, tmp_path):
    save = tmp_path / "imp"

    def argv(levels: str) -> list[str]:
        return ["multiproc.py", "--nproc_per_node", "2", "main_imp.py", "--save_dir", str(save), str(data),
                "--arch", TINY_ARCH, "--levels", levels, "--epochs", "2", "--rewind_epoch", "1", "--warmup", "1",
                "--milestones", "1", "-b", "8", "-j0", "--input_size", "32", "--val_size", "6", "--device", "cpu",
                "--master_port", str(free_port())]

    first = run_script(argv("0"))
    assert first.returncode == 0, first.stderr[-2000:]
    assert [f.round for f in openlth.level_files(save)] == [0]
    stamp = openlth.model_path(save, 0, 2).stat().st_mtime_ns
    second = run_script(argv("1"))
    assert second.returncode == 0, second.stderr[-2000:]
    assert [(f.round, f.path.name) for f in openlth.level_files(save)] == [(0, "model_ep2_it0.pth"), (1, "model_ep2_it0.pth")]
    assert openlth.model_path(save, 0, 2).stat().st_mtime_ns == stamp  # level 0 was not trained again
    masks = {k: v.float() for k, v in load_file(openlth.mask_path(save, 1)).items()}
    final = load_file(openlth.model_path(save, 1, 2))
    assert abs(density(masks) - 0.8) < 1e-3 and all(torch.all(final[k][masks[k] == 0] == 0) for k in masks)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_killed_imagenet_level_resumes_to_the_uninterrupted_tickets(data, tmp_path, workers):
    from lotterypools.training.distributed import init_distributed
    from lotterypools.tickets.imagenet_imp import LevelRun, openlth_config
    from lotterypools.training.loop import TrainingHook

    class Killed(Exception):
        pass

    class KillAfter(TrainingHook):
        def __init__(self, count):
            self.count, self.seen = count, 0

        def end_of_epoch(self, epoch, model, stats):
            self.seen += 1
            if self.seen == self.count:
                raise Killed
            return False

    splits = load_image_folders(data, 6, input_size=32, warn=lambda message: None)
    config = openlth_config(arch=TINY_ARCH, epochs=3, batch_size=9, lr=0.05, milestones=[2], warmup=1, levels=1,
                            rewind_epoch=1, workers=workers)
    context = init_distributed("cpu")

    def run(folder, hooks=()):
        factory = lambda: build_imagenet_model(TINY_ARCH, CLASSES, 32)
        return LevelRun(config, factory, splits, context, folder, hooks=hooks, log=lambda line: None,
                        progress=False).run()

    run(tmp_path / "whole")
    with pytest.raises(Killed):
        run(tmp_path / "cut", hooks=[KillAfter(5)])  # level 1, after its first epoch
    assert openlth.checkpoint_path(tmp_path / "cut", 1).exists()
    run(tmp_path / "cut")
    for level in (0, 1):
        a = load_file(openlth.model_path(tmp_path / "whole", level, 3))
        b = load_file(openlth.model_path(tmp_path / "cut", level, 3))
        assert all(torch.equal(a[k], b[k]) for k in a), level
