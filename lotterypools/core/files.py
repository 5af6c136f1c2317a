"""Output files and folders: folders checked before long work starts, files written atomically.

``check_writable_folder`` gives a one-line error instead of a traceback hours later; ``atomic_output`` is the
one way files are written (checkpoints, JSON/CSV, arrays): a temporary file beside the target, renamed over it
when complete, removed on failure, and removed on the next write if a crash (or kill -9) left it behind.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import UserError

# Below this much free space a run cannot write even one checkpoint of the smallest model.
MIN_FREE_BYTES = 1 << 20


def check_writable_folder(path: Path, flag: str, min_free_bytes: int = MIN_FREE_BYTES, create: bool = True) -> None:
    """Create the folder ``path`` (given by the option ``flag``) if missing, and make sure files can be written there.

    Raises :class:`UserError` (one line naming ``flag``, the path, the reason and the fix) when ``path`` is an
    existing file, cannot be created, is read-only, or its disk has less than ``min_free_bytes`` free. With
    ``create=False`` a missing folder is not made: its nearest existing parent is checked instead, so that a
    command refused later for another reason leaves nothing behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is an existing file, not a folder: give a folder path for {flag}")
    if not path.exists() and not create:
        parent = _nearest_existing(path)
        if not parent.is_dir():
            raise UserError(f"{flag} {path} cannot be created ({parent} is a file): give {flag} a folder path "
                            f"that does not pass through a file")
        _check_writes(parent, flag, f"{flag} {path} cannot be created: {parent}", min_free_bytes)
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {path} cannot be created ({_reason(error)}): "
                        f"give {flag} a folder in a place you can write") from None
    _check_writes(path, flag, f"{flag} {path}", min_free_bytes)


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest parent that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writes(folder: Path, flag: str, subject: str, min_free_bytes: int) -> None:
    """Write and remove a small file in ``folder`` (permission bits do not tell for root or read-only mounts)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-", delete=True) as handle:
            handle.write(b"0")
            handle.flush()
    except OSError as error:
        what = "is on a full disk" if error.errno == errno.ENOSPC else f"is not writable ({_reason(error)})"
        raise UserError(f"{subject} {what}: give {flag} a folder you can write, or free space / fix its "
                        f"permissions") from None
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise UserError(f"{subject} is on a full disk ({free} bytes free): free some space or give {flag} "
                        f"a folder on another disk")


def _reason(error: OSError) -> str:
    """The operating system's reason without the repeated path (``Permission denied``, ``Read-only file system``)."""
    return error.strerror or os.strerror(error.errno or 0) or type(error).__name__


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` only once the ``with`` block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.*.tmp`` files beside ``path``: what an interrupted earlier write of ``path`` left behind."""
    for stale in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
