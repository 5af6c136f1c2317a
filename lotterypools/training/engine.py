"""The one training engine: an epoch loop every training system calls, and IMP rounds built on it.

Two layers:

* :func:`fit` is *the* epoch loop. Per epoch it trains one pass (``training.train_one_epoch`` with the
  caller's :class:`~lotterypools.training.loop.TrainingHook` s), steps the learning-rate schedule, evaluates,
  asks every hook's ``end_of_epoch`` whether to stop, then hands an :class:`EpochResult` to ``on_epoch``
  (where callers write checkpoints and log). Step numbers run on from ``start_epoch * len(batches)``, so a
  resumed run numbers its steps as the uninterrupted one. :func:`optimizer_at` builds SGD and its schedule
  at an epoch: restored from a checkpoint, or stepped there (rewinding).
* :class:`IMPEngine` runs IMP rounds over :func:`fit`. Where files go is a **layout** (one reader and one
  writer per format: :class:`lotterypools.formats.original.OriginalLayout` for the original's
  ``{k}checkpoint.pth.tar`` folders, :class:`lotterypools.formats.openlth.OpenLTHLayout` for OpenLTH's
  ``level_k/main/``); which epoch is the ticket is ``config.ticket`` (``best_val`` or ``last``); what a
  round trains is a :class:`RoundPlan` from a :class:`RoundPolicy` (the base class is plain IMP). Training
  data and evaluation come in as a :class:`TrainData` and an :class:`Evaluator`
  (in-memory splits, or ImageFolder shards over processes: :mod:`lotterypools.training.sources`).
  The resume rule is one: continue from the latest round with saved progress (a finished round is
  closed and pruned, a round in progress continues after its last saved epoch with optimiser, schedule,
  and the policy's state restored); ``run(resume=None)`` continues a run found in the folder, or refuses it
  where the subclass says a rerun must ask (``rerun_continues``). A run folder stores its settings; a resume
  with settings that change the result is refused (:func:`check_settings`).

How a system plugs in (no new loop): subclass :class:`RoundPolicy`. The engine asks it, per round, with a
:class:`RoundContext` (round index, model, settings, the layout to read earlier tickets, what was trained),
never with itself:
  * ``plan(context)`` once per round, after the round's mask is in place (on resume with the resumed model
    and ``context.restored``, what ``load_state_dict`` returned for that checkpoint). It returns a
    :class:`RoundPlan`: subset, epochs and schedule (``milestones``/``warmup``, or ``learning_rates`` per
    epoch), hooks, ``phase_starts`` (each phase chooses its own ticket) and a few optimiser options.
  * ``state_dict()`` gives the extra keys each epoch's checkpoint stores; ``load_state_dict(saved)`` checks a
    checkpoint's keys and *returns* what ``plan`` needs to continue that round (nothing is stashed).
  * ``end_of_round(context)`` runs once the round's files are written (``context.epochs_trained`` says how
    many epochs it trained); ``start_weights(context)`` may replace the rewind weights of a pruned round.
PrAC (``tickets.prac_imp``) returns subsets, scaled schedules and its recorder and early-stop hooks;
FreeTickets (``tickets.freetickets``) is one round with per-epoch learning rates, phases that each save a
ticket and a mask-update hook, written by its own layout (``formats.freetickets``).
Which epoch is a ticket is :func:`choose_ticket`, a pure function of the rule, the ticket so far and the epoch.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

from ..training.progress import RoundProgress
from ..training.masks import load_into, split_pruned_state
from ..config.settings import IMPConfig, changed_settings
from ..core.device import derived_seed
from ..core.errors import UserError
from .guards import check_finite, check_ticket_density
from .masks import apply_masks, density, kept_count, masks_of, prunable_modules, prune_globally, \
    refresh_masked_weights, remove_masks
from ..core.console import log
from ..core.records import format_table
from .loop import EpochStats, TrainingHook, build_optimizer, build_scheduler, prepare_model, \
    train_one_epoch
from ..core.types import Batches, Masks, Weights


# ============================================================== the epoch loop
@dataclass
class EpochResult:
    """One finished epoch: ``epoch`` counts finished epochs (1-based), ``stopped`` is a hook's early stop."""

    epoch: int
    train: EpochStats
    evaluation: dict[str, EpochStats]
    lr: float
    seconds: float
    stopped: bool = False

    def stats(self) -> dict[str, float]:
        """Flat numbers (``train_loss``, ``train_acc``, ``val_acc``, ``test_loss``, ..., ``lr``, ``seconds``) for hooks and logs."""
        flat = {"train_loss": self.train.loss, "train_acc": self.train.accuracy, "lr": self.lr}
        for name, value in self.evaluation.items():
            flat[f"{name}_loss"], flat[f"{name}_acc"] = value.loss, value.accuracy
        flat["seconds"] = self.seconds
        return flat


