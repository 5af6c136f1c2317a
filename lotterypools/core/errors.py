"""One-line errors for the command-line front ends."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input: printed as one line, without a traceback."""


RESUME_FLAG = "interrupted: finished rounds and checkpoints are kept; rerun the same command with --resume to continue"
NOTHING_TO_RESUME = "interrupted: files written before the interrupt are kept; nothing else was saved"
RERUN_CONTINUES = "interrupted: finished work is kept; rerun the same command to continue where it stopped"
POOLS_RERUN = ("interrupted: the record of every finished target is kept in pools_results.json; rerun the same "
               "command to run only the missing targets")


def one_line(error: UserError) -> str:
    """The error's line; a DataLoader worker re-raises it with the worker's traceback around it, which is dropped."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def cli_entry(main: Callable[..., object] | None = None, *, interrupted: str = RESUME_FLAG) -> Callable[..., object]:
    """Wrap a script's ``main`` so that a :class:`UserError` ends it with one line and exit code 2.

    ``interrupted`` is the line printed on Ctrl-C: each script says what it keeps and how to continue
    (``@cli_entry(interrupted="...")``); plain ``@cli_entry`` is for scripts with a ``--resume`` flag.
    """
    if main is None:
        return functools.partial(cli_entry, interrupted=interrupted)

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            sys.exit(130)
        except OSError as error:  # a write outside atomic_output (a plot) on a full or failing disk: one line too
            from .files import DISK_ERRNOS, disk_error

            if error.errno not in DISK_ERRNOS:
                raise
            print(f"error: {disk_error(error.filename or 'an output file', error)}", file=sys.stderr)
            sys.exit(2)

    return wrapper
