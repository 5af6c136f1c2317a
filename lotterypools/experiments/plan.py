"""The jobs of an experiment: the very command lines a user would type, in a fixed folder layout.

Layout under the spec's ``output`` folder::

    imp/seed<S>/                 main_imp.py's run folder (tickets, settings.json, summary.json)
    pools/<group>/seed<S>/       Lottery_pools.py's results (pools_results.json, every method of the group)
    ensemble/seed<S>/            analyze_tickets.py ensemble's results (the IMP output-ensemble reference)
    sms/<label>/seed<S>/         main_SMS.py's run folder of each Sparse Model Soups variant
    edst/d<density>/seed<S>/     main_EDST.py's run folder (model_<k>.pth, history_edst.json) and
                                 ensemble_freetickets.py --mode predict's ensemble_results.json
    report/<group>/              tables, statistics and figures over the seeds
    logs/<job>.log               each job's output

Every job is one script run and continues by that script's own resume rule, so rerunning the experiment
skips finished work and completes the unfinished job.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..core.errors import UserError
from .spec import ExperimentSpec, SMSVariant, density_folder

ParserFor = Callable[[str], argparse.ArgumentParser]  # a command module's name -> its parser (given by the cli layer)

IMP_MODULE = "lotterypools.cli.commands.main_imp"
POOLS_MODULE = "lotterypools.cli.commands.lottery_pools"
ANALYZE_MODULE = "lotterypools.cli.commands.analyze_tickets"
SMS_MODULE = "lotterypools.cli.commands.main_sms"
EDST_MODULE = "lotterypools.cli.commands.main_edst"
FREETICKETS_ENSEMBLE_MODULE = "lotterypools.cli.commands.ensemble_freetickets"
EDST_RUN_NAME = "edst"  # main_EDST.py's run name: progress/edst.pth, history_edst.json
# [edst] flags the ensemble evaluation shares with training (where it runs, the data, the evaluation batch)
EDST_EVALUATION_FLAGS = ("device", "no_download", "test_batch_size", "test-batch-size")


@dataclass(frozen=True)
class Job:
    """One script run: its module, its arguments, the jobs it waits for and how to tell it has finished."""

    name: str
    module: str
    args: tuple[str, ...]
    after: tuple[str, ...] = ()
    finished: Callable[[], bool] = lambda: False

    def command(self, python: str = "python") -> list[str]:
        return [python, "-u", "-m", self.module, *self.args]

    def shell_line(self, python: str = "python") -> str:
        return shlex.join(self.command(python))

    def folder(self) -> Path | None:
        """The folder the job writes its results into (``--save_dir``; ``--tickets_dir`` for an EDST evaluation)."""
        for flag in ("--save_dir", "--tickets_dir"):
            if flag in self.args[:-1]:
                return Path(self.args[self.args.index(flag) + 1])
        return None


def flag_arguments(flags: Mapping[str, Any]) -> list[str]:
    """``{"epochs": 3, "include_linear": True, "interpolation_value_list": [0.5]}`` as command-line words."""
    words: list[str] = []
    for key, value in flags.items():
        flag = f"--{key}"
        if value is True:
            words.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            words += [flag, *(str(v) for v in value)]
        else:
            words += [flag, str(value)]
    return words


def imp_folder(spec: ExperimentSpec, seed: int) -> Path:
    return spec.output / "imp" / f"seed{seed}"


def pools_folder(spec: ExperimentSpec, group: str, seed: int) -> Path:
    return spec.output / "pools" / group / f"seed{seed}"


def ensemble_folder(spec: ExperimentSpec, seed: int) -> Path:
    return spec.output / "ensemble" / f"seed{seed}"


def sms_folder(spec: ExperimentSpec, label: str, seed: int) -> Path:
    return spec.output / "sms" / label / f"seed{seed}"


def edst_folder(spec: ExperimentSpec, density: float, seed: int) -> Path:
    return spec.output / "edst" / density_folder(density) / f"seed{seed}"


def groups(spec: ExperimentSpec) -> list[str]:
    """The results folders' names, in the order their methods first appear."""
    return list(dict.fromkeys(method.group for method in spec.methods))


