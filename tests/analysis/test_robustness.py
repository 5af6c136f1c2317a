"""Calibration metrics, disagreement, output ensembles, corrupted sets, the pairwise-average matrix, prune-after."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lotterypools.analysis.ensembles import (check_same_architecture, ensemble_study, output_ensemble, pair_average,
                                   pairwise_average_matrix, probabilities)
from lotterypools.analysis.calibration import (brier_score, disagreement, disagreement_matrix, expected_calibration_error,
                                      negative_log_likelihood, prediction_metrics)
from lotterypools.formats.original import ticket_files
from lotterypools.data.corruptions import CORRUPTIONS, CorruptedSet, check_severities, corrupt, write_corrupted_set
from lotterypools.data.datasets import BatchSource
from lotterypools.core.errors import UserError
from lotterypools.pools.run import PoolSettings, evaluate_tickets, run_pool_method
from lotterypools.training.masks import density
from lotterypools.models import build_model
from lotterypools.analysis.ood import OODBenchmark
from lotterypools.cli.pools import build_evaluator
from lotterypools.pools.store import read_ticket
from helpers import POOL_SPEC as SPEC, make_store, tiny_data, tiny_model

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- calibration
def test_nll_brier_ece_against_hand_computed_values():
    probs = torch.tensor([[0.9, 0.1], [0.62, 0.38], [0.28, 0.72], [0.2, 0.8]])
    labels = torch.tensor([0, 1, 1, 1])
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        -(math.log(0.9) + math.log(0.38) + math.log(0.72) + math.log(0.8)) / 4)
    assert brier_score(probs, labels) == pytest.approx((0.02 + 2 * 0.62 ** 2 + 2 * 0.28 ** 2 + 0.08) / 4)
    # confidences 0.9, 0.62, 0.72, 0.8 fall in four different bins: ECE = mean |correct - confidence|
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.62 + 0.28 + 0.2) / 4)
    assert prediction_metrics(probs, labels)["accuracy"] == pytest.approx(75.0)


def test_ece_compares_accuracy_and_confidence_per_bin_not_per_example():
    probs = torch.tensor([[0.81, 0.19], [0.85, 0.15]])  # both in the bin (0.8, 0.867]
    labels = torch.tensor([0, 1])  # one right, one wrong: bin accuracy 0.5, mean confidence 0.83
    assert expected_calibration_error(probs, labels) == pytest.approx(0.33)
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.33)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, torch.tensor([0, 1])) == 0.0


def test_disagreement_zero_with_itself_symmetric_and_counted():
    a, b, c = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 0]), torch.tensor([3, 1, 2, 0])
    assert disagreement(a, a) == 0.0
    assert disagreement(a, b) == 0.5
    matrix = disagreement_matrix([a, b, c])
    assert all(matrix[i][i] == 0.0 for i in range(3))
    assert all(matrix[i][j] == matrix[j][i] for i in range(3) for j in range(3))
    assert matrix[1][2] == 0.5 and matrix[0][2] == 0.5


# ----------------------------------------------------------------------------- output ensembles
def test_ensemble_of_one_network_equals_the_network_and_of_two_their_mean():
    model = tiny_model()
    test = BatchSource(tiny_data().test, 16, CPU)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    second = {k: v + 0.1 if v.is_floating_point() else v for k, v in first.items()}
    alone, labels = probabilities(model, first, test, CPU)
    one, one_labels = output_ensemble(model, {"a": first}, test, CPU)
    assert torch.equal(one, alone) and torch.equal(one_labels, labels)
    other, _ = probabilities(model, second, test, CPU)
    both, _ = output_ensemble(model, {"a": first, "b": second}, test, CPU)
    assert torch.allclose(both, (alone + other) / 2)
    assert not torch.allclose(both, alone)


def test_ensemble_over_different_architectures_is_refused():
    conv2 = tiny_model().state_dict()
    conv4 = build_model("conv4", SPEC.num_classes, SPEC.channels, SPEC.mean, SPEC.std, SPEC.image_size).state_dict()
    with pytest.raises(UserError, match="different architectures"):
        check_same_architecture({"ticket 1": conv2, "other 1": conv4})


def test_ensemble_study_members_are_the_target_and_its_nearest_tickets(tmp_path):
    store = make_store(tmp_path, 4)
    records = ensemble_study(store, tiny_model(), BatchSource(tiny_data().test, 16, CPU), CPU, k=2, targets=[0, 2])
    assert [r["members"] for r in records] == [[0, 1, 2], [2, 1, 3]]
    assert all(set(r) >= {"ticket", "ensemble"} and "pooled" not in r for r in records)


# ----------------------------------------------------------------------------- corrupted sets
def write_official_layout(folder, per_severity=4, shape=(6, 6, 3), names=("gaussian_noise", "fog")):
    """Image i of severity s is filled with 10 * s + i, as a CIFAR-10-C folder would hold it."""
    labels = np.arange(per_severity) % 3
    for name in names:
        values = np.concatenate([10 * s + np.arange(per_severity) for s in range(1, 6)]).astype(np.uint8)
        np.save(folder / f"{name}.npy", np.broadcast_to(values.reshape(-1, *[1] * len(shape)), (len(values), *shape)))
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    return labels


@pytest.mark.parametrize("shape", [(6, 6, 3), (6, 6)])
def test_corrupted_set_reader_gives_the_right_severity_slices(tmp_path, shape):
    labels = write_official_layout(tmp_path, shape=shape)
    data = CorruptedSet(tmp_path)
    assert data.names == ["fog", "gaussian_noise"] and data.per_severity == 4
    for severity in range(1, 6):
        split = data.split("fog", severity)
        assert split.images.shape == (4, 3 if len(shape) == 3 else 1, 6, 6)
        assert [int(split.images[i].unique()) for i in range(4)] == [10 * severity + i for i in range(4)]
        assert split.labels.tolist() == labels.tolist()


def test_corrupted_set_bad_input_is_a_one_line_error(tmp_path):
    write_official_layout(tmp_path)
    data = CorruptedSet(tmp_path)
    with pytest.raises(UserError, match="unknown corruption.*snow.*choose from fog, gaussian_noise"):
        data.select(["snow"])
    for bad in ([0], [6], []):
        with pytest.raises(UserError, match="severities"):
            check_severities(bad)
    with pytest.raises(UserError, match=r"are \(3, 6, 6\) \(C, H, W\) but the model takes \(1, 6, 6\)"):
        data.check_shape(1, 6)
    np.save(tmp_path / "fog.npy", np.zeros((19, 6, 6, 3), np.uint8))
    with pytest.raises(UserError, match="holds 19 images.*expected 20"):
        data.select(None)
    (tmp_path / "fog.npy").unlink()
    with pytest.raises(UserError, match="fog.npy is missing"):
        data.split("fog", 1)
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(UserError, match="no labels.npy"):
        CorruptedSet(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        CorruptedSet(tmp_path / "nowhere")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_works_on_grey_and_colour_images(name, channels):
    images = torch.rand(3, channels, 16, 16, generator=torch.Generator().manual_seed(0))
    outputs = [corrupt(images, name, s, torch.Generator().manual_seed(1)) for s in (1, 5)]
    for output in outputs:
        assert output.shape == images.shape and output.min() >= 0 and output.max() <= 1
    assert (outputs[1] - images).abs().mean() > 0.01
    assert (outputs[1] - images).abs().mean() >= (outputs[0] - images).abs().mean() - 1e-3


def test_written_corrupted_set_reads_back_in_the_official_layout(tmp_path):
    test = tiny_data().test
    write_corrupted_set(test, tmp_path, ["contrast", "gaussian_noise"], seed=0, device=CPU, log=lambda m: None)
    data = CorruptedSet(tmp_path)
    assert data.names == ["contrast", "gaussian_noise"] and data.per_severity == len(test)
    assert np.load(tmp_path / "contrast.npy").shape == (5 * len(test), 8, 8, 1)
    for severity in (1, 5):
        split = data.split("contrast", severity)
        assert torch.equal(split.labels, test.labels)
        expected = corrupt(test.images.float() / 255, "contrast", severity, torch.Generator())
        assert torch.allclose(split.images.float(), (expected * 255).round(), atol=1)


# ----------------------------------------------------------------------------- pool runs with OOD and prune-after
@pytest.fixture()
def tiny_pool(tmp_path):
    store = make_store(tmp_path / "tickets", 4)
    evaluator = build_evaluator(tiny_model(), tiny_data(), CPU, batch_size=16, bn_batches=2, seed=0)
    return store, evaluator, evaluate_tickets(store, evaluator)


def test_pairwise_matrix_diagonal_is_each_ticket_after_bn_recomputation(tiny_pool):
    store, evaluator, _ = tiny_pool
    result = pairwise_average_matrix(store, evaluator, progress=False)
    matrix = result["test_acc"]
    assert result["rounds"] == [0, 1, 2, 3]
    for index, ticket in enumerate(store.tickets):
        evaluator.load(store.load(ticket.round)[0])
        evaluator.recalibrate()
        assert matrix[index][index] == evaluator.test().accuracy
        assert all(matrix[index][j] == matrix[j][index] for j in range(4))
    names = store.prunable_names()
    for a, b in ((0, 2), (1, 3)):
        average = pair_average(store, a, b, names)
        assert sum(int(average[n].count_nonzero()) for n in names) == store.by_round(b).kept


def test_prune_after_lottery_pools_reaches_the_target_density_and_records_ood(tiny_pool, tmp_path):
    store, evaluator, tickets = tiny_pool
    write_corrupted_set(tiny_data().test, tmp_path / "c", ["fog"], seed=0, device=CPU, log=lambda m: None)
    benchmark = OODBenchmark(CorruptedSet(tmp_path / "c"), ["fog"], [1, 5])
    extra = lambda weights: benchmark.evaluate_weights(evaluator.model, weights, CPU)
    settings = PoolSettings("Lottery_pools", search_num=4, coefficients=(0.3, 0.7), ema_value=0.95, prune_mode="after")
    records = run_pool_method(settings, store, evaluator, tickets, targets=[2, 3], save_pooled=tmp_path / "pooled",
                              log=lambda m: None, extra=extra)
    assert [r["method"] for r in records] == ["Lottery_pools_prune_after"] * 2
    for record in records:
        ticket = read_ticket(ticket_files(tmp_path / "pooled" / record["method"], allow_gaps=True)[[2, 3].index(record["target_round"])].path)
        assert density(ticket[1]) == pytest.approx(store.by_round(record["target_round"]).density)
        names = store.prunable_names()
        assert sum(int(ticket[0][n].count_nonzero()) for n in names) == store.by_round(record["target_round"]).kept
        assert set(record["ood"]["fog"]) == {"1", "5", "mean"}
        assert record["ood_acc"] == pytest.approx((record["ood"]["fog"]["1"] + record["ood"]["fog"]["5"]) / 2)
    tickets = evaluate_tickets(store, evaluator, extra=extra)
    assert all(0.0 <= r["ood_acc"] <= 100.0 for r in tickets.values())
