"""Tickets of an IMP run folder, loaded when needed (a few in memory, never the whole folder)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..formats.original import TicketFile, read_ticket
from ..core.torchfiles import MismatchError, check_compatible, check_same_data
from ..core.errors import UserError
from ..training.masks import density, kept_count
from ..core.types import Masks, Weights


@dataclass
class Ticket:
    """One IMP round's network: where it is, and its density and kept-weight count (from its mask).

    Accuracies are not stored here: :func:`lotterypools.pools.run.evaluate_tickets` returns them as records.
    """

    round: int
    path: Path
    density: float
    kept: int | None
    mask_names: list[str]

    @property
    def dense(self) -> bool:
        return self.kept is None


class TicketStore:
    """Reads ticket files on demand and keeps the ``capacity`` most recently used in memory."""

    def __init__(self, files: list[TicketFile], reference: Mapping[str, torch.Tensor], what: str,
                 reader: Callable[[Path], tuple[Weights, Masks]] = read_ticket, capacity: int = 4):
        self.reference, self.what, self.reader, self.capacity = reference, what, reader, capacity
        self._cache: OrderedDict[int, tuple[Weights, Masks]] = OrderedDict()
        self._paths = {f.round: f.path for f in files}
        self.tickets = self._describe_folder(files)

    def _describe_folder(self, files: list[TicketFile]) -> list[Ticket]:
        """Every ticket described; a folder whose tickets fit the model only in part mixes runs: one line says so."""
        tickets, misfits = [], []
        for file in files:
            try:
                tickets.append(self._describe(file))
            except MismatchError as error:
                misfits.append(error)
        if misfits and tickets:
            raise UserError(f"ticket folder {files[0].path.parent} mixes runs of different data sets or architectures: "
                            f"{tickets[0].path.name} fits {self.what}, but {misfits[0]}; keep one run's tickets per "
                            f"folder")
        if misfits:
            raise misfits[0]
        return tickets

    def _describe(self, file: TicketFile) -> Ticket:
        weights, masks = self.load(file.round)
        if file.round > 0 and not masks:
            raise UserError(f"{file.path} is a pruned round but holds no masks ('*.weight_mask' entries or a 'mask' "
                            f"dict); it cannot be re-pruned to its density")
        dens = density(masks)
        kept = kept_count(masks) if masks and dens < 1.0 else None
        return Ticket(file.round, file.path, dens, kept, sorted(masks))

    def load(self, round_index: int) -> tuple[Weights, Masks]:
        """Weights (masked, plain layout) and masks of a round; checked against the model once."""
        if round_index in self._cache:
            self._cache.move_to_end(round_index)
            return self._cache[round_index]
        path = self._paths[round_index]
        weights, masks = self.reader(path)
        check_compatible(weights, self.reference, path, self.what)
        check_same_data(weights, self.reference, path, self.what)
        weights = {k: v.to(self.reference[k].dtype) if v.is_floating_point() else v for k, v in weights.items()}
        self._cache[round_index] = (weights, masks)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return weights, masks

    def by_round(self, round_index: int) -> Ticket:
        for ticket in self.tickets:
            if ticket.round == round_index:
                return ticket
        raise KeyError(round_index)

    def prunable_names(self) -> list[str]:
        """The parameter names the tickets' masks cover (the scope of re-pruning)."""
        names: set[str] = set()
        for ticket in self.tickets:
            names.update(ticket.mask_names)
        return sorted(names)
