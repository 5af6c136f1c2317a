"""Iterative magnitude pruning (IMP): train, prune a fraction of the remaining weights, rewind, repeat.

Each round writes its tickets and a resumable checkpoint atomically; batches depend only on
(seed, round, epoch), so a run resumed from any epoch checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import paths
from .checkpoints import atomic_save, load_file, load_pruned_state, split_pruned_state
from .data import BatchSource, DataSplits, Split, resident_split
from .device import derived_seed
from .errors import UserError
from .loaders import LOADERS, DataLoaderSource, pil_source
from .masks import apply_masks, density, masks_of, prune_globally, refresh_masked_weights, remove_masks
from .results import format_table, plot_training_curve, read_json, write_json
from .training import TrainingHook, build_optimizer, build_scheduler, evaluate, prepare_model, train_one_epoch
from .results import log

PRUNE_TYPES = ("lt", "pt", "rewind_lt")


@dataclass
class IMPConfig:
    """Everything that decides an IMP run's result."""

    arch: str
    dataset: str
    epochs: int = 182
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [91, 136])
    warmup: int = 0
    pruning_times: int = 19
    rate: float = 0.2
    prune_type: str = "rewind_lt"
    random_prune: bool = False
    rewind_epoch: int = 9
    include_linear: bool = False
    seed: int = 41
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    loader: str = "resident"
    workers: int = 2

    def validate(self) -> None:
        """One-line errors for settings that cannot work together."""
        if not 0.0 < self.rate < 1.0:
            raise UserError(f"--rate {self.rate} is outside (0, 1): it is the fraction of remaining weights pruned per round")
        if self.prune_type not in PRUNE_TYPES:
            raise UserError(f"unknown --prune_type {self.prune_type!r}: choose one of {', '.join(PRUNE_TYPES)}")
        if self.epochs < 1:
            raise UserError(f"--epochs {self.epochs} must be at least 1")
        if self.prune_type == "rewind_lt" and not 0 <= self.rewind_epoch < self.epochs:
            raise UserError(f"--rewind_epoch {self.rewind_epoch} must be at least 0 and below --epochs {self.epochs}")
        if self.loader not in LOADERS:
            raise UserError(f"unknown --loader {self.loader!r}: choose one of {', '.join(LOADERS)}")
        if self.pruning_times < 1:
            raise UserError(f"--pruning_times {self.pruning_times} must be at least 1 (the dense round)")

    @property
    def rewind_point(self) -> int:
        """Epoch whose weights sparse rounds start from (0 = initialisation)."""
        return self.rewind_epoch if self.prune_type == "rewind_lt" else 0


@dataclass
class RoundState:
    """What an interrupted round needs to continue."""

    round: int
    next_epoch: int
    result: dict[str, list[float]]
    best_val: float = -1.0
    best_epoch: int = -1
    seconds: float = 0.0
    optimizer: dict | None = None
    scheduler: dict | None = None
    iterations: int = 0
    stopped: bool = False


@dataclass
class RoundPlan:
    """How one round trains: on which training samples, for how many epochs, on which schedule.

    ``subset`` holds indices into the training split (``None``: all of it); epochs and milestones count
    from 0, and training starts at ``first_epoch`` with the schedule stepped there.
    """

    subset: torch.Tensor | None
    epochs: int
    milestones: list[int]
    warmup: int
    first_epoch: int


def empty_result() -> dict[str, list[float]]:
    keys = ("train_ta", "val_ta", "test_ta", "train_loss", "val_loss", "test_loss")
    return {key: [] for key in keys}


