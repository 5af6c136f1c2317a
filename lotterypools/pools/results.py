"""``pools_results.json`` / ``.csv``: the records of every pool run over one ticket folder, safe to share.

Each record names itself: its method, target round and every setting that changes its numbers
(:data:`IDENTITY_FIELDS` and :data:`SETTING_FIELDS`), so runs with other settings coexist in one file and a
rerun recognises the records it already made. A pooled ticket's record also lists the candidate rounds its
search walked (:data:`CANDIDATES_FIELD`, not part of the key): a rerun over a folder that now gives other
candidates replaces it (:func:`made_from_other_candidates`). Every change is a read-merge-write under an exclusive lock
on ``.pools_results.lock`` (:mod:`filelock`, as the run-folder lock), followed by an atomic rename: runs that write into one
folder at the same time (other methods, other settings, other processes) all keep their records, and a
crash or a full disk leaves the file as it was before that write.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..core.errors import UserError
from ..core.records import format_table, provenance, read_json, write_csv, write_json

import filelock

IDENTITY_FIELDS = ["arch", "dataset", "seed", "ticket_folder"]
CANDIDATES_FIELD = "candidate_rounds"  # the rounds a target's search walked, in order (absent in older records)
SETTING_FIELDS = ["coefficients", "search_num", "bn_mode", "bn_batches", "bn_batch_size", "prune_mode", "ema_value"]
RECORD_COLUMNS = ["method", "target_round", "density", "lt_val_acc", "lt_test_acc", "val_acc", "test_acc",
                  "chosen_rounds", "alphas", "seconds", *IDENTITY_FIELDS, *SETTING_FIELDS, CANDIDATES_FIELD]
LINEAR_COLUMNS = ["round_a", "round_b", "loss_barrier", "acc_drop", *IDENTITY_FIELDS, "bn_mode", "bn_batches",
                  "bn_batch_size"]
JSON_NAME, CSV_NAME, LOCK_NAME = "pools_results.json", "pools_results.csv", ".pools_results.lock"


METHOD_LABELS = {
    "ticket": "ticket (IMP)",
    "Lottery_pools": "Lottery Pools (interpolation)",
    "Lottery_pools_average": "Lottery Pools (average)",
    "interpolate_swa": "SWA",
    "interpolate_ema": "EMA",
    "liner_inter": "linear path",
}


def method_label(method: str) -> str:
    """A readable name for a method key (``Lottery_pools_average_prune_after`` -> ``Lottery Pools (average), prune after``)."""
    suffix = ""
    if method.endswith("_prune_after"):
        method, suffix = method[: -len("_prune_after")], ", prune after"
    return METHOD_LABELS.get(method, method.replace("_", " ")) + suffix


def settings_key(record: dict) -> str:
    """The record's identity and settings as one canonical string."""
    return json.dumps({f: record.get(f) for f in IDENTITY_FIELDS + SETTING_FIELDS}, sort_keys=True)


def record_key(record: dict) -> tuple:
    """What makes two records the same result: method, target round, identity and settings."""
    return record["method"], record["target_round"], settings_key(record)


def made_from_other_candidates(record: dict, candidates: Iterable[int]) -> bool:
    """Whether ``record`` was searched over other candidate rounds than ``candidates`` (the folder gives now).

    A record without the field (written before it existed) counts as current: its results stay valid.
    """
    stored = record.get(CANDIDATES_FIELD)
    return stored is not None and list(stored) != list(candidates)


def linear_key(path: dict) -> tuple:
    return path["round_a"], path["round_b"], settings_key(path)


def _merge(old: list[dict], new: list[dict], key: Callable[[dict], tuple]) -> list[dict]:
    """``old`` with the entries of ``new`` replacing those of the same key."""
    keys = {key(n) for n in new}
    return [o for o in old if key(o) not in keys] + new


