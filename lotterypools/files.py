"""Output folders checked before long work starts: a one-line error instead of a traceback hours later."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError

# Below this much free space a run cannot write even one checkpoint of the smallest model.
MIN_FREE_BYTES = 1 << 20


def check_writable_folder(path: Path, flag: str, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Create the folder ``path`` (given by the option ``flag``) if missing, and make sure files can be written there.

    Raises :class:`UserError` (one line naming ``flag``, the path, the reason and the fix) when ``path`` is an
    existing file, cannot be created, is read-only, or its disk has less than ``min_free_bytes`` free.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is an existing file, not a folder: give a folder path for {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {path} cannot be created ({_reason(error)}): "
                        f"give {flag} a folder in a place you can write") from None
    _probe_write(path, flag)
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise UserError(f"{flag} {path} is on a full disk ({free} bytes free): free some space or give {flag} "
                        f"a folder on another disk")


def _probe_write(folder: Path, flag: str) -> None:
    """Write and remove a small file in ``folder`` (permission bits do not tell for root or read-only mounts)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-", delete=True) as handle:
            handle.write(b"0")
            handle.flush()
    except OSError as error:
        what = "is on a full disk" if error.errno == errno.ENOSPC else f"is not writable ({_reason(error)})"
        raise UserError(f"{flag} {folder} {what}: give {flag} a folder you can write, or fix its permissions") from None


def _reason(error: OSError) -> str:
    """The operating system's reason without the repeated path (``Permission denied``, ``Read-only file system``)."""
    return error.strerror or os.strerror(error.errno or 0) or type(error).__name__
