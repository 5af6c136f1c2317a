"""--stacked_coefficients: a candidate's coefficients scored together give the sequential search's choices."""

from __future__ import annotations

import pytest
import torch

from helpers import make_store, tiny_data, tiny_model
from lotterypools.cli.pools import build_evaluator
from lotterypools.core.errors import UserError
from lotterypools.pools.run import evaluate_tickets
from lotterypools.pools.search import PoolSearch, candidate_order, lottery_pools_rule
from lotterypools.pools.sharded import ShardedPoolEvaluator
from lotterypools.training.distributed import DistributedContext

CPU = torch.device("cpu")
COEFFICIENTS = [0.1, 0.3, 0.5, 0.7, 0.9]


@pytest.mark.parametrize("bn_batches", [0, 2])  # full BN (a fresh draw per trial) and fixed batches
def test_stacked_search_makes_the_sequential_choices(tmp_path, bn_batches):
    store = make_store(tmp_path, 4)
    runs = {}
    for stacked in (False, True):
        evaluator = build_evaluator(tiny_model(), tiny_data(), CPU, batch_size=16, bn_batches=bn_batches, seed=0)
        tickets = evaluate_tickets(store, evaluator)
        search = PoolSearch(store, evaluator, store.prunable_names(), progress=False, log=lambda m: None,
                            stacked=stacked)
        runs[stacked] = [search.run(lottery_pools_rule(COEFFICIENTS), target,
                                    candidate_order(target.round, [0, 1, 2, 3], 4), tickets[target.round]["val_acc"])
                         for target in store.tickets]
    accepted = 0
    for one, together in zip(runs[False], runs[True]):
        assert [(s.round, s.alpha, s.accepted) for s in one.steps] == [(s.round, s.alpha, s.accepted) for s in together.steps]
        for a, b in zip(one.steps, together.steps):
            assert list(a.trials) == list(b.trials)
            assert all(abs(a.trials[k] - b.trials[k]) < 1e-9 for k in a.trials)
        assert abs(one.val_acc - together.val_acc) < 1e-9 and abs(one.test.accuracy - together.test.accuracy) < 1e-9
        for key, value in one.weights.items():
            assert torch.allclose(value.float(), together.weights[key].float(), atol=1e-5), key
        accepted += sum(s.accepted for s in one.steps)
        # the scores differ between coefficients: the check compares real choices, not ties
        assert any(len(set(s.trials.values())) > 1 for s in one.steps)
    assert accepted > 0


def test_stacked_mode_is_refused_for_an_evaluator_shared_across_processes(tmp_path):
    store = make_store(tmp_path, 2)
    context = DistributedContext(0, 1, 0, CPU, "gloo")
    evaluator = ShardedPoolEvaluator(tiny_model(), [], [], [], context)
    with pytest.raises(UserError, match="--stacked_coefficients"):
        PoolSearch(store, evaluator, store.prunable_names(), stacked=True)
