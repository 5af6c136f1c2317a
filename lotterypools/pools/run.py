"""A pool run over a ticket folder: evaluate the tickets, run one method over every target, record results.

Shared by ``CIFAR/Lottery_pools.py`` and ``ImageNet/Lottery_pools.py``. The run is incremental: each
target's record is committed to the results file as soon as the target is finished, a rerun skips the
targets whose record (same method and settings) is already there unless the folder now gives that target
other candidate rounds (then it is recomputed and replaced), and several processes can share the targets
(each takes whole targets, ``rank::world_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..config.names import POOL_METHODS as METHODS
from ..config.pools import PoolSearchSettings
from ..config.settings import check_ranges
from ..formats import paths
from ..formats.original import round_checkpoint_dict
from ..core.torchfiles import atomic_save
from ..training.masks import join_pruned_state
from ..core.console import log, progress
from ..core.errors import UserError
from ..training.masks import magnitude_masks
from .results import CANDIDATES_FIELD, PoolResultsFile, linear_key, made_from_other_candidates, record_key
from .search import (PoolEvaluator, PoolResult, PoolRule, PoolSearch, candidate_order, ema_rule, linear_path,
                    lottery_pools_rule, swa_rule)
from .store import TicketStore

LINE_ALPHAS = [round(0.1 * i, 1) for i in range(11)]
ExtraMetrics = Callable[[dict], dict]


def check_pool_settings(search_num: int, coefficients: Sequence[float], ema_value: float, bn_batches: int = 0) -> None:
    """One-line errors for settings the search cannot use (the ranges declared on :class:`PoolSearchSettings`)."""
    if not coefficients:
        raise UserError("--interpolation_value_list is empty: give at least one coefficient in [0, 1]")
    check_ranges(PoolSearchSettings(search_num=search_num, interpolation_value_list=list(coefficients),
                                    EMA_value=ema_value, bn_batches=bn_batches))


def check_targets(targets: Sequence[int] | None, rounds: Sequence[int], folder: object) -> list[int]:
    """The target rounds to run (all by default); a round the folder does not hold is a one-line error."""
    if targets is None:
        return list(rounds)
    missing = sorted(set(targets) - set(rounds))
    if missing:
        raise UserError(f"--targets {' '.join(map(str, missing))}: {folder} holds no such round (it holds rounds "
                        f"{rounds[0]}-{rounds[-1]}); name target rounds among those")
    return [r for r in rounds if r in set(targets)]


@dataclass(frozen=True)
class PoolSettings:
    """What identifies a pool run's records: the method, every setting that changes its numbers, and the
    tickets it ran on (architecture, data set, seed, ticket folder)."""

    method: str
    search_num: int
    coefficients: tuple[float, ...]
    ema_value: float
    prune_mode: str = "during"
    bn_batches: int = 0
    bn_batch_size: int = 128
    seed: int = 0
    arch: str = ""
    dataset: str = ""
    ticket_folder: str = ""

    def identity(self) -> dict:
        """The fields every record of this run carries, ticket records included."""
        return {"arch": self.arch, "dataset": self.dataset, "seed": self.seed, "ticket_folder": self.ticket_folder}

    def bn_fields(self) -> dict:
        return {"bn_mode": "fixed" if self.bn_batches else "full", "bn_batches": self.bn_batches,
                "bn_batch_size": self.bn_batch_size}

    def record_fields(self) -> dict:
        """Identity and the settings that matter for this method (the others are None)."""
        return {**self.identity(), **self.bn_fields(),
                "coefficients": list(self.coefficients) if self.method == "Lottery_pools" else None,
                "search_num": self.search_num, "prune_mode": self.prune_mode,
                "ema_value": self.ema_value if self.method == "interpolate_ema" else None}

    def ticket_fields(self) -> dict:
        """The fields of a ticket's own record: no search setting applies."""
        return {**self.identity(), **{f: None for f in ("coefficients", "search_num", "bn_mode", "bn_batches",
                                                         "bn_batch_size", "prune_mode", "ema_value")}}

    def record_method(self) -> str:
        """The method's name in records (``Lottery_pools_average`` for the 0.5-only pool, ``_prune_after`` added)."""
        name = make_rule(self.method, self.coefficients, self.ema_value).name
        return f"{name}_prune_after" if self.prune_mode == "after" else name


# The search rule of each greedy-walk method from (coefficients, EMA value); liner_inter is a path, not a walk.
RULE_BUILDERS: dict[str, Callable[[Sequence[float], float], PoolRule]] = {
    "Lottery_pools": lambda coefficients, ema_value: lottery_pools_rule(coefficients),
    "interpolate_swa": lambda coefficients, ema_value: swa_rule(),
    "interpolate_ema": lambda coefficients, ema_value: ema_rule(ema_value),
}


