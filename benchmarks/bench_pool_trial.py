"""One pool-search trial (interpolate, prune, BN pass, validation): the original way against ours.

original: the model rebuilt and deep-copied for the trial, global magnitude threshold pruning, update_bn over
a DataLoader of augmented PIL images (float32), validation through a DataLoader of PIL images.
ours: one working model overwritten in place (PoolEvaluator), device-resident uint8 batches, the same full
BN pass; ``ours --bn_batches k`` recomputes BN on k fixed batches. ``vmap x K`` scores K coefficients in one
batched call (torch.func.functional_call + vmap over stacked weights, BN statistics batched too), reported
per coefficient, with its accuracies checked against the sequential ones.

    python benchmarks/bench_pool_trial.py --device cpu --archs resnet20s resnet18 --train_images 2048
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.optim.swa_utils import update_bn

from common import add_machine_arguments, machine_line, model_for, setup_machine, synthetic_cifar, timed  # noqa: E402
from lotterypools.data.datasets import BatchSource, DataSplits, fixed_batches, resident_split
from lotterypools.core.errors import cli_entry
from lotterypools.data.loaders import pil_source
from lotterypools.training.masks import prunable_names, prune_to_count
from lotterypools.pools.search import PoolEvaluator, interpolate_state
from lotterypools.core.records import format_table

Weights = dict[str, torch.Tensor]


def two_tickets(arch: str, data: DataSplits, device: torch.device, density: float) -> tuple[Weights, Weights, int]:
    """A target and a candidate ticket (random weights, pruned to ``density``) and the target's kept count."""
    tickets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        weights = {k: v.to(device) for k, v in model_for(arch, data).state_dict().items()}
        names = [k for k in weights if k.endswith(".weight") and weights[k].dim() == 4]
        keep = round(density * sum(weights[n].numel() for n in names))
        prune_to_count(weights, names, keep)
        tickets.append(weights)
    return tickets[0], tickets[1], keep


def threshold_prune(weights: Weights, names: list[str], keep: int) -> None:
    """The original's re-pruning: keep weights whose magnitude reaches the keep-th largest (ties keep extra)."""
    flat = torch.cat([weights[n].abs().flatten() for n in names])
    threshold = torch.topk(flat, keep).values[-1]
    for name in names:
        weights[name].mul_((weights[name].abs() >= threshold).to(weights[name].dtype))


@torch.no_grad()
def accuracy(model: nn.Module, batches, device: torch.device) -> float:
    model.eval()
    correct = seen = 0
    for images, labels in batches:
        correct += int((model(images.to(device)).argmax(1) == labels.to(device)).sum())
        seen += labels.shape[0]
    return 100.0 * correct / seen


class OriginalTrial:
    """The original code's trial, written from its description (paper-facts.md section 4)."""

    def __init__(self, arch: str, data: DataSplits, device: torch.device, workers: int, batch_size: int):
        self.arch, self.data, self.device = arch, data, device
        self.train = pil_source(data.train, data.spec, batch_size, device, augment=True, shuffle=True, workers=workers)
        self.val = pil_source(data.val, data.spec, 500, device, workers=workers)

    def __call__(self, current: Weights, candidate: Weights, alpha: float, keep: int) -> float:
        model = model_for(self.arch, self.data).to(self.device)  # rebuilt per trial
        mixed = {k: candidate[k] * alpha + current[k] * (1 - alpha) if v.is_floating_point() else v.clone()
                 for k, v in current.items()}
        threshold_prune(mixed, prunable_names(model), keep)
        model.load_state_dict(mixed)
        model = copy.deepcopy(model)
        update_bn(self.train, model, self.device)
        return accuracy(model, self.val, self.device)


class OurTrial:
    """Our trial: interpolate into a reused buffer, top-k prune in place, PoolEvaluator.score."""

    def __init__(self, arch: str, data: DataSplits, device: torch.device, batch_size: int, bn_batches: int):
        train, val = resident_split(data.train, device), resident_split(data.val, device)
        bn = BatchSource(train, batch_size, device, data.spec, shuffle=True, augment=True)
        bn = fixed_batches(bn, bn_batches) if bn_batches else bn
        model = model_for(arch, data)
        self.names = prunable_names(model)
        self.evaluator = PoolEvaluator(model, bn, BatchSource(val, 500, device), [], device)
        self.trial: Weights = {}

    def __call__(self, current: Weights, candidate: Weights, alpha: float, keep: int) -> float:
        interpolate_state(current, candidate, alpha, out=self.trial)
        prune_to_count(self.trial, self.names, keep)
        return self.evaluator.score(self.trial)


