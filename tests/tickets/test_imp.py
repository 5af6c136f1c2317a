"""The IMP workflow on a tiny data set: densities, masks, rewinding, files, and resuming."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lotterypools.formats import paths
from lotterypools.core.torchfiles import load_file
from lotterypools.training.masks import load_pruned_state, split_pruned_state
from lotterypools.data.datasets import BatchSource
from lotterypools.core.errors import UserError
from lotterypools.tickets.imp import IMPRun
from lotterypools.training.masks import masks_of, prunable_names
from lotterypools.training.loop import build_optimizer, train_one_epoch
from helpers import CPU, folder_snapshot, state_of, tiny_config, tiny_imp_run, tiny_model_factory, tiny_splits
from helpers import expected_kept

ORIGINAL_KEYS = {"state", "result", "epoch", "state_dict", "best_sa", "optimizer", "scheduler", "init_weight"}


class Killed(Exception):
    """Stands for the process being killed."""


def kill_at(line_start: str):
    """A log function that 'kills' the run when it is about to print a line starting with ``line_start``."""
    def log(line: str) -> None:
        if line.startswith(line_start):
            raise Killed(line)
    return log


class RecordingRun(IMPRun):
    """Records the model, mask and schedule each round starts training from."""

    def _optimizer_and_scheduler(self, model, state, plan):
        optimizer, scheduler = super()._optimizer_and_scheduler(model, state, plan)
        self.starts = getattr(self, "starts", {})
        self.starts[state.round] = dict(epoch=state.next_epoch, state=copy.deepcopy(model.state_dict()),
                                        masks=masks_of(model), last_epoch=scheduler.last_epoch,
                                        lr=optimizer.param_groups[0]["lr"])
        return optimizer, scheduler


def prunable_total() -> int:
    model = tiny_model_factory()()
    parameters = dict(model.named_parameters())
    return sum(parameters[name].numel() for name in prunable_names(model))


def initial_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return tiny_model_factory()().state_dict()


def assert_starts_from(start: dict, rewind: dict[str, torch.Tensor]) -> None:
    """The round's weights are the rewind weights times its mask (pruned layers), or exactly them (the rest)."""
    masks = start["masks"]
    for key, value in rewind.items():
        if key in masks:
            assert torch.equal(start["state"][f"{key}_orig"] * masks[key], value * masks[key]), key
        else:
            assert torch.equal(start["state"][key], value), key


def test_densities_are_one_minus_rate_to_the_k_and_masks_only_shrink(tiny_run):
    summary = json.loads(paths.summary(tiny_run).read_text())
    total = prunable_total()
    assert [r["round"] for r in summary] == [0, 1, 2]
    assert [r["density"] for r in summary] == [k / total for k in expected_kept(total, 0.2, 2)]
    previous = None
    for round_index in range(3):
        _, masks = split_pruned_state(state_of(paths.round_checkpoint(tiny_run, round_index)))
        _, best_masks = split_pruned_state(state_of(paths.round_best(tiny_run, round_index)))
        assert masks.keys() == best_masks.keys() and all(torch.equal(masks[k], best_masks[k]) for k in masks)
        if previous:
            assert all(torch.all(masks[k] <= previous[k]) for k in previous)
        previous = masks
        assert paths.training_curve(tiny_run, round_index).stat().st_size > 0


def test_pruned_weights_stay_zero_through_training(tiny_run):
    model = tiny_model_factory()()
    load_pruned_state(model, state_of(paths.round_checkpoint(tiny_run, 2)), tiny_run, "conv2")
    masks = masks_of(model)
    data = tiny_splits()
    train_one_epoch(model, BatchSource(data.train, 16, CPU, data.spec, shuffle=True, augment=True),
                    build_optimizer(model, 0.1, 0.9, 1e-3), CPU)
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules[name.rsplit(".", 1)[0]]
        assert torch.equal(module.weight_mask, mask)
        assert torch.all(module.weight[mask == 0] == 0)
        assert torch.any(module.weight[mask == 1] != 0)


