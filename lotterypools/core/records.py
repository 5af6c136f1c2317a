"""Result files (JSON and CSV, written atomically) and tables for the terminal (plots: :mod:`lotterypools.analysis.plots`)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .files import atomic_output


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to a temporary file beside ``path`` and rename it over ``path``."""
    with atomic_output(path) as stream:
        stream.write(text.encode())


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        from .errors import UserError
        raise UserError(f"{path} is not valid JSON ({error}); move it away to start a fresh results file") from None


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV; list values are joined with spaces."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 2) -> str:
    """A plain-text table with aligned columns."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        if isinstance(value, (list, tuple)):
            return ",".join(cell(v) for v in value) or "-"
        return "-" if value is None else str(value)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def provenance(**extra: Any) -> dict[str, Any]:
    """Command, package version and commit, library versions, machine and time, stored next to every result.

    ``extra`` adds the run's settings (and its data: :func:`lotterypools.provenance.data_provenance`).
    """
    from .provenance import command_line, now, software

    return {**software(), "command": command_line(), "time": now(), **extra}