def make_rule(method: str, coefficients: Sequence[float], ema_value: float) -> PoolRule:
    """The search rule of ``method`` (a key of :data:`RULE_BUILDERS`), or a one-line error naming the methods."""
    if method not in RULE_BUILDERS:
        raise UserError(f"unknown --interpolate_method {method!r}: choose one of {', '.join(METHODS)}")
    return RULE_BUILDERS[method](coefficients, ema_value)


def evaluate_tickets(store: TicketStore, evaluator: PoolEvaluator, fields: Mapping | None = None,
                     progress_bar: bool = False, extra: ExtraMetrics | None = None) -> dict[int, dict]:
    """Validation and test accuracy of every ticket as trained (its own BN statistics): a record per round.

    ``fields`` (identity) are added to every record; ``extra(weights)`` (e.g. out-of-distribution accuracy)
    adds its entries.
    """
    records = {}
    for ticket in progress(store.tickets, "evaluating tickets", progress_bar):
        weights = store.load(ticket.round)[0]
        evaluator.load(weights)
        val, test = evaluator.validate(), evaluator.test()
        records[ticket.round] = {
            "method": "ticket", "target_round": ticket.round, "density": ticket.density, "lt_val_acc": val.accuracy,
            "lt_test_acc": test.accuracy, "val_acc": val.accuracy, "test_acc": test.accuracy, "test_loss": test.loss,
            "chosen_rounds": [], "alphas": [], "seconds": 0.0, **(fields or {}),
            **(extra(weights) if extra is not None else {})}
    return records


def stored_tickets(done: Sequence[dict], rounds: Sequence[int], fields: Mapping) -> dict[int, dict] | None:
    """The ticket records already among ``done`` for every round (same tickets and identity), else None."""
    found = {record_key(r): r for r in done if r["method"] == "ticket"}
    keys = {r: record_key({"method": "ticket", "target_round": r, **fields}) for r in rounds}
    if not all(key in found for key in keys.values()):
        return None
    return {r: found[key] for r, key in keys.items()}


def result_record(result: PoolResult, method: str, ticket: Mapping, fields: Mapping) -> dict:
    """The record of one pooled ticket: its numbers, its ticket's numbers, and the run's settings."""
    target = result.target
    return {"method": method, "target_round": target.round, "density": target.density,
            "lt_val_acc": ticket["val_acc"], "lt_test_acc": ticket["test_acc"], "val_acc": result.val_acc,
            "test_acc": result.test.accuracy, "test_loss": result.test.loss, "chosen_rounds": result.chosen_rounds,
            "alphas": result.alphas, "seconds": round(result.seconds, 2), **fields,
            "steps": [{"round": s.round, "alpha": s.alpha, "val_acc": s.val_acc, "accepted": s.accepted,
                       "trials": {str(k): v for k, v in s.trials.items()}} for s in result.steps]}


def save_pooled_ticket(result: PoolResult, names: list[str], folder: Path) -> Path:
    """Write a pooled ticket in the original layout (``weight_orig`` + ``weight_mask``), readable as a ticket."""
    from ..training.guards import check_finite, check_ticket_density

    path = paths.round_best(folder, result.target.round)
    check_finite(result.weights, f"pooled ticket {path}: weight")  # a soup of non-finite tickets is never written
    masks = magnitude_masks(result.weights, names, result.kept) if result.kept is not None else {}
    if masks:
        check_ticket_density(masks, result.kept, path)
    atomic_save(round_checkpoint_dict(result.target.round, join_pruned_state(result.weights, masks), result.val_acc,
                                      method=result.method, chosen_rounds=result.chosen_rounds, alphas=result.alphas),
                path)
    return path


@dataclass(frozen=True)
class Share:
    """This process's part of the work: whole targets ``rank::world_size``; rank 0 prints and writes summaries."""

    rank: int = 0
    world_size: int = 1

    def mine(self, items: Sequence) -> list:
        return list(items)[self.rank::self.world_size]

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pending_targets(done: Sequence[dict], method: str, fields: Mapping, targets: Sequence[int],
                    log: Callable[[str], None], candidates: Mapping[int, Sequence[int]] | None = None) -> list[int]:
    """The targets to run: those without a record of the same method and settings among ``done`` (the records
    already there), and, where ``candidates`` (each target's candidate rounds now) is given, those whose record
    was searched over other candidates: one line names each of these."""
    stored = {record_key(r): r for r in done}
    pending, skipped = [], []
    for target in targets:
        record = stored.get(record_key({"method": method, "target_round": target, **fields}))
        now = list(candidates.get(target, [])) if candidates is not None else None
        if record is not None and now is not None and made_from_other_candidates(record, now):
            # the ticket folder changed (e.g. IMP went on): the stored pool could not choose what it can now
            log(f"{method} round {target}: recomputed, the ticket folder now gives it candidate rounds "
                f"{_rounds_text(now)} (the record had {_rounds_text(record[CANDIDATES_FIELD])})")
            record = None
        (pending if record is None else skipped).append(target)
    if skipped:
        log(f"{method}: skipped rounds {' '.join(map(str, skipped))} (already in the results with the same settings; "
            f"--overwrite recomputes them)")
    return pending


