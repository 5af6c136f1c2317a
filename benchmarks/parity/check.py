r"""Compare this project with the official FreeTickets behaviour described in official_reference.json (written by
make_reference.py from the official code's formulas): per-layer ERK densities, one mask update, a short DST run
under the verbatim README flags, EDST/DST/ImageNet schedules, flag defaults and the CIFAR pipelines.

    python benchmarks/parity/check.py          # one line per check; exit status 1 if any differs

tests/tickets/test_parity.py runs the same checks, so a regression shows in CI without the official code.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REFERENCE = Path(__file__).resolve().parent / "official_reference.json"
README_DST = ("--sparse --model wrn-28-10 --data cifar10 --seed 17 --sparse-init ERK --update-frequency 1000 "
              "--batch-size 128 --death-rate 0.5 --large-death-rate 0.8 --growth gradient --death magnitude "
              "--redistribution none --epochs 250 --density 0.2").split()


def load_reference() -> dict:
    return json.loads(REFERENCE.read_text())


def _model(entry: dict):
    from lotterypools.models import build_model

    channels, side, _ = entry["input"]
    return build_model(entry["model"], entry["classes"], channels, (0.5,) * channels, (0.5,) * channels, side)


def check_erk(entry: dict) -> list[str]:
    """Our per-layer ERK densities and exact counts against the official densities (and the layer shapes)."""
    from lotterypools.training.sparse import SparseConfig, erk_densities, initial_masks, sparse_weight_names

    model = _model(entry)
    params = dict(model.named_parameters())
    shapes = {n: list(params[n].shape) for n in sparse_weight_names(model)}
    if shapes != entry["shapes"]:
        return [f"{entry['model']}: layer shapes differ from the reference's"]
    ours = erk_densities(shapes, entry["density"])
    problems = [f"{entry['model']} d={entry['density']} {n}: ERK density {ours[n]:.12g} != {d:.12g}"
                for n, d in entry["densities"].items() if not math.isclose(ours[n], d, rel_tol=1e-9, abs_tol=1e-12)]
    counts = {n: int(m.sum()) for n, m in initial_masks(model, SparseConfig(density=entry["density"], sparse_init="ERK"), 0).items()}
    problems += [f"{entry['model']} d={entry['density']} {n}: {counts[n]} weights kept, the official expectation is "
                 f"{d * math.prod(shapes[n]):.2f}" for n, d in entry["densities"].items()
                 if abs(counts[n] - d * math.prod(shapes[n])) >= 1]
    return problems


def check_mask_update(entry: dict) -> list[str]:
    """One update of the verbatim command's sparse training (gradient growth, dense layers reset), started from the
    reference's active counts: per layer, what dies, what is active after, what a dense layer zeroes."""
    import torch

    from lotterypools.cli.commands import main_dst
    from lotterypools.cli.freetickets import sparse_config
    from lotterypools.training.sparse import MaskedWeights, MaskUpdater

    torch.manual_seed(0)
    model = _model(entry)
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(0)
    masks = {}
    for name, layer in entry["layers"].items():
        flat = torch.zeros(params[name].numel(), dtype=torch.bool)
        flat[torch.randperm(flat.numel(), generator=generator)[:layer["active"]]] = True
        masks[name] = flat.view_as(params[name])
    config = sparse_config(main_dst.build_parser().parse_args(README_DST), "DST")
    masked = MaskedWeights(model, masks)
    masked.apply()
    channels, side, _ = entry["input"]
    model(torch.randn(4, channels, side, side)).logsumexp(1).sum().backward()
    updater = MaskUpdater(masked, config, total_steps=1)
    updater.update(entry["rate"], None, 0)
    problems = []
    sparse_removed = sum(layer["removed"] for layer in entry["layers"].values() if not layer["dense"])
    if updater.updates[-1]["replaced"] != sparse_removed:
        problems.append(f"{entry['model']} rate {entry['rate']}: {updater.updates[-1]['replaced']} weights replaced, "
                        f"the official {sparse_removed}")
    for name, layer in entry["layers"].items():
        active, zeros = int(masked.masks[name].sum()), int((params[name].detach() == 0).sum())
        if active != layer["active_after"]:
            problems.append(f"{entry['model']} rate {entry['rate']} {name}: {active} active after, the official {layer['active_after']}")
        if layer["dense"] and zeros != layer["zeroed_in_mask"]:
            problems.append(f"{entry['model']} rate {entry['rate']} {name}: dense layer has {zeros} zeroed weights, "
                            f"the official {layer['zeroed_in_mask']}")
    return problems


