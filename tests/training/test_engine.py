"""The one training engine: both file layouts, resume mid-round, refused resumes, hooks, round policies, fit()."""

from __future__ import annotations

import pytest
import torch

from lotterypools.formats import openlth, paths
from lotterypools.formats.original import OriginalLayout
from lotterypools.core.torchfiles import load_file
from lotterypools.training.masks import split_pruned_state
from lotterypools.tickets.imp import IMPRun
from lotterypools.training.engine import EpochResult, IMPEngine, RoundPlan, RoundPolicy, choose_ticket, fit, optimizer_at
from lotterypools.core.errors import UserError
from lotterypools.training.masks import density
from lotterypools.formats.openlth import OpenLTHLayout
from lotterypools.training.sources import SplitEvaluator, SplitTrainData
from lotterypools.training.loop import CorrectnessRecorder, TrainingHook
from helpers import CPU, folder_fingerprint, folder_snapshot, state_of, tiny_config, tiny_model_factory, tiny_splits
from helpers import user_error


class Killed(Exception):
    """Stands for the process being killed after an epoch."""


class KillAfter(TrainingHook):
    """Raises at the end of the ``count``-th epoch trained by this process (the epoch's checkpoint is not written)."""

    def __init__(self, count: int):
        self.count, self.seen = count, 0

    def end_of_epoch(self, epoch, model, stats):
        self.seen += 1
        if self.seen == self.count:
            raise Killed(f"after epoch {epoch + 1}")
        return False


def engine(folder, layout: str = "original", hooks=(), policy=None, **overrides) -> IMPEngine:
    """The engine on the tiny data set with either layout (OpenLTH's keeps the last epoch as the ticket)."""
    if layout == "openlth":
        overrides.setdefault("ticket", "last")
    config = tiny_config(**overrides)
    data = tiny_splits()
    files = OriginalLayout(folder, config) if layout == "original" else OpenLTHLayout(folder, config)
    return IMPEngine(config, tiny_model_factory(config.arch), SplitTrainData(data, config.batch_size, CPU, config.seed),
                     SplitEvaluator(data, CPU), files, CPU, policy=policy, hooks=hooks, log=lambda line: None,
                     progress=False)


def ticket_states(folder, layout: str, rounds: int) -> list[dict[str, torch.Tensor]]:
    if layout == "original":
        return [state_of(paths.round_best(folder, r)) for r in range(rounds)]
    return [openlth.read_level(openlth.level_files(folder)[r].path)[0] for r in range(rounds)]


def assert_same_states(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), [k for k in x if not torch.equal(x[k], y[k])]


@pytest.mark.parametrize("layout", ["original", "openlth"])
@pytest.mark.parametrize("kill_after", [1, 2, 5])  # before any checkpoint, in round 0, in round 1
def test_both_layouts_resume_mid_round_to_the_uninterrupted_tickets(tmp_path, layout, kill_after):
    whole = engine(tmp_path / "whole", layout, prune_type="lt", epochs=3, pruning_times=3)
    whole.run(resume=False)
    with pytest.raises(Killed):
        engine(tmp_path / "cut", layout, hooks=[KillAfter(kill_after)], prune_type="lt", epochs=3,
               pruning_times=3).run(resume=False)
    resumed = engine(tmp_path / "cut", layout, prune_type="lt", epochs=3, pruning_times=3)
    summary = resumed.run(resume=True)
    assert_same_states(ticket_states(tmp_path / "whole", layout, 3), ticket_states(tmp_path / "cut", layout, 3))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(summary) == strip(whole.summary())
    assert [round(r["density"], 6) for r in summary] == [1.0, round(density_after(1), 6), round(density_after(2), 6)]


def density_after(rounds: int) -> float:
    from lotterypools.training.masks import prunable_names
    from helpers import expected_kept

    model = tiny_model_factory()()
    parameters = dict(model.named_parameters())
    total = sum(parameters[name].numel() for name in prunable_names(model))
    return expected_kept(total, 0.2, rounds)[-1] / total


