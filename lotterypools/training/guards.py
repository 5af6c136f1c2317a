"""Divergence and density guards: a run that trains into NaN stops with one line, and no ticket is written from it.

* :class:`FiniteWatch` follows the training loss of one epoch *on the device*: each step folds
  ``isfinite(loss)`` into a tensor holding the first bad step, and the host reads it only every
  :data:`CHECK_EVERY` steps and at the end of the epoch. A per-step ``loss.item()`` would stall the GPU
  pipeline at every step; this costs one small read per ``CHECK_EVERY`` steps and stops a diverged run at most
  that many steps late, before anything of the epoch is written (the last finite checkpoint is kept).
* :func:`check_finite` refuses non-finite weights or mask-update scores (one line naming what and where).
* :func:`check_ticket_density` refuses a ticket whose mask keeps another fraction of weights than planned.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.distributed as dist

from ..core.errors import UserError

# Host reads of the divergence flag: every this many steps (and at each epoch's end). See the module docstring.
CHECK_EVERY = 50
_NO_BAD_STEP = torch.iinfo(torch.long).max


class DivergenceError(UserError):
    """Training produced a non-finite loss, weight or score: one line, nothing of the diverged epoch is written."""


def divergence_message(what: str, epoch: int, step: int) -> str:
    """The one line for a diverged run; ``epoch`` is 1-based, ``step`` counts optimiser steps from the run's start."""
    return (f"training diverged: {what} at epoch {epoch}, step {step}; nothing of this epoch was written and the "
            f"last finite checkpoint is kept; rerun with a lower learning rate (--lr) and a new --save_dir")


class FiniteWatch:
    """The first optimiser step of an epoch whose loss was not finite, tracked on the device (see module docstring)."""

    def __init__(self, device: torch.device, epoch: int, check_every: int = CHECK_EVERY, agree: bool = True):
        """``agree``: processes of a process group train one model, so they agree on the flag at each check."""
        self.first_bad = torch.full((), _NO_BAD_STEP, dtype=torch.long, device=device)
        self.epoch, self.check_every, self.agree = epoch, check_every, agree

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Fold one step's loss into the flag (no host synchronisation)."""
        bad_here = torch.where(torch.isfinite(loss.detach()).all(), _NO_BAD_STEP, step)
        torch.minimum(self.first_bad, bad_here.to(self.first_bad.device, non_blocking=True), out=self.first_bad)

    def due(self, index: int) -> bool:
        """Whether the host should read the flag after the epoch's ``index``-th step (0-based)."""
        return (index + 1) % self.check_every == 0

    def check(self) -> None:
        """Raise :class:`DivergenceError` if any step so far had a non-finite loss (agreed over all processes)."""
        first_bad = self.first_bad
        if self.agree and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            first_bad = first_bad.clone()  # every process stops at the same check, so none waits in a collective
            dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
        bad = int(first_bad)
        if bad != _NO_BAD_STEP:
            raise DivergenceError(divergence_message("the loss is not finite", self.epoch + 1, bad + 1))


def nonfinite_names(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the floating-point tensors holding a NaN or an infinity (one host read in all)."""
    items = list(tensors.items() if isinstance(tensors, Mapping) else tensors)
    floats = [(name, t) for name, t in items if torch.is_tensor(t) and t.is_floating_point() and t.numel()]
    if not floats:
        return []
    flags = torch.stack([torch.isfinite(t.detach()).all().to("cpu", non_blocking=True) for _, t in floats])
    return [name for (name, _), finite in zip(floats, flags.tolist()) if not finite]


def check_finite(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], what: str,
                 epoch: int | None = None, step: int | None = None) -> None:
    """Refuse non-finite ``tensors`` (weights, scores) with one line naming ``what`` and the first bad tensor."""
    bad = nonfinite_names(tensors)
    if not bad:
        return
    subject = f"{what} {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "") + " is not finite"
    if epoch is not None and step is not None:
        raise DivergenceError(divergence_message(subject, epoch, step))
    raise DivergenceError(f"{subject}: refusing to write or use it; the run diverged, rerun it with a lower "
                          f"learning rate (--lr)")


def check_ticket_density(masks: Mapping[str, torch.Tensor], planned_kept: int, path: object,
                         tolerance: int = 0) -> None:
    """Refuse to write ticket ``path`` unless its masks keep ``planned_kept`` weights (within ``tolerance``)."""
    kept = sum(int(m.count_nonzero()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    if abs(kept - planned_kept) > tolerance:
        raise DivergenceError(f"ticket {path} would keep {kept} of {total} weights (density {kept / max(total, 1):.4f}) "
                              f"where the plan keeps {planned_kept} ({planned_kept / max(total, 1):.4f}): not written; "
                              f"the masks drifted (diverged training?), rerun with a lower learning rate (--lr)")


__all__ = ["CHECK_EVERY", "DivergenceError", "FiniteWatch", "check_finite", "check_ticket_density",
           "divergence_message", "nonfinite_names"]
