"""Run an experiment's jobs as subprocesses, several at once when asked, each continuing by its own resume rule.

A job runs when the jobs it waits for have finished; its output goes to ``logs/<job>.log`` (appended, so an
interrupted and continued job keeps both parts) and the console gets one line per start and end. A job that
fails stops the experiment once the running jobs have ended; rerunning the command continues. A finished job is
skipped only when it ran the planned command line (:mod:`.jobrecords`); one that ran another is refused.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..core.console import log
from ..core.errors import UserError, sigterm_as_interrupt
from .jobrecords import JobRecords, refuse_changed
from .plan import Job, python_executable

PR_SET_PDEATHSIG = 1

POLL_SECONDS = 0.5


@dataclass
class Running:
    job: Job
    process: subprocess.Popen
    started: float


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the runner dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:  # no libc.so.6 (e.g. musl): the runner's own SIGTERM handling still stops its jobs
            pass


def _start(job: Job, logs: Path, env: dict[str, str]) -> Running:
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{job.name}.log", "ab") as output:
        output.write(f"\n$ {job.shell_line()}\n".encode())
        output.flush()
        # A session of its own, so that stopping the experiment stops the job and every process it started.
        process = subprocess.Popen(job.command(python_executable()), stdout=output, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True, preexec_fn=_die_with_parent)
    log(f"start  {job.name}")
    return Running(job, process, time.monotonic())


def _stop_all(running: Sequence[Running]) -> None:
    for item in running:
        try:
            os.killpg(item.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for item in running:
        try:
            item.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(item.process.pid, signal.SIGKILL)


def _last_error(log_file: Path) -> str:
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


def _job_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        # Several jobs on few cores: oversubscribed OpenMP threads spin against each other and run far slower.
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_jobs(jobs: Sequence[Job], logs: Path, parallel: int = 1, threads: int | None = None) -> list[str]:
    """Run the unfinished jobs, at most ``parallel`` at once; return the names of the jobs run.

    A finished job whose recorded command line differs from the planned one stops everything before any work
    (:func:`.jobrecords.refuse_changed`); a job that ends with exit code 0 gets its record.
    """
    if parallel < 1:
        raise UserError(f"--jobs {parallel} must be at least 1 (the number of jobs run at once)")
    finished = JobRecords(logs)
    refuse_changed(jobs, finished)
    logs.mkdir(parents=True, exist_ok=True)
    pending = [job for job in jobs if not finished.holds(job)]
    skipped = [job.name for job in jobs if job not in pending]
    if skipped:
        log(f"already finished, skipped: {', '.join(skipped)}")
    done = {job.name for job in jobs if job not in pending}
    env = _job_env(threads)
    running: list[Running] = []
    ran: list[str] = []
    failed: list[str] = []
    try:  # SIGTERM ends the runner like Ctrl-C: its jobs are stopped, finished work is kept
        with sigterm_as_interrupt():
            while pending or running:
                for item in [r for r in running if r.process.poll() is not None]:
                    running.remove(item)
                    seconds = time.monotonic() - item.started
                    if item.process.returncode == 0:
                        done.add(item.job.name)
                        finished.add(item.job)
                        log(f"done   {item.job.name}  {seconds:.0f}s")
                    else:
                        failed.append(item.job.name)
                        log(f"failed {item.job.name} (exit {item.process.returncode}, {seconds:.0f}s): "
                            f"{_last_error(logs / f'{item.job.name}.log')}")
                ready = [job for job in pending if all(dep in done for dep in job.after)] if not failed else []
                while ready and len(running) < parallel:
                    job = ready.pop(0)
                    pending.remove(job)
                    running.append(_start(job, logs, env))
                    ran.append(job.name)
                if failed and not running:
                    break
                if not ready or len(running) >= parallel:
                    time.sleep(POLL_SECONDS)
    except BaseException:
        _stop_all(running)
        raise
    if failed:
        raise UserError(f"job {failed[0]} failed (its output is in {logs / (failed[0] + '.log')}): fix the "
                        f"cause and rerun the same command; finished work is kept")
    return ran
