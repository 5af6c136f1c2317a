"""Fixtures shared by the tests (helpers in tests/helpers.py)."""

from __future__ import annotations


import pytest
import torch

from helpers import load_script_main, make_tiny_run, run_script, write_mnist_like

# The tests' tensors are tiny: one thread avoids OpenMP spin-waiting on a busy machine (20x slower there).
DEFAULT_THREADS = torch.get_num_threads()
torch.set_num_threads(1)


@pytest.fixture
def all_threads():
    """Every core torch would use by default, for the one test that trains on a real data set."""
    torch.set_num_threads(DEFAULT_THREADS)
    yield
    torch.set_num_threads(1)


@pytest.fixture
def tiny_run(tmp_path):
    """A finished 3-round rewind_lt IMP run of conv2 on the tiny data set."""
    return make_tiny_run(tmp_path)


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """A two-round main_imp.py run (conv2, tiny Fashion-MNIST idx files) made by a subprocess: its folder.

    The data folder is ``<folder>/../data``; the process's output is in ``<folder>/../output.txt``.
    """
    base = tmp_path_factory.mktemp("cli")
    write_mnist_like(base / "data" / "fashionmnist", train=5096, test=64)
    folder = base / "run"
    result = run_script("main_imp.py", "--data", str(base / "data"), "--dataset", "fashionmnist", "--arch", "conv2",
                        "--epochs", "2", "--pruning_times", "2", "--prune_type", "rewind_lt", "--rewind_epoch", "1",
                        "--batch_size", "32", "--decreasing_lr", "1", "--device", "cpu", "--seed", "3",
                        "--no_download", "--save_dir", str(folder))
    (base / "output.txt").write_text(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


@pytest.fixture(scope="session")
def main_imp():
    return load_script_main("main_imp.py")


@pytest.fixture(scope="session")
def main_train():
    return load_script_main("main_train.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny Fashion-MNIST in idx files: 100 training, 5000 validation and 60 test images."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root / "fashionmnist", train=5100, test=60)
    return root