class Evaluator(Protocol):
    """Evaluation after each epoch: ``{"val": stats, "test": stats}`` (any names) for ``model``."""

    def __call__(self, model: nn.Module) -> dict[str, EpochStats]: ...


def fit(model: nn.Module, batches: Callable[[int], Batches], optimizer: torch.optim.Optimizer,
        scheduler: Any, device: torch.device, *, start_epoch: int, epochs: int,
        evaluate: Evaluator | None = None, hooks: Sequence[TrainingHook] = (), amp: bool = False,
        train_module: nn.Module | None = None, on_epoch: Callable[[EpochResult], None] | None = None,
        describe: Callable[[int], str | None] = lambda epoch: None, label_smoothing: float = 0.0) -> list[EpochResult]:
    """Train epochs ``start_epoch .. epochs-1``; the one epoch loop of the package.

    ``batches(epoch)`` gives the epoch's training batches (seeded by the caller, so a resumed run repeats
    them); ``train_module`` is what the forward pass runs through (a ``DistributedDataParallel`` wrapper of
    ``model``) when it is not ``model``; ``scheduler`` (or ``None``) steps once per epoch. After evaluation
    every hook's ``end_of_epoch(epoch, model, stats)`` is asked (all of them); any True ends the loop
    after ``on_epoch`` has seen that epoch with ``stopped=True``. ``describe(epoch)`` labels the progress bar
    (``None``: no bar); ``label_smoothing`` goes to the training cross-entropy.
    """
    results = []
    for epoch in range(start_epoch, epochs):
        started = time.time()
        source = batches(epoch)
        lr = optimizer.param_groups[0]["lr"]
        steps = len(source)
        train = train_one_epoch(train_module or model, source, optimizer, device, amp, describe(epoch), steps,
                                hooks=hooks, epoch=epoch, first_step=epoch * steps, label_smoothing=label_smoothing)
        if scheduler is not None:
            scheduler.step()
        evaluation = evaluate(model) if evaluate is not None else {}
        result = EpochResult(epoch + 1, train, evaluation, lr, time.time() - started)
        stops = [hook.end_of_epoch(epoch, model, result.stats()) for hook in hooks]
        result.stopped = any(stops)
        if on_epoch is not None:
            on_epoch(result)
        results.append(result)
        if result.stopped:
            break
    return results


