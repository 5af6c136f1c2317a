"""What the benchmark scripts share: device flag, synthetic CIFAR-shaped data, peak memory, medians, the machine."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lotterypools.data.datasets import SPECS, DataSplits, Split  # noqa: E402
from lotterypools.core.device import resolve_device  # noqa: E402
from lotterypools.models import build_model  # noqa: E402
from torch import nn  # noqa: E402

CIFAR_SPEC = SPECS["cifar10"]


def add_machine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the original pipeline (default 2)")


def setup_machine(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def machine_line(device: torch.device) -> str:
    """One line naming the machine, for the tables."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{what}; torch {torch.__version__}; load average {load:.1f}"


def synthetic_cifar(train: int, val: int, seed: int = 0) -> DataSplits:
    """Random uint8 CIFAR-shaped images (3x32x32, 10 classes): the speed does not depend on the pixels."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
        return Split(images, torch.randint(0, 10, (n,), generator=generator))

    return DataSplits(CIFAR_SPEC, split(train), split(val), split(val), "synthetic")


def model_for(arch: str, data: DataSplits) -> nn.Module:
    spec = data.spec
    return build_model(arch, spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator counter, or the process's resident-set high-water mark (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # no reset possible: the peak is then the process's lifetime peak


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or this process's peak resident set (VmHWM), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(run: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median seconds of ``repeats`` calls of ``run`` and the peak memory (MiB) over them."""
    reset_peak_memory(device)
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), peak_memory_mib(device)
