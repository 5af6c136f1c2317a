"""PrAC IMP runs on tiny data: shrinking sets and scaled epochs, resume, the empty-set stop, and the scripts end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import load_script_main
from helpers import (CPU, IDX_STEMS, REPO, labelled_images, script_env, state_of, tiny_config, tiny_model_factory,
                     tiny_splits, write_idx)
from lotterypools.data.datasets import DataSplits, Split
from lotterypools.core.errors import UserError
from lotterypools.tickets.imp import IMPRun
from lotterypools.training.masks import density
from lotterypools.tickets.prac import NEVER_LEARNED
from lotterypools.tickets.prac_imp import PrACRun, PrACSettings, sets_file
from lotterypools.pools.store import read_ticket

PRAC_KEYS = ("sequence", "prediction", "remain_para", "distance_queue", "last_mask", "start_record")


def noisy_splits(train: int = 160, noise: float = 0.4) -> DataSplits:
    """The tiny data set with a share of random training labels: those samples get forgotten or never learned."""
    data = tiny_splits(train=train)
    generator = torch.Generator().manual_seed(5)
    flip = torch.rand(train, generator=generator) < noise
    labels = data.train.labels.clone()
    labels[flip] = torch.randint(0, data.spec.num_classes, (int(flip.sum()),), generator=generator)
    return DataSplits(data.spec, Split(data.train.images, labels), data.val, data.test, "memory")


def prac_run(folder: Path, log=lambda line: None, settings: PrACSettings | None = None, **overrides) -> PrACRun:
    config = tiny_config(**{"epochs": 6, "milestones": [3, 5], "rewind_epoch": 1, **overrides})
    return PrACRun(config, tiny_model_factory(), noisy_splits(), CPU, folder, settings or PrACSettings(), log=log,
                   progress=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prac") / "run"
    prac_run(folder).run()
    return folder


def test_three_rounds_train_on_fewer_images_for_scaled_epochs_at_densities_0_8_to_the_k(finished):
    summary = json.loads((finished / "summary.json").read_text())
    sets = json.loads(sets_file(finished).read_text())
    assert [r["round"] for r in summary] == [r["round"] for r in sets] == [0, 1, 2]
    assert [r["density"] for r in summary] == pytest.approx([1.0, 0.8, 0.64], abs=0.005)
    assert sets[0]["trained"] == 160 and [r["epochs"] for r in sets] == [r["epochs"] for r in summary]
    for record in sets[1:]:
        assert 0 < record["trained"] < 160
        expected = max(1, 6 * record["trained"] // 160)
        assert record["epochs"] <= expected                 # int(epochs * f), or fewer after an early stop
        assert record["iterations"] == record["epochs"] * -(-record["trained"] // 16)
    assert [s["next"] for s in sets[:2]] == [s["trained"] for s in sets[1:]]
    assert sets[0]["cep"] is None and sets[1]["cep"] is not None  # CEP joins from round 1 on
    assert sets[1]["next"] <= sets[1]["cet"] + sets[1]["cep"]
    assert sets[2]["next"] is None                          # the last round's set would train nothing


def test_checkpoints_carry_the_original_prac_keys(finished):
    checkpoint = torch.load(finished / "1checkpoint.pth.tar", map_location="cpu", weights_only=True)
    assert all(key in checkpoint for key in PRAC_KEYS)
    summary = json.loads((finished / "summary.json").read_text())
    assert checkpoint["sequence"].numel() == json.loads(sets_file(finished).read_text())[1]["trained"]
    table = checkpoint["prediction"]
    assert table.shape == (160, summary[1]["epochs"])
    outside = torch.ones(160, dtype=torch.bool)
    outside[checkpoint["sequence"]] = False
    assert (table[outside] == -1).all() and (table[~outside] >= 0).all()
    assert checkpoint["init_weight"] is not None and any(k.endswith("weight_mask") for k in checkpoint["state_dict"])


def forgotten_or_never_learned(table: torch.Tensor) -> set[int]:
    """Samples seen this round that went from correct to wrong at least once, or were never correct (zero_out, 0)."""
    chosen = set()
    for index, row in enumerate(table.tolist()):
        seen = [value for value in row if value >= 0]
        if seen and (1 not in seen or any(a == 1 and b == 0 for a, b in zip(seen, seen[1:]))):
            chosen.add(index)
    return chosen


def predicted_classes(folder: Path, round_index: int, images: torch.Tensor) -> torch.Tensor:
    """The round's best-validation ticket's predicted class for every image (un-augmented, eval mode)."""
    weights, _ = read_ticket(folder / f"{round_index}model_SA_best.pth.tar")
    model = tiny_model_factory()()
    model.load_state_dict(weights)
    with torch.no_grad():
        return model.eval()(images).argmax(1)


def test_next_set_is_this_rounds_forgotten_samples_plus_disagreements(finished):
    """Round 2 trains on exactly CET(round 1) ∪ CEP(dense ticket vs round-1 ticket), both computed here."""
    checkpoint = torch.load(finished / "1checkpoint.pth.tar", map_location="cpu", weights_only=True)
    cet = forgotten_or_never_learned(checkpoint["prediction"])
    images = noisy_splits().train.images.float() / 255
    disagree = predicted_classes(finished, 0, images) != predicted_classes(finished, 1, images)
    cep = set(torch.nonzero(disagree).flatten().tolist())
    following = torch.load(finished / "2checkpoint.pth.tar", map_location="cpu", weights_only=True)["sequence"]
    assert sorted(following.tolist()) == sorted(cet | cep)
    assert cet <= set(checkpoint["sequence"].tolist())  # CET comes from the samples round 1 trained on
    assert cep - cet, "CEP adds samples CET lacks here, so the union is tested, not CET alone"
    record = json.loads(sets_file(finished).read_text())[1]
    assert (record["cet"], record["cep"], record["next"]) == (len(cet), len(cep), len(cet | cep))


def test_resume_mid_round_gives_the_same_tickets_as_an_uninterrupted_run(finished, tmp_path):
    folder = tmp_path / "run"

    def interrupt(line: str) -> None:
        if line.startswith("round 1 epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prac_run(folder, log=interrupt).run()
    assert not (folder / "2checkpoint.pth.tar").exists()
    prac_run(folder).run(resume=True)
    for round_index in range(3):
        for name in (f"{round_index}model_SA_best.pth.tar", f"{round_index}checkpoint.pth.tar"):
            expected, got = state_of(finished / name), state_of(folder / name)
            assert all(torch.equal(expected[k], got[k]) for k in expected), name
    assert json.loads(sets_file(folder).read_text()) == json.loads(sets_file(finished).read_text())
    resumed = torch.load(folder / "1checkpoint.pth.tar", map_location="cpu", weights_only=True)
    original = torch.load(finished / "1checkpoint.pth.tar", map_location="cpu", weights_only=True)
    assert torch.equal(resumed["sequence"], original["sequence"]) and resumed["epoch"] == original["epoch"]


def test_dense_round_is_imps_dense_round(finished, tmp_path):
    """Round 0 trains the whole split with IMP's batches: without an early stop, its weights are IMP's."""
    config = tiny_config(epochs=6, milestones=[3, 5], rewind_epoch=1, pruning_times=1)
    IMPRun(config, tiny_model_factory(), noisy_splits(), CPU, tmp_path / "imp", progress=False).run()
    prac_epochs = json.loads((finished / "summary.json").read_text())[0]["epochs"]
    if prac_epochs == 6:
        expected, got = state_of(tmp_path / "imp" / "0checkpoint.pth.tar"), state_of(finished / "0checkpoint.pth.tar")
        assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert (tmp_path / "imp" / "epoch_1_rewind_weight.pt").exists() and (finished / "epoch_1_rewind_weight.pt").exists()


def test_an_empty_selection_stops_with_one_line_and_keeps_the_finished_round(tmp_path):
    folder = tmp_path / "run"
    settings = PrACSettings(threshold=NEVER_LEARNED)  # nothing can exceed it: round 1's set is empty
    with pytest.raises(UserError, match="round 0 selected no training images") as error:
        prac_run(folder, settings=settings).run()
    assert "\n" not in str(error.value)
    assert (folder / "0model_SA_best.pth.tar").exists() and (folder / "0checkpoint.pth.tar").exists()
    assert json.loads(sets_file(folder).read_text())[0]["next"] == 0
    assert not (folder / "1checkpoint.pth.tar").exists()


# ---------------------------------------------------------------- the scripts, end to end
@pytest.fixture(scope="module")
def prac_cli_run(tmp_path_factory):
    """main_PrAC_imp.py, 3 rounds of conv2 on tiny Fashion-MNIST idx files with 40% random labels."""
    base = tmp_path_factory.mktemp("prac_cli")
    folder = base / "data" / "fashionmnist"
    train_x, train_y = labelled_images(5160, 1, 28, 10, seed=0)
    rng = np.random.default_rng(1)
    flip = rng.random(5160) < 0.4
    train_y[flip] = rng.integers(0, 10, int(flip.sum()))
    test_x, test_y = labelled_images(64, 1, 28, 10, seed=2)
    for stem, array in zip(IDX_STEMS, (train_x[:, 0], train_y, test_x[:, 0], test_y)):
        write_idx(folder / f"{stem}.gz", array)
    np.save(base / "split.npy", np.arange(5160, dtype=np.int32))  # the original's format: 160 train + 5000 val
    run = base / "run"
    load_script_main("main_PrAC_imp.py")([
        "--data", str(base / "data"), "--dataset", "fashionmnist", "--arch", "conv2", "--split_file", str(base / "split.npy"),
        "--epochs", "6", "--decreasing_lr", "3,5", "--pruning_times", "3", "--prune_type", "rewind_lt", "--rewind_epoch", "0",
        "--batch_size", "16", "--lr", "0.05", "--device", "cpu", "--seed", "2", "--no_download", "--save_dir", str(run)])
    return run


@pytest.mark.slow
def test_prac_script_writes_three_rounds_of_shrinking_sets(prac_cli_run):
    summary = json.loads((prac_cli_run / "summary.json").read_text())
    assert [r["density"] for r in summary] == pytest.approx([1.0, 0.8, 0.64], abs=0.005)
    sets = json.loads(sets_file(prac_cli_run).read_text())
    assert sets[0]["trained"] == 160 and all(r["trained"] < 160 for r in sets[1:])
    assert (prac_cli_run / "epoch_1_rewind_weight.pt").exists()  # --rewind_epoch 0: the weights after one epoch


@pytest.mark.slow
def test_main_train_and_lottery_pools_run_on_the_prac_folder(prac_cli_run, tmp_path):
    data = prac_cli_run.parent / "data"
    common = ["--data", str(data), "--dataset", "fashionmnist", "--arch", "conv2", "--device", "cpu", "--no_download"]
    ticket = str(prac_cli_run / "1checkpoint.pth.tar")
    load_script_main("main_train.py")([*common, "--epochs", "2", "--decreasing_lr", "1", "--batch_size", "16",
                                       "--init_dir", ticket, "--mask_dir", ticket, "--save_dir", str(tmp_path / "retrain")])
    retrained, masks = read_ticket(tmp_path / "retrain" / "0model_SA_best.pth.tar")
    assert density(masks) == pytest.approx(0.8, abs=0.005)
    load_script_main("Lottery_pools.py")([*common, "--checkpoint", str(prac_cli_run), "--save_dir", str(tmp_path / "pools"),
                                          "--search_num", "2", "--interpolation_value_list", "0.5", "--bn_batches", "2",
                                          "--inference"])
    records = json.loads((tmp_path / "pools" / "pools_results.json").read_text())
    records = records["records"] if isinstance(records, dict) else records
    assert {r["target_round"] for r in records if r["method"].startswith("Lottery_pools")} == {0, 1, 2}


def test_prac_readme_command_line_parses_and_bad_inputs_are_one_line_errors(tmp_path):
    env = script_env()
    script = REPO / "CIFAR" / "main_PrAC_imp.py"
    readme = ["--data", str(tmp_path / "none"), "--dataset", "cifar10", "--arch", "res20s", "--split_file",
              "npy_files/cifar10-train-val.npy", "--batch_size", "128", "--lr", "0.1", "--pruning_times", "16",
              "--eb_eps", "0.08", "--prune_type", "rewind_lt", "--rewind_epoch", "2", "--threshold", "0",
              "--save_dir", str(tmp_path / "PrAC_lt_cifar10_res20s"), "--no_download"]
    for extra, message in (([], "cifar10 not found"), (["--eb_eps", "1.5"], "--eb_eps 1.5 is outside (0, 1)"),
                           (["--threshold", "-2"], "--threshold -2 must be 0 or more"),
                           (["--queue_length", "0"], "--queue_length 0 must be at least 1")):
        result = subprocess.run([sys.executable, str(script), *readme, *extra], cwd=REPO / "CIFAR", env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-500:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
