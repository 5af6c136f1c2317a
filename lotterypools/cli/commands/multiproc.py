"""Start a script once per device, as the original multiproc.py, with PyTorch's own launcher (torch.distributed.run).

Every process gets --local_rank (and torchrun's RANK/WORLD_SIZE/MASTER_* environment). If one process fails
or is killed, the others are stopped and this launcher exits with a non-zero code. Example:
    python multiproc.py --nproc_per_node 2 Lottery_pools.py --save_dir $save_dir $data --master_port 8020 ...
A --master_port given only among the script's arguments (as in the original README) is used by the launcher.

Three kinds of process: this launcher checks the arguments and supervises; one agent process runs
torch.distributed.run; the agent starts the workers, which run the script.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import socket
import subprocess
import sys
import time

from ...config.commands import LauncherSettings
from ...config.settings import add_config_arguments
from ...core.errors import LAUNCHED_WORKER, UserError, cli_entry, unblock_signals

THIS_MODULE = "lotterypools.cli.commands.multiproc"
CHILD_FLAG = "--run_script_as_child"
AGENT_FLAG = "--run_torchrun_agent"
SUPERVISOR_PID = "LOTTERYPOOLS_SUPERVISOR_PID"  # environment: the supervising launcher's PID, for the agent
POLL_S, RESEND_S, KILL_AFTER_S = 0.2, 5.0, 60.0  # the supervisor's wait step, signal repeat and last resort
DEFAULT_PORT = 29500
LAUNCHER_PID = LAUNCHED_WORKER  # environment: the agent's PID, for the workers' parent-death check
INTERRUPTED = ("interrupted ({signal}): the launched processes were stopped; rerun the same command to continue "
               "where they stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_config_arguments(parser, {"launcher": "processes"}, cls=LauncherSettings)
    parser.add_argument("--master_addr", default="127.0.0.1",
                        help="address of the machine with node_rank 0 (default 127.0.0.1)")
    parser.add_argument("script", help="the training script, e.g. Lottery_pools.py or main_imp.py")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="the script's own arguments")
    return parser


def port_in_script_args(script_args: list[str]) -> int | None:
    """The value of a ``--master_port`` among the script's arguments, if any."""
    for index, arg in enumerate(script_args):
        value = arg.split("=", 1)[1] if arg.startswith("--master_port=") else \
            script_args[index + 1] if arg == "--master_port" and index + 1 < len(script_args) else None
        if value is not None:
            if not value.isdigit():
                raise UserError(f"--master_port {value!r} is not a port number; give an integer such as 8020")
            return int(value)
    return None


def check_port_free(port: int) -> None:
    """One-line error when the rendezvous port is taken on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            raise UserError(f"port {port} is already in use on this machine: pass another --master_port "
                            f"(or stop the run holding it)") from None


def check_devices(nproc: int, script_args: list[str]) -> None:
    """One-line error when nccl would need more GPUs than this machine has."""
    import torch

    on_cpu = "--device" in script_args and script_args[script_args.index("--device") + 1:][:1] == ["cpu"]
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible and not on_cpu and nproc > visible:
        raise UserError(f"--nproc_per_node {nproc} is more than the {visible} GPUs here (nccl needs one each): "
                        f"lower it to {visible}, or add --device cpu to the script's arguments for gloo")


def torchrun_arguments(args: argparse.Namespace, port: int) -> list[str]:
    """torch.distributed.run's command line: this module again (``python -m``), in child mode, runs the script."""
    return ["--nnodes", str(args.nnodes), "--node_rank", str(args.node_rank),
            "--nproc_per_node", str(args.nproc_per_node), "--master_addr", args.master_addr,
            "--master_port", str(port), "--max_restarts", "0",
            "--module", THIS_MODULE, CHILD_FLAG, os.path.abspath(args.script), *args.script_args]


def check_port(port: int) -> None:
    """One-line error for a port outside 1..65535 (socket.bind would raise OverflowError)."""
    if not 1 <= port <= 65535:
        raise UserError(f"--master_port {port} is not a TCP port: give one in 1..65535, e.g. {DEFAULT_PORT}")


def die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to end this process (SIGTERM) when its parent dies, so a launcher killed with -9 leaves no workers.

    ``prctl(PR_SET_PDEATHSIG)`` only covers a parent dying after the call, so a parent already gone (this process
    re-parented) ends this one at once. Elsewhere than Linux nothing is done (torchrun's own handling remains).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def run_child(script: str, script_args: list[str]) -> None:
    """In a worker process: run ``script`` as __main__ with ``--local_rank`` appended, as the original did."""
    launcher = os.environ.get(LAUNCHER_PID, "")
    die_with_parent(int(launcher) if launcher.isdigit() else None)
    sys.argv = [script, *script_args, f"--local_rank={os.environ.get('LOCAL_RANK', '0')}"]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name="__main__")