def _rounds_text(rounds: Sequence[int]) -> str:
    return " ".join(map(str, rounds)) or "none"


def note_candidate_limits(rounds: Sequence[int], search_num: int, log: Callable[[str], None]) -> None:
    """One line where the folder limits the search: a single ticket (nothing to pool), or ``search_num`` above
    the number of tickets (capped; records keep the ``search_num`` given)."""
    if len(rounds) == 1:
        log(f"the ticket folder holds one ticket (round {rounds[0]}): nothing to pool, the pooled ticket equals the "
            f"ticket; run more IMP rounds (main_imp.py; --resume continues a stopped run) and rerun this command "
            f"to give it candidates (its record is then recomputed)")
    elif search_num > len(rounds):
        log(f"--search_num {search_num} is capped at {len(rounds)}: the ticket folder holds {len(rounds)} tickets "
            f"(search_num counts the target), so each target has at most {len(rounds) - 1} candidates; the "
            f"records still say search_num={search_num}")


def run_pool_method(settings: PoolSettings, store: TicketStore, evaluator: PoolEvaluator,
                    tickets: Mapping[int, Mapping], targets: Sequence[int] | None = None,
                    results: PoolResultsFile | None = None, done: Sequence[dict] = (), save_pooled: Path | None = None,
                    share: Share = Share(), log: Callable[[str], None] = log, progress_bar: bool = False,
                    extra: ExtraMetrics | None = None, stacked: bool = False) -> list[dict]:
    """Run one method for each target: this process's share of those without a record in ``done`` (or whose
    record there was searched over other candidate rounds than the folder gives now).

    ``tickets`` maps each round to its ticket's record (from :func:`evaluate_tickets`): the target's
    validation accuracy is the bar of the greedy rule. Each record is committed to ``results`` as soon as
    its target is finished, and one line is logged. ``stacked`` scores a candidate's coefficients together
    (:meth:`PoolEvaluator.score_stacked`). Returns the records this process made.
    """
    rule = make_rule(settings.method, settings.coefficients, settings.ema_value)
    method, fields = settings.record_method(), settings.record_fields()
    names = store.prunable_names()
    search = PoolSearch(store, evaluator, names, settings.prune_mode, log, progress_bar, stacked)
    rounds = [t.round for t in store.tickets]
    main_log = log if share.is_main else (lambda m: None)
    note_candidate_limits(rounds, settings.search_num, main_log)
    candidates = {r: candidate_order(r, rounds, settings.search_num) for r in rounds}
    todo = pending_targets(done, method, fields, check_targets(targets, rounds, "the ticket folder"), main_log,
                           candidates)
    records = []
    for round_index in progress(share.mine(todo), method, progress_bar):
        target = store.by_round(round_index)
        ticket = tickets[round_index]
        result = search.run(rule, target, candidates[round_index], ticket["val_acc"])
        # what the search could choose from: a rerun over a changed folder recomputes this record
        record = {**result_record(result, method, ticket, fields), CANDIDATES_FIELD: candidates[round_index]}
        if extra is not None:
            record.update(extra(result.weights))
        if save_pooled is not None:
            save_pooled_ticket(result, names, save_pooled / method)
        if results is not None:
            results.commit([record])
        records.append(record)
        log(f"{method} round {round_index} (density {100 * target.density:.2f}%): ticket test "
            f"{ticket['test_acc']:.2f} -> {result.test.accuracy:.2f}  (val {ticket['val_acc']:.2f} -> "
            f"{result.val_acc:.2f}; merged rounds {result.chosen_rounds or '-'}; {result.seconds:.1f}s)")
    return records


def run_linear_paths(store: TicketStore, evaluator: PoolEvaluator, fields: Mapping | None = None,
                     results: PoolResultsFile | None = None, done: Sequence[dict] = (), share: Share = Share(),
                     progress_bar: bool = False, log: Callable[[str], None] = log) -> list[dict]:
    """Linear interpolation between every pair of consecutive tickets (11 points, endpoints included).

    Like the search, each pair is committed to ``results`` when done, and pairs already in ``done`` are skipped.
    """
    fields = dict(fields or {})
    rounds = [t.round for t in store.tickets]
    finished = {linear_key(p) for p in done}
    pairs = [(a, b) for a, b in zip(rounds, rounds[1:])
             if linear_key({"round_a": a, "round_b": b, **fields}) not in finished]
    lines = []
    for a, b in progress(share.mine(pairs), "linear paths", progress_bar):
        path = {**linear_path(store, evaluator, a, b, LINE_ALPHAS), **fields}
        if results is not None:
            results.commit(linear=[path])
        log(f"liner_inter {a}->{b}: test acc {' '.join(f'{x:.1f}' for x in path['test_acc'])}  "
            f"loss barrier {path['loss_barrier']:.4f}")
        lines.append(path)
    return lines
