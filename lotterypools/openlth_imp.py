"""IMP in OpenLTH's layout (``level_{k}/main``), with one or many processes (DistributedDataParallel).

Level 0 trains the dense network from a seeded initialisation; level k prunes ``rate`` of the weights
level k-1 kept (globally by magnitude, conv and linear layers as OpenLTH), rewinds the survivors to
level 0's weights after ``rewind_epoch`` epochs and trains from there, with the learning-rate schedule
rewound too. Every stage is idempotent: a finished level is skipped, a level in progress resumes from
its ``checkpoint.pth`` (saved each epoch), so rerunning the same command continues a run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import openlth
from .checkpoints import atomic_save, load_file, split_pruned_state
from .distributed import DistributedContext, evaluate_sharded
from .errors import UserError
from .imagefolder import ImageFolderSplits, evaluation_loader, training_loader
from .masks import Masks, apply_masks, density, masks_of, prunable_names, prune_globally
from .results import log, read_json, write_json
from .imp import _advance_scheduler
from .training import build_optimizer, build_scheduler, train_one_epoch


@dataclass
class LevelConfig:
    """OpenLTH's ImageNet ResNet defaults (90 epochs, batch 1024, lr 0.4, 5 warm-up epochs, 20% per level)."""

    arch: str
    epochs: int = 90
    batch_size: int = 1024
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [30, 60, 80])
    warmup: int = 5
    levels: int = 10
    rate: float = 0.2
    rewind_epoch: int = 5
    seed: int = 1
    amp: bool = False

    def validate(self, world_size: int) -> None:
        """One-line errors for settings that cannot work together."""
        if not 0.0 < self.rate < 1.0:
            raise UserError(f"--rate {self.rate} is outside (0, 1): it is the fraction of remaining weights pruned per level")
        if self.epochs < 1 or self.levels < 0:
            raise UserError(f"--epochs {self.epochs} must be at least 1 and --levels {self.levels} at least 0")
        if not 0 <= self.rewind_epoch < self.epochs:
            raise UserError(f"--rewind_epoch {self.rewind_epoch} must be at least 0 and below --epochs {self.epochs}")
        if self.batch_size % world_size:
            raise UserError(f"--batch_size {self.batch_size} is the global batch: it must divide evenly over "
                            f"{world_size} processes")


