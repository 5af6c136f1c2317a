r"""Run a whole comparison from one spec file: IMP for each seed, every pool method on every seed's tickets, the
IMP output-ensemble reference, then the tables and figures over the seeds.

Examples (from the repository root):
    python experiments/run.py experiments/quickstart.toml
    python experiments/run.py experiments/fmnist_conv4_low_density.toml --jobs 3
    python experiments/run.py experiments/fmnist_conv4_low_density.toml --print_commands   # for a cluster scheduler

Rerunning the same command continues where it stopped: each job is one script run that continues by the
script's own resume rule, and finished jobs are skipped; a finished job whose settings changed in the spec is
refused (use a new output folder, or delete its results to redo it). Outputs go to the spec's output folder
(imp/, pools/, ensemble/, report/, logs/).
"""

from __future__ import annotations

import argparse
import importlib

from ...config.commands import ExperimentRun
from ...config.settings import add_config_arguments
from ...core.errors import RERUN_CONTINUES, UserError, cli_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("spec", help="the experiment's TOML spec (see experiments/*.toml)")
    add_config_arguments(parser, {"run": "jobs"}, cls=ExperimentRun)
    parser.add_argument("--print_commands", action="store_true",
                        help="print every job's command line (one per line, in an order that respects their "
                             "dependencies) and exit, e.g. to submit them to a cluster scheduler")
    parser.add_argument("--report_only", action="store_true",
                        help="only write the report from the results already there")
    return parser


def command_parser(module: str) -> argparse.ArgumentParser:
    """The parser of a job's command module (the experiment checks every job's flags with it before any work)."""
    return importlib.import_module(module).build_parser()


@cli_entry(interrupted=RERUN_CONTINUES)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ...core.console import log
    from ...experiments import plan_jobs, report_experiment
    from ...experiments.plan import check_jobs, check_names, python_executable
    from ...experiments.runner import run_jobs
    from ...experiments.spec import read_spec
    from ...core.files import check_writable_folder

    spec = read_spec(args.spec)
    jobs = plan_jobs(spec, command_parser)
    check_jobs(jobs, spec, command_parser)
    check_names(spec)
    if args.print_commands:
        for job in jobs:
            print(("# after " + ", ".join(job.after) + "\n" if job.after else "") + job.shell_line(python_executable()))
        return
    # --report_only creates nothing when there is nothing to report
    check_writable_folder(spec.output, f"[experiment].output of {args.spec}", create=not args.report_only)
    if not args.report_only:
        log(f"experiment {spec.name}: {len(jobs)} jobs over seeds {list(spec.seeds)} into {spec.output}")
        threads = args.threads or (1 if args.jobs > 1 else None)
        run_jobs(jobs, spec.output / "logs", args.jobs, threads)
    if not report_experiment(spec) and args.report_only:
        raise UserError(f"no results yet in {spec.output}: run without --report_only first")


if __name__ == "__main__":
    main()
