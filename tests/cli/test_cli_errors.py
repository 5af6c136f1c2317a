"""Bad input to the scripts: one line on stderr, exit code 2, no traceback, nothing already written lost."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import folder_snapshot, run_script, user_error, write_mnist_like

TINY = ["--epochs", "2", "--batch_size", "64", "--device", "cpu", "--no_download", "--arch", "conv2"]


@pytest.fixture
def mnist_root(tmp_path):
    write_mnist_like(tmp_path / "mnist", train=5040, test=20)
    return tmp_path


def test_a_bad_flag_in_a_subprocess_prints_one_line_and_no_traceback(tmp_path):
    result = run_script("main_imp.py", "--dataset", "svhn", "--data", str(tmp_path), "--save_dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
    assert "unknown data set 'svhn'" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "svhn"], "unknown data set 'svhn'"),
    (["--dataset", "mnist", "--arch", "resnet19"], "unknown architecture 'resnet19'"),
    (["--dataset", "mnist", "--rate", "1.5"], "--rate 1.5 is outside (0, 1)"),
    (["--dataset", "mnist", "--rate", "0"], "--rate 0.0 is outside (0, 1)"),
    (["--dataset", "mnist", "--prune_type", "rewind_lt", "--rewind_epoch", "2"], "--rewind_epoch 2 must be"),
    (["--dataset", "mnist", "--decreasing_lr", "a,b"], "--decreasing_lr"),
    (["--dataset", "mnist", "--input_size", "32"], "--input_size 32"),
    (["--dataset", "mnist", "--checkpoint", "x.pth.tar"], "--checkpoint without --resume"),
    (["--dataset", "mnist", "--resume"], "no '<k>checkpoint.pth.tar'"),
    (["--dataset", "mnist", "--device", "tpu"], "unknown --device 'tpu'"),
])
def test_main_imp_bad_input(main_imp, capsys, mnist_root, flags, message):
    save_dir = mnist_root / "run"
    err = user_error(main_imp, TINY + ["--data", str(mnist_root), "--save_dir", str(save_dir)] + flags, capsys)
    assert message in err
    assert not save_dir.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_device_cuda_without_a_gpu(main_imp, capsys, mnist_root):
    err = user_error(main_imp, TINY + ["--data", str(mnist_root), "--dataset", "mnist", "--device", "cuda"], capsys)
    assert "no CUDA GPU" in err


def test_missing_and_corrupt_data_folders(main_imp, capsys, tmp_path, mnist_root):
    assert "not found under" in user_error(main_imp, TINY + ["--data", str(tmp_path / "nowhere"), "--dataset", "mnist"], capsys)
    assert "cifar10 not found" in user_error(main_imp, TINY + ["--data", str(tmp_path / "nowhere"), "--dataset", "cifar10"], capsys)
    (mnist_root / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    assert "unreadable" in user_error(main_imp, TINY + ["--data", str(mnist_root), "--dataset", "mnist"], capsys)


@pytest.mark.slow
def test_end_to_end_main_imp_run_of_two_rounds(cli_run):
    output = (cli_run.parent / "output.txt").read_text()
    summary = json.loads((cli_run / "summary.json").read_text())
    assert [r["round"] for r in summary] == [0, 1]
    assert summary[0]["density"] == 1.0 and summary[1]["density"] == pytest.approx(0.8, abs=1e-3)
    assert summary[1]["epochs"] == 1  # rewind_lt: round 1 trains from epoch 1 to 2
    names = {p.name for p in cli_run.iterdir()}
    assert names >= {f"{k}{s}" for k in (0, 1) for s in ("checkpoint.pth.tar", "model_SA_best.pth.tar", "training_curve.png")}
    assert "epoch_1_rewind_weight.pt" in names
    assert "round 0 epoch 1/2  loss" in output and "round 1 epoch 2/2  loss" in output
    assert f"density {100 * summary[1]['density']:.2f}%" in output
    assert "best_val_acc" in output  # the table of all rounds at the end


@pytest.mark.slow
def test_resume_with_another_architecture_keeps_the_run(main_imp, capsys, cli_run):
    before = folder_snapshot(cli_run)
    err = user_error(main_imp, ["--data", str(cli_run.parent / "data"), "--dataset", "fashionmnist", "--arch", "conv4",
                                "--epochs", "2", "--pruning_times", "3", "--prune_type", "rewind_lt", "--rewind_epoch",
                                "1", "--device", "cpu", "--resume", "--save_dir", str(cli_run)], capsys)
    assert "holds a run with other settings (arch conv2 -> conv4;" in err
    assert folder_snapshot(cli_run) == before


@pytest.mark.slow
def test_starting_over_an_existing_run_is_refused(main_imp, capsys, cli_run):
    before = folder_snapshot(cli_run)
    err = user_error(main_imp, ["--data", str(cli_run.parent / "data"), "--dataset", "fashionmnist", "--arch", "conv2",
                                "--epochs", "2", "--device", "cpu", "--save_dir", str(cli_run)], capsys)
    assert "already holds an IMP run" in err
    assert folder_snapshot(cli_run) == before


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    ([], "exactly one of --init_dir"),
    (["--random_init", "--init_dir", "INIT"], "exactly one of --init_dir"),
    (["--random_init", "--mask_dir_round", "0"], "no pruning masks"),
    (["--random_init", "--arch", "conv4"], "do not fit --arch conv4"),
    (["--init_dir", "MISSING"], "does not exist"),
])
def test_main_train_bad_input(main_train, capsys, cli_run, tmp_path, extra, message):
    mask = cli_run / "1checkpoint.pth.tar"
    if "--mask_dir_round" in extra:
        mask, extra = cli_run / "0checkpoint.pth.tar", ["--random_init"]
    extra = [{"INIT": str(mask), "MISSING": str(tmp_path / "missing.pt")}.get(v, v) for v in extra]
    argv = ["--data", str(cli_run.parent / "data"), "--dataset", "fashionmnist", "--arch", "conv2", "--epochs", "1",
            "--device", "cpu", "--mask_dir", str(mask), "--save_dir", str(tmp_path / "out")] + extra
    assert message in user_error(main_train, argv, capsys)
    assert not (tmp_path / "out").exists()


def test_a_rewind_epoch_that_lt_ignores_is_said_out_loud():
    from lotterypools.cli.commands.main_imp import build_parser, rewind_note

    parser = build_parser()
    assert "has no effect with --prune_type lt" in rewind_note(parser.parse_args(["--prune_type", "lt",
                                                                                 "--rewind_epoch", "5"]), parser)
    assert rewind_note(parser.parse_args(["--prune_type", "lt"]), parser) is None
    assert rewind_note(parser.parse_args(["--prune_type", "rewind_lt", "--rewind_epoch", "5"]), parser) is None
