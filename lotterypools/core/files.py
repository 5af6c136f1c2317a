"""Output files and folders: folders checked before long work starts, files written atomically.

``check_writable_folder`` gives a one-line error instead of a traceback hours later; ``atomic_output`` is the
one way files are written (checkpoints, JSON/CSV, arrays): a temporary file beside the target (named with the
writer's PID), renamed over it when complete, removed on failure, and removed on the next write if a crash (or
kill -9) left it behind and its writer is gone.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
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


# What a write fails with when the disk (or the quota, or the device) gives out: one line, and a rerun continues.
DISK_ERRNOS = frozenset(e for e in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG) if e is not None)


def disk_error(path: str | os.PathLike, error: OSError) -> UserError:
    """The one line for a write of ``path`` that failed for lack of space or an I/O error: names the free space."""
    path = Path(path)
    try:
        free = f"{shutil.disk_usage(_nearest_existing(path.parent)).free} bytes free"
    except OSError:
        free = "free space unknown"
    return UserError(f"could not write {path}: {_reason(error)} ({free} on its disk); files written before are kept "
                     f"and a half-written file is never left: free some space (or fix the disk) and rerun the same "
                     f"command to continue")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``os.umask`` sets it to read it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _RecordingStream:
    """A binary file that remembers the ``OSError`` a write raised (torch reports a failed write as a RuntimeError)."""

    def __init__(self, stream: BinaryIO):
        self._stream, self.error = stream, None

    def write(self, data) -> int:
        try:
            return self._stream.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` only once the ``with`` block ends without error.

    The temporary file's name carries the writer's PID (``.<name>.<pid>-<random>.tmp``): temporaries that
    a killed writer left behind are removed, those of a live writer (another process writing the same file)
    never are. The file gets the mode a plain ``open`` would give (``0666`` less the umask), not
    ``mkstemp``'s private 0600. A full disk or an I/O error is one :class:`UserError` naming the file and
    the free space; the earlier version of ``path`` is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as error:
        if error.errno in DISK_ERRNOS:
            raise disk_error(path, error) from None
        raise
    recorder = None
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o666 & ~current_umask())
            recorder = _RecordingStream(stream)
            yield recorder
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = error if isinstance(error, OSError) else getattr(recorder, "error", None)
        if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS and not isinstance(error, KeyboardInterrupt):
            raise disk_error(path, cause) from None
        raise


def _writer_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a temporary of a live writer is never removed)."""
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.<pid>-*.tmp`` files beside ``path`` whose writer process is gone (a kill -9 left them).

    Temporaries of the old naming (no PID) are removed as before: no live writer of this version makes them.
    """
    prefix = f".{path.name}."
    for stale in glob.glob(os.path.join(glob.escape(str(path.parent)), f"{glob.escape(prefix)}*.tmp")):
        middle = os.path.basename(stale)[len(prefix):-len(".tmp")]
        ours = re.fullmatch(r"(\d+)-[a-z0-9_]+", middle)
        if ours is None and not re.fullmatch(r"[a-z0-9_]+", middle):
            continue  # another file's temporary (``.<name>.<more>.<pid>-x.tmp``), not one of ``path``
        if ours is not None and _writer_alive(int(ours.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