def test_rewind_lt_restores_the_rewind_weights_and_the_schedule(tmp_path):
    run = tiny_imp_run(tmp_path / "run", run_class=RecordingRun)
    run.run()
    cfg = run.config
    rewind = load_file(paths.rewind_weights(run.save_dir, cfg.rewind_epoch))
    expected_lr = cfg.lr * 0.1 ** sum(m <= cfg.rewind_epoch for m in cfg.milestones)
    assert run.starts[0]["epoch"] == 0 and run.starts[0]["lr"] == cfg.lr
    for round_index in (1, 2):
        start = run.starts[round_index]
        assert start["epoch"] == start["last_epoch"] == cfg.rewind_epoch
        assert start["lr"] == pytest.approx(expected_lr)
        assert_starts_from(start, rewind)
    # The rewind file holds the dense weights after rewind_epoch epochs: a one-epoch run reaches the same.
    one_epoch = tiny_imp_run(tmp_path / "one", epochs=1, pruning_times=1, prune_type="lt")
    one_epoch.run()
    after_one = state_of(paths.round_checkpoint(one_epoch.save_dir, 0))
    assert rewind.keys() == after_one.keys() and all(torch.equal(rewind[k], after_one[k]) for k in rewind)


def test_lt_rewinds_to_the_initialisation(tmp_path):
    run = tiny_imp_run(tmp_path / "run", run_class=RecordingRun, prune_type="lt", pruning_times=2)
    run.run()
    init = initial_state(run.config.seed)
    saved = load_file(paths.rewind_weights(run.save_dir, 0))
    assert all(torch.equal(saved[k], init[k]) for k in init)
    start = run.starts[1]
    assert start["epoch"] == start["last_epoch"] == 0 and start["lr"] == run.config.lr
    assert_starts_from(start, init)
    assert torch.equal(run.starts[0]["state"]["features.0.weight"], init["features.0.weight"])


def test_pt_rewinds_to_the_best_dense_weights(tmp_path):
    run = tiny_imp_run(tmp_path / "run", run_class=RecordingRun, prune_type="pt", pruning_times=2)
    run.run()
    best_dense = state_of(paths.round_best(run.save_dir, 0))
    assert_starts_from(run.starts[1], best_dense)
    assert run.starts[1]["epoch"] == 0


def test_checkpoints_hold_the_original_keys(tiny_run):
    rewind = load_file(paths.rewind_weights(tiny_run, 1))
    for round_index in range(3):
        for path in (paths.round_checkpoint(tiny_run, round_index), paths.round_best(tiny_run, round_index)):
            saved = load_file(path)
            assert ORIGINAL_KEYS <= saved.keys()
            assert saved["state"] == round_index
            assert set(saved["result"]) >= {"train_ta", "val_ta", "test_ta"}
            assert all(torch.equal(saved["init_weight"][k], rewind[k]) for k in rewind)
            keys = saved["state_dict"].keys()
            convs = [k for k in keys if k.startswith("features.") and k.endswith(("weight", "weight_orig"))
                     and saved["state_dict"][k].dim() == 4]
            suffix = "weight" if round_index == 0 else "weight_orig"
            assert convs and all(k.endswith(suffix) for k in convs)
            assert "fc.weight" in keys and "normalize.mean" in keys
    last = load_file(paths.round_checkpoint(tiny_run, 2))
    assert last["epoch"] == 2 and len(last["result"]["train_ta"]) == 1  # rewind_lt trains epochs 2..2


