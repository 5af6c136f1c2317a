"""The CIFAR scripts as a user chains them, on a real main_imp.py run over tiny Fashion-MNIST idx files:
Lottery_pools.py (with OOD data and saved pooled tickets), make_corrupted.py and every analyze_tickets.py command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import load_script_main
from lotterypools.formats.original import ticket_files
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


@pytest.mark.parametrize("json_name, png_name", [
    ("ood_results.json", "ood_accuracy.png"),
    ("ensemble_results.json", "ensemble.png"),
    ("disagreement.json", "disagreement.png"),
    ("pairwise_average.json", "pairwise_average.png"),
])
def test_each_analysis_writes_its_json_and_plot(chained, json_name, png_name):
    assert json.loads((chained / "analysis" / json_name).read_text())
    assert (chained / "analysis" / png_name).stat().st_size > 0
