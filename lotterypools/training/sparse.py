"""Dynamic sparse training (FreeTickets' DST/EDST, RigL- and SET-style updates) as a per-step training hook.

A sparse network is a dense model plus one boolean mask per conv and linear weight (:func:`sparse_weight_names`).
Masked weights are plain parameters multiplied by their mask after every optimiser step, and so are their
momentum buffers, so a masked weight stays exactly zero and a regrown one starts from zero with zero momentum.
Every ``update_frequency`` steps :class:`MaskUpdater` removes the smallest-magnitude active weights of each
layer (the death rate follows ``decay_schedule``) and regrows as many where the dense gradient is largest
(``gradient``, RigL) or at random (``random``, SET). Layer densities come from ERK, ER or uniform allocation
with exact counts; PF's masks come from one global magnitude prune (:func:`global_magnitude_masks`).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..core.device import to_device_async
from ..config.sparse import SparseConfig, check_density
from ..core.errors import UserError
from .masks import magnitude_masks
from .loop import Step, TrainingHook

DEATH_RATE_FLOOR = 0.005  # the original CosineDecay's eta_min

SparseMasks = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------- allocation
def sparse_weight_names(model: nn.Module) -> list[str]:
    """The weights FreeTickets masks: every conv (incl. the first conv and 1x1 shortcuts) and linear weight."""
    return [f"{name}.weight" for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight is not None]


def _raw_score(shape: Sequence[int], with_kernel: bool) -> float:
    """ERK: sum(shape) / prod(shape); ER ignores the kernel dimensions of a conv."""
    dims = list(shape) if with_kernel else list(shape[:2])
    return sum(dims) / math.prod(dims)


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float, with_kernel: bool = True) -> dict[str, float]:
    """Per-layer densities d_i = eps * raw_i with the total kept fraction ``density`` (ERK; ER without kernel dims).

    eps solves sum_i d_i N_i = density * sum_i N_i; while eps * max(raw) > 1 the layers with the largest raw
    score are made dense and eps is recomputed (the original's loop).
    """
    check_density(density)
    raw = {name: _raw_score(shape, with_kernel) for name, shape in shapes.items()}
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            return {name: 1.0 for name in shapes}
        rhs = density * sum(sizes[n] for n in sparse) - (1 - density) * sum(sizes[n] for n in dense)
        eps = rhs / sum(raw[n] * sizes[n] for n in sparse)
        largest = max(raw[n] for n in sparse)
        if eps * largest <= 1:
            return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}
        dense.update(n for n in sparse if raw[n] == largest)


def layer_densities(shapes: Mapping[str, Sequence[int]], density: float, sparse_init: str) -> dict[str, float]:
    """Per-layer densities of an initialisation: ``ERK``, ``ER`` or ``uniform`` (every layer ``density``)."""
    if sparse_init == "uniform":
        check_density(density)
        return {name: density for name in shapes}
    if sparse_init in ("ERK", "ER"):
        return erk_densities(shapes, density, with_kernel=sparse_init == "ERK")
    raise UserError(f"--sparse-init {sparse_init} has no per-layer allocation (use ERK, ER or uniform)")


def exact_counts(shapes: Mapping[str, Sequence[int]], densities: Mapping[str, float], density: float) -> dict[str, int]:
    """Whole numbers of weights per layer that sum to exactly round(density * total), each as close to
    d_i * N_i as possible (largest remainders get the rounding)."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    target = round(density * sum(sizes.values()))
    exact = {name: min(densities[name], 1.0) * sizes[name] for name in shapes}
    counts = {name: min(int(math.floor(value + 1e-9)), sizes[name]) for name, value in exact.items()}
    order = sorted(shapes, key=lambda n: exact[n] - counts[n], reverse=True)
    missing = target - sum(counts.values())
    for name in order * 2:
        if missing <= 0:
            break
        if counts[name] < sizes[name]:
            counts[name] += 1
            missing -= 1
    return counts


def random_masks(shapes: Mapping[str, Sequence[int]], counts: Mapping[str, int], generator: torch.Generator) -> SparseMasks:
    """Boolean masks with exactly ``counts[name]`` ones at uniformly random positions."""
    masks = {}
    for name, shape in shapes.items():
        flat = torch.zeros(math.prod(shape), dtype=torch.bool)
        flat[torch.randperm(flat.numel(), generator=generator)[:counts[name]]] = True
        masks[name] = flat.view(*shape)
    return masks


def global_magnitude_masks(weights: Mapping[str, torch.Tensor], names: list[str], density: float) -> SparseMasks:
    """PF's prune: keep exactly round(density * total) weights of largest magnitude over ``names``, ranked globally."""
    check_density(density)
    total = sum(weights[name].numel() for name in names)
    masks = magnitude_masks(weights, names, round(density * total))
    return {name: mask.bool() for name, mask in masks.items()}


def initial_masks(model: nn.Module, config: SparseConfig, seed: int) -> SparseMasks:
    """The masks a sparse run starts from: ERK/ER/uniform allocation with random positions, global magnitude
    pruning of the model's current weights (``pruning``), or its non-zero weights (``resume``)."""
    names = sparse_weight_names(model)
    params = dict(model.named_parameters())
    if config.sparse_init == "pruning":
        return global_magnitude_masks({n: params[n].detach().cpu() for n in names}, names, config.density)
    if config.sparse_init == "resume":
        return {name: params[name].detach().cpu() != 0 for name in names}
    shapes = {name: tuple(params[name].shape) for name in names}
    densities = layer_densities(shapes, config.density, config.sparse_init)
    counts = exact_counts(shapes, densities, config.density)
    return random_masks(shapes, counts, torch.Generator().manual_seed(seed))


def masks_density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked weights kept."""
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / total if total else 1.0


# ---------------------------------------------------------------------------------------------- masked model
class MaskedWeights:
    """The masked parameters of one model and their masks (kept on the parameters' device)."""

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        params = dict(model.named_parameters())
        unknown = sorted(set(masks) - set(params))
        if unknown:
            raise UserError(f"masks name weights the model lacks ({', '.join(unknown[:3])}): wrong --model for these masks")
        self.params = {name: params[name] for name in masks}
        self.masks = {name: mask.to(params[name].device, dtype=torch.bool) for name, mask in masks.items()}

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None, momentum: bool = True) -> None:
        """Zero the masked weights (and their momentum buffers when ``momentum``)."""
        for name, param in self.params.items():
            param.mul_(self.masks[name])
            if momentum and optimizer is not None:
                buffer = optimizer.state.get(param, {}).get("momentum_buffer")
                if buffer is not None:
                    buffer.mul_(self.masks[name])

    def state(self) -> SparseMasks:
        """The masks on the CPU (for checkpoints)."""
        return {name: mask.detach().cpu().clone() for name, mask in self.masks.items()}

    def counts(self) -> dict[str, int]:
        return {name: int(mask.sum()) for name, mask in self.masks.items()}

    def density(self) -> float:
        return masks_density(self.masks)


# ---------------------------------------------------------------------------------------------- death and growth
def death_rate_at(config: SparseConfig, step_in_phase: int, phase_steps: int) -> float:
    """The death rate ``step_in_phase`` steps into a phase of ``phase_steps`` steps.

    ``cosine`` decays from ``--death-rate`` to 0.005 (the original's CosineDecay), ``linear`` likewise in a
    straight line, ``constant`` keeps it; ``constant_death_rate`` is the original code, which computes the
    decay but always prunes at ``--death-rate``.
    """
    rate = config.death_rate
    if config.constant_death_rate or config.decay_schedule == "constant" or phase_steps <= 0:
        return rate
    progress = min(max(step_in_phase / phase_steps, 0.0), 1.0)
    if config.decay_schedule == "linear":
        return rate - (rate - DEATH_RATE_FLOOR) * progress
    return DEATH_RATE_FLOOR + (rate - DEATH_RATE_FLOOR) * (1 + math.cos(math.pi * progress)) / 2


def magnitude_death(weight: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """``mask`` without its ``count`` smallest-magnitude active weights."""
    scores = torch.where(mask, weight.detach().abs(), torch.full_like(weight, float("inf"), dtype=weight.dtype))
    dead = torch.topk(scores.flatten(), count, largest=False).indices
    survived = mask.clone().flatten()
    survived[dead] = False
    return survived.view_as(mask)


def gradient_growth(grad: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """Positions (flat indices) of the ``count`` inactive weights with the largest |gradient| (RigL)."""
    scores = torch.where(mask, torch.full_like(grad, -1.0), grad.detach().abs().float())
    return torch.topk(scores.flatten(), count).indices


def random_growth(mask: torch.Tensor, count: int, generator: torch.Generator, inactive_count: int | None = None) -> torch.Tensor:
    """``count`` inactive positions drawn uniformly without replacement (SET).

    Given ``inactive_count`` (the number of False entries of ``mask``), nothing is read back from the device:
    the positions are found with ``nonzero_static`` and the permutation, drawn on the CPU, is copied there.
    """
    if inactive_count is None:
        inactive = (~mask).flatten().nonzero().squeeze(1).cpu()
        chosen = inactive[torch.randperm(inactive.numel(), generator=generator)[:count]]
        return chosen.to(mask.device)
    inactive = torch.nonzero_static((~mask).flatten(), size=inactive_count).squeeze(1)
    order = torch.randperm(inactive_count, generator=generator)[:count]
    return inactive[to_device_async(order, mask.device)]


class MaskUpdater(TrainingHook):
    """Keeps masked weights at zero after every optimiser step and updates the masks on schedule.

    ``phase_starts`` are the global steps where a training phase begins (the death-rate decay restarts there);
    ``large_death_steps`` are the steps where EDST replaces ``--large-death-rate`` of each layer instead.
    Updates are deterministic given the weights and gradients (random growth draws from a generator seeded
    by the step), so every process of a data-parallel run makes the same masks; in a process group the
    updater checks that they agree.
    """

    def __init__(self, weights: MaskedWeights, config: SparseConfig, total_steps: int, seed: int = 0,
                 phase_starts: Iterable[int] = (0,), large_death_steps: Iterable[int] = ()):
        self.weights, self.config, self.seed = weights, config, seed
        self.phase_starts = sorted(set(phase_starts) | {0})
        self.total_steps = total_steps
        self.large_death_steps = set(large_death_steps)
        # an update removes and regrows the same number per layer, so the active counts are read back once, here,
        # and mask updates need no host synchronisation (with gradient growth)
        self.active = weights.counts()
        self.dense_layers = {name for name, mask in weights.masks.items() if self.active[name] == mask.numel()}
        self.updates: list[dict] = []
        self._first_refused: torch.Tensor | None = None  # [step, epoch] of the first refused update, drifted step
        self._expected: torch.Tensor | None = None  # the active counts on the device

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Zero the masked weights (and, unless stale momentum, their restored momentum) before training."""
        self.weights.apply(optimizer, momentum=not self.config.stale_momentum)

    def after_step(self, step: Step) -> None:
        momentum = not self.config.stale_momentum
        self.weights.apply(step.optimizer, momentum=momentum)
        if self.config.fix:
            return
        if step.step in self.large_death_steps:
            self.update(self.config.large_death_rate, step.optimizer, step.step, epoch=step.epoch)
        elif (step.step + 1) % self.config.update_frequency == 0:
            self.update(self.current_death_rate(step.step), step.optimizer, step.step, epoch=step.epoch)

    def current_death_rate(self, step: int) -> float:
        start = max(s for s in self.phase_starts if s <= step)
        following = [s for s in self.phase_starts if s > step]
        end = following[0] if following else self.total_steps
        return death_rate_at(self.config, step - start, end - start)

    @torch.no_grad()
    def update(self, rate: float, optimizer: torch.optim.Optimizer | None, step: int, epoch: int | None = None) -> None:
        """Replace ``ceil(rate * active)`` weights of every sparse layer: magnitude death, then growth.

        An update from non-finite scores (weights, or gradients for gradient growth) is not applied: NaN ranks
        above everything in ``topk``, so it would regrow without dying and turn a sparse network dense. The
        refusal and the check that every layer keeps its count are decided on the device, so that an update
        makes no host synchronisation; :meth:`check` (at the end of every epoch, before anything is written)
        raises :class:`~lotterypools.training.guards.DivergenceError` for the first refused update.
        """
        params = self.weights.params
        scores = list(params.values())
        if self.config.growth == "gradient":
            scores += [p.grad for p in params.values() if p.grad is not None]
        finite = torch.stack([torch.isfinite(t.detach()).all() for t in scores]).all()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        replaced = 0
        for name, param in params.items():
            mask = self.weights.masks[name]
            if name in self.dense_layers:
                if self.config.reset_dense_layers:
                    self._reset_smallest(param, mask, math.ceil(rate * self.active[name]), finite)
                continue
            count = math.ceil(rate * self.active[name])
            if count == 0:
                continue
            survived = magnitude_death(param, mask, count)
            grown = (gradient_growth(param.grad if param.grad is not None else torch.zeros_like(param), survived, count)
                     if self.config.growth == "gradient"
                     else random_growth(survived, count, generator, mask.numel() - self.active[name] + count))
            grown_mask = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
            grown_mask[grown] = True
            grown_mask = grown_mask.view_as(mask) & finite
            self.weights.masks[name] = torch.where(finite, survived | grown_mask, mask)
            param.mul_(torch.where(finite, survived, mask))  # dead weights become zero; regrown ones start at zero
            self._reset_momentum(param, optimizer, grown_mask)
            replaced += count
        self.weights.apply(optimizer, momentum=not self.config.stale_momentum)
        self._watch(finite, step, epoch)
        self.updates.append({"step": step, "rate": rate, "replaced": replaced})
        self._check_processes_agree()

    def _watch(self, finite: torch.Tensor, step: int, epoch: int | None) -> None:
        """Fold this update's refusal and count check into device flags (read only by :meth:`check`)."""
        counts = torch.stack([mask.sum() for mask in self.weights.masks.values()])
        if self._first_refused is None:  # made once: per-update host-to-device copies would stall a GPU
            self._first_refused = torch.full((3,), -1, dtype=torch.long, device=counts.device)
            self._expected = torch.tensor(list(self.active.values()), device=counts.device)
        flags = self._first_refused
        refused_now = (flags[0] < 0) & ~finite
        flags[0] = torch.where(refused_now, step, flags[0])
        flags[1] = torch.where(refused_now, -1 if epoch is None else epoch, flags[1])
        drifted = (counts != self._expected).any() & finite
        flags[2] = torch.where((flags[2] < 0) & drifted, step, flags[2])

    def check(self) -> None:
        """Raise for the first update refused since the start (non-finite scores) or one that changed a count."""
        from .guards import DivergenceError, divergence_message

        if self._first_refused is None:
            return
        step, epoch, drift = self._first_refused.tolist()  # the one host read, at the end of an epoch
        if step >= 0:
            subject = "the mask-update scores (weights or gradients) are not finite"
            if epoch >= 0:
                raise DivergenceError(divergence_message(subject, epoch + 1, step + 1))
            raise DivergenceError(f"training diverged: {subject} at step {step + 1}; rerun with a lower learning "
                                  f"rate (--lr)")
        if drift >= 0:
            raise RuntimeError(f"mask update at step {drift + 1} changed a layer's kept count: death and growth "
                               f"must replace the same number of weights")

    def end_of_epoch(self, epoch: int, model: nn.Module, stats: dict[str, float]) -> bool:
        self.check()  # before the epoch's checkpoint or ticket is written
        return False

    def _reset_smallest(self, param: torch.Tensor, mask: torch.Tensor, count: int, finite: torch.Tensor) -> None:
        """The original's treatment of a dense layer: its ``count`` smallest weights are zeroed and stay in the mask."""
        if count:
            param.mul_(torch.where(finite, magnitude_death(param, mask, count), mask))

    def _reset_momentum(self, param: torch.Tensor, optimizer, grown: torch.Tensor) -> None:
        if optimizer is None or self.config.stale_momentum:
            return
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            buffer.masked_fill_(grown, 0.0)

    def _check_processes_agree(self) -> None:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        fingerprint = torch.stack([torch.stack([m.sum(), (m.flatten().nonzero().sum() % 1_000_003)]).double()
                                   for m in self.weights.masks.values()]).flatten()
        fingerprint = fingerprint.to("cuda" if dist.get_backend() == "nccl" else "cpu")
        highest, lowest = fingerprint.clone(), fingerprint.clone()
        dist.all_reduce(highest, op=dist.ReduceOp.MAX)
        dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
        if not torch.equal(highest, lowest):
            raise RuntimeError("sparse masks differ between processes after an update: gradients were not synchronised")


def sparse_layer_report(masks: Mapping[str, torch.Tensor]) -> list[dict]:
    """Per-layer kept count, size and density (for logs and result files)."""
    return [{"layer": name, "kept": int(mask.sum()), "size": mask.numel(), "density": int(mask.sum()) / mask.numel()}
            for name, mask in masks.items()]
