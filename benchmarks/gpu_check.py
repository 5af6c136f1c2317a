r"""The whole GPU measurement in one call: training speed, a full-BN pool trial, an end-to-end run, the sweep's cost.

Runs from a fresh copy of the repository with the machine's own python3 (torch, torchvision; nothing to
install; synthetic data made here) inside about 8 minutes on one GPU, and writes ``gpu_check.md`` (the table,
also printed last), ``gpu_check.json`` (every figure) and ``gpu_check.log`` (the runs' output) into OUT:

    PYTHONPATH=. python3 benchmarks/gpu_check.py OUT            # on the GPU
    PYTHONPATH=. python3 benchmarks/gpu_check.py OUT --smoke    # a few steps on the CPU, same code paths (CI)

Sections, each timed in this process side by side:
1. bf16 matmul rate (the machine's reachable peak, the FLOP floor's unit);
2. training images/s, resnet18 and resnet20s (CIFAR shape, batch 128): the original's way (DataLoader, per-image
   PIL augmentation, fp32) against ours (resident uint8 data, device augmentation) plain, +channels_last, +bf16
   autocast, both, and +torch.compile where it works; achieved TFLOP/s (counted FLOPs of a step) against (1);
3. one full-BN pool trial, resnet18 (BN pass over 45,000 training images, validation on 5,000): the original's
   way (rebuild, deepcopy, DataLoader, update_bn), ours with torch's update_bn (before) and with our BN pass
   (after), ours --bn_batches 8, and ours --stacked_coefficients (11 coefficients in one vmap call, per
   coefficient), its accuracies checked against sequential trials;
4. end to end: two IMP rounds of one epoch on synthetic data, a Lottery Pools run over them, and the same pool
   run under ``torchrun --nproc_per_node 1`` (nccl on a GPU, gloo on the CPU): same records;
5. the projected time of the paper's CIFAR-100 resnet18 sweep (19 tickets, 11 coefficients, all 18 candidates,
   full BN: 3,762 trials) from the measured trial times, and the FLOP floor at the bf16 matmul rate.
A section that fails or does not fit in the time left is reported as such; the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from bench_pool_trial import OriginalTrial, OurTrial, two_tickets  # noqa: E402
from bench_training import measure as measure_training  # noqa: E402
from common import machine_line, model_for, synchronize, synthetic_cifar, timed  # noqa: E402
from lotterypools.core.device import resolve_device  # noqa: E402
from lotterypools.pools.search import interpolate_state, recalibrate_batchnorm  # noqa: E402
from lotterypools.training.masks import prune_to_count  # noqa: E402

SWEEP = {"tickets": 19, "coefficients": 11, "candidates": 18}  # the paper's CIFAR-100 sweep, search over all tickets
SWEEP_TRIALS = SWEEP["tickets"] * SWEEP["candidates"] * SWEEP["coefficients"]
VARIANTS = ["original", "ours", "ours+cl", "ours+amp", "ours+cl+amp", "ours+cl+amp+compile"]
MAX_FILES = 8


class Clock:
    """Seconds left of the run's budget, so late sections are skipped rather than cut off."""

    def __init__(self, budget: float):
        self.start, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def sizes(smoke: bool) -> SimpleNamespace:
    """Every size of the run: the real one, or a few steps for the CPU smoke run."""
    if smoke:
        return SimpleNamespace(matmul=256, matmul_iters=3, batch=4, warmup=1, batches=1, repeats=1, workers=0,
                               train_images=32, val_images=16, trial_batch=16, bn_batches=1, stacked=3,
                               archs=["resnet18", "resnet20s"], variants=[v for v in VARIANTS if "compile" not in v],
                               e2e_dataset="fashionmnist", e2e_arch="conv2", e2e_batch=64)
    return SimpleNamespace(matmul=8192, matmul_iters=50, batch=128, warmup=5, batches=30, repeats=3,
                           workers=min(8, os.cpu_count() or 1), train_images=45000, val_images=5000, trial_batch=128,
                           bn_batches=8, stacked=11, archs=["resnet18", "resnet20s"], variants=VARIANTS,
                           e2e_dataset="cifar10", e2e_arch="resnet20s", e2e_batch=128)


