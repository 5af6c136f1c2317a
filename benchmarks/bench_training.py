"""Training speed: images per second and peak memory, the original's pipeline against ours.

original: PIL images through torchvision transforms (RandomCrop, flip, ToTensor) and a DataLoader, float32.
ours: the split as uint8 on the device, crop/flip/scaling there per batch; variants add ``+cl``
(channels_last), ``+amp`` (bf16 autocast) and ``+compile`` (torch.compile).
conv4 trains on Fashion-MNIST, the resnets on synthetic CIFAR-shaped data. With ``--parity_steps`` it also
trains conv4 on Fashion-MNIST from one initialisation through both pipelines and compares the losses.

    python benchmarks/bench_training.py --device cpu --archs conv4 resnet20s resnet18 --batches 4
    python benchmarks/bench_training.py --device cuda --variants original ours ours+cl+amp ours+cl+amp+compile
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from typing import Iterator

import torch
import torch.nn.functional as F

from common import (add_machine_arguments, machine_line, model_for, setup_machine, synthetic_cifar,  # noqa: E402
                    timed)
from lotterypools.data.datasets import BatchSource, DataSplits, load_dataset, resident_split
from lotterypools.core.errors import UserError, cli_entry
from lotterypools.data.loaders import pil_source
from lotterypools.core.records import format_table
from lotterypools.training.loop import autocast_context, build_optimizer, evaluate, prepare_model

FLAGS = {"cl": "channels_last", "amp": "amp", "compile": "compile"}


def parse_variant(name: str) -> dict[str, bool | str]:
    """``original`` or ``ours[+cl][+amp][+compile]`` -> pipeline and flags."""
    head, *flags = name.split("+")
    if head not in ("original", "ours") or any(f not in FLAGS for f in flags) or (head == "original" and flags):
        raise UserError(f"unknown variant {name!r}: use original, or ours with any of +cl +amp +compile")
    return {"pipeline": head, **{FLAGS[f]: f in flags for f in FLAGS}}


def batch_stream(variant: dict, data: DataSplits, batch_size: int, device: torch.device, workers: int,
                 seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless augmented, shuffled training batches through the variant's pipeline."""
    for epoch in itertools.count():
        if variant["pipeline"] == "original":
            source = pil_source(data.train, data.spec, batch_size, device, augment=True, shuffle=True,
                                seed=seed + epoch, workers=workers)
        else:
            source = BatchSource(resident_split(data.train, device), batch_size, device, data.spec, shuffle=True,
                                 augment=True, seed=seed + epoch)
        yield from source


def train_steps(model, optimizer, stream, steps: int, device: torch.device, amp: bool) -> list[float]:
    """``steps`` SGD steps; the losses as floats (read once at the end, so the device is not stalled)."""
    model.train()
    losses = []
    for images, labels in itertools.islice(stream, steps):
        with autocast_context(device, amp):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return [float(x) for x in losses]


def measure(arch: str, name: str, data: DataSplits, args, device: torch.device) -> dict:
    variant = parse_variant(name)
    torch.manual_seed(0)
    model = prepare_model(model_for(arch, data).to(device), variant["channels_last"], variant["compile"])
    optimizer = build_optimizer(model, 0.05, 0.9, 1e-4)
    stream = batch_stream(variant, data, args.batch_size, device, args.workers)
    train_steps(model, optimizer, stream, args.warmup, device, variant["amp"])  # workers start, compile, caches
    seconds, peak = timed(lambda: train_steps(model, optimizer, stream, args.batches, device, variant["amp"]),
                          device, args.repeats)
    return {"arch": arch, "data": data.source, "variant": name, "images/s": args.batches * args.batch_size / seconds,
            "s/batch": seconds / args.batches, "peak MiB": peak}


def loss_parity(data: DataSplits, args, device: torch.device) -> list[dict]:
    """conv4 from one initialisation through both pipelines: mean training loss and validation accuracy."""
    rows = []
    for name in ("original", "ours"):
        torch.manual_seed(0)
        model = model_for("conv4", data).to(device)
        optimizer = build_optimizer(model, 0.05, 0.9, 1e-4)
        stream = batch_stream(parse_variant(name), data, args.batch_size, device, args.workers, seed=1)
        losses = train_steps(model, optimizer, stream, args.parity_steps, device, amp=False)
        quarter = losses[-max(len(losses) // 4, 1):]
        val = evaluate(model, BatchSource(data.val, 500, device), device)
        rows.append({"pipeline": name, "steps": len(losses), "mean loss": statistics.mean(losses),
                     "last-quarter loss": statistics.mean(quarter), "last-quarter sd": statistics.pstdev(quarter),
                     "val acc": val.accuracy})
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_machine_arguments(parser)
    parser.add_argument("--archs", nargs="*", default=["conv4", "resnet20s", "resnet18"],
                        help="architectures timed (default conv4 resnet20s resnet18; none with --parity_steps alone)")
    parser.add_argument("--variants", nargs="+", default=["original", "ours", "ours+cl", "ours+amp"],
                        help="original, or ours with any of +cl +amp +compile (default original ours ours+cl ours+amp)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=10, help="timed batches per repeat (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (default 2)")
    parser.add_argument("--data", default="/usr/share/datasets", help="folder holding Fashion-MNIST (for conv4)")
    parser.add_argument("--parity_steps", type=int, default=0,
                        help="also compare conv4 losses on Fashion-MNIST over this many steps per pipeline (default 0)")
    return parser


@cli_entry
def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    device = setup_machine(args)
    for name in args.variants:
        parse_variant(name)
    needed = (args.warmup + args.batches * args.repeats) * args.batch_size
    fashion = load_dataset("fashionmnist", args.data, download=False) if "conv4" in args.archs or args.parity_steps else None
    cifar_like = synthetic_cifar(train=needed, val=500)
    print(machine_line(device), flush=True)
    rows = []
    for arch in args.archs:
        data = fashion if arch == "conv4" else cifar_like
        for name in args.variants:
            rows.append(measure(arch, name, data, args, device))
            print(format_table(rows[-1:], list(rows[-1])), flush=True)
        base = next(r["images/s"] for r in rows if r["arch"] == arch and r["variant"] == args.variants[0])
        for row in rows:
            if row["arch"] == arch:
                row[f"x {args.variants[0]}"] = row["images/s"] / base
    if rows:
        print("\n" + format_table(rows, list(rows[-1])))
    if args.parity_steps:
        print("\nloss parity, conv4 on Fashion-MNIST\n" + format_table(loss_parity(fashion, args, device),
                                                                     ["pipeline", "steps", "mean loss", "last-quarter loss",
                                                                      "last-quarter sd", "val acc"], digits=4))


if __name__ == "__main__":
    main()
