"""FreeTickets runs (Liu et al., ICLR 2022): DST, EDST, PF and single models, trained with :class:`MaskUpdater`.

A run is a :class:`TrainingPlan` (a learning rate per epoch and the phases that each save one ticket, the
best-validation model of the phase) executed by :class:`FreeTicketsRun`: the project's ``train_one_epoch``
with the mask updater as its hook, an atomic per-epoch checkpoint (model, optimiser, masks, bests), and
atomic ticket files. Rerunning the same command continues from the last finished epoch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..core.torchfiles import atomic_save, check_compatible, load_file
from ..core.errors import UserError
from ..core.console import log
from ..core.records import write_json
from ..training.sparse import MaskedWeights, MaskUpdater, SparseConfig, initial_masks, sparse_layer_report
from ..training.engine import EpochResult, fit
from ..training.loop import EpochStats, build_optimizer


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


class PlanLearningRate:
    """The plan's learning rate for each epoch, as a schedule object for :func:`~lotterypools.training.engine.fit`
    (``step()`` once per finished epoch); built at ``epoch``, so a resumed run continues the schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, lrs: Sequence[float], epoch: int):
        self.optimizer, self.lrs, self.epoch = optimizer, list(lrs), epoch
        self._apply()

    def step(self) -> None:
        self.epoch += 1
        self._apply()

    def _apply(self) -> None:
        lr = self.lrs[min(self.epoch, len(self.lrs) - 1)]
        for group in self.optimizer.param_groups:
            group["lr"] = lr


# ---------------------------------------------------------------------------------------------- run
@dataclass
class RunConfig:
    """What decides a FreeTickets run's result (compared on rerun, so a folder is never continued with other flags)."""

    method: str
    model: str
    data: str
    seed: int = 17
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    l2: float = 5e-4
    sparse: bool = True
    sparse_config: SparseConfig = field(default_factory=SparseConfig)
    plan: dict = field(default_factory=dict)
    pretrain: str | None = None
    label_smoothing: float = 0.0
    norm_weight_decay: bool = True


@dataclass
class DataFeeds:
    """Where a run's batches come from: ``train(epoch)`` gives that epoch's shuffled batches (``steps`` of them);
    ``evaluate(model)`` gives ``{"val": stats, "test": stats}`` (sharded over processes where there are several);
    ``trajectory(model)``, when set, the softmax outputs recorded each epoch for the t-SNE picture."""

    train: Callable[[int], Iterable]
    steps: int
    evaluate: Callable[[nn.Module], dict[str, EpochStats]]
    trajectory: Callable[[nn.Module], torch.Tensor] | None = None