def check_dst_run(entry: dict) -> list[str]:
    """A short DST run under the verbatim flags: the steps that update masks and the death rate of each."""
    import torch

    from lotterypools.cli.commands import main_dst
    from lotterypools.cli.freetickets import sparse_config
    from lotterypools.models import build_model
    from lotterypools.training.sparse import MaskedWeights, MaskUpdater, initial_masks
    from lotterypools.training.loop import Step

    config = sparse_config(main_dst.build_parser().parse_args(README_DST), "DST")
    config.update_frequency, config.density = entry["update_frequency"], 0.2
    torch.manual_seed(0)
    model = build_model("conv2", 10, 1, (0.5,), (0.5,), 28)
    masked = MaskedWeights(model, initial_masks(model, config, seed=0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    updater = MaskUpdater(masked, config, total_steps=entry["steps"])
    counts = masked.counts()
    for step in range(entry["steps"]):
        optimizer.zero_grad()
        model(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
        optimizer.step()
        updater.after_step(Step(model, optimizer, 0, step, None, None, None, None))
    ours = [{"step": u["step"] + 1, "rate": u["rate"]} for u in updater.updates]  # the original counts steps from 1
    problems = [] if ours == entry["updates"] else [f"DST run: updates {ours}, the official {entry['updates']}"]
    if masked.counts() != counts:
        problems.append("DST run: layer counts changed over the updates (the official regrows what died)")
    return problems


def check_schedules(reference: dict) -> list[str]:
    """EDST (lr, large deaths, tickets per epoch), DST with --multiplier and the ImageNet schedule."""
    from lotterypools.cli.commands import main_dst
    from lotterypools.cli.freetickets import training_plan
    from lotterypools.tickets.freetickets import edst_plan, imagenet_plan

    problems = []
    for entry in reference["edst"]:
        plan = edst_plan(entry["epochs"], entry["epochs_explo"], entry["model_num"], lr=0.1)
        tickets = [-1] * plan.epochs
        for phase in plan.phases:
            if phase.ticket:
                tickets[phase.start:phase.end] = [int(phase.ticket[6:-4])] * (phase.end - phase.start)
        name = f"EDST {entry['epochs']}/{entry['epochs_explo']}/{entry['model_num']}"
        if not all(math.isclose(a, b) for a, b in zip(plan.lrs, entry["lr_per_epoch"])) or len(plan.lrs) != len(entry["lr_per_epoch"]):
            problems.append(f"{name}: learning rates differ")
        if [p.start for p in plan.phases if p.large_death] != entry["large_death_after_epoch"]:
            problems.append(f"{name}: large deaths differ")
        if tickets != entry["ticket_per_epoch"]:
            problems.append(f"{name}: ticket windows differ")
    dst = reference["dst_lrs"]
    args = main_dst.build_parser().parse_args(README_DST[:-4] + ["--epochs", str(dst["epochs"]), "--multiplier", str(dst["multiplier"])])
    lrs = training_plan(args, "DST").lrs
    if len(lrs) != len(dst["lr_per_epoch"]) or not all(math.isclose(a, b) for a, b in zip(lrs, dst["lr_per_epoch"])):
        problems.append("DST --multiplier: learning rates differ")
    net = reference["imagenet_lrs"]
    lrs = imagenet_plan(net["epochs"], 100, 70, net["lr"], net["warmup"]).lrs
    if not all(math.isclose(a, b) for a, b in zip(lrs, net["lr_per_epoch"])):
        problems.append("ImageNet: learning rates differ")
    return problems


def check_defaults_and_pipelines(reference: dict) -> list[str]:
    """The FreeTickets scripts' flag defaults and CIFAR pipelines."""
    from lotterypools.cli.commands import main_dst
    from lotterypools.data.datasets import freetickets_spec

    args = vars(main_dst.build_parser().parse_args([]))
    problems = [f"default --{k.replace('_', '-')} {args[k]!r}, the official {v!r}" for k, v in reference["flag_defaults"].items()
                if args[k] != v]
    for name in ("cifar10", "cifar100"):
        spec, want = freetickets_spec(name), reference[f"{name}_pipeline"]
        ours = {"mean": list(spec.mean), "std": list(spec.std), "padding": spec.crop_padding,
                "padding_mode": spec.padding_mode, "flip": spec.flip}
        problems += [f"{name} pipeline {k}: {ours[k]} != {v}" for k, v in want.items() if ours[k] != v]
    return problems


def all_checks(reference: dict | None = None) -> dict[str, Callable[[], list[str]]]:
    """Every check by name, each returning its list of differences (empty: ours matches the official)."""
    reference = reference or load_reference()
    checks: dict[str, Callable[[], list[str]]] = {}
    for entry in reference["erk"]:
        checks[f"ERK {entry['model']} density {entry['density']}"] = lambda e=entry: check_erk(e)
    for entry in reference["mask_update"]:
        checks[f"mask update {entry['model']} rate {entry['rate']}"] = lambda e=entry: check_mask_update(e)
    checks["DST run (verbatim flags)"] = lambda: check_dst_run(reference["dst_run"])
    checks["schedules (EDST, DST, ImageNet)"] = lambda: check_schedules(reference)
    checks["defaults and CIFAR pipelines"] = lambda: check_defaults_and_pipelines(reference)
    return checks


def main() -> int:
    failed = 0
    for name, check in all_checks().items():
        problems = check()
        failed += bool(problems)
        print(f"{'ok  ' if not problems else 'DIFF'} {name}" + "".join(f"\n     {p}" for p in problems[:5]))
    print(f"{failed} check(s) differ from the official behaviour" if failed else "all checks match the official behaviour")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