def test_openlth_layout_writes_openltHs_files(tmp_path):
    engine(tmp_path / "run", "openlth", prune_type="rewind_lt", rewind_epoch=1, epochs=2, pruning_times=2).run()
    files = openlth.level_files(tmp_path / "run")
    assert [(f.round, f.path.name) for f in files] == [(0, "model_ep2_it0.pth"), (1, "model_ep2_it0.pth")]
    assert openlth.model_epochs(openlth.level_dir(tmp_path / "run", 0)) == [0, 1, 2]
    assert openlth.model_epochs(openlth.level_dir(tmp_path / "run", 1)) == [1, 2]
    assert not openlth.checkpoint_path(tmp_path / "run", 1).exists()


@pytest.mark.parametrize("layout", ["original", "openlth"])
def test_resume_with_settings_that_change_the_result_is_refused(tmp_path, layout):
    folder = tmp_path / "run"
    engine(folder, layout, pruning_times=2).run(resume=False)
    before = sorted(p.name for p in folder.rglob("*"))
    with pytest.raises(UserError, match=r"other settings \(epochs 2 -> 3; lr 0.05 -> 0.1\)"):
        engine(folder, layout, pruning_times=2, epochs=3, lr=0.1).run(resume=True)
    assert sorted(p.name for p in folder.rglob("*")) == before
    # Settings that do not change the result may differ; more rounds continue the run.
    summary = engine(folder, layout, pruning_times=3, workers=0, channels_last=True).run(resume=True)
    assert [r["round"] for r in summary] == [0, 1, 2]


def test_rerunning_openlth_continues_and_the_original_asks_for_resume(tmp_path):
    engine(tmp_path / "lth", "openlth", pruning_times=2).run(resume=None)
    stamp = openlth.model_path(tmp_path / "lth", 1, 2).stat().st_mtime_ns
    engine(tmp_path / "lth", "openlth", pruning_times=2).run(resume=None)
    assert openlth.model_path(tmp_path / "lth", 1, 2).stat().st_mtime_ns == stamp
    engine(tmp_path / "orig", pruning_times=1).run(resume=False)
    with pytest.raises(UserError, match="--resume"):
        engine(tmp_path / "orig", pruning_times=1).run(resume=False)


class ZeroFirstFilter(TrainingHook):
    """Every 2 steps of pruned rounds, removes the first filter of the first conv from the mask (as DST would)."""

    def __init__(self):
        self.updates = 0

    def after_step(self, step):
        module = step.model.features[0]
        if step.step % 2 == 0 and hasattr(module, "weight_mask"):
            with torch.no_grad():
                module.weight_mask[0].zero_()
            self.updates += 1


def test_a_per_step_hook_that_changes_masks_is_honoured(tmp_path):
    hook = ZeroFirstFilter()
    run = engine(tmp_path / "run", hooks=[hook], pruning_times=3)
    summary = run.run()
    assert hook.updates > 0
    for round_index in (1, 2):
        weights, masks = split_pruned_state(state_of(paths.round_checkpoint(tmp_path / "run", round_index)))
        assert torch.all(masks["features.0.weight"][0] == 0)
        assert torch.all(weights["features.0.weight"][0] == 0)
        assert summary[round_index]["density"] == pytest.approx(density(masks))
    plain = engine(tmp_path / "plain", pruning_times=3).run()
    assert summary[2]["density"] < plain[2]["density"]


class StopAfter(TrainingHook):
    """Stops every round after its first trained epoch."""

    def __init__(self):
        self.calls = 0

    def end_of_epoch(self, epoch, model, stats):
        self.calls += 1
        assert {"train_acc", "val_acc", "test_acc", "lr"} <= stats.keys()
        return True


def test_a_per_epoch_hook_can_stop_a_round(tmp_path):
    hook = StopAfter()
    summary = engine(tmp_path / "run", hooks=[hook], epochs=3, pruning_times=2, prune_type="lt").run()
    assert hook.calls == 2
    assert [r["epochs"] for r in summary] == [1, 1] and all(r["stopped_early"] for r in summary)
    saved = load_file(paths.round_checkpoint(tmp_path / "run", 1))
    assert saved["stopped"] and saved["epoch"] == 1
    # A resumed run does not train a stopped round any further.
    again = engine(tmp_path / "run", epochs=3, pruning_times=2, prune_type="lt").run(resume=True)
    assert [r["epochs"] for r in again] == [1, 1]


