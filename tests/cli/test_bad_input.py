"""Bad input everywhere: unwritable output folders in every script, unsafe or damaged files, inconsistent ticket
folders, and writes interrupted by a crash. Each ends in one line naming the file and the reason."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_mnist_like
from lotterypools.core import files
from lotterypools.formats import openlth
from lotterypools.formats.original import ticket_files
from lotterypools.core.torchfiles import atomic_save, load_file
from lotterypools.data.corruptions import CorruptedSet
from lotterypools.core.errors import UserError
from lotterypools.models import build_imagenet_model
from lotterypools.core.records import write_json
from lotterypools.pools.store import TicketStore
from helpers import CLASSES, TINY_ARCH, tiny_model, write_openlth_tickets, write_tickets


def one_line(error: UserError, *fragments: str) -> str:
    message = str(error)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ----------------------------------------------------------------------------- output folders of every script
def cifar_tickets(tmp_path: Path) -> Path:
    write_tickets(tmp_path / "tickets", 2)
    return tmp_path / "tickets"


def openlth_tickets(tmp_path: Path) -> Path:
    return write_openlth_tickets(tmp_path / "lth", levels=2)


# module, flag, argv builder (tmp_path, output path) -> argv
SCRIPTS = {
    "main_imp": ("--save_dir", lambda tmp, out: ["--data", str(tmp), "--dataset", "mnist", "--arch", "conv2",
                                                 "--epochs", "2", "--device", "cpu", "--save_dir", str(out)]),
    "main_train": ("--save_dir", lambda tmp, out: ["--data", str(tmp), "--dataset", "mnist", "--arch", "conv2",
                                                   "--mask_dir", "x.pth.tar", "--random_init", "--epochs", "1",
                                                   "--device", "cpu", "--save_dir", str(out)]),
    "lottery_pools": ("--save_dir", lambda tmp, out: ["--checkpoint", str(cifar_tickets(tmp)), "--arch", "conv2",
                                                      "--dataset", "fashionmnist", "--save_dir", str(out)]),
    "analyze_tickets": ("--save_dir", lambda tmp, out: ["pairwise", "--checkpoint", str(cifar_tickets(tmp)),
                                                        "--arch", "conv2", "--dataset", "fashionmnist",
                                                        "--save_dir", str(out)]),
    "make_corrupted": ("--out", lambda tmp, out: ["--dataset", "fashionmnist", "--data", str(tmp), "--out", str(out)]),
    "imagenet_imp": ("--save_dir", lambda tmp, out: ["--save_dir", str(out), str(tmp), "--arch", "resnet20s",
                                                     "--device", "cpu", "-b", "4"]),
    "imagenet_pools": ("--results_dir", lambda tmp, out: ["--save_dir", str(openlth_tickets(tmp)), str(tmp),
                                                          "--arch", "resnet20s", "--device", "cpu",
                                                          "--results_dir", str(out)]),
}


def script_error(module: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"lotterypools.cli.commands.{module}").main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("module", sorted(SCRIPTS))
def test_an_output_path_that_is_a_file_is_refused_and_kept(module, tmp_path, capsys):
    flag, argv = SCRIPTS[module]
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    err = script_error(module, argv(tmp_path, target), capsys)
    assert flag in err and str(target) in err and "existing file" in err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("module", sorted(SCRIPTS))
def test_a_read_only_place_is_refused_before_work_starts(module, tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    flag, argv = SCRIPTS[module]
    arguments = argv(tmp_path, tmp_path / "out" / "run")
    monkeypatch.setattr(files.tempfile, "NamedTemporaryFile", read_only)
    err = script_error(module, arguments, capsys)
    assert flag in err and "Read-only file system" in err and str(tmp_path / "out" / "run") in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", ["main_imp", "make_corrupted", "imagenet_pools"])
def test_a_full_disk_is_refused_before_work_starts(module, tmp_path, capsys, monkeypatch):
    flag, argv = SCRIPTS[module]
    arguments = argv(tmp_path, tmp_path / "out")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9 - 100, 100))
    err = script_error(module, arguments, capsys)
    assert flag in err and "full disk" in err


def test_main_imp_refuses_an_unwritable_save_dir_before_reading_data(tmp_path, capsys):
    (tmp_path / "plain").write_text("")
    write_mnist_like(tmp_path / "mnist", train=10, test=10)  # too few images: reading would fail, but later
    err = script_error("main_imp", SCRIPTS["main_imp"][1](tmp_path, tmp_path / "plain" / "run"), capsys)
    assert "cannot be created" in err and "is a file" in err


@pytest.mark.parametrize("module", ["imagenet_imp", "imagenet_pools"])
def test_imagenet_commands_refuse_an_unknown_arch_before_scanning_the_images(module, tmp_path, capsys):
    argv = SCRIPTS[module][1](tmp_path, tmp_path / "out")  # tmp_path holds no train/ or val/ images
    argv[argv.index("resnet20s")] = "resnet99"
    err = script_error(module, argv, capsys)
    assert "unknown architecture 'resnet99'" in err and "wrn-D-W" in err


def test_imagenet_edst_refuses_an_unknown_arch_before_scanning_the_images(tmp_path, capsys):
    err = script_error("imagenet_edst", [str(tmp_path), "--arch", "resnet99", "--device", "cpu"], capsys)
    assert "unknown architecture 'resnet99'" in err


# ----------------------------------------------------------------------------- unsafe and damaged files
class RunsAShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_an_unsafe_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "0model_SA_best.pth.tar"
    marker = tmp_path / "code-was-run"
    torch.save({"state_dict": tiny_model().state_dict(), "result": RunsAShellCommand(marker)}, path)
    with pytest.raises(UserError) as caught:
        load_file(path)
    one_line(caught.value, str(path), "unsafe", "system")
    with pytest.raises(UserError) as caught:
        TicketStore(ticket_files(tmp_path), tiny_model().state_dict(), "conv2")
    one_line(caught.value, str(path), "unsafe")
    assert not marker.exists()


def test_a_truncated_checkpoint_gives_torch_s_whole_reason_on_one_line(tmp_path):
    path = tmp_path / "ticket.pth.tar"
    torch.save(tiny_model().state_dict(), path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError) as caught:
        load_file(path)
    one_line(caught.value, str(path), "unreadable")


def write_corrupted_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "labels.npy", labels, allow_pickle=True)
    np.save(folder / "contrast.npy", images, allow_pickle=True)


@pytest.mark.parametrize("bad", ["images", "labels"])
def test_an_object_array_in_an_ood_folder_is_refused_as_unsafe(tmp_path, bad):
    images = np.zeros((10, 8, 8), dtype=np.uint8)
    labels = np.zeros(10, dtype=np.int64)
    if bad == "images":
        images = np.array([RunsAShellCommand(tmp_path / "ran")] * 10, dtype=object)
    else:
        labels = np.array([{"label": 1}] * 10, dtype=object)
    write_corrupted_folder(tmp_path / "ood", images, labels)
    with pytest.raises(UserError) as caught:
        CorruptedSet(tmp_path / "ood").select(None)
    one_line(caught.value, f"{bad if bad == 'labels' else 'contrast'}.npy", "object array", "unsafe")
    assert not (tmp_path / "ran").exists()


def test_a_damaged_npy_in_an_ood_folder_is_one_line(tmp_path):
    write_corrupted_folder(tmp_path / "ood", np.zeros((10, 8, 8), np.uint8), np.zeros(10, np.int64))
    (tmp_path / "ood" / "contrast.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError) as caught:
        CorruptedSet(tmp_path / "ood").select(None)
    one_line(caught.value, "contrast.npy", "not a readable .npy")


# ----------------------------------------------------------------------------- inconsistent ticket folders
def test_a_gap_in_the_rounds_gets_the_same_answer_in_both_layouts(tmp_path):
    cifar = tmp_path / "cifar"
    write_tickets(cifar, 3)
    (cifar / "1model_SA_best.pth.tar").unlink()
    lth = write_openlth_tickets(tmp_path / "lth", levels=3)
    for path in openlth.level_dir(lth, 1).iterdir():
        path.unlink()
    openlth.level_dir(lth, 1).rmdir()
    (lth / "level_1").rmdir()
    with pytest.raises(UserError) as cifar_error:
        ticket_files(cifar)
    with pytest.raises(UserError) as lth_error:
        openlth.level_files(lth)
    one_line(cifar_error.value, "has no ticket of round 1", "but has round 2", "without a gap")
    assert str(cifar_error.value).replace(str(cifar), "FOLDER") == str(lth_error.value).replace(str(lth), "FOLDER")
    assert [f.round for f in ticket_files(cifar, allow_gaps=True)] == [0, 2]  # a folder of some pooled targets


def test_a_folder_mixing_data_sets_gets_one_line_in_the_original_layout(tmp_path):
    write_tickets(tmp_path, 3)
    path = tmp_path / "2model_SA_best.pth.tar"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["normalize.mean"] = torch.tensor([0.1307])  # MNIST's mean: another data set
    atomic_save(checkpoint, path)
    with pytest.raises(UserError) as caught:
        TicketStore(ticket_files(tmp_path), tiny_model().state_dict(), "--arch conv2 on tiny")
    one_line(caught.value, "mixes runs of different data sets", "2model_SA_best.pth.tar", "normalize.mean")


def test_a_folder_mixing_data_sets_gets_the_same_answer_in_openlth_layout(tmp_path):
    root = write_openlth_tickets(tmp_path / "lth", levels=3)
    other = write_openlth_tickets(tmp_path / "other", levels=3, classes=CLASSES + 7)
    level_2 = openlth.level_files(root)[2].path
    for name in ("mask.pth", level_2.name):  # level 2 of a run on a data set with more classes
        (openlth.level_dir(other, 2) / name).replace(level_2.parent / name)
    reference = build_imagenet_model(TINY_ARCH, CLASSES, 32).state_dict()
    with pytest.raises(UserError) as caught:
        TicketStore(openlth.level_files(root), reference, "--arch resnet20s", reader=openlth.read_level)
    one_line(caught.value, "mixes runs of different data sets", str(level_2), "shapes differ")


# ----------------------------------------------------------------------------- interrupted writes
class FailsHalfway:
    def __reduce__(self):
        raise RuntimeError("interrupted while writing")


def test_a_failed_write_leaves_no_temporary_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "0checkpoint.pth.tar"
    atomic_save({"epoch": 1}, path)
    with pytest.raises(RuntimeError):
        atomic_save({"epoch": 2, "bad": FailsHalfway()}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0checkpoint.pth.tar"]
    assert load_file(path) == {"epoch": 1}


def test_temporaries_left_by_a_crash_are_removed_by_the_next_write(tmp_path):
    for name in ("summary.json", "0checkpoint.pth.tar"):
        (tmp_path / f".{name}.k3j2_x.tmp").write_bytes(b"half a file")  # as a kill -9 mid-write leaves them
    (tmp_path / ".other.json.abc.tmp").write_bytes(b"another file's")  # not ours to remove
    write_json(tmp_path / "summary.json", {"round": 1})
    atomic_save({"epoch": 1}, tmp_path / "0checkpoint.pth.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc.tmp", "0checkpoint.pth.tar", "summary.json"]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"round": 1}


def _command_parsers():
    import pkgutil

    from lotterypools.cli import commands

    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        parser = module.build_parser()
        subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        yield info.name, parser
        for action in subparsers:
            yield from ((f"{info.name} {name}", sub) for name, sub in action.choices.items())


def test_no_command_takes_an_abbreviated_flag():
    parsers = dict(_command_parsers())
    assert {"main_imp", "main_sms", "lottery_pools", "analyze_tickets ensemble", "experiment"} <= set(parsers)
    assert [name for name, parser in parsers.items() if parser.allow_abbrev] == []
    with pytest.raises(SystemExit):  # a misspelled --pruning_times is an error, not taken as the flag
        parsers["main_imp"].parse_args(["--pruning_time", "2"])
