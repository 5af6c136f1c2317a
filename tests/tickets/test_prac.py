"""PrAC pieces: forgetting counts, CET/CEP and their union, the scaled schedule, the mask-distance stop, the split file."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lotterypools.data.datasets import BatchSource, Split
from lotterypools.core.errors import UserError
from lotterypools.training.masks import masks_of, prune_globally
from lotterypools.tickets.prac import (NEVER_LEARNED, MaskDistanceStop, candidate_mask, critical_for_pruning,
                               critical_for_training, forgetting_counts, mask_distance, next_subset,
                               read_split_file, remaining_weights, scaled_schedule, validate_prac_settings)

CPU = torch.device("cpu")


def test_forgetting_counts_on_a_hand_made_table():
    table = torch.tensor([
        [1, 1, 1, 1],      # learned, never forgotten
        [1, 0, 1, 0],      # forgotten twice
        [0, 0, 0, 0],      # never learned
        [-1, -1, -1, -1],  # not in the round's subset
        [0, 1, 0, 0],      # learned at epoch 1, forgotten once
        [0, 0, 0, 1],      # learned at the last epoch only
        [1, -1, 0, 1],     # an unseen epoch in between: 1 -> (unseen) -> 0 is one forgetting event
    ], dtype=torch.int8)
    assert forgetting_counts(table).tolist() == [0, 2, NEVER_LEARNED, -1, 1, 0, 1]


def test_critical_for_training_zero_out_and_threshold():
    counts = torch.tensor([0, 2, NEVER_LEARNED, -1, 1, 0])
    assert critical_for_training(counts, "zero_out", threshold=0).tolist() == [1, 2, 4]
    assert critical_for_training(counts, "zero_out", threshold=1).tolist() == [1, 2]
    assert critical_for_training(counts, "zero_out", threshold=5).tolist() == [2]


def test_critical_for_training_constent_keeps_a_shrinking_number_of_the_most_forgotten():
    counts = torch.tensor([3, -1, 0, 5, 1, 1, 0, 2, -1, 4])
    # int(10 * 0.8 ** 1) = 8 samples from the 8 in the subset after round 0; int(10 * 0.8 ** 2) = 6 after round 1
    assert critical_for_training(counts, "constent", data_rate=0.2, finished_round=0, train_number=10).tolist() == [0, 2, 3, 4, 5, 6, 7, 9]
    assert critical_for_training(counts, "constent", data_rate=0.2, finished_round=1, train_number=10).tolist() == [0, 3, 4, 5, 7, 9]
    assert critical_for_training(counts, "constent", data_rate=0.5, finished_round=1, train_number=10).tolist() == [3, 9]


def test_critical_for_pruning_is_where_two_tiny_models_disagree():
    images = torch.zeros(6, 1, 1, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([255, 0, 255, 0, 255, 0], dtype=torch.uint8)
    images[:, 0, 0, 1] = torch.tensor([0, 255, 255, 0, 0, 255], dtype=torch.uint8)
    split = Split(images, torch.zeros(6, dtype=torch.long))

    def linear(weight):
        model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
        model[1].weight.data = torch.tensor(weight, dtype=torch.float)
        return model

    dense = linear([[1.0, 0.0], [0.0, 1.0]])        # class of the larger pixel (ties: class 0)
    sparse = linear([[1.0, 0.0], [0.0, 0.0]])       # class 1 never scores above class 0
    source = BatchSource(split, 4, CPU)             # two batches, unshuffled: positions are sample indices
    # dense predicts [0, 1, 0, 0, 0, 1]; sparse predicts 0 everywhere
    assert critical_for_pruning(dense, sparse, source, CPU).tolist() == [1, 5]
    assert critical_for_pruning(dense, dense, source, CPU).tolist() == []


def test_next_subset_is_the_union_of_this_rounds_sets_only():
    cet, cep = torch.tensor([5, 1, 9]), torch.tensor([9, 2])
    assert next_subset(cet, cep).tolist() == [1, 2, 5, 9]
    assert next_subset(cet).tolist() == [1, 5, 9]
    # not cumulative: a sample of an earlier set that neither set holds now is gone
    assert 7 not in next_subset(torch.tensor([1]), torch.tensor([2])).tolist()


def test_scaled_schedule_matches_the_originals_integer_truncation():
    schedule = scaled_schedule(182, [91, 136], 15, selected=16499, train_number=45000)
    assert (schedule.epochs, schedule.milestones, schedule.warmup) == (int(182 * 16499 / 45000), [33, 49], 5)
    assert scaled_schedule(182, [91, 136], 0, 45000, 45000) == scaled_schedule(182, [91, 136], 0, 1, 1)
    assert scaled_schedule(10, [5], 0, 1, 100).epochs == 1  # at least one epoch


def run_stop(distances, eps=0.08, queue_length=5, warmup=0):
    """Feed epochs 1, 2, ... their scripted distances; the epoch (0-based) at which the stop fires, or None."""
    stop = MaskDistanceStop(eps, queue_length, remain_para=100, warmup=warmup)
    for epoch, distance in enumerate(distances, start=1):
        if stop.observe(epoch, distance):
            return epoch
    return None


def test_mask_distance_stop_on_scripted_distances():
    low = [0.01] * 5
    assert run_stop(low + low) is None                        # never above eps: recording never starts
    assert run_stop([0.2] + low) == 6                         # above eps once, then five epochs below
    assert run_stop([0.2] + [0.01] * 4 + [0.09] + low) == 11  # a distance above eps in between restarts the count
    assert run_stop([0.2, 0.01, 0.01], queue_length=2) == 3
    # distances of epochs up to the warm-up are not queued (the original's `epoch > warmup`)
    assert run_stop([0.2] + low + low, warmup=3) == 8


def test_mask_distance_stop_as_a_hook_compares_consecutive_candidate_masks():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    stop = MaskDistanceStop(0.08, 2, remaining_weights(model))
    assert stop.end_of_epoch(0, model, {}) is False and stop.distances == []  # first epoch: nothing to compare with
    assert stop.end_of_epoch(1, model, {}) is False and stop.distances == [0.0]
    with torch.no_grad():
        model[0].weight.copy_(torch.randn_like(model[0].weight))
    stop.end_of_epoch(2, model, {})
    assert stop.distances[-1] > 0.08 and stop.start_record
    restored = MaskDistanceStop(0.08, 2, 1)
    restored.load_state(stop.state())
    assert restored.start_record and restored.remain_para == 36 and torch.equal(restored.distance_queue, stop.distance_queue)


def test_candidate_mask_is_global_magnitude_pruning_of_the_remaining_weights_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.Flatten(), nn.Linear(12, 2))
    prune_globally(model, 0.2)                      # a pruned model, as in round 1
    before = copy.deepcopy(model.state_dict())
    mask = candidate_mask(model, 0.2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    prune_globally(model, 0.2)
    assert mask_distance(mask, masks_of(model)) == 0
    assert sum(int(m.sum()) for m in mask.values()) == remaining_weights(model) == 115  # 180 -> 144 -> 115


def test_split_file_reader_on_an_original_format_array(tmp_path):
    path = tmp_path / "cifar10-train-val.npy"
    np.save(path, np.arange(50000, dtype=np.int32))   # the original's file: int32, no keys
    first = read_split_file(path, total_images=50000, train_number=45000)
    assert first.dtype == torch.long and first.tolist() == list(range(45000))
    permuted = tmp_path / "perm.npy"
    np.save(permuted, np.array([3, 0, 2, 1, 5, 4]))
    assert read_split_file(permuted, 6, 4).tolist() == [3, 0, 2, 1]


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 3), dtype=np.int32), "not a 1-D"),
    (np.array([0.0, 1.0]), "not integers"),
    (np.array([0, 1, 6]), "outside 0..5"),
    (np.array([-1, 1]), "has index -1"),
    (np.array([0, 1, 1, 2]), "repeats index 1"),
    (np.array([0, 5, 1, 2]), "validation image 5"),
    (np.array([], dtype=np.int64), "empty"),
])
def test_split_file_reader_refuses_bad_arrays_with_one_line(tmp_path, array, message):
    path = tmp_path / "split.npy"
    np.save(path, array)
    with pytest.raises(UserError, match=message) as error:
        read_split_file(path, total_images=6, train_number=4)
    assert "\n" not in str(error.value)


def test_split_file_reader_refuses_pickles_and_missing_files(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="not a plain .npy array"):
        read_split_file(path, 6, 4)
    with pytest.raises(UserError, match="does not exist"):
        read_split_file(tmp_path / "missing.npy", 6, 4)


@pytest.mark.parametrize("settings, message", [
    (dict(eb_eps=0.0), "--eb_eps 0.0 is outside"),
    (dict(eb_eps=1.0), "--eb_eps 1.0 is outside"),
    (dict(queue_length=0), "--queue_length 0"),
    (dict(threshold=-1), "--threshold -1 must be 0 or more"),
    (dict(data_prune="random"), "unknown --data_prune"),
    (dict(data_rate=1.0), "--data_rate 1.0"),
])
def test_bad_prac_settings_are_one_line_errors(settings, message):
    values = dict(eb_eps=0.08, queue_length=5, threshold=0, data_prune="zero_out", data_rate=0.2)
    values.update(settings)
    with pytest.raises(UserError, match=message):
        validate_prac_settings(**values)
    validate_prac_settings(0.08, 5, 0, "zero_out", 0.2)


def test_prac_architecture_names_are_aliases_of_ours():
    from lotterypools.models import build_model

    for alias, name in (("res20s", "resnet20s"), ("res56s", "resnet56s"), ("res18", "resnet18"), ("res50", "resnet50")):
        torch.manual_seed(0)
        first = build_model(alias, 10).state_dict()
        torch.manual_seed(0)
        second = build_model(name, 10).state_dict()
        assert list(first) == list(second) and all(torch.equal(first[k], second[k]) for k in first)