class BatchedTrials:
    """K coefficients at once: stacked weights through ``vmap(functional_call)``, BN statistics batched per K."""

    def __init__(self, ours: OurTrial):
        self.ours = ours
        self.model = ours.evaluator.model
        self.bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _stack(self, current: Weights, candidate: Weights, alphas: list[float], keep: int) -> tuple[Weights, Weights]:
        trials = []
        for alpha in alphas:
            trial = interpolate_state(current, candidate, alpha)
            prune_to_count(trial, self.ours.names, keep)
            trials.append(trial)
        batched = {k: torch.stack([t[k] for t in trials]) for k, v in current.items() if v.is_floating_point()}
        shared = {k: v.clone() for k, v in current.items() if not v.is_floating_point()}
        return batched, shared

    def _forward(self, batched: Weights, shared: Weights, images: torch.Tensor) -> torch.Tensor:
        call = lambda weights, x: functional_call(self.model, (weights, shared), (x,))
        return vmap(call, in_dims=(0, None))(batched, images)

    @torch.no_grad()
    def __call__(self, current: Weights, candidate: Weights, alphas: list[float], keep: int) -> list[float]:
        batched, shared = self._stack(current, candidate, alphas, keep)
        for key in batched:  # update_bn's reset: cumulative averages start from zero mean, unit variance
            if key.endswith("running_mean"):
                batched[key].zero_()
            elif key.endswith("running_var"):
                batched[key].fill_(1.0)
        for key in shared:
            shared[key].zero_()
        momenta = [m.momentum for m in self.bns]
        for module in self.bns:
            module.momentum = None
        self.model.train()
        for images, _ in self.ours.evaluator.bn_batches:
            self._forward(batched, shared, images)
        for module, momentum in zip(self.bns, momenta):
            module.momentum = momentum
        self.model.eval()
        correct = torch.zeros(len(alphas), device=self.ours.evaluator.device)
        seen = 0
        for images, labels in self.ours.evaluator.val_batches:
            correct += (self._forward(batched, shared, images).argmax(-1) == labels).sum(1)
            seen += labels.shape[0]
        return (100.0 * correct / seen).tolist()


def bench_arch(arch: str, args, device: torch.device) -> list[dict]:
    data = synthetic_cifar(args.train_images, args.val_images)
    current, candidate, keep = two_tickets(arch, data, device, args.density)
    alphas = [round(0.1 * (i + 1), 2) for i in range(args.vmap_alphas)]
    original = OriginalTrial(arch, data, device, args.workers, args.batch_size)
    rows = []
    seconds, peak = timed(lambda: original(current, candidate, 0.5, keep), device, args.repeats)
    rows.append({"arch": arch, "trial": "original", "s/trial": seconds, "peak MiB": peak})
    for bn_batches in (0, args.bn_batches):
        ours = OurTrial(arch, data, device, args.batch_size, bn_batches)
        seconds, peak = timed(lambda: ours(current, candidate, 0.5, keep), device, args.repeats)
        label = "ours (full BN)" if bn_batches == 0 else f"ours --bn_batches {bn_batches}"
        rows.append({"arch": arch, "trial": label, "s/trial": seconds, "peak MiB": peak})
    if args.vmap_alphas:
        ours = OurTrial(arch, data, device, args.batch_size, 0)
        batched = BatchedTrials(ours)
        sequential = [ours(current, candidate, a, keep) for a in alphas]
        together = batched(current, candidate, alphas, keep)
        seconds, peak = timed(lambda: batched(current, candidate, alphas, keep), device, args.repeats)
        rows.append({"arch": arch, "trial": f"ours vmap x{len(alphas)} (per alpha)", "s/trial": seconds / len(alphas),
                     "peak MiB": peak, "max |acc diff|": max(abs(a - b) for a, b in zip(sequential, together))})
    for row in rows:
        row["x faster than original"] = rows[0]["s/trial"] / row["s/trial"]
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_machine_arguments(parser)
    parser.add_argument("--archs", nargs="+", default=["resnet20s", "resnet18"])
    parser.add_argument("--train_images", type=int, default=45000,
                        help="images in the BN pass (default 45000, CIFAR's training split; use less on a CPU)")
    parser.add_argument("--val_images", type=int, default=5000, help="validation images (default 5000)")
    parser.add_argument("--batch_size", type=int, default=128, help="BN-pass batch size (default 128)")
    parser.add_argument("--bn_batches", type=int, default=8, help="the --bn_batches row's batches (default 8)")
    parser.add_argument("--density", type=float, default=0.8, help="ticket density (default 0.8)")
    parser.add_argument("--vmap_alphas", type=int, default=4, help="coefficients per batched call; 0 skips it (default 4)")
    return parser


@cli_entry
def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    device = setup_machine(args)
    print(machine_line(device), flush=True)
    rows = []
    for arch in args.archs:
        rows += bench_arch(arch, args, device)
        print(format_table(rows, list(rows[-1]) if "max |acc diff|" in rows[-1] else list(rows[0])), flush=True)
    columns = ["arch", "trial", "s/trial", "x faster than original", "peak MiB", "max |acc diff|"]
    print("\n" + format_table([{c: r.get(c, "") for c in columns} for r in rows], columns))


if __name__ == "__main__":
    main()
