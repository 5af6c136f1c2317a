"""Sparse Model Soups: candidates share the mask, soups are what they claim, phases follow the schedule, runs resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import (CPU, REPO, expected_kept, free_port, load_script_main, script_env, tiny_config, tiny_model_factory,
                     tiny_splits, user_error, write_mnist_like)
from lotterypools.config.sms import SMSSettings
from lotterypools.core.errors import UserError
from lotterypools.formats import paths
from lotterypools.formats.original import read_ticket
from lotterypools.data.datasets import BatchSource
from lotterypools.training.engine import EpochLearningRates, RoundContext, fit
from lotterypools.training.loop import TrainingHook, build_optimizer
from lotterypools.tickets.sms import (SMSRetrainPolicy, SMSRun, check_shared_masks, greedy_soup, linear_decay_rate, make_soup,
                                      uniform_soup)
from lotterypools.training.masks import kept_count, prunable_modules


def sms_run(folder, log=lambda line: None, **overrides) -> SMSRun:
    """An SMS run of conv2 on the tiny data set: 3 networks (dense + 2 phases), 2 candidates of 2 epochs."""
    sms = {k: overrides.pop(k) for k in list(overrides) if k in SMSSettings.__dataclass_fields__}
    config = tiny_config(**{"pruning_times": 3, "prune_type": "lt", "rewind_epoch": 0, **overrides})
    settings = SMSSettings(**{"candidates": 2, "bn_batches": 2, **sms})
    return SMSRun(config, settings, tiny_model_factory(), tiny_splits(), CPU, folder, log=log, progress=False)


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sms") / "uniform"
    sms_run(folder).run()
    return folder


# ---------------------------------------------------------------- soups as pure functions
def test_uniform_soup_is_the_mean_of_floats_and_keeps_counters():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}
    soup = uniform_soup([a, b])
    assert torch.equal(soup["w"], torch.tensor([2.0, 4.0]))
    assert soup["n"].item() == 5 and soup["n"].dtype == a["n"].dtype


def test_greedy_soup_never_lowers_the_score_and_returns_the_soup_it_chose():
    sets = [{"w": torch.tensor([float(v)])} for v in (1.0, 5.0, 3.0)]
    # the score peaks at w = 3: adding 5 to [3] gives 4 (worse), adding 1 to [3] gives 2 (worse than 3 alone? 3-|2-3|)
    score = lambda weights: -abs(weights["w"].item() - 3.0)  # noqa: E731
    choice = greedy_soup(sets, score)
    assert choice.members == [2]  # the best alone; both additions lowered the score
    assert torch.equal(choice.weights["w"], torch.tensor([3.0]))
    kept = [trial["val_acc"] for trial in choice.trials if trial["kept"]]
    assert kept == sorted(kept) and choice.val_acc == max(trial["val_acc"] for trial in choice.trials)

    # a candidate that helps is kept, ties are kept (the official rule)
    score_mean = lambda weights: -abs(weights["w"].item() - 2.0)  # noqa: E731
    choice = greedy_soup(sets, score_mean)
    assert choice.members == [0, 2] and torch.equal(choice.weights["w"], torch.tensor([2.0]))


def test_make_soup_uniform_uses_every_candidate():
    sets = [{"w": torch.tensor([float(v)])} for v in (1.0, 2.0, 6.0)]
    choice = make_soup("uniform", sets, lambda weights: 0.0)
    assert choice.members == [0, 1, 2] and torch.equal(choice.weights["w"], torch.tensor([3.0]))


def test_masks_that_differ_are_refused():
    mask = {"conv.weight": torch.tensor([1.0, 0.0])}
    check_shared_masks([mask, {"conv.weight": mask["conv.weight"].clone()}], ["a", "b"])
    with pytest.raises(UserError, match="b was retrained under another mask"):
        check_shared_masks([mask, {"conv.weight": torch.tensor([0.0, 1.0])}], ["a", "b"])


def test_linear_decay_schedule_warms_up_then_decays_to_zero():
    rates = [linear_decay_rate(0.1, step, 100) for step in range(101)]
    assert rates[0] == 0.0 and rates[10] == pytest.approx(0.1)
    assert rates[5] == pytest.approx(0.05)  # the half-cosine is half-way at half the warm-up
    assert all(a <= b for a, b in zip(rates[:10], rates[1:11])) and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[100] == 0.0


def test_llr_policy_sets_every_step_on_the_official_schedule(tmp_path):
    folder = tmp_path / "llr"
    seen = []

    class Record(TrainingHook):
        def after_step(self, step):  # runs after the schedule's hook: the lr the next step will use
            seen.append((step.step, step.optimizer.param_groups[0]["lr"]))

    run = sms_run(folder, retrain_schedule="llr", pruning_times=2, candidates=1, epochs=2)
    steps = len(BatchSource(tiny_splits().train, 16, CPU))
    plan = SMSRetrainPolicy("llr", steps).plan(RoundContext(0, tiny_model_factory()(), run.config, None, None, CPU))
    assert plan.learning_rates == [linear_decay_rate(run.config.lr, e * steps, 2 * steps) for e in range(2)]
    plan.hooks.append(Record())
    model = tiny_model_factory()()
    optimizer = build_optimizer(model, run.config.lr, 0.9, 0.0)
    schedule = EpochLearningRates(optimizer, plan.learning_rates)
    source = BatchSource(tiny_splits().train, 16, CPU, shuffle=True, seed=0)
    fit(model, lambda epoch: source, optimizer, schedule, CPU, start_epoch=0, epochs=2, hooks=plan.hooks)
    assert [lr for _, lr in seen] == pytest.approx([linear_decay_rate(run.config.lr, s + 1, 2 * steps)
                                                    for s, _ in seen])


# ---------------------------------------------------------------- a real run
def test_phase_densities_follow_the_schedule_exactly(uniform_run):
    model = tiny_model_factory()()
    total = sum(m.weight.numel() for _, m in prunable_modules(model))
    expected = expected_kept(total, 0.2, 2)
    for phase, kept in enumerate(expected):
        _, masks = read_ticket(paths.round_best(uniform_run, phase))
        assert (kept_count(masks) if masks else total) == kept


def test_geometric_schedule_reaches_the_goal(tmp_path):
    settings = SMSSettings(schedule="geometric", goal_sparsity=0.75, phases=2)
    rate, phases = settings.pruning(tiny_config())
    assert phases == 2 and rate == pytest.approx(0.5)


def test_candidates_share_the_mask_and_the_uniform_soup_is_their_mean(uniform_run):
    _, soup_masks = read_ticket(paths.round_best(uniform_run, 1))
    candidates = [read_ticket(paths.round_best(uniform_run / "phase_1" / f"candidate_{k}", 0)) for k in range(2)]
    for _, masks in candidates:
        assert masks.keys() == soup_masks.keys()
        assert all(torch.equal(masks[k], soup_masks[k]) for k in masks)
    soup, _ = read_ticket(paths.round_best(uniform_run, 1))
    for key, value in soup.items():
        if key.endswith("weight") and "bn" not in key and value.dim() > 1:  # BN statistics were recomputed
            mean = (candidates[0][0][key] + candidates[1][0][key]) / 2
            assert torch.allclose(value, mean, atol=1e-6), key
    differ = [k for k in soup if candidates[0][0][k].is_floating_point()
              and not torch.equal(candidates[0][0][k], candidates[1][0][k])]
    assert differ, "the candidates trained with different seeds should differ"


def test_summary_records_candidates_and_soup(uniform_run):
    summary = json.loads(paths.summary(uniform_run).read_text())
    assert [r["round"] for r in summary] == [0, 1, 2]
    phase = summary[1]
    assert phase["soup"] == "uniform" and phase["soup_members"] == [0, 1]
    assert [c["candidate"] for c in phase["candidates"]] == [0, 1]
    assert len({c["seed"] for c in phase["candidates"]}) == 2
    assert phase["epochs"] == 4 and summary[0]["epochs"] == 2


def test_greedy_run_saves_the_soup_it_chose(tmp_path):
    folder = tmp_path / "greedy"
    sms_run(folder, soup="greedy", pruning_times=2).run()
    record = json.loads(paths.summary(folder).read_text())[1]
    members = record["soup_members"]
    weights = [read_ticket(paths.round_best(folder / "phase_1" / f"candidate_{k}", 0))[0] for k in members]
    soup, _ = read_ticket(paths.round_best(folder, 1))
    conv = next(k for k in soup if k.endswith("weight") and soup[k].dim() == 4)
    assert torch.allclose(soup[conv], uniform_soup(weights)[conv], atol=1e-6)
    kept = [t["val_acc"] for t in record["soup_trials"] if t["kept"]]
    assert record["val_acc"] >= max(kept) - 1e-9 or record["val_acc"] == pytest.approx(max(kept))


def test_imp_budget_trains_one_network_m_times_longer(tmp_path):
    folder = tmp_path / "imp3x"
    sms_run(folder, imp_budget=True, candidates=3, pruning_times=2).run()
    record = json.loads(paths.summary(folder).read_text())[1]
    assert len(record["candidates"]) == 1 and record["candidates"][0]["epochs"] == 6 and record["epochs"] == 6


def test_interrupted_phase_reruns_only_the_unfinished_candidate(tmp_path, uniform_run):
    folder = tmp_path / "cut"
    shutil.copytree(uniform_run, folder)
    # cut the run inside phase 2: its soup and candidate 1 are gone, candidate 0 is finished
    records = json.loads(paths.summary(folder).read_text())
    paths.summary(folder).write_text(json.dumps([r for r in records if r["round"] < 2]))
    for name in ("2model_SA_best.pth.tar", "2checkpoint.pth.tar"):
        (folder / name).unlink()
    shutil.rmtree(folder / "phase_2" / "candidate_1")
    kept = (folder / "phase_2" / "candidate_0" / "0model_SA_best.pth.tar").read_bytes()
    lines = []
    sms_run(folder, log=lines.append).run()
    assert (folder / "phase_2" / "candidate_0" / "0model_SA_best.pth.tar").read_bytes() == kept
    assert any("continuing" in line and "candidate 0" in line for line in lines)
    for name in ("2model_SA_best.pth.tar",):
        a, b = read_ticket(folder / name)[0], read_ticket(uniform_run / name)[0]
        assert all(torch.equal(a[k], b[k]) for k in a), "the rerun differs from the uninterrupted run"


def test_other_settings_are_refused_on_rerun(uniform_run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(uniform_run, folder)
    with pytest.raises(UserError, match="other settings.*candidates 2 -> 3"):
        sms_run(folder, candidates=3).run()


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def main_sms():
    return load_script_main("main_SMS.py")


@pytest.mark.parametrize("argv, expected", [
    (["--candidates", "0"], "--candidates 0 must be at least 1"),
    (["--goal_sparsity", "1.0"], "--goal_sparsity 1"),
    (["--vary", "momentum"], "unknown --vary 'momentum'"),
    (["--vary", "weight_decay", "--values", "0.1"], "needs one value per candidate"),
    (["--soup", "best"], "unknown --soup 'best'"),
    (["--schedule", "geometric"], "needs --goal_sparsity"),
    (["--goal_sparsity", "0.99", "--pruning_times", "3"], "reaches 36.0% sparsity, not --goal_sparsity 0.99"),
    (["--values", "a,b"], "--values 'a,b' must be comma-separated numbers"),
])
def test_bad_settings_get_one_line(main_sms, capsys, tmp_path, argv, expected):
    err = user_error(main_sms, [*argv, "--data", str(tmp_path), "--no_download", "--save_dir", str(tmp_path / "x")],
                     capsys)
    assert expected in err
    assert not (tmp_path / "x").exists()


def test_a_dense_network_from_another_data_set_is_refused(main_sms, cli_sms, capsys, tmp_path):
    dense = cli_sms / "0model_SA_best.pth.tar"  # trained on fashionmnist
    err = user_error(main_sms, ["--dataset", "mnist", "--data", str(tmp_path), "--no_download", "--arch", "conv2",
                                "--dense", str(dense), "--save_dir", str(tmp_path / "x")], capsys)
    assert "--dense" in err and "fashionmnist" in err


def test_a_bad_dense_network_writes_nothing_so_the_fixed_command_runs(main_sms, cli_sms, capsys, tmp_path):
    flags = sms_flags(cli_sms.parent / "data")
    save = tmp_path / "x"
    pruned = cli_sms / "1model_SA_best.pth.tar"
    for dense, expected in ((tmp_path / "missing.pth.tar", "no such file"), (pruned, "is a pruned network")):
        err = user_error(main_sms, [*flags, "--dense", str(dense), "--save_dir", str(save)], capsys)
        assert f"--dense {dense}" in err and expected in err
        assert not (save / "settings.json").exists()
    main_sms([*flags, "--dense", str(cli_sms / "0model_SA_best.pth.tar"), "--save_dir", str(save)])
    assert json.loads(paths.summary(save).read_text())[0]["epochs"] == 0  # the dense phase was read, not trained


def test_settings_accept_the_official_names():
    settings = SMSSettings(vary="pruned_seed", soup="GreedySoup")
    assert (settings.vary, settings.soup) == ("seed", "greedy")


# ---------------------------------------------------------------- the command, other tools, processes
def sms_flags(data, seed=5):
    return ["--data", str(data), "--dataset", "fashionmnist", "--arch", "conv2", "--epochs", "1", "--pruning_times",
            "2", "--batch_size", "64", "--decreasing_lr", "1", "--device", "cpu", "--seed", str(seed),
            "--candidates", "2", "--bn_batches", "3", "--no_download"]


@pytest.fixture(scope="module")
def cli_sms(tmp_path_factory):
    """A main_SMS.py run (2 networks, 2 candidates of 1 epoch) on tiny Fashion-MNIST idx files: its folder."""
    base = tmp_path_factory.mktemp("cli_sms")
    write_mnist_like(base / "data" / "fashionmnist", train=5096, test=64)
    load_script_main("main_SMS.py")([*sms_flags(base / "data"), "--save_dir", str(base / "one")])
    return base / "one"


def test_lottery_pools_reads_an_sms_folder(cli_sms, tmp_path):
    data = cli_sms.parent / "data"
    load_script_main("Lottery_pools.py")(["--data", str(data), "--dataset", "fashionmnist", "--arch", "conv2",
                                         "--checkpoint", str(cli_sms), "--save_dir", str(tmp_path / "pools"),
                                         "--search_num", "2", "--interpolation_value_list", "0.5",
                                         "--bn_batches", "2", "--seed", "5"])
    results = json.loads(next((tmp_path / "pools").rglob("*.json")).read_text())
    assert results, "the pool search wrote no result"


@pytest.mark.slow
def test_one_and_two_gloo_processes_make_identical_soups(cli_sms, tmp_path):
    env = {**script_env(), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), str(REPO / "CIFAR" / "main_SMS.py"), *sms_flags(cli_sms.parent / "data"),
                          "--save_dir", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    for phase in (0, 1):
        a = read_ticket(paths.round_best(cli_sms, phase))[0]
        b = read_ticket(paths.round_best(tmp_path / "two", phase))[0]
        assert all(torch.equal(a[k], b[k]) for k in a), f"phase {phase} differs between 1 and 2 processes"