@pytest.mark.parametrize("kill_line", ["round 0 epoch 1/2", "round 1 epoch 2/2", "round 1 done", None])
def test_a_killed_and_resumed_run_repeats_the_uninterrupted_one(tmp_path, kill_line):
    whole = tiny_imp_run(tmp_path / "whole")
    whole.run()
    if kill_line is None:  # stop after round 1 by asking for two rounds, then ask for three
        tiny_imp_run(tmp_path / "resumed", pruning_times=2).run()
    else:
        with pytest.raises(Killed):
            tiny_imp_run(tmp_path / "resumed", log=kill_at(kill_line)).run()
    tiny_imp_run(tmp_path / "resumed").run(resume=True)
    for round_index in range(3):
        for file in (paths.round_checkpoint, paths.round_best):
            a, b = load_file(file(tmp_path / "whole", round_index)), load_file(file(tmp_path / "resumed", round_index))
            assert a["state_dict"].keys() == b["state_dict"].keys()
            for key in a["state_dict"]:
                assert torch.equal(a["state_dict"][key], b["state_dict"][key]), (round_index, key)
            assert a["result"] == b["result"] and a["best_sa"] == b["best_sa"] and a["epoch"] == b["epoch"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(whole.summary()) == strip(tiny_imp_run(tmp_path / "resumed").summary())


def test_resume_from_an_explicit_checkpoint_of_an_earlier_round(tmp_path):
    run = tiny_imp_run(tmp_path / "run")
    run.run()
    final = state_of(paths.round_checkpoint(run.save_dir, 2))
    tiny_imp_run(tmp_path / "run").run(resume=True, checkpoint=paths.round_checkpoint(run.save_dir, 1))
    again = state_of(paths.round_checkpoint(run.save_dir, 2))
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path, tiny_run):
    with pytest.raises(UserError, match="--resume"):
        tiny_imp_run(tiny_run).run()
    with pytest.raises(UserError, match="no '<k>checkpoint.pth.tar'"):
        tiny_imp_run(tmp_path / "empty").run(resume=True)
    assert not (tmp_path / "empty").exists()


def test_resume_with_another_architecture_fails_and_keeps_the_files(tiny_run):
    before = folder_snapshot(tiny_run)
    with pytest.raises(UserError, match=r"other settings \(arch conv2 -> conv4\)"):
        tiny_imp_run(tiny_run, arch="conv4").run(resume=True)
    assert folder_snapshot(tiny_run) == before
    paths.settings(tiny_run).unlink()  # a folder without stored settings: the weights themselves do not fit
    before = folder_snapshot(tiny_run)
    with pytest.raises(UserError, match="does not fit --arch conv4"):
        tiny_imp_run(tiny_run, arch="conv4").run(resume=True)
    assert folder_snapshot(tiny_run) == before


def test_resume_from_a_corrupt_checkpoint_is_a_user_error(tiny_run):
    path = paths.round_checkpoint(tiny_run, 2)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="unreadable"):
        tiny_imp_run(tiny_run).run(resume=True)


@pytest.mark.parametrize("settings, message", [
    (dict(rate=0.0), "outside"), (dict(rate=1.0), "outside"), (dict(rate=-0.2), "outside"),
    (dict(rewind_epoch=2), "below --epochs"), (dict(rewind_epoch=-1), "--rewind_epoch -1 must be 0 or more"),
    (dict(prune_type="magnitude"), "prune_type"), (dict(epochs=0), "epochs"), (dict(pruning_times=0), "pruning_times"),
])
def test_invalid_settings_are_user_errors(settings, message):
    with pytest.raises(UserError, match=message):
        tiny_config(**settings).validate()


def test_random_pruning_keeps_the_same_counts_but_other_weights(tmp_path):
    magnitude = tiny_imp_run(tmp_path / "magnitude", pruning_times=2)
    magnitude.run()
    random = tiny_imp_run(tmp_path / "random", pruning_times=2, random_prune=True)
    random.run()
    _, a = split_pruned_state(state_of(paths.round_checkpoint(magnitude.save_dir, 1)))
    _, b = split_pruned_state(state_of(paths.round_checkpoint(random.save_dir, 1)))
    assert sum(int(m.sum()) for m in a.values()) == sum(int(m.sum()) for m in b.values())
    assert any(not torch.equal(a[k], b[k]) for k in a)
