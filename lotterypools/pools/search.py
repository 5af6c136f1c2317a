"""Lottery Pools and its weight-averaging baselines: one greedy interpolation loop with pluggable rules.

For a target ticket T, candidates are the other tickets ordered by distance in IMP rounds. For each
candidate and coefficient alpha, W = alpha * W_candidate + (1 - alpha) * W_current is pruned back to T's
number of weights by global magnitude, its batch-norm statistics are recomputed on training data, and it
is scored on the validation split. The rule decides which alpha is tried and whether the best is kept.
The test split only reports: it never takes part in a choice.

With a full BN pass (the original's), every trial draws its own order and augmentation of the training
split, as the original's shuffled, augmenting DataLoader does; the draw is seeded by the run's seed and the
trial's identity (target, candidate, coefficient), so a resumed run, or a run split over processes, draws
exactly what one uninterrupted run draws.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from ..core.console import log, progress
from ..core.errors import UserError
from ..training.batchnorm import batchnorm_layers, recalibrate_batchnorm  # noqa: F401 (part of this module's API)
from ..training.masks import prune_to_count
from .store import Ticket, TicketStore
from ..training.loop import EpochStats, evaluate
from ..core.types import Batches, Weights

TrialKey = tuple[int, ...]
FINAL_TRIAL = -1  # the candidate index in the key of a target's final BN pass


def trial_seed(seed: int, trial: TrialKey) -> int:
    """A 63-bit seed for one trial's BN pass from the run's ``seed`` and the trial's identity."""
    digest = hashlib.sha256(repr((seed, *trial)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def candidate_order(target: int, rounds: Sequence[int], search_num: int) -> list[int]:
    """Other rounds by distance to ``target`` (nearer first; the denser, earlier one first at equal distance).

    ``search_num`` counts the target as the original does, so ``search_num - 1`` candidates are returned.
    """
    others = sorted((r for r in rounds if r != target), key=lambda r: (abs(r - target), r))
    return others[: max(search_num - 1, 0)]


def interpolate_state(current: Weights, candidate: Weights, alpha: float, out: Weights | None = None) -> Weights:
    """``alpha * candidate + (1 - alpha) * current`` for floating tensors; integer buffers follow ``current``."""
    out = {} if out is None else out
    for key, value in current.items():
        if value.is_floating_point():
            if key in out:
                torch.lerp(value, candidate[key], alpha, out=out[key])
            else:
                out[key] = torch.lerp(value, candidate[key], alpha)
        else:
            out[key] = value.clone()
    return out


@dataclass(frozen=True)
class PoolRule:
    """How a method walks the candidates.

    ``coefficients(n)`` gives the alphas tried when the current network already merges ``n`` tickets;
    ``greedy`` keeps the best alpha only if validation accuracy does not drop, else every step is kept.
    """

    name: str
    coefficients: Callable[[int], list[float]]
    greedy: bool


def lottery_pools_rule(coefficients: Sequence[float]) -> PoolRule:
    """Lottery Pools: search ``coefficients``, keep the best if validation accuracy does not drop."""
    values = list(coefficients)
    name = "Lottery_pools_average" if values == [0.5] else "Lottery_pools"
    return PoolRule(name, lambda n: values, greedy=True)


def swa_rule() -> PoolRule:
    """SWA: a running uniform mean, alpha = 1/(n+1) on the incoming ticket; every step kept."""
    return PoolRule("interpolate_swa", lambda n: [1.0 / (n + 1)], greedy=False)


def ema_rule(decay: float) -> PoolRule:
    """EMA as the original code: weight ``decay`` on the incoming ticket; every step kept."""
    return PoolRule("interpolate_ema", lambda n: [decay], greedy=False)


@dataclass
class StepRecord:
    """One candidate's outcome."""

    round: int
    alpha: float
    val_acc: float | None  # None where the rule scores nothing (SWA, EMA)
    accepted: bool
    trials: dict[float, float] = field(default_factory=dict)


@dataclass
class PoolResult:
    """The pooled ticket of one target and how it was made."""

    method: str
    target: Ticket
    weights: Weights
    val_acc: float
    test: EpochStats
    steps: list[StepRecord]
    seconds: float
    kept: int | None

    @property
    def chosen_rounds(self) -> list[int]:
        return [s.round for s in self.steps if s.accepted]

    @property
    def alphas(self) -> list[float]:
        return [s.alpha for s in self.steps if s.accepted]


class PoolEvaluator:
    """Scores weight sets on one working model whose tensors are overwritten in place (no rebuild, no deep copy).

    With ``fresh_bn_seed`` set, ``bn_batches`` must have ``with_seed(seed)`` (a :class:`~lotterypools.data.datasets.BatchSource`):
    each trial's BN pass then draws its own shuffle and augmentation, seeded by ``fresh_bn_seed`` and the
    trial's key. Without it every trial sees ``bn_batches`` as they are (e.g. a fixed list of batches).
    """

    def __init__(self, model: nn.Module, bn_batches: Batches, val_batches: Batches, test_batches: Batches,
                 device: torch.device, fresh_bn_seed: int | None = None):
        self.model, self.bn_batches, self.device = model.to(device), bn_batches, device
        self.val_batches, self.test_batches = val_batches, test_batches
        self.fresh_bn_seed = fresh_bn_seed

    def bn_batches_for(self, trial: TrialKey) -> Batches:
        """The batches of one trial's BN pass."""
        if self.fresh_bn_seed is None:
            return self.bn_batches
        return self.bn_batches.with_seed(trial_seed(self.fresh_bn_seed, trial))

    def load(self, weights: Weights) -> None:
        self.model.load_state_dict(weights)

    def state(self) -> Weights:
        """A copy of the working model's weights and (recalibrated) statistics."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def recalibrate(self, trial: TrialKey = ()) -> None:
        recalibrate_batchnorm(self.model, self.bn_batches_for(trial), self.device)

    def validate(self) -> EpochStats:
        return evaluate(self.model, self.val_batches, self.device)

    def test(self) -> EpochStats:
        return evaluate(self.model, self.test_batches, self.device)

    def score(self, weights: Weights, recalibrate: bool = True, trial: TrialKey = ()) -> float:
        """Load ``weights``, recompute BN statistics (the BN pass of ``trial``), and return validation accuracy."""
        self.load(weights)
        if recalibrate:
            self.recalibrate(trial)
        return self.validate().accuracy

    supports_stacked = True  # evaluators that reduce across processes do not

    @torch.no_grad()
    def score_stacked(self, weight_sets: Sequence[Weights],
                      trials: Sequence[TrialKey]) -> tuple[list[float], Callable[[int], Weights]]:
        """:meth:`score` for several weight sets at once: stacked, through ``vmap(functional_call)``.

        Each set gets its own BN statistics from the batches of its own trial (with ``fresh_bn_seed`` the K
        streams advance together, one stacked batch of K x batch images; fixed batches are shared by all K),
        so the numbers equal K sequential :meth:`score` calls up to float rounding. Returns the validation
        accuracies and a function giving set ``i``'s weights with its recalibrated statistics.
        """
        model, count = self.model, len(weight_sets)
        first = weight_sets[0]
        stacked = {k: torch.stack([w[k] for w in weight_sets]) for k, v in first.items() if v.is_floating_point()}
        shared = {k: v.clone() for k, v in first.items() if not v.is_floating_point()}
        norms = dict(model.named_modules())
        norms = {name: m for name, m in norms.items() if isinstance(m, _BatchNorm) and m.track_running_stats}
        for name in norms:  # update_bn's reset: zero mean, unit variance, no batch seen
            stacked[f"{name}.running_mean"].zero_()
            stacked[f"{name}.running_var"].fill_(1.0)
            shared[f"{name}.num_batches_tracked"].zero_()

        def forward(images: torch.Tensor, batched_images: bool) -> torch.Tensor:
            call = lambda weights, x: functional_call(model, (weights, shared), (x,))
            return vmap(call, in_dims=(0, 0 if batched_images else None))(stacked, images)

        momenta = [m.momentum for m in norms.values()]
        model.train()
        try:
            if self.fresh_bn_seed is None:
                streams, batched = self.bn_batches, False
            else:
                streams = (torch.stack([b[0] for b in group]) for group in
                           zip(*(self.bn_batches_for(trial) for trial in trials)))
                batched = True
            for number, batch in enumerate(streams, start=1):
                images = batch if batched else (batch[0] if isinstance(batch, (list, tuple)) else batch)
                for module in norms.values():
                    module.momentum = 1.0 / number  # the cumulative average, as in recalibrate_batchnorm
                forward(images.to(self.device, non_blocking=True), batched)
        finally:
            for module, momentum in zip(norms.values(), momenta):
                module.momentum = momentum
        model.eval()
        correct = torch.zeros(count, device=self.device, dtype=torch.long)
        seen = 0
        for batch in self.val_batches:
            images, labels = batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)
            correct += (forward(images, False).argmax(-1) == labels).sum(1)
            seen += labels.shape[0]
        accuracies = [100.0 * c / max(seen, 1) for c in correct.tolist()]  # one read for the K sets

        def state(index: int) -> Weights:
            return {k: (stacked[k][index] if k in stacked else shared[k]).clone() for k in first}

        return accuracies, state


def _to_device(weights: Weights, device: torch.device) -> Weights:
    return {k: v.to(device) for k, v in weights.items()}


class PoolSearch:
    """Runs a :class:`PoolRule` for one target over its candidates."""

    def __init__(self, store: TicketStore, evaluator: PoolEvaluator, prune_names: list[str],
                 prune_mode: str = "during", log: Callable[[str], None] = log, progress: bool = True,
                 stacked: bool = False):
        if prune_mode not in ("during", "after"):
            raise ValueError(f"prune_mode must be 'during' or 'after', not {prune_mode!r}")
        if stacked and not evaluator.supports_stacked:
            raise UserError("--stacked_coefficients works in one process per target only (not with an evaluator "
                            "shared across processes): drop the flag")
        self.store, self.evaluator, self.prune_names = store, evaluator, prune_names
        self.prune_mode, self.log, self.progress = prune_mode, log, progress
        self.stacked = stacked

    def _prune(self, weights: Weights, keep: int | None) -> None:
        if keep is not None:
            prune_to_count(weights, self.prune_names, keep)

    def run(self, rule: PoolRule, target: Ticket, candidates: list[int], target_val_acc: float) -> PoolResult:
        """Walk ``candidates`` from ``target`` under ``rule``; return the pooled ticket with its test accuracy.

        ``target_val_acc`` is the target ticket's own validation accuracy: the bar a greedy step must reach.
        """
        started = time.time()
        device = self.evaluator.device
        current = _to_device(self.store.load(target.round)[0], device)
        current_val, merged = float(target_val_acc), 1
        keep_during = target.kept if self.prune_mode == "during" else None
        trial: Weights = {}
        steps: list[StepRecord] = []
        for round_index in progress(candidates, f"{rule.name} round {target.round}", self.progress):
            candidate = _to_device(self.store.load(round_index)[0], device)
            scores: dict[float, float] = {}
            best_alpha, best_val, best_state = None, -1.0, None
            if self.stacked and rule.greedy:
                best_alpha, best_val, best_state = self._stacked_step(rule.coefficients(merged), current, candidate,
                                                                      keep_during, (target.round, round_index), scores)
            for alpha_index, alpha in enumerate([] if self.stacked and rule.greedy else rule.coefficients(merged)):
                interpolate_state(current, candidate, alpha, out=trial)
                self._prune(trial, keep_during)
                if not rule.greedy:  # nothing is chosen: BN and validation only matter for the final network
                    best_alpha, best_state, trial = alpha, trial, {}
                    break
                scores[alpha] = self.evaluator.score(trial, trial=(target.round, round_index, alpha_index))
                if scores[alpha] > best_val:  # ties go to the earlier coefficient, as in the original
                    best_alpha, best_val, best_state = alpha, scores[alpha], self.evaluator.state()
            accepted = not rule.greedy or best_val >= current_val
            if accepted:
                current, merged = best_state, merged + 1
                if rule.greedy:
                    current_val = best_val
                    self.log(f"  {rule.name} round {target.round}: + round {round_index} alpha {best_alpha:g} "
                             f"-> val {best_val:.2f}")
            steps.append(StepRecord(round_index, best_alpha, best_val if rule.greedy else None, accepted, scores))
        final, val, test = self._finish(rule, target, current, current_val, steps)
        return PoolResult(rule.name, target, final, val, test, steps, time.time() - started, target.kept)

    def _stacked_step(self, alphas: Sequence[float], current: Weights, candidate: Weights, keep: int | None,
                      key: TrialKey, scores: dict[float, float]) -> tuple[float | None, float, Weights | None]:
        """Every coefficient of one candidate scored together; the best (earliest at a tie), its score and state."""
        sets = []
        for alpha in alphas:
            trial = interpolate_state(current, candidate, alpha)
            self._prune(trial, keep)
            sets.append(trial)
        accuracies, state = self.evaluator.score_stacked(sets, [(*key, index) for index in range(len(alphas))])
        best = None
        for index, (alpha, accuracy) in enumerate(zip(alphas, accuracies)):
            scores[alpha] = accuracy
            if best is None or accuracy > accuracies[best]:  # ties go to the earlier coefficient
                best = index
        if best is None:
            return None, -1.0, None
        return alphas[best], accuracies[best], state(best)

    def _finish(self, rule: PoolRule, target: Ticket, current: Weights, current_val: float,
                steps: list[StepRecord]) -> tuple[Weights, float, EpochStats]:
        """Prune (prune-after mode), recompute BN where no trial did, and report test accuracy.

        Each network is validated once: a greedy prune-during result keeps the score of its accepted trial.
        """
        if not any(s.accepted for s in steps):
            self.evaluator.load(current)  # the ticket as trained, with its own BN statistics
        elif rule.greedy and self.prune_mode == "during":
            self.evaluator.load(current)  # already carries the BN statistics its validation score was taken with
        else:
            if self.prune_mode == "after" and target.kept is not None:
                self._prune(current, target.kept)
            current_val = self.evaluator.score(current, trial=(target.round, FINAL_TRIAL, 0))
            current = self.evaluator.state()
        test = self.evaluator.test()
        return {k: v.cpu() for k, v in current.items()}, current_val, test


def linear_path(store: TicketStore, evaluator: PoolEvaluator, round_a: int, round_b: int,
                alphas: Sequence[float]) -> dict:
    """Test loss and accuracy along ``(1 - alpha) * T_a + alpha * T_b`` (no re-pruning, BN recomputed).

    The error barrier is the largest rise of the test loss above the straight line between the endpoints.
    """
    device = evaluator.device
    a = _to_device(store.load(round_a)[0], device)
    b = _to_device(store.load(round_b)[0], device)
    losses, accuracies, trial = [], [], {}
    for index, alpha in enumerate(alphas):
        interpolate_state(a, b, alpha, out=trial)
        evaluator.load(trial)
        evaluator.recalibrate((round_a, round_b, index))
        stats = evaluator.test()
        losses.append(stats.loss)
        accuracies.append(stats.accuracy)
    first, last = losses[0], losses[-1]
    barrier = max(loss - ((1 - t) * first + t * last) for t, loss in zip(alphas, losses))
    return {"method": "liner_inter", "round_a": round_a, "round_b": round_b, "alphas": list(alphas),
            "test_loss": losses, "test_acc": accuracies, "loss_barrier": barrier,
            "acc_drop": min(accuracies[0], accuracies[-1]) - min(accuracies)}
