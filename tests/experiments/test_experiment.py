"""The experiment command: one spec runs IMP, pool methods, the ensemble reference and the report over seeds."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, run_script, script_env, write_mnist_like
from lotterypools.cli.commands.experiment import main
from lotterypools.analysis.statistics import gain_over_densities, paired_gain, sampling_error

COMPARED = ("method", "target_round", "density", "val_acc", "test_acc", "lt_val_acc", "lt_test_acc", "chosen_rounds",
            "alphas", "seed")
IMP_FLAGS = ["--prune_type", "rewind_lt", "--rewind_epoch", "1", "--pruning_times", "2", "--epochs", "2",
             "--decreasing_lr", "1", "--batch_size", "32", "--device", "cpu", "--no_download"]
POOL_FLAGS = ["--search_num", "2", "--bn_batches", "2", "--device", "cpu", "--interpolate_method", "Lottery_pools",
              "--interpolation_value_list", "0.5"]


def tiny_spec(folder: Path, data: Path, seeds: str = "[3, 4]", extra: str = "", imp_extra: str = "") -> Path:
    text = f"""
[experiment]
name = "tiny"
output = "{folder / 'out'}"
seeds = {seeds}

[data]
dataset = "fashionmnist"
data = "{data}"

[imp]
arch = "conv2"
prune_type = "rewind_lt"
rewind_epoch = 1
pruning_times = 2
epochs = 2
decreasing_lr = "1"
batch_size = 32
device = "cpu"
no_download = true
{imp_extra}
[pools]
search_num = 2
bn_batches = 2
device = "cpu"

[[pools.methods]]
interpolate_method = "Lottery_pools"
interpolation_value_list = [0.5]

[ensemble]
k = 1
{extra}"""
    path = folder / "spec.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SMS_TABLES = """
[sms]
epochs = 1
decreasing_lr = "1"
pruning_times = 2
candidates = 2
bn_batches = 2
batch_size = 32
device = "cpu"
no_download = true

[[sms.variants]]
label = "uniform"

