"""CIFAR/Lottery_pools.py as a user runs it: bad input ends with one line, exit code 2, no traceback."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import script_env
from helpers import folder_snapshot, write_tickets
from lotterypools.config.names import POOL_METHODS
from lotterypools.core.errors import UserError
from lotterypools.pools.run import make_rule

SCRIPT = Path(__file__).resolve().parents[2] / "CIFAR" / "Lottery_pools.py"


def load_script():
    spec = importlib.util.spec_from_file_location("lottery_pools_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """The script's main() with its error wrapper, in this process (a subprocess per case is slow)."""
    with pytest.raises(SystemExit) as exit_info:
        load_script().main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, exit_info.value.code, captured.out, captured.err)


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env=script_env())


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
def test_inference_without_checkpoint_in_a_real_process():
    assert_one_line_error(run_script("--inference", "--dataset", "fashionmnist", "--arch", "conv2"),
                          "the search needs --checkpoint")


def test_missing_and_empty_ticket_folders(tmp_path, capsys):
    assert_one_line_error(run_in_process(capsys, "--checkpoint", str(tmp_path / "nope"), "--arch", "conv2"),
                          "does not exist")
    assert_one_line_error(run_in_process(capsys, "--checkpoint", str(tmp_path), "--arch", "conv2"), "holds no")


def test_ticket_of_another_architecture(tmp_path, capsys):
    write_tickets(tmp_path, 2)  # conv2 tickets for 1-channel 8x8 images and 3 classes
    assert_one_line_error(run_in_process(capsys, "--checkpoint", str(tmp_path), "--arch", "resnet20s", "--dataset",
                                         "cifar10"), "does not fit --arch resnet20s on cifar10", "missing")


@pytest.mark.parametrize("flags, fragment", [
    (["--interpolation_value_list", "0.5", "1.5"], "outside [0, 1]"),
    (["--search_num", "0"], "--search_num 0"),
    (["--arch", "resnet99"], "unknown architecture 'resnet99'"),
    (["--dataset", "imagenet21k"], "unknown data set 'imagenet21k'"),
])
def test_bad_settings(tmp_path, capsys, flags, fragment):
    write_tickets(tmp_path, 2)
    args = ["--checkpoint", str(tmp_path), "--arch", "conv2", "--dataset", "fashionmnist", *flags]
    assert_one_line_error(run_in_process(capsys, *args), fragment)


@pytest.mark.parametrize("method", ["soup", "lottery_pools", "liner_inter "])
def test_an_unknown_method_is_refused_naming_the_flag_and_every_method_and_nothing_is_written(tmp_path, capsys, method):
    tickets = tmp_path / "tickets"
    write_tickets(tickets, 2)
    before = folder_snapshot(tickets)
    result = run_in_process(capsys, "--interpolate_method", method, "--checkpoint", str(tickets), "--arch", "conv2",
                            "--dataset", "fashionmnist", "--save_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and not result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert ": error: " in last and "--interpolate_method" in last and repr(method) in last
    named = last[last.index("choose from"):]
    assert all(repr(m) in named for m in POOL_METHODS) and named.count("'") == 2 * len(POOL_METHODS)
    assert not (tmp_path / "out").exists() and folder_snapshot(tickets) == before


def test_every_method_the_script_offers_has_a_search_rule_and_the_library_refuses_others_in_one_line():
    """The script's list of methods is the library's: liner_inter draws paths, every other one is a pool rule."""
    parser_choices = next(a.choices for a in load_script().build_parser()._actions if a.dest == "interpolate_method")
    assert tuple(parser_choices) == POOL_METHODS
    rules = {m: make_rule(m, [0.3, 0.7], 0.9) for m in POOL_METHODS if m != "liner_inter"}
    assert {m: rule.name for m, rule in rules.items()} == {m: m for m in rules}  # each method its own rule
    assert rules["Lottery_pools"].greedy and rules["Lottery_pools"].coefficients(1) == [0.3, 0.7]
    assert not rules["interpolate_swa"].greedy and rules["interpolate_swa"].coefficients(3) == [0.25]
    assert not rules["interpolate_ema"].greedy and rules["interpolate_ema"].coefficients(3) == [0.9]
    with pytest.raises(UserError) as error:
        make_rule("soup", [0.5], 0.95)
    message = str(error.value)
    assert "\n" not in message and "--interpolate_method 'soup'" in message
    assert all(m in message for m in POOL_METHODS)
