"""One-line errors for the command-line front ends."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input: printed as one line, without a traceback."""


def cli_entry(main: Callable[..., object]) -> Callable[..., object]:
    """Wrap a script's ``main`` so that a :class:`UserError` ends it with one line and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: finished rounds and checkpoints are kept; rerun with --resume", file=sys.stderr)
            sys.exit(130)

    return wrapper
