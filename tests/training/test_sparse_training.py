"""Dynamic sparse training: ERK allocation, exact masks, death and growth, masked momentum, bad flags."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lotterypools.core.errors import UserError
from lotterypools.models import build_model
from lotterypools.training.sparse import (MaskedWeights, MaskUpdater, SparseConfig, death_rate_at, erk_densities,
                                          exact_counts, global_magnitude_masks, initial_masks, layer_densities,
                                          sparse_weight_names)
from lotterypools.training.loop import Step


class SmallNet(nn.Module):
    """conv (8,1,3,3) -> conv (16,8,3,3) -> linear (10,16)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


SHAPES = {"conv1.weight": (8, 1, 3, 3), "conv2.weight": (16, 8, 3, 3), "fc.weight": (10, 16)}


def test_erk_densities_match_a_hand_computation_with_the_dense_cap():
    # raw scores: conv1 15/72, conv2 30/1152, fc 26/160. At d = 0.3, eps = 415.2/71 gives conv1 1.22 > 1: dense.
    # Then eps = (0.3 * (1152 + 160) - 0.7 * 72) / (30 + 26) = 343.2 / 56.
    densities = erk_densities(SHAPES, 0.3)
    eps = 343.2 / 56
    assert densities["conv1.weight"] == 1.0
    assert densities["conv2.weight"] == pytest.approx(eps * 30 / 1152)
    assert densities["fc.weight"] == pytest.approx(eps * 26 / 160)
    kept = 72 + densities["conv2.weight"] * 1152 + densities["fc.weight"] * 160
    assert kept == pytest.approx(0.3 * 1384)
    counts = exact_counts(SHAPES, densities, 0.3)
    assert counts == {"conv1.weight": 72, "conv2.weight": 184, "fc.weight": 159}  # 415 = round(415.2)


def test_er_ignores_kernel_dims_and_uniform_is_flat():
    er = erk_densities(SHAPES, 0.3, with_kernel=False)
    # ER raw scores: conv1 9/8 (largest, dense), conv2 24/128, fc 26/160
    assert er["conv1.weight"] == 1.0
    assert er["conv2.weight"] / er["fc.weight"] == pytest.approx((24 / 128) / (26 / 160))
    assert layer_densities(SHAPES, 0.3, "uniform") == {name: 0.3 for name in SHAPES}


@pytest.mark.parametrize("init", ["ERK", "ER", "uniform"])
def test_initial_masks_keep_exactly_the_intended_count(init):
    model = build_model("resnet20s", 10)
    masks = initial_masks(model, SparseConfig(density=0.2, sparse_init=init), seed=3)
    assert set(masks) == set(sparse_weight_names(model)) and "fc.weight" in masks and "conv1.weight" in masks
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.2 * total)
    assert all(int(m.sum()) > 0 for m in masks.values())  # the original's uniform/ER zeroed every mask


def test_global_magnitude_masks_for_pf_are_exact_and_global():
    weights = {"a": torch.tensor([[5.0, -1.0], [0.5, 4.0]]), "b": torch.tensor([3.0, -6.0, 0.1, 2.0])}
    masks = global_magnitude_masks(weights, ["a", "b"], 0.5)
    assert masks["a"].tolist() == [[True, False], [False, True]] and masks["b"].tolist() == [True, True, False, False]


def _step(model, optimizer, index):
    return Step(model, optimizer, 0, index, torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(()))