class FreeTicketsRun:
    """Train one model through ``plan`` into ``save_dir``; ``run()`` returns one record per saved ticket."""

    def __init__(self, config: RunConfig, plan: TrainingPlan, model_factory: Callable[[], nn.Module], feeds: DataFeeds,
                 device: torch.device, save_dir: Path, name: str = "run", start_weights: dict | None = None,
                 is_main: bool = True, wrap: Callable[[nn.Module], nn.Module] = lambda model: model,
                 bare_tickets: bool = False, log: Callable[[str], None] = log, data_provenance: dict | None = None):
        config.sparse_config.validate()
        # the data's name, normalisation, folder and fingerprint for provenance.json (lotterypools.provenance)
        self.data_provenance = data_provenance or {"dataset": config.data}
        self.config, self.plan, self.factory, self.feeds = config, plan, model_factory, feeds
        self.device, self.save_dir, self.name = device, Path(save_dir), name
        self.start_weights, self.is_main, self.wrap = start_weights, is_main, wrap
        self.bare_tickets = bare_tickets
        self.log = log if is_main else (lambda message: None)
        self.progress_path = self.save_dir / "progress" / f"{name}.pth"

    # ------------------------------------------------------------------ set-up
    def _fresh(self) -> tuple[nn.Module, dict]:
        torch.manual_seed(self.config.seed)
        model = self.factory()
        if self.start_weights is not None:
            check_compatible(self.start_weights, model.state_dict(), Path(self.config.pretrain or "--pretrain"),
                             f"--model {self.config.model}")
            model.load_state_dict(self.start_weights)
        masks = initial_masks(model, self.config.sparse_config, self.config.seed) if self.config.sparse else {}
        # the kept count every ticket of the run must have (DST's updates replace as many weights as they remove)
        planned = sum(int(m.count_nonzero()) for m in masks.values()) if masks else None
        return model, {"next_epoch": 0, "best": {}, "history": [], "masks": masks, "optimizer": None,
                       "trajectory": [], "updates": [], "planned_kept": planned}

    def _load_progress(self) -> tuple[nn.Module, dict] | None:
        if not self.progress_path.exists():
            return None
        saved = load_file(self.progress_path)
        if saved.get("config") != self._config_record():
            old, new = saved.get("config", {}), self._config_record()
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise UserError(f"{self.save_dir} holds a run with other settings ({', '.join(changed)}); rerun the same "
                            f"command to continue it, or give another --save_dir")
        model = self.factory()
        model.load_state_dict(saved["model"])
        self.log(f"continuing {self.name} after epoch {saved['next_epoch']} from {self.progress_path}")
        return model, saved

    def _config_record(self) -> dict:
        record = asdict(self.config)
        record["plan"] = {"lrs": self.plan.lrs, "phases": [asdict(p) for p in self.plan.phases]}
        return record

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[dict]:
        """Train every epoch not yet done (on the engine's :func:`~lotterypools.training.engine.fit`); return the tickets' records.

        The folder is locked for this run name (``.<name>.lock``) while it trains: a second run of the same name
        into it is refused; its provenance is recorded (:mod:`lotterypools.core.runlock`).
        """
        from ..core.provenance import run_entry
        from ..core.runlock import hold_run_folder

        with hold_run_folder(self.save_dir, run_entry(self.device, **self.data_provenance), name=self.name,
                             is_main=self.is_main):
            return self._run()

    def _run(self) -> list[dict]:
        model, state = self._load_progress() or self._fresh()
        model.to(self.device)
        masked = MaskedWeights(model, state["masks"]) if state["masks"] else None
        optimizer = self._optimizer(model)
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        hooks = [self._updater(masked, state)] if masked is not None else []
        if masked is not None:
            # stale momentum (the original CIFAR core) keeps masked buffers, so a resumed run must not clear them
            masked.apply(optimizer, momentum=not self.config.sparse_config.stale_momentum)
            self.log(f"{self.name}: density {masked.density():.4f} over {len(masked.masks)} conv/linear weights")
        schedule = PlanLearningRate(optimizer, self.plan.lrs, state["next_epoch"])
        fit(model, self.feeds.train, optimizer, schedule, self.device, start_epoch=state["next_epoch"],
            epochs=self.plan.epochs, evaluate=self.feeds.evaluate,
            hooks=hooks, train_module=self.wrap(model),
            on_epoch=lambda result: self._end_epoch(result, model, optimizer, masked, state),
            describe=lambda epoch: f"{self.name} epoch {epoch + 1}" if self.is_main else None,
            label_smoothing=self.config.label_smoothing)
        return self._records(state)

    def _optimizer(self, model: nn.Module) -> torch.optim.SGD:
        """SGD; without ``norm_weight_decay`` (the original ImageNet code) BN parameters and biases get no decay."""
        cfg = self.config
        if cfg.norm_weight_decay:
            return build_optimizer(model, cfg.lr, cfg.momentum, cfg.l2)
        plain = [p for p in model.parameters() if p.dim() <= 1]
        decayed = [p for p in model.parameters() if p.dim() > 1]
        return torch.optim.SGD([{"params": decayed}, {"params": plain, "weight_decay": 0.0}], lr=cfg.lr,
                               momentum=cfg.momentum, weight_decay=cfg.l2)

    def _updater(self, masked: MaskedWeights, state: dict) -> MaskUpdater:
        steps = self.feeds.steps
        starts = [phase.start * steps for phase in self.plan.phases]
        large = [phase.start * steps for phase in self.plan.phases if phase.large_death]
        updater = MaskUpdater(masked, self.config.sparse_config, self.plan.epochs * steps, self.config.seed, starts, large)
        updater.updates = state["updates"]
        return updater

    def _end_epoch(self, result: EpochResult, model: nn.Module, optimizer, masked, state: dict) -> None:
        """Record the epoch, keep the phase's best-validation ticket, write the checkpoint atomically."""
        epoch = result.epoch - 1
        phase_index = self.plan.phase_of(epoch)
        density = masked.density() if masked is not None else 1.0
        record = {"epoch": result.epoch, "phase": phase_index, **result.stats(), "density": density,
                  "seconds": round(result.seconds, 2)}
        state["history"].append(record)
        if self.feeds.trajectory is not None:
            state["trajectory"].append(self.feeds.trajectory(model))
        self._save_ticket_if_best(phase_index, model, masked, record, state)
        state["next_epoch"] = result.epoch
        state["masks"] = masked.state() if masked is not None else {}
        state["optimizer"] = optimizer.state_dict()
        if self.is_main:
            atomic_save({**state, "model": model.state_dict(), "config": self._config_record()}, self.progress_path)
            self._write_side_files(state)
        self.log(f"{self.name} epoch {result.epoch}/{self.plan.epochs}  lr {result.lr:.4g}  loss {result.train.loss:.4f}  "
                 f"train {result.train.accuracy:.2f}  val {record['val_acc']:.2f}  test {record['test_acc']:.2f}  "
                 f"density {density:.4f}  {result.seconds:.1f}s")

    def _save_ticket_if_best(self, phase_index: int, model: nn.Module, masked, record: dict, state: dict) -> None:
        """Each phase keeps its best-validation model (selection never looks at the test set)."""
        phase = self.plan.phases[phase_index]
        best = state["best"].get(phase_index)
        if phase.ticket is None or (best is not None and record["val_acc"] <= best["val_acc"]):
            return
        state["best"][phase_index] = {**record, "ticket": phase.ticket}
        if not self.is_main:
            return
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self._check_ticket(weights, masked, state, self.save_dir / phase.ticket)
        ticket = weights if self.bare_tickets else {
            "epoch": record["epoch"], "state_dict": weights, "masks": masked.state() if masked is not None else {},
            "arch": self.config.model, "dataset": self.config.data, "method": self.config.method,
            "density": record["density"], "val_acc": record["val_acc"], "test_acc": record["test_acc"],
            "seed": self.config.seed}
        atomic_save(ticket, self.save_dir / phase.ticket)

    def _check_ticket(self, weights: dict, masked, state: dict, path: Path) -> None:
        """Refuse to write a ticket from non-finite weights, or whose masks keep another count than planned."""
        from ..training.guards import check_finite, check_ticket_density

        check_finite(weights, "the ticket's weight")
        if masked is None:
            return
        planned = state.get("planned_kept")
        if planned is None and self.config.sparse_config.sparse_init != "resume":  # progress written before the field
            planned = round(self.config.sparse_config.density * sum(m.numel() for m in masked.masks.values()))
        if planned is not None:
            check_ticket_density(masked.masks, planned, path)

    def _write_side_files(self, state: dict) -> None:
        write_json(self.save_dir / f"history_{self.name}.json",
                   {"config": self._config_record(), "history": state["history"], "tickets": self._records(state),
                    "mask_updates": len(state["updates"]),
                    "layers": sparse_layer_report(state["masks"]) if state["masks"] else []})
        if state["trajectory"]:
            atomic_save({"name": self.name, "epochs": [h["epoch"] for h in state["history"]],
                         "phases": [h["phase"] for h in state["history"]], "probs": torch.stack(state["trajectory"])},
                        self.save_dir / f"trajectory_{self.name}.pt")

    @staticmethod
    def _records(state: dict) -> list[dict]:
        return [state["best"][k] for k in sorted(state["best"])]


def cifar_feeds(data, batch_size: int, test_batch_size: int, device: torch.device, seed: int,
                trajectory_images: int = 256) -> DataFeeds:
    """The engine's in-memory sources (:mod:`lotterypools.training.sources`): shuffled, augmented training batches that
    depend only on (seed, epoch), validation and test evaluation, and each epoch's softmax outputs on the
    first ``trajectory_images`` test images (for the t-SNE picture)."""
    from ..data.datasets import BatchSource, Split
    from ..training.sources import SplitEvaluator, SplitTrainData
    from ..training.loop import predict

    train = SplitTrainData(data, batch_size, device, seed)
    first = BatchSource(Split(data.test.images[:trajectory_images], data.test.labels[:trajectory_images]), 256, device)
    return DataFeeds(train=lambda epoch: train.batches(0, epoch), steps=len(train.batches(0, 0)),
                     evaluate=SplitEvaluator(data, device, batch_size=test_batch_size),
                     trajectory=lambda model: predict(model, first, device)[0].softmax(1).half())
