"""Issue 17: divergence stops a run, one run per folder, the atomic writer, provenance, full disks, launcher, data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import CPU, tiny_imp_run, write_mnist_like
from lotterypools import paths
from lotterypools.checkpoints import load_file
from lotterypools.guards import DivergenceError, FiniteWatch, check_finite, check_ticket_density
from lotterypools.training import TrainingHook

TINY = ["--model", "conv2", "--data", "fashionmnist", "--no_download", "--device", "cpu", "--batch-size", "25",
        "--test-batch-size", "500"]
SPARSE = ["--sparse", "--sparse-init", "ERK", "--update-frequency", "2", "--growth", "gradient", "--density", "0.3"]


def command(name: str):
    import importlib

    return importlib.import_module(f"lotterypools.commands.{name}").main


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reldata")
    write_mnist_like(root / "fashionmnist", train=5100, test=60)  # 100 train / 5000 val / 60 test
    return root


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


def test_dst_with_a_nan_learning_rate_writes_no_ticket(data_dir, tmp_path, capsys):
    save = tmp_path / "dst"
    with pytest.raises(SystemExit) as stop:
        command("main_dst")(["--data_dir", str(data_dir), *TINY, *SPARSE, "--epochs", "2", "--lr", "nan",
                             "--save_dir", str(save)])
    assert stop.value.code == 2
    line = last_error_line(capsys)
    assert "training diverged" in line and "epoch 1, step 2" in line and "--lr" in line
    assert not (save / "model.pth").exists() and not (save / "progress" / "dst.pth").exists()


def test_a_mask_update_refuses_non_finite_scores():
    from torch import nn

    from lotterypools.sparse_training import MaskedWeights, MaskUpdater, SparseConfig

    model = nn.Linear(4, 3)
    masks = {"weight": torch.rand(3, 4) > 0.5}
    updater = MaskUpdater(MaskedWeights(model, masks), SparseConfig(density=0.5, growth="random"), total_steps=10)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="mask-update score of weight is not finite at epoch 1, step 4"):
        updater.update(0.5, None, step=3, epoch=0)
    assert torch.equal(updater.weights.masks["weight"], masks["weight"])
