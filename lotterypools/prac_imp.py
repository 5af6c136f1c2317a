"""PrAC IMP: the IMP workflow of :mod:`lotterypools.imp` with PrAC's round policy plugged into its extension points.

Round 0 trains the dense network on the first set (the whole training split, or the start of
``--split_file``). Every round records per-sample correctness (a :class:`CorrectnessRecorder` hook) and
may end early by mask distance (a :class:`MaskDistanceStop` hook). After round k, the next set is CET
(samples of round k's set forgotten more than ``threshold`` times, or never learned) united, from round 1
on, with CEP (training samples where the best dense and the best round-k networks disagree). Round k+1
trains that set for the epochs and milestones scaled by its share of the training split, from epoch 0
(weights rewound, the schedule not). Pruning, rewinding and the files are IMP's; every checkpoint also
carries the original's PrAC keys (``sequence``, ``prediction``, ``remain_para``, ``distance_queue``,
``last_mask``, ``start_record``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import paths
from .checkpoints import load_file, load_pruned_state
from .data import BatchSource, DataSplits
from .errors import UserError
from .imp import IMPConfig, IMPRun, RoundPlan, RoundState
from .prac import (MaskDistanceStop, critical_for_pruning, critical_for_training, forgetting_counts, next_subset,
                   remaining_weights, scaled_schedule, validate_prac_settings)
from .results import read_json, write_json
from .training import CorrectnessRecorder, TrainingHook

PRAC_PRUNE_TYPES = ("lt", "rewind_lt")


@dataclass
class PrACSettings:
    """The data-selection and early-stop settings of PrAC (the original's flags and defaults)."""

    eb_eps: float = 0.08
    queue_length: int = 5
    data_prune: str = "zero_out"
    threshold: int = 0
    data_rate: float = 0.2

    def validate(self) -> None:
        validate_prac_settings(self.eb_eps, self.queue_length, self.threshold, self.data_prune, self.data_rate)


def sets_file(save_dir: Path) -> Path:
    """Per-round sizes of the PrAC sets (trained set, CET, CEP, next set)."""
    return Path(save_dir) / "prac_sets.json"


class RoundStop(MaskDistanceStop):
    """The mask-distance stop, held back until the round has trained ``min_epochs`` epochs."""

    def __init__(self, *args, min_epochs: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_epochs = min_epochs

    def end_of_epoch(self, epoch: int, model: nn.Module, stats: dict[str, float]) -> bool:
        return super().end_of_epoch(epoch, model, stats) and epoch + 1 >= self.min_epochs


class PrACRun(IMPRun):
    """An IMP run whose rounds train on PrAC sets; ``run()`` and ``--resume`` as :class:`IMPRun`."""

    def __init__(self, config: IMPConfig, model_factory: Callable[[], nn.Module], data: DataSplits,
                 device: torch.device, save_dir: Path, settings: PrACSettings,
                 first_subset: torch.Tensor | None = None, **kwargs):
        settings.validate()
        if config.prune_type not in PRAC_PRUNE_TYPES:
            raise UserError(f"--prune_type {config.prune_type} is not a PrAC type: choose lt or rewind_lt")
        if config.loader != "resident":
            raise UserError("PrAC records per-sample correctness, which needs the default --loader resident")
        super().__init__(config, model_factory, data, device, save_dir, **kwargs)
        self.settings = settings
        self.train_number = len(data.train)
        first = torch.arange(self.train_number) if first_subset is None else torch.as_tensor(first_subset, dtype=torch.long)
        self.subsets: dict[int, torch.Tensor] = {0: first}
        self.recorder: CorrectnessRecorder | None = None
        self.stop: RoundStop | None = None
        self._saved: dict | None = None  # the PrAC keys of the checkpoint being resumed

    # ---------------------------------------------------------------- the plan of a round
    def round_plan(self, round_index: int) -> RoundPlan:
        """Round 0: the configured schedule; later rounds: scaled by the set's share. Always from epoch 0."""
        cfg, subset = self.config, self.subsets[round_index]
        if round_index == 0:
            return RoundPlan(subset, cfg.epochs, list(cfg.milestones), cfg.warmup, 0)
        schedule = scaled_schedule(cfg.epochs, cfg.milestones, cfg.warmup, subset.numel(), self.train_number)
        return RoundPlan(subset, schedule.epochs, schedule.milestones, schedule.warmup, 0)

    def round_hooks(self, model: nn.Module, state: RoundState) -> list[TrainingHook]:
        plan = self.round_plan(state.round)
        self.recorder = CorrectnessRecorder(plan.subset.numel())
        min_epochs = self.config.rewind_point if state.round == 0 else 0  # never stop before the rewind weights exist
        self.stop = RoundStop(self.settings.eb_eps, self.settings.queue_length, remaining_weights(model),
                              self.config.rate, plan.warmup, min_epochs=min_epochs)
        if self._saved is not None and int(self._saved["state"]) == state.round:
            table = torch.as_tensor(self._saved["prediction"])
            self.recorder.columns = list(table[plan.subset].unbind(1))
            self.stop.load_state(self._saved)
        self._saved = None
        return [self.recorder, self.stop]

    # ---------------------------------------------------------------- checkpoints
    def prediction_table(self, round_index: int) -> torch.Tensor:
        """The round's correctness table over the whole training split (-1 outside the round's set)."""
        subset, columns = self.subsets[round_index], self.recorder.table
        table = torch.full((self.train_number, columns.shape[1]), -1, dtype=torch.int8)
        table[subset] = columns
        return table

    def extra_checkpoint(self, state: RoundState) -> dict:
        return {"sequence": self.subsets[state.round].clone(), "prediction": self.prediction_table(state.round),
                **self.stop.state(), "prac": asdict(self.settings)}

    def restore_extra(self, saved: dict) -> None:
        missing = [key for key in ("sequence", "prediction", "remain_para", "distance_queue", "start_record") if key not in saved]
        if missing:
            raise UserError(f"the checkpoint holds no PrAC keys ({', '.join(missing)}): it is not a main_PrAC_imp.py "
                            f"checkpoint; resume it with main_imp.py")
        self.subsets[int(saved["state"])] = torch.as_tensor(saved["sequence"], dtype=torch.long)
        self._saved = saved

    # ---------------------------------------------------------------- the next set
    def prepare_next_round(self, model: nn.Module, state: RoundState) -> None:
        """CET of this round ∪ CEP (from round 1 on) becomes the next round's set; an empty set stops the run."""
        s = self.settings
        counts = forgetting_counts(self.prediction_table(state.round))
        cet = critical_for_training(counts, s.data_prune, s.threshold, s.data_rate, state.round, self.train_number)
        cep = self._disagreement(state.round) if state.round >= 1 else None
        subset = next_subset(cet, cep)
        record = {"round": state.round, "trained": int(self.subsets[state.round].numel()), "cet": int(cet.numel()),
                  "cep": None if cep is None else int(cep.numel()), "next": int(subset.numel())}
        records = [r for r in read_json(sets_file(self.save_dir), default=[]) if r["round"] != state.round] + [record]
        write_json(sets_file(self.save_dir), sorted(records, key=lambda r: r["round"]))
        self.log(f"PrAC set for round {state.round + 1}: {record['next']} images (CET {record['cet']}, CEP {record['cep']})")
        if subset.numel() == 0:
            raise UserError(f"round {state.round} selected no training images for round {state.round + 1} (no sample was "
                            f"forgotten more than --threshold {s.threshold} times, none never learned, no disagreement): "
                            f"PrAC stops here, rounds 0-{state.round} are kept in {self.save_dir}; lower --threshold or "
                            f"use main_imp.py to go on with the whole split")
        self.subsets[state.round + 1] = subset

    def _disagreement(self, round_index: int) -> torch.Tensor:
        """CEP: training samples where the best dense (round 0) and the best round-k networks predict differently."""
        batches = BatchSource(self.data.train, 500, self.device)
        models = []
        for path in (paths.round_best(self.save_dir, 0), paths.round_best(self.save_dir, round_index)):
            model = self.model_factory().to(self.device)
            load_pruned_state(model, load_file(path)["state_dict"], path, f"--arch {self.config.arch}")
            models.append(model)
        return critical_for_pruning(models[0], models[1], batches, self.device)