class LevelRun:
    """An IMP run in one OpenLTH folder; ``run()`` trains every level not yet finished."""

    def __init__(self, config: LevelConfig, model_factory: Callable[[], nn.Module], data: ImageFolderSplits,
                 context: DistributedContext, save_dir: Path, workers: int = 4, log: Callable[[str], None] = log):
        config.validate(context.world_size)
        self.config, self.model_factory, self.data, self.context = config, model_factory, data, context
        self.save_dir, self.workers = Path(save_dir), workers
        self.log = log if context.is_main else (lambda message: None)
        device, rank, world = context.device, context.rank, context.world_size
        self.val_batches = evaluation_loader(data.val, 256, workers, device, rank, world)
        self.test_batches = evaluation_loader(data.test, 256, workers, device, rank, world)

    def run(self) -> list[dict]:
        """Train levels 0..``levels``; return one summary record per level."""
        self._check_config()
        for level in range(self.config.levels + 1):
            if openlth.model_path(self.save_dir, level, self.config.epochs).exists():
                self.log(f"level {level}: finished earlier, skipped")
                continue
            self._train_level(level)
        return [read_json(self._report(level)) for level in range(self.config.levels + 1)]

    # ------------------------------------------------------------------ files and set-up
    def _check_config(self) -> None:
        path = self.save_dir / "imp_config.json"
        saved = read_json(path)
        if saved is not None and saved != asdict(self.config):
            changed = sorted(k for k in asdict(self.config) if saved.get(k) != asdict(self.config)[k])
            raise UserError(f"{self.save_dir} holds a run with other settings ({', '.join(changed)}); rerun with "
                            f"the same flags to continue it, or choose another --save_dir")
        if self.context.is_main:
            write_json(path, asdict(self.config))
        self._barrier()

    def _barrier(self) -> None:
        if self.context.active:
            dist.barrier()

    def _report(self, level: int) -> Path:
        return openlth.level_dir(self.save_dir, level) / "level_summary.json"

    def _masks(self, level: int) -> Masks:
        """The level's mask: read if present, else made by rank 0 (all ones, or pruning level-1) and shared by file."""
        path = openlth.mask_path(self.save_dir, level)
        if not path.exists() and self.context.is_main:
            openlth.write_mask(self.save_dir, level, self._make_masks(level))
        self._barrier()
        return {k: v.float() for k, v in load_file(path).items()}

    def _make_masks(self, level: int) -> Masks:
        model = self.model_factory()
        if level == 0:
            return {name: torch.ones_like(model.state_dict()[name]) for name in prunable_names(model, True)}
        previous = openlth.model_path(self.save_dir, level - 1, self.config.epochs)
        weights, masks = openlth.read_level(previous)
        model.load_state_dict(weights)
        apply_masks(model, masks)
        prune_globally(model, self.config.rate, include_linear=True)
        return masks_of(model)

    def _start_weights(self, level: int) -> tuple[dict[str, torch.Tensor], int]:
        """Level 0: a seeded initialisation (written as ``model_ep0_it0.pth``); level k: the rewind weights."""
        if level > 0:
            rewind = openlth.model_path(self.save_dir, 0, self.config.rewind_epoch)
            return dict(load_file(rewind)), self.config.rewind_epoch
        start = openlth.model_path(self.save_dir, 0, 0)
        if not start.exists() and self.context.is_main:
            torch.manual_seed(self.config.seed)
            openlth.write_model(self.save_dir, 0, 0, self.model_factory().state_dict())
        self._barrier()
        return dict(load_file(start)), 0

    # ------------------------------------------------------------------ one level
    def _train_level(self, level: int) -> None:
        cfg, ctx = self.config, self.context
        masks = self._masks(level)
        saved = self._saved_progress(level)
        weights, next_epoch = (saved["model"], int(saved["next_epoch"])) if saved else self._start_weights(level)
        history = saved["history"] if saved else []
        model = self.model_factory().to(ctx.device)
        model.load_state_dict({k: (v * masks[k] if k in masks else v) for k, v in weights.items()})
        if level > 0:
            apply_masks(model, masks)
        optimizer = build_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        scheduler = build_scheduler(optimizer, cfg.milestones, cfg.warmup)
        if saved:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        else:
            _advance_scheduler(scheduler, next_epoch)  # rewinding the weights rewinds the schedule with them
            if ctx.is_main:
                openlth.write_model(self.save_dir, level, next_epoch, _plain_state(model))
        trainer = DistributedDataParallel(model) if ctx.active else model
        loader, sampler = training_loader(self.data.train, cfg.batch_size // ctx.world_size, self.workers,
                                          ctx.device, cfg.seed + level, ctx.rank, ctx.world_size)
        for epoch in range(next_epoch, cfg.epochs):
            started = time.time()
            sampler.set_epoch(epoch)
            desc = f"level {level} epoch {epoch + 1}/{cfg.epochs}" if ctx.is_main else None
            train = train_one_epoch(trainer, loader, optimizer, ctx.device, cfg.amp, desc, len(loader))
            scheduler.step()
            val = evaluate_sharded(model, self.val_batches, ctx.device, ctx, cfg.amp)
            test = evaluate_sharded(model, self.test_batches, ctx.device, ctx, cfg.amp)
            history.append({"epoch": epoch + 1, "train_loss": train.loss, "train_acc": train.accuracy,
                            "val_acc": val.accuracy, "test_acc": test.accuracy, "seconds": time.time() - started})
            self._save_epoch(level, epoch + 1, model, optimizer, scheduler, history)
            self.log(f"level {level} epoch {epoch + 1}/{cfg.epochs}  loss {train.loss:.4f}  val {val.accuracy:.2f}  "
                     f"test {test.accuracy:.2f}  density {100 * density(masks):.2f}%  {time.time() - started:.1f}s")
        self._finish_level(level, model, masks, history)

    def _saved_progress(self, level: int) -> dict | None:
        """The level's ``checkpoint.pth`` (written after every epoch), if training stopped part-way."""
        path = openlth.checkpoint_path(self.save_dir, level)
        if not path.exists():
            return None
        saved = load_file(path)
        self.log(f"level {level}: resuming after epoch {saved['next_epoch']} from {path}")
        return saved

    def _save_epoch(self, level: int, epoch: int, model: nn.Module, optimizer, scheduler, history: list) -> None:
        if not self.context.is_main:
            return
        atomic_save({"model": _plain_state(model), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "next_epoch": epoch, "history": history},
                    openlth.checkpoint_path(self.save_dir, level))
        if level == 0 and epoch == self.config.rewind_epoch:
            openlth.write_model(self.save_dir, 0, epoch, _plain_state(model))

    def _finish_level(self, level: int, model: nn.Module, masks: Masks, history: list) -> None:
        if self.context.is_main:
            openlth.write_model(self.save_dir, level, self.config.epochs, _plain_state(model))
            last = history[-1] if history else {}
            write_json(self._report(level), {"level": level, "density": density(masks), "history": history,
                                             "val_acc": last.get("val_acc"), "test_acc": last.get("test_acc")})
            openlth.checkpoint_path(self.save_dir, level).unlink(missing_ok=True)
            self.log(f"level {level} done: density {100 * density(masks):.2f}%  val {last.get('val_acc')}  "
                     f"test {last.get('test_acc')}")
        self._barrier()


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with masks folded in (``weight_orig * weight_mask`` -> ``weight``), on the CPU."""
    weights, _ = split_pruned_state(model.state_dict())
    return {k: v.detach().cpu() for k, v in weights.items()}
