"""Retraining a subnetwork from a mask and an initialisation (lotterypools.tickets.retrain and CIFAR/main_train.py)."""

from __future__ import annotations

import json

import pytest
import torch

from lotterypools.formats import paths
from lotterypools.core.torchfiles import atomic_save, load_file
from lotterypools.training.masks import split_pruned_state
from lotterypools.core.errors import UserError
from lotterypools.training.masks import density
from lotterypools.tickets.retrain import retrain
from helpers import CPU, state_of, tiny_config, tiny_model_factory, tiny_splits


def run_retrain(folder, mask_path, init_path, **overrides):
    config = tiny_config(pruning_times=1, prune_type="lt", **overrides)
    return retrain(config, tiny_model_factory(config.arch), tiny_splits(), CPU, folder, mask_path, init_path,
                   log=lambda line: None, progress=False)


@pytest.mark.parametrize("init_file", ["checkpoint", "rewind_file", "random"])
def test_retraining_keeps_the_mask_and_starts_from_the_initialisation(tmp_path, tiny_run, init_file):
    source = paths.round_checkpoint(tiny_run, 2)
    init_path = {"checkpoint": source, "rewind_file": paths.rewind_weights(tiny_run, 1), "random": None}[init_file]
    summary = run_retrain(tmp_path / "retrain", source, init_path)
    _, source_masks = split_pruned_state(state_of(source))
    trained = state_of(paths.round_checkpoint(tmp_path / "retrain", 0))
    _, masks = split_pruned_state(trained)
    assert masks.keys() == source_masks.keys() and all(torch.equal(masks[k], source_masks[k]) for k in masks)
    assert summary[0]["density"] == density(source_masks) and summary[0]["epochs"] == 2
    start = load_file(paths.rewind_weights(tmp_path / "retrain", 0))
    rewind = load_file(paths.rewind_weights(tiny_run, 1))
    same_as_rewind = all(torch.equal(start[k], rewind[k]) for k in rewind)
    assert same_as_rewind == (init_file != "random")
    assert load_file(paths.round_checkpoint(tmp_path / "retrain", 0))["init_weight"].keys() == start.keys()
    for key, mask in masks.items():
        assert torch.all((trained[f"{key}_orig"] * mask)[mask == 0] == 0)


def test_a_dense_checkpoint_gives_no_mask(tmp_path, tiny_run):
    with pytest.raises(UserError, match="no pruning masks"):
        run_retrain(tmp_path / "retrain", paths.round_checkpoint(tiny_run, 0), None)


def test_checkpoints_of_another_architecture_are_refused(tmp_path, tiny_run):
    with pytest.raises(UserError, match="do not fit --arch conv4"):
        run_retrain(tmp_path / "retrain", paths.round_checkpoint(tiny_run, 1), None, arch="conv4")
    foreign = {k: v for k, v in load_file(paths.rewind_weights(tiny_run, 1)).items() if not k.startswith("fc.")}
    atomic_save(foreign, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="missing fc.bias"):
        run_retrain(tmp_path / "retrain", paths.round_checkpoint(tiny_run, 1), tmp_path / "foreign.pt")
    assert not (tmp_path / "retrain").exists()


@pytest.mark.slow
def test_main_train_script_retrains_a_ticket_of_main_imp(tmp_path, cli_run, main_train):
    mask = cli_run / "1checkpoint.pth.tar"
    out = tmp_path / "retrained"
    main_train(["--data", str(cli_run.parent / "data"), "--dataset", "fashionmnist", "--arch", "conv2",
                "--epochs", "1", "--batch_size", "64", "--decreasing_lr", "1", "--device", "cpu",
                "--mask_dir", str(mask), "--init_dir", str(mask), "--save_dir", str(out)])
    record = json.loads((out / "summary.json").read_text())[0]
    source = json.loads((cli_run / "summary.json").read_text())[1]
    assert record["density"] == source["density"] and record["epochs"] == 1
    assert {p.name for p in out.iterdir()} >= {"0checkpoint.pth.tar", "0model_SA_best.pth.tar", "epoch_0_rewind_weight.pt"}
    init = load_file(mask)["init_weight"]
    start = load_file(out / "epoch_0_rewind_weight.pt")
    assert all(torch.equal(start[k], init[k]) for k in init)


def test_an_interrupted_retraining_resumes_to_the_same_weights(tmp_path, tiny_run):
    mask = paths.round_checkpoint(tiny_run, 1)
    run_retrain(tmp_path / "whole", mask, mask)

    def kill_after_first_epoch(line: str) -> None:
        if line.startswith("round 0 epoch 1/2"):
            raise KeyboardInterrupt

    config = tiny_config(pruning_times=1, prune_type="lt")
    with pytest.raises(KeyboardInterrupt):
        retrain(config, tiny_model_factory(), tiny_splits(), CPU, tmp_path / "resumed", mask, mask,
                log=kill_after_first_epoch, progress=False)
    retrain(config, tiny_model_factory(), tiny_splits(), CPU, tmp_path / "resumed", mask, mask, resume=True,
            log=lambda line: None, progress=False)
    a, b = state_of(tmp_path / "whole" / "0checkpoint.pth.tar"), state_of(tmp_path / "resumed" / "0checkpoint.pth.tar")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