[[sms.variants]]
label = "imp_2x"
imp_budget = true
seeds = [4]
"""


def records(folder: Path) -> list[dict]:
    data = json.loads((folder / "pools_results.json").read_text())
    return sorted(({k: r.get(k) for k in COMPARED} for r in data["records"]),
                  key=lambda r: (r["method"], r["target_round"]))


def run_experiment(spec: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), str(spec), *args], cwd=REPO,
                          capture_output=True, text=True, env=script_env(), timeout=600)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("experiment_data")
    write_mnist_like(data / "fashionmnist", train=5096, test=64)
    return data


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_data) -> Path:
    """An uninterrupted two-seed experiment, two jobs at once: its spec's folder."""
    folder = tmp_path_factory.mktemp("experiment")
    result = run_experiment(tiny_spec(folder, tiny_data, extra=SMS_TABLES), "--jobs", "2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return folder


@pytest.mark.slow
def test_the_experiment_gives_the_records_of_the_commands_it_replaces(finished, tiny_data, tmp_path):
    seed = "4"
    imp = tmp_path / "imp"
    common = ["--data", str(tiny_data), "--dataset", "fashionmnist", "--arch", "conv2", "--seed", seed]
    assert run_script("main_imp.py", *common, *IMP_FLAGS, "--save_dir", str(imp)).returncode == 0
    result = run_script("Lottery_pools.py", *common, *POOL_FLAGS, "--inference", "--checkpoint", str(imp),
                        "--save_dir", str(tmp_path / "pools"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert records(finished / "out" / "pools" / "main" / f"seed{seed}") == records(tmp_path / "pools")

    summary = json.loads((finished / "out" / "report" / "main" / "aggregate.json").read_text())
    assert summary["seeds"] == [3, 4]
    gains = summary["gain_over_ticket"]["Lottery_pools_average"]
    assert all(cell["ci_low"] <= cell["mean"] <= cell["ci_high"] and cell["n"] == 2 for cell in gains)
    ensemble = {c["round"]: c for c in summary["test_acc"]["imp_ensemble"]}
    for seed_index, seed_value in enumerate(summary["seeds"]):
        own = json.loads((finished / "out" / "ensemble" / f"seed{seed_value}" / "ensemble_results.json").read_text())
        for record in own["records"]:
            assert ensemble[record["target_round"]]["values"][seed_index] == record["ensemble"]["accuracy"]
    report = finished / "out" / "report" / "main"
    assert "IMP output ensemble (2 tickets, 2× inference)" in (report / "table.md").read_text()
    assert "\\begin{tabular}" in (report / "table.tex").read_text()
    assert "95% CI" in (report / "gain.md").read_text()
    assert (report / "gain_vs_density.png").stat().st_size > 10_000

    # the SMS soups join the table at the IMP density they reach, each seed's value its own summary's
    sms = {c["round"]: c for c in summary["test_acc"]["sms_uniform"]}
    for seed_index, seed_value in enumerate(summary["seeds"]):
        own = json.loads((finished / "out" / "sms" / "uniform" / f"seed{seed_value}" / "summary.json").read_text())
        assert sms[1]["values"][seed_index] == own[1]["test_acc"]
    assert "SMS (uniform soup of 2)" in (report / "table.md").read_text()
    assert [c["n"] for c in summary["test_acc"]["sms_imp_2x"]] == [1]  # a variant on one seed only
    from lotterypools.experiments.report import nonzero_weights

    cost = {int(row["round"]): row for row in csv.DictReader((report / "cost.csv").open())}
    weights = nonzero_weights(finished / "out" / "imp" / "seed3")
    assert weights[1] < weights[0]
    ensemble = "IMP output ensemble (2 tickets, 2× inference)"
    assert (cost[1]["ticket (IMP): epochs"], cost[1]["ticket (IMP): weights"]) == ("3", str(weights[1]))
    assert (cost[1][f"{ensemble}: epochs"], cost[1][f"{ensemble}: weights"]) == ("3", str(weights[0] + weights[1]))
    # the dense ticket's pool search merges round 1, which IMP trains to epoch 3 (2 dense + 1 after rewinding)
    assert cost[0]["ticket (IMP): epochs"] == "2" and cost[0]["Lottery Pools (average): epochs"] == "3"
    assert "Lottery Pools (average): weights" not in cost[1]  # a pool method holds its ticket's weights
    # dense 2 epochs, then one phase of 2 candidates (or one network 2x) x 1 epoch
    assert cost[1]["SMS (uniform soup of 2): epochs"] == "4"
    assert cost[1]["IMP without rewinding, 2× retraining per phase: epochs"] == "4"
    assert "SMS (uniform soup of 2): epochs" in (report / "cost.md").read_text()

    # the budget comparison: only at the round the soups reach, the rows, each with its cost
    budget = list(csv.DictReader((report / "budget.csv").open()))
    assert {row["round"] for row in budget} == {"1"}
    rows = {row["method"]: row for row in budget}
    assert list(rows) == ["ticket", "Lottery_pools_average", "imp_ensemble", "sms_imp_2x", "sms_uniform"]
    assert float(rows["sms_uniform"]["mean"]) == pytest.approx(sms[1]["mean"])
    gain = next(c for c in summary["gain_over_ticket"]["sms_uniform"] if c["round"] == 1)
    assert float(rows["sms_uniform"]["ci_low"]) == pytest.approx(gain["ci_low"])
    assert (rows["imp_ensemble"]["epochs"], rows["imp_ensemble"]["weights"]) == ("3", str(weights[0] + weights[1]))
    assert rows["sms_imp_2x"]["n"] == "1" and "(1 of 2 seeds)" in (report / "budget.md").read_text()
    assert (report / "budget.png").stat().st_size > 10_000


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_killed_during_the_second_seed_the_rerun_finishes_without_redoing_work(finished, tiny_data, tmp_path):
    spec = tiny_spec(tmp_path, tiny_data)
    out = tmp_path / "out"
    runner = subprocess.Popen([sys.executable, str(REPO / "experiments" / "run.py"), str(spec), "--jobs", "1"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=script_env())
    deadline = time.monotonic() + 300
    while not (out / "logs" / "imp_seed4.log").exists():
        assert runner.poll() is None and time.monotonic() < deadline, "the second seed never started"
        time.sleep(0.2)
    first_seed = {path.name: path.read_bytes() for path in (out / "imp" / "seed3").glob("*.pth.tar")}
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 30  # the job dies with its runner (parent-death signal), leaving no orphan
    while _processes_mentioning(str(out / "imp" / "seed4")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(str(out / "imp" / "seed4"))

    result = run_experiment(spec, "--jobs", "1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "already finished, skipped: imp_seed3\n" in result.stdout + result.stderr
    assert {path.name: path.read_bytes() for path in (out / "imp" / "seed3").glob("*.pth.tar")} == first_seed
    for seed in (3, 4):
        assert records(out / "pools" / "main" / f"seed{seed}") == \
            records(finished / "out" / "pools" / "main" / f"seed{seed}")


def _copy_finished(finished: Path, tiny_data: Path, folder: Path) -> Path:
    """A copy of the finished experiment's output under ``folder``, with the same spec pointing at it."""
    shutil.copytree(finished / "out", folder / "out")
    return tiny_spec(folder, tiny_data, extra=SMS_TABLES)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_a_changed_imp_setting_of_a_finished_experiment_is_refused_in_one_line_and_changes_nothing(
        finished, tiny_data, tmp_path, capsys):
    spec = _copy_finished(finished, tiny_data, tmp_path)
    spec.write_text(spec.read_text().replace("epochs = 2\n", "epochs = 3\n", 1))  # [imp]'s, the first one
    before = _files(tmp_path / "out")
    with pytest.raises(SystemExit) as stop:
        main([str(spec)])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert "imp_seed3 finished with other settings (--epochs 2 before, 3 now)" in err, err
    assert "new folder" in err and "imp/seed3, pools/main/seed3, ensemble/seed3, sms/uniform/seed3 in" in err, err
    assert "start" not in captured.out and "report" not in captured.out
    assert _files(tmp_path / "out") == before


@pytest.mark.slow
def test_a_changed_command_in_an_older_versions_record_is_refused_too(finished, tiny_data, tmp_path, capsys):
    spec = _copy_finished(finished, tiny_data, tmp_path)
    logs = tmp_path / "out" / "logs"
    done = json.loads((logs / "ensemble_seed4.done.json").read_text())
    (logs / "ensemble_seed4.done.json").unlink()
    old_line = " ".join(done["args"]).replace("--k 1", "--k 2")  # finished_jobs.json: the arguments joined by spaces
    (logs / "finished_jobs.json").write_text(json.dumps({"ensemble_seed4": old_line}))
    with pytest.raises(SystemExit) as stop:
        main([str(spec)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "ensemble_seed4 finished with other settings (--k 2 before, 1 now)" in err, err


@pytest.mark.slow
def test_an_unchanged_rerun_skips_every_job_with_or_without_its_record(finished, tiny_data, tmp_path, capsys):
    spec = _copy_finished(finished, tiny_data, tmp_path)
    logs = tmp_path / "out" / "logs"
    record = json.loads((logs / "imp_seed3.done.json").read_text())
    assert record["module"].endswith("main_imp") and record["args"][-2:] == ["--save_dir", str(finished / "out" /
                                                                                                  "imp" / "seed3")]
    (logs / "imp_seed3.done.json").unlink()  # as an older version left it: finished, without a record
    main([str(spec)])
    out = capsys.readouterr().out
    skipped = next(line for line in out.splitlines() if line.startswith("already finished, skipped: "))
    assert len(skipped.split(": ", 1)[1].split(", ")) == 9 and "imp_seed3" in skipped, out
    assert "start " not in out and "report main" in out


def test_a_job_finished_by_its_record_is_redone_when_its_folder_is_deleted(tmp_path):
    from lotterypools.experiments.jobrecords import JobRecords
    from lotterypools.experiments.plan import Job

    folder = tmp_path / "out" / "pools" / "seed3"
    folder.mkdir(parents=True)
    job = Job("pools_seed3", "some.module", ("--search_num", "2", "--save_dir", str(folder)))
    records = JobRecords(tmp_path / "out" / "logs")
    (tmp_path / "out" / "logs").mkdir()
    assert not records.holds(job)
    records.add(job)
    assert records.holds(job) and records.change(job) is None
    assert records.change(Job(job.name, job.module, ("--search_num", "3", *job.args[2:]))) == "--search_num 2 before, 3 now"
    assert records.change(Job(job.name, job.module, (*job.args, "--resume"))) is None  # added on every rerun
    folder.rmdir()
    assert not records.holds(job)


def test_report_only_without_results_is_refused_in_one_line(tmp_path, capsys):
    spec = tiny_spec(tmp_path, tmp_path / "data")
    with pytest.raises(SystemExit) as stop:
        main([str(spec), "--report_only"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err == f"error: no results yet in {tmp_path / 'out'}: run without --report_only first"
    assert not (tmp_path / "out").exists()


BAD_SPECS = [
    ('[[pools.methods]]\ninterpolate_method = "bogus"\n', "invalid choice: 'bogus'"),
    ('[[pools.methods]]\nsearch_numm = 3\n', "unrecognized arguments: --search_numm"),
    ('[[pools.methods]]\ninterpolate_method = "interpolate_swa"\nseeds = [9]\n', "not in [experiment].seeds"),
    ('[[pools.methods]]\ninterpolate_method = "interpolate_swa"\nsave_dir = "x"\n', "sets save_dir"),
    ('[surprise]\nx = 1\n', "unknown table [surprise]"),
    ('[sms]\nepochs = 1\n[[sms.variants]]\nlabel = "u"\ndense = "x"\n', "sets dense"),
    ('[sms]\nepochs = 1\n[[sms.variants]]\nsoup = "greedy"\n', "has no label"),
    ('[sms]\ncandidates = 0\n[[sms.variants]]\nlabel = "u"\n', "--candidates 0 must be at least 1"),
]


@pytest.mark.parametrize("old, new, fragment", [
    ('dataset = "fashionmnist"', 'datset = "fashionmnist"', "[data] has no key 'datset'"),
    ("seeds = [3, 4]", "seeds = [3, 4]\nseed = [1]", "[experiment] has no key 'seed'"),
    ("k = 1", "kk = 3", "[ensemble] has no key 'kk'"),
    ('arch = "conv2"', 'arch = "conv5"', "unknown architecture 'conv5'"),
    ('dataset = "fashionmnist"', 'dataset = "fashion-mnist"', "unknown data set 'fashion-mnist'"),
], ids=["data_key", "experiment_key", "ensemble_key", "arch", "dataset"])
def test_a_misspelt_key_or_unknown_name_is_refused_before_any_work(old, new, fragment, tmp_path, capsys):
    spec = tiny_spec(tmp_path, tmp_path / "data")
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new, 1))
    with pytest.raises(SystemExit) as stop:
        main([str(spec), "--print_commands"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and fragment in err and str(spec) in err, err


@pytest.mark.parametrize("extra, fragment", BAD_SPECS,
                         ids=["method", "key", "seeds", "reserved", "table", "sms_dense", "sms_label", "sms_value"])
def test_a_malformed_spec_is_refused_in_one_line_before_any_work(extra, fragment, tmp_path, capsys):
    spec = tiny_spec(tmp_path, tmp_path / "data", extra=extra)
    with pytest.raises(SystemExit) as stop:
        main([str(spec)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_a_spec_without_seeds_or_with_bad_toml_is_refused_in_one_line(tmp_path, capsys):
    spec = tiny_spec(tmp_path, tmp_path / "data")
    spec.write_text(spec.read_text().replace("seeds = [3, 4]\n", ""))
    for text, fragment in ((spec.read_text(), "[experiment] has no seeds"), ("[experiment\n", "not valid TOML")):
        spec.write_text(text)
        with pytest.raises(SystemExit):
            main([str(spec)])
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, err


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file where the output folder should go")
    spec = tiny_spec(tmp_path, tmp_path / "data")
    spec.write_text(spec.read_text().replace(str(tmp_path / "out"), str(tmp_path / "blocker" / "out")))
    with pytest.raises(SystemExit) as stop:
        main([str(spec)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "[experiment].output" in err, err


def test_print_commands_lists_every_job_after_its_dependency(tmp_path, capsys):
    main([str(tiny_spec(tmp_path, tmp_path / "data", extra=SMS_TABLES)), "--print_commands"])
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if not line.startswith("#")]
    assert len(commands) == 9  # per seed: IMP, one pool method, the ensemble, SMS uniform; SMS imp_2x on seed 4
    sms = [line for line in commands if "main_sms" in line]
    assert len(sms) == 3 and all("--dense" in line and "0model_SA_best.pth.tar" in line for line in sms)
    assert commands[0].endswith(f"--save_dir {tmp_path / 'out' / 'imp' / 'seed3'}")
    assert "# after imp_seed3" in lines and not (tmp_path / "out").exists()


def test_paired_gain_matches_a_hand_computed_t_interval():
    summary = paired_gain([1.0, 2.0, 3.0])
    # mean 2, sample std 1, t(0.975, 2 dof) = 4.302653 from a t table: half width 4.302653 / sqrt(3) = 2.484138
    assert summary["mean"] == pytest.approx(2.0) and summary["std"] == pytest.approx(1.0)
    assert summary["ci_low"] == pytest.approx(2.0 - 2.484138, abs=1e-5)
    assert summary["ci_high"] == pytest.approx(2.0 + 2.484138, abs=1e-5)
    assert summary["positive"] == 3 and summary["verdict"] == "within noise"
    assert paired_gain([0.5, 0.6, 0.7, 0.55])["verdict"] == "better"
    assert paired_gain([-0.5, -0.6, -0.55, -0.52])["verdict"] == "worse"
    assert paired_gain([0.4])["ci_low"] is None


def test_gain_over_densities_averages_each_seed_first_and_sampling_error_is_binomial():
    summary = gain_over_densities({41: [1.0, 3.0], 42: [0.0, 0.0], 43: [2.0, 2.0]})
    assert summary["values"] == [2.0, 0.0, 2.0] and summary["n"] == 3
    assert sampling_error(90.0, 10_000) == pytest.approx(0.3)  # sqrt(0.9 * 0.1 / 10000) = 0.003
    assert sampling_error(90.0, None) is None


# ---------------------------------------------------------------- FreeTickets EDST in the experiment
ALL_LAYERS = "include_linear = true\n"
EDST_TABLE = """
[edst]
densities = [0.8, 0.5]
seeds = [3]
epochs = 2
epochs-explo = 0
model-num = 2
update-frequency = 1
sparse-init = "ERK"
growth = "gradient"
batch-size = 32
device = "cpu"
no_download = true
"""


def test_edst_plans_one_run_and_one_ensemble_evaluation_per_density_and_seed(tmp_path):
    from lotterypools.cli.commands.experiment import command_parser
    from lotterypools.experiments import plan_jobs
    from lotterypools.experiments.spec import read_spec

    spec = read_spec(tiny_spec(tmp_path, tmp_path / "data", extra=EDST_TABLE, imp_extra=ALL_LAYERS))
    jobs = {job.name: job for job in plan_jobs(spec, command_parser)}
    assert [n for n in jobs if "edst" in n] == ["edst_d0.8_seed3", "edst_d0.8_seed3_ensemble", "edst_d0.5_seed3",
                                                "edst_d0.5_seed3_ensemble"]  # seeds = [3]: none for seed 4
    folder = str(tmp_path / "out" / "edst" / "d0.8" / "seed3")
    train = jobs["edst_d0.8_seed3"]
    assert train.module.endswith("main_edst") and train.args[:11] == (
        "--sparse", "--model", "conv2", "--dataset", "fashionmnist", "--data_dir", str(tmp_path / "data"),
        "--seed", "3", "--density", "0.8")
    assert train.args[-2:] == ("--save_dir", folder) and "--epochs-explo" in train.args and not train.finished()
    evaluate = jobs["edst_d0.8_seed3_ensemble"]
    assert evaluate.after == ("edst_d0.8_seed3",) and evaluate.module.endswith("ensemble_freetickets")
    assert evaluate.args[:4] == ("--mode", "predict", "--tickets_dir", folder)
    assert "--device" in evaluate.args and "--no_download" in evaluate.args and "--update-frequency" not in evaluate.args


BAD_EDST = [
    ("densities = [0.8]\nepochs-explor = 1\n", ALL_LAYERS, "unrecognized arguments: --epochs-explor"),
    ("densities = [0.8]\nmodel = \"conv4\"\n", ALL_LAYERS, "[edst] sets model, which the experiment sets itself"),
    ("densities = [0.8]\ndata_dir = \"x\"\n", ALL_LAYERS, "[edst] sets data_dir"),
    ("epochs = 2\n", ALL_LAYERS, "[edst] has no densities"),
    ("densities = [1.5]\n", ALL_LAYERS, "must be a non-empty list of numbers between 0 and 1"),
    ("densities = [0.8, 0.80000001]\n", ALL_LAYERS, "repeats a density"),
    ("densities = [0.8]\nepochs = 2\nepochs-explo = 2\n", ALL_LAYERS, "--epochs-explo 2 must be at least 0 and below"),
    ("densities = [0.8]\nseeds = [9]\n", ALL_LAYERS, "[edst].seeds has [9], which are not in [experiment].seeds"),
    ("densities = [0.8]\n", "", "[edst] needs include_linear = true in [imp]"),
]


@pytest.mark.parametrize("table, imp_extra, fragment", BAD_EDST, ids=["key", "model", "data_dir", "no_densities",
                         "density_range", "same_folder", "schedule", "seeds", "conv_only_imp"])
def test_a_bad_edst_section_is_refused_in_one_line_before_any_work(table, imp_extra, fragment, tmp_path, capsys):
    spec = tiny_spec(tmp_path, tmp_path / "data", extra="[edst]\n" + table, imp_extra=imp_extra)
    with pytest.raises(SystemExit) as stop:
        main([str(spec)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and fragment in err and str(spec) in err, err
    assert not (tmp_path / "out").exists()


SMS_ONE = '[sms]\nepochs = 1\n{sms}\n[[sms.variants]]\nlabel = "u"\n{variant}'


@pytest.mark.parametrize("imp_extra, sms, variant, fragment", [
    (ALL_LAYERS, "include_linear = false", "", "[sms] sets include_linear = false but [imp] prunes every conv and linear"),
    ("", "include_linear = true", "", "[sms] sets include_linear = true but [imp] prunes only the conv"),
    (ALL_LAYERS, "", "include_linear = false", "[sms.variants[0]] sets include_linear = false"),
], ids=["sms_off", "imp_off", "variant_off"])
def test_sms_pruning_another_scope_than_imp_is_refused_in_one_line(imp_extra, sms, variant, fragment, tmp_path, capsys):
    spec = tiny_spec(tmp_path, tmp_path / "data", extra=SMS_ONE.format(sms=sms, variant=variant), imp_extra=imp_extra)
    with pytest.raises(SystemExit) as stop:
        main([str(spec), "--print_commands"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and fragment in err, err


@pytest.mark.parametrize("imp_extra, sms, expected", [(ALL_LAYERS, "", True), (ALL_LAYERS, "include_linear = true", True),
                                                      ("", "", False)], ids=["inherited", "repeated", "conv_only"])
def test_sms_inherits_imps_include_linear(imp_extra, sms, expected, tmp_path, capsys):
    main([str(tiny_spec(tmp_path, tmp_path / "data", extra=SMS_ONE.format(sms=sms, variant=""), imp_extra=imp_extra)),
          "--print_commands"])
    sms_lines = [line for line in capsys.readouterr().out.splitlines() if "main_sms" in line]
    assert len(sms_lines) == 2 and all(("--include_linear" in line) == expected for line in sms_lines)


def test_print_commands_into_a_closed_pipe_ends_quietly(tmp_path):
    spec = tiny_spec(tmp_path, tmp_path / "data", extra=SMS_TABLES)
    reader, writer = os.pipe()
    os.close(reader)  # the reader went away before the first line, as `| head -3` does after its third
    try:
        result = subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), str(spec), "--print_commands"],
                                cwd=REPO, stdout=writer, stderr=subprocess.PIPE, text=True, env=script_env(), timeout=300)
    finally:
        os.close(writer)
    assert result.stderr == "" and result.returncode == 141, result.stderr


def test_a_broken_pipe_that_is_not_stdout_still_raises(monkeypatch):
    from lotterypools.core.errors import cli_entry

    @cli_entry
    def failing() -> None:
        raise BrokenPipeError("a child process's pipe")

    reader, writer = os.pipe()
    with open(writer, "w") as stdout:  # stdout itself still has its reader
        monkeypatch.setattr(sys, "stdout", stdout)
        with pytest.raises(BrokenPipeError):
            failing()
    os.close(reader)


def _conv4_shapes() -> dict[str, tuple[int, ...]]:
    from lotterypools.data.datasets import freetickets_spec
    from lotterypools.models import build_model
    from lotterypools.training.masks import prunable_names
    from lotterypools.training.sparse import sparse_weight_names

    data = freetickets_spec("fashionmnist")
    model = build_model("conv4", data.num_classes, data.channels, data.mean, data.std, data.image_size)
    names = sparse_weight_names(model)
    assert names == prunable_names(model, include_linear=True)  # FreeTickets masks what IMP --include_linear prunes
    assert names[0] == "features.0.weight" and names[-1] == "fc.weight"  # the first conv and the classifier too
    params = dict(model.named_parameters())
    return {name: tuple(params[name].shape) for name in names}


def test_the_spec_densities_keep_what_imp_keeps_at_rounds_9_18_27_and_three_digits_would_not():
    import math

    import torch

    from helpers import expected_kept
    from lotterypools.config.sparse import SparseConfig
    from lotterypools.experiments.report import DENSITY_TOLERANCE, kept_fraction, matching_round
    from lotterypools.experiments.spec import read_spec
    from lotterypools.training.sparse import initial_masks

    shapes = _conv4_shapes()
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    kept = expected_kept(sum(sizes.values()), 0.2, 27)  # torch's global magnitude prune, round by round
    imp = {k: kept[k] / kept[0] for k in range(28)}
    model = torch.nn.Module()  # stand-in holding conv4's conv and linear weights, for the real mask initialisation
    for index, (name, shape) in enumerate(shapes.items()):
        layer = torch.nn.Conv2d(1, 1, 1) if len(shape) == 4 else torch.nn.Linear(1, 1)
        layer.weight = torch.nn.Parameter(torch.zeros(shape))
        model.add_module(f"l{index}", layer)
    renamed = {f"l{index}.weight": size for index, size in enumerate(sizes.values())}
    spec = read_spec(REPO / "experiments" / "fmnist_conv4_all_layers.toml")
    assert spec.edst is not None and spec.edst.flags["sparse-init"] == "ERK"
    for density, round_index in zip(spec.edst.densities, (9, 18, 27)):
        masks = initial_masks(model, SparseConfig(density=density, sparse_init="ERK"), seed=41)
        fraction = kept_fraction(masks, renamed)
        assert matching_round(fraction, imp) == round_index and abs(density - 0.8 ** round_index) < 1e-6
    three_digits = initial_masks(model, SparseConfig(density=0.069, sparse_init="ERK"), seed=41)
    fraction = kept_fraction(three_digits, renamed)
    assert matching_round(fraction, imp) is None and abs(fraction - imp[12]) > DENSITY_TOLERANCE * imp[12]


def test_kept_fraction_counts_only_imps_prunable_weights():
    import torch

    from lotterypools.experiments.report import kept_fraction

    masks = {"conv.weight": torch.tensor([True, False, False, False]), "fc.weight": torch.tensor([True, True])}
    assert kept_fraction(masks, {"conv.weight": 4, "fc.weight": 2}) == pytest.approx(3 / 6)
    assert kept_fraction(masks, {"conv.weight": 4}) == pytest.approx(1 / 4)  # IMP without include_linear
    assert kept_fraction({}, {"conv.weight": 4}) == 1.0  # an unmasked weight is kept whole


@pytest.fixture(scope="module")
def edst_experiment(tmp_path_factory, tiny_data) -> Path:
    """One seed: IMP over every conv and linear weight, a pool method, the ensemble and EDST at 0.8 (IMP's round 1)
    and 0.5 (no IMP round); its spec's folder."""
    folder = tmp_path_factory.mktemp("edst_experiment")
    result = run_experiment(tiny_spec(folder, tiny_data, seeds="[3]", extra=EDST_TABLE, imp_extra=ALL_LAYERS),
                            "--jobs", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (folder / "output.txt").write_text(result.stdout + result.stderr)
    return folder


@pytest.mark.slow
def test_edst_rows_gains_and_cost_join_the_report_at_the_matching_imp_density(edst_experiment):
    from lotterypools.formats.freetickets import read_ticket
    from lotterypools.experiments.report import held_weights

    out = edst_experiment / "out"
    report = out / "report" / "main"
    summary = json.loads((report / "aggregate.json").read_text())
    own = json.loads((out / "edst" / "d0.8" / "seed3" / "ensemble_results.json").read_text())["predict"]
    ensemble = {c["round"]: c for c in summary["test_acc"]["edst"]}
    assert list(ensemble) == [1] and ensemble[1]["values"] == [own["ensemble"]["accuracy"]]
    members = summary["test_acc"]["edst_members"]
    assert members[0]["round"] == 1 and members[0]["values"] == [own["member_mean"]["accuracy"]["mean"]]
    ticket = next(c for c in summary["test_acc"]["ticket"] if c["round"] == 1)
    gain = summary["gain_over_ticket"]["edst"][0]
    assert gain["round"] == 1 and gain["values"] == [pytest.approx(own["ensemble"]["accuracy"] - ticket["mean"])]
    assert "EDST ensemble (2 tickets, 2× inference)" in (report / "table.md").read_text()
    assert "EDST tickets (mean of 2)" in (report / "gain.md").read_text()

    cost = {int(row["round"]): row for row in csv.DictReader((report / "cost.csv").open())}
    weights = held_weights(*read_ticket(out / "edst" / "d0.8" / "seed3" / "model_0.pth"))
    label = "EDST ensemble (2 tickets, 2× inference)"  # the whole run's 2 epochs; its 2 members' weights
    assert (cost[1][f"{label}: epochs"], cost[1][f"{label}: weights"]) == ("2", str(2 * weights))
    # an EDST ticket holds what the IMP ticket of its round holds, so its weights need no column of their own
    assert "EDST tickets (mean of 2): weights" not in cost[1] and cost[1]["ticket (IMP): weights"] == str(weights)
    assert list(cost[1])[-3:] == ["EDST tickets (mean of 2): epochs", f"{label}: epochs", f"{label}: weights"]
    budget = list(csv.DictReader((report / "budget.csv").open()))
    assert [(row["round"], row["method"], row["weights"]) for row in budget][-2:] == \
        [("1", "edst_members", str(weights)), ("1", "edst", str(2 * weights))]
    cost = (report / "cost.md").read_text()
    assert "EDST --density 0.8, seed 3: its 2 tickets keep 80.0000% of IMP's prunable weights; IMP round 1 keeps" in cost
    assert "EDST --density 0.5, seed 3" in cost and "NOT in the tables" in cost
    runs = json.loads((report / "edst.json").read_text())
    assert [(r["density"], r["round"], r["epochs"], r["members"]) for r in runs] == [(0.8, 1, 2, 2), (0.5, None, 2, 2)]
    assert "no IMP round of the report within" in (edst_experiment / "output.txt").read_text()


@pytest.mark.slow
def test_finished_edst_jobs_are_recognised_by_their_own_files(edst_experiment):
    from lotterypools.cli.commands.experiment import command_parser
    from lotterypools.experiments import plan_jobs
    from lotterypools.experiments.spec import read_spec

    jobs = [job for job in plan_jobs(read_spec(edst_experiment / "spec.toml"), command_parser) if "edst" in job.name]
    assert len(jobs) == 4 and all(job.finished() for job in jobs)  # without logs/<job>.done.json
    (edst_experiment / "out" / "edst" / "d0.5" / "seed3" / "ensemble_results.json").unlink()
    assert [job.name for job in jobs if not job.finished()] == ["edst_d0.5_seed3_ensemble"]


def test_the_all_layers_spec_soups_land_on_imp_rounds_9_18_27_when_pruned_for_real():
    import torch

    from lotterypools.experiments.report import matching_round
    from lotterypools.experiments.spec import read_spec
    from lotterypools.models import build_model
    from lotterypools.training.masks import prune_globally

    spec = read_spec(REPO / "experiments" / "fmnist_conv4_all_layers.toml")
    sms = {**spec.sms[0].flags}
    assert sms["include_linear"] is True and sms["pruning_times"] == 4

    def kept_after(rate: float, rounds: int) -> list[int]:
        torch.manual_seed(0)
        # Fashion-MNIST's 28x28 images: 234,640 conv and linear weights (other sizes can miss by one weight at 0.24%)
        model = build_model("conv4", 10, in_channels=1, mean=(0.0,), std=(1.0,), image_size=28)
        counts = []
        for _ in range(rounds):
            prune_globally(model, rate, include_linear=True)
            counts.append(int(sum(buffer.sum() for name, buffer in model.named_buffers() if name.endswith("_mask"))))
        return counts

    imp = kept_after(0.2, 27)
    total = 234_640
    imp_density = {k + 1: count / total for k, count in enumerate(imp)}
    phases = kept_after(sms["rate"], sms["pruning_times"] - 1)
    assert [matching_round(count / total, imp_density) for count in phases] == [9, 18, 27]