def _rounds_finished(folder: Path) -> int:
    try:
        return len(json.loads((folder / "summary.json").read_text()))
    except (OSError, ValueError, TypeError):
        return 0


def _imp_job(spec: ExperimentSpec, seed: int, pruning_times: int) -> Job:
    folder = imp_folder(spec, seed)
    args = ["--data", spec.data, "--dataset", spec.dataset, "--arch", spec.arch, "--seed", str(seed),
            *flag_arguments(spec.imp_flags), "--save_dir", str(folder)]
    if (folder / "settings.json").exists():
        args.append("--resume")  # the engine continues from the last checkpoint and checks the settings
    return Job(f"imp_seed{seed}", IMP_MODULE, tuple(args),
               finished=lambda: _rounds_finished(folder) >= pruning_times)


def _pool_jobs(spec: ExperimentSpec, seed: int) -> list[tuple[int, Job]]:
    """The pool jobs of one seed, each with the index of its method in the spec."""
    jobs = []
    common = ["--data", spec.data, "--dataset", spec.dataset, "--arch", spec.arch, "--seed", str(seed),
              "--inference", "--checkpoint", str(imp_folder(spec, seed))]
    for index, method in enumerate(spec.methods):
        if seed not in method.seeds:
            continue
        args = [*common, *flag_arguments(method.flags), "--save_dir", str(pools_folder(spec, method.group, seed))]
        jobs.append((index, Job(f"pools_{method.group}_m{index}_seed{seed}", POOLS_MODULE, tuple(args),
                                after=(f"imp_seed{seed}",))))
    return jobs


def _ensemble_job(spec: ExperimentSpec, seed: int) -> Job:
    folder = ensemble_folder(spec, seed)
    args = ["ensemble", "--data", spec.data, "--dataset", spec.dataset, "--arch", spec.arch, "--seed", str(seed),
            "--checkpoint", str(imp_folder(spec, seed)), "--save_dir", str(folder), "--k", str(spec.ensemble_k)]
    return Job(f"ensemble_seed{seed}", ANALYZE_MODULE, tuple(args), after=(f"imp_seed{seed}",),
               finished=lambda: (folder / "ensemble_results.json").exists())


def _sms_job(spec: ExperimentSpec, variant: SMSVariant, seed: int) -> Job:
    """A Sparse Model Soups run from the seed's dense IMP ticket; a rerun continues it (written phases are kept)."""
    dense = imp_folder(spec, seed) / "0model_SA_best.pth.tar"
    args = ["--data", spec.data, "--dataset", spec.dataset, "--arch", spec.arch, "--seed", str(seed),
            *flag_arguments(variant.flags), "--dense", str(dense), "--save_dir", str(sms_folder(spec, variant.label, seed))]
    return Job(f"sms_{variant.label}_seed{seed}", SMS_MODULE, tuple(args), after=(f"imp_seed{seed}",))


def _edst_epochs_done(folder: Path) -> int:
    from ..formats.freetickets import read_history

    history = read_history(folder, EDST_RUN_NAME, missing_ok=True)
    return len(history["history"]) if history else 0


def _edst_jobs(spec: ExperimentSpec, density: float, seed: int, epochs: int) -> list[Job]:
    """EDST at ``density`` (a rerun continues after the last finished epoch), then its tickets' output ensemble."""
    folder, edst = edst_folder(spec, density, seed), spec.edst
    assert edst is not None
    name = f"edst_{density_folder(density)}_seed{seed}"
    train = ["--sparse", "--model", spec.arch, "--dataset", spec.dataset, "--data_dir", spec.data, "--seed", str(seed),
             "--density", repr(density), *flag_arguments(edst.flags), "--save_dir", str(folder)]
    shared = {k: v for k, v in edst.flags.items() if k in EDST_EVALUATION_FLAGS}
    predict = ["--mode", "predict", "--tickets_dir", str(folder), "--model", spec.arch, "--dataset", spec.dataset,
               "--data_dir", spec.data, "--density", repr(density), *flag_arguments(shared)]
    return [Job(name, EDST_MODULE, tuple(train), finished=lambda: _edst_epochs_done(folder) >= epochs),
            Job(f"{name}_ensemble", FREETICKETS_ENSEMBLE_MODULE, tuple(predict), after=(name,),
                finished=lambda: _has_predict(folder))]