class IMPRun:
    """An IMP run over one folder: ``run()`` trains every round not yet finished."""

    def __init__(self, config: IMPConfig, model_factory: Callable[[], nn.Module], data: DataSplits,
                 device: torch.device, save_dir: Path, log: Callable[[str], None] = log,
                 progress: bool = True):
        config.validate()
        self.config, self.model_factory, self.data, self.device = config, model_factory, data, device
        self.save_dir = Path(save_dir)
        self.log, self.progress = log, progress
        self.train_source = self._train_source(None)
        self.val_source = BatchSource(resident_split(data.val, device), 500, device)
        self.test_source = BatchSource(resident_split(data.test, device), 500, device)
        self._rewind_cache: dict[str, torch.Tensor] | None = None

    def _train_source(self, subset: torch.Tensor | None) -> BatchSource | DataLoaderSource:
        """Device-resident uint8 batches (augmented on the device; with positions in ``subset``), or the
        DataLoader over PIL images."""
        cfg, data = self.config, self.data
        train = data.train if subset is None else Split(data.train.images[subset], data.train.labels[subset])
        if cfg.loader == "dataloader":
            return pil_source(train, data.spec, cfg.batch_size, self.device, augment=True, shuffle=True,
                              workers=cfg.workers)
        return BatchSource(resident_split(train, self.device), cfg.batch_size, self.device, data.spec,
                           shuffle=True, augment=True, with_indices=True)

    # ---------------------------------------------------------------- extension points (PrAC overrides them)
    def round_plan(self, round_index: int) -> RoundPlan:
        """The round's training set and schedule: IMP trains every round on the whole split."""
        cfg = self.config
        return RoundPlan(None, cfg.epochs, list(cfg.milestones), cfg.warmup, self._first_epoch(round_index))

    def round_hooks(self, model: nn.Module, state: RoundState) -> list[TrainingHook]:
        """Training hooks of the round (``model`` as it starts or resumes it); an ``end_of_epoch`` returning
        True ends the round early."""
        return []

    def extra_checkpoint(self, state: RoundState) -> dict:
        """Keys added to every checkpoint of the round (beside the original's)."""
        return {}

    def restore_extra(self, saved: dict) -> None:
        """Read back what :meth:`extra_checkpoint` wrote, when resuming."""

    def prepare_next_round(self, model: nn.Module, state: RoundState) -> None:
        """Called after a round's files are written, before pruning for the next round."""

    def _build_model(self) -> nn.Module:
        model = self.model_factory().to(self.device)
        return prepare_model(model, self.config.channels_last, self.config.compile)

    # ---------------------------------------------------------------- entry point
    def run(self, resume: bool = False, checkpoint: Path | None = None) -> list[dict]:
        """Train all rounds; with ``resume``, continue from ``checkpoint`` or the last one in ``save_dir``."""
        if resume:
            model, state = self._resume(checkpoint)
        else:
            self._refuse_to_overwrite()
            self.save_dir.mkdir(parents=True, exist_ok=True)
            model, state = self._start(), RoundState(0, 0, empty_result())
        while True:
            model, state = self._train_round(model, state)
            self._finish_round(model, state)
            if state.round + 1 >= self.config.pruning_times:
                break
            self.prepare_next_round(model, state)
            model = self._next_ticket(model, state.round)
            state = RoundState(state.round + 1, self.round_plan(state.round + 1).first_epoch, empty_result())
        summary = self.summary()
        self.log(format_table(summary, ["round", "density", "best_val_acc", "test_acc", "best_epoch", "epochs", "seconds"]))
        return summary

    # ---------------------------------------------------------------- set-up and resume
    def _refuse_to_overwrite(self) -> None:
        if paths.round_checkpoint(self.save_dir, 0).exists():
            raise UserError(f"{self.save_dir} already holds an IMP run; pass --resume to continue it or choose another --save_dir")

    def _start(self) -> nn.Module:
        torch.manual_seed(self.config.seed)
        model = self._build_model()
        if self.config.rewind_point == 0:
            atomic_save(model.state_dict(), paths.rewind_weights(self.save_dir, 0))
        return model

    def _resume(self, checkpoint: Path | None) -> tuple[nn.Module, RoundState]:
        path = Path(checkpoint) if checkpoint else paths.round_checkpoint(self.save_dir, self._last_round())
        saved = load_file(path)
        if not isinstance(saved, dict) or "state_dict" not in saved or "state" not in saved:
            raise UserError(f"{path} is not a main_imp.py round checkpoint (no 'state'/'state_dict' keys)")
        model = self._build_model()
        load_pruned_state(model, saved["state_dict"], path, f"--arch {self.config.arch} on {self.config.dataset}")
        state = RoundState(int(saved["state"]), int(saved["epoch"]), saved["result"], float(saved["best_sa"]),
                           int(saved.get("best_epoch", -1)), float(saved.get("seconds", 0.0)),
                           saved.get("optimizer"), saved.get("scheduler"), int(saved.get("iterations", 0)),
                           bool(saved.get("stopped", False)))
        self.restore_extra(saved)
        self.log(f"resuming round {state.round} after epoch {state.next_epoch} from {path}")
        return model, state

    def _last_round(self) -> int:
        rounds = [r for r in range(self.config.pruning_times + 1) if paths.round_checkpoint(self.save_dir, r).exists()]
        if not rounds:
            raise UserError(f"--resume: no '<k>checkpoint.pth.tar' in {self.save_dir}; start without --resume")
        return max(rounds)

    def _first_epoch(self, round_index: int) -> int:
        return self.config.rewind_point if round_index > 0 and self.config.prune_type == "rewind_lt" else 0

    # ---------------------------------------------------------------- one round
    def _optimizer_and_scheduler(self, model: nn.Module, state: RoundState):
        """SGD and its schedule at ``state.next_epoch``: restored when resuming, else stepped there (rewinding)."""
        cfg, plan = self.config, self.round_plan(state.round)
        optimizer = build_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        scheduler = build_scheduler(optimizer, plan.milestones, plan.warmup)
        if state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
        else:
            _advance_scheduler(scheduler, state.next_epoch)
        return optimizer, scheduler

    def _train_round(self, model: nn.Module, state: RoundState) -> tuple[nn.Module, RoundState]:
        cfg, plan = self.config, self.round_plan(state.round)
        optimizer, scheduler = self._optimizer_and_scheduler(model, state)
        mask_density = density(masks_of(model))
        train_source = self.train_source if plan.subset is None else self._train_source(plan.subset)
        hooks = self.round_hooks(model, state)
        for epoch in range(state.next_epoch, plan.epochs):
            if state.stopped:
                break
            started = time.time()
            lr = optimizer.param_groups[0]["lr"]
            source = train_source.with_seed(derived_seed(cfg.seed, state.round, epoch))
            desc = f"round {state.round} epoch {epoch + 1}/{plan.epochs}" if self.progress else None
            train = train_one_epoch(model, source, optimizer, self.device, cfg.amp, desc, len(source), hooks=hooks,
                                    epoch=epoch, first_step=state.iterations)
            scheduler.step()
            val = evaluate(model, self.val_source, self.device, cfg.amp)
            test = evaluate(model, self.test_source, self.device, cfg.amp)
            for key, value in (("train_ta", train.accuracy), ("val_ta", val.accuracy), ("test_ta", test.accuracy),
                               ("train_loss", train.loss), ("val_loss", val.loss), ("test_loss", test.loss)):
                state.result[key].append(value)
            state.next_epoch = epoch + 1
            state.iterations += len(source)
            state.seconds += time.time() - started
            if state.round == 0 and epoch + 1 == cfg.rewind_point:
                atomic_save(model.state_dict(), paths.rewind_weights(self.save_dir, cfg.rewind_point))
            improved = val.accuracy > state.best_val
            if improved:
                state.best_val, state.best_epoch = val.accuracy, epoch + 1
            stats = {"train_acc": train.accuracy, "train_loss": train.loss, "val_acc": val.accuracy, "test_acc": test.accuracy}
            # every hook sees the epoch (no short-circuit); the stop is saved so that --resume ends the round too
            state.stopped = any([hook.end_of_epoch(epoch, model, stats) for hook in hooks])
            checkpoint = self._checkpoint(model, state, optimizer, scheduler)  # one snapshot serves both files
            if improved:
                atomic_save(checkpoint, paths.round_best(self.save_dir, state.round))
            atomic_save(checkpoint, paths.round_checkpoint(self.save_dir, state.round))
            self.log(f"round {state.round} epoch {epoch + 1}/{plan.epochs}  loss {train.loss:.4f}  train {train.accuracy:.2f}  "
                     f"val {val.accuracy:.2f}  test {test.accuracy:.2f}  lr {lr:.4g}  density {100 * mask_density:.2f}%  "
                     f"{time.time() - started:.1f}s" + ("  (early stop)" if state.stopped else ""))
        return model, state

    def _checkpoint(self, model: nn.Module, state: RoundState, optimizer, scheduler) -> dict:
        """The original's keys, plus what resuming and checking need."""
        return {
            "state": state.round, "result": state.result, "epoch": state.next_epoch,
            "state_dict": model.state_dict(), "best_sa": state.best_val, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "init_weight": self._rewind_weights(),
            "best_epoch": state.best_epoch, "seconds": state.seconds, "arch": self.config.arch,
            "dataset": self.config.dataset, "config": asdict(self.config),
            "iterations": state.iterations, "stopped": state.stopped, **self.extra_checkpoint(state),
        }

    def _finish_round(self, model: nn.Module, state: RoundState) -> None:
        plan = self.round_plan(state.round)
        best = state.best_epoch - 1 - plan.first_epoch
        record = {
            "round": state.round, "density": density(masks_of(model)), "best_val_acc": state.best_val,
            "test_acc": state.result["test_ta"][best] if 0 <= best < len(state.result["test_ta"]) else None,
            "best_epoch": state.best_epoch, "epochs": len(state.result["train_ta"]), "seconds": round(state.seconds, 1),
            "train_images": len(self.data.train) if plan.subset is None else int(plan.subset.numel()),
            "iterations": state.iterations,
        }
        records = [r for r in self.summary() if r["round"] != state.round] + [record]
        write_json(paths.summary(self.save_dir), sorted(records, key=lambda r: r["round"]))
        plot_training_curve(state.result, plan.first_epoch,
                            f"{self.config.arch} round {state.round} (density {100 * record['density']:.2f}%)",
                            paths.training_curve(self.save_dir, state.round))
        self.log(f"round {state.round} done: density {100 * record['density']:.2f}%  best val {state.best_val:.2f} "
                 f"(epoch {state.best_epoch})  test {record['test_acc']:.2f}  {state.seconds:.0f}s")

    def summary(self) -> list[dict]:
        """The finished rounds' records from ``summary.json``."""
        return read_json(paths.summary(self.save_dir), default=[])

    # ---------------------------------------------------------------- prune and rewind
    def _next_ticket(self, model: nn.Module, finished_round: int) -> nn.Module:
        """Prune the final weights of ``finished_round`` and rewind the survivors."""
        cfg = self.config
        if cfg.channels_last:
            model = _contiguous(model)
        prune_globally(model, cfg.rate, cfg.include_linear, cfg.random_prune,
                       generator_seed=derived_seed(cfg.seed, finished_round, 10**6))
        masks = masks_of(model)
        remove_masks(model)
        model.load_state_dict(self._rewind_state())
        apply_masks(model, masks)
        return prepare_model(model, channels_last=cfg.channels_last)

    def _rewind_state(self) -> dict[str, torch.Tensor]:
        if self.config.prune_type == "pt":
            weights, _ = split_pruned_state(load_file(paths.round_best(self.save_dir, 0))["state_dict"])
            return weights
        rewind = self._rewind_weights()
        if rewind is None:
            raise UserError(f"{paths.rewind_weights(self.save_dir, self.config.rewind_point)} is missing: "
                            f"the run folder is incomplete, start a new run")
        return rewind

    def _rewind_weights(self) -> dict[str, torch.Tensor] | None:
        """The rewind state dict (the original's ``init_weight``), read once; ``None`` until it has been written."""
        if self._rewind_cache is None:
            path = paths.rewind_weights(self.save_dir, self.config.rewind_point)
            if path.exists():
                self._rewind_cache = load_file(path)
        return self._rewind_cache


def _contiguous(model: nn.Module) -> nn.Module:
    """Weights and masks in the default memory format, as ``torch.nn.utils.prune`` needs (it views them flat)."""
    model = model.to(memory_format=torch.contiguous_format)
    refresh_masked_weights(model)  # the masked weight the pruning hook last computed may be channels-last
    return model


def _advance_scheduler(scheduler, epochs: int) -> None:
    """Step the schedule ``epochs`` times: rewinding the weights rewinds the learning rate with them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # stepping before any optimiser step is intended here
        for _ in range(epochs):
            scheduler.step()
