"""FreeTickets runs (Liu et al., ICLR 2022): DST, EDST, PF and single models, trained with :class:`MaskUpdater`.

A run is a :class:`TrainingPlan` (a learning rate per epoch and the phases that each save one ticket, the
best-validation model of the phase) trained as one round of the round trainer
(:class:`lotterypools.training.engine.IMPEngine`): :class:`FreeTicketsPolicy` gives the round its learning
rates, phases and hooks (the mask updater, the per-epoch history), and
:class:`lotterypools.formats.freetickets.FreeTicketsLayout` writes the files. Resume, the settings check, the
ticket rule and the optimiser restore are the engine's: rerunning the same command continues after the last
finished epoch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..config.settings import IMPConfig
from ..core.console import log
from ..core.errors import UserError
from ..core.torchfiles import check_compatible
from ..formats.freetickets import PROGRESS_KEYS, FreeTicketsLayout
from ..training.engine import Evaluator, IMPEngine, RoundContext, RoundPlan, RoundPolicy, TrainData
from ..training.loop import TrainingHook
from ..config.sparse import FREETICKETS_DEFAULTS, SparseConfig
from ..training.sparse import MaskedWeights, MaskUpdater, initial_masks


# ---------------------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Phase:
    """Epochs ``start`` .. ``end - 1`` (0-based). ``ticket``: file the phase's best-validation model goes to
    (``None``: nothing saved); ``large_death``: the phase starts with a large death and regrowth (EDST)."""

    start: int
    end: int
    ticket: str | None
    large_death: bool = False


@dataclass
class TrainingPlan:
    """A learning rate per epoch and the phases covering all epochs, in order."""

    lrs: list[float]
    phases: list[Phase]

    @property
    def epochs(self) -> int:
        return len(self.lrs)

    def phase_of(self, epoch: int) -> int:
        return next(i for i, phase in enumerate(self.phases) if phase.start <= epoch < phase.end)


def step_decay_lrs(epochs: int, lr: float, milestones: Sequence[int], gamma: float = 0.1) -> list[float]:
    """``lr`` times ``gamma`` per milestone passed (MultiStepLR stepped after each epoch)."""
    return [lr * gamma ** sum(epoch >= m for m in milestones) for epoch in range(epochs)]


def single_plan(epochs: int, lr: float, ticket: str, schedule: bool = True, milestone_epochs: int | None = None) -> TrainingPlan:
    """DST / single model: one phase; lr /10 at 50% and 75% of ``milestone_epochs`` (default ``epochs``; the
    original's MultiStepLR, which keeps them at 50% and 75% of ``--epochs`` under ``--multiplier``) unless
    ``schedule`` is off (constant lr, as ``--nolrsche`` and PF's fine-tuning)."""
    if epochs < 1:
        raise UserError(f"--epochs {epochs} must be at least 1")
    base = epochs if milestone_epochs is None else milestone_epochs
    milestones = [int(base * 0.5), int(base * 0.75)] if schedule else []
    return TrainingPlan(step_decay_lrs(epochs, lr, milestones), [Phase(0, epochs, ticket)])


REFINE_LRS = (0.01, 0.001)  # the original main_EDST.py sets these outright, whatever --lr is


def edst_boundaries(epochs: int, epochs_explo: int, model_num: int) -> tuple[list[int], list[int]]:
    """The first epoch (0-based) of every refine phase and of its second, lower-lr half, as the original
    ``minestone_calculation`` computes them: phases of (epochs - epochs_explo) / model_num epochs, a fraction
    when that does not divide, with every boundary rounded up (the same float additions, so the same rounding)."""
    length = (epochs - epochs_explo) / model_num
    starts, boundary = [], float(epochs_explo)
    for _ in range(model_num):
        starts.append(boundary)
        boundary = boundary + length  # accumulated as the original does, so float rounding matches too
    halves = [math.ceil(start + length / 2) for start in starts]
    return [math.ceil(start) for start in starts], halves


def edst_plan(epochs: int, epochs_explo: int, model_num: int, lr: float,
              refine_lrs: tuple[float, float] | None = REFINE_LRS) -> TrainingPlan:
    """EDST: exploration at ``lr`` for ``epochs_explo`` epochs, then ``model_num`` refine phases with the
    original's boundaries (:func:`edst_boundaries`), each at ``refine_lrs[0]`` for its first half and
    ``refine_lrs[1]`` for the rest (the original's 0.01 and 0.001; ``None``: lr/10 and lr/100, relative to
    ``lr``); each later refine phase starts with a large death. Phase k saves ``model_{k}.pth``."""
    if model_num < 1:
        raise UserError(f"--model-num {model_num} must be at least 1: it is the number of tickets")
    if not 0 <= epochs_explo < epochs:
        raise UserError(f"--epochs-explo {epochs_explo} must be at least 0 and below --epochs {epochs}")
    refine = epochs - epochs_explo
    if refine < model_num:
        raise UserError(f"--epochs {epochs} minus --epochs-explo {epochs_explo} leaves {refine} epochs, fewer than "
                        f"--model-num {model_num} refine phases need; raise --epochs")
    high, low = refine_lrs if refine_lrs is not None else (lr * 0.1, lr * 0.01)
    starts, halves = edst_boundaries(epochs, epochs_explo, model_num)
    ends = starts[1:] + [epochs]
    lrs = [lr] * epochs_explo
    phases = [Phase(0, epochs_explo, None)] if epochs_explo else []
    for k, (start, half, end) in enumerate(zip(starts, halves, ends)):
        half = min(max(half, start + 1), end)
        lrs += [high] * (half - start) + [low] * (end - half)
        phases.append(Phase(start, end, f"model_{k}.pth", large_death=k > 0))
    return TrainingPlan(lrs, phases)


def imagenet_plan(epochs: int, epochs_explo: int, epochs_refine: int, lr: float, warmup: int) -> TrainingPlan:
    """The original ImageNet EDST schedule, scaled: exploration of ``epochs_explo`` epochs (warm-up
    lr * (e + 1) / (warmup + 1) for epochs e < warmup, as the original, then
    lr, /10 at 30%, 60% and 90% of it), then refine phases of ``epochs_refine`` epochs (lr/10, /100 after 3/7,
    /1000 after 6/7), each starting with a large death; every phase saves ``checkpoint-{k}.pth.tar``.
    With the defaults (310, 100, 70) that is the original's 100 / 170 / 240 boundaries and 4 tickets."""
    if epochs_refine < 1 or not 0 < epochs_explo <= epochs or (epochs - epochs_explo) % epochs_refine:
        raise UserError(f"--epochs {epochs} must be --epochs-explo {epochs_explo} plus whole refine phases of "
                        f"--epochs-refine {epochs_refine} epochs")
    explo = [lr * (e + 1) / (warmup + 1) if e < warmup else lr for e in range(epochs_explo)]  # the original's ramp
    explo = [value * 0.1 ** sum(e >= round(f * epochs_explo) for f in (0.3, 0.6, 0.9)) for e, value in enumerate(explo)]
    lrs, phases = explo, [Phase(0, epochs_explo, "checkpoint-0.pth.tar")]
    for k in range((epochs - epochs_explo) // epochs_refine):
        start = epochs_explo + k * epochs_refine
        lrs += [lr * 0.1 * 0.1 ** sum(e >= round(f * epochs_refine) for f in (3 / 7, 6 / 7)) for e in range(epochs_refine)]
        phases.append(Phase(start, start + epochs_refine, f"checkpoint-{k + 1}.pth.tar", large_death=True))
    return TrainingPlan(lrs, phases)


# ---------------------------------------------------------------------------------------------- run
@dataclass
class RunConfig:
    """What decides a FreeTickets run's result (compared on rerun, so a folder is never continued with other flags)."""

    method: str
    model: str
    data: str
    seed: int = FREETICKETS_DEFAULTS["seed"]
    batch_size: int = FREETICKETS_DEFAULTS["batch_size"]
    lr: float = FREETICKETS_DEFAULTS["lr"]
    momentum: float = FREETICKETS_DEFAULTS["momentum"]
    l2: float = FREETICKETS_DEFAULTS["weight_decay"]  # the stored name (run folders keep it); the flag is --weight_decay
    sparse: bool = True
    sparse_config: SparseConfig = field(default_factory=SparseConfig)
    plan: dict = field(default_factory=dict)
    pretrain: str | None = None
    label_smoothing: float = 0.0
    norm_weight_decay: bool = True


class PhaseRecorder(TrainingHook):
    """The run's per-epoch history (epoch, phase, statistics, density) and, when ``trajectory`` is given, the
    softmax outputs it records after each epoch (for the t-SNE picture)."""

    def __init__(self, plan: TrainingPlan, masked: MaskedWeights | None, history: list[dict], trajectory: list,
                 record_outputs: Callable[[nn.Module], torch.Tensor] | None):
        self.plan, self.masked, self.history, self.trajectory = plan, masked, history, trajectory
        self.record_outputs = record_outputs

    def end_of_epoch(self, epoch: int, model: nn.Module, stats: dict[str, float]) -> bool:
        stats = dict(stats)
        seconds = stats.pop("seconds", 0.0)
        density = self.masked.density() if self.masked is not None else 1.0
        self.history.append({"epoch": epoch + 1, "phase": self.plan.phase_of(epoch), **stats, "density": density,
                             "seconds": round(seconds, 2)})
        if self.record_outputs is not None:
            self.trajectory.append(self.record_outputs(model))
        return False


class FreeTicketsPolicy(RoundPolicy):
    """One round through ``plan``: its learning rates and phases, the sparse masks and their updater, the history.

    ``steps`` is the number of optimiser steps per epoch (the updater's schedule is in steps)."""

    def __init__(self, config: RunConfig, plan: TrainingPlan, steps: int, name: str,
                 trajectory: Callable[[nn.Module], torch.Tensor] | None = None):
        self.config, self.training_plan, self.steps, self.name = config, plan, steps, name
        self.record_outputs = trajectory
        self.masked: MaskedWeights | None = None
        self.updater: MaskUpdater | None = None
        self.recorder: PhaseRecorder | None = None

    def plan(self, context: RoundContext) -> RoundPlan:
        """The round: fresh masks (or the resumed ones in ``context.restored``), the updater, the recorder."""
        cfg, plan, restored = self.config, self.training_plan, context.restored or {}
        if "masks" in restored:
            masks = restored["masks"]
        else:
            masks = initial_masks(context.model, cfg.sparse_config, cfg.seed) if cfg.sparse else {}
        self.masked = MaskedWeights(context.model, masks) if masks else None
        hooks: list[TrainingHook] = []
        if self.masked is not None:
            starts = [phase.start * self.steps for phase in plan.phases]
            large = [phase.start * self.steps for phase in plan.phases if phase.large_death]
            self.updater = MaskUpdater(self.masked, cfg.sparse_config, plan.epochs * self.steps, cfg.seed, starts, large)
            self.updater.updates = list(restored.get("updates", []))
            hooks.append(self.updater)
            context.log(f"{self.name}: density {self.masked.density():.4f} over {len(self.masked.masks)} conv/linear weights")
        self.recorder = PhaseRecorder(plan, self.masked, list(restored.get("history", [])),
                                      list(restored.get("trajectory", [])), self.record_outputs)
        hooks.append(self.recorder)
        masked = self.masked
        return RoundPlan(epochs=plan.epochs, milestones=[], learning_rates=list(plan.lrs), hooks=hooks,
                         phase_starts=[phase.start for phase in plan.phases], decay_norms=cfg.norm_weight_decay,
                         label_smoothing=cfg.label_smoothing, label=self.name,
                         density=(lambda: masked.density()) if masked is not None else None)

    def state_dict(self) -> dict[str, Any]:
        """History, masks, softmax trajectory and mask updates: what the progress file keeps beside the model."""
        return {"history": self.recorder.history, "masks": self.masked.state() if self.masked is not None else {},
                "trajectory": self.recorder.trajectory, "updates": self.updater.updates if self.masked is not None else [],
                # the kept count every ticket must have (updates replace as many weights as they remove); not stored
                "planned_kept": sum(self.updater.active.values()) if self.masked is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        """What ``plan`` continues from (the layout has checked the progress file's keys)."""
        return {key: state[key] for key in ("history", "masks", "trajectory", "updates")}


def plan_record(plan: TrainingPlan) -> dict:
    """The plan as stored in the run's settings (learning rates and phases decide the result)."""
    return {"lrs": plan.lrs, "phases": [asdict(p) for p in plan.phases]}


class FreeTicketsRun(IMPEngine):
    """One FreeTickets run into ``save_dir``: the round trainer with :class:`FreeTicketsPolicy` and FreeTickets'
    files; ``run()`` (the engine's) continues a run found there and returns one record per saved ticket.

    ``start_weights`` (PF's dense model) replace the seeded initialisation; ``trajectory(model)`` gives the
    softmax outputs recorded each epoch; ``bare_tickets`` saves tickets as bare state dicts (main_individual.py);
    ``hooks`` join the policy's.
    """

    def __init__(self, config: RunConfig, plan: TrainingPlan, model_factory: Callable[[], nn.Module],
                 train: TrainData, evaluator: Evaluator, device: torch.device, save_dir: Path, *, name: str = "run",
                 start_weights: dict | None = None, trajectory: Callable[[nn.Module], torch.Tensor] | None = None,
                 bare_tickets: bool = False, context: Any = None, hooks: Sequence[TrainingHook] = (),
                 log: Callable[[str], None] = log, progress: bool = True, data_provenance: dict | None = None):
        config.sparse_config.validate()
        if start_weights is not None:  # checked before the engine seeds and builds the model
            check_compatible(start_weights, model_factory().state_dict(), Path(config.pretrain or "--pretrain"),
                             f"--model {config.model}")
        self.start_weights = start_weights
        settings = replace(config, plan=plan_record(plan))
        steps = len(train.batches(0, 0))
        # The round trainer's own settings: one round, no pruning, each phase's best-validation epoch its ticket;
        # lr is a placeholder (the plan's learning_rates set every epoch's rate, and FreeTickets allows --lr 0).
        engine_config = IMPConfig(arch=config.model, dataset=config.data, epochs=plan.epochs,
                                  batch_size=config.batch_size, lr=1.0, momentum=config.momentum,
                                  weight_decay=config.l2, milestones=[], seed=config.seed, pruning_times=1,
                                  prune_type="lt", rewind_epoch=0, ticket="best_val")
        layout = FreeTicketsLayout(save_dir, name, settings, plan.phases, plan.epochs, bare_tickets)
        super().__init__(engine_config, model_factory, train, evaluator, layout, device,
                         policy=FreeTicketsPolicy(config, plan, steps, name, trajectory), hooks=hooks, log=log,
                         progress=progress, context=context, settings=settings)
        self.lock_name = name  # one lock per run name: individual models of several seeds may share a folder
        # the data's name, normalisation, folder and fingerprint for provenance.json (lotterypools.core.provenance)
        self.data_provenance = data_provenance or {"dataset": config.data}

    def initial_weights(self) -> dict | None:
        """PF's dense model, or ``None`` for the seeded initialisation."""
        return self.start_weights


def cifar_sources(data, batch_size: int, test_batch_size: int, device: torch.device, seed: int,
                  trajectory_images: int = 256) -> tuple[TrainData, Evaluator, Callable[[nn.Module], torch.Tensor]]:
    """The engine's in-memory sources (:mod:`lotterypools.training.sources`): shuffled, augmented training batches
    that depend only on (seed, epoch), validation and test evaluation, and each epoch's softmax outputs on the
    first ``trajectory_images`` test images (for the t-SNE picture)."""
    from ..data.datasets import BatchSource, Split
    from ..training.loop import predict
    from ..training.sources import SplitEvaluator, SplitTrainData

    train = SplitTrainData(data, batch_size, device, seed)
    first = BatchSource(Split(data.test.images[:trajectory_images], data.test.labels[:trajectory_images]), 256, device)
    return (train, SplitEvaluator(data, device, batch_size=test_batch_size),
            lambda model: predict(model, first, device)[0].softmax(1).half())


__all__ = ["FreeTicketsPolicy", "FreeTicketsRun", "PROGRESS_KEYS", "Phase", "RunConfig", "TrainingPlan",
           "cifar_sources", "edst_plan", "imagenet_plan", "single_plan"]
