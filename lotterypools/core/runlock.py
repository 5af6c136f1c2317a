"""One training run per folder at a time: a lock held for the run's lifetime, and its provenance recorded.

:func:`hold_run_folder` takes ``<folder>/.<name>.lock`` with :mod:`filelock` (an OS lock, ``flock`` on
POSIX: the kernel drops it when the holder dies, so a lock left by a killed run is simply taken over) and
writes who holds it (PID, command, host, start) beside it in ``.<name>.lock.holder``. A second run into the
same folder is refused in one line naming that PID and command, instead of interleaving its checkpoints
and tickets with the first. While it holds the lock, the run's provenance (:mod:`lotterypools.provenance`)
is appended to ``provenance.json`` and completed with the end time and how it ended.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import filelock

from .errors import UserError
from .provenance import FILE_NAME, now

# Waiting for provenance.json's short read-modify-write lock (other runs' entries), in seconds.
PROVENANCE_WAIT_S = 60


def lock_paths(folder: Path, name: str = "run") -> tuple[Path, Path]:
    """The lock file and its holder file for run ``name`` in ``folder``."""
    return folder / f".{name}.lock", folder / f".{name}.lock.holder"


def _holder_text(holder_path: Path) -> str:
    try:
        holder = json.loads(holder_path.read_text())
        return f"PID {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: {holder.get('command')}"
    except (OSError, ValueError, AttributeError):
        return "a process that has not yet written its PID"


@contextlib.contextmanager
def hold_run_folder(folder: str | os.PathLike, provenance: dict[str, Any] | None = None, name: str = "run",
                    flag: str = "--save_dir", is_main: bool = True) -> Iterator[None]:
    """Hold run ``name``'s lock on ``folder`` while the block runs; record ``provenance`` in ``provenance.json``.

    Raises :class:`UserError` (one line naming the holder's PID and command) when another live process holds
    it, or when the folder's recorded data set or data fingerprint differs from ``provenance``'s. Only the main
    process of a multi-process run (``is_main``) locks and writes; the others just run the block.
    """
    if not is_main:
        yield
        return
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock_path, holder_path = lock_paths(folder, name)
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise UserError(f"{folder} is in use by another run ({_holder_text(holder_path)}): wait for it to end or "
                        f"stop it, or give another {flag}") from None
    from .records import write_json

    entry = dict(provenance or {})
    entry.setdefault("start", now())
    status = "failed"
    provenance_path = folder / FILE_NAME
    before = provenance_path.read_bytes() if provenance_path.is_file() else None
    try:
        write_json(holder_path, {"pid": os.getpid(), "host": entry.get("host") or os.uname().nodename,
                                 "command": entry.get("command", ""), "since": entry["start"]})
        _record_start(folder, entry, flag)
        try:
            yield
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except UserError as error:
            status = "diverged" if type(error).__name__ == "DivergenceError" else "refused"
            raise
        finally:
            with contextlib.suppress(OSError, UserError):  # a full disk must not hide the run's own error
                if status == "refused":  # a refused command changes nothing, its provenance entry included
                    _restore(provenance_path, before)
                else:
                    _record_end(folder, entry, status)
    except UserError:
        status = "refused" if status == "failed" else status
        raise
    finally:
        with contextlib.suppress(OSError):
            holder_path.unlink()
        lock.release()
        if created and status == "refused":  # a refused command leaves no folder behind
            _remove_if_only_ours(folder)


def _restore(path: Path, before: bytes | None) -> None:
    """Put ``provenance.json`` back as it was before this run started (or remove it if it did not exist)."""
    from .files import atomic_output

    if before is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    with atomic_output(path) as stream:
        stream.write(before)


def _remove_if_only_ours(folder: Path) -> None:
    """Remove a folder this run created and a refusal left holding only the lock's and provenance's files."""
    with contextlib.suppress(OSError):
        names = {p.name for p in folder.iterdir()}
        if all(n == FILE_NAME or n.endswith(".lock") or n.endswith(".lock.holder") for n in names):
            for name in names:
                (folder / name).unlink()
            folder.rmdir()


@contextlib.contextmanager
def _provenance_file(folder: Path) -> Iterator[tuple[Path, dict]]:
    """``provenance.json`` read under its own short lock (several runs of one folder may start at once)."""
    from .records import read_json, write_json

    path = folder / FILE_NAME
    with filelock.FileLock(str(folder / f".{FILE_NAME}.lock"), timeout=PROVENANCE_WAIT_S):
        data = read_json(path, default={})
        if not isinstance(data, dict):
            raise UserError(f"{path} is not a provenance record (a JSON object): move it away and rerun")
        yield path, data
        write_json(path, data)


def _record_start(folder: Path, entry: dict, flag: str) -> None:
    with _provenance_file(folder) as (path, data):
        for key, what in (("dataset", "data set"), ("data_fingerprint", "data (sizes and labels)")):
            if data.get(key) is not None and entry.get(key) is not None and data[key] != entry[key]:
                raise UserError(f"{folder} holds a run on another {what} ({key} {json.dumps(data[key])[:120]}, "
                                f"now {json.dumps(entry[key])[:120]}): give another {flag} or the same data")
        for key in ("dataset", "normalisation", "data_dir", "data_fingerprint"):
            if data.get(key) is None and entry.get(key) is not None:
                data[key] = entry[key]
        data.setdefault("runs", []).append(entry)


def _record_end(folder: Path, entry: dict, status: str) -> None:
    with _provenance_file(folder) as (_, data):
        for run in reversed(data.get("runs", [])):
            if run.get("pid") == entry.get("pid") and run.get("start") == entry.get("start"):
                run.update(end=now(), status=status)
                break


__all__ = ["hold_run_folder", "lock_paths"]