def test_death_and_growth_keep_counts_and_regrow_where_the_gradient_is_largest():
    torch.manual_seed(0)
    model = SmallNet()
    config = SparseConfig(density=0.3, growth="gradient", death_rate=0.5, update_frequency=1, decay_schedule="constant")
    masked = MaskedWeights(model, initial_masks(model, config, seed=0))
    masked.apply()
    before = {name: mask.clone() for name, mask in masked.masks.items()}
    counts = masked.counts()
    weight = model.conv2.weight
    weight.grad = torch.rand_like(weight)
    inactive = (~before["conv2.weight"]).flatten().nonzero().squeeze(1)
    favourites = inactive[torch.randperm(inactive.numel())[:10]]
    weight.grad.view(-1)[favourites] = 100.0 + torch.arange(10.0)  # the largest gradients sit on inactive weights
    model.fc.weight.grad = torch.rand_like(model.fc.weight)
    active = before["conv2.weight"].flatten().nonzero().squeeze(1)
    weight.grad.view(-1)[active] = 0.0  # so the weights just removed are not regrown
    with torch.no_grad():
        weight.view(-1)[active] = torch.linspace(1, 2, active.numel())[torch.randperm(active.numel())]
    smallest = active[weight.view(-1)[active].abs().argsort()[:math.ceil(0.5 * active.numel())]]
    updater = MaskUpdater(masked, config, total_steps=10)
    updater.update(0.5, None, 0)
    after = masked.masks
    assert masked.counts() == counts
    assert "conv1.weight" in updater.dense_layers and torch.equal(after["conv1.weight"], before["conv1.weight"])
    assert after["conv2.weight"].view(-1)[favourites].all()
    grown = after["conv2.weight"] & ~before["conv2.weight"]
    assert int(grown.sum()) == math.ceil(0.5 * counts["conv2.weight"])
    assert torch.all(weight[grown] == 0)  # regrown weights start at zero
    survivors = active[~torch.isin(active, smallest)]
    assert after["conv2.weight"].view(-1)[survivors].all()
    assert not torch.equal(after["conv2.weight"], before["conv2.weight"])


def test_random_growth_keeps_counts():
    torch.manual_seed(1)
    model = SmallNet()
    config = SparseConfig(density=0.3, growth="random")
    masked = MaskedWeights(model, initial_masks(model, config, seed=1))
    counts = masked.counts()
    MaskUpdater(masked, config, total_steps=10).update(0.5, None, 7)
    assert masked.counts() == counts


@pytest.mark.parametrize("stale", [False, True])
def test_masked_weights_stay_zero_through_sgd_with_momentum(stale):
    torch.manual_seed(2)
    model = SmallNet()
    config = SparseConfig(density=0.2, growth="gradient", update_frequency=3, stale_momentum=stale)
    masked = MaskedWeights(model, initial_masks(model, config, seed=2))
    masked.apply()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    updater = MaskUpdater(masked, config, total_steps=9)
    for index in range(9):
        optimizer.zero_grad()
        model(torch.randn(4, 1, 6, 6)).logsumexp(1).mean().backward()
        optimizer.step()
        updater.after_step(_step(model, optimizer, index))
        for name, mask in masked.masks.items():
            param = masked.params[name]
            assert torch.all(param[~mask] == 0)
            buffer = optimizer.state[param]["momentum_buffer"]
            assert torch.all(buffer[~mask] == 0) != stale or name == "conv1.weight"
    assert len(updater.updates) == 3 and [u["step"] for u in updater.updates] == [2, 5, 8]


def test_regrown_weights_start_with_zero_momentum():
    torch.manual_seed(3)
    model = SmallNet()
    config = SparseConfig(density=0.3, growth="gradient", update_frequency=1)
    masked = MaskedWeights(model, initial_masks(model, config, seed=3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 1, 6, 6)).sum().backward()
    optimizer.step()
    before = masked.masks["conv2.weight"].clone()
    MaskUpdater(masked, config, total_steps=1).after_step(_step(model, optimizer, 0))
    grown = masked.masks["conv2.weight"] & ~before
    assert grown.any() and torch.all(optimizer.state[model.conv2.weight]["momentum_buffer"][grown] == 0)


