"""Lottery Pools search: candidate order, re-pruning, the greedy rule, SWA/EMA coefficients, results files."""

from __future__ import annotations


import pytest
import torch

from lotterypools.formats.original import ticket_files
from lotterypools.core.torchfiles import atomic_save
from lotterypools.training.masks import join_pruned_state
from lotterypools.core.errors import UserError
from lotterypools.pools.run import (PoolSettings, check_pool_settings, evaluate_tickets, run_linear_paths,
                                    run_pool_method)
from lotterypools.training.masks import density, magnitude_masks
from lotterypools.models import build_model
from lotterypools.cli.pools import build_evaluator
from lotterypools.pools.results import PoolResultsFile
from lotterypools.analysis.plots import plot_pool_results
from lotterypools.pools.search import (PoolSearch, candidate_order, ema_rule, interpolate_state, lottery_pools_rule,
                                swa_rule)
from lotterypools.pools.store import TicketStore, read_ticket
from lotterypools.training.loop import EpochStats

from helpers import make_store, tiny_data, tiny_model, write_tickets


class ScoringStub:
    """Stands in for PoolEvaluator: validation accuracy is a fixed function of the weights (no BN, no data)."""

    def __init__(self, score_fn):
        self.score_fn, self.device, self.weights, self.scored = score_fn, torch.device("cpu"), None, []

    def load(self, weights):
        self.weights = {k: v.clone() for k, v in weights.items()}

    def state(self):
        return {k: v.clone() for k, v in self.weights.items()}

    def score(self, weights, recalibrate=True, trial=()):
        self.load(weights)
        value = float(self.score_fn(weights))
        self.scored.append(value)
        return value

    def validate(self):
        return EpochStats(0.0, float(self.score_fn(self.weights)))

    def test(self):
        return EpochStats(0.0, float(self.score_fn(self.weights)))


# ----------------------------------------------------------------------------- candidate order and interpolation
def test_candidate_order_nearest_first_denser_first_and_search_num_counts_target():
    rounds = list(range(7))
    assert candidate_order(3, rounds, 5) == [2, 4, 1, 5]
    assert candidate_order(3, rounds, 7) == [2, 4, 1, 5, 0, 6]
    assert candidate_order(0, rounds, 4) == [1, 2, 3]
    assert candidate_order(6, rounds, 100) == [5, 4, 3, 2, 1, 0]
    assert candidate_order(2, rounds, 1) == []


