"""PrAC IMP: the training engine's IMP rounds (:mod:`lotterypools.training.engine`) with PrAC's round policy.

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

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config.prac import PRAC_PRUNE_TYPES, PrACSettings
from ..data.datasets import BatchSource, DataSplits
from ..training.engine import RoundContext, RoundPlan, RoundPolicy
from ..core.errors import UserError
from .imp import IMPConfig, IMPRun
from .prac import (MaskDistanceStop, critical_for_pruning, critical_for_training, forgetting_counts, next_subset,
                   remaining_weights, scaled_schedule)
from ..core.records import read_json, write_json
from ..training.loop import CorrectnessRecorder

PRAC_KEYS = ("sequence", "prediction", "remain_para", "distance_queue", "last_mask", "start_record")


def sets_file(save_dir: Path) -> Path:
    """Per-round sizes of the PrAC sets and the training they cost (``prac_sets.json``)."""
    return Path(save_dir) / "prac_sets.json"


class RoundStop(MaskDistanceStop):
    """The mask-distance stop, held back until the round has trained ``min_epochs`` epochs."""

    def __init__(self, *args, min_epochs: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_epochs = min_epochs

    def end_of_epoch(self, epoch: int, model: nn.Module, stats: dict[str, float]) -> bool:
        return super().end_of_epoch(epoch, model, stats) and epoch + 1 >= self.min_epochs


class PrACPolicy(RoundPolicy):
    """PrAC's rounds: which samples, how many epochs, the hooks, the extra checkpoint keys, the next set."""

    def __init__(self, settings: PrACSettings, data: DataSplits, first_subset: torch.Tensor | None = None):
        settings.validate()
        self.settings, self.data, self.train_number = settings, data, len(data.train)
        first = torch.arange(self.train_number) if first_subset is None else torch.as_tensor(first_subset, dtype=torch.long)
        self.subsets: dict[int, torch.Tensor] = {0: first}
        self.round = 0
        self.recorder: CorrectnessRecorder | None = None
        self.stop: RoundStop | None = None

    # ---------------------------------------------------------------- a round's plan
    def plan(self, context: RoundContext) -> RoundPlan:
        """Round 0: the configured schedule; later rounds: scaled by the set's share. Always from epoch 0.

        On resume ``context.restored`` (from :meth:`load_state_dict`) gives back the round's set, the
        correctness columns already recorded and the early-stop queue."""
        round_index, cfg, restored = context.round, context.config, context.restored
        if restored is not None:
            self.subsets[round_index] = restored["sequence"]
        subset = self.subsets[round_index]
        if round_index == 0:
            epochs, milestones, warmup = cfg.epochs, list(cfg.milestones), cfg.warmup
        else:
            schedule = scaled_schedule(cfg.epochs, cfg.milestones, cfg.warmup, subset.numel(), self.train_number)
            epochs, milestones, warmup = schedule.epochs, schedule.milestones, schedule.warmup
        self.round = round_index
        self.recorder = CorrectnessRecorder(self.train_number)  # batch indices are positions in the whole split
        min_epochs = cfg.rewind_point if round_index == 0 else 0  # never stop before the rewind weights exist
        self.stop = RoundStop(self.settings.eb_eps, self.settings.queue_length, remaining_weights(context.model),
                              cfg.rate, warmup, min_epochs=min_epochs)
        if restored is not None:
            self.recorder.columns = list(restored["prediction"].unbind(1))
            self.stop.load_state(restored["stop"])
        return RoundPlan(epochs=epochs, milestones=milestones, warmup=warmup, start_epoch=0, subset=subset,
                         with_indices=True, hooks=[self.recorder, self.stop])

    # ---------------------------------------------------------------- checkpoint keys
    def state_dict(self) -> dict[str, Any]:
        table = self.recorder.table if self.recorder is not None else torch.empty((self.train_number, 0), dtype=torch.int8)
        stop = self.stop.state() if self.stop is not None else {}
        return {"sequence": self.subsets[self.round].clone(), "prediction": table, **stop, "prac": asdict(self.settings)}

    def load_state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        """Check a resumed checkpoint's PrAC keys and settings; return its set, correctness table and stop state."""
        missing = [key for key in PRAC_KEYS if key not in state]
        if missing:
            raise UserError(f"the checkpoint holds no PrAC keys ({', '.join(missing)}): it is not a main_PrAC_imp.py "
                            f"checkpoint; resume it with main_imp.py")
        saved = state.get("prac")
        if isinstance(saved, dict) and saved != asdict(self.settings):
            changed = [f"{k} {saved.get(k)} -> {v}" for k, v in asdict(self.settings).items() if saved.get(k) != v]
            raise UserError(f"the run was started with other PrAC settings ({'; '.join(changed)}): rerun with the same "
                            f"settings to continue it, or choose another --save_dir")
        return {"sequence": torch.as_tensor(state["sequence"], dtype=torch.long),
                "prediction": torch.as_tensor(state["prediction"]), "stop": state}

    # ---------------------------------------------------------------- the next set
    def end_of_round(self, context: RoundContext) -> None:
        """CET of this round ∪ CEP (from round 1 on) becomes the next round's set; an empty set stops the run."""
        s, cfg, round_index = self.settings, context.config, context.round
        trained = int(self.subsets[round_index].numel())
        epochs = context.epochs_trained
        record: dict[str, Any] = {"round": round_index, "trained": trained, "epochs": epochs,
                                  "iterations": epochs * -(-trained // cfg.batch_size), "cet": None, "cep": None, "next": None}
        last = round_index + 1 >= cfg.pruning_times  # the original computes the last round's set and discards it
        if not last:
            counts = forgetting_counts(self.recorder.table)
            cet = critical_for_training(counts, s.data_prune, s.threshold, s.data_rate, round_index, self.train_number)
            cep = self._disagreement(context) if round_index >= 1 else None
            subset = next_subset(cet, cep)
            record.update(cet=int(cet.numel()), cep=None if cep is None else int(cep.numel()), next=int(subset.numel()))
        folder = context.layout.folder
        if context.is_main:
            records = [r for r in read_json(sets_file(folder), default=[]) if r["round"] != round_index]
            write_json(sets_file(folder), sorted(records + [record], key=lambda r: r["round"]))
        if last:
            return
        context.log(f"PrAC set for round {round_index + 1}: {record['next']} images (CET {record['cet']}, CEP {record['cep']})")
        if subset.numel() == 0:
            raise UserError(f"round {round_index} selected no training images for round {round_index + 1} (no sample "
                            f"was forgotten more than --threshold {s.threshold} times, none never learned, no "
                            f"disagreement): PrAC stops here, rounds 0-{round_index} are kept in {folder}; "
                            f"lower --threshold or use main_imp.py to go on with the whole split")
        self.subsets[round_index + 1] = subset

    def _disagreement(self, context: RoundContext) -> torch.Tensor:
        """CEP: training samples where the best dense (round 0) and the best round-k networks predict differently."""
        networks = []
        for index in (0, context.round):
            network = context.model_factory().to(context.device)
            network.load_state_dict(context.layout.read_ticket(index))
            networks.append(network)
        batches = BatchSource(self.data.train, 500, context.device)  # un-augmented, in order: positions are indices
        return critical_for_pruning(networks[0], networks[1], batches, context.device)


class PrACRun(IMPRun):
    """An IMP run (original layout) whose rounds follow :class:`PrACPolicy`; ``run()`` and ``--resume`` as IMP's."""

    def __init__(self, config: IMPConfig, model_factory: Callable[[], nn.Module], data: DataSplits,
                 device: torch.device, save_dir: Path, settings: PrACSettings,
                 first_subset: torch.Tensor | None = None, **kwargs):
        if config.prune_type not in PRAC_PRUNE_TYPES:
            raise UserError(f"--prune_type {config.prune_type} is not a PrAC type: choose lt or rewind_lt")
        super().__init__(config, model_factory, data, device, save_dir,
                         policy=PrACPolicy(settings, data, first_subset), **kwargs)