def test_death_rate_decays_unless_the_original_constant_rate_is_asked():
    config = SparseConfig(death_rate=0.5, decay_schedule="cosine")
    assert death_rate_at(config, 0, 100) == pytest.approx(0.5)
    assert death_rate_at(config, 50, 100) == pytest.approx(0.005 + 0.495 / 2)
    assert death_rate_at(config, 100, 100) == pytest.approx(0.005)
    assert death_rate_at(SparseConfig(death_rate=0.5, constant_death_rate=True), 50, 100) == 0.5
    assert death_rate_at(SparseConfig(death_rate=0.5, decay_schedule="linear"), 50, 100) == pytest.approx(0.2525)


def test_updater_uses_the_decayed_rate_and_large_death_steps():
    model = SmallNet()
    config = SparseConfig(density=0.3, update_frequency=2, decay_schedule="cosine", large_death_rate=0.8)
    masked = MaskedWeights(model, initial_masks(model, config, seed=0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    updater = MaskUpdater(masked, config, total_steps=8, phase_starts=[0, 4], large_death_steps=[4])
    for index in range(8):
        model.zero_grad()
        model(torch.randn(2, 1, 6, 6)).sum().backward()
        updater.after_step(_step(model, optimizer, index))
    rates = {u["step"]: u["rate"] for u in updater.updates}
    assert sorted(rates) == [1, 3, 4, 5, 7]
    assert rates[4] == 0.8
    assert rates[1] == pytest.approx(death_rate_at(config, 1, 4)) and rates[5] == pytest.approx(death_rate_at(config, 1, 4))


@pytest.mark.parametrize("field, value, message", [
    ("sparse_init", "GMP", "unknown --sparse-init 'GMP'"),
    ("growth", "momentum", "--growth momentum is not implemented"),
    ("growth", "cosine", "unknown --growth 'cosine'"),
    ("death", "Taylor_FO", "--death Taylor_FO is not implemented"),
    ("redistribution", "momentum", "--redistribution momentum is not implemented"),
    ("redistribution", "foo", "unknown --redistribution 'foo'"),
    ("density", 0.0, r"--density 0.0 is outside \(0, 1\]"),
    ("density", 1.5, r"--density 1.5 is outside \(0, 1\]"),
    ("death_rate", 1.0, r"--death-rate 1.0 is outside \[0, 1\)"),
])
def test_bad_sparse_flags_are_one_line_errors(field, value, message):
    config = SparseConfig(**{field: value})
    with pytest.raises(UserError, match=message) as error:
        config.validate()
    assert "\n" not in str(error.value)


def test_wide_resnet_by_name():
    model = build_model("wrn-16-2", 10)
    names = sparse_weight_names(model)
    assert "block1.0.shortcut.weight" in names and "fc.weight" in names and "block2.0.shortcut.weight" in names
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in build_model("wrn-28-10", 10).parameters()) == 36_479_194
    with pytest.raises(UserError, match="depth 6n\\+4"):
        build_model("wrn-27-10", 10)


@pytest.mark.parametrize("arch", sorted(__import__("lotterypools.models", fromlist=["x"]).CIFAR_ARCHITECTURES) + ["wrn-10-1"])
def test_every_registry_model_gets_exact_masks_and_updates(arch):
    if arch == "wrn-28-10":
        arch = "wrn-16-1"  # the same code path, a thousand times fewer weights
    torch.manual_seed(0)
    model = build_model(arch, 10, 1, (0.5,), (0.5,), 28)
    config = SparseConfig(density=0.1, sparse_init="ERK", growth="gradient")
    masked = MaskedWeights(model, initial_masks(model, config, seed=0))
    masked.apply()
    total = sum(m.numel() for m in masked.masks.values())
    assert sum(masked.counts().values()) == round(0.1 * total)
    model(torch.randn(2, 1, 28, 28)).logsumexp(1).sum().backward()
    counts = masked.counts()
    MaskUpdater(masked, config, total_steps=1).update(0.5, None, 0)
    assert masked.counts() == counts
