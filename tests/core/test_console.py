"""Console output: progress bars only on a terminal, so a log file of any training script has no carriage return."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO, script_env, write_mnist_like
from lotterypools.core.console import progress, progress_wanted

DATA = ["--no_download", "--device", "cpu"]
RUNS = {
    "main_imp.py": ["--data", "{data}", "--dataset", "fashionmnist", "--arch", "conv2", "--epochs", "1",
                    "--pruning_times", "1", "--batch_size", "50", "--seed", "1", *DATA],
    "main_PrAC_imp.py": ["--data", "{data}", "--dataset", "fashionmnist", "--arch", "conv2", "--epochs", "1",
                         "--pruning_times", "1", "--batch_size", "50", "--seed", "1", *DATA],
    "main_DST.py": ["--data_dir", "{data}", "--data", "fashionmnist", "--model", "conv2", "--epochs", "1",
                    "--batch-size", "50", "--sparse", "--density", "0.3", "--seed", "1", *DATA],
}


class FakeTerminal:
    def isatty(self) -> bool:
        return True


def test_progress_is_wanted_only_on_a_terminal_and_without_no_progress(tmp_path):
    with open(tmp_path / "log.txt", "w") as file:
        assert not progress_wanted(stream=file)
    assert progress_wanted(stream=FakeTerminal())
    assert not progress_wanted(True, stream=FakeTerminal())
    items = [1, 2, 3]
    assert progress(items, "x", enabled=False) is items


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(RUNS))
def test_a_training_script_writes_no_carriage_return_into_log_files(script, tmp_path):
    write_mnist_like(tmp_path / "data" / "fashionmnist", train=5100, test=60)
    args = [a.replace("{data}", str(tmp_path / "data")) for a in RUNS[script]] + ["--save_dir", str(tmp_path / "run")]
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        result = subprocess.run([sys.executable, str(REPO / "CIFAR" / script), *args], stdout=out, stderr=err,
                                cwd=tmp_path, env=script_env(), timeout=300)
    # bytes: reading text would turn each carriage return into a newline
    stdout, stderr = (tmp_path / "stdout.txt").read_bytes(), (tmp_path / "stderr.txt").read_bytes()
    assert result.returncode == 0, stderr[-2000:]
    assert stdout.strip(), "the log lines are still printed"
    assert b"\r" not in stdout and b"\r" not in stderr