class ShrinkingSubsets(RoundPolicy):
    """A PrAC-like policy: round r trains on fewer samples, for scaled epochs, with per-sample records."""

    def __init__(self, total: int):
        self.total = total
        self.sequence = torch.arange(total)
        self.recorder = CorrectnessRecorder(total)
        self.tables: dict[int, torch.Tensor] = {}

    def plan(self, context):
        if context.restored is not None:
            self.sequence = context.restored
        share = len(self.sequence) / self.total
        epochs = max(1, round(context.config.epochs * share))
        self.recorder = CorrectnessRecorder(self.total)
        return RoundPlan(epochs=epochs, milestones=[max(1, epochs // 2)], subset=self.sequence, with_indices=True,
                         hooks=[self.recorder])

    def end_of_round(self, context):
        self.tables[context.round] = self.recorder.table
        dense = context.layout.read_ticket(0)
        assert "features.0.weight" in dense
        self.sequence = self.sequence[: len(self.sequence) * 2 // 3]

    def state_dict(self):
        return {"sequence": self.sequence.clone()}

    def load_state_dict(self, state):
        return state["sequence"]


def test_a_round_policy_trains_subsets_and_resumes_mid_round(tmp_path):
    total = len(tiny_splits().train)
    policy = ShrinkingSubsets(total)
    whole = engine(tmp_path / "whole", policy=policy, epochs=3, pruning_times=3, prune_type="lt")
    summary = whole.run()
    assert [r["epochs"] for r in summary] == [3, 2, 1]
    table = policy.tables[1]
    assert torch.all(table[:64] >= 0) and torch.all(table[64:] == -1)  # round 1 saw the first 64 samples only
    assert torch.equal(load_file(paths.round_checkpoint(tmp_path / "whole", 1))["sequence"], torch.arange(64))
    with pytest.raises(Killed):
        engine(tmp_path / "cut", policy=ShrinkingSubsets(total), hooks=[KillAfter(5)], epochs=3, pruning_times=3,
               prune_type="lt").run()
    resumed = engine(tmp_path / "cut", policy=ShrinkingSubsets(total), epochs=3, pruning_times=3, prune_type="lt")
    assert [r["epochs"] for r in resumed.run(resume=True)] == [3, 2, 1]
    assert_same_states(ticket_states(tmp_path / "whole", "original", 3), ticket_states(tmp_path / "cut", "original", 3))


def test_fit_resumed_from_a_saved_epoch_repeats_the_uninterrupted_training():
    data = tiny_splits()
    train = SplitTrainData(data, 16, CPU, seed=3)
    evaluate = SplitEvaluator(data, CPU)

    def start():
        torch.manual_seed(0)
        model = tiny_model_factory()()
        return model, *optimizer_at(model, 0.05, 0.9, 1e-4, [2], 1, 0)

    model, optimizer, scheduler = start()
    results = fit(model, lambda e: train.batches(0, e), optimizer, scheduler, CPU, start_epoch=0, epochs=3,
                  evaluate=evaluate)
    assert [r.epoch for r in results] == [1, 2, 3] and "val" in results[0].evaluation
    saved = {}

    def keep(result):  # what a per-epoch checkpoint holds
        saved.update(weights={k: v.clone() for k, v in second.state_dict().items()}, optimizer=opt2.state_dict(),
                     scheduler=sch2.state_dict())

    second, opt2, sch2 = start()
    fit(second, lambda e: train.batches(0, e), opt2, sch2, CPU, start_epoch=0, epochs=1, on_epoch=keep)
    third = tiny_model_factory()()
    third.load_state_dict(saved["weights"])
    opt3, sch3 = optimizer_at(third, 0.05, 0.9, 1e-4, [2], 1, 1, saved["optimizer"], saved["scheduler"])
    fit(third, lambda e: train.batches(0, e), opt3, sch3, CPU, start_epoch=1, epochs=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), third.state_dict().values()))


@pytest.mark.parametrize("settings, message", [
    (dict(batch_size=0), "--batch_size 0 must be at least 1"), (dict(lr=-0.1), "--lr -0.1 must be positive"),
    (dict(lr=0.0), "--lr 0.0 must be positive"), (dict(warmup=-1), "--warmup -1 must be 0 or more"),
    (dict(momentum=-0.5), "--momentum -0.5 must be 0 or more"), (dict(ticket="best"), "unknown --ticket"),
])
def test_bad_training_settings_are_one_line_errors(settings, message):
    with pytest.raises(UserError, match=message):
        tiny_config(**settings).validate()


def test_an_imp_run_writes_what_the_engine_writes_with_the_original_layout(tmp_path):
    """IMPRun is a convenience over IMPEngine: the same config, data and layout give the same files and records."""
    config = tiny_config(pruning_times=2, prune_type="rewind_lt", rewind_epoch=1)
    run = IMPRun(config, tiny_model_factory(), tiny_splits(), CPU, tmp_path / "run", log=lambda line: None,
                 progress=False)
    run_summary = run.run()
    engine_summary = engine(tmp_path / "engine", pruning_times=2, prune_type="rewind_lt", rewind_epoch=1).run()
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert untimed(run_summary) == untimed(engine_summary) and [r["round"] for r in run_summary] == [0, 1]
    # provenance.json and the lock files say how the run went (times, data source), not what it computed
    results = lambda folder: {name: value for name, value in folder_fingerprint(folder).items()
                              if name != "provenance.json" and not name.startswith(".")}
    written = results(tmp_path / "run")
    assert {"0model_SA_best.pth.tar", "1model_SA_best.pth.tar", "summary.json", "settings.json"} <= written.keys()
    assert written == results(tmp_path / "engine")


def cli_run_flags(cli_run, **changes: str) -> list[str]:
    """The flags that made the ``cli_run`` fixture's run, with ``changes`` (flag name -> value)."""
    flags = {"data": str(cli_run.parent / "data"), "dataset": "fashionmnist", "arch": "conv2", "epochs": "2",
             "pruning_times": "2", "prune_type": "rewind_lt", "rewind_epoch": "1", "batch_size": "32",
             "decreasing_lr": "1", "device": "cpu", "seed": "3", "save_dir": str(cli_run)}
    flags.update(changes)
    return [item for name, value in flags.items() for item in (f"--{name}", value)] + ["--no_download"]


@pytest.mark.slow
def test_main_imp_resume_with_other_epochs_is_refused_and_changes_nothing(main_imp, capsys, cli_run):
    before = folder_snapshot(cli_run)
    err = user_error(main_imp, cli_run_flags(cli_run, epochs="3") + ["--resume"], capsys)
    assert "other settings (epochs 2 -> 3)" in err
    assert folder_snapshot(cli_run) == before


@pytest.mark.parametrize("flag, value, message", [
    ("batch_size", "0", "--batch_size 0 must be at least 1"), ("lr", "-0.1", "--lr -0.1 must be positive"),
    ("warmup", "-3", "--warmup -3 must be 0 or more"),
])
def test_main_imp_bad_training_flags_are_one_line_errors(main_imp, capsys, tmp_path, flag, value, message):
    err = user_error(main_imp, ["--data", str(tmp_path / "nowhere"), "--dataset", "fashionmnist", "--arch", "conv2",
                                  "--device", "cpu", "--save_dir", str(tmp_path / "run"), f"--{flag}", value], capsys)
    assert message in err
    assert not (tmp_path / "run").exists()


class SwapEveryThreeSteps(TrainingHook):
    """A dynamic-sparse-training stand-in: every 3 steps the first conv drops its smallest active weight and
    grows the inactive one with the largest dense gradient (read in after_backward, applied after the step)."""

    def __init__(self):
        self.grad, self.updates = None, 0

    def after_backward(self, step):
        module = step.model.features[0]
        self.grad = module.weight_orig.grad.detach().clone() if step.step % 3 == 0 else None

    def after_step(self, step):
        if self.grad is None:
            return
        module = step.model.features[0]
        with torch.no_grad():
            mask = module.weight_mask.view(-1)
            active = torch.where(mask > 0, module.weight_orig.view(-1).abs(), torch.full_like(mask, float("inf")))
            grown = torch.where(mask == 0, self.grad.view(-1).abs(), torch.full_like(mask, -1.0)).argmax()
            mask[active.argmin()] = 0.0
            mask[grown] = 1.0
            module.weight_orig.view(-1)[grown] = 0.0  # a grown weight starts at zero
        self.updates += 1


class SparseRun(RoundPolicy):
    """FreeTickets-like: one round of 4 epochs, lr 1x for two epochs then 0.1x (an EDST-style phase)."""

    def __init__(self, hook):
        self.hook = hook

    def plan(self, context):
        return RoundPlan(epochs=4, milestones=[], learning_rates=[0.05, 0.05, 0.005, 0.005],
                         hooks=[self.hook])


class HalfDenseStart(IMPEngine):
    def initial_masks(self):
        model = tiny_model_factory()()
        return {"features.0.weight": (torch.arange(model.features[0].weight.numel()) % 2).float()
                .view_as(model.features[0].weight)}


def sparse_engine(folder, hook, hooks=()):
    config = tiny_config(pruning_times=1, prune_type="lt", epochs=4)
    data = tiny_splits()
    return HalfDenseStart(config, tiny_model_factory(), SplitTrainData(data, 16, CPU, config.seed),
                          SplitEvaluator(data, CPU), OriginalLayout(folder, config), CPU,
                          policy=SparseRun(hook), hooks=hooks, log=lambda line: None, progress=False)


def test_a_sparse_training_run_with_phases_and_mask_updates_resumes_exactly(tmp_path):
    hook = SwapEveryThreeSteps()
    sparse_engine(tmp_path / "whole", hook).run(resume=False)
    assert hook.updates >= 8
    saved = load_file(paths.round_checkpoint(tmp_path / "whole", 0))
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.005)  # 0.05 x 0.1 after epoch 2
    _, masks = split_pruned_state(saved["state_dict"])
    start = (torch.arange(masks["features.0.weight"].numel()) % 2).float().view_as(masks["features.0.weight"])
    assert not torch.equal(masks["features.0.weight"], start) and masks["features.0.weight"].sum() == start.sum()
    with pytest.raises(Killed):
        sparse_engine(tmp_path / "cut", SwapEveryThreeSteps(), hooks=[KillAfter(3)]).run(resume=False)
    sparse_engine(tmp_path / "cut", SwapEveryThreeSteps()).run(resume=True)
    assert_same_states([state_of(paths.round_checkpoint(tmp_path / "whole", 0))],
                       [state_of(paths.round_checkpoint(tmp_path / "cut", 0))])


def _epoch(epoch: int, val: float | None):
    from lotterypools.training.loop import EpochStats

    evaluation = {} if val is None else {"val": EpochStats(0.0, val)}
    return EpochResult(epoch, EpochStats(0.0, 0.0), evaluation, 0.1, 0.0)


def test_the_ticket_rule_is_a_function_of_the_ticket_so_far_and_the_epoch():
    assert choose_ticket("best_val", -1, -1.0, _epoch(1, 50.0)) == (1, 50.0)
    assert choose_ticket("best_val", 1, 50.0, _epoch(2, 50.0)) is None           # only a strictly better epoch
    assert choose_ticket("best_val", 1, 50.0, _epoch(2, 60.0)) == (2, 60.0)
    assert choose_ticket("best_val", 2, 60.0, _epoch(3, 40.0), phase_start=2) == (3, 40.0)  # a new phase starts over
    assert choose_ticket("best_val", 3, 40.0, _epoch(4, 30.0), phase_start=2) is None
    assert choose_ticket("last", 2, 60.0, _epoch(3, 10.0)) == (3, 10.0)
    assert choose_ticket("best_val", 2, 60.0, _epoch(3, None)) == (3, -1.0)      # no validation split: the last