def test_interpolate_state_endpoints_and_integer_buffers():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}
    assert torch.equal(interpolate_state(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state(a, b, 1.0)["w"], b["w"])
    mixed = interpolate_state(a, b, 0.25)
    assert torch.allclose(mixed["w"], torch.tensor([1.5, 3.0]))
    assert mixed["n"].item() == 3  # integer buffers follow the current network


# ----------------------------------------------------------------------------- the search on real tiny networks
@pytest.fixture()
def tiny_pool(tmp_path):
    store = make_store(tmp_path, 4)
    evaluator = build_evaluator(tiny_model(), tiny_data(), torch.device("cpu"), batch_size=16, bn_batches=0, seed=0)
    return store, evaluator, evaluate_tickets(store, evaluator)


def val_acc(tickets, round_index):
    return tickets[round_index]["val_acc"]


def test_pooled_sparse_ticket_has_exactly_the_target_density(tiny_pool):
    store, evaluator, tickets = tiny_pool
    search = PoolSearch(store, evaluator, store.prunable_names(), progress=False, log=lambda m: None)
    for target in store.tickets[1:]:
        result = search.run(lottery_pools_rule([0.3, 0.5, 0.7]), target, candidate_order(target.round, [0, 1, 2, 3], 4),
                            val_acc(tickets, target.round))
        kept = sum(int(result.weights[n].count_nonzero()) for n in store.prunable_names())
        assert kept == target.kept
        assert abs(kept / sum(result.weights[n].numel() for n in store.prunable_names()) - target.density) < 1e-12


def test_dense_target_stays_dense(tiny_pool):
    store, evaluator, tickets = tiny_pool
    search = PoolSearch(store, evaluator, store.prunable_names(), progress=False, log=lambda m: None)
    result = search.run(swa_rule(), store.by_round(0), [1, 2], val_acc(tickets, 0))
    assert all(int(result.weights[n].count_nonzero()) == result.weights[n].numel() for n in store.prunable_names())


def test_alpha_zero_gives_back_the_current_ticket(tiny_pool):
    store, evaluator, tickets = tiny_pool
    search = PoolSearch(store, evaluator, store.prunable_names(), progress=False, log=lambda m: None)
    target = store.by_round(2)
    result = search.run(lottery_pools_rule([0.0]), target, [1, 3], val_acc(tickets, 2))
    original = store.load(2)[0]
    for name in original:
        if name.endswith("weight") or name.endswith("bias"):
            assert torch.equal(result.weights[name], original[name]), name


def test_two_identical_tickets_give_back_that_ticket(tmp_path):
    write_tickets(tmp_path, 2)
    state = torch.load(tmp_path / "1model_SA_best.pth.tar", weights_only=True)
    atomic_save(state, tmp_path / "2model_SA_best.pth.tar")  # round 2 = a copy of round 1
    store = TicketStore(ticket_files(tmp_path), tiny_model().state_dict(), "conv2")
    evaluator = build_evaluator(tiny_model(), tiny_data(), torch.device("cpu"), 16, 0, 0)
    tickets = evaluate_tickets(store, evaluator)
    search = PoolSearch(store, evaluator, store.prunable_names(), progress=False, log=lambda m: None)
    result = search.run(lottery_pools_rule([0.05, 0.5, 0.95]), store.by_round(1), [2], val_acc(tickets, 1))
    original = store.load(1)[0]
    for name in original:
        if original[name].is_floating_point() and not name.startswith(("normalize",)) and "running" not in name:
            assert torch.allclose(result.weights[name], original[name], atol=1e-6), name


def test_greedy_rule_never_keeps_a_step_that_lowers_validation_accuracy(tmp_path):
    store = make_store(tmp_path, 5)
    good = store.load(2)[0]
    names = store.prunable_names()
    # validation "accuracy" rises as the weights approach round 2's: candidates far from it must be rejected
    score = lambda w: 100.0 - float(sum((w[n] - good[n]).abs().sum() for n in names))
    stub = ScoringStub(score)
    target = store.by_round(2)
    target_val = score(good)
    search = PoolSearch(store, stub, names, progress=False, log=lambda m: None)
    result = search.run(lottery_pools_rule([0.1, 0.5, 0.9]), target, [1, 3, 0, 4], target_val)
    current = target_val
    for step in result.steps:
        if step.accepted:
            assert step.val_acc >= current
            current = step.val_acc
        else:
            assert step.val_acc < current
    assert result.val_acc >= target_val
    assert not all(s.accepted for s in result.steps)


def test_greedy_rule_keeps_an_equal_step_and_picks_the_first_best_alpha(tmp_path):
    store = make_store(tmp_path, 3)
    stub = ScoringStub(lambda w: 50.0)  # every trial ties with the target
    target = store.by_round(1)
    result = PoolSearch(store, stub, store.prunable_names(), progress=False, log=lambda m: None).run(
        lottery_pools_rule([0.2, 0.4]), target, [0, 2], 50.0)
    assert [s.accepted for s in result.steps] == [True, True]  # paper's rule: not below the current accuracy
    assert result.alphas == [0.2, 0.2]


def test_swa_coefficients_equal_a_running_mean(tmp_path):
    store = make_store(tmp_path, 4)
    stub = ScoringStub(lambda w: 0.0)
    target = store.by_round(0)  # dense: no re-pruning, so SWA is exactly the mean of the tickets it walks
    result = PoolSearch(store, stub, store.prunable_names(), progress=False, log=lambda m: None).run(
        swa_rule(), target, [1, 2, 3], 0.0)
    assert result.alphas == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    tickets = [store.load(r)[0] for r in range(4)]
    for name, value in result.weights.items():
        if value.is_floating_point():
            assert torch.allclose(value, torch.stack([t[name] for t in tickets]).mean(0), atol=1e-6), name


def test_ema_puts_its_weight_on_the_incoming_ticket(tmp_path):
    store = make_store(tmp_path, 3)
    stub = ScoringStub(lambda w: 0.0)
    target = store.by_round(0)
    result = PoolSearch(store, stub, store.prunable_names(), progress=False, log=lambda m: None).run(
        ema_rule(0.9), target, [1, 2], 0.0)
    t0, t1, t2 = (store.load(r)[0] for r in range(3))
    for name, value in result.weights.items():
        if value.is_floating_point():
            expected = 0.9 * t2[name] + 0.1 * (0.9 * t1[name] + 0.1 * t0[name])
            assert torch.allclose(value, expected, atol=1e-6), name


def test_prune_after_reaches_the_target_density(tiny_pool):
    store, evaluator, tickets = tiny_pool
    search = PoolSearch(store, evaluator, store.prunable_names(), prune_mode="after", progress=False, log=lambda m: None)
    target = store.by_round(3)
    result = search.run(swa_rule(), target, [2, 1], val_acc(tickets, 3))
    assert sum(int(result.weights[n].count_nonzero()) for n in store.prunable_names()) == target.kept


# ----------------------------------------------------------------------------- ticket files
def test_reading_tickets_in_the_original_layout_and_as_plain_weights_plus_masks(tmp_path):
    model = build_model("resnet20s", 10, 3)
    names = [k for k in model.state_dict() if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    masks = magnitude_masks(weights, names, sum(weights[n].numel() for n in names) * 8 // 10)
    original = join_pruned_state(weights, masks)
    assert len(original) == 137  # the original's resnet20s layout after one pruning round
    atomic_save({"state": 1, "state_dict": original, "best_sa": 1.0}, tmp_path / "a.pth.tar")
    plain = {k: v * masks[k] if k in masks else v for k, v in weights.items()}
    atomic_save({"state_dict": plain, "mask": {f"{k}_mask": m for k, m in masks.items()}}, tmp_path / "b.pth.tar")
    for path in (tmp_path / "a.pth.tar", tmp_path / "b.pth.tar"):
        read_weights, read_masks = read_ticket(path)
        assert set(read_masks) == set(masks)
        assert density(read_masks) == pytest.approx(0.8, abs=1e-3)
        for key, value in plain.items():
            assert torch.equal(read_weights[key], value), key
    model.load_state_dict(read_ticket(tmp_path / "a.pth.tar")[0])


def test_a_ticket_of_another_architecture_names_the_differing_keys(tmp_path):
    write_tickets(tmp_path, 2)
    with pytest.raises(UserError, match="does not fit.*missing.*check --arch"):
        TicketStore(ticket_files(tmp_path), build_model("conv4", 3, 1, (0.5,), (0.25,), 8).state_dict(), "conv4")


def test_pruned_ticket_without_masks_is_refused(tmp_path):
    write_tickets(tmp_path, 2)
    state = torch.load(tmp_path / "1model_SA_best.pth.tar", weights_only=True)
    state["state_dict"] = {k.replace("_orig", ""): v for k, v in state["state_dict"].items() if not k.endswith("_mask")}
    atomic_save(state, tmp_path / "1model_SA_best.pth.tar")
    with pytest.raises(UserError, match="holds no masks"):
        TicketStore(ticket_files(tmp_path), tiny_model().state_dict(), "conv2")


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "holds no"),
])
def test_ticket_folder_errors(tmp_path, setup, message):
    with pytest.raises(UserError, match=message):
        ticket_files(setup(tmp_path))