def _has_predict(folder: Path) -> bool:
    from ..analysis.freetickets import read_predict_results

    return read_predict_results(folder, missing_ok=True) is not None


def edst_epochs(spec: ExperimentSpec, parser_for: ParserFor) -> int:
    """The training epochs of one EDST run as main_EDST.py will read them; an impossible schedule is one line now."""
    from ..tickets.freetickets import edst_plan

    assert spec.edst is not None
    job = _edst_jobs(spec, spec.edst.densities[0], spec.edst.seeds[0], 0)[0]
    where = f"{spec.source} [edst]"
    args = _parse(parser_for(EDST_MODULE), job.args, where)
    try:
        return edst_plan(args.epochs, args.epochs_explo, args.model_num, args.lr).epochs
    except UserError as error:
        raise UserError(f"{where}: {error}") from None


def pruning_times(spec: ExperimentSpec, parser_for: ParserFor) -> int:
    """The number of IMP networks per seed, as main_imp.py will read it (its own default when the spec is silent)."""
    return int(_parse(parser_for(IMP_MODULE), _imp_job(spec, spec.seeds[0], 0).args, f"{spec.source} [imp]").pruning_times)


def plan_jobs(spec: ExperimentSpec, parser_for: ParserFor) -> list[Job]:
    """Every job of the experiment: IMP per seed, each pool method over the seeds, the ensembles, EDST per density
    and seed (each followed by its ensemble's evaluation), SMS variants."""
    rounds = pruning_times(spec, parser_for)
    # IMP for every seed, then each pool method over the seeds, then the ensembles: with --jobs N the seeds'
    # jobs of one method run side by side, so every method has all its seeds as early as possible
    pools = sorted((index, seed_index, job) for seed_index, seed in enumerate(spec.seeds)
                   for index, job in _pool_jobs(spec, seed))
    jobs = [_imp_job(spec, seed, rounds) for seed in spec.seeds] + [job for _, _, job in pools]
    if spec.ensemble_k is not None:
        jobs += [_ensemble_job(spec, seed) for seed in spec.seeds]
    if spec.edst is not None:  # before SMS: an EDST run costs fewer epochs than an SMS run, so its rows come first
        epochs = edst_epochs(spec, parser_for)
        jobs += [job for density in spec.edst.densities for seed in spec.edst.seeds
                 for job in _edst_jobs(spec, density, seed, epochs)]
    jobs += [_sms_job(spec, variant, seed) for variant in spec.sms for seed in variant.seeds]
    return jobs


class _ParserError(Exception):
    pass


def _raising_error(message: str) -> None:
    raise _ParserError(message)


def _parse(parser: argparse.ArgumentParser, args: tuple[str, ...], where: str) -> argparse.Namespace:
    parser.error = _raising_error  # one line for the spec's author instead of argparse's usage text and exit
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for sub in getattr(action, "choices", {}).values():
            sub.error = _raising_error
    try:
        return parser.parse_args(list(args))
    except _ParserError as error:
        raise UserError(f"{where}: {error}: fix the key in the spec (keys are the script's flags without --)") from None


def check_jobs(jobs: list[Job], spec: ExperimentSpec, parser_for: ParserFor) -> None:
    """Run every job's arguments through its script's parser, so a bad key or value stops before any work."""
    for job in jobs:
        where = f"{spec.source} ({job.name}, {job.module.rsplit('.', 1)[-1]}.py)"
        _parse(parser_for(job.module), job.args, where)


def check_names(spec: ExperimentSpec) -> None:
    """The spec's data set and architecture exist (a model is built), before any job starts: the scripts would
    otherwise each fail on their own, after the jobs before them had run."""
    from ..data.datasets import dataset_spec
    from ..models import build_model

    try:
        data = dataset_spec(spec.dataset)
        build_model(spec.arch, data.num_classes, data.channels, data.mean, data.std, data.image_size)
    except UserError as error:
        raise UserError(f"{spec.source}: {error}") from None


def python_executable() -> str:
    return sys.executable or "python"