class EpochLearningRates:
    """A learning rate per epoch as a schedule object for :func:`fit` (``step()`` once per finished epoch).

    The rates are set as given (no ``lr * factor`` rounding); built at ``epoch``, so a resumed run continues.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, rates: Sequence[float], epoch: int = 0):
        self.optimizer, self.rates, self.epoch = optimizer, list(rates), epoch
        self._apply()

    def step(self) -> None:
        self.epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self._apply()

    def _apply(self) -> None:
        lr = self.rates[min(self.epoch, len(self.rates) - 1)]
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def optimizer_at(model: nn.Module, lr: float, momentum: float, weight_decay: float, milestones: Sequence[int],
                 warmup: int, epoch: int, saved_optimizer: dict | None = None, saved_scheduler: dict | None = None,
                 learning_rates: Sequence[float] | None = None,
                 decay_norms: bool = True) -> tuple[torch.optim.SGD, Any]:
    """SGD and its schedule at ``epoch``: restored from saved states, else stepped ``epoch`` times.

    The schedule is step decay at ``milestones`` after ``warmup`` epochs, or, with ``learning_rates``, one
    rate per epoch (FreeTickets' phases). Stepping rewinds the learning rate with the weights (IMP with
    rewinding); ``epoch`` 0 is a fresh start. ``decay_norms=False`` exempts biases and norm parameters from
    weight decay.
    """
    optimizer = build_optimizer(model, lr, momentum, weight_decay, decay_norms)
    if learning_rates is not None:
        if saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
        return optimizer, EpochLearningRates(optimizer, learning_rates, epoch)
    scheduler = build_scheduler(optimizer, milestones, warmup)
    if saved_optimizer is not None:
        optimizer.load_state_dict(saved_optimizer)
        if saved_scheduler is not None:
            scheduler.load_state_dict(saved_scheduler)
        return optimizer, scheduler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # stepping before any optimiser step is intended here
        for _ in range(epoch):
            scheduler.step()
    return optimizer, scheduler


# ============================================================== what a round trains
@dataclass
class RoundPlan:
    """What one round trains, as a :class:`RoundPolicy` decides at the round's start.

    ``start_epoch`` is where training and the schedule begin (rewinding starts later than 0); ``epochs``
    is where the round ends; ``subset`` (training-split indices, or ``None`` for all) is what it trains on,
    with batches carrying sample indices when ``with_indices``; ``hooks`` join the engine's own;
    ``learning_rates`` (one per epoch) replaces the step schedule (``milestones``, ``warmup``);
    ``phase_starts`` are the epochs (0-based) where the ticket choice starts again (one ticket per phase);
    ``decay_norms=False`` exempts biases and norm parameters from weight decay; ``label_smoothing`` goes to
    the training loss; ``label`` names the round in logs and ``density()`` gives its density there when its
    masks are not pruning buffers.
    """

    epochs: int
    milestones: list[int]
    warmup: int = 0
    start_epoch: int = 0
    subset: torch.Tensor | None = None
    with_indices: bool = False
    hooks: list[TrainingHook] = field(default_factory=list)
    learning_rates: list[float] | None = None
    phase_starts: list[int] = field(default_factory=lambda: [0])
    decay_norms: bool = True
    label_smoothing: float = 0.0
    label: str | None = None
    density: Callable[[], float] | None = None


@dataclass
class RoundContext:
    """What a :class:`RoundPolicy` sees of a run: the round, its model and the run's settings and files.

    ``layout`` reads earlier rounds' tickets; ``model_factory`` and ``device`` build other networks;
    ``restored`` is what the policy's ``load_state_dict`` returned for the checkpoint this round resumes
    (``None`` for a fresh round); ``epochs_trained`` is set for ``end_of_round``.
    """

    round: int
    model: nn.Module
    config: Any
    layout: "Layout"
    model_factory: Callable[[], nn.Module]
    device: torch.device
    is_main: bool = True
    log: Callable[[str], None] = log
    restored: Any = None
    epochs_trained: int = 0


class RoundPolicy:
    """Decides each round's plan; the base class is plain IMP."""

    def plan(self, context: RoundContext) -> RoundPlan:
        """What round ``context.round`` trains (asked once per round, with its starting or resumed model)."""
        cfg = context.config
        start = cfg.rewind_point if context.round > 0 and cfg.prune_type == "rewind_lt" else 0
        return RoundPlan(epochs=cfg.epochs, milestones=list(cfg.milestones), warmup=cfg.warmup, start_epoch=start)

    def start_weights(self, context: RoundContext) -> Weights | None:
        """Plain weights a pruned round starts from; ``None`` for the engine's rewind rule."""
        return None

    def end_of_round(self, context: RoundContext) -> None:
        """Called once the round's files are written, before its weights are pruned and rewound."""

    def state_dict(self) -> dict[str, Any]:
        """Extra keys stored at the top level of each round checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        """Check a resumed checkpoint (the whole dict) and return what ``plan`` needs (``context.restored``)."""
        return None


def choose_ticket(rule: str, ticket_epoch: int, ticket_val: float, result: EpochResult,
                  phase_start: int = 0) -> tuple[int, float] | None:
    """The new ticket ``(epoch, val)`` if ``result``'s weights replace the ticket so far, else ``None``.

    ``last``, or no validation: every epoch. ``best_val``: a strictly higher validation accuracy, or the
    first epoch of a phase starting at ``phase_start`` (a ticket from an earlier phase does not count).
    """
    val = result.evaluation.get("val")
    if rule == "last" or val is None:
        return result.epoch, val.accuracy if val else -1.0
    if ticket_epoch <= phase_start or val.accuracy > ticket_val:
        return result.epoch, val.accuracy
    return None


# ============================================================== inputs and files
class TrainData(Protocol):
    """Training batches of one epoch of one round (seeded by round and epoch)."""

    def batches(self, round_index: int, epoch: int, subset: torch.Tensor | None = None,
                with_indices: bool = False) -> Batches: ...


class Layout(Protocol):
    """Where a run's files go: one reader and one writer per format (see the module docstring)."""

    folder: Path
    file_layout: str

    def holds_run(self) -> bool: ...
    def read_settings(self) -> dict | None: ...
    def write_settings(self, settings: dict) -> None: ...
    def latest_progress(self, last_round: int) -> RoundProgress | None: ...
    def read_progress_file(self, path: Path) -> RoundProgress: ...
    def round_closed(self, round_index: int) -> bool: ...
    def write_start(self, round_index: int, start_epoch: int, model: nn.Module) -> None: ...
    def write_rewind(self, epoch: int, model: nn.Module) -> None: ...
    def read_rewind(self, epoch: int) -> Weights | None: ...
    def read_ticket(self, round_index: int) -> Weights: ...
    def write_epoch(self, progress: RoundProgress, model: nn.Module, is_ticket: bool, extra: dict) -> None: ...
    def close_round(self, progress: RoundProgress, model: nn.Module, record: dict) -> None: ...
    def summary(self) -> list[dict]: ...
    def summary_columns(self, ticket_rule: str) -> list[str]: ...
    def describe_missing(self) -> str: ...


