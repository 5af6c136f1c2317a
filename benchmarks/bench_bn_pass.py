r"""Why the BN pass costs more per image than validation: its parts timed one by one, and the pass before/after.

Rows (seconds per 1,000 images, median of --repeats): the batches alone (gather, scale, crop and flip);
eval-mode forwards at validation's batch (500) and at the BN pass's (128); training-mode forwards (batch
statistics and running-average updates) at 128 without and with augmentation; the whole pass with torch's
``update_bn`` (before) and with ours (after: the same statistics without a host read per layer and batch).

    python benchmarks/bench_bn_pass.py --device cpu --arch resnet20s --images 1024 --repeats 3
"""

from __future__ import annotations

import argparse

import torch
from torch.optim.swa_utils import update_bn

from common import add_machine_arguments, machine_line, model_for, setup_machine, synthetic_cifar, timed  # noqa: E402
from lotterypools.core.errors import cli_entry
from lotterypools.core.records import format_table
from lotterypools.data.datasets import BatchSource
from lotterypools.pools.search import recalibrate_batchnorm


@torch.no_grad()
def forwards(model: torch.nn.Module, batches, train: bool) -> None:
    model.train(train)
    for images, *_ in batches:
        model(images)


def consume(batches) -> None:
    for _ in batches:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_machine_arguments(parser)
    parser.add_argument("--arch", default="resnet20s")
    parser.add_argument("--images", type=int, default=1024, help="images per pass (default 1024)")
    return parser


@cli_entry
def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    device = setup_machine(args)
    data = synthetic_cifar(args.images, 16)
    split = data.train.to(device)
    model = model_for(args.arch, data).to(device)
    plain = {b: BatchSource(split, b, device) for b in (128, 500)}
    augmented = BatchSource(split, 128, device, data.spec, shuffle=True, augment=True)
    parts = [
        ("batches only (gather, scale, crop, flip), 128", lambda: consume(augmented)),
        ("eval forward, batch 500 (validation)", lambda: forwards(model, plain[500], False)),
        ("eval forward, batch 128", lambda: forwards(model, plain[128], False)),
        ("train-mode forward, batch 128, no augmentation", lambda: forwards(model, plain[128], True)),
        ("train-mode forward, batch 128, augmented", lambda: forwards(model, augmented, True)),
        ("BN pass with torch's update_bn (before)", lambda: update_bn(augmented, model, device)),
        ("BN pass, ours (after)", lambda: recalibrate_batchnorm(model, augmented, device)),
    ]
    forwards(model, plain[128], False)  # warm-up
    rows = []
    for label, run in parts:
        seconds, _ = timed(run, device, args.repeats)
        rows.append({"part": label, "s per 1000 images": 1000 * seconds / args.images})
    base = rows[1]["s per 1000 images"]
    for row in rows:
        row["x validation"] = row["s per 1000 images"] / base
    print(f"{machine_line(device)}; {args.arch}, {args.images} synthetic CIFAR images, median of {args.repeats}")
    print(format_table(rows, ["part", "s per 1000 images", "x validation"]))


if __name__ == "__main__":
    main()
