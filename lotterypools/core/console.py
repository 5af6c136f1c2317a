"""Console output: log lines, progress bars shown only on a terminal, and the ``--no_progress`` switch.

A batch system's log file gets plain lines only (one per finished unit of work); a terminal also gets tqdm
progress bars. Every front end decides once with :func:`progress_wanted` and passes the answer down.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, TextIO, TypeVar

T = TypeVar("T")


def log(message: str) -> None:
    """Print one line (through tqdm, so an open progress bar is redrawn below it rather than broken)."""
    from tqdm import tqdm  # here, so that building a parser (which imports this module) stays light

    tqdm.write(message)
    sys.stdout.flush()


def quiet(message: str) -> None:
    """A ``log`` that prints nothing (processes other than the first, tests)."""


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--no_progress`` flag."""
    parser.add_argument("--no_progress", action="store_true",
                        help="never draw progress bars (they are drawn only when stderr is a terminal anyway); "
                             "log lines are printed either way")


def progress_wanted(no_progress: bool = False, stream: TextIO | None = None) -> bool:
    """Whether to draw progress bars: only on a terminal, and not when ``--no_progress`` was given."""
    stream = sys.stderr if stream is None else stream
    return not no_progress and hasattr(stream, "isatty") and stream.isatty()


def progress(items: Iterable[T], description: str, enabled: bool, total: int | None = None,
             leave: bool = False) -> Iterable[T]:
    """``items`` with a tqdm bar when ``enabled``, else ``items`` unchanged (no bar, no carriage returns)."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, total=total, leave=leave)