def section(results: dict, name: str, clock: Clock, needs: float, run) -> None:
    """Run one section into ``results[name]``; its error or a lack of time is recorded instead of stopping."""
    if clock.left() < needs:
        results[name] = {"skipped": f"not started: {clock.left():.0f} s left, needs about {needs:.0f} s"}
        return
    started = time.perf_counter()
    try:
        results[name] = run()
    except Exception as error:  # reported in the table; the other sections still run
        results[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
    if isinstance(results[name], dict):
        results[name]["section seconds"] = round(time.perf_counter() - started, 1)


# ---------------------------------------------------------------------------------------------- 1 matmul
def matmul_rate(device: torch.device, n: int, iters: int) -> dict:
    """Achieved bf16 matmul TFLOP/s on n x n matrices."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iters):
        a @ b
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"n": n, "iterations": iters, "bf16 TFLOP/s": 2 * n ** 3 * iters / seconds / 1e12}


# ---------------------------------------------------------------------------------------------- 2 training
def step_flops(arch: str, data, batch: int, device: torch.device) -> int:
    """FLOPs of one training step (forward and backward) of ``arch`` on ``batch`` images, counted by torch."""
    model = model_for(arch, data).to(device)
    images = torch.rand(batch, 3, 32, 32, device=device)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(images), torch.zeros(batch, dtype=torch.long, device=device)).backward()
    return counter.get_total_flops()


def forward_flops(arch: str, data, device: torch.device) -> int:
    """FLOPs of one forward pass of one image."""
    model = model_for(arch, data).to(device).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(2, 3, 32, 32, device=device))
    return counter.get_total_flops() // 2


def training(device: torch.device, size: SimpleNamespace, clock: Clock, peak: float | None, log) -> dict:
    needed = (size.warmup + size.batches * size.repeats) * size.batch
    data = synthetic_cifar(train=needed, val=16)
    args = SimpleNamespace(batch_size=size.batch, warmup=size.warmup, batches=size.batches, repeats=size.repeats,
                           workers=size.workers)
    rows = []
    for arch in size.archs:
        flops = step_flops(arch, data, size.batch, device)
        for name in VARIANTS:
            row = {"arch": arch, "variant": name}
            if name not in size.variants:
                row["note"] = "skipped (smoke run: compiling takes minutes on a CPU)"
            elif "compile" in name and clock.left() < 240:
                row["note"] = f"skipped ({clock.left():.0f} s left)"
            else:
                try:
                    measured = measure_training(arch, name, data, args, device)
                    row.update({k: measured[k] for k in ("images/s", "s/batch", "peak MiB")})
                    row["TFLOP/s"] = measured["images/s"] * flops / size.batch / 1e12
                    if peak:
                        row["% of bf16 matmul"] = 100 * row["TFLOP/s"] / peak
                except Exception as error:  # torch.compile where it works: a failure is a row, not the end
                    row["note"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
            rows.append(row)
            log(f"training {row}")
        base = next((r.get("images/s") for r in rows if r["arch"] == arch and r["variant"] == "original"), None)
        for row in rows:
            if row["arch"] == arch and base and row.get("images/s"):
                row["x original"] = row["images/s"] / base
    return {"step GFLOP (fwd+bwd, per image)": {a: step_flops(a, data, 2, device) / 2 / 1e9 for a in size.archs},
            "rows": rows}


# ---------------------------------------------------------------------------------------------- 3 pool trial
def pool_trial(device: torch.device, size: SimpleNamespace, clock: Clock, log) -> dict:
    arch = "resnet18"
    data = synthetic_cifar(size.train_images, size.val_images)
    current, candidate, keep = two_tickets(arch, data, device, 0.8)
    rows = []

    def add(label: str, run, per: int = 1, **extra) -> None:
        seconds, peak = timed(run, device, 1)
        rows.append({"trial": label, "s/trial": seconds / per, "peak MiB": peak, **extra})
        log(f"pool trial {rows[-1]}")

    original = OriginalTrial(arch, data, device, size.workers, size.trial_batch)
    ours = OurTrial(arch, data, device, size.trial_batch, 0)
    ours.evaluator.fresh_bn_seed = 0  # a fresh draw per trial, as the pool command's full BN pass
    fixed = OurTrial(arch, data, device, size.trial_batch, size.bn_batches)
    fixed(current, candidate, 0.5, keep)  # warm-up: cuDNN and allocator caches
    add("original (rebuild, deepcopy, DataLoader, update_bn)", lambda: original(current, candidate, 0.5, keep))

    def with_update_bn():
        from torch.optim.swa_utils import update_bn

        evaluator = ours.evaluator
        saved = evaluator.recalibrate
        evaluator.recalibrate = lambda trial=(): update_bn(evaluator.bn_batches_for(trial), evaluator.model, device)
        try:
            return ours(current, candidate, 0.5, keep)
        finally:
            evaluator.recalibrate = saved

    add("ours, full BN with torch's update_bn (before)", with_update_bn)
    add("ours, full BN (after: no host reads)", lambda: ours(current, candidate, 0.5, keep))
    add(f"ours --bn_batches {size.bn_batches}", lambda: fixed(current, candidate, 0.5, keep))
    alphas = [round(0.05 + 0.9 * i / max(size.stacked - 1, 1), 3) for i in range(size.stacked)]

    def stacked_sets(trial: OurTrial) -> list[dict]:
        sets = []
        for alpha in alphas:
            weights = interpolate_state(current, candidate, alpha)
            prune_to_count(weights, trial.names, keep)
            sets.append(weights)
        return sets

    # the check: fixed BN batches, stacked against sequential (cheap); then the timing on the full BN pass
    sequential = [fixed(current, candidate, a, keep) for a in alphas[:2]]
    together = fixed.evaluator.score_stacked(stacked_sets(fixed)[:2], [(0, 0, i) for i in range(2)])[0]
    difference = max(abs(a - b) for a, b in zip(sequential, together))
    if clock.left() > 150:
        add(f"ours --stacked_coefficients x{len(alphas)}, full BN (per coefficient)",
            lambda: ours.evaluator.score_stacked(stacked_sets(ours), [(0, 0, i) for i in range(len(alphas))]),
            per=len(alphas), **{"max |acc diff| vs sequential": difference})
    else:
        rows.append({"trial": "ours --stacked_coefficients", "note": f"skipped ({clock.left():.0f} s left)"})
    for row in rows:
        if row.get("s/trial"):
            row["x original"] = rows[0]["s/trial"] / row["s/trial"]
    bn_check = bn_statistics_equal(arch, data, device)
    return {"arch": arch, "train images": size.train_images, "val images": size.val_images,
            "forward GFLOP per image": forward_flops(arch, data, device) / 1e9, "rows": rows,
            "BN statistics equal to update_bn": bn_check}


def bn_statistics_equal(arch: str, data, device: torch.device) -> bool:
    """Our BN pass and torch's update_bn give the same running statistics on a few batches (on this device)."""
    from torch.optim.swa_utils import update_bn

    from lotterypools.data.datasets import BatchSource

    batches = list(BatchSource(data.val, 8, device, data.spec, augment=True))[:3]
    ours, theirs = model_for(arch, data).to(device), model_for(arch, data).to(device)
    theirs.load_state_dict(ours.state_dict())
    recalibrate_batchnorm(ours, batches, device)
    update_bn(batches, theirs, device)
    return all(torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6)
               for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


# ---------------------------------------------------------------------------------------------- 4 end to end
def labelled(count: int, channels: int, side: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose class is a bright band's position (learnable in one epoch), and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count).astype(np.uint8)
    images = rng.integers(0, 80, (count, channels, side, side))
    band = max(side // classes, 1)
    for index, label in enumerate(labels):
        start = int(label) * side // classes
        images[index, :, start:start + band, :] += 150
    return images.clip(0, 255).astype(np.uint8), labels


def write_dataset(name: str, root: Path, train: int, test: int) -> None:
    """A synthetic data set in the real on-disk format: CIFAR-10 pickles or Fashion-MNIST idx files."""
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        train_x, train_y = labelled(train, 3, 32, 10, 0)
        test_x, test_y = labelled(test, 3, 32, 10, 1)

        def dump(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
            with open(path, "wb") as handle:
                pickle.dump({"data": images.reshape(len(images), -1), "labels": [int(v) for v in labels]}, handle, 2)

        for index, part in enumerate(np.array_split(np.arange(train), 5)):
            dump(folder / f"data_batch_{index + 1}", train_x[part], train_y[part])
        dump(folder / "test_batch", test_x, test_y)
        with open(folder / "batches.meta", "wb") as handle:
            pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle, 2)
        return
    folder = root / name
    folder.mkdir(parents=True)
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = labelled(count, 1, 28, 10, seed)
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images[:, 0]), (f"{prefix}-labels-idx1-ubyte", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            (folder / stem).write_bytes(header + array.tobytes())


def records_of(folder: Path) -> list[dict]:
    """The stored records without their timings, in a fixed order."""
    records = json.loads((folder / "pools_results.json").read_text())["records"]
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records),
                  key=lambda r: (r["method"], r["target_round"], json.dumps(r, sort_keys=True)))


def run_main(module: str, argv: list[str], log) -> int:
    """A command's ``main`` in this process, its output into the log; the exit code."""
    import importlib

    main = importlib.import_module(f"lotterypools.cli.commands.{module}").main
    output = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            main(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    log(f"--- {module} {' '.join(argv)} (exit {code})\n{output.getvalue()}")
    return code


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def end_to_end(device: torch.device, size: SimpleNamespace, work: Path, log) -> dict:
    data, run = work / "data", work / "imp"
    train = (6000 if size.e2e_dataset == "cifar10" else 5100)  # 5,000 of them validate
    write_dataset(size.e2e_dataset, data, train, 1000 if size.e2e_dataset == "cifar10" else 64)
    common = ["--data", str(data), "--dataset", size.e2e_dataset, "--arch", size.e2e_arch, "--device", device.type,
              "--no_download"]
    started = time.perf_counter()
    code = run_main("main_imp", [*common, "--epochs", "1", "--pruning_times", "2", "--prune_type", "lt",
                                 "--batch_size", str(size.e2e_batch), "--seed", "3", "--save_dir", str(run)], log)
    imp_seconds = time.perf_counter() - started
    if code != 0:
        return {"IMP exit": code, "ok": False}
    pools = [*common, "--checkpoint", str(run), "--seed", "5", "--search_num", "2", "--interpolation_value_list",
             "0.3", "0.7", "--bn_batches", "0", "--batch_size", str(size.e2e_batch), "--no_progress"]
    started = time.perf_counter()
    one = run_main("lottery_pools", [*pools, "--save_dir", str(work / "one")], log)
    one_seconds = time.perf_counter() - started
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    started = time.perf_counter()
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                               str(free_port()), str(REPO / "CIFAR" / "Lottery_pools.py"), *pools, "--save_dir",
                               str(work / "torchrun")], capture_output=True, text=True, env=env, timeout=300)
    torchrun_seconds = time.perf_counter() - started
    log(f"--- torchrun (exit {launched.returncode})\n{launched.stdout}\n{launched.stderr[-4000:]}")
    backend = next((b for b in ("nccl", "gloo") if f"({b})" in launched.stdout), None)
    same = (one == 0 and launched.returncode == 0 and records_of(work / "one") == records_of(work / "torchrun"))
    return {"dataset": f"synthetic {size.e2e_dataset} ({train} training images)", "arch": size.e2e_arch,
            "IMP exit": code, "IMP seconds": imp_seconds, "pools exit": one, "pools seconds": one_seconds,
            "torchrun exit": launched.returncode, "torchrun seconds": torchrun_seconds, "torchrun backend": backend,
            "same records": same, "ok": bool(same and backend == ("nccl" if device.type == "cuda" else "gloo"))}