def test_corrupt_ticket_file_is_a_one_line_error(tmp_path):
    (tmp_path / "0model_SA_best.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        TicketStore(ticket_files(tmp_path), tiny_model().state_dict(), "conv2")


@pytest.mark.parametrize("search_num, values, ema, message", [
    (0, [0.5], 0.9, "search_num"),
    (3, [0.5, 1.5], 0.9, "outside"),
    (3, [], 0.9, "empty"),
    (3, [0.5], 1.2, "EMA_value"),
])
def test_pool_settings_errors(search_num, values, ema, message):
    with pytest.raises(UserError, match=message):
        check_pool_settings(search_num, values, ema)


# ----------------------------------------------------------------------------- methods end to end, results file
def settings_for(method: str, coefficients=(0.3, 0.7), **overrides) -> PoolSettings:
    values = dict(method=method, search_num=3, coefficients=tuple(coefficients), ema_value=0.95, bn_batches=0,
                  bn_batch_size=16, seed=0, arch="conv2", dataset="tiny", ticket_folder="tickets")
    values.update(overrides)
    return PoolSettings(**values)


def test_each_method_end_to_end_and_results_accumulate(tiny_pool, tmp_path):
    store, evaluator, tickets = tiny_pool
    out = tmp_path / "results"
    results = PoolResultsFile(out)
    results.commit(evaluate_tickets(store, evaluator, settings_for("Lottery_pools").ticket_fields()).values())
    for method in ("Lottery_pools", "interpolate_swa", "interpolate_ema"):
        records = run_pool_method(settings_for(method), store, evaluator, tickets, results=results, log=lambda m: None,
                                  save_pooled=out)
        assert [r["target_round"] for r in records] == [0, 1, 2, 3]
        for record in records:
            assert record["density"] == store.by_round(record["target_round"]).density
            assert 0.0 <= record["test_acc"] <= 100.0
            assert (record["arch"], record["dataset"], record["seed"], record["search_num"]) == ("conv2", "tiny", 0, 3)
            if method == "Lottery_pools":
                assert record["val_acc"] >= tickets[record["target_round"]]["val_acc"]
                assert record["coefficients"] == [0.3, 0.7] and record["ema_value"] is None
            if method == "interpolate_ema":
                assert record["ema_value"] == 0.95 and record["coefficients"] is None
    fields = {**settings_for("liner_inter").identity(), **settings_for("liner_inter").bn_fields()}
    run_linear_paths(store, evaluator, fields, results, log=lambda m: None)
    plot_pool_results(results, "tiny")
    again = PoolResultsFile(out)  # a later run reads what earlier ones wrote
    assert {r["method"] for r in again.records} == {"ticket", "Lottery_pools", "interpolate_swa", "interpolate_ema"}
    assert len(again.records) == 16
    assert [(p["round_a"], p["round_b"]) for p in again.linear] == [(0, 1), (1, 2), (2, 3)]
    assert all(len(p["test_acc"]) == 11 and p["alphas"][0] == 0.0 and p["alphas"][-1] == 1.0 for p in again.linear)
    for name in ("pools_results.json", "pools_results.csv", "pools_accuracy.png", "linear_interpolation.png"):
        assert (out / name).stat().st_size > 0
    header = (out / "pools_results.csv").read_text().splitlines()[0].split(",")
    assert {"arch", "dataset", "seed", "ticket_folder", "coefficients", "search_num", "bn_mode", "bn_batches",
            "prune_mode", "ema_value"} <= set(header)
    pooled = ticket_files(out / "Lottery_pools")
    assert [f.round for f in pooled] == [0, 1, 2, 3]
    assert density(read_ticket(pooled[3].path)[1]) == pytest.approx(store.by_round(3).density)
    # replacing one record keeps the others
    again.commit([dict(again.records[-1], test_acc=-1.0)])
    assert len(again.records) == 16 and [r["test_acc"] for r in again.records].count(-1.0) == 1


def test_fixed_bn_batches_are_the_same_for_every_trial():
    evaluator = build_evaluator(tiny_model(), tiny_data(), torch.device("cpu"), 16, 2, 0)
    first = [b[0].clone() for b in evaluator.bn_batches]
    second = [b[0] for b in evaluator.bn_batches]
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, second))


def test_plain_weights_beside_weight_mask_entries_are_masked_on_reading(tmp_path):
    weights = {"conv.weight": torch.ones(2, 2), "conv.weight_mask": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    atomic_save({"state_dict": weights}, tmp_path / "t.pth.tar")
    read_weights, read_masks = read_ticket(tmp_path / "t.pth.tar")
    assert torch.equal(read_weights["conv.weight"], torch.eye(2)) and set(read_masks) == {"conv.weight"}
