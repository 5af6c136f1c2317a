"""FreeTickets: EDST/ImageNet schedules, ensemble metrics, tiny end-to-end runs of every script, resume, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import CPU, REPO, command, folder_fingerprint, tiny_model_factory, tiny_splits
from lotterypools.analysis.calibration import ECE_BINS
from lotterypools.core.errors import UserError
from lotterypools.tickets.freetickets import FreeTicketsRun, RunConfig, cifar_sources, edst_plan, imagenet_plan, single_plan
from lotterypools.training.loop import TrainingHook
from lotterypools.training.sparse import SparseConfig
from lotterypools.analysis.freetickets import calibration_summary, disagreement_summary, kl_summary, predict_summary

TINY = ["--model", "conv2", "--data", "fashionmnist", "--no_download", "--device", "cpu", "--batch-size", "25",
        "--test-batch-size", "500"]
SPARSE = ["--sparse", "--sparse-init", "ERK", "--update-frequency", "2", "--death-rate", "0.5", "--large-death-rate",
          "0.8", "--growth", "gradient", "--death", "magnitude", "--redistribution", "none", "--density", "0.3"]




def run_cli(script: str, *args: str, cwd: Path, folder: str = "CIFAR", timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(REPO / folder / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------- schedules
def test_edst_phases_and_learning_rates_for_a_short_schedule():
    plan = edst_plan(epochs=9, epochs_explo=3, model_num=3, lr=0.1)
    assert plan.lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.001, 0.01, 0.001, 0.01, 0.001])
    assert [(p.start, p.end, p.ticket, p.large_death) for p in plan.phases] == [
        (0, 3, None, False), (3, 5, "model_0.pth", False), (5, 7, "model_1.pth", True), (7, 9, "model_2.pth", True)]


def test_edst_readme_schedule_matches_the_original_worked_example():
    plan = edst_plan(epochs=450, epochs_explo=150, model_num=3, lr=0.1)
    one_based = lambda epoch: plan.lrs[epoch - 1]
    assert [one_based(e) for e in (1, 150, 151, 200, 201, 250, 251, 300, 301, 350, 351, 400, 401, 450)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.01, 0.01, 0.001, 0.001, 0.01, 0.01, 0.001, 0.001])
    assert [p.start for p in plan.phases if p.large_death] == [250, 350]  # no large death at 150
    assert single_plan(250, 0.1, "model.pth").lrs[124:126] == pytest.approx([0.1, 0.01])
    assert single_plan(250, 0.1, "model.pth").lrs[186:188] == pytest.approx([0.01, 0.001])


def test_imagenet_schedule_has_the_original_boundaries():
    plan = imagenet_plan(310, 100, 70, 0.1, 5)
    assert [p.start for p in plan.phases] == [0, 100, 170, 240] and [p.large_death for p in plan.phases] == [False, True, True, True]
    assert [plan.lrs[e] for e in (5, 29, 30, 60, 90, 100, 130, 160, 170, 309)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 1e-4, 0.01, 0.001, 1e-4, 0.01, 1e-4])


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=9, epochs_explo=3, model_num=0), "--model-num 0 must be at least 1"),
    (dict(epochs=9, epochs_explo=9, model_num=3), "--epochs-explo 9 must be at least 0 and below --epochs 9"),
    (dict(epochs=9, epochs_explo=8, model_num=3), "leaves 1 epochs, fewer than --model-num 3"),
])
def test_bad_edst_schedules_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        edst_plan(lr=0.1, **kwargs)


# ---------------------------------------------------------------------------------------------- metrics
def test_ensemble_metrics_match_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (200,), generator=generator)
    members = {f"m{i}": torch.randn(200, 4, generator=generator).mul(2).softmax(1).double() for i in range(3)}
    stacked = torch.stack(list(members.values()))
    mean = stacked.mean(0)
    rows = range(200)
    nll = -sum(math.log(mean[i, labels[i]]) for i in rows) / 200
    predicted = predict_summary(members, labels)
    assert predicted["ensemble"]["nll"] == pytest.approx(nll)
    assert predicted["ensemble"]["accuracy"] == pytest.approx(100 * sum(int(mean[i].argmax() == labels[i]) for i in rows) / 200)
    member_nll = [-sum(math.log(p[i, labels[i]]) for i in rows) / 200 for p in members.values()]
    assert predicted["member_mean"]["nll"]["mean"] == pytest.approx(sum(member_nll) / 3)
    # ECE by hand: 15 equal-width bins of the confidence, |accuracy - confidence| weighted by the bin's share
    ece = 0.0
    for b in range(ECE_BINS):
        inside = [i for i in rows if b / ECE_BINS < float(mean[i].max()) <= (b + 1) / ECE_BINS]
        if inside:
            acc = sum(int(mean[i].argmax() == labels[i]) for i in inside) / len(inside)
            conf = sum(float(mean[i].max()) for i in inside) / len(inside)
            ece += len(inside) / 200 * abs(acc - conf)
    assert calibration_summary(members, labels)["ensemble"]["ece"] == pytest.approx(ece)
    names = list(members)
    disagreement = disagreement_summary(members)
    for a in range(3):
        for b in range(3):
            direct = sum(int(members[names[a]][i].argmax() != members[names[b]][i].argmax()) for i in rows) / 200
            assert disagreement["matrix"][a][b] == pytest.approx(direct)
    assert disagreement["mean"] == pytest.approx(sum(disagreement["matrix"][a][b] for a in range(3) for b in range(3) if a != b) / 6)
    kl = kl_summary(members)
    p, q = members["m0"], members["m2"]
    direct_kl = sum(float((p[i] * (p[i] / q[i]).log()).sum()) for i in rows) / 200
    assert kl["matrix"][0][2] == pytest.approx(direct_kl) and kl["matrix"][1][1] == 0.0
    assert kl["matrix"][0][2] != pytest.approx(kl["matrix"][2][0])


# ---------------------------------------------------------------------------------------------- scripts
def _mask_check(ticket_path: Path, density: float) -> dict:
    ticket = torch.load(ticket_path, weights_only=True)
    masks = ticket["masks"]
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(density * total)
    for name, mask in masks.items():
        assert torch.all(ticket["state_dict"][name][~mask] == 0)
    return ticket


@pytest.mark.slow
def test_main_dst_script_writes_a_ticket_and_continues(data_dir, tmp_path):
    save = tmp_path / "dst"
    args = ["--data_dir", str(data_dir), *TINY, *SPARSE, "--seed", "17", "--epochs", "2", "--save_dir", str(save)]
    result = run_cli("main_DST.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    ticket = _mask_check(save / "model.pth", 0.3)
    assert ticket["arch"] == "conv2" and ticket["method"] == "DST"
    history = json.loads((save / "history_dst.json").read_text())
    assert [h["epoch"] for h in history["history"]] == [1, 2] and history["mask_updates"] == 2 * 4 // 2  # 2 epochs of 4 steps, every 2nd step
    again = run_cli("main_DST.py", *args, cwd=tmp_path)
    assert again.returncode == 0 and f"{save} is already finished: nothing to train" in again.stdout
    changed = run_cli("main_DST.py", *args[:-4], "--epochs", "3", "--save_dir", str(save), cwd=tmp_path)
    assert changed.returncode == 2 and changed.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "holds a run with other settings (plan.lrs; plan.phases)" in changed.stderr


def test_main_dst_default_folder_is_the_original_layout(data_dir, tmp_path):
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        command("main_dst")(["--data_dir", str(data_dir), *TINY, *SPARSE, "--epochs", "1", "--seed", "5"])
    finally:
        os.chdir(cwd)
    assert (tmp_path / "results/conv2/fashionmnist/density_0.3/DST/seed=5/model.pth").is_file()


def test_edst_saves_one_ticket_per_refine_phase_with_large_deaths(data_dir, tmp_path):
    save = tmp_path / "edst"
    command("main_edst")(["--data_dir", str(data_dir), *TINY, *SPARSE, "--nolrsche", "--decay-schedule", "constant",
                          "--seed", "17", "--epochs-explo", "1", "--model-num", "3", "--epochs", "4", "--save_dir", str(save)])
    tickets = [_mask_check(save / f"model_{k}.pth", 0.3) for k in range(3)]
    assert [t["epoch"] for t in tickets] == [2, 3, 4]
    progress = torch.load(save / "progress" / "edst.pth", weights_only=True)
    steps = 4  # 100 training images in batches of 25
    large = [u for u in progress["updates"] if u["rate"] == 0.8]
    assert [u["step"] for u in large] == [2 * steps, 3 * steps]
    assert all(u["rate"] == 0.5 for u in progress["updates"] if u not in large)
    differ = [name for name in tickets[0]["masks"] if not torch.equal(tickets[0]["masks"][name], tickets[2]["masks"][name])]
    assert differ  # the tickets are different subnetworks


def test_an_interrupted_edst_run_continues_exactly(data_dir, tmp_path, monkeypatch, capsys):
    from lotterypools.formats.freetickets import FreeTicketsLayout

    args = ["--data_dir", str(data_dir), *TINY, *SPARSE, "--growth", "random", "--seed", "3", "--epochs-explo", "1",
            "--model-num", "2", "--epochs", "3"]
    command("main_edst")([*args, "--save_dir", str(tmp_path / "whole")])
    original = FreeTicketsLayout.write_epoch

    def stop_after_two(self, progress, *rest):
        original(self, progress, *rest)
        if progress.next_epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(FreeTicketsLayout, "write_epoch", stop_after_two)
    with pytest.raises(SystemExit):
        command("main_edst")([*args, "--save_dir", str(tmp_path / "cut")])
    assert not (tmp_path / "cut" / "model_1.pth").exists()
    monkeypatch.setattr(FreeTicketsLayout, "write_epoch", original)
    capsys.readouterr()
    command("main_edst")([*args, "--save_dir", str(tmp_path / "cut")])
    out = capsys.readouterr().out
    assert "continuing" in out and "after epoch 2" in out and "already finished" not in out
    for name in ("model_0.pth", "model_1.pth"):
        whole = torch.load(tmp_path / "whole" / name, weights_only=True)
        cut = torch.load(tmp_path / "cut" / name, weights_only=True)
        assert all(torch.equal(whole["state_dict"][k], cut["state_dict"][k]) for k in whole["state_dict"])
        assert all(torch.equal(whole["masks"][k], cut["masks"][k]) for k in whole["masks"])


class KilledMidEpoch(Exception):
    """Stands for the process being killed in the middle of an epoch."""


class KillAtStep(TrainingHook):
    def __init__(self, step: int):
        self.step = step

    def after_step(self, step):
        if step.step == self.step:
            raise KilledMidEpoch(f"step {step.step}")


def tiny_edst_run(folder: Path, hooks=()) -> FreeTicketsRun:
    """EDST (1 exploration epoch, 2 refine phases of 1 epoch, gradient growth every 2nd step) on the tiny data set."""
    data = tiny_splits()  # 96 training images: 6 steps of 16 per epoch
    sparse = SparseConfig(density=0.3, sparse_init="ERK", growth="gradient", update_frequency=2)
    config = RunConfig(method="EDST", model="conv2", data="tiny", seed=3, batch_size=16, lr=0.05, sparse_config=sparse)
    train, evaluate, trajectory = cifar_sources(data, 16, 32, CPU, 3)
    return FreeTicketsRun(config, edst_plan(epochs=3, epochs_explo=1, model_num=2, lr=0.05), tiny_model_factory(), train,
                          evaluate, CPU, folder, name="edst", trajectory=trajectory, hooks=hooks,
                          log=lambda line: None, progress=False)


class RecordSteps(TrainingHook):
    """Records the (epoch, run-wide step) of every optimiser step and the epochs that finish."""

    def __init__(self):
        self.steps, self.epochs = [], []

    def after_step(self, step):
        self.steps.append((step.epoch, step.step))

    def end_of_epoch(self, epoch, model, stats):
        self.epochs.append(epoch)
        return False


def test_an_edst_run_killed_mid_epoch_resumes_on_the_round_trainer_as_imp_does(tmp_path):
    whole_steps = RecordSteps()
    whole = tiny_edst_run(tmp_path / "whole", hooks=[whole_steps]).run()
    assert [r["ticket"] for r in whole] == ["model_0.pth", "model_1.pth"]
    assert whole_steps.epochs == [0, 1, 2] and len(whole_steps.steps) == 3 * 6
    with pytest.raises(KilledMidEpoch):
        tiny_edst_run(tmp_path / "cut", hooks=[KillAtStep(2 * 6 + 3)]).run()  # in the third epoch
    assert torch.load(tmp_path / "cut" / "progress" / "edst.pth", weights_only=True)["next_epoch"] == 2
    resumed_steps = RecordSteps()
    resumed = tiny_edst_run(tmp_path / "cut", hooks=[resumed_steps]).run()
    # the resumed run trains only the killed epoch, from its first step, with the run-wide step numbers
    assert resumed_steps.epochs == [2] and resumed_steps.steps == whole_steps.steps[2 * 6:]
    untimed = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    assert untimed(resumed) == untimed(whole)
    # provenance.json (times, runs) and the lock files say how the run went, not what it computed
    results = lambda folder: {name: value for name, value in folder_fingerprint(folder).items()
                              if name != "provenance.json" and not name.startswith(".")}
    assert results(tmp_path / "cut") == results(tmp_path / "whole")


def test_a_folder_whose_progress_file_is_not_a_freetickets_run_is_refused_in_one_line(tmp_path):
    (tmp_path / "run" / "progress").mkdir(parents=True)
    torch.save({"state": 0, "epoch": 3, "state_dict": {}}, tmp_path / "run" / "progress" / "edst.pth")  # an IMP checkpoint
    with pytest.raises(UserError, match=r"edst.pth is not a FreeTickets progress file \(it lacks next_epoch, best, "):
        tiny_edst_run(tmp_path / "run").run()


def test_individual_then_pf_then_ensemble_modes(data_dir, tmp_path):
    dense = tmp_path / "individual"
    for seed in ("18", "19"):
        command("main_individual")(["--data_dir", str(data_dir), *TINY, "--decay-schedule", "cosine", "--seed", seed,
                                    "--epochs", "1", "--save_dir", str(dense)])
    assert set(torch.load(dense / "18.pt", weights_only=True)) >= {"features.0.weight", "fc.weight"}  # a bare state dict
    pf = tmp_path / "pf"
    for seed in ("18", "19"):
        command("main_pf")(["--data_dir", str(data_dir), *TINY, "--sparse", "--resume", "--pretrain", str(dense / f"{seed}.pt"),
                            "--lr", "0.001", "--fix", "--nolrsche", "--decay-schedule", "constant", "--seed", seed,
                            "--epochs-fs", "150", "--model-num", "3", "--sparse-init", "pruning", "--epochs", "1",
                            "--density", "0.2", "--save_dir", str(pf)])
    ticket = _mask_check(pf / "18.pt", 0.2)
    pretrained = torch.load(dense / "18.pt", weights_only=True)
    kept = torch.cat([pretrained[n].abs().flatten()[ticket["masks"][n].flatten()] for n in ticket["masks"]])
    dropped = torch.cat([pretrained[n].abs().flatten()[~ticket["masks"][n].flatten()] for n in ticket["masks"]])
    assert kept.min() >= dropped.max()  # one global magnitude threshold
    for mode in ("predict", "calibration", "disagreement", "KD", "tsne"):
        command("ensemble_freetickets")(["--mode", mode, "--resume", str(pf), "--dataset", "fashionmnist", "--model",
                                         "conv2", "--data_dir", str(data_dir), "--no_download", "--device", "cpu",
                                         "--density", "0.2"])
        assert (pf / f"{mode}.png").stat().st_size > 1000
    results = json.loads((pf / "ensemble_results.json").read_text())
    assert set(results) == {"predict", "calibration", "disagreement", "KD", "tsne"}
    assert list(results["predict"]["members"]) == ["18.pt", "19.pt"] and results["predict"]["test_images"] == 60
    assert 0 <= results["disagreement"]["mean"] <= 1 and results["KD"]["mean"] >= 0
    assert len(results["tsne"]["runs"]) == 2 and len(results["tsne"]["runs"][0]["xy"]) == 1


def test_ensemble_reads_a_folder_of_dst_runs(data_dir, tmp_path):
    for seed in ("1", "2"):
        command("main_dst")(["--data_dir", str(data_dir), *TINY, *SPARSE, "--seed", seed, "--epochs", "1",
                             "--save_dir", str(tmp_path / "DST" / f"seed={seed}")])
    result = command("ensemble_freetickets")(["--resume", str(tmp_path / "DST"), "--data", "fashionmnist", "--model",
                                              "conv2", "--data_dir", str(data_dir), "--device", "cpu"])
    assert list(result["members"]) == ["seed=1/model.pth", "seed=2/model.pth"]
    assert result["densities"]["seed=1/model.pth"] == pytest.approx(0.3, abs=1e-3)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("script, extra, message", [
    ("main_dst", ["--sparse-init", "GMP"], "unknown --sparse-init 'GMP'"),
    ("main_dst", ["--growth", "momentum"], "--growth momentum is not implemented"),
    ("main_dst", ["--death", "threshold"], "--death threshold is not implemented"),
    ("main_dst", ["--redistribution", "nonzeros"], "--redistribution nonzeros is not implemented"),
    ("main_dst", ["--density", "0"], r"--density 0.0 is outside \(0, 1\]"),
    ("main_dst", ["--density", "1.2"], r"--density 1.2 is outside \(0, 1\]"),
    ("main_edst", ["--model-num", "0"], "--model-num 0 must be at least 1"),
    ("main_edst", ["--epochs-explo", "5", "--epochs", "5"], "--epochs-explo 5 must be at least 0 and below --epochs 5"),
    ("main_pf", ["--sparse-init", "ERK", "--pretrain", "x.pt"], "main_PF.py prunes the pretrained model"),
    ("main_dst", ["--model", "wrn-27-2"], "depth 6n\\+4"),
])
def test_bad_training_flags_are_one_line_errors(data_dir, tmp_path, capsys, script, extra, message):
    with pytest.raises(SystemExit) as exit_code:
        command(script)(["--data_dir", str(data_dir), *TINY, "--sparse", "--epochs", "2", "--save_dir", str(tmp_path / "x"), *extra])
    assert exit_code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    import re
    assert re.search(message, lines[0])
    assert not (tmp_path / "x").exists()


def test_pretrain_of_another_architecture_is_refused(data_dir, tmp_path, capsys):
    from lotterypools.models import build_model

    torch.save(build_model("resnet20s", 10, 1, (0.5,), (0.5,)).state_dict(), tmp_path / "other.pt")
    with pytest.raises(SystemExit):
        command("main_pf")(["--data_dir", str(data_dir), *TINY, "--sparse", "--sparse-init", "pruning", "--pretrain",
                            str(tmp_path / "other.pt"), "--save_dir", str(tmp_path / "pf")])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --pretrain {tmp_path / 'other.pt'} is not a conv2 for fashionmnist") and "\n" not in err


def test_bad_ensemble_inputs_are_one_line_errors(data_dir, tmp_path, capsys):
    save = tmp_path / "dst"
    command("main_dst")(["--data_dir", str(data_dir), *TINY, *SPARSE, "--epochs", "1", "--save_dir", str(save)])
    (tmp_path / "empty").mkdir()
    base = ["--dataset", "fashionmnist", "--data_dir", str(data_dir), "--device", "cpu"]
    cases = [
        (["--mode", "vote", "--resume", str(save), "--model", "conv2"], "unknown --mode 'vote'"),
        (["--resume", str(tmp_path / "empty"), "--model", "conv2"], "holds no tickets"),
        (["--resume", str(save), "--model", "conv4"], "is a ticket of a conv2, not of --model conv4"),
        (["--resume", str(save), "--model", "conv2", "--density", "0.5"], "has density 0.3000, not --density 0.5"),
        (["--mode", "tsne", "--resume", str(tmp_path / "empty"), "--model", "conv2"], "holds no trajectory_"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit):
            command("ensemble_freetickets")([*argv, *base])
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    torch.save({"state_dict": torch.load(save / "model.pth", weights_only=True)["state_dict"]}, save / "copy.pth")
    weights = torch.load(save / "copy.pth", weights_only=True)
    weights["state_dict"]["fc.weight"] = torch.randn_like(weights["state_dict"]["fc.weight"])  # a denser ticket
    torch.save(weights, save / "copy.pth")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        command("ensemble_freetickets")(["--resume", str(save), "--model", "conv2", *base])
    assert "tickets of different densities in one folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- ImageNet
def _imagenet_masks(folder: Path) -> dict:
    return torch.load(folder / "progress" / "imagenet.pth", weights_only=True)["masks"]


@pytest.mark.slow
def test_imagenet_one_and_two_gloo_processes_make_the_same_masks(tmp_path):
    from helpers import free_port, write_image_folder

    data = write_image_folder(tmp_path / "imagenet")  # 30 train images (3 held out), 12 test
    common = ["--sparse_init", "ERK", "--multiplier", "1", "--seed", "17", "-j0", "-p", "500", "--arch", "conv2",
              "-c", "fanin", "--update_frequency", "1", "--label-smoothing", "0.1", "--warmup", "1", "--epochs", "3",
              "--epochs-explo", "1", "--epochs-refine", "1", "--density", "0.3", "--val_size", "3", "--input_size", "32",
              "--device", "cpu"]
    # an lr far below float32's resolution of the trained weights keeps them fixed (a zero lr is refused), so the
    # large deaths (magnitude) and the seeded random growth must agree exactly. Regular updates replace nothing and
    # the large deaths are not decayed, so each removes exactly the weights the last one regrew: regrown weights
    # hold only lr-sized values, whose order would depend on how the processes round the gradients
    fixed = [*common, "--growth", "random", "--lr", "1e-12", "--death-rate", "0", "--constant-death-rate"]
    one = run_cli("main.py", *fixed, "-b", "8", "--save_dir", str(tmp_path / "one"), str(data), cwd=REPO / "ImageNet",
                  folder="ImageNet")
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_cli("multiproc.py", "--nproc_per_node", "2", "main.py", *fixed, "-b", "4", "--master_port", str(free_port()),
                  "--save_dir", str(tmp_path / "two"), str(data), cwd=REPO / "ImageNet", folder="ImageNet")
    assert two.returncode == 0, two.stderr[-2000:]
    masks_one, masks_two = _imagenet_masks(tmp_path / "one"), _imagenet_masks(tmp_path / "two")
    assert masks_one.keys() == masks_two.keys()
    assert all(torch.equal(masks_one[k], masks_two[k]) for k in masks_one)
    updates = torch.load(tmp_path / "two" / "progress" / "imagenet.pth", weights_only=True)["updates"]
    assert len(updates) == 3 * 4 and sorted(u["rate"] for u in updates)[-2:] == [0.8, 0.8]  # 4 steps per epoch
    assert sorted(p.name for p in (tmp_path / "two").glob("checkpoint-*.pth.tar")) == [
        "checkpoint-0.pth.tar", "checkpoint-1.pth.tar", "checkpoint-2.pth.tar"]
    # gradient growth on two processes: the updater checks after every update that both hold the same masks
    grow = run_cli("multiproc.py", "--nproc_per_node", "2", "main.py", *common, "--growth", "gradient", "--lr", "0.1",
                   "-b", "4", "--master_port", str(free_port()), "--save_dir", str(tmp_path / "grad"), str(data),
                   cwd=REPO / "ImageNet", folder="ImageNet")
    assert grow.returncode == 0, grow.stderr[-2000:]
    _mask_check(tmp_path / "grad" / "checkpoint-2.pth.tar", 0.3)


def test_exact_tsne_keeps_clusters_apart():
    from lotterypools.analysis.freetickets import exact_tsne

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=generator) * 10
    points = torch.cat([centres[i] + torch.randn(30, 5, generator=generator) for i in range(3)])
    labels = torch.arange(3).repeat_interleave(30)
    y = exact_tsne(points, perplexity=10)
    assert torch.isfinite(y).all()
    middle = torch.stack([y[labels == i].mean(0) for i in range(3)])
    spread = torch.stack([(y[labels == i] - middle[i]).norm(dim=1).mean() for i in range(3)]).max()
    assert torch.pdist(middle).min() > 3 * spread
    assert torch.isfinite(exact_tsne(points[:4], perplexity=1.5)).all()  # as few points as an EDST run's epochs


def test_a_run_whose_lr_drops_all_fall_on_epoch_0_says_so(capsys):
    from types import SimpleNamespace

    from lotterypools.cli.freetickets import training_plan

    args = SimpleNamespace(epochs=1, lr=0.1, nolrsche=False, seed=1, multiplier=1)
    plan = training_plan(args, "DST")
    note = capsys.readouterr().out
    assert plan.lrs == [pytest.approx(0.001)] and "trains at lr 0.001, not --lr 0.1" in note
    training_plan(SimpleNamespace(epochs=8, lr=0.1, nolrsche=False, seed=1, multiplier=1), "DST")
    training_plan(SimpleNamespace(epochs=1, lr=0.1, nolrsche=True, seed=1, multiplier=1), "DST")
    assert capsys.readouterr().out == ""


def test_a_folder_given_as_freetickets_data_names_data_dir_and_a_missing_data_set_leaves_no_folder(tmp_path, capsys):
    save = tmp_path / "tickets"
    args = ["--model", "conv2", "--no_download", "--device", "cpu", *SPARSE, "--save_dir", str(save)]
    with pytest.raises(SystemExit) as stop:
        command("main_edst")([*args, "--data", str(tmp_path)])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and f"--data {tmp_path} looks like a folder" in line and f"--data_dir {tmp_path}" in line
    with pytest.raises(SystemExit) as stop:
        command("main_edst")([*args, "--data", "cifar10", "--data_dir", str(tmp_path / "no_data")])
    assert stop.value.code == 2 and "cifar" in capsys.readouterr().err.lower()
    assert not save.exists()  # refused before the tickets' folder was made


def test_main_pf_without_pretrain_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        command("main_pf")(["--sparse", "--model", "conv2", "--data", "fashionmnist", "--epochs", "1", "--density",
                            "0.2", "--sparse-init", "pruning", "--save_dir", str(tmp_path / "pf")])
    assert stop.value.code == 2 and "main_PF.py needs --pretrain" in capsys.readouterr().err
    assert not (tmp_path / "pf").exists()


def test_imp_tickets_given_to_the_freetickets_tools_are_named_as_such(cli_run, tmp_path, capsys):
    data = str(cli_run.parent / "data")
    with pytest.raises(SystemExit) as stop:
        command("ensemble_freetickets")(["--mode", "predict", "--resume", str(cli_run), "--model", "conv2",
                                         "--dataset", "fashionmnist", "--data_dir", data])
    assert stop.value.code == 2 and "is an IMP ticket (weight_orig/weight_mask" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        command("main_pf")(["--sparse", "--model", "conv2", "--data", "fashionmnist", "--data_dir", data,
                            "--epochs", "1", "--density", "0.2", "--sparse-init", "pruning", "--pretrain",
                            str(cli_run / "1checkpoint.pth.tar"), "--save_dir", str(tmp_path / "pf")])
    assert stop.value.code == 2 and "is an IMP checkpoint (weight_orig/weight_mask" in capsys.readouterr().err
