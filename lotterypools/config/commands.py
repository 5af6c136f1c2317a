"""The numbers of the helper commands (launcher, experiment runner, aggregation, corrupted copies), declared once
so that their ranges are checked like every other setting's. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import setting

MAX_PROCESSES = 1024  # far above any machine's GPUs; a larger count is a typo


@dataclass
class LauncherSettings:
    """multiproc.py's process layout (torch.distributed.run's flags)."""

    nnodes: int = setting(1, "number of machines", group="launcher", minimum=1, maximum=MAX_PROCESSES)
    node_rank: int = setting(0, "this machine's index, 0..nnodes-1", group="launcher", minimum=0)
    nproc_per_node: int = setting(1, "processes on this machine, one per GPU", group="launcher", minimum=1,
                                  maximum=MAX_PROCESSES)
    master_port: int = setting(None, "free TCP port on the machine with node_rank 0 (default: the script's "
                                     "--master_port, else 29500)", group="launcher", type=int, minimum=1,
                               maximum=65535)


@dataclass
class ExperimentRun:
    """How an experiment's jobs run on this machine (not part of any result)."""

    jobs: int = setting(1, "independent jobs (seeds, pool methods) run at once", group="run", minimum=1,
                        affects_result=False)
    threads: int = setting(None, "CPU threads per job (OMP_NUM_THREADS; default: 1 when --jobs > 1, else torch's "
                                 "own)", group="run", type=int, minimum=1, affects_result=False)


@dataclass
class ReportSettings:
    """aggregate_results.py's table format."""

    digits: int = setting(2, "decimals in the Markdown tables", group="report", minimum=0, maximum=10)


@dataclass
class CorruptionSettings:
    """make_corrupted.py's sample and seed."""

    limit: int = setting(None, "use only the first N test images (default all), e.g. for a quick try",
                         group="corruption", type=int, minimum=1)
    seed: int = setting(0, "seed of the random corruptions", group="corruption")
