r"""Wall time and peak memory of a whole CIFAR/Lottery_pools.py run over a ticket folder: full BN against --bn_batches.

Each mode runs as its own process (results written to a temporary folder, the ticket folder is only read);
peak memory is that process's peak resident set (host memory; on a GPU the device memory is not included).

    python benchmarks/bench_pools_run.py --checkpoint /tmp/run1 --dataset fashionmnist --arch conv4 \
        --data /usr/share/datasets --bn_batches 8 -- --search_num 2 --interpolation_value_list 0.3 0.7 --targets 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lotterypools.core.errors import UserError, cli_entry  # noqa: E402
from lotterypools.core.records import format_table, read_json  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "CIFAR" / "Lottery_pools.py"


def run_once(command: list[str]) -> tuple[float, float, int]:
    """Seconds, peak resident set (MiB) and exit code of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise UserError(f"{' '.join(command)} failed: {process.stderr.read().strip().splitlines()[-1:]}")
    return seconds, usage.ru_maxrss / 1024, process.returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the IMP run folder holding the tickets")
    parser.add_argument("--dataset", default="fashionmnist")
    parser.add_argument("--arch", default="conv4")
    parser.add_argument("--data", default="/usr/share/datasets")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bn_batches", type=int, default=8, help="batches of the fast mode (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode; the median is reported (default 1)")
    parser.add_argument("rest", nargs="*", help="after --: more Lottery_pools.py flags, the same for both modes")
    return parser


def pooled_accuracies(save_dir: Path) -> dict[int, float]:
    """Test accuracy of each pooled ticket (target round -> accuracy) from a run's pools_results.json."""
    records = read_json(save_dir / "pools_results.json", default={}).get("records", [])
    return {r["target_round"]: r["test_acc"] for r in records if r["method"] != "ticket"}


@cli_entry
def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if not Path(args.checkpoint).is_dir():
        raise UserError(f"--checkpoint {args.checkpoint} is not a folder of tickets")
    rows = []
    for bn_batches in (0, args.bn_batches):
        results = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="bench_pools_") as save_dir:
                command = [sys.executable, str(SCRIPT), "--checkpoint", args.checkpoint, "--save_dir", save_dir,
                           "--dataset", args.dataset, "--arch", args.arch, "--data", args.data, "--device", args.device,
                           "--no_download", "--bn_batches", str(bn_batches), *args.rest]
                seconds, peak, _ = run_once(command)
                results.append((seconds, peak, pooled_accuracies(Path(save_dir))))
        results.sort(key=lambda r: r[0])
        seconds, peak, accuracies = results[len(results) // 2]
        rows.append({"mode": "full BN (faithful)" if bn_batches == 0 else f"--bn_batches {bn_batches}",
                     "seconds": seconds, "peak RSS MiB": peak,
                     "mean pooled test acc": sum(accuracies.values()) / max(len(accuracies), 1),
                     "pooled test acc by round": [round(accuracies[k], 2) for k in sorted(accuracies)]})
    for row in rows:
        row["x faster than full BN"] = rows[0]["seconds"] / row["seconds"]
    print(f"Lottery_pools.py {' '.join(args.rest)} over {args.checkpoint}; load average {os.getloadavg()[0]:.1f}")
    print(format_table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