def _write_error(path: Path, error: OSError, kept: int) -> UserError:
    """A one-line message for a write that failed; the file keeps what it held before."""
    if error.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = "the folder is not writable"
    else:
        reason = error.strerror or str(error)
    return UserError(f"could not write {path}: {reason}; the {kept} records written before are kept in it; "
                     f"fix that and rerun the same command to continue")


class PoolResultsFile:
    """The records (one per method, target and settings) and linear paths of pool runs over one folder."""

    def __init__(self, save_dir: str | os.PathLike):
        self.save_dir = Path(save_dir)
        self.json_path = self.save_dir / JSON_NAME
        self.csv_path = self.save_dir / CSV_NAME
        self.records: list[dict] = []
        self.linear: list[dict] = []
        self.runs: list[dict] = []
        self.reload()

    def reload(self) -> None:
        """Read what is on disk now (other runs may have added to it)."""
        data = read_json(self.json_path, default={}) or {}
        self.records = data.get("records", [])
        self.linear = data.get("linear_paths", [])
        self.runs = data.get("runs", [])

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's exclusive lock (waits while another run writes)."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(self.save_dir / LOCK_NAME)):
            yield

    def find(self, record: dict) -> dict | None:
        """The stored record with ``record``'s key, if any."""
        wanted = record_key(record)
        return next((r for r in self.records if record_key(r) == wanted), None)

    def commit(self, records: Iterable[dict] = (), linear: Iterable[dict] = (), run: dict | None = None) -> None:
        """Merge entries into the file on disk (under the lock) and rewrite it and the CSV atomically."""
        records, linear = list(records), list(linear)
        with self.locked():
            self.reload()
            kept = len(self.records)
            self.records = _merge(self.records, records, record_key)
            self.records.sort(key=lambda r: (r["method"] != "ticket", r["method"], settings_key(r), r["target_round"]))
            self.linear = sorted(_merge(self.linear, linear, linear_key), key=lambda p: (settings_key(p), p["round_a"]))
            if run is not None:
                self.runs.append(run)
            try:
                write_json(self.json_path, {"records": self.records, "linear_paths": self.linear, "runs": self.runs})
                self._write_csv()
            except OSError as error:
                raise _write_error(self.json_path, error, kept) from None

    def add_run(self, **settings: Any) -> None:
        """Store the provenance (commit, versions, flags) of a run."""
        self.commit(run=provenance(**settings))

    def _write_csv(self) -> None:
        ood = ["ood_acc"] if any("ood_acc" in r for r in self.records) else []
        write_csv(self.csv_path, self.records, RECORD_COLUMNS + ood)
        if self.linear:
            write_csv(self.save_dir / "linear_interpolation.csv", self.linear, LINEAR_COLUMNS)

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Test accuracy per density, one series per method (and per setting where one method has several)."""
        out: dict[str, list[tuple[float, float]]] = {}
        for record in self.records:
            out.setdefault(self.column_name(record), []).append((record["density"], record["test_acc"]))
        return out

    def column_name(self, record: dict) -> str:
        """The method, plus the differing settings where the file holds several settings of one method."""
        same_method = {settings_key(r) for r in self.records if r["method"] == record["method"]}
        if len(same_method) <= 1:
            return record["method"]
        varying = [f for f in SETTING_FIELDS + IDENTITY_FIELDS
                   if len({json.dumps(r.get(f)) for r in self.records if r["method"] == record["method"]}) > 1]
        return record["method"] + " [" + ", ".join(f"{f}={record.get(f)}" for f in varying) + "]"

    def comparison_table(self) -> str:
        """Test accuracy per density: one column per method (and setting)."""
        columns: list[str] = []
        rows: dict[int, dict] = {}
        for record in self.records:
            name = self.column_name(record)
            if name not in columns:
                columns.append(name)
            row = rows.setdefault(record["target_round"], {"round": record["target_round"],
                                                          "density%": 100 * record["density"]})
            row[name] = record["test_acc"]
        columns.sort(key=lambda m: (m != "ticket", m))
        return format_table([rows[k] for k in sorted(rows)], ["round", "density%", *columns])
