"""FreeTickets as its authors ran it: a verbatim README command reproduces the official run's schedules, data
pipeline and sparse-training defaults; ours is one flag away. The original's formulas are copied here from
the official code (VITA-Group/FreeTickets e5540d1) so that each test compares with them, not with our code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import write_cifar
from lotterypools.cli.commands import main_dst, main_edst
from lotterypools.cli.freetickets import sparse_config, training_plan
from lotterypools.data.datasets import SPECS, augment_batch, freetickets_spec
from lotterypools.core.errors import UserError
from lotterypools.tickets.freetickets import edst_plan, imagenet_plan

README_DST = ("--sparse --model wrn-28-10 --data cifar10 --seed 17 --sparse-init ERK --update-frequency 1000 "
              "--batch-size 128 --death-rate 0.5 --large-death-rate 0.8 --growth gradient --death magnitude "
              "--redistribution none --epochs 250 --density 0.2").split()


def original_edst_epochs(epochs: int, epochs_explo: int, model_num: int) -> tuple[list[float], list[int], list[int]]:
    """The official main_EDST.py loop (minestone_calculation and the end-of-epoch lr setting, 1-based epochs):
    the lr of every epoch, the epochs after which a large death happens, and each epoch's ticket index."""
    individual_epoch = (epochs - epochs_explo) / model_num
    reset_lr_epochs1, epoch_ = [], epochs_explo
    for _ in range(model_num):
        reset_lr_epochs1.append(epoch_)
        epoch_ = epoch_ + individual_epoch
    reset_lr_epochs2 = np.array(reset_lr_epochs1) + individual_epoch / 2
    reset_lr_epochs1.pop(0)
    minestone1, minestone2 = np.ceil(reset_lr_epochs1), np.ceil(reset_lr_epochs2)
    lr, lrs, deaths, tickets = 0.1, [], [], []
    for epoch in range(1, epochs + 1):
        lrs.append(lr)
        tickets.append(int((epoch - epochs_explo - 1) // individual_epoch) if epoch > epochs_explo else -1)
        if epoch == epochs_explo:
            lr = 0.01
        elif epoch in minestone2:
            lr = 0.001
        elif epoch in minestone1:
            deaths.append(epoch)
            lr = 0.01
    return lrs, deaths, tickets


@pytest.mark.parametrize("epochs, explo, num", [(320, 150, 3), (450, 150, 3), (9, 3, 3), (100, 40, 7)])
def test_edst_boundaries_equal_the_original_formula(epochs, explo, num):
    lrs, deaths, tickets = original_edst_epochs(epochs, explo, num)
    plan = edst_plan(epochs, explo, num, lr=0.1)
    assert plan.lrs == pytest.approx(lrs)
    # a large death after 1-based epoch d is the start of the phase at 0-based epoch d
    assert [p.start for p in plan.phases if p.large_death] == deaths
    ours = [-1] * epochs
    for phase in plan.phases:
        if phase.ticket is not None:
            ours[phase.start:phase.end] = [int(phase.ticket[6:-4])] * (phase.end - phase.start)
    assert ours == tickets


def test_edst_320_150_3_has_the_worked_boundaries():
    plan = edst_plan(320, 150, 3, lr=0.1)
    assert [(p.start, p.end) for p in plan.phases] == [(0, 150), (150, 207), (207, 264), (264, 320)]
    assert [plan.lrs[e] for e in (178, 179, 206, 207, 234, 235, 291, 292)] == pytest.approx(
        [0.01, 0.001, 0.001, 0.01, 0.01, 0.001, 0.01, 0.001])


def test_edst_refine_rates_are_the_originals_whatever_lr():
    args = main_edst.build_parser().parse_args("--epochs 450 --epochs-explo 150 --lr 0.05".split())
    plan = training_plan(args, "EDST")
    assert plan.lrs[0] == 0.05 and plan.lrs[149] == 0.05
    assert plan.lrs[150] == 0.01 and plan.lrs[200] == 0.001 and plan.lrs[250] == 0.01 and plan.lrs[449] == 0.001
    relative = training_plan(main_edst.build_parser().parse_args(
        "--epochs 450 --epochs-explo 150 --lr 0.05 --relative-refine-lr".split()), "EDST")
    assert relative.lrs[150] == pytest.approx(0.005) and relative.lrs[200] == pytest.approx(0.0005)


def test_imagenet_warmup_is_the_originals_ramp():
    plan = imagenet_plan(310, 100, 70, 0.1, 5)
    # ImageNet/main.py: lr = args.lr * (epoch + 1) / (args.warmup + 1) for epoch < warmup, then 0.1
    assert plan.lrs[:6] == pytest.approx([0.1 * (e + 1) / 6 for e in range(5)] + [0.1])
    assert plan.lrs[4] == pytest.approx(0.1 * 5 / 6) and plan.lrs[4] < 0.1


def test_verbatim_dst_command_keeps_the_death_rate_at_05_at_every_update():
    from lotterypools.models import build_model
    from lotterypools.training.sparse import MaskedWeights, MaskUpdater, initial_masks
    from lotterypools.training.loop import Step

    def rates(extra: list[str]) -> list[float]:
        config = sparse_config(main_dst.build_parser().parse_args(README_DST + extra), "DST")
        config.update_frequency, config.density = 2, 0.3
        torch.manual_seed(0)
        model = build_model("conv2", 10, 1, (0.5,), (0.5,), 28)
        masked = MaskedWeights(model, initial_masks(model, config, seed=0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        updater = MaskUpdater(masked, config, total_steps=12)
        for step in range(12):
            optimizer.zero_grad()
            model(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
            optimizer.step()
            updater.after_step(Step(model, optimizer, 0, step, None, None, None, None))
        return [u["rate"] for u in updater.updates]

    config = sparse_config(main_dst.build_parser().parse_args(README_DST), "DST")
    assert (config.constant_death_rate, config.stale_momentum, config.reset_dense_layers) == (True, True, True)
    assert rates([]) == [0.5] * 6
    decayed = rates(["--decayed-death-rate"])  # ours: cosine from 0.5 towards 0.005
    assert decayed[0] < 0.5 and decayed == sorted(decayed, reverse=True) and decayed[-1] < 0.1


def test_improved_dst_is_one_flag_away_and_contradictions_are_refused():
    improved = sparse_config(main_dst.build_parser().parse_args(README_DST + ["--improved-dst"]), "DST")
    assert (improved.constant_death_rate, improved.stale_momentum, improved.reset_dense_layers) == (False, False, False)
    one = sparse_config(main_dst.build_parser().parse_args(README_DST + ["--decayed-death-rate"]), "DST")
    assert (one.constant_death_rate, one.stale_momentum, one.reset_dense_layers) == (False, True, True)
    with pytest.raises(UserError, match="--stale-momentum and --improved-dst contradict"):
        sparse_config(main_dst.build_parser().parse_args(README_DST + ["--improved-dst", "--stale-momentum"]), "DST")


def test_freetickets_cifar10_batches_are_reflect_padded_with_the_originals_std():
    spec = freetickets_spec("cifar10")
    assert spec.std == (0.2023, 0.1994, 0.2010) and spec.mean == SPECS["cifar10"].mean
    assert SPECS["cifar10"].std == (0.2470, 0.2435, 0.2616) and SPECS["cifar10"].padding_mode == "constant"
    c100 = freetickets_spec("cifar100")  # the original's CIFAR-100 pipeline zero-pads, with unrounded statistics
    assert c100.padding_mode == "constant" and c100.std == pytest.approx(SPECS["cifar100"].std, abs=1e-4)
    image = torch.rand(1, 3, 32, 32) + 0.5  # no zeros inside, so any zero comes from padding
    batch = image.expand(64, -1, -1, -1)
    out = augment_batch(batch, spec, torch.Generator().manual_seed(0))
    assert (out == 0).sum() == 0  # reflection never brings in zeros
    zero = augment_batch(batch, SPECS["cifar10"], torch.Generator().manual_seed(0))
    assert (zero == 0).sum() > 0
    # each crop is a window of the reflect-padded image (as torchvision's RandomCrop(padding_mode="reflect"))
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4), mode="reflect")[0]
    windows = {(dy, dx): padded[:, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)}
    for crop in out:
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(2)) for w in windows.values())


def test_main_dst_on_cifar10_trains_with_the_originals_normalisation(tmp_path):
    write_cifar(tmp_path / "data", "cifar10", train=5050, test=40)
    main_dst.main(["--data_dir", str(tmp_path / "data"), "--model", "conv2", "--data", "cifar10", "--no_download",
                   "--device", "cpu", "--batch-size", "25", "--epochs", "1", "--sparse", "--sparse-init", "ERK",
                   "--density", "0.3", "--save_dir", str(tmp_path / "dst")])
    ticket = torch.load(tmp_path / "dst" / "model.pth", weights_only=True)
    assert torch.allclose(ticket["state_dict"]["normalize.std"], torch.tensor((0.2023, 0.1994, 0.2010)))


def test_multiplier_extends_dst_with_the_originals_milestones():
    args = main_dst.build_parser().parse_args(README_DST + ["--multiplier", "2"])
    plan = training_plan(args, "DST")
    assert plan.epochs == 500 and plan.phases[0].end == 500
    assert plan.lrs[124] == 0.1 and plan.lrs[125] == pytest.approx(0.01) and plan.lrs[187] == pytest.approx(0.001)
    assert plan.lrs[499] == pytest.approx(0.001)
    with pytest.raises(UserError, match="--multiplier 0 must be at least 1"):
        training_plan(main_dst.build_parser().parse_args(README_DST + ["--multiplier", "0"]), "DST")


# ---------------------------------------------------------------------------------------------- the registry's other models
NEW_MODELS = ["vgg-c", "vgg-d", "vgg-like", "alexnet-s", "alexnet-b", "lenet5", "lenet300-100", "MLPCIFAR10"]


def original_erk(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """sparselearning/core.py's ERK loop (mode 'ERK', erk_power_scale 1), transcribed."""
    dense_layers: set[str] = set()
    while True:
        divisor, rhs, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n_param = np.prod(shape)
            if name in dense_layers:
                rhs -= n_param * (1 - density)
            else:
                rhs += n_param * density
                raw[name] = np.sum(shape) / np.prod(shape)
                divisor += raw[name] * n_param
        epsilon = rhs / divisor
        max_prob = np.max(list(raw.values()))
        if max_prob * epsilon > 1:
            dense_layers.update(n for n, p in raw.items() if p == max_prob)
        else:
            return {n: 1.0 if n in dense_layers else epsilon * raw[n] for n in shapes}


@pytest.mark.parametrize("arch, channels, side, sizes", [
    ("vgg-d", 3, 32, {"classifier.0.weight": (512, 512), "classifier.3.weight": (512, 512), "classifier.6.weight": (10, 512)}),
    ("vgg-c", 3, 32, {"classifier.0.weight": (512, 2048), "features.20.weight": (256, 256, 1, 1)}),
    ("vgg-like", 3, 32, {"classifier.0.weight": (512, 512), "classifier.3.weight": (10, 512)}),
    ("alexnet-s", 3, 32, {"features.0.weight": (96, 3, 11, 11), "classifier.0.weight": (1024, 256)}),
    ("alexnet-b", 3, 32, {"classifier.3.weight": (2048, 2048)}),
    ("lenet5", 1, 28, {"conv1.weight": (20, 1, 5, 5), "conv2.weight": (50, 20, 5, 5), "fc3.weight": (500, 800), "fc4.weight": (10, 500)}),
    ("lenet300-100", 1, 28, {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}),
    ("MLPCIFAR10", 3, 32, {"fc1.weight": (1024, 3072), "fc2.weight": (512, 1024), "fc3.weight": (10, 512)}),
])
def test_new_models_have_the_originals_shapes_and_erk_counts(arch, channels, side, sizes):
    from lotterypools.models import build_model
    from lotterypools.training.sparse import MaskedWeights, MaskUpdater, SparseConfig, exact_counts, initial_masks, sparse_weight_names
    from lotterypools.training.loop import Step

    torch.manual_seed(0)
    model = build_model(arch, 10, channels, (0.5,) * channels, (0.5,) * channels, side)
    params = dict(model.named_parameters())
    assert {name: tuple(params[name].shape) for name in sizes} == sizes
    shapes = {name: tuple(params[name].shape) for name in sparse_weight_names(model)}
    for density in (0.2, 0.05):
        reference = original_erk(shapes, density)
        config = SparseConfig(density=density, sparse_init="ERK", growth="gradient", update_frequency=1)
        counts = {n: int(m.sum()) for n, m in initial_masks(model, config, seed=0).items()}
        total = sum(math.prod(s) for s in shapes.values())
        assert sum(counts.values()) == round(density * total)
        assert counts == exact_counts(shapes, reference, density)
        assert all(abs(counts[n] - reference[n] * math.prod(shapes[n])) < 1 + 1e-6 for n in shapes)
    # one training step with a mask update: counts kept, masked weights zero
    masked = MaskedWeights(model, initial_masks(model, config, seed=0))
    masked.apply()
    before = masked.counts()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.rand(4, channels, side, side), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    updater = MaskUpdater(masked, config, total_steps=1)
    updater.after_step(Step(model, optimizer, 0, 0, images, labels, None, loss))
    assert len(updater.updates) == 1 and masked.counts() == before
    assert all(torch.all(masked.params[n][~m] == 0) for n, m in masked.masks.items())
    assert any(not torch.equal(m, initial_masks(model, config, seed=0)[n]) for n, m in masked.masks.items())


# ---------------------------------------------------------------------------------------------- ensemble statistics
def one_hot_members() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Three members on 4 images (2 classes): m0 and m1 always agree; m2 differs from them on images 2 and 3."""
    predicted = {"m0": [0, 1, 0, 1], "m1": [0, 1, 0, 1], "m2": [0, 1, 1, 0]}
    labels = torch.tensor([0, 1, 0, 1])
    members = {n: torch.nn.functional.one_hot(torch.tensor(p), 2).double() * 0.8 + 0.1 for n, p in predicted.items()}
    return members, labels


def test_ensemble_statistics_default_to_the_originals_against_a_hand_computation():
    from lotterypools.analysis.freetickets import disagreement_summary, predict_summary

    members, labels = one_hot_members()
    # member accuracies 100, 100, 50 (%): mean 83.33; population std sqrt((16.67^2 * 2 + 33.33^2) / 3) = 23.57,
    # sample std sqrt((16.67^2 * 2 + 33.33^2) / 2) = 28.87
    original = predict_summary(members, labels)
    assert original["statistics"] == "original"
    assert original["member_mean"]["accuracy"]["mean"] == pytest.approx(250 / 3)
    assert original["member_mean"]["accuracy"]["std"] == pytest.approx(math.sqrt(((50 / 3) ** 2 * 2 + (100 / 3) ** 2) / 3))
    assert original["member_mean"]["accuracy"]["std"] == pytest.approx(np.std([100, 100, 50]))
    ours = predict_summary(members, labels, "ours")
    assert ours["member_mean"]["accuracy"]["std"] == pytest.approx(math.sqrt(((50 / 3) ** 2 * 2 + (100 / 3) ** 2) / 2))
    # disagreement: pairs (m0,m1) 0, (m0,m2) 0.5, (m1,m2) 0.5. The original averages the non-zero entries: 0.5
    dis = disagreement_summary(members)
    assert dis["mean"] == pytest.approx(0.5) and dis["original_printout"] == pytest.approx(0.501)
    assert disagreement_summary(members, "ours")["mean"] == pytest.approx(1 / 3)
    assert dis["mean_over_all_pairs"] == pytest.approx(1 / 3)


def test_original_statistics_do_not_floor_probabilities_at_1e_12():
    from lotterypools.analysis.freetickets import kl_summary, predict_summary

    labels = torch.tensor([0, 0])
    confident = torch.tensor([[1e-20, 1.0], [0.5, 0.5]], dtype=torch.float64)
    members = {"a": confident, "b": torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)}
    original = predict_summary(members, labels)["members"]["a"]["nll"]
    assert original == pytest.approx((-math.log(1e-20) - math.log(0.5)) / 2)  # the original's log p, unfloored
    assert predict_summary(members, labels, "ours")["members"]["a"]["nll"] == pytest.approx((-math.log(1e-12) - math.log(0.5)) / 2)
    # KL(b || a) on image 0: 0.5 log(0.5 / 1e-20) + 0.5 log(0.5 / 1); image 1: 0
    kl = kl_summary(members)["matrix"][1][0]
    assert kl == pytest.approx((0.5 * math.log(0.5 / 1e-20) + 0.5 * math.log(0.5)) / 2)
    assert kl_summary(members, "ours")["matrix"][1][0] < kl
