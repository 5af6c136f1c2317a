"""Hyperparameters declared once: the generated flags, their aliases and defaults, and bad values."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from lotterypools.config.settings import (OPENLTH_IMAGENET_DEFAULTS, IMPConfig, add_config_arguments, changed_settings,
                                 config_from_args)
from lotterypools.core.errors import UserError
from helpers import REPO

GROUPS = {"training": "training", "pruning": "pruning"}


def parse(argv: list[str], defaults: dict | None = None) -> IMPConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, GROUPS, defaults=defaults)
    return config_from_args(parser.parse_args(argv))


def test_generated_flags_default_to_the_dataclass():
    assert parse([]) == IMPConfig()


def test_original_spellings_are_aliases():
    a = parse(["--amp", "-b", "64", "--decreasing_lr", "5,7", "-j", "0"])
    b = parse(["--fp16", "--batch_size", "64", "--milestones", "5,7", "--workers", "0"])
    assert a == b and a.amp and a.batch_size == 64 and a.milestones == [5, 7] and a.workers == 0


def test_a_scripts_defaults_replace_the_dataclass_ones_in_values_and_help():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, GROUPS, defaults=OPENLTH_IMAGENET_DEFAULTS)
    config = config_from_args(parser.parse_args([]))
    assert (config.epochs, config.batch_size, config.lr, config.milestones, config.ticket) == (90, 1024, 0.4,
                                                                                             [30, 60, 80], "last")
    assert "(default 30,60,80)" in parser.format_help()


@pytest.mark.parametrize("argv, message", [
    (["--batch_size", "0"], "--batch_size 0 must be at least 1"), (["--lr", "-0.1"], "--lr -0.1 must be positive"),
    (["--warmup", "-1"], "--warmup -1 must be 0 or more"), (["--decreasing_lr", "9O"], "comma-separated epochs"),
    (["--epochs", "0"], "--epochs 0 must be at least 1"), (["--workers", "-2"], "--workers -2 must be 0 or more"),
])
def test_bad_training_flags_are_one_line_errors(argv, message):
    with pytest.raises(UserError, match=message):
        parse(argv)


def test_changed_settings_name_only_what_changes_the_result():
    saved = {**IMPConfig().__dict__, "workers": 9, "pruning_times": 3, "channels_last": True}
    assert changed_settings(saved, IMPConfig()) == []
    assert changed_settings({**saved, "epochs": 3, "milestones": [1]}, IMPConfig()) == ["epochs 3 -> 182",
                                                                                     "milestones 1 -> 91,136"]


def test_changed_nested_settings_name_each_differing_key():
    import dataclasses

    @dataclasses.dataclass
    class Inner:
        density: float = 0.2
        growth: str = "random"

    @dataclasses.dataclass
    class Outer:
        sparse_config: Inner = dataclasses.field(default_factory=Inner)

    saved = {"sparse_config": {"density": 0.1, "growth": "random", "old_key": 1}}
    assert changed_settings(saved, Outer()) == ["sparse_config.density 0.1 -> 0.2", "sparse_config.old_key 1 -> unset"]


def test_the_config_module_imports_no_torch():
    code = "import sys, lotterypools.config.settings; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0


def test_each_scripts_parser_gives_its_documented_defaults():
    from lotterypools.cli.commands import imagenet_imp, main_imp

    assert config_from_args(main_imp.build_parser().parse_args([])) == IMPConfig()
    args = imagenet_imp.build_parser().parse_args(["data", "--save_dir", "run"])
    config = config_from_args(args, defaults=OPENLTH_IMAGENET_DEFAULTS, pruning_times=args.levels + 1)
    assert config == IMPConfig(**OPENLTH_IMAGENET_DEFAULTS)


def test_milestones_past_the_last_epoch_are_said_out_loud():
    notes = IMPConfig(epochs=2).schedule_notes()  # the default milestones 91 and 136 never fire in 2 epochs
    assert len(notes) == 1 and "--decreasing_lr 91,136" in notes[0] and "trains at --lr 0.1" in notes[0]
    partly = IMPConfig(epochs=100).schedule_notes()
    assert len(partly) == 1 and "136" in partly[0] and "that drop never happens" in partly[0]
    assert IMPConfig(epochs=182).schedule_notes() == []
    assert "e.g. --decreasing_lr 1)" in notes[0]  # the example fix is a milestone that fires
    one = IMPConfig(epochs=1, milestones=[1]).schedule_notes()
    assert len(one) == 1 and "no drop is possible" in one[0] and "e.g. --decreasing_lr" not in one[0]
