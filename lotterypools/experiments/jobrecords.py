"""What each finished job ran with, so that a rerun skips it only when it would run the very same command.

A job that ends with exit code 0 gets ``logs/<job>.done.json``: its module, its exact arguments and the
experiment's output folder. Before any work the runner compares every finished job with its record: the same
flags skip it, other flags stop the experiment with one line, and a finished job without a record (made before
records existed) is skipped as it always was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..core.errors import UserError
from ..core.records import write_json
from .plan import Job

DONE_SUFFIX = ".done.json"
LEGACY_NAME = "finished_jobs.json"  # older versions' record: job name -> arguments joined by spaces
OUTPUT_MARK = "<output>"
IGNORED_ARGS = ("--resume",)  # the plan adds it whenever the run folder exists; it changes no result

Flags = dict[str, tuple[str, ...]]


def flag_values(words: Sequence[str]) -> Flags:
    """``ensemble --k 2 --inference`` as ``{"": ("ensemble",), "--k": ("2",), "--inference": ()}``."""
    flags: dict[str, list[str]] = {"": []}
    current = ""
    for word in words:
        if word.startswith("--"):
            current = word
            flags.setdefault(current, [])
        else:
            flags[current].append(word)
    return {flag: tuple(values) for flag, values in flags.items() if flag or values}


def first_difference(old: Flags, new: Flags) -> str | None:
    """The first flag whose values differ, as ``--epochs 1 before, 2 now``; None when the flags are equal."""
    for flag in [*new, *(flag for flag in old if flag not in new)]:
        if old.get(flag) != new.get(flag):
            return f"{flag or 'arguments'} {_shown(old.get(flag))} before, {_shown(new.get(flag))} now"
    return None


def _shown(values: tuple[str, ...] | None) -> str:
    if values is None:
        return "not given"
    return " ".join(values) if values else "set"


def _relative(word: str, output: str) -> str:
    # the experiment's own paths name its output folder: a moved or copied output folder is the same experiment
    if word == output or word.startswith(output + os.sep):
        return OUTPUT_MARK + word[len(output):]
    return word


class JobRecords:
    """The records of the jobs that ended with exit code 0, in the experiment's ``logs`` folder."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.output = str(logs.parent)
        try:
            self.legacy: dict[str, str] = dict(json.loads((logs / LEGACY_NAME).read_text()))
        except (OSError, ValueError, TypeError):
            self.legacy = {}

    def path(self, job: Job) -> Path:
        return self.logs / f"{job.name}{DONE_SUFFIX}"

    def add(self, job: Job) -> None:
        """Record that ``job`` ended with exit code 0, with its exact arguments (written atomically)."""
        write_json(self.path(job), {"module": job.module, "args": list(job.args), "output": self.output})

    def change(self, job: Job) -> str | None:
        """How ``job``'s planned command differs from its recorded one (``--epochs 1 before, 2 now``); None when
        it is the same or there is no record."""
        recorded = self._read(job)
        if recorded is not None:
            module, args, output = recorded
            if module != job.module:
                return f"module {module} before, {job.module} now"
            old = [_relative(arg, output) for arg in args if arg not in IGNORED_ARGS]
            new = [_relative(arg, self.output) for arg in job.args if arg not in IGNORED_ARGS]
            return first_difference(flag_values(old), flag_values(new))
        if job.name in self.legacy:  # joined by spaces: split both sides alike, paths with spaces included
            old = str(self.legacy[job.name]).split(" ")
            new = " ".join(arg for arg in job.args if arg not in IGNORED_ARGS).split(" ")
            output = self._legacy_output(job, old)
            return first_difference(flag_values([_relative(arg, output) for arg in old]),
                                    flag_values([_relative(arg, self.output) for arg in new]))
        return None

    def _legacy_output(self, job: Job, old: list[str]) -> str:
        """The output folder of an older version's record: its job folder without the part below the output."""
        folder = str(job.folder() or "")
        if not folder.startswith(self.output + os.sep):
            return self.output
        inside = folder[len(self.output):]  # e.g. "/imp/seed3"
        recorded = next((old[i + 1] for i, word in enumerate(old[:-1]) if word in ("--save_dir", "--tickets_dir")), "")
        return recorded[:-len(inside)] if recorded.endswith(inside) else self.output

    def has(self, job: Job) -> bool:
        """Whether ``job`` has a record (of this version or an older one)."""
        return self._read(job) is not None or job.name in self.legacy

    def holds(self, job: Job) -> bool:
        """Whether ``job`` is finished with the planned command: by its own check, or by a record of the same
        command while its folder is still there (a deleted folder is redone)."""
        if job.finished():
            return True
        folder = job.folder()
        return self.has(job) and self.change(job) is None and (folder is None or folder.exists())

    def _read(self, job: Job) -> tuple[str, list[str], str] | None:
        try:
            data = json.loads(self.path(job).read_text())
            return str(data["module"]), [str(arg) for arg in data["args"]], str(data["output"])
        except (OSError, ValueError, TypeError, KeyError):  # none, or unreadable: treated as made before records
            return None


def refuse_changed(jobs: Sequence[Job], records: JobRecords) -> None:
    """Stop, before any work, at the first finished job whose record holds another command line."""
    for job in jobs:
        if not job.finished():
            continue
        change = records.change(job)
        if change is not None:
            raise UserError(f"{job.name} finished with other settings ({change}): to keep that run, give "
                            f"[experiment] output a new folder; to redo it, delete {_redo_folders(job, jobs, records)}")


def _redo_folders(job: Job, jobs: Sequence[Job], records: JobRecords) -> str:
    """The folders of ``job`` and of every job that uses its results, relative to the output folder."""
    names, grew = {job.name}, True
    while grew:
        users = {other.name for other in jobs if names & set(other.after)}
        grew = not users <= names
        names |= users
    folders = dict.fromkeys(_relative(str(other.folder()), records.output).removeprefix(OUTPUT_MARK + os.sep)
                            for other in jobs if other.name in names and other.folder() is not None)
    return f"{', '.join(folders)} in {records.output}"
