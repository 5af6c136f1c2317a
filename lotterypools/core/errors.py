"""One-line errors for the command-line front ends."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from typing import Callable, Iterator


class UserError(Exception):
    """A problem with the user's input: printed as one line, without a traceback."""


RESUME_FLAG = "interrupted: finished rounds and checkpoints are kept; rerun the same command with --resume to continue"
NOTHING_TO_RESUME = "interrupted: files written before the interrupt are kept; nothing else was saved"
RERUN_CONTINUES = "interrupted: finished work is kept; rerun the same command to continue where it stopped"
SIGPIPE_EXIT = 141  # 128 + SIGPIPE: how a shell reports a program whose reader went away (``... | head``)
POOLS_RERUN = ("interrupted: the record of every finished target is kept in pools_results.json; rerun the same "
               "command to run only the missing targets")


TERMINATED_EXIT = 128 + int(signal.SIGTERM)  # how a shell reports a program stopped by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's time limit) raised in the main thread, so it ends a command as
    Ctrl-C does: its cleanup runs (run locks, temporaries) and it prints its interrupted line."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


LAUNCHED_WORKER = "LOTTERYPOOLS_LAUNCHER_PID"  # environment: set by multiproc.py in the processes it launches


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`; a handler someone else installed is left alone.

    Not in a worker of multiproc.py: a Python handler waits for the running C call to return, and a worker blocked
    in a collective whose peer died would then outlive its launcher; there SIGTERM keeps its immediate default.
    """
    if (threading.current_thread() is not threading.main_thread() or LAUNCHED_WORKER in os.environ
            or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    unblock_signals([signal.SIGTERM])
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def unblock_signals(signums: list[int]) -> None:
    """Unblock signals this process handles: a blocked mask is inherited from the parent (a CI runner or a job
    supervisor that waits for its own signals may block them), and a blocked SIGTERM would never arrive."""
    if hasattr(signal, "pthread_sigmask"):  # POSIX only
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)


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
            with sigterm_as_interrupt():
                result = main(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush (a traceback there)
            return result
        except BrokenPipeError:
            if not stdout_closed():
                raise  # another pipe broke (a child process, a socket): that is a real error
            quiet_closed_stdout()
            sys.exit(SIGPIPE_EXIT)
        except UserError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(2)
        except Terminated:
            print(interrupted.replace("interrupted", "interrupted (SIGTERM)", 1), file=sys.stderr)
            sys.exit(TERMINATED_EXIT)
        except KeyboardInterrupt:
            if LAUNCHED_WORKER not in os.environ:  # under multiproc.py the launcher prints one line for all workers
                print(interrupted, file=sys.stderr)
            sys.exit(130)
        except OSError as error:  # a write outside atomic_output (a plot) on a full or failing disk: one line too
            from .files import DISK_ERRNOS, disk_error

            if error.errno not in DISK_ERRNOS:
                raise
            print(f"error: {disk_error(error.filename or 'an output file', error)}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def stdout_closed() -> bool:
    """Whether nobody reads stdout any more (a pipe whose reader exited reports an error condition to poll)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout: take the error as stdout's
        return True


def quiet_closed_stdout() -> None:
    """Point stdout at /dev/null, so output still buffered for a reader that went away is dropped without a word."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (a test's captured one): nothing is flushed to a pipe at exit
        pass
    finally:
        os.close(devnull)
