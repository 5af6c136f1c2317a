"""Global magnitude pruning through torch.nn.utils.prune: exact counts, shrinking masks, mask round trips."""

from __future__ import annotations

import pytest
import torch

from lotterypools.training.masks import apply_masks, density, kept_count, masks_of, prunable_names, prune_globally, remove_masks
from helpers import expected_kept, tiny_model_factory


@pytest.mark.parametrize("random", [False, True])
@pytest.mark.parametrize("include_linear", [False, True])
def test_kept_counts_follow_one_minus_rate_to_the_k_and_masks_only_shrink(random, include_linear):
    torch.manual_seed(0)
    model = tiny_model_factory()()
    names = prunable_names(model, include_linear)
    total = sum(dict(model.named_parameters())[n].numel() for n in names)
    expected = expected_kept(total, 0.2, 4)
    previous = None
    for round_index in range(1, 5):
        prune_globally(model, 0.2, include_linear, random, generator_seed=round_index)
        masks = masks_of(model)
        assert sorted(masks) == sorted(names)
        assert kept_count(masks) == expected[round_index]
        assert density(masks) == pytest.approx(0.8 ** round_index, abs=1.5 / total * round_index)
        if previous is not None:
            for name, mask in masks.items():
                assert torch.all(mask <= previous[name]), f"{name} revived a pruned weight"
        previous = masks


def test_magnitude_pruning_removes_the_smallest_remaining_weights():
    torch.manual_seed(1)
    model = tiny_model_factory()()
    names = prunable_names(model)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    prune_globally(model, 0.3)
    masks = masks_of(model)
    kept = torch.cat([weights[n][masks[n].bool()].abs() for n in names])
    removed = torch.cat([weights[n][~masks[n].bool()].abs() for n in names])
    assert removed.max() <= kept.min()


def test_linear_layers_are_pruned_only_when_asked():
    model = tiny_model_factory()()
    assert all(".fc" not in n and "classifier" not in n for n in prunable_names(model))
    assert any("classifier" in n for n in prunable_names(model, include_linear=True))


def test_apply_and_remove_masks_round_trip():
    torch.manual_seed(2)
    source = tiny_model_factory()()
    prune_globally(source, 0.5)
    masks = masks_of(source)
    target = tiny_model_factory()()
    apply_masks(target, masks)
    assert all(torch.equal(masks_of(target)[n], masks[n]) for n in masks)
    apply_masks(target, masks)  # re-applying replaces, never stacks
    assert kept_count(masks_of(target)) == kept_count(masks)
    remove_masks(target)
    assert masks_of(target) == {}
    for name, mask in masks.items():
        weight = dict(target.named_parameters())[name]
        assert torch.all(weight[mask == 0] == 0)


def test_pruning_ranks_the_current_weights_not_the_last_forward_pass():
    torch.manual_seed(3)
    model = tiny_model_factory()()
    prune_globally(model, 0.2)
    conv = model.features[0]
    survivors = conv.weight_mask.clone()
    with torch.no_grad():  # as an optimiser step would: weight_orig changes and no forward pass follows
        conv.weight_orig.mul_(1000.0)
    prune_globally(model, 0.5)
    # the scaled layer's survivors now outrank every other weight, so none of them may be pruned
    assert torch.equal(conv.weight_mask, survivors)


def test_random_pruning_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    chosen = []
    for _ in range(2):
        torch.manual_seed(123)
        model = tiny_model_factory()()
        torch.manual_seed(123)  # the global state the caller had before pruning
        prune_globally(model, 0.5, random=True, generator_seed=7)
        assert torch.equal(torch.rand(3), expected_next)  # pruning did not move or reseed the caller's generator
        chosen.append(masks_of(model))
    assert all(torch.equal(chosen[0][k], chosen[1][k]) for k in chosen[0])