def check_arguments(args: argparse.Namespace) -> int:
    """The checks that need no torch, made before any process starts: the rendezvous port."""
    port = args.master_port if args.master_port is not None else port_in_script_args(args.script_args) or DEFAULT_PORT
    check_port(port)
    if args.node_rank >= args.nnodes:
        raise UserError(f"--node_rank {args.node_rank} must be below --nnodes {args.nnodes} (machines count from 0)")
    if not os.path.isfile(args.script):
        raise UserError(f"script {args.script} does not exist; run from ImageNet/ or give its path")
    if args.node_rank == 0:
        check_port_free(port)
    return port


@cli_entry()
def run_agent(argv: list[str]) -> None:
    """In the agent process: run torch.distributed.run, which starts and watches the workers.

    A signal turns into torchrun's SignalException after it has stopped the workers; the supervisor, which
    sent it, prints the one line, so this process only exits with 128 + the signal.
    """
    die_with_parent(int(os.environ[SUPERVISOR_PID]) if os.environ.get(SUPERVISOR_PID, "").isdigit() else None)
    args = build_parser().parse_args(argv)
    port = check_arguments(args)
    check_devices(args.nproc_per_node, args.script_args)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    os.environ[LAUNCHER_PID] = str(os.getpid())
    try:
        torchrun(torchrun_arguments(args, port))
    except SignalException as stop:
        sys.exit(128 + int(stop.sigval))
    except KeyboardInterrupt:  # a SIGINT before torchrun took it over: nothing started yet
        sys.exit(130)
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()
        code = first.exitcode if first.exitcode > 0 else 128 - first.exitcode
        print(f"error: {os.path.basename(args.script)} failed in process {rank} (exit code {first.exitcode}); "
              f"the other processes were stopped", file=sys.stderr)
        sys.exit(code)


def supervise(agent: subprocess.Popen, received: list[int]) -> int:
    """Wait for the agent; pass it the first signal received, again every RESEND_S, and kill it after KILL_AFTER_S.

    Why a second process: torchrun's own handler, in a process with torch's threads, was seen to miss a SIGTERM
    under load (the workers then ran to their end). This process has no threads, so it always sees the signal,
    and repeating it (then SIGKILL, after which the workers get their parent-death signal) cannot be missed.
    """
    sent_at = first_at = None
    while True:
        try:
            return agent.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if not received:
            continue
        first_at = first_at or now
        if now - first_at > KILL_AFTER_S:
            agent.kill()
        elif sent_at is None or now - sent_at > RESEND_S:
            agent.send_signal(received[0])
            sent_at = now


@cli_entry(interrupted=INTERRUPTED.format(signal="SIGINT"))
def launch(argv: list[str]) -> None:
    """Check the arguments, then start the torchrun agent in its own session and stop it on SIGINT/SIGTERM/SIGHUP."""
    check_arguments(build_parser().parse_args(argv))
    received: list[int] = []
    handled = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]  # no SIGHUP on Windows
    previous = {signum: signal.signal(signum, lambda signum, _: received.append(signum)) for signum in handled}
    unblock_signals(handled)  # also for the agent and workers, which inherit this mask
    try:
        # its own session: a Ctrl-C on the terminal reaches the agent once, from here, not twice
        agent = subprocess.Popen([sys.executable, "-m", THIS_MODULE, AGENT_FLAG, *argv], start_new_session=True,
                                 env={**os.environ, SUPERVISOR_PID: str(os.getpid())})
        code = supervise(agent, received)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received and code != 0:  # a signal that came as the work ended successfully stopped nothing
        print(INTERRUPTED.format(signal=signal.Signals(received[0]).name), file=sys.stderr)
        sys.exit(128 + received[0])
    sys.exit(code if code >= 0 else 128 - code)


def main(argv: list[str] | None = None) -> None:
    """Launch the processes, or (in a launched process) run the torchrun agent or the script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) > 1 and argv[0] == CHILD_FLAG:
        run_child(argv[1], argv[2:])
    elif argv[:1] == [AGENT_FLAG]:
        run_agent(argv[1:])
    else:
        launch(argv)


if __name__ == "__main__":
    main()
