"""The CIFAR scripts as a user chains them, on a real main_imp.py run over tiny Fashion-MNIST idx files:
Lottery_pools.py (with OOD data and saved pooled tickets), make_corrupted.py and every analyze_tickets.py command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import load_script_main
from lotterypools.data.datasets import load_dataset
from lotterypools.formats.original import ticket_files
from lotterypools.models import build_model
from lotterypools.training.masks import density
from lotterypools.pools.store import read_ticket

pytestmark = pytest.mark.slow  # every test here runs the scripts end to end


@pytest.fixture(scope="module")
def chained(cli_run, tmp_path_factory):
    """Run the scripts once in order; return the folders they wrote."""
    data = cli_run.parent / "data"
    out = tmp_path_factory.mktemp("chain")
    common = ["--data", str(data), "--dataset", "fashionmnist", "--device", "cpu", "--no_download"]
    load_script_main("make_corrupted.py")([*common, "--out", str(out / "fmnist-c"), "--limit", "40",
                                          "--corruptions", "gaussian_noise", "contrast"])
    load_script_main("Lottery_pools.py")([*common, "--arch", "conv2", "--checkpoint", str(cli_run), "--save_dir",
                                         str(out / "pools"), "--search_num", "2", "--interpolation_value_list", "0.3",
                                         "0.7", "--bn_batches", "2", "--ood_data", str(out / "fmnist-c"),
                                         "--severities", "1", "5", "--save_pooled", "--inference"])
    analyze = load_script_main("analyze_tickets.py")
    tickets = [*common, "--arch", "conv2", "--checkpoint", str(cli_run), "--save_dir", str(out / "analysis")]
    analyze(["ood", *tickets, "--pooled", str(out / "pools" / "Lottery_pools"), "--ood_data", str(out / "fmnist-c"),
             "--severities", "1", "3"])
    analyze(["ensemble", *tickets, "--pooled", str(out / "pools" / "Lottery_pools"), "--k", "1"])
    analyze(["disagreement", *tickets])
    analyze(["pairwise", *tickets, "--bn_batches", "2"])
    return out


def test_make_corrupted_writes_the_cifar_c_layout(chained):
    folder = chained / "fmnist-c"
    labels = np.load(folder / "labels.npy")
    for name in ("gaussian_noise", "contrast"):
        images = np.load(folder / f"{name}.npy")
        assert images.shape == (5 * 40, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (200,) and np.array_equal(labels[:40], labels[160:])


def test_lottery_pools_script_records_ood_accuracy_and_saves_exact_density_tickets(chained, cli_run):
    records = json.loads((chained / "pools" / "pools_results.json").read_text())["records"]
    assert {r["method"] for r in records} == {"ticket", "Lottery_pools"}
    assert all(0.0 <= r["ood_acc"] <= 100.0 for r in records)
    originals = {f.round: density(read_ticket(f.path)[1]) for f in ticket_files(cli_run)}
    for saved in ticket_files(chained / "pools" / "Lottery_pools"):
        assert density(read_ticket(saved.path)[1]) == pytest.approx(originals[saved.round], abs=1e-12)
    for name in ("pools_results.csv", "pools_accuracy.png"):
        assert (chained / "pools" / name).stat().st_size > 0


@pytest.fixture(scope="module")
def recomputed(cli_run):
    """Each ticket's softmax on the test split, computed here (float64), the labels, and the tickets' densities."""
    data = load_dataset("fashionmnist", cli_run.parent / "data", download=False)
    spec = data.spec
    model = build_model("conv2", spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size).eval()
    images = data.test.images.float() / 255
    probs, densities = {}, {}
    for ticket in ticket_files(cli_run):
        weights, masks = read_ticket(ticket.path)
        model.load_state_dict(weights)
        with torch.no_grad():
            probs[ticket.round] = model(images).double().softmax(1)
        densities[ticket.round] = density(masks)
    return probs, data.test.labels, densities


def accuracy_of(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((probs.argmax(1) == labels).double().mean())


def is_percentage_of(value: float, count: int) -> bool:
    """``value`` is 100 * k / count for a whole k: an accuracy over ``count`` images."""
    return 0.0 <= value <= 100.0 and abs(value * count / 100 - round(value * count / 100)) < 1e-6


def check_ood(result: dict, recomputed, chained) -> None:
    _, _, densities = recomputed
    made = sorted(p.stem for p in (chained / "fmnist-c").glob("*.npy") if p.stem != "labels")
    assert sorted(result["corruptions"]) == made and result["severities"] == [1, 3]
    networks = result["networks"]
    assert sorted((n["kind"], n["round"]) for n in networks) == [(k, r) for k in ("pooled", "ticket") for r in (0, 1)]
    for network in networks:
        assert network["density"] == pytest.approx(densities[network["round"]], abs=1e-12)  # pooling keeps density
        means = []
        for corruption in made:
            scores = network["ood"][corruption]
            assert all(is_percentage_of(scores[str(s)], 40) for s in (1, 3))  # --limit 40 images per severity
            assert scores["mean"] == pytest.approx((scores["1"] + scores["3"]) / 2)
            means.append(scores["mean"])
        assert network["ood_acc"] == pytest.approx(sum(means) / len(means))


def check_ensemble(result: dict, recomputed, chained) -> None:
    probs, labels, densities = recomputed
    assert result["k"] == 1 and [r["target_round"] for r in result["records"]] == [0, 1]
    for record in result["records"]:
        target, members = record["target_round"], record["members"]
        assert members[0] == target and sorted(members) == [0, 1]  # the target and its k=1 nearest ticket
        assert record["density"] == pytest.approx(densities[target], abs=1e-12)
        for kind in ("ticket", "ensemble", "pooled"):
            metrics = record[kind]
            assert is_percentage_of(metrics["accuracy"], len(labels)), (kind, metrics)
            assert metrics["nll"] >= 0 and 0 <= metrics["ece"] <= 1 and 0 <= metrics["brier"] <= 2
        assert record["ticket"]["accuracy"] == pytest.approx(accuracy_of(probs[target], labels))
        ensemble = torch.stack([probs[m] for m in members]).mean(0)
        assert record["ensemble"]["accuracy"] == pytest.approx(accuracy_of(ensemble, labels))
        nll = float(-ensemble[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean())
        assert record["ensemble"]["nll"] == pytest.approx(nll, rel=1e-5)
    assert result["records"][0]["ensemble"] == pytest.approx(result["records"][1]["ensemble"])  # same two members


def check_disagreement(result: dict, recomputed, chained) -> None:
    probs, labels, densities = recomputed
    assert result["rounds"] == [0, 1] and [t["round"] for t in result["tickets"]] == [0, 1]
    for ticket in result["tickets"]:
        assert ticket["density"] == pytest.approx(densities[ticket["round"]], abs=1e-12)
        assert ticket["accuracy"] == pytest.approx(accuracy_of(probs[ticket["round"]], labels))
    matrix = result["disagreement"]
    assert matrix[0][0] == matrix[1][1] == 0.0 and matrix[0][1] == matrix[1][0]
    differ = float((probs[0].argmax(1) != probs[1].argmax(1)).double().mean())
    assert matrix[0][1] == pytest.approx(differ)


def check_pairwise(result: dict, recomputed, chained) -> None:
    _, labels, densities = recomputed
    assert result["rounds"] == [0, 1]
    assert result["densities"] == pytest.approx([densities[0], densities[1]], abs=1e-12)
    matrix = result["test_acc"]
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    assert matrix[0][1] == matrix[1][0]  # the average of (a, b) is that of (b, a)
    assert all(is_percentage_of(value, len(labels)) for row in matrix for value in row)


def check_png(path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 300 <= width <= 5000 and 200 <= height <= 5000, image.size
        image.verify()
    with Image.open(path) as image:
        low, high = image.convert("L").getextrema()
        assert low < high  # not a blank canvas


@pytest.mark.parametrize("command, json_name, png_name, check", [
    ("ood", "ood_results.json", "ood_accuracy.png", check_ood),
    ("ensemble", "ensemble_results.json", "ensemble.png", check_ensemble),
    ("disagreement", "disagreement.json", "disagreement.png", check_disagreement),
    ("pairwise", "pairwise_average.json", "pairwise_average.png", check_pairwise),
])
def test_each_analysis_writes_its_json_and_plot(chained, recomputed, command, json_name, png_name, check):
    """The JSON holds valid, mutually consistent numbers (recomputed here where cheap); the PNG is a real image."""
    result = json.loads((chained / "analysis" / json_name).read_text())
    assert result["run"]["command"] == command
    check(result, recomputed, chained)
    check_png(chained / "analysis" / png_name)
