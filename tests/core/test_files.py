"""Output folders are checked before work starts: created when missing, one-line errors otherwise."""

from __future__ import annotations

import errno
import os
import tempfile
from collections import namedtuple

import pytest

from lotterypools.core import files
from lotterypools.core.errors import UserError
from lotterypools.core.files import check_writable_folder


def one_line_error(path, flag: str = "--save_dir", **kwargs) -> str:
    with pytest.raises(UserError) as caught:
        check_writable_folder(path, flag, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and flag in message and str(path) in message
    return message


def test_missing_folder_is_created_with_parents(tmp_path):
    folder = tmp_path / "a" / "b" / "run"
    check_writable_folder(folder, "--save_dir")
    assert folder.is_dir()
    assert list(folder.iterdir()) == []  # the write probe leaves nothing behind


def test_existing_folder_keeps_its_files(tmp_path):
    (tmp_path / "0checkpoint.pth.tar").write_bytes(b"x")
    check_writable_folder(tmp_path, "--save_dir")
    assert [p.name for p in tmp_path.iterdir()] == ["0checkpoint.pth.tar"]


def test_existing_file_is_refused_and_kept(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert "existing file" in one_line_error(target)
    assert target.read_text() == "keep me"


def test_folder_below_a_file_cannot_be_created(tmp_path):
    (tmp_path / "plain").write_text("")
    assert "cannot be created" in one_line_error(tmp_path / "plain" / "run", flag="--out")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert "not writable" in one_line_error(folder)
    finally:
        folder.chmod(0o755)


def test_read_only_file_system_is_refused(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    message = one_line_error(tmp_path)
    assert "not writable" in message and "Read-only file system" in message


def test_full_disk_is_refused(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_space)
    assert "full disk" in one_line_error(tmp_path)


def test_almost_full_disk_is_refused(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage(100, 90, 10))
    assert "full disk" in one_line_error(tmp_path, flag="--out")


def test_without_create_a_missing_folder_is_checked_but_not_made(tmp_path):
    folder = tmp_path / "a" / "run"
    check_writable_folder(folder, "--save_dir", create=False)
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []


def test_without_create_a_path_through_a_file_is_refused(tmp_path):
    (tmp_path / "plain").write_text("")
    message = one_line_error(tmp_path / "plain" / "run", create=False)
    assert "cannot be created" in message and "is a file" in message


def test_without_create_a_read_only_parent_is_refused(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    message = one_line_error(tmp_path / "new" / "run", create=False)
    assert "cannot be created" in message and "Read-only file system" in message
    assert not (tmp_path / "new").exists()
