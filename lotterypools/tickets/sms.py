"""Sparse Model Soups (SMS; Zimmer, Spiegel and Pokutta, ICLR 2024) on the round trainer.

Phase 0 trains (or reads, ``--dense``) a dense network. Each later phase prunes the previous phase's soup by
global magnitude, retrains ``m`` copies of it that differ in one setting (the seed by default, or the weight
decay, or the peak learning rate), merges them into one network (a uniform soup, or a greedy one that adds a
candidate only when validation accuracy does not drop), recomputes its batch-norm statistics on training data
and writes it as the phase's ticket in the original's layout, so that every ticket tool reads an SMS folder
as it reads an IMP folder. There is no rewinding: each phase starts from the pruned soup.

Each candidate is one round of the training engine (:class:`~lotterypools.tickets.retrain.RetrainRun`, with
:class:`SMSRetrainPolicy` for SMS's per-step schedule) in its own folder ``phase_<p>/candidate_<k>``, so it
resumes, checks its settings and locks as every run does; this module only decides the candidates, splits
them over processes (under ``torchrun`` each process trains candidates ``k % world == rank``) and merges.

Files in the run folder: ``{p}model_SA_best.pth.tar`` and ``{p}checkpoint.pth.tar`` (the soup, the original's
checkpoint keys), ``summary.json`` (one record per phase with its candidates and the soup's members),
``settings.json`` and ``provenance.json``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..config.settings import IMPConfig
from ..config.sms import SMSSettings
from ..core.console import log
from ..core.device import derived_seed
from ..core.errors import UserError
from ..core.records import format_table
from ..core.types import Masks, Weights
from ..data.datasets import BatchSource, DataSplits, resident_split
from ..formats import paths
from ..formats.original import OriginalLayout, read_ticket, round_checkpoint_dict
from ..training.batchnorm import recalibrate_batchnorm
from ..training.engine import RoundContext, RoundPlan, RoundPolicy, check_settings
from ..training.guards import check_finite, check_ticket_density
from ..training.loop import Step, TrainingHook, evaluate
from ..training.masks import apply_masks, density, join_pruned_state, kept_count, masks_of, prune_globally, \
    remove_masks
from .retrain import RetrainRun

# ============================================================== soups (pure functions of weight dicts)
def check_shared_masks(masks: Sequence[Masks], where: Sequence[str]) -> None:
    """One-line error unless every candidate holds exactly the same mask (SMS's soup is only sparse then)."""
    first = masks[0]
    for other, name in zip(masks[1:], where[1:]):
        if other.keys() != first.keys() or any(not torch.equal(other[k], first[k]) for k in first):
            raise UserError(f"{name} was retrained under another mask than {where[0]}: the candidates of one phase "
                            f"must share their mask; delete that candidate folder to retrain it")


def uniform_soup(weight_sets: Sequence[Weights]) -> Weights:
    """The mean of every floating-point tensor (weights and BN statistics); integer counters from the first."""
    soup = {}
    for key, first in weight_sets[0].items():
        if first.is_floating_point():
            soup[key] = torch.stack([weights[key].to(first.dtype) for weights in weight_sets]).mean(0)
        else:
            soup[key] = first.clone()
    return soup


@dataclass
class SoupChoice:
    """A merged network: its weights, the candidates in it (indices) and every trial's validation accuracy."""

    weights: Weights
    members: list[int]
    val_acc: float
    trials: list[dict[str, Any]]


def greedy_soup(weight_sets: Sequence[Weights], score: Callable[[Weights], float]) -> SoupChoice:
    """SMS's greedy soup: candidates ranked by their own score, each added when the soup's score does not drop.

    ``score`` recomputes BN statistics and returns validation accuracy. Ties are accepted, as in the official code.
    """
    own = [score(weights) for weights in weight_sets]
    order = sorted(range(len(weight_sets)), key=lambda k: -own[k])
    members, best = [order[0]], own[order[0]]
    trials = [{"members": [order[0]], "val_acc": best, "kept": True}]
    for k in order[1:]:
        trial = members + [k]
        accuracy = score(uniform_soup([weight_sets[i] for i in trial]))
        kept = accuracy >= best
        trials.append({"members": trial, "val_acc": accuracy, "kept": kept})
        if kept:
            members, best = trial, accuracy
    return SoupChoice(uniform_soup([weight_sets[i] for i in members]), sorted(members), best, trials)


def make_soup(method: str, weight_sets: Sequence[Weights], score: Callable[[Weights], float]) -> SoupChoice:
    """The phase's merged network by ``method`` (``uniform`` or ``greedy``); scored on validation either way."""
    if method == "greedy":
        return greedy_soup(weight_sets, score)
    weights = uniform_soup(weight_sets)
    accuracy = score(weights)
    return SoupChoice(weights, list(range(len(weight_sets))), accuracy,
                      [{"members": list(range(len(weight_sets))), "val_acc": accuracy, "kept": True}])


# ============================================================== a candidate's round
def linear_decay_rate(peak: float, step: int, total: int) -> float:
    """The official ``LLR`` schedule at ``step`` of ``total``: half-cosine warm-up over 10%, then linear to 0."""
    warmup = int(0.1 * total)
    if step < warmup:
        return peak * (1 - math.cos(math.pi * step / warmup)) / 2
    return peak * max(0.0, 1 - (step - warmup) / max(1, total - warmup))


class StepLearningRates(TrainingHook):
    """Sets the learning rate of the next step after every optimiser step (schedules finer than an epoch)."""

    def __init__(self, rate: Callable[[int], float]):
        self.rate = rate

    def after_step(self, step: Step) -> None:
        for group in step.optimizer.param_groups:
            group["lr"] = self.rate(step.step + 1)


class SMSRetrainPolicy(RoundPolicy):
    """A candidate's round: IMP's step schedule from epoch 0, or the official per-step linear decay."""

    def __init__(self, schedule: str, steps_per_epoch: int):
        self.schedule, self.steps_per_epoch = schedule, steps_per_epoch

    def plan(self, context: RoundContext) -> RoundPlan:
        cfg = context.config
        if self.schedule == "step":
            return RoundPlan(epochs=cfg.epochs, milestones=list(cfg.milestones), warmup=cfg.warmup)
        total = cfg.epochs * self.steps_per_epoch

        def rate(step: int) -> float:
            return linear_decay_rate(cfg.lr, step, total)

        # each epoch starts at the rate its first step has, so a resumed epoch starts where the schedule is
        starts = [rate(epoch * self.steps_per_epoch) for epoch in range(cfg.epochs)]
        return RoundPlan(epochs=cfg.epochs, milestones=[], learning_rates=starts, hooks=[StepLearningRates(rate)])


# ============================================================== the run
@dataclass
class Candidate:
    """One network retrained in a phase: its folder and the settings it differs in."""

    index: int
    folder: Path
    config: IMPConfig

    def describe(self) -> dict[str, Any]:
        return {"candidate": self.index, "seed": self.config.seed, "lr": self.config.lr,
                "weight_decay": self.config.weight_decay, "epochs": self.config.epochs, "folder": str(self.folder)}


class SMSRun:
    """An SMS run over one folder: ``run()`` trains and merges every phase not yet written.

    ``rank``/``world_size`` split each phase's candidates over processes and ``barrier`` waits for all of them
    (``torchrun``); only rank 0 merges and writes. Rerunning the same command continues: written phases are
    read back, finished candidates are kept and an interrupted one continues after its last epoch.
    """

    def __init__(self, config: IMPConfig, settings: SMSSettings, model_factory: Callable[[], nn.Module],
                 data: DataSplits, device: torch.device, save_dir: Path, *, rank: int = 0, world_size: int = 1,
                 barrier: Callable[[], None] = lambda: None, log: Callable[[str], None] = log,
                 progress: bool = True, plot_curve: Any = None):
        config = dataclasses.replace(config, prune_type="lt", rewind_epoch=0)  # SMS never rewinds
        config.validate()
        settings.validate(config)
        self.config, self.settings, self.model_factory, self.data = config, settings, model_factory, data
        self.device, self.save_dir = device, Path(save_dir)
        self.rank, self.world_size, self.barrier = rank, world_size, barrier
        self.is_main = rank == 0
        self.log = log if self.is_main else (lambda message: None)
        self.progress, self.plot_curve = progress, plot_curve
        self.layout = OriginalLayout(self.save_dir, config)
        self.rate, self.pruned_phases = settings.pruning(config)
        self.dense = self._read_dense(Path(settings.dense)) if settings.dense else None  # checked before any write

    # ---------------------------------------------------------------- entry point
    def run(self) -> list[dict]:
        """Train and merge every phase not yet in the folder; return ``summary.json``'s records."""
        from ..core.provenance import data_provenance, run_entry
        from ..core.runlock import hold_run_folder

        with hold_run_folder(self.save_dir, run_entry(self.device, **data_provenance(self.data)), name="sms",
                             is_main=self.is_main):
            self._check_settings()
            self.barrier()
            for phase in range(self.pruned_phases + 1):
                if not self._phase_written(phase):
                    self._phase(phase)
                self.barrier()
        summary = self.layout.summary()
        self.log(format_table(summary, ["round", "density", "val_acc", "test_acc", "members", "epochs", "seconds"]))
        return summary

    def _check_settings(self) -> None:
        stored = {**dataclasses.asdict(self.config), "sms": dataclasses.asdict(self.settings)}
        saved = self.layout.read_settings()
        if saved is not None:
            check_settings(saved, self.config, self.save_dir)
            check_settings(saved.get("sms", {}), self.settings, self.save_dir)
        if self.is_main:
            self.layout.write_settings(stored)

    def _phase_written(self, phase: int) -> bool:
        return self.layout.round_closed(phase) and paths.round_best(self.save_dir, phase).exists()

    # ---------------------------------------------------------------- one phase
    def _phase(self, phase: int) -> None:
        started = time.time()
        if phase == 0 and self.settings.dense:
            if self.is_main:
                self._write_dense(Path(self.settings.dense), started)
            return
        start, masks = self._phase_start(phase)
        candidates = self.candidates(phase)
        for candidate in candidates:
            if candidate.index % self.world_size == self.rank:
                self._train(candidate, phase, start, masks)
        self.barrier()
        if self.is_main:
            self._merge(phase, candidates, masks, started)

    def _phase_start(self, phase: int) -> tuple[Weights | None, Masks]:
        """The weights and masks the phase's candidates start from: the previous soup pruned by the phase's rate."""
        if phase == 0:
            return None, {}
        model = self.model_factory().to(self.device)
        weights, masks = read_ticket(paths.round_best(self.save_dir, phase - 1))
        model.load_state_dict(weights)
        if masks:
            apply_masks(model, masks)
        check_finite(model.named_parameters(), f"the soup of phase {phase - 1}")
        remaining = kept_count(masks) if masks else None
        prune_globally(model, self.rate, self.config.include_linear, self.config.random_prune,
                       generator_seed=derived_seed(self.config.seed, phase, 10**6))
        new_masks = masks_of(model)
        if remaining is None:
            remaining = sum(mask.numel() for mask in new_masks.values())
        check_ticket_density(new_masks, remaining - round(self.rate * remaining), f"of phase {phase}", tolerance=1)
        remove_masks(model)
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, \
            {k: v.detach().cpu().clone() for k, v in new_masks.items()}

    def candidates(self, phase: int) -> list[Candidate]:
        """The phase's candidates: one dense network in phase 0, else ``m`` (one for ``--imp_budget``)."""
        s, cfg = self.settings, self.config
        folder = self.save_dir / f"phase_{phase}"
        if phase == 0:
            return [Candidate(0, folder / "candidate_0", cfg)]
        if s.imp_budget:  # one network, m times the epochs (and milestones) of one candidate
            config = dataclasses.replace(cfg, epochs=cfg.epochs * s.candidates,
                                         milestones=[m * s.candidates for m in cfg.milestones],
                                         seed=derived_seed(cfg.seed, phase, 0) % 2**31)
            return [Candidate(0, folder / "candidate_0", config)]
        values = s.value_list
        chosen = []
        for k in range(s.candidates):
            varied: dict[str, Any] = {"seed": derived_seed(cfg.seed, phase, k if s.vary == "seed" else 0) % 2**31}
            if s.vary in ("weight_decay", "lr"):
                varied[s.vary] = values[k]
            chosen.append(Candidate(k, folder / f"candidate_{k}", dataclasses.replace(cfg, **varied)))
        return chosen

    def _train(self, candidate: Candidate, phase: int, start: Weights | None, masks: Masks) -> None:
        steps = len(BatchSource(self.data.train, candidate.config.batch_size, torch.device("cpu")))
        run = RetrainRun(candidate.config, self.model_factory, self.data, self.device, candidate.folder, masks,
                         start, policy=SMSRetrainPolicy(self.settings.retrain_schedule, steps),
                         log=self._candidate_log(phase, candidate.index), progress=self.progress,
                         plot_curve=self.plot_curve)
        holds = run.layout.holds_run()
        if holds:
            self.log(f"phase {phase} candidate {candidate.index}: continuing {candidate.folder}")
        run.run(resume=holds)

    def _candidate_log(self, phase: int, index: int) -> Callable[[str], None]:
        def tagged(message: str) -> None:
            log(f"[phase {phase} candidate {index}] {message}")
        return tagged

    # ---------------------------------------------------------------- merge and write
    def _merge(self, phase: int, candidates: list[Candidate], masks: Masks, started: float) -> None:
        weight_sets, found = [], []
        for candidate in candidates:
            weights, saved_masks = read_ticket(paths.round_best(candidate.folder, 0))
            weight_sets.append(weights)
            found.append(saved_masks)
        names = [str(c.folder) for c in candidates]
        check_shared_masks([masks, *found], ["the pruned soup", *names])
        scorer = SoupScorer(self.model_factory, self.data, self.device, self.config, self.settings.bn_batches,
                            derived_seed(self.config.seed, phase, 10**7))
        records = [{**c.describe(), **self._candidate_record(c)} for c in candidates]
        if len(candidates) == 1:  # the dense phase and the IMP baseline: the network as trained
            choice = SoupChoice(weight_sets[0], [0], records[0]["val_acc"], [])
            test = records[0]["test_acc"]
        else:
            choice = make_soup(self.settings.soup, weight_sets, scorer.score)
            # scored again so the saved network is the chosen soup with its own BN statistics, not the last trial
            # (the official greedy soup saves its last loaded candidate when it rejects one)
            choice.val_acc = scorer.score(choice.weights)
            test, choice.weights = scorer.test(), scorer.state()
        record = {"round": phase, "density": density(masks) if masks else 1.0, "val_acc": choice.val_acc,
                  "best_val_acc": choice.val_acc, "test_acc": test, "members": len(choice.members),
                  "soup": self.settings.soup if len(candidates) > 1 else None, "soup_members": choice.members,
                  "soup_trials": choice.trials, "candidates": records,
                  "epochs": sum(c.config.epochs for c in candidates), "seconds": round(time.time() - started, 1)}
        self._write(phase, choice.weights, masks, record)

    def _candidate_record(self, candidate: Candidate) -> dict[str, Any]:
        summary = OriginalLayout(candidate.folder, candidate.config).summary()
        if not summary:
            raise UserError(f"{candidate.folder} holds no finished training: rerun the same command to finish it")
        return {"val_acc": summary[0]["val_acc"], "test_acc": summary[0]["test_acc"]}

    def _read_dense(self, path: Path) -> Weights:
        """The ``--dense`` network's weights, or a one-line error when it is pruned or does not fit the model."""
        from ..core.torchfiles import check_compatible

        weights, masks = read_ticket(path)
        if masks and density(masks) < 1.0:
            raise UserError(f"--dense {path} is a pruned network (density {100 * density(masks):.1f}%): give the "
                            f"dense ticket (round 0)")
        check_compatible(weights, self.model_factory().state_dict(), path,
                         f"--arch {self.config.arch} on {self.config.dataset}")
        return weights

    def _write_dense(self, path: Path, started: float) -> None:
        weights = self.dense
        scorer = SoupScorer(self.model_factory, self.data, self.device, self.config, 0, 0)
        val, test = scorer.evaluate(weights)
        record = {"round": 0, "density": 1.0, "val_acc": val, "best_val_acc": val, "test_acc": test, "members": 1,
                  "soup": None, "soup_members": [0], "soup_trials": [], "dense": str(path),
                  "candidates": [], "epochs": 0, "seconds": round(time.time() - started, 1)}
        self._write(0, weights, {}, record)

    def _write(self, phase: int, weights: Weights, masks: Masks, record: dict[str, Any]) -> None:
        check_finite(weights.items(), f"the soup of phase {phase}")
        state = join_pruned_state(weights, masks)
        checkpoint = round_checkpoint_dict(phase, state, record["val_acc"], arch=self.config.arch,
                                           dataset=self.config.dataset, config=dataclasses.asdict(self.config),
                                           sms=dataclasses.asdict(self.settings))
        self.layout.write_ticket(phase, checkpoint, record)
        self.log(f"phase {phase} written: density {100 * record['density']:.2f}%  val {record['val_acc']:.2f}  "
                 f"test {record['test_acc']:.2f}  soup of {record['members']} ({record['epochs']} epochs trained)")


class SoupScorer:
    """Loads a weight set into one working model, recomputes its BN statistics on training data, scores it."""

    def __init__(self, model_factory: Callable[[], nn.Module], data: DataSplits, device: torch.device,
                 config: IMPConfig, bn_batches: int, seed: int):
        self.model, self.device = model_factory().to(device), device
        train = resident_split(data.train, device)
        source = BatchSource(train, config.batch_size, device, data.spec, shuffle=True, augment=True, seed=seed)
        # the same batches for every trial, so trials differ only in their weights
        self.bn_source = list(source)[:bn_batches] if bn_batches else list(source)
        self.val = BatchSource(resident_split(data.val, device), 500, device)
        self.test_split = BatchSource(resident_split(data.test, device), 500, device)

    def score(self, weights: Weights) -> float:
        """Validation accuracy of ``weights`` with BN statistics recomputed."""
        self.model.load_state_dict(weights)
        recalibrate_batchnorm(self.model, self.bn_source, self.device)
        return evaluate(self.model, self.val, self.device).accuracy

    def evaluate(self, weights: Weights) -> tuple[float, float]:
        """Validation and test accuracy of ``weights`` as they are (no BN pass)."""
        self.model.load_state_dict(weights)
        return evaluate(self.model, self.val, self.device).accuracy, self.test()

    def test(self) -> float:
        return evaluate(self.model, self.test_split, self.device).accuracy

    def state(self) -> Weights:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}


__all__ = ["SMSRetrainPolicy", "SMSRun", "SMSSettings", "SoupChoice", "check_shared_masks", "greedy_soup",
           "linear_decay_rate", "make_soup", "uniform_soup"]
