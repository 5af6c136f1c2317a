"""One meaning per flag name: the per-script alias tables and the originals' flags that have no effect here."""

from __future__ import annotations

import argparse
import importlib

import pytest

from lotterypools.cli.aliases import NO_EFFECT, SCRIPT_ALIASES, say_no_effect


def parser_of(module: str):
    return importlib.import_module(f"lotterypools.cli.commands.{module}").build_parser()


def all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's actions and its subcommands'."""
    found = []
    for action in parser._actions:
        found.append(action)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += all_actions(sub)
    return found


def test_every_alias_is_a_spelling_of_its_setting_in_that_script_only():
    for module, table in SCRIPT_ALIASES.items():
        actions = {a.dest: a for a in all_actions(parser_of(module))}
        for setting, spellings in table.items():
            assert setting in actions, f"{module} has no {setting}"
            assert set(spellings) <= set(actions[setting].option_strings), (module, setting)


@pytest.mark.parametrize("module, argv, dest, value", [
    ("main_dst", ["--data", "cifar100"], "dataset", "cifar100"),  # FreeTickets: --data names the data set
    ("main_imp", ["--data", "cifar100"], "data", "cifar100"),  # elsewhere it is the folder
    ("main_dst", ["--l2", "0.01"], "weight_decay", 0.01),
    ("main_prac_imp", ["--rewind_epoch", "2"], "rewind_index", 2),  # PrAC's 0-based index
    ("main_imp", ["--rewind_epoch", "2"], "rewind_epoch", 2),  # IMP's count of epochs
    ("imagenet_edst", ["data", "-b", "32"], "per_process_batch", 32),
    ("imagenet_edst", ["data", "--wd", "0.01"], "weight_decay", 0.01),
    ("imagenet_pools", ["data", "--save_dir", "t", "-b", "32"], "bn_batch_size", 32),
    ("main_imp", ["-b", "32"], "batch_size", 32),  # the global batch
    ("lottery_pools", ["--batch_size", "32"], "bn_batch_size", 32),
    ("ensemble_freetickets", ["--resume", "tickets"], "tickets_dir", "tickets"),
])
def test_a_flag_name_sets_the_setting_it_names_in_that_script(module, argv, dest, value):
    assert getattr(parser_of(module).parse_args(argv), dest) == value


@pytest.mark.parametrize("module, flag", [("main_imp", "--l2"), ("main_imp", "--rewind_index"),
                                          ("lottery_pools", "--l2"), ("main_dst", "--bn_batch_size")])
def test_a_spelling_of_another_script_is_not_accepted(module, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        parser_of(module).parse_args([flag, "1"])
    assert stop.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_no_effect_flags_are_accepted_with_a_one_line_note_and_not_stored(capsys):
    args = parser_of("lottery_pools").parse_args(["--inference", "--rewind_epoch", "9", "--search_num", "19"])
    assert capsys.readouterr().out == ""  # parsing alone (an experiment's check of a job) says nothing
    say_no_effect(args)
    out = capsys.readouterr().out.splitlines()
    assert out == ["note: --inference has no effect: the tickets are always evaluated first",
                   "note: --rewind_epoch 9 has no effect: the search reads the tickets as they are (the rewind point "
                   "mattered when main_imp.py trained them)"]
    assert not any(name.startswith("no_effect") or name in ("inference", "rewind_epoch") for name in vars(args))
    from lotterypools.cli.pools import recorded_settings

    assert "_no_effect_notes" not in recorded_settings(args)  # not stored with the results
    assert args.search_num == 19


def test_the_ensemble_refuses_its_unused_batch_size_in_one_line():
    from lotterypools.core.errors import UserError

    with pytest.raises(UserError, match=r"^--batch-size 64 has no effect here: .*--test-batch-size; drop it$"):
        parser_of("ensemble_freetickets").parse_args(["--resume", "t", "--batch-size", "64"])


def test_every_no_effect_flag_is_in_its_script_s_parser_and_help():
    for module, entries in NO_EFFECT.items():
        parser = parser_of(module)
        for entry in entries:
            assert all(flag in parser._option_string_actions for flag in entry.flags), (module, entry.flags)
        assert "accepted from the original, without effect" in parser.format_help()


def test_freetickets_defaults_stay_the_original_s():
    args = parser_of("main_dst").parse_args([])
    assert (args.sparse_init, args.weight_decay, args.seed, args.batch_size, args.test_batch_size, args.epochs) == \
        ("ER", 5e-4, 17, 128, 100, 250)
    edst = parser_of("imagenet_edst").parse_args(["data"])
    assert (edst.sparse_init, edst.weight_decay, edst.per_process_batch, edst.epochs, edst.epochs_explo,
            edst.epochs_refine, edst.workers, edst.label_smoothing) == ("ERK", 1e-4, 64, 310, 100, 70, 8, 0.0)