# ---------------------------------------------------------------------------------------------- 5 projection
def projection(results: dict) -> dict:
    trial = results.get("pool trial", {})
    rate = results.get("matmul", {}).get("bf16 TFLOP/s")
    rows = []
    for row in trial.get("rows", []):
        if row.get("s/trial"):
            rows.append({"trial": row["trial"], "sweep hours": SWEEP_TRIALS * row["s/trial"] / 3600})
    floor = None
    if rate and trial.get("forward GFLOP per image"):
        per_trial = trial["forward GFLOP per image"] * 1e9 * (trial["train images"] + trial["val images"])
        floor = SWEEP_TRIALS * per_trial / (rate * 1e12) / 3600
    return {"trials": SWEEP_TRIALS, **SWEEP, "rows": rows, "FLOP floor hours (bf16 matmul rate)": floor,
            "note": "per seed; from the trial times above (the trial's own sizes; full 45,000/5,000 only off --smoke)"}


# ---------------------------------------------------------------------------------------------- report
def cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]


def problem(part: dict) -> str | None:
    return part.get("error") or part.get("skipped")


def markdown(results: dict) -> str:
    lines = [f"## GPU check: {results['machine']}", "", f"{results['mode']}; {results['seconds']:.0f} s in all.", ""]
    matmul = results["matmul"]
    lines.append(f"**bf16 matmul**: {problem(matmul) or '%.1f TFLOP/s (n = %d)' % (matmul['bf16 TFLOP/s'], matmul['n'])}")
    lines += ["", "**Training** (synthetic CIFAR shape, images/s; TFLOP/s from torch's FLOP count of a step)", ""]
    train = results["training"]
    lines += [problem(train)] if problem(train) else table(
        train["rows"], ["arch", "variant", "images/s", "x original", "TFLOP/s", "% of bf16 matmul", "peak MiB", "note"])
    trial = results["pool trial"]
    lines += ["", f"**One pool trial**, resnet18 (BN pass over {trial.get('train images')} training images, "
                  f"validation on {trial.get('val images')})", ""]
    if problem(trial):
        lines.append(problem(trial))
    else:
        lines += table(trial["rows"], ["trial", "s/trial", "x original", "peak MiB", "max |acc diff| vs sequential", "note"])
        lines += ["", f"BN statistics equal to torch's update_bn: {trial['BN statistics equal to update_bn']}"]
    e2e = results["end to end"]
    lines += ["", "**End to end** (two IMP rounds of one epoch, Lottery Pools over them, the same under torchrun)", ""]
    lines += [problem(e2e)] if problem(e2e) else table(
        [e2e], ["dataset", "arch", "IMP seconds", "pools seconds", "torchrun seconds", "torchrun backend",
                "same records", "ok"])
    sweep = results["projection"]
    lines += ["", f"**Projected CIFAR-100 resnet18 sweep**: {sweep['trials']} full-BN trials per seed "
                  f"({sweep['tickets']} tickets x {sweep['candidates']} candidates x {sweep['coefficients']} "
                  f"coefficients); FLOP floor at the bf16 matmul rate: {cell(sweep['FLOP floor hours (bf16 matmul rate)'])} h", ""]
    lines += table(sweep["rows"], ["trial", "sweep hours"])
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for gpu_check.md, gpu_check.json and gpu_check.log (made if missing)")
    parser.add_argument("--smoke", action="store_true", help="a few steps of every section on the CPU (for CI)")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default cuda, or cpu with --smoke)")
    parser.add_argument("--budget", type=float, default=450, help="seconds; later sections are skipped past it (450)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device or ("cpu" if args.smoke else "cuda"))
    size, clock = sizes(args.smoke), Clock(args.budget)
    log_path = out / "gpu_check.log"
    log_file = log_path.open("w")

    def log(message: str) -> None:
        log_file.write(message.rstrip() + "\n")
        log_file.flush()

    results: dict = {"machine": machine_line(device), "mode": "smoke run (CPU, a few steps)" if args.smoke else
                     "full run", "device": str(device), "torch": torch.__version__}
    section(results, "matmul", clock, 0, lambda: matmul_rate(device, size.matmul, size.matmul_iters))
    peak = results["matmul"].get("bf16 TFLOP/s")
    section(results, "training", clock, 60, lambda: training(device, size, clock, peak, log))
    section(results, "pool trial", clock, 90, lambda: pool_trial(device, size, clock, log))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        section(results, "end to end", clock, 30, lambda: end_to_end(device, size, Path(work), log))
    results["projection"] = projection(results)
    results["seconds"] = time.perf_counter() - clock.start
    text = markdown(results)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "gpu_check.md").write_text(text)
    log_file.close()
    assert len(list(out.iterdir())) <= MAX_FILES
    print(text, flush=True)
    failed = [k for k in ("matmul", "training", "pool trial", "end to end") if results[k].get("error")]
    return 1 if failed or not results["end to end"].get("ok", False) else 0


if __name__ == "__main__":
    sys.exit(main())