def check_settings(saved: dict | None, settings: Any, folder: Path) -> None:
    """Refuse a run folder whose stored settings (``saved``) differ from ``settings`` in what decides the result."""
    changed = changed_settings(saved, settings) if saved is not None else []
    if changed:
        raise UserError(f"{folder} holds a run with other settings ({'; '.join(changed)}): rerun with the "
                        f"same settings to continue it, or choose another output folder")


# ============================================================== IMP rounds
class IMPEngine:
    """Rounds of IMP over :func:`fit`: train, prune the last epoch's weights, rewind, repeat.

    ``context`` (a ``distributed.DistributedContext``) makes every process train its share under
    ``DistributedDataParallel``; only its main process writes files and logs. ``settings`` is the record
    stored with the run and compared on resume (a dataclass; default ``config``).
    """

    #: what ``run(resume=None)`` does with a folder that holds a run: continue it (OpenLTH's rerun) or refuse
    rerun_continues = True

    def __init__(self, config: IMPConfig, model_factory: Callable[[], nn.Module], train: TrainData,
                 evaluator: Evaluator, layout: Layout, device: torch.device, *, policy: RoundPolicy | None = None,
                 hooks: Sequence[TrainingHook] = (), log: Callable[[str], None] = log, progress: bool = True,
                 context: Any = None, settings: Any = None):
        config.validate()
        self.config, self.model_factory, self.train, self.evaluator = config, model_factory, train, evaluator
        self.settings = config if settings is None else settings
        self.layout, self.device, self.policy = layout, device, policy or RoundPolicy()
        self.hooks, self.context = list(hooks), context
        self.is_main = context is None or context.is_main
        self.log = log if self.is_main else (lambda message: None)
        self.progress = progress and self.is_main
        self._rewind_cache: Weights | None = None
        # the data's name, normalisation, folder and fingerprint for provenance.json (set by IMPRun, LevelRun)
        self.data_provenance: dict[str, Any] = {"dataset": config.dataset}
        self.lock_name = "run"  # the run folder's lock (.run.lock); FreeTickets locks per run name

    @property
    def save_dir(self) -> Path:
        return self.layout.folder

    # ---------------------------------------------------------------- entry point
    def run(self, resume: bool | None = None, checkpoint: Path | None = None) -> list[dict]:
        """Train every round not yet finished; return the summary (one record per round).

        ``resume=False`` refuses a folder that holds a run, ``True`` requires one, ``None`` follows the
        run's rule (``rerun_continues``: continue one if present, as OpenLTH; else as ``False``).
        ``checkpoint`` continues from that round checkpoint. The folder is locked for the run's lifetime and
        its provenance recorded (:mod:`lotterypools.core.runlock`).
        """
        from ..core.provenance import run_entry
        from ..core.runlock import hold_run_folder

        with hold_run_folder(self.save_dir, run_entry(self.device, **self.data_provenance), name=self.lock_name,
                             is_main=self.is_main):
            return self._run(resume, checkpoint)

    def _run(self, resume: bool | None, checkpoint: Path | None) -> list[dict]:
        cfg = self.config
        if resume is None and not self.rerun_continues:
            resume = False
        model, progress, plan = self._starting_point(resume, checkpoint)
        while True:
            round_index = progress.round
            trained = not (progress.stopped or progress.next_epoch >= plan.epochs)
            if trained:
                self._train_round(model, progress, plan)
            if trained or not self.layout.round_closed(round_index):
                self._close_round(model, progress, plan)
            self.policy.end_of_round(self._context(round_index, model, epochs_trained=len(progress.result.get("train_ta", []))))
            self._barrier()
            if round_index + 1 >= cfg.pruning_times:
                break
            model = self._next_ticket(model, round_index + 1)
            plan = self.policy.plan(self._context(round_index + 1, model))
            progress = self._start_round(model, round_index + 1, plan)
        summary = self.summary()
        self.log(format_table(summary, self.layout.summary_columns(cfg.ticket)))
        return summary

    def _context(self, round_index: int, model: nn.Module, **extra: Any) -> RoundContext:
        """What the policy sees of round ``round_index``."""
        return RoundContext(round_index, model, self.config, self.layout, self.model_factory, self.device,
                            self.is_main, self.log, **extra)

    def _starting_point(self, resume: bool | None,
                        checkpoint: Path | None) -> tuple[nn.Module, RoundProgress, RoundPlan]:
        """The model, progress and plan to continue from (the resume rule), or round 0's; settings checked first."""
        holds = self.layout.holds_run()
        if resume is False and holds:
            state = "a finished IMP run (nothing to do)" if self._finished() else "an IMP run"
            raise UserError(f"{self.save_dir} already holds {state}; pass --resume to continue it or choose "
                            f"another output folder")
        progress = self._progress_to_continue(checkpoint) if (resume or (resume is None and holds)) else None
        saved_settings = self.layout.read_settings() if (progress is not None or resume) else None
        if resume and progress is None and saved_settings is None:
            raise UserError(f"--resume: {self.layout.describe_missing()}; start without --resume")
        check_settings(saved_settings, self.settings, self.save_dir)
        self._barrier()
        if progress is not None:
            restored = self.policy.load_state_dict(progress.extra)
            model = self._model_from(progress)  # fails, changing nothing, when the weights do not fit
        if self.is_main:
            self.layout.write_settings(dataclasses.asdict(self.settings))
        if progress is not None:
            plan = self.policy.plan(self._context(progress.round, model, restored=restored))
            if self._all_done(progress, plan):
                self.log(f"{self.save_dir} is already finished: nothing to train")
            else:
                self.log(f"continuing {plan.label or f'round {progress.round}'} after epoch {progress.next_epoch}")
            return model, progress, plan
        model = self._first_round()
        plan = self.policy.plan(self._context(0, model))
        return model, self._start_round(model, 0, plan), plan

    def summary(self) -> list[dict]:
        """The finished rounds' records."""
        return self.layout.summary()

    def _finished(self) -> bool:
        """Whether every round has its summary record (IMP's summary holds one per closed round)."""
        return len(self.summary()) >= self.config.pruning_times

    def _all_done(self, progress: RoundProgress, plan: RoundPlan) -> bool:
        """Whether the run continued from ``progress`` has nothing left: its last round trained and closed."""
        last = progress.round + 1 >= self.config.pruning_times
        trained = progress.stopped or progress.next_epoch >= plan.epochs
        return last and trained and self.layout.round_closed(progress.round)

    def _barrier(self) -> None:
        if self.context is not None and self.context.active:
            torch.distributed.barrier()

    # ---------------------------------------------------------------- set-up and resume
    def build_model(self) -> nn.Module:
        """A fresh model on the device (seeded by the caller), in the asked memory format, compiled if asked."""
        model = self.model_factory().to(self.device)
        return prepare_model(model, self.config.channels_last, self.config.compile)

    def _first_round(self) -> nn.Module:
        torch.manual_seed(self.config.seed)
        model = self.build_model()
        initial = self.initial_weights()
        if initial is not None:
            model.load_state_dict(initial)
        if self.config.rewind_point == 0:
            self._rewind_cache = _plain_copy(model)
            if self.is_main:
                self.layout.write_rewind(0, model)
        masks = self.initial_masks()
        if masks:
            apply_masks(model, masks)
        return model

    def initial_weights(self) -> Weights | None:
        """Round 0's start weights; ``None``: the seeded initialisation (retraining gives a checkpoint's)."""
        return None

    def initial_masks(self) -> Masks | None:
        """Round 0's masks; ``None``: dense (retraining trains a fixed subnetwork)."""
        return None

    def _start_round(self, model: nn.Module, round_index: int, plan: RoundPlan) -> RoundProgress:
        if self.is_main:
            self.layout.write_start(round_index, plan.start_epoch, model)
        self._barrier()
        return RoundProgress(round_index, plan.start_epoch, empty_result())

    def _progress_to_continue(self, checkpoint: Path | None) -> RoundProgress | None:
        if checkpoint is not None:
            return self.layout.read_progress_file(Path(checkpoint))
        return self.layout.latest_progress(self.config.pruning_times - 1)

    def _model_from(self, progress: RoundProgress) -> nn.Module:
        model = self.model_factory().to(self.device)
        load_into(model, progress.model, progress.masks, progress.path,
                  f"--arch {self.config.arch} on {self.config.dataset}")
        return prepare_model(model, self.config.channels_last, self.config.compile)

    # ---------------------------------------------------------------- one round
    def _optimizer_and_scheduler(self, model: nn.Module, progress: RoundProgress, plan: RoundPlan):
        """SGD and its schedule at ``progress.next_epoch``: restored when resuming, else stepped there (rewinding)."""
        cfg = self.config
        return optimizer_at(model, cfg.lr, cfg.momentum, cfg.weight_decay, plan.milestones, plan.warmup,
                            progress.next_epoch, progress.optimizer, progress.scheduler, plan.learning_rates,
                            plan.decay_norms)

    def _train_round(self, model: nn.Module, progress: RoundProgress, plan: RoundPlan) -> None:
        cfg = self.config
        optimizer, scheduler = self._optimizer_and_scheduler(model, progress, plan)
        mask_density = plan.density or (lambda pruned=density(masks_of(model)): pruned)
        train_module = model
        if self.context is not None and self.context.active:
            train_module = torch.nn.parallel.DistributedDataParallel(model)
        r, label = progress.round, plan.label or f"round {progress.round}"
        hooks = [*plan.hooks, *self.hooks]
        for hook in hooks:
            hook.start(model, optimizer)

        def on_epoch(result: EpochResult) -> None:
            progress.record(result, optimizer.state_dict(), scheduler.state_dict())
            if r == 0 and result.epoch == cfg.rewind_point and cfg.rewind_point > 0:
                self._rewind_cache = _plain_copy(model)
                if self.is_main:
                    self.layout.write_rewind(result.epoch, model)
            phase_start = max(s for s in plan.phase_starts if s < result.epoch)
            ticket = choose_ticket(cfg.ticket, progress.ticket_epoch, progress.ticket_val, result, phase_start)
            if ticket is not None:
                progress.ticket_epoch, progress.ticket_val = ticket
            if self.is_main:
                self.layout.write_epoch(progress, model, ticket is not None, self.policy.state_dict())
            stats = result.stats()
            self.log(f"{label} epoch {result.epoch}/{plan.epochs}  loss {stats['train_loss']:.4f}  "
                     f"train {stats['train_acc']:.2f}  val {stats.get('val_acc', float('nan')):.2f}  "
                     f"test {stats.get('test_acc', float('nan')):.2f}  lr {result.lr:.4g}  "
                     f"density {100 * mask_density():.2f}%  {result.seconds:.1f}s"
                     + ("  (stopped by a hook)" if result.stopped else ""))

        fit(model, lambda epoch: self.train.batches(r, epoch, plan.subset, plan.with_indices), optimizer, scheduler,
            self.device, start_epoch=progress.next_epoch, epochs=plan.epochs, evaluate=self.evaluator,
            hooks=hooks, amp=cfg.amp, train_module=train_module, on_epoch=on_epoch,
            describe=lambda epoch: f"{label} epoch {epoch + 1}/{plan.epochs}" if self.progress else None,
            label_smoothing=plan.label_smoothing)

    def _close_round(self, model: nn.Module, progress: RoundProgress, plan: RoundPlan) -> None:
        result = progress.result
        index = progress.ticket_epoch - 1 - plan.start_epoch
        kept = plan.density() if plan.density is not None else density(masks_of(model))
        record = {
            "round": progress.round, "density": kept, "val_acc": progress.ticket_val,
            "test_acc": result["test_ta"][index] if 0 <= index < len(result["test_ta"]) else None,
            "ticket_epoch": progress.ticket_epoch, "epochs": len(result["train_ta"]),
            "stopped_early": progress.stopped, "seconds": round(progress.seconds, 1),
        }
        if self.config.ticket == "best_val":  # the names summary.json has always used for these
            record.update(best_val_acc=record["val_acc"], best_epoch=record["ticket_epoch"])
        if self.is_main:
            self.layout.close_round(progress, model, record)
        test = "-" if record["test_acc"] is None else f"{record['test_acc']:.2f}"
        self.log(f"{plan.label or f'round {progress.round}'} done: density {100 * record['density']:.2f}%  ticket val "
                 f"{progress.ticket_val:.2f} (epoch {progress.ticket_epoch})  test {test}  {progress.seconds:.0f}s")

    # ---------------------------------------------------------------- prune and rewind
    def _next_ticket(self, model: nn.Module, round_index: int) -> nn.Module:
        """Prune the finished round's last weights, then rewind the survivors for round ``round_index``."""
        cfg = self.config
        model = _contiguous(model)
        check_finite(model.named_parameters(), f"round {round_index - 1}'s pruning score (weight)")
        before = masks_of(model)
        remaining = kept_count(before) if before else sum(
            module.weight.numel() for _, module in prunable_modules(model, cfg.include_linear))
        prune_globally(model, cfg.rate, cfg.include_linear, cfg.random_prune,
                       generator_seed=derived_seed(cfg.seed, round_index - 1, 10**6))
        masks = masks_of(model)
        # torch prunes round(rate * remaining) of the surviving weights; one weight of slack for its rounding
        check_ticket_density(masks, remaining - round(cfg.rate * remaining), f"of round {round_index}", tolerance=1)
        remove_masks(model)
        start = self.policy.start_weights(self._context(round_index, model))
        model.load_state_dict(start if start is not None else self.rewind_state())
        apply_masks(model, masks)
        return prepare_model(model, channels_last=cfg.channels_last)

    def rewind_state(self) -> Weights:
        """The plain weights pruned rounds start from: initialisation, rewind epoch, or (pt) the dense ticket."""
        if self.config.prune_type == "pt":
            return self.layout.read_ticket(0)
        if self._rewind_cache is None:
            self._rewind_cache = self.layout.read_rewind(self.config.rewind_point)
        if self._rewind_cache is None:
            raise UserError(f"the rewind weights of epoch {self.config.rewind_point} are missing from {self.save_dir}: "
                            f"the run folder is incomplete, start a new run")
        return self._rewind_cache


def empty_result() -> dict[str, list[float]]:
    """The original's per-epoch history of a round: ``train_ta``, ``val_ta``, ... lists."""
    keys = ("train_ta", "val_ta", "test_ta", "train_loss", "val_loss", "test_loss")
    return {key: [] for key in keys}


def _plain_copy(model: nn.Module) -> Weights:
    """The model's state dict (masks folded in) on the CPU, detached."""
    weights, _ = split_pruned_state(model.state_dict())
    return {k: v.detach().cpu().clone() for k, v in weights.items()}


def _contiguous(model: nn.Module) -> nn.Module:
    """Weights and masks in the default memory format, as ``torch.nn.utils.prune`` needs (it views them flat)."""
    model = model.to(memory_format=torch.contiguous_format)
    refresh_masked_weights(model)  # the masked weight the pruning hook last computed may be channels-last
    return model


__all__ = ["EpochLearningRates", "EpochResult", "Evaluator", "IMPEngine", "Layout", "RoundContext", "RoundPlan",
           "RoundPolicy", "TrainData", "check_settings", "choose_ticket", "empty_result", "fit", "optimizer_at"]
